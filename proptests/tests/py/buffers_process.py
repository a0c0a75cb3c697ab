import native


def check_process(obj, key, rounds, refs):
    with memoryview(obj) as m:
        before = m.tobytes()
    native.process(obj, key=key, rounds=rounds)
    with memoryview(obj) as m:
        after = m.tobytes()
    ref = refs.process_ref if len(before) < 4096 else refs.process_ref_fast
    expected = ref(before, key, rounds)
    assert after == expected, (
        f"process({type(obj).__name__}, key={key:#x}, rounds={rounds}) on {len(before)} bytes: "
        f"first difference at byte {next(i for i, (a, b) in enumerate(zip(after, expected)) if a != b)}"
    )
