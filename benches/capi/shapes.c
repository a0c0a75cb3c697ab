/* The 0/1/5-argument targets of the call-overhead groups (see shapes.h). */
#include "shapes.h"

long shapes_zero(void) { return 0; }

long shapes_one(long a) { return a; }

long shapes_five(long a, long b, long c, long d, long e) { return a + b + c + d + e; }
