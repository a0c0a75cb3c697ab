/*
 * Private to libnative: the handle layout shared by store.c and notify.c, the error helpers and the
 * process-wide debug counters. Include it first in every .c (it sets the feature-test macro).
 */
#ifndef NATIVE_INTERNAL_H
#define NATIVE_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* flock, GNU strerror_r, nanosleep under -std=c11 */
#endif

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>

#include "native.h"

/* Public symbols keep default visibility (declared in native.h above); everything below is hidden. */
#pragma GCC visibility push(hidden)

/* ---- store index (store.c): dense array of entries + open-addressing table of dense positions ---- */
struct entry {
    uint64_t hash;
    uint32_t klen, vlen;
    unsigned char *kv; /* key bytes then value bytes, one malloc block */
};

struct index {
    struct entry *items; /* dense; iteration order; delete = swap-remove */
    size_t count, cap;
    size_t *slots;       /* 0 = empty, else dense position + 1 */
    size_t mask;         /* slot count - 1 (power of two) */
};

/* ---- notifier (notify.c) ---- */
struct event;
struct sub;

struct notifier {
    pthread_mutex_t mu; /* separate from native_db.mu: a callback may re-enter the store */
    pthread_cond_t wake; /* event queued, stop or deferred close */
    pthread_cond_t idle; /* a callback returned: unsubscribe waiters re-check */
    pthread_t thread;
    int started;         /* the thread starts with the first subscription: no listener, no thread */
    struct event *head, *tail;
    size_t pending;      /* queued events (the queue limit counts these) */
    int delivering;      /* an event is dequeued and its callbacks have not all returned */
    struct sub *subs;    /* sorted by id (ids only grow, new ones are appended) */
    uint32_t nsubs;
    uint64_t next_sub_id, next_seq;
    uint64_t delivered, dropped;
    uint64_t running_id; /* subscription whose callback is executing now, 0 if none */
    int stop;            /* native_close from another thread: exit, the closer joins */
    int deferred_close;  /* native_close from a callback: exit and tear down ourselves */
};

struct native_db {
    pthread_mutex_t mu; /* index, file, stats, last error. Lock order: mu before notifier.mu */
    int fd;
    native_options opts;
    struct index idx;
    uint64_t generation, puts, gets, deletes, file_bytes;
    native_error last;
    atomic_int closing; /* set by native_close; calls in deferred teardown see it and fail cheaply */
    uint64_t fork_generation; /* g_forks at connect: the handle belongs to that process */
    native_db *fork_prev, *fork_next; /* the process's open handles (fork.c) */
    struct notifier nt;
};

/* ---- errors.c ---- */
/*
 * Fills *err (if non-NULL) and, when db is non-NULL, db->last; the caller must hold db->mu in that case.
 * A non-zero sys_errno appends ": strerror(sys_errno)" to the message. Returns code, for `return fail(...)`.
 */
int fail(native_db *db, native_error *err, int code, int sys_errno, const char *op, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Same, for callers that do not hold db->mu (it is taken here). */
int fail_unlocked(native_db *db, native_error *err, int code, int sys_errno, const char *op,
                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* ---- alloc.c: the block allocator without bumping `calls` (internal callers are not entry points) ---- */
void *block_alloc(size_t size);
void block_free(void *ptr);

/* ---- notify.c ---- */
int notifier_init(native_db *db); /* 0; the thread itself starts lazily in native_subscribe */
int notifier_join_if_started(native_db *db); /* stop + join; returns whether a thread existed */
/* Queue a put/delete event if anyone listens; caller holds db->mu (keeps event order = log order). */
void notifier_enqueue(native_db *db, int kind, const void *key, size_t klen, const void *val, size_t vlen);
/* Drops queued events and subscriptions; the thread must already be gone (joined or is the caller). */
void notifier_destroy(native_db *db);
int on_notifier_thread(const native_db *db);

/* ---- structs.c: the public option functions minus the `calls` bump ---- */
void options_fill_default(native_options *out);
int options_check(const native_options *opts, const char *op, native_error *err);

/* ---- fork.c ---- */
extern atomic_uint_least64_t g_forks;
/* After a successful open: records the handle's process and lists it (registers the handlers once). */
void fork_track(native_db *db);
/* In the teardown of a handle of this process. */
void fork_untrack(native_db *db);
/* Whether db was opened in another process (this one forked since): then no call may touch its state. */
static inline int opened_in_another_process(const native_db *db)
{
    return atomic_load_explicit(&g_forks, memory_order_relaxed) != db->fork_generation;
}
#define FORKED_MESSAGE "handle was opened in another process (before fork()); connect again in this one"

/* ---- store.c ---- */
void store_teardown(native_db *db); /* close the file, free everything, live_handles-- */

/* ---- process-wide debug counters (structs.c) ---- */
extern atomic_llong g_live_handles, g_live_subscriptions, g_live_blocks, g_calls;
#define COUNT_CALL() atomic_fetch_add_explicit(&g_calls, 1, memory_order_relaxed)

#pragma GCC visibility pop

#endif /* NATIVE_INTERNAL_H */
