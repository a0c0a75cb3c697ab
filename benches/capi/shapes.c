/* The 0/1/5-argument targets of the call-overhead groups (see shapes.h). */
#include "shapes.h"

long shapes_zero(void) { return 0; }

long shapes_one(long a) { return a; }

/* Summed in unsigned arithmetic: the sum wraps (as the Rust side's i64 sum would with wrapping_add)
 * instead of being undefined behaviour; `ffi-harness fuzz` found the signed overflow under UBSan with
 * var_five(0, 0, 4486316976365479202, 5931894172722287183, 0). The conversion back to long is the
 * usual two's-complement one on every target this builds for. */
long shapes_five(long a, long b, long c, long d, long e) {
    return (long)((unsigned long)a + (unsigned long)b + (unsigned long)c + (unsigned long)d + (unsigned long)e);
}
