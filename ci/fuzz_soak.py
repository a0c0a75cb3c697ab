#!/usr/bin/env python3
"""Soak: runs every cargo-fuzz target until it has executed a given number of inputs, resumably.

    ci/fuzz-soak [--execs N] [--targets a,b] [--jobs J] [--chunk C] [--dir DIR] [--no-build] [--explore plain]

Each target runs in chunks of C executions (libFuzzer `-runs`) with CI's flags. After every chunk the
executions, seconds and coverage are added to DIR/state.json, so an interrupted soak (Ctrl-C, a
reboot) goes on from where it was: run the same command again. New inputs accumulate in
DIR/corpus/<target>/ (the committed seeds are read too, never written). When a target reaches N, its
corpus is minimised with libFuzzer's set-cover merge (what `cargo fuzz cmin` does, with fewer files
for the same features). DIR/REPORT.md is the table after every chunk. A finding stops that target
(its repro.py is under fuzz/artifacts/<target>/) and makes the command exit 1; a target that executed
nothing is a failure too, never "clean". A stopped target stays stopped on the next call (its finding
stays in the report) until `--restart <target>` clears its row; its corpus is kept.

`--explore plain` is the OSS-Fuzz model: the chunks run the build without sanitizers (fuzz/target-plain,
2-3x the ASan build's exec/s; the Rust oracles all run there), and after each chunk every input it added
to the corpus is run once on the ASan build, so every input that reached new coverage is also checked
for memory errors. Inputs that added no coverage are not seen by ASan: the ASan chunks remain the
default.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from fuzz_run import ROOT, binary, build, chosen_targets, env_for_fuzzing, run_target

LOCK = threading.Lock()


def load(state_file: Path) -> dict:
    return json.loads(state_file.read_text()) if state_file.exists() else {}


def save(state_file: Path, state: dict) -> None:
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    tmp.replace(state_file)


def minimise(target: str, corpus: Path, env: dict[str, str], log: Path) -> int:
    """Replace `corpus` by the set-cover merge of itself; the number of files kept."""
    merged = corpus.with_name(corpus.name + ".merged")
    shutil.rmtree(merged, ignore_errors=True)
    merged.mkdir()
    proc = subprocess.run(
        [str(binary(target)), "-set_cover_merge=1", "-detect_leaks=0", str(merged), str(corpus)],
        check=False,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    log.write_text(proc.stdout)
    if proc.returncode != 0:
        shutil.rmtree(merged, ignore_errors=True)
        raise RuntimeError(f"{target}: corpus merge failed (log: {log})")
    shutil.rmtree(corpus)
    merged.rename(corpus)
    return sum(1 for _ in corpus.iterdir())


def soak_one(target: str, args: argparse.Namespace, env: dict[str, str], state: dict, state_file: Path) -> None:
    corpus = args.dir / "corpus" / target
    with LOCK:
        row = state.setdefault(
            target, {"execs": 0, "seconds": 0, "chunks": 0, "cov": "-", "ft": "-", "corpus": "-", "findings": []}
        )
    while row["execs"] < args.execs and not row["findings"]:
        runs = min(args.chunk, args.execs - row["execs"])
        # A chunk of N runs takes N / (exec/s): bound it generously (a stuck input is the target's own
        # watchdog's business, 25 s).
        budget = max(600, runs // 20)
        log = args.dir / "logs" / f"{target}-{row['chunks']}.log"
        plain = args.explore == "plain"
        before = set(corpus.iterdir()) if corpus.exists() else set()
        r = run_target(target, corpus, [f"-runs={runs}"], env, log, budget, plain=plain)
        if plain and not r["findings"]:
            new = sorted(set(corpus.iterdir()) - before)
            if new:
                asan_log = args.dir / "logs" / f"{target}-{row['chunks']}-asan.log"
                replay = run_target(target, corpus, [], env, asan_log, budget, inputs=new)
                r["findings"] += replay["findings"]
                with LOCK:
                    row["asan_replayed"] = row.get("asan_replayed", 0) + replay["execs"]
        with LOCK:
            row["chunks"] += 1
            row.pop("minimised", None)  # new inputs since the last merge
            row["execs"] += r["execs"]
            row["seconds"] = round(row["seconds"] + r["seconds"], 1)
            row.update(cov=r["cov"], ft=r["ft"], corpus=r["corpus"])
            row["findings"] += r["findings"]
            save(state_file, state)
            write_report(args, state)
        print(f"{target}: {row['execs']:,} / {args.execs:,} executions ({r['exec_s']} exec/s)", file=sys.stderr)
    if row["execs"] >= args.execs and "minimised" not in row and not row["findings"]:
        kept = minimise(target, corpus, env, args.dir / "logs" / f"{target}-merge.log")
        with LOCK:
            row["minimised"] = kept
            save(state_file, state)
            write_report(args, state)


def write_report(args: argparse.Namespace, state: dict) -> None:
    lines = [
        f"Soak to {args.execs:,} executions per target (`ci/fuzz-soak`, resumable; state: {args.dir / 'state.json'}).",
        "",
        "| target | executions | seconds | exec/s | coverage (edges) | features | corpus | new inputs kept | findings |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    replayed = {t: row["asan_replayed"] for t, row in sorted(state.items()) if row.get("asan_replayed")}
    for target, row in sorted(state.items()):
        rate = round(row["execs"] / row["seconds"]) if row["seconds"] else 0
        done = "" if row["execs"] >= args.execs else " (not reached)"
        kept = f"{row['minimised']:,} (merged)" if "minimised" in row else "not merged yet"
        findings = "; ".join(f"{f['kind']}: repro {f['repro']}" for f in row["findings"]) or "none"
        lines.append(
            f"| {target} | {row['execs']:,}{done} | {round(row['seconds']):,} | {rate:,} | {row['cov']} | {row['ft']} "
            f"| {row['corpus']} | {kept} | {findings} |"
        )
    if replayed:
        lines += [
            "",
            "Explored on the build without sanitizers (`--explore plain`); the inputs each chunk added, run once"
            " on the ASan build: " + ", ".join(f"{t} {n:,}" for t, n in replayed.items()) + ".",
        ]
    (args.dir / "REPORT.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--execs", type=int, default=1_000_000, help="executions per target (default 1,000,000)")
    parser.add_argument("--targets", default="", help="comma-separated (default: every target `cargo fuzz list` names)")
    parser.add_argument("--jobs", type=int, default=2, help="targets soaked at once (default 2: one per core)")
    parser.add_argument("--chunk", type=int, default=50_000, help="executions per libFuzzer run (default 50,000)")
    parser.add_argument("--dir", type=Path, default=ROOT / "target" / "soak", help="state, corpora, logs, REPORT.md")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument(
        "--explore",
        choices=["asan", "plain"],
        default="asan",
        help="the build the chunks run on (default asan); plain: without sanitizers, new inputs replayed on ASan",
    )
    parser.add_argument(
        "--restart", default="", help="comma-separated targets whose saved progress and findings are cleared first"
    )
    args = parser.parse_args()
    if args.execs < 1 or args.chunk < 1 or args.jobs < 1:
        parser.error("--execs, --chunk and --jobs must be at least 1")
    args.dir = args.dir.resolve()
    (args.dir / "logs").mkdir(parents=True, exist_ok=True)
    env = env_for_fuzzing()
    if not args.no_build:
        build(env)
        if args.explore == "plain":
            build(env, plain=True)
    targets = chosen_targets(args.targets, env)
    if args.explore == "plain" and (missing := [t for t in targets if not binary(t, plain=True).exists()]):
        parser.error(f"{', '.join(missing)} not built without sanitizers (run without --no-build)")
    state_file = args.dir / "state.json"
    state = load(state_file)
    for target in filter(None, args.restart.split(",")):
        state.pop(target, None)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for f in [pool.submit(soak_one, t, args, env, state, state_file) for t in targets]:
            f.result()
    write_report(args, state)
    report = (args.dir / "REPORT.md").read_text()
    print("\n" + report)
    failed = [t for t in targets if state[t]["findings"] or state[t]["execs"] < args.execs]
    if failed:
        print(f"ci/fuzz-soak: findings or unfinished targets: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
