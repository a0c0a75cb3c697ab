# cython: language_level=3
"""The 0/1/5-argument shapes (capi/shapes.h) as Cython `def` functions, for the call-overhead rows; the
2-argument row is the real Cython binding's add (pytests/bindings/cython/). Arguments are converted the
way that binding converts them: integers only (__index__), never a float truncated by __int__."""

from cpython.number cimport PyNumber_Index


cdef extern from "shapes.h":
    long shapes_zero()
    long shapes_one(long a)
    long shapes_five(long a, long b, long c, long d, long e)


cdef inline long _as_long(object x) except? -1:
    if type(x) is not int:
        x = PyNumber_Index(x)
    return x


def zero():
    return shapes_zero()


def one(a):
    return shapes_one(_as_long(a))


def five(a, b, c, d, e):
    return shapes_five(_as_long(a), _as_long(b), _as_long(c), _as_long(d), _as_long(e))
