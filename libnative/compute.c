/*
 * Boundary concern: raw memory and long-running native work. checksum reads a borrowed buffer, process
 * writes one in place and polls a cancellation hook. Checklist rows: "Does it need raw memory?",
 * "Can the call block?" (cancellation), plus integer overflow for native_add.
 */
#include "internal.h"

#include <limits.h>

#define STOP_POLL_BYTES ((size_t)256 * 1024) /* roughly 5 ms of process() work */

uint64_t native_checksum(const void *buf, size_t len)
{
    COUNT_CALL();
    const unsigned char *p = buf;
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

/* One pass over b[start, end) of a buffer whose index 0 is b[0]; i feeds both the key byte and the add. */
static void process_span(unsigned char *b, size_t start, size_t end, const unsigned char k[4])
{
    for (size_t i = start; i < end; i++)
        b[i] = (unsigned char)((b[i] ^ k[i & 3]) + (i & 0xff));
}

int native_process(void *buf, size_t len, uint32_t key, uint32_t rounds, native_cancel_fn should_stop,
                   void *stop_data)
{
    COUNT_CALL();
    if (rounds == 0 || (buf == NULL && len > 0))
        return NATIVE_EINVAL;
    const unsigned char k[4] = {(unsigned char)key, (unsigned char)(key >> 8), (unsigned char)(key >> 16),
                                (unsigned char)(key >> 24)};
    /* The poll budget spans rounds, so many rounds over a tiny buffer still get polled. */
    size_t budget = STOP_POLL_BYTES;
    for (uint32_t r = 0; r < rounds; r++) {
        size_t i = 0;
        while (i < len) {
            size_t n = len - i < budget ? len - i : budget;
            process_span(buf, i, i + n, k);
            i += n;
            budget -= n;
            if (budget == 0) {
                budget = STOP_POLL_BYTES;
                if (should_stop != NULL && should_stop(stop_data))
                    return NATIVE_ECANCELLED;
            }
        }
    }
    return NATIVE_OK;
}

int native_add(long a, long b, long *out)
{
    COUNT_CALL();
    long r;
    if (out == NULL || __builtin_add_overflow(a, b, &r))
        return NATIVE_EINVAL;
    *out = r;
    return NATIVE_OK;
}
