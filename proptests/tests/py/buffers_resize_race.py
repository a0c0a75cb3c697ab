import native
from _refs import process_ref_fast, resize_race


def race(call, size, key, rounds, seed):
    """Run the call on a large bytearray of seeded bytes while another thread appends and pops a byte
    until one of them fails with BufferError (`_refs.resize_race`, as in pytests). The result must be
    exact."""
    block = bytes((seed * 131 + i * 7) & 0xFF for i in range(256))
    base = block * (size // 256)

    if call == "process":

        def run(ba):
            return native.process(ba, key=key, rounds=rounds)

        def expect(ba, original, _):
            assert bytes(ba) == process_ref_fast(original, key, rounds), "process result corrupted by the resize"
    else:
        run = native.checksum

        def expect(ba, original, result):
            assert bytes(ba) == original and result == native.checksum(original), "checksum changed or wrong"

    resize_race(base, run, expect)
