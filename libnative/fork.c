/*
 * Boundary concern: a handle across fork(). A forked child is a copy of the one thread that forked: the
 * notifier threads are not in it, a lock some other thread held at the fork stays held, and the store's
 * file is shared with the parent, so a child's append lands at an offset the parent will write over.
 * A handle therefore belongs to the process that opened it; in any other process every call on it fails
 * with NATIVE_ESTATE and native_close only lets go of it (see native.h).
 * Checklist row: "Fork".
 */
#include "internal.h"

/* Forks survived by this process's copy of libnative: bumped in every child, never in the parent. */
atomic_uint_least64_t g_forks;

static void count_fork_in_child(void)
{
    atomic_fetch_add_explicit(&g_forks, 1, memory_order_relaxed);
}

static void register_fork_handler(void)
{
    /* No prepare/parent work: the child only needs to know it is one. pthread_atfork fails only with
     * ENOMEM; then forks go uncounted and a child's calls behave as before this check existed. */
    (void)pthread_atfork(NULL, NULL, count_fork_in_child);
}

uint64_t fork_generation_now(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_fork_handler);
    return atomic_load_explicit(&g_forks, memory_order_relaxed);
}
