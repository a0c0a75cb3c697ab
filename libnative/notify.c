/*
 * Boundary concern: native code calling back from its own thread. Subscriptions, the event queue and the
 * notifier thread, with the lifetime guarantees a wrapper needs to drop its callback object safely.
 * Checklist rows: "Can native code call back?" and "What happens during shutdown?"
 */
#include "internal.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

struct event {
    struct event *next;
    uint64_t sub_limit; /* only subscriptions that existed when the mutation happened see it */
    native_event ev;
    unsigned char data[]; /* key then value */
};

struct sub {
    struct sub *next;
    uint64_t id;
    native_callback cb;
    void *user_data;
};

/* Which handle this thread is the notifier of; a thread-local avoids reading pthread_t across threads. */
static _Thread_local const native_db *tl_notifier_of;

int on_notifier_thread(const native_db *db)
{
    return tl_notifier_of == db;
}

/* First subscription with id > after, or NULL. The list may change while a callback runs unlocked, so
 * delivery resumes by id rather than by a pointer that could have been freed. */
static struct sub *sub_after(struct notifier *nt, uint64_t after)
{
    struct sub *s = nt->subs;
    while (s != NULL && s->id <= after)
        s = s->next;
    return s;
}

static void *notifier_main(void *arg)
{
    native_db *db = arg;
    struct notifier *nt = &db->nt;
    tl_notifier_of = db;
    pthread_mutex_lock(&nt->mu);
    while (!nt->stop && !nt->deferred_close) {
        if (nt->head == NULL) {
            pthread_cond_wait(&nt->wake, &nt->mu);
            continue;
        }
        struct event *ev = nt->head;
        nt->head = ev->next;
        if (nt->head == NULL)
            nt->tail = NULL;
        nt->pending--;
        nt->delivering = 1;
        for (struct sub *s = sub_after(nt, 0); s != NULL && s->id <= ev->sub_limit;) {
            uint64_t id = s->id;
            native_callback cb = s->cb;
            void *user_data = s->user_data;
            nt->running_id = id;
            pthread_mutex_unlock(&nt->mu);
            cb(&ev->ev, user_data); /* no libnative lock held: the callback may re-enter anything */
            if (opened_in_another_process(db)) {
                /* The callback forked and this is the child: its only thread is this copy of the
                 * notifier of the parent's handle. Back in the loop it would deliver the parent's events,
                 * then wait for a stop nobody here can send. Ending the thread ends the child's program,
                 * as exit(0) does (it is the last thread), without touching the handle. */
                return NULL;
            }
            pthread_mutex_lock(&nt->mu);
            nt->running_id = 0;
            nt->delivered++;
            pthread_cond_broadcast(&nt->idle);
            if (nt->stop || nt->deferred_close)
                break;
            s = sub_after(nt, id);
        }
        nt->delivering = 0;
        free(ev);
    }
    int teardown_here = nt->deferred_close;
    pthread_mutex_unlock(&nt->mu);
    /* No longer this handle's notifier: the thread's exit still runs the host's code (thread-local
     * destructors), and a handle allocated later at the same address must not look like ours. */
    tl_notifier_of = NULL;
    if (teardown_here) {
        /* native_close was called by a callback on this thread and already returned: nobody will join. */
        pthread_detach(pthread_self());
        store_teardown(db);
    }
    return NULL;
}

int notifier_init(native_db *db)
{
    struct notifier *nt = &db->nt;
    pthread_mutex_init(&nt->mu, NULL);
    pthread_cond_init(&nt->wake, NULL);
    pthread_cond_init(&nt->idle, NULL);
    nt->next_sub_id = 0;
    nt->next_seq = 0;
    nt->started = 0;
    return 0;
}

/* Starts the thread on first use; caller holds nt->mu. 0 or the pthread_create error number. */
static int notifier_spawn_locked(native_db *db)
{
    struct notifier *nt = &db->nt;
    if (nt->started)
        return 0;
    /* Block signals in the notifier so process signals (SIGINT for Python) reach the host's threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&nt->thread, NULL, notifier_main, db);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0)
        nt->started = 1;
    return rc;
}

int notifier_join_if_started(native_db *db)
{
    struct notifier *nt = &db->nt;
    pthread_mutex_lock(&nt->mu);
    int started = nt->started;
    nt->stop = 1;
    pthread_cond_signal(&nt->wake);
    pthread_mutex_unlock(&nt->mu);
    if (started)
        pthread_join(nt->thread, NULL); /* waits for an in-flight callback */
    return started;
}

