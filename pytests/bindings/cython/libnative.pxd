# Typed declarations of libnative for Cython, taken from libnative/native.h: `cdef extern from`
# makes the C compiler check every use against the real header (a drifted declaration is a build error,
# not a crash), which is what ctypes cannot do and what cffi's API mode also does.
# Functions that may block or run long are declared `nogil`, so the binding can call them with the GIL
# released; callbacks are `noexcept nogil` function pointers (they run on libnative's notifier thread).

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t


cdef extern from "native.h" nogil:
    enum:
        NATIVE_OK
        NATIVE_ENOTFOUND
        NATIVE_EIO
        NATIVE_ETIMEOUT
        NATIVE_EPROTOCOL
        NATIVE_ESTATE
        NATIVE_EINVAL
        NATIVE_ENOMEM
        NATIVE_ECANCELLED
        NATIVE_EDONE
        NATIVE_EVENT_PUT
        NATIVE_EVENT_DELETE

    const char *native_status_name(int status)

    ctypedef struct native_error:
        int code
        int sys_errno
        char op[32]
        char message[256]

    void *native_alloc(size_t size)
    void native_free(void *ptr)

    ctypedef struct native_options:
        int32_t create
        int32_t sync
        uint32_t max_key_size
        uint32_t max_value_size
        uint32_t file_mode

    void native_options_default(native_options *out)
    int native_options_validate(const native_options *opts, native_error *err)

    ctypedef struct native_stats:
        uint64_t keys
        uint64_t puts
        uint64_t gets
        uint64_t deletes
        uint64_t file_bytes
        uint64_t events_delivered
        uint64_t events_dropped
        uint64_t events_pending
        uint32_t subscriptions
        uint32_t generation

    ctypedef struct native_db:
        pass

    ctypedef int (*native_cancel_fn)(void *user_data) noexcept nogil

    int native_connect(const char *path, const native_options *opts, int64_t timeout_ms,
                       native_cancel_fn should_stop, void *stop_data, native_db **out, native_error *err)
    void native_close(native_db *db)
    int native_put(native_db *db, const void *key, size_t klen, const void *val, size_t vlen, native_error *err)
    int native_get(native_db *db, const void *key, size_t klen, void **val_out, size_t *vlen_out,
                   native_error *err)
    int native_delete(native_db *db, const void *key, size_t klen, native_error *err)
    size_t native_count(native_db *db)
    int native_flush(native_db *db, native_error *err)
    int native_stats_get(native_db *db, native_stats *out)
    void native_last_error(native_db *db, native_error *out)
    uint64_t native_generation(native_db *db)
    int native_item_at(native_db *db, size_t index, uint64_t generation, void **key_out, size_t *klen_out,
                       void **val_out, size_t *vlen_out, native_error *err)

    ctypedef struct native_event:
        int kind
        uint64_t seq
        const void *key
        size_t klen
        const void *value
        size_t vlen

    ctypedef void (*native_callback)(const native_event *ev, void *user_data) noexcept nogil

    int native_subscribe(native_db *db, native_callback cb, void *user_data, uint64_t *id_out, native_error *err)
    int native_unsubscribe(native_db *db, uint64_t id)

    uint64_t native_checksum(const void *buf, size_t len)
    int native_process(void *buf, size_t len, uint32_t key, uint32_t rounds, native_cancel_fn should_stop,
                       void *stop_data)
    int native_add(long a, long b, long *out)

    ctypedef struct native_debug_counters:
        int64_t live_handles
        int64_t live_subscriptions
        int64_t live_blocks
        int64_t calls

    void native_debug_counters_get(native_debug_counters *out)
    void native_debug_set_flush_delay_ms(uint32_t ms)
