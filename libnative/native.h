/*
 * libnative: a small file-backed key/value store with handles, errno-style errors, its own allocator,
 * a notifier thread that fires callbacks, buffer kernels, and structs in both directions.
 * It is the C side of the ffi-harness proving ground: every boundary concern of "Calling C from
 * Python" (ownership, errors, GIL, callbacks, buffers, allocator, shutdown) has a real counterpart here.
 *
 * Threading contract: one native_db may be used from several threads at once (it has its own mutex),
 * EXCEPT native_close, which must not race any other call on the same handle (the wrapper guarantees it).
 * Callbacks run on the handle's notifier thread with no libnative lock held, so a callback may call
 * any function of this header, native_close and native_unsubscribe included.
 */
#ifndef NATIVE_H
#define NATIVE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes: every fallible function returns one (0 = success) ---- */
enum {
    NATIVE_OK = 0,
    NATIVE_ENOTFOUND = 1,  /* key absent */
    NATIVE_EIO = 2,        /* an OS call failed; native_error.sys_errno holds errno */
    NATIVE_ETIMEOUT = 3,   /* the store's file lock was still held by another connection at the deadline */
    NATIVE_EPROTOCOL = 4,  /* store file corrupted: bad magic, bad record checksum, truncated record */
    NATIVE_ESTATE = 5,     /* invalid state: store modified during iteration (generation mismatch) */
    NATIVE_EINVAL = 6,     /* invalid argument (NULL pointer, size over the options' limits, bad option) */
    NATIVE_ENOMEM = 7,     /* native_alloc failed */
    NATIVE_ECANCELLED = 8, /* the cancellation hook asked to stop */
    NATIVE_EDONE = 9       /* iteration cursor is past the last item (not an error) */
};

/* Name of a status code ("NATIVE_EIO", ...); never NULL. */
const char *native_status_name(int status);

/* ---- errors: each failure fills a caller-provided native_error (may be NULL) and the handle's last error ---- */
typedef struct native_error {
    int code;          /* NATIVE_* status */
    int sys_errno;     /* errno captured right after the failing OS call, else 0 */
    char op[32];       /* operation name: "connect", "put", "get", "delete", "flush", "subscribe", ... */
    char message[256]; /* human-readable library message, NUL-terminated */
} native_error;

/* ---- allocator: every buffer libnative hands out comes from here and must go back through native_free ---- */
void *native_alloc(size_t size);   /* NULL on failure; size 0 returns a unique non-NULL block */
void native_free(void *ptr);       /* NULL is a no-op; ptr must come from native_alloc */

/* ---- structs, Python -> C ---- */
typedef struct native_options {
    int32_t create;          /* bool: create the file if missing (default 1) */
    int32_t sync;            /* bool: fsync after every put/delete (default 0) */
    uint32_t max_key_size;   /* 1 ..= NATIVE_MAX_KEY_LIMIT, default 1024 */
    uint32_t max_value_size; /* 1 ..= NATIVE_MAX_VALUE_LIMIT, default 1 MiB */
    uint32_t file_mode;      /* permission bits for a created file, 0 ..= 0777, default 0644 */
} native_options;

#define NATIVE_MAX_KEY_LIMIT 65535u
#define NATIVE_MAX_VALUE_LIMIT (1u << 30)

void native_options_default(native_options *out);
/* NATIVE_OK or NATIVE_EINVAL (message says which field); the wrapper validates first, C checks again. */
int native_options_validate(const native_options *opts, native_error *err);

/* ---- structs, C -> Python ---- */
typedef struct native_stats {
    uint64_t keys;           /* live keys */
    uint64_t puts;           /* successful puts since connect */
    uint64_t gets;           /* get calls since connect (hits and misses) */
    uint64_t deletes;        /* successful deletes since connect */
    uint64_t file_bytes;     /* size of the log file */
    uint64_t events_delivered; /* callback invocations completed */
    uint64_t events_dropped;   /* events discarded because the queue was full */
    uint64_t events_pending;   /* events queued or being delivered: 0 means the notifier is idle */
    uint32_t subscriptions;  /* live subscriptions */
    uint32_t generation;     /* low 32 bits of the modification counter */
} native_stats;

/* ---- handles ---- */
typedef struct native_db native_db;

/* Polled about every 5 ms during long waits/loops; return nonzero to stop with NATIVE_ECANCELLED. */
typedef int (*native_cancel_fn)(void *user_data);

/*
 * A handle belongs to the process that opened it. In a child made by fork() (which has no notifier
 * thread, may have locks held by parent threads it does not have, and shares the store's file with the
 * parent) every call on an inherited handle fails with NATIVE_ESTATE and a message naming fork();
 * native_count and native_generation return 0 for it, as for NULL (a caller that must tell an empty
 * store from an inherited handle asks native_stats_get, which fails); native_last_error reports why;
 * native_close only forgets it (its memory stays: it is the parent's). The child closes its copies of
 * the handles' descriptors as it starts (in its fork handler, before fork() returns there), so a
 * running child does not keep the store locked after the parent closes, and can connect then. A child forked inside a
 * callback ends (as exit(0) would: it is its only thread) when that callback returns, instead of going
 * back into a copy of the notifier's loop. Forks that skip pthread_atfork handlers (a raw clone) are
 * not seen.
 *
 * Opens (or creates, per opts->create) the store at path and takes an exclusive lock on it (flock).
 * NATIVE_EINVAL if the store holds a live key longer than opts->max_key_size (it would be unreachable).
 * If another connection holds the lock, waits until timeout_ms (< 0: forever, 0: do not wait), then
 * fails with NATIVE_ETIMEOUT. opts may be NULL (defaults). should_stop may be NULL.
 * On success *out owns a handle that must be closed exactly once with native_close.
 */
