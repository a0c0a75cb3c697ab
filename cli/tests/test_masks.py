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
