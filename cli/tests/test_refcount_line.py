"""The `refcounts:` line of `ffi-harness fuzz` is derived from the engine processes' stats files: an engine
whose type cache fill never settled (runtime._fill_type_cache) is counted and named, one that settled or
never filled is not."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ffi_harness import fuzz


def _line(tmp_path: Path, fills: list[Any], kept_by: list[dict[str, int]] | None = None) -> str:
    totals = fuzz.Totals()
    for i, fill in enumerate(fills):
        stats = tmp_path / f"stats{i}.json"
        kept = (kept_by or [{}] * len(fills))[i]
        stats.write_text(
            json.dumps(
                {
                    "singletons_judged": True,
                    "singleton_checks": 10,
                    "type_cache_fill": fill,
                    "kept_references": sum(kept.values()),
                    "kept_by": kept,
                }
            )
        )
        totals.runs.append(SimpleNamespace(stats=stats))  # type: ignore[arg-type]  # only .stats is read
    fuzz._collect_stats(totals)
    return fuzz._refcount_line(totals)


def test_an_unsettled_type_cache_fill_is_named(tmp_path: Path) -> None:
    line = _line(tmp_path, [[None, 4000], [3, 2500], None])
    assert "in 1 engine process(es) CPython's type cache still released references to None" in line
    assert "30 calls judged on None/True/False" in line


def test_settled_or_absent_fills_add_nothing(tmp_path: Path) -> None:
    assert "type cache" not in _line(tmp_path, [[2, 2400], None])


def test_the_kept_references_are_named_by_callable(tmp_path: Path) -> None:
    # A reviewer could not tell which callables' suspected leaks a second run cleared (where a leak could hide).
    line = _line(tmp_path, [None, None], [{"Log.map": 20, "Log.append": 3}, {"Log.append": 4}])
    assert "27 suspected leak(s) shown by a second run to be kept references (Log.map 20, Log.append 7)" in line
    assert "kept references;" in _line(tmp_path, [None])  # none kept: no list