int native_connect(const char *path, const native_options *opts, int64_t timeout_ms,
                   native_cancel_fn should_stop, void *stop_data, native_db **out, native_error *err);

/*
 * Stops and joins the notifier (started lazily by the first native_subscribe) (pending events are discarded, every subscription is dropped and its
 * callback is never called again once this returns), unlocks and closes the file, frees the handle.
 * NULL is a no-op. Called from inside a callback (on the notifier thread), it returns at once and the
 * notifier finishes the teardown as soon as that callback returns: still no further callbacks.
 * Calling it twice on the same pointer is a double free (the wrapper must make that impossible).
 */
void native_close(native_db *db);

/* key/value: klen 1..=max_key_size, vlen 0..=max_value_size (NATIVE_EINVAL otherwise). */
int native_put(native_db *db, const void *key, size_t klen, const void *val, size_t vlen, native_error *err);
/* On NATIVE_OK *val_out is a native_alloc block of *vlen_out bytes (caller frees with native_free). */
int native_get(native_db *db, const void *key, size_t klen, void **val_out, size_t *vlen_out, native_error *err);
int native_delete(native_db *db, const void *key, size_t klen, native_error *err); /* NATIVE_ENOTFOUND if absent */
size_t native_count(native_db *db);
/* fsync of the log; blocking. */
int native_flush(native_db *db, native_error *err);
int native_stats_get(native_db *db, native_stats *out);
/* Copies the error of the handle's last failed call (thread-racy by nature; prefer the per-call native_error).
 * A success does not clear it, and NATIVE_EDONE (end of iteration) is not a failure: it is never recorded. */
void native_last_error(native_db *db, native_error *out);

/* Modification counter: bumped by every successful put and delete. */
uint64_t native_generation(native_db *db);
/*
 * Stateless cursor: item number index (0-based, order unspecified but stable while generation is unchanged).
 * NATIVE_ESTATE if native_generation(db) != generation, NATIVE_EDONE if index >= count.
 * On NATIVE_OK *key_out and *val_out are native_alloc blocks the caller frees with native_free.
 */
int native_item_at(native_db *db, size_t index, uint64_t generation, void **key_out, size_t *klen_out,
                   void **val_out, size_t *vlen_out, native_error *err);

/* ---- notifier: put/delete events delivered on the handle's notifier thread ---- */
enum { NATIVE_EVENT_PUT = 1, NATIVE_EVENT_DELETE = 2 };
typedef struct native_event {
    int kind;            /* NATIVE_EVENT_PUT or NATIVE_EVENT_DELETE */
    uint64_t seq;        /* 1, 2, 3, ... per handle: every mutation made while someone listens takes one, so an
                            event dropped on overflow leaves a gap */
    const void *key;     /* valid only during the callback */
    size_t klen;
    const void *value;   /* NULL for delete; valid only during the callback */
    size_t vlen;
} native_event;
typedef void (*native_callback)(const native_event *ev, void *user_data);

#define NATIVE_EVENT_QUEUE_LIMIT 65536u /* pending events beyond this are dropped and counted */

/* Never blocks on the notifier; *id_out > 0. */
int native_subscribe(native_db *db, native_callback cb, void *user_data, uint64_t *id_out, native_error *err);
/*
 * After this returns, cb(…, user_data) of that subscription is never called again and user_data is no
 * longer referenced: if a call is in flight on the notifier thread, this waits for it to finish (so the
 * caller must not hold a lock that callback needs: the wrapper releases the GIL). Called from inside a
 * callback it does not wait. NATIVE_ENOTFOUND if id is unknown (e.g. already unsubscribed).
 */
int native_unsubscribe(native_db *db, uint64_t id);

/* ---- buffer kernels ---- */
/* 64-bit FNV-1a over a read-only buffer (offset 0xcbf29ce484222325, prime 0x100000001b3). len 0 allowed. */
uint64_t native_checksum(const void *buf, size_t len);
/*
 * In-place transform, applied `rounds` times (rounds >= 1):
 *   for i in 0..len:  b[i] = ((b[i] ^ k[i % 4]) + (i & 0xff)) & 0xff,   k = key as 4 little-endian bytes
 * should_stop is polled about every 5 ms of work (every 256 KiB); on a stop, returns NATIVE_ECANCELLED
 * with the buffer partly transformed. NATIVE_EINVAL if rounds == 0 or buf is NULL with len > 0.
 */
int native_process(void *buf, size_t len, uint32_t key, uint32_t rounds, native_cancel_fn should_stop, void *stop_data);

/* the simplest call, for call-overhead benchmarks: 0 on success, NATIVE_EINVAL if a+b overflows long */
int native_add(long a, long b, long *out);

/* ---- debug counters (tests and oracles): live objects right now, process-wide ---- */
typedef struct native_debug_counters {
    int64_t live_handles;       /* native_connect successes minus completed closes */
    int64_t live_subscriptions; /* subscriptions not yet unsubscribed or dropped by close */
    int64_t live_blocks;        /* native_alloc blocks not yet freed */
    int64_t calls;              /* every public entry point bumps this (to prove "no native call happened") */
} native_debug_counters;
void native_debug_counters_get(native_debug_counters *out);
/* Test knob: native_flush and every write of a sync=1 handle sleep this long before fsync (0 = off), to make
 * the blocking observable. */
void native_debug_set_flush_delay_ms(uint32_t ms);

#ifdef __cplusplus
}
#endif
#endif /* NATIVE_H */
