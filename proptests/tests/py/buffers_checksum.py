import mmap

import native


def build(kind, data, path):
    if kind == "bytes":
        return bytes(data)
    if kind == "file_mmap":
        with open(path, "wb") as f:
            f.write(bytes(data) or b"\0")
        with open(path, "rb") as f:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if kind == "cast3d":
        n = max(1, len(data) // 6)
        raw = (bytes(data) + bytes(6 * n))[: 6 * n]
        return memoryview(raw).cast("B", [2, 3, n])  # read-only, 3-D, C-contiguous
    raise ValueError(kind)


def check_checksum(obj, refs):
    try:
        with memoryview(obj) as m:
            contiguous, raw = m.c_contiguous, m.tobytes()
    except ValueError:  # released memoryview
        try:
            native.checksum(obj)
        except ValueError:
            return
        raise AssertionError("checksum of a released memoryview did not raise ValueError") from None
    if not contiguous:
        try:
            got = native.checksum(obj)
        except TypeError:
            return
        # An empty strided view: CPython 3.11.2's memoryview says non-contiguous, while
        # PyBuffer_IsContiguous (what the wrapper asks) says an empty buffer is contiguous.
        # Both answers are sound for 0 bytes; the value must still be right.
        assert not raw and got == refs.fnv1a64(b""), "checksum of a non-contiguous view did not raise TypeError"
        return
    got = native.checksum(obj)
    expected = refs.fnv1a64(raw)
    assert got == expected, f"checksum({type(obj).__name__} of {len(raw)} bytes) = {got:#x}, reference {expected:#x}"
    if isinstance(obj, mmap.mmap):
        obj.close()  # fails with BufferError if an export leaked
