"""The part of native.h (plus capi/shapes.h) the benchmarks call through cffi, ABI and API mode alike.

Kept here rather than imported from pytests/bindings/cdefs.py so the benches build on their own; the API
module's compile checks these lines against the real headers.
"""

CDEF = """
typedef struct native_error { int code; int sys_errno; char op[32]; char message[256]; } native_error;
typedef struct native_options {
    int32_t create; int32_t sync; uint32_t max_key_size; uint32_t max_value_size; uint32_t file_mode;
} native_options;
void native_options_default(native_options *out);
int native_options_validate(const native_options *opts, native_error *err);

typedef struct native_db native_db;
typedef int (*native_cancel_fn)(void *user_data);
int native_connect(const char *path, const native_options *opts, int64_t timeout_ms,
                   native_cancel_fn should_stop, void *stop_data, native_db **out, native_error *err);
void native_close(native_db *db);
int native_put(native_db *db, const void *key, size_t klen, const void *val, size_t vlen, native_error *err);
int native_get(native_db *db, const void *key, size_t klen, void **val_out, size_t *vlen_out, native_error *err);
void native_free(void *ptr);

typedef struct native_event {
    int kind; uint64_t seq; const void *key; size_t klen; const void *value; size_t vlen;
} native_event;
typedef void (*native_callback)(const native_event *ev, void *user_data);
int native_subscribe(native_db *db, native_callback cb, void *user_data, uint64_t *id_out, native_error *err);
int native_unsubscribe(native_db *db, uint64_t id);

uint64_t native_checksum(const void *buf, size_t len);
int native_add(long a, long b, long *out);

long shapes_zero(void);
long shapes_one(long a);
long shapes_five(long a, long b, long c, long d, long e);
"""

# API mode only: a C-callable entry point that cffi routes to a @ffi.def_extern() Python function.
API_EXTERNS = """
extern "Python" void bench_on_event(const native_event *ev, void *user_data);
"""
