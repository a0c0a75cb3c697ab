"""Mirror the project's source files into ci/mutants' scratch tree (used by ci/mutants).

    python mutants/sync_tree.py SRC DST [--count] < file-list

Copies every listed file whose bytes differ (or that is missing) from SRC to DST and leaves identical
files untouched. Copies get a fresh mtime on purpose: cargo and make decide what to rebuild by mtime,
so a file restored after a mutant must look newer than the build of that mutant.
Prints how many files were copied (with --count: how many differ, copying nothing; ci/mutants uses it
to prove that a patch really changed the scratch tree).
A file synced before (DST/.sync-manifest) and no longer listed is deleted: a file removed or moved in
the repository must not linger in the scratch tree (cargo builds a stale build.rs it finds there).
"""

from __future__ import annotations

import os
import shutil
import sys


def same(a: str, b: str) -> bool:
    try:
        if os.path.getsize(a) != os.path.getsize(b):
            return False
    except OSError:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def main() -> int:
    src, dst = sys.argv[1], sys.argv[2]
    count_only = sys.argv[3:] == ["--count"]
    copied = 0
    listed = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for rel in listed:
        s, d = os.path.join(src, rel), os.path.join(dst, rel)
        if not os.path.isfile(s) or same(s, d):
            continue
        if count_only:
            copied += 1
            continue
        os.makedirs(os.path.dirname(d), exist_ok=True)
        if os.path.lexists(d):
            os.unlink(d)
        shutil.copyfile(s, d)
        shutil.copymode(s, d)
        copied += 1
    if not count_only:
        manifest = os.path.join(dst, ".sync-manifest")
        try:
            with open(manifest) as f:
                before = {line.rstrip("\n") for line in f}
        except FileNotFoundError:
            before = set()
        for rel in before - set(listed):
            if os.path.lexists(os.path.join(dst, rel)):
                os.unlink(os.path.join(dst, rel))
        with open(manifest, "w") as f:
            f.write("".join(rel + "\n" for rel in listed))
    print(copied)
    return 0


if __name__ == "__main__":
    sys.exit(main())
