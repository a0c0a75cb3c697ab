"""How far a faster driver could go: splits one fuzzing process's main-thread CPU samples (`perf script`
output) into the engine's own work, the calls under test, and the rest, as microseconds per execution.

    perf record -F 499 -g --call-graph dwarf,16384 -o T.perf -- <fuzzer> ...   # a libFuzzer run
    perf script -i T.perf --no-inline -F pid,tid,period,ip,sym,dso > T.script
    python benches/py/fuzz_floor.py T.script EXECS [HZ]

A sample is counted once, in the first group that matches its stack:
- calls under test: a frame of the `native` extension (the PyO3 wrapper, `native_wrapper::…`, or
  libnative's `native_*` C functions), including what runs beneath it (argument conversion, ASan's
  allocator, the GIL hand-off, the C code, building the result);
- rest of the input: anything else under the fuzz callback (`LLVMFuzzerTestOneInput`, atheris's
  `TestOneInput`): the harness, its oracles, building the arguments;
- engine: libFuzzer outside the callback (mutation, feature collection, corpus bookkeeping);
- outside the loop: the main thread's other samples (start-up, reading the corpus).

Any libFuzzer driver making the same calls pays the first and third groups; only the second is the
driver's to win, so `(total) / (calls + engine)` bounds the speed-up of a driver that cost nothing.
"""

from __future__ import annotations

import argparse
import os
import re
from collections import Counter
from collections.abc import Iterator

# The fuzz callback: libFuzzer calls LLVMFuzzerTestOneInput, which libfuzzer-sys forwards to
# rust_fuzzer_test_input (a build without sanitizers may show only the latter); atheris calls its own.
CALLBACK = ("LLVMFuzzerTestOneInput", "rust_fuzzer_test_input", "atheris::TestOneInput")
LIBNATIVE_C = re.compile(r"^native_[a-z_]+$")


def is_under_test(sym: str, dso: str) -> bool:
    return "native_wrapper" in sym or bool(LIBNATIVE_C.match(sym)) or "/_native." in dso


Frames = list[tuple[str, str]]


def samples(path: str) -> Iterator[tuple[int, int, Frames]]:
    """Yields (pid, tid, [(sym, dso), ...] leaf first) per sample."""
    head: tuple[int, int] | None = None
    frames: Frames = []
    frame = re.compile(r"^\s+[0-9a-f]+ (.*?) \((.*)\)$")
    # perf right-aligns the pid/tid column, so a header line may start with spaces (pids under 10,000)
    header = re.compile(r"^\s*(\d+)/(\d+)\s")
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if head:
                    yield (*head, frames)
                head, frames = None, []
            elif h := header.match(line):
                head = (int(h.group(1)), int(h.group(2)))
            elif m := frame.match(line.rstrip("\n")):
                frames.append((m.group(1), m.group(2)))
    if head:
        yield (*head, frames)


def classify(frames: Frames) -> str:
    syms = [s for s, _ in frames]
    if any(is_under_test(s, d) for s, d in frames):
        return "calls under test"
    if any(c in s for s in syms for c in CALLBACK):
        return "rest of the input"
    if any(s.startswith("fuzzer::") for s in syms):
        return "engine"
    return "outside the loop"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("script", help="`perf script` output")
    parser.add_argument("execs", type=int, help="executions the run made (libFuzzer's number_of_executed_units)")
    parser.add_argument("hz", type=float, nargs="?", default=499.0, help="perf's sampling rate (default 499)")
    args = parser.parse_args()
    if args.execs <= 0 or args.hz <= 0:
        parser.error("execs and hz must be positive: a run with no execution has no cost per execution")
    path, execs, hz = args.script, args.execs, args.hz
    if not os.path.isfile(path):
        parser.error(f"{path}: no such file (make it with `perf script`, see above)")
    all_samples = list(samples(path))
    # The fuzzing process: the one whose samples run libFuzzer (asan-python and cargo exec into it).
    per_pid = Counter(pid for pid, _, fr in all_samples if any(s.startswith("fuzzer::") for s, _ in fr))
    if not per_pid:
        raise SystemExit(f"{path}: no sample runs libFuzzer")
    pid = per_pid.most_common(1)[0][0]
    groups = Counter(classify(fr) for p, tid, fr in all_samples if p == pid and tid == pid)
    us = {g: n / hz / execs * 1e6 for g, n in groups.items()}
    loop = sum(v for g, v in us.items() if g != "outside the loop")
    floor = us.get("calls under test", 0.0) + us.get("engine", 0.0)
    for g in ("calls under test", "rest of the input", "engine", "outside the loop"):
        print(f"{g:20} {us.get(g, 0.0):8.1f} us/exec")
    print(f"{'in the loop':20} {loop:8.1f} us/exec")
    print(f"ceiling: {loop / floor:.1f}x (in the loop / (calls under test + engine))" if floor else "ceiling: -")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
