"""The engine process: ``python -m ffi_harness.engine_main PLAN FINDINGS_DIR STATS -- LIBFUZZER_ARGS...``.

Started by ``ffi-harness fuzz`` under the target's interpreter and sanitizer environment. Imports the
target (through the runtime's Context: module, setup, callables), then hands control to libFuzzer,
which exits the process when done (or dies on a crash, leaving its artifact).
"""

from __future__ import annotations

import json
import sys


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
    except BaseException as e:  # noqa: BLE001 - a set-up failure, reported to the parent
        print(f"FFI_HARNESS_ERROR set-up failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 3
    return int(_engine.fuzz(plan, ctx, ["ffi-harness-engine", *libfuzzer_args], findings, stats))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
