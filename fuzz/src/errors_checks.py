# The cases and checks of the `errors` fuzz target, shared by the fuzzer, repro.py and the atheris
# baseline: each case is one `case_*` function called with plain data (the fuzzer builds the arguments,
# a repro.py spells them as literals), checked for documented classes, complete error objects, and
# against an independent reader of libnative's file format. `_TMP` is the input's scratch directory
# (set by the target, or by the reproducer's preamble).
import os
import struct as _struct
import zlib as _zlib

import native


def _unsafe_path(p):
    # Fuzzed text becomes a real path and we may run as root: a path that would create or open a
    # file anywhere but this input's scratch directory is not tried (types and hostile objects are).
    try:
        s = os.fspath(p)
    except BaseException:  # noqa: BLE001 - a hostile __fspath__ may raise anything
        return False
    if isinstance(s, bytes):
        s = os.fsdecode(s)
    if not isinstance(s, str):
        return False
    return not (os.path.isabs(s) and s.startswith(_TMP + os.sep)) or ".." in s  # noqa: F821


def _check_store(c):
    try:
        items = list(c.items())
        assert len(items) == len(c) == c.stats().keys, "opened store is inconsistent"
        assert len({k for k, _ in items}) == len(items), "duplicate keys after replay"
        c.put(b"z", b"corruption")  # a key every max_key_size allows
        assert c.get(b"z") == b"corruption"
    finally:
        c.close()


def _ref_read(data, max_key_size=1024):
    """An independent reading of libnative's file format (store.c's layout comment): the dict of what
    the file holds, or why a correct reader must refuse it. Forged records with valid checksums are
    read as the library reads them, so comparing with it is never a false alarm."""
    if not data:
        return {}  # an empty file is a new store
    if len(data) < 20:
        return "truncated header"
    committed, size = _struct.unpack_from("<Q", data, 8)[0], len(data)
    header_ok = data[:4] == b"NKV1" and _zlib.crc32(data[:16]) == _struct.unpack_from("<I", data, 16)[0]
    if header_ok and 20 <= committed < size:
        size = committed  # bytes after the committed length are not part of the store
    if data[:4] != b"NKV1" or _struct.unpack_from("<I", data, 4)[0] != 2 or not header_ok:
        return "bad header"
    store, off = {}, 20
    while off < size:
        if size - off < 9:
            return "truncated record"
        kind, klen, vlen = _struct.unpack_from("<BII", data, off)
        end = off + 9 + klen + vlen
        if end + 4 > size:
            return "truncated record"
        if _zlib.crc32(data[off:end]) != _struct.unpack_from("<I", data, end)[0]:
            return "bad record checksum"
        if kind not in (1, 2) or klen == 0 or klen > 65535 or vlen > 1 << 30 or (kind == 2 and vlen):
            return "malformed record"
        key = data[off + 9 : off + 9 + klen]
        if kind == 1:
            store[key] = data[off + 9 + klen : end]
        else:
            store.pop(key, None)
        off = end + 4
    if committed > len(data):
        return "truncated log"
    if any(len(k) > max_key_size for k in store):
        return "key over max_key_size"
    return store


def _check_model(data, model):
    # The reference reader is itself checked on every undamaged store: it must read back the model.
    got = _ref_read(data)
    assert got == model, f"reference reader: {got!r}, model of what was written: {model!r}"


def _check_against_reference(p, data, max_key_size=None):
    """A damaged store either is refused, as the reference refuses it, or opens holding exactly what the
    reference reads from the same bytes: never other data, never silently less. With `max_key_size`,
    the store is reopened with that limit: a stored key the new handle could not use is a refusal."""
    if max_key_size is None:
        want = _ref_read(data)
        options = None
    else:
        want = _ref_read(data, max_key_size)
        options = {"max_key_size": max_key_size}
    try:
        c = native.connect(p, options=options)
    except (native.Error, ValueError) as e:
        assert not isinstance(want, dict), f"refused a store the reference reads ({len(want)} keys): {e!r}"
        raise
    try:
        assert isinstance(want, dict), f"opened a store the reference refuses ({want})"
        got = dict(c.items())
        assert got == want, f"reopened store {got!r}, the file holds {want!r}"
    except BaseException:
        c.close()
        raise
    _check_store(c)


