"""The buggy fixture under atheris: the harness a binding author writes by hand (what ffi-harness fuzz
needs none of), one branch per callable with ordinary argument types, the expected exceptions caught.
Run by cli/benches/peers.py; atheris reports crashes, sanitizer reports, timeouts and uncaught exceptions
(SystemError included), and nothing about reference counts."""

import sys

import atheris

with atheris.instrument_imports():
    import buggy

EXPECTED = (TypeError, ValueError, OverflowError, IndexError)


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    choice = fdp.ConsumeIntInRange(0, 10)
    n = fdp.ConsumeInt(8)
    try:
        if choice == 0:
            buggy.add(n, fdp.ConsumeInt(8))
        elif choice == 1:
            buggy.checksum(fdp.ConsumeBytes(32))
        elif choice == 2:
            buggy.table_get(n)
        elif choice == 3:
            buggy.table_find(n)
        elif choice == 4:
            buggy.pop_last([fdp.ConsumeInt(1) for _ in range(fdp.ConsumeIntInRange(0, 5))])
        elif choice == 5:
            buggy.describe(n)
        elif choice == 6:
            buggy.remember(fdp.ConsumeUnicode(8))
        elif choice == 7:
            buggy.as_size(n)
        elif choice == 8:
            buggy.wait_for(n)
        elif choice == 9:
            buggy.each_entry(lambda entry: entry["value"])
        else:
            c = buggy.Counter(n)
            for _ in range(fdp.ConsumeIntInRange(0, 3)):
                op = fdp.ConsumeIntInRange(0, 2)
                if op == 0:
                    c.incr(fdp.ConsumeInt(8))
                elif op == 1:
                    c.value()
                else:
                    c.close()
    except EXPECTED:
        pass


atheris.Setup(sys.argv, one_input)
atheris.Fuzz()
