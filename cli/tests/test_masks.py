"""Known-crash masks (runtime.mask_features / call_features): a repeating crash's minimised call
masks the calls shaped like it, and only those, so the rest of its callable is still fuzzed."""

from __future__ import annotations

from typing import Any

from ffi_harness import runtime


def masked(crash: tuple[list[Any], dict[str, Any]], call: tuple[list[Any], dict[str, Any]]) -> bool:
    return runtime.mask_features(*crash) <= runtime.call_features(*call)


def test_a_lone_surrogate_key_masks_every_dict_with_one_and_nothing_else() -> None:
    crash = ([{"\ud800": None}], {})
    assert masked(crash, ([{"\udc00": 1, "a": [2]}], {}))
    assert masked(crash, ([{"\udfff": 0}], {"indent": 4}))
    assert not masked(crash, ([{"a": 1}], {}))
    assert not masked(crash, ([["\ud800"]], {}))  # a surrogate as a value, not a key
    assert not masked(crash, ([[[1]]], {"indent": 2**40}))  # the deeper bug's shape stays fuzzed


def test_integer_magnitude_and_sign_are_part_of_the_shape() -> None:
    crash = ([[1]], {"indent": 2**40})
    assert masked(crash, ([{"k": 2}], {"indent": 2**35}))
    assert not masked(crash, ([[1]], {"indent": 4}))
    assert masked(crash, ([[1]], {"indent": -(2**40)}))  # the magnitude is there; the sign only adds
    assert masked(([-5], {}), ([-300], {}))
    assert not masked(([-5], {}), ([5], {}))


def test_bytes_that_are_not_utf8_and_hostile_objects_are_unusual() -> None:
    class Hostile:
        pass

    assert masked(([b"\xc7"], {}), ([b"abc\xff"], {}))
    assert not masked(([b"\xc7"], {}), ([b"abc"], {}))
    assert masked(([Hostile()], {}), ([Hostile(), 1], {}))
    assert not masked(([Hostile()], {}), ([1], {}))


def test_a_plain_crash_masks_by_argument_types_and_count() -> None:
    crash = ([None], {})
    assert masked(crash, ([None], {}))
    assert not masked(crash, ([None, None], {}))
    assert not masked(crash, ([1], {}))


def test_a_subclass_of_a_builtin_is_an_object_and_its_code_is_not_run() -> None:
    class Exploding(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            raise AssertionError("feature extraction ran the object's own code")

    feats = runtime.call_features([Exploding(a=1)], {})
    assert "a0:Exploding:object" in feats


# Repeat masks (runtime._call_key): a hang that repeats an earlier call (a second lock of one name) skips
# the calls that repeat one, and no other.


def same_call(a: tuple[list[Any], dict[str, Any]], b: tuple[list[Any], dict[str, Any]]) -> bool:
    return runtime._call_key(None, *a) == runtime._call_key(None, *b)


def test_an_int_is_the_same_lock_name_in_every_form_a_parser_takes() -> None:
    class IntSub(int):
        pass

    assert same_call(([0], {}), ([False], {}))
    assert same_call(([5], {}), ([IntSub(5)], {}))
    assert not same_call(([5], {}), ([6], {}))
    assert not same_call(([5], {}), (["5"], {}))
    assert same_call(([1], {"timeout": 2}), ([1], {"timeout": 2}))
    assert not same_call(([1], {"timeout": 2}), ([1], {"retries": 2}))


def test_comparing_calls_runs_no_code_of_the_arguments_and_ends_on_a_list_that_holds_itself() -> None:
    class Hostile(str):
        def __eq__(self, other: object) -> bool:
            raise AssertionError("__eq__ ran")

        def __hash__(self) -> int:
            raise AssertionError("__hash__ ran")

        def __str__(self) -> str:
            raise AssertionError("__str__ ran")

    assert same_call(([Hostile("p")], {}), (["p"], {}))
    looped: list[Any] = [1]
    looped.append(looped)
    assert runtime._call_key(None, [looped], {}) is None  # cannot tell: never masked


def test_a_key_holds_no_reference_to_the_arguments() -> None:
    # The refcount oracle counts what holds an argument: a key that kept one would read as a leak.
    import sys

    name = "lock-" + str(12345)
    before = sys.getrefcount(name)
    key = runtime._call_key(None, [name, [name]], {"other": name})
    assert key is not None and sys.getrefcount(name) == before


def test_a_repeat_mask_skips_only_the_call_that_repeats_an_earlier_one(tmp_path: Any) -> None:
    import sys

    (tmp_path / "locks_fixture.py").write_text("def take(name, **kw):\n    return name\n")
    sys.path.insert(0, str(tmp_path))
    try:
        plan = {
            "module": "locks_fixture",
            "classes": [],
            "callables": [
                {"name": "take", "kind": "function", "path": "take", "min_args": 1, "max_args": 1, "keywords": []}
            ],
            "masks": [{"callable": "take", "repeat": True}],
        }
        ctx = runtime.Context(plan)
        steps = [("take", 0, [1], {}), ("take", 3, [2], {}), ("take", 5, [True], {}), ("take", 0, [runtime.R(1)], {})]
        ctx.run(steps)
        # take(1), take(2) run; take(True) repeats take(1); R(1) is take(2)'s result, 2: a repeat too.
        assert ctx.stats["take"][0] == 2 and ctx.masked == 2
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("locks_fixture", None)
