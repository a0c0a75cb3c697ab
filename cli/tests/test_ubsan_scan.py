"""The fuzz engine's UBSan scan (engine_main._with_ubsan_scan): with halt_on_error=0 a UBSan report does not end
the engine run, so each program's new stderr text is scanned for one. A report made during a program is that
program's finding even when the program also raised a finding of its own (a signed overflow in a size, then
the SystemError of the negative size it made): the report came first, and a replay, where it is fatal, stops
there; judged by the later SystemError, the replay looked like another bug and the finding "did not
reproduce"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROGRAM = r"""
import json, os, sys
from ffi_harness import engine_main

class Ctx:
    def run(self, steps):
        if steps == ["overflow"]:
            os.write(2, b"/src/ring.c:653:17: runtime error: signed integer overflow: "
                        b"6 * 700000001 cannot be represented in type 'int'\n"
                        b"    #0 0x7f in tile /src/ring.c:653:17\n")
            return [1], {"kind": "SystemError", "site": "tile", "step": 0,
                         "detail": "SystemError: Negative size passed to PyBytes_FromStringAndSize", "key": "SystemError:tile"}
        if steps == ["quiet"]:
            return [2], {"kind": "SystemError", "site": "peek", "step": 0, "detail": "SystemError: x", "key": "SystemError:peek"}
        return [3], None

ctx = engine_main._with_ubsan_scan(Ctx())
print(json.dumps([ctx.run(["overflow"])[1], ctx.run(["quiet"])[1], ctx.run(["clean"])[1]]))
"""


def test_a_ubsan_report_wins_over_the_programs_own_finding(tmp_path: Path) -> None:
    err = tmp_path / "engine.log"  # the engine's stderr is a file (the engine log); the scan needs one
    with err.open("w") as f:
        p = subprocess.run(
            [sys.executable, "-c", PROGRAM], check=False, stdout=subprocess.PIPE, stderr=f, text=True, timeout=60
        )
    assert p.returncode == 0, err.read_text()
    overflow, quiet, clean = json.loads(p.stdout)
    assert overflow["kind"].startswith("ubsan:signed") and overflow["site"] == "tile", overflow
    assert quiet["kind"] == "SystemError" and quiet["site"] == "peek", quiet  # no new report: its own finding
    assert clean is None
