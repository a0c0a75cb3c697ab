"""The engine process: ``python -m ffi_harness.engine_main PLAN FINDINGS_DIR STATS -- LIBFUZZER_ARGS...``.

Started by ``ffi-harness fuzz`` under the target's interpreter and sanitizer environment. Imports the
target (through the runtime's Context: module, setup, callables), then hands control to libFuzzer,
which exits the process when done (or dies on a crash, leaving its artifact).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") < 3:
        print("usage: python -m ffi_harness.engine_main PLAN FINDINGS STATS -- LIBFUZZER_ARGS", file=sys.stderr)
        return 2
    sep = argv.index("--")
    plan_path, findings, stats = argv[:3]
    libfuzzer_args = argv[sep + 1 :]
    from ffi_harness import _engine, runtime

    with open(plan_path) as f:
        plan = json.load(f)
    _engine.prelude()  # one prelude module, shared by the materialiser and the runtime's hook
    try:
        ctx = runtime.Context(plan)
        if os.environ.get("FFI_HARNESS_UBSAN_SCAN") == "1":
            ctx = _with_ubsan_scan(ctx)
    except BaseException as e:  # noqa: BLE001 - a set-up failure, reported to the parent
        print(f"FFI_HARNESS_ERROR set-up failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 3
    return int(_engine.fuzz(plan, ctx, ["ffi-harness-engine", *libfuzzer_args], findings, stats))


def _with_ubsan_scan(ctx: Any) -> Any:
    """UBSan reports as findings without ending the engine run.

    The engine runs with UBSAN_OPTIONS=halt_on_error=0 (for an extension built with recoverable
    UBSan, as build-ext does): UBSan prints a report once per source location and the call goes on.
    After each program, new text in this process's stderr (a file: the engine log) is scanned; a
    report is that program's finding, classified exactly as a crash would be. So a shallow bug (say a
    signed negation of -2**63 in an encoder) is reported once and no longer kills every engine run
    that meets it, which had the callable left out and its deeper bugs never reached.
    """
    from ffi_harness import findings

    try:
        path = os.readlink("/proc/self/fd/2")
        pos = os.fstat(2).st_size
    except OSError:
        return ctx
    if not os.path.isfile(path):
        return ctx
    run = ctx.run

    def scanned(steps: list[Any]) -> tuple[list[int], dict[str, Any] | None]:
        nonlocal pos
        sigs, finding = run(steps)
        size = os.fstat(2).st_size
        if size == pos:
            return sigs, finding
        with open(path, "rb") as f:
            f.seek(pos)
            text = f.read(size - pos).decode("utf-8", "replace")
        pos = size
        # A report wins over the program's own finding: it came first, inside a call (a signed overflow
        # in a size, then the SystemError of the negative size), and a replay, where a report is fatal,
        # stops there. Judged by the later finding, the replay looked like another bug ("not reproduced").
        if "runtime error:" in text:
            report = text[text.rfind("\n", 0, text.find("runtime error:")) + 1 :]
            v = findings.classify_output(1, "", report)
            finding = {
                "kind": v.kind,
                "site": v.site or "?",
                "step": len(steps) - 1,
                "detail": v.detail,
                "key": f"{v.kind}:{v.site}",
            }
        return sigs, finding

    ctx.run = scanned
    return ctx


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
