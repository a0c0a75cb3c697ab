/*
 * Boundary concern: a handle across fork(). A forked child is a copy of the one thread that forked: the
 * notifier threads are not in it, a lock some other thread held at the fork stays held, and the store's
 * file is shared with the parent, so a child's append lands at an offset the parent will write over.
 * A handle therefore belongs to the process that opened it; in any other process every call on it fails
 * with NATIVE_ESTATE and native_close only forgets it (see native.h).
 * The store's flock belongs to the open file, which a child's copy of the descriptor keeps open: a
 * child that outlived its parent's close would keep the store locked. So the child closes its copies of
 * every handle's descriptor as it starts: once it runs, the lock lasts as long as the parent's handle.
 * Checklist row: "Fork".
 */
#include "internal.h"

#include <unistd.h>

/* Forks survived by this process's copy of libnative: bumped in every child, never in the parent. */
atomic_uint_least64_t g_forks;

/* This process's open handles (linked through fork_prev/fork_next). The lock is held across fork() by
 * the prepare handler, so a child sees the list whole and a handle is either in it or not yet opened. */
static pthread_mutex_t g_open_mu = PTHREAD_MUTEX_INITIALIZER;
static native_db *g_open;

static void before_fork(void)
{
    pthread_mutex_lock(&g_open_mu);
}

static void after_fork_in_parent(void)
{
    pthread_mutex_unlock(&g_open_mu);
}

static void after_fork_in_child(void)
{
    atomic_fetch_add_explicit(&g_forks, 1, memory_order_relaxed);
    for (native_db *db = g_open; db != NULL; db = db->fork_next) {
        close(db->fd); /* the child's copy only: the parent's descriptor keeps the open file and its flock */
        db->fd = -1;
    }
    g_open = NULL; /* none of them is this process's */
    pthread_mutex_unlock(&g_open_mu); /* locked by this same thread in before_fork */
}

static void register_fork_handlers(void)
{
    /* pthread_atfork fails only with ENOMEM; then forks go uncounted and a child's calls behave as
     * before this file existed. */
    (void)pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);
}

void fork_track(native_db *db)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_fork_handlers);
    pthread_mutex_lock(&g_open_mu);
    db->fork_generation = atomic_load_explicit(&g_forks, memory_order_relaxed);
    db->fork_prev = NULL;
    db->fork_next = g_open;
    if (g_open != NULL)
        g_open->fork_prev = db;
    g_open = db;
    pthread_mutex_unlock(&g_open_mu);
}

void fork_untrack(native_db *db)
{
    pthread_mutex_lock(&g_open_mu);
    if (db->fork_prev != NULL)
        db->fork_prev->fork_next = db->fork_next;
    else
        g_open = db->fork_next;
    if (db->fork_next != NULL)
        db->fork_next->fork_prev = db->fork_prev;
    pthread_mutex_unlock(&g_open_mu);
}
