"""The cffi declaration of native.h, shared by ABI mode (cffi_native) and API mode (cffi_build).

cffi's cdef parser takes no preprocessor conditionals, so this is a hand copy of the header. ABI mode trusts
it as written; API mode compiles it against the real native.h, which fails the build on a mismatch in a
struct layout or a constant. A function's signature is not checked by that build (its wrapper converts
an int to an int64_t silently): test_bindings.py::test_the_cdefs_match_the_header redeclares every
prototype below after native.h, where the C compiler refuses any difference, and
test_every_ctypes_signature_matches_the_cdefs holds ctypes_native.SIGNATURES to these.
"""

CDEF = """
enum {
    NATIVE_OK = 0, NATIVE_ENOTFOUND = 1, NATIVE_EIO = 2, NATIVE_ETIMEOUT = 3, NATIVE_EPROTOCOL = 4,
    NATIVE_ESTATE = 5, NATIVE_EINVAL = 6, NATIVE_ENOMEM = 7, NATIVE_ECANCELLED = 8, NATIVE_EDONE = 9
};
const char *native_status_name(int status);

typedef struct native_error {
    int code;
    int sys_errno;
    char op[32];
    char message[256];
} native_error;

void *native_alloc(size_t size);
void native_free(void *ptr);

typedef struct native_options {
    int32_t create;
    int32_t sync;
    uint32_t max_key_size;
    uint32_t max_value_size;
    uint32_t file_mode;
} native_options;

#define NATIVE_MAX_KEY_LIMIT 65535
#define NATIVE_MAX_VALUE_LIMIT 1073741824

void native_options_default(native_options *out);
int native_options_validate(const native_options *opts, native_error *err);

typedef struct native_stats {
    uint64_t keys;
    uint64_t puts;
    uint64_t gets;
    uint64_t deletes;
    uint64_t file_bytes;
    uint64_t events_delivered;
    uint64_t events_dropped;
    uint64_t events_pending;
    uint32_t subscriptions;
    uint32_t generation;
} native_stats;

typedef struct native_db native_db;
typedef int (*native_cancel_fn)(void *user_data);

int native_connect(const char *path, const native_options *opts, int64_t timeout_ms,
                   native_cancel_fn should_stop, void *stop_data, native_db **out, native_error *err);
void native_close(native_db *db);
int native_put(native_db *db, const void *key, size_t klen, const void *val, size_t vlen, native_error *err);
int native_get(native_db *db, const void *key, size_t klen, void **val_out, size_t *vlen_out, native_error *err);
int native_delete(native_db *db, const void *key, size_t klen, native_error *err);
size_t native_count(native_db *db);
int native_flush(native_db *db, native_error *err);
int native_stats_get(native_db *db, native_stats *out);
void native_last_error(native_db *db, native_error *out);
uint64_t native_generation(native_db *db);
int native_item_at(native_db *db, size_t index, uint64_t generation, void **key_out, size_t *klen_out,
                   void **val_out, size_t *vlen_out, native_error *err);

enum { NATIVE_EVENT_PUT = 1, NATIVE_EVENT_DELETE = 2 };
typedef struct native_event {
    int kind;
    uint64_t seq;
    const void *key;
    size_t klen;
    const void *value;
    size_t vlen;
} native_event;
typedef void (*native_callback)(const native_event *ev, void *user_data);

#define NATIVE_EVENT_QUEUE_LIMIT 65536

int native_subscribe(native_db *db, native_callback cb, void *user_data, uint64_t *id_out, native_error *err);
int native_unsubscribe(native_db *db, uint64_t id);

uint64_t native_checksum(const void *buf, size_t len);
int native_process(void *buf, size_t len, uint32_t key, uint32_t rounds, native_cancel_fn should_stop, void *stop_data);
int native_add(long a, long b, long *out);

typedef struct native_debug_counters {
    int64_t live_handles;
    int64_t live_subscriptions;
    int64_t live_blocks;
    int64_t calls;
} native_debug_counters;
void native_debug_counters_get(native_debug_counters *out);
void native_debug_set_flush_delay_ms(uint32_t ms);
"""
