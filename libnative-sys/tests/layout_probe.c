/* Prints the layout of every struct shared with Rust and every constant it mirrors, as "name value"
 * lines. libnative-sys/tests/layout.rs compiles this with the C compiler and compares with its
 * declarations. Header-only: nothing here calls into libnative. */
#include <stddef.h>
#include <stdio.h>
#include "native.h"

#define SIZE(T) printf("size %s %zu\n", #T, sizeof(T))
#define OFF(T, f) printf("offset %s.%s %zu\n", #T, #f, offsetof(T, f))

int main(void) {
    SIZE(native_error); OFF(native_error, code); OFF(native_error, sys_errno); OFF(native_error, op);
    OFF(native_error, message);
    SIZE(native_options); OFF(native_options, create); OFF(native_options, sync);
    OFF(native_options, max_key_size); OFF(native_options, max_value_size); OFF(native_options, file_mode);
    SIZE(native_stats); OFF(native_stats, keys); OFF(native_stats, puts); OFF(native_stats, gets);
    OFF(native_stats, deletes); OFF(native_stats, file_bytes); OFF(native_stats, events_delivered);
    OFF(native_stats, events_dropped); OFF(native_stats, events_pending);
    OFF(native_stats, subscriptions); OFF(native_stats, generation);
    SIZE(native_event); OFF(native_event, kind); OFF(native_event, seq); OFF(native_event, key);
    OFF(native_event, klen); OFF(native_event, value); OFF(native_event, vlen);
    SIZE(native_debug_counters); OFF(native_debug_counters, live_handles);
    OFF(native_debug_counters, live_subscriptions); OFF(native_debug_counters, live_blocks);
    OFF(native_debug_counters, calls);
#define CONST(c) printf("const %s %d\n", #c, (int)(c))
    CONST(NATIVE_OK); CONST(NATIVE_ENOTFOUND); CONST(NATIVE_EIO); CONST(NATIVE_ETIMEOUT);
    CONST(NATIVE_EPROTOCOL); CONST(NATIVE_ESTATE); CONST(NATIVE_EINVAL); CONST(NATIVE_ENOMEM);
    CONST(NATIVE_ECANCELLED); CONST(NATIVE_EDONE);
    printf("const NATIVE_MAX_KEY_LIMIT %u\nconst NATIVE_MAX_VALUE_LIMIT %u\n", NATIVE_MAX_KEY_LIMIT,
           NATIVE_MAX_VALUE_LIMIT);
    printf("const NATIVE_EVENT_PUT %d\nconst NATIVE_EVENT_DELETE %d\n", NATIVE_EVENT_PUT, NATIVE_EVENT_DELETE);
    return 0;
}
