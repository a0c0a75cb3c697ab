"""native.add / native.add_fast: C long arithmetic with checked conversions."""

import random
import sys

import native
import pytest
from _refs import LONG_MAX, LONG_MIN

ADDERS = [pytest.param(native.add, id="add"), pytest.param(native.add_fast, id="add_fast")]


@pytest.mark.parametrize("f", ADDERS)
@pytest.mark.parametrize(
    "a, b",
    [
        (2, 3),
        (0, 0),
        (-7, 3),
        (-5, -6),
        (LONG_MAX, 0),
        (LONG_MIN, 0),
        (LONG_MAX, LONG_MIN),
        (LONG_MAX - 1, 1),
        (LONG_MIN + 1, -1),
        (1 << 40, 1 << 40),
    ],
)
def test_sum(f, a, b):
    r = f(a, b)
    assert type(r) is int
    assert r == a + b


@pytest.mark.parametrize("f", ADDERS)
def test_random_pairs_match_python(f):
    rng = random.Random(1234)
    for _ in range(2000):
        a = rng.randint(LONG_MIN, LONG_MAX) >> rng.randint(0, 63)
        b = rng.randint(LONG_MIN, LONG_MAX) >> rng.randint(0, 63)
        if LONG_MIN <= a + b <= LONG_MAX:
            assert f(a, b) == a + b
        else:
            with pytest.raises(OverflowError):
                f(a, b)


@pytest.mark.parametrize("f", ADDERS)
@pytest.mark.parametrize(
    "a, b",
    [(LONG_MAX, 1), (LONG_MIN, -1), (LONG_MAX, LONG_MAX), (LONG_MIN, LONG_MIN)],
)
def test_result_overflow(f, a, b):
    with pytest.raises(OverflowError):
        f(a, b)


@pytest.mark.parametrize("f", ADDERS)
@pytest.mark.parametrize(
    "a, b",
    [
        (LONG_MAX + 1, 0),
        (0, LONG_MAX + 1),
        (LONG_MIN - 1, 0),
        (0, LONG_MIN - 1),
        (1 << 64, 0),
        (0, -(1 << 64)),
        (1 << 200, -(1 << 200)),
        ((1 << 64) + 2, 3),
    ],
)
def test_argument_overflow(f, a, b):
    # (1 << 200) + -(1 << 200) == 0 in Python, and 2**64+2 truncated to 64 bits is 2:
    # an unchecked conversion would return a wrong number instead of raising.
    with pytest.raises(OverflowError):
        f(a, b)


@pytest.mark.parametrize("f", ADDERS)
@pytest.mark.parametrize("bad", [1.0, 2.5, "1", b"1", None, [1], 1j, float("nan")])
def test_type_errors(f, bad):
    with pytest.raises(TypeError):
        f(bad, 1)
    with pytest.raises(TypeError):
        f(1, bad)


@pytest.mark.parametrize("f", ADDERS)
def test_arity_and_positional_only(f):
    with pytest.raises(TypeError):
        f(1)
    with pytest.raises(TypeError):
        f(1, 2, 3)
    with pytest.raises(TypeError):
        f()


def test_add_fast_positional_only():
    with pytest.raises(TypeError):
        native.add_fast(a=1, b=2)
    with pytest.raises(TypeError):
        native.add_fast(1, b=2)


@pytest.mark.parametrize("f", ADDERS)
def test_int_subclass_accepted(f):
    class MyInt(int):
        pass

    assert f(MyInt(40), MyInt(2)) == 42


@pytest.mark.parametrize("f", ADDERS)
def test_refcount_neutral(f):
    a = int("123456789012345")  # fresh heap objects, not cached small ints
    b = int("-987654321")
    ra, rb = sys.getrefcount(a), sys.getrefcount(b)
    for _ in range(100):
        r = f(a, b)
    assert r == a + b
    assert sys.getrefcount(a) == ra
    assert sys.getrefcount(b) == rb
    # the result is owned by the caller alone
    assert sys.getrefcount(f(a, b)) == sys.getrefcount(object())


class _IndexRaises:
    def __index__(self):
        raise RuntimeError("from __index__")


@pytest.mark.parametrize("fn", ["add", "add_fast"])
def test_first_bad_argument_wins_and_never_systemerror(fn):
    # Found by the `differential` fuzz target: add_fast converted the second argument while the
    # first one's exception was pending (wrong exception, or SystemError).
    f = getattr(native, fn)
    with pytest.raises(RuntimeError, match="from __index__"):
        f(_IndexRaises(), None)
    with pytest.raises(TypeError):
        f(None, _IndexRaises())
