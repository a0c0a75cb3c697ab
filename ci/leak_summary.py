"""One line per leak-hunt scenario and interpreter, from the verdicts the leak hunt wrote.

    python ci/leak_summary.py VERDICTS.jsonl

Reads the JSON lines proptests/tests/leak_hunt.rs appends when FFI_HARNESS_LEAK_VERDICTS is set
(scenario, build, the metrics that grew in every round, each metric's deltas): the summary is derived
from the verdicts, never from words in the printed tables. Exits 1 if any scenario leaks, 2 if there
is no verdict at all (a leak hunt that did not run is not a clean one).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    path = Path(argv[0])
    lines = path.read_text().splitlines() if path.exists() else []
    verdicts = [json.loads(line) for line in lines if line.strip()]
    if not verdicts:
        print(f"leak hunt: no verdict recorded ({path}): it did not run")
        return 2
    status = 0
    for v in verdicts:
        if v["leaking"]:
            status = 1
            grew = "; ".join(f"{m} {'/'.join(f'{d:+}' for d in v['deltas'][m])}" for m in v["leaking"])
            print(f"{v['scenario']} ({v['build']}): LEAKING: {grew}")
        else:
            print(f"{v['scenario']} ({v['build']}): ok ({len(v['deltas'])} metrics, none grew in every round)")
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