void notifier_enqueue(native_db *db, int kind, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct notifier *nt = &db->nt;
    pthread_mutex_lock(&nt->mu);
    if (nt->nsubs == 0 || nt->stop || nt->deferred_close) {
        pthread_mutex_unlock(&nt->mu);
        return;
    }
    /* seq numbers every event while someone listens, so a dropped event shows as a gap. */
    uint64_t seq = ++nt->next_seq;
    struct event *ev = NULL;
    if (nt->pending < NATIVE_EVENT_QUEUE_LIMIT)
        ev = malloc(sizeof *ev + klen + vlen);
    if (ev == NULL) {
        nt->dropped++;
        pthread_mutex_unlock(&nt->mu);
        return;
    }
    ev->next = NULL;
    ev->sub_limit = nt->next_sub_id;
    memcpy(ev->data, key, klen);
    if (vlen > 0)
        memcpy(ev->data + klen, val, vlen);
    ev->ev = (native_event){
        .kind = kind,
        .seq = seq,
        .key = ev->data,
        .klen = klen,
        .value = kind == NATIVE_EVENT_PUT ? ev->data + klen : NULL,
        .vlen = vlen,
    };
    if (nt->tail != NULL)
        nt->tail->next = ev;
    else
        nt->head = ev;
    nt->tail = ev;
    nt->pending++;
    pthread_cond_signal(&nt->wake);
    pthread_mutex_unlock(&nt->mu);
}

void notifier_destroy(native_db *db)
{
    struct notifier *nt = &db->nt;
    for (struct event *ev = nt->head, *next; ev != NULL; ev = next) {
        next = ev->next;
        free(ev);
    }
    for (struct sub *s = nt->subs, *next; s != NULL; s = next) {
        next = s->next;
        free(s);
        atomic_fetch_sub(&g_live_subscriptions, 1);
    }
    nt->head = nt->tail = NULL;
    nt->subs = NULL;
    pthread_cond_destroy(&nt->idle);
    pthread_cond_destroy(&nt->wake);
    pthread_mutex_destroy(&nt->mu);
}

int native_subscribe(native_db *db, native_callback cb, void *user_data, uint64_t *id_out, native_error *err)
{
    COUNT_CALL();
    const char *op = "subscribe";
    if (db != NULL && opened_in_another_process(db)) /* first: the argument error below takes db's lock */
        return fail(NULL, err, NATIVE_ESTATE, 0, op, FORKED_MESSAGE);
    if (db == NULL || cb == NULL || id_out == NULL)
        return fail_unlocked(db, err, NATIVE_EINVAL, 0, op, "handle, callback and id_out must not be NULL");
    if (atomic_load(&db->closing))
        return fail_unlocked(db, err, NATIVE_ESTATE, 0, op, "handle is closed");
    struct sub *s = malloc(sizeof *s);
    if (s == NULL)
        return fail_unlocked(db, err, NATIVE_ENOMEM, 0, op, "out of memory");
    s->next = NULL;
    s->cb = cb;
    s->user_data = user_data;
    struct notifier *nt = &db->nt;
    pthread_mutex_lock(&nt->mu);
    int e = notifier_spawn_locked(db);
    if (e != 0) {
        pthread_mutex_unlock(&nt->mu);
        free(s);
        return fail_unlocked(db, err, NATIVE_EIO, e, op, "starting the notifier thread failed");
    }
    s->id = ++nt->next_sub_id;
    struct sub **tail = &nt->subs;
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = s;
    nt->nsubs++;
    pthread_mutex_unlock(&nt->mu);
    atomic_fetch_add(&g_live_subscriptions, 1);
    *id_out = s->id;
    return NATIVE_OK;
}

int native_unsubscribe(native_db *db, uint64_t id)
{
    COUNT_CALL();
    if (db == NULL)
        return NATIVE_EINVAL;
    if (opened_in_another_process(db))
        return NATIVE_ESTATE;
    struct notifier *nt = &db->nt;
    pthread_mutex_lock(&nt->mu);
    struct sub **link = &nt->subs;
    while (*link != NULL && (*link)->id != id)
        link = &(*link)->next;
    struct sub *s = *link;
    if (s == NULL) {
        pthread_mutex_unlock(&nt->mu);
        return fail_unlocked(db, NULL, NATIVE_ENOTFOUND, 0, "unsubscribe", "no subscription with id %llu",
                             (unsigned long long)id);
    }
    *link = s->next;
    nt->nsubs--;
    /* Unlinked, so it is never picked again; only an in-flight call can still use user_data. Waiting on
     * our own thread would deadlock, and there the in-flight call is our caller anyway. */
    if (!on_notifier_thread(db))
        while (nt->running_id == id)
            pthread_cond_wait(&nt->idle, &nt->mu);
    pthread_mutex_unlock(&nt->mu);
    free(s);
    atomic_fetch_sub(&g_live_subscriptions, 1);
    return NATIVE_OK;
}
