/*
 * Trivial C functions giving the call-overhead benchmarks their 0-, 1- and 5-argument shapes (the
 * 2-argument row is libnative's own native_add). Built as libbenchshapes.so for ctypes, cffi and the
 * C-API extension, and statically into the bench binary for the bare-C floor and the PyO3 shapes.
 */
#ifndef BENCH_SHAPES_H
#define BENCH_SHAPES_H

long shapes_zero(void);
long shapes_one(long a);
long shapes_five(long a, long b, long c, long d, long e);

#endif
