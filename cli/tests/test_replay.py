"""fuzz._replay: a finding judged when its program ends (a leaked reference) whose whole-program replay is
overtaken by a later call is retried on the program cut after the blamed callable's last call; a finding
that reproduces whole is kept whole, and one the cut does not reproduce either stays unreproduced."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from ffi_harness import findings as fnd
from ffi_harness import fuzz

STEPS = [{"callable": "m.a"}, {"callable": "m.leaky"}, {"callable": "m.b"}, {"callable": "m.crashes"}]


def _finding() -> fnd.Finding:
    return fnd.Finding(
        kind="refcount-leak", site="m.leaky", callable="m.leaky", detail="", steps=list(STEPS), source="oracle"
    )


def _replay_with(monkeypatch: pytest.MonkeyPatch, answers: dict[int, fnd.Verdict]) -> tuple[fnd.Finding, list[int]]:
    """Run _replay with each replay of an n-step program answered by answers[n]; returns the lengths tried."""
    tried: list[int] = []

    def verdict_for(_f: fnd.Finding, steps: list[dict[str, Any]], *_rest: Any) -> fnd.Verdict:
        tried.append(len(steps))
        return answers[len(steps)]

    monkeypatch.setattr(fuzz, "_verdict_for", verdict_for)
    f = _finding()
    fuzz._replay(f, Any, Path("."), argparse.Namespace())  # type: ignore[arg-type]
    return f, tried


def test_a_leak_overtaken_by_a_later_crash_is_replayed_up_to_the_blamed_call(monkeypatch: pytest.MonkeyPatch) -> None:
    crash = fnd.Verdict(kind="crash:SIGSEGV", site="m.crashes", step=3)
    leak = fnd.Verdict(kind="refcount-leak", site="m.leaky", step=1)
    f, tried = _replay_with(monkeypatch, {4: crash, 2: leak})
    assert tried == [4, 2]
    assert f.reproduced is True and f.steps == STEPS[:2] and f.verdict is leak
    assert len(f.notes) == 1 and "2 step(s) after the last m.leaky call were dropped" in f.notes[0]
    assert "crash:SIGSEGV in m.crashes" in f.notes[0]


def test_a_finding_that_reproduces_whole_is_kept_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    leak = fnd.Verdict(kind="refcount-leak", site="m.leaky", step=1)
    f, tried = _replay_with(monkeypatch, {4: leak})
    assert tried == [4] and f.reproduced is True and f.steps == STEPS and not f.notes


def test_a_cut_that_does_not_reproduce_leaves_the_finding_unreproduced(monkeypatch: pytest.MonkeyPatch) -> None:
    clean = fnd.Verdict(kind="", site="")
    f, tried = _replay_with(monkeypatch, {4: clean, 2: clean})
    assert tried == [4, 2] and f.reproduced is False and f.steps == STEPS and not f.notes


def _crash_replays(monkeypatch: pytest.MonkeyPatch, verdicts: list[fnd.Verdict]) -> tuple[fnd.Finding, int]:
    """Run _replay on a crash finding whose successive replays give `verdicts`; returns it and the replays made."""
    answers = iter(verdicts)
    made = []

    def verdict_for(*_args: Any) -> fnd.Verdict:
        made.append(1)
        return next(answers)

    monkeypatch.setattr(fuzz, "_verdict_for", verdict_for)
    f = fnd.Finding(kind="crash:SIGABRT", site="?", callable="m.crashes", detail="", steps=list(STEPS), source="crash")
    fuzz._replay(f, Any, Path("."), argparse.Namespace())  # type: ignore[arg-type]
    return f, len(made)


def test_a_crash_that_needs_a_race_is_replayed_until_it_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    clean = fnd.Verdict(kind="", site="")
    uaf = fnd.Verdict(kind="heap-use-after-free", site="native_checksum", step=3)
    f, made = _crash_replays(monkeypatch, [clean, clean, uaf, clean])
    assert made == 3 and f.reproduced is True and f.verdict is uaf
    assert f.notes == [f"reproduced on replay 3 of up to {fuzz.CRASH_REPLAYS}: it depends on timing"]


def test_a_crash_no_replay_reproduces_stays_unreproduced(monkeypatch: pytest.MonkeyPatch) -> None:
    clean = fnd.Verdict(kind="", site="")
    f, made = _crash_replays(monkeypatch, [clean] * fuzz.CRASH_REPLAYS)
    assert made == fuzz.CRASH_REPLAYS and f.reproduced is False and f.verdict is clean and not f.notes


def test_a_minimised_finding_takes_the_detail_of_its_minimised_program(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the m.leaky step matters; the detail names the step index in the program that was run.
    def verdict_for(_f: fnd.Finding, steps: list[dict[str, Any]], *_rest: Any) -> fnd.Verdict:
        where = [i for i, s in enumerate(steps) if s["callable"] == "m.leaky"]
        if not where:
            return fnd.Verdict(kind="", site="")
        return fnd.Verdict(kind="refcount-leak", site="m.leaky", detail=f"+1 reference(s) of step {where[0]}")

    monkeypatch.setattr(fuzz, "_verdict_for", verdict_for)
    f = _finding()
    f.steps = [dict(s, receiver=0, args=[], kwargs=[]) for s in STEPS]
    f.verdict = verdict_for(f, f.steps)
    assert f.verdict.detail == "+1 reference(s) of step 1"
    f.detail = f.verdict.detail
    fuzz._minimise(f, Any, Path("."), argparse.Namespace(), 30)  # type: ignore[arg-type]
    assert f.minimised == [f.steps[1]] and f.detail == "+1 reference(s) of step 0"