def _check_error(fn):
    try:
        fn()
    except native.Error as e:
        assert isinstance(e.op, str) and e.op, f"{type(e).__name__} without op: {e!r}"
        assert isinstance(e.code, str) and e.code.startswith("NATIVE_"), f"bad code {e.code!r}"
        assert isinstance(e.message, str) and e.message, f"{type(e).__name__} without message"
        if isinstance(e, native.ConnectionError):
            assert isinstance(e.errno, int) and e.errno > 0, f"ConnectionError without errno: {e!r}"
            assert e.filename is not None, f"ConnectionError without filename: {e!r}"
        raise


_PATHS = {
    "missing_directory": lambda: os.path.join(_TMP, "missing", "x.db"),  # noqa: F821
    "is_directory": lambda: _TMP,  # noqa: F821
    "nul_byte": lambda: os.path.join(_TMP, "nul\x00.db"),  # noqa: F821
    "empty": lambda: "",
    "as_bytes": lambda: os.fsencode(os.path.join(_TMP, "bytes.db")),  # noqa: F821
}


def case_path(kind, hostile=None):
    """connect() on a path of one bad shape (a `_PATHS` kind), or on a hostile object ("hostile")."""
    path = hostile if kind == "hostile" else _PATHS[kind]()
    if not _unsafe_path(path):
        _check_error(lambda: native.connect(path).close())


def _damage(data, how):
    kind = how[0]
    if kind == "flip":
        if data:
            data[how[1] % len(data)] ^= max(how[2], 1)
    elif kind == "truncate":
        del data[how[1] % (len(data) + 1) :]
    elif kind == "append":
        data += how[1]
    elif kind == "overwrite":
        o = how[1] % (len(data) + 1)
        data[o : o + len(how[2])] = how[2]
    else:
        raise AssertionError(f"unknown damage {how!r}")


def case_corrupt(records, damage, max_key_size=None):
    """Write `records` ((key, value) puts) to a fresh store, check the reference reader reads back the
    model of what was written, apply `damage` (("flip", offset, mask), ("truncate", keep),
    ("append", bytes), ("overwrite", offset, bytes)) to the file, then reopen it (with `max_key_size`
    when given)."""
    p = os.path.join(_TMP, "c.db")  # noqa: F821
    if os.path.exists(p):
        os.remove(p)  # a fresh store per case: the model is this case's puts
    c = native.connect(p)
    model = {}
    for k, v in records:
        c.put(k, v)
        model[k] = v  # the last value put under each key
    c.close()
    with open(p, "rb") as f:
        data = bytearray(f.read())
    _check_model(bytes(data), model)
    for how in damage:
        _damage(data, how)
    with open(p, "wb") as f:
        f.write(data)
    _check_error(lambda: _check_against_reference(p, bytes(data), max_key_size))


def _waits_long(timeout):
    """Whether connect() would take `timeout` as a long wait (None waits forever): such an input would
    sleep for minutes, so it is not tried. Converts as the wrapper does (__float__, else __index__)."""
    if timeout is None:
        return True
    if not (hasattr(type(timeout), "__float__") or hasattr(type(timeout), "__index__")):
        return False
    try:
        return float(timeout) > 0.05
    except BaseException:  # noqa: BLE001 - a hostile __float__ may raise anything; connect() will too
        return False


def case_locked(timeout):
    """connect() with `timeout` to a store another connection holds locked."""
    if _waits_long(timeout):
        return
    p = os.path.join(_TMP, "l.db")  # noqa: F821
    holder = native.connect(p)
    try:
        _check_error(lambda: native.connect(p, timeout=timeout).close())
    finally:
        holder.close()
