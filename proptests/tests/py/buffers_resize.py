import native


def call_and_resize(conn, path, which, data, via_memoryview):
    ba = bytearray(data)
    arg = memoryview(ba) if via_memoryview else ba
    calls = {
        "Checksum": lambda: native.checksum(arg),
        "Process": lambda: native.process(arg, key=7),
        "ProcessRoundsZero": lambda: native.process(arg, rounds=0),
        "PutKey": lambda: conn.put(arg, b"v"),
        "PutValue": lambda: conn.put(b"k", arg),
        "PutKeyTooLong": lambda: conn.put(arg, b"v"),
        "Get": lambda: conn.get(arg),
        "Delete": lambda: conn.delete(arg),
        "Contains": lambda: arg in conn,
        "SetItem": lambda: conn.__setitem__(arg, arg),
        "Connect": lambda: native.connect(path, options={"max_key_size": arg}),
    }
    try:
        calls[which]()
    except (TypeError, ValueError, KeyError, native.Error):
        pass
    if via_memoryview:
        arg.release()
    # Any export still held makes these raise BufferError.
    ba.extend(b"0123456789" * 10)
    del ba[5:]
    ba.clear()
    ba.append(1)
