/*
 * Boundary concern: structs in both directions. native_options (Python -> C) is validated again here even
 * though the wrapper validates first; native_stats and the debug counters (C -> Python) are plain copies.
 * Checklist rows: "What is the Pythonic API shape?" (structs) and the ledger behind "Who owns each pointer?".
 */
#include "internal.h"

#include <string.h>

atomic_llong g_live_handles, g_live_subscriptions, g_live_blocks, g_calls;

void native_options_default(native_options *out)
{
    COUNT_CALL();
    options_fill_default(out);
}

int native_options_validate(const native_options *opts, native_error *err)
{
    COUNT_CALL();
    return options_check(opts, "options_validate", err);
}

void options_fill_default(native_options *out)
{
    if (out == NULL)
        return;
    out->create = 1;
    out->sync = 0;
    out->max_key_size = 1024;
    out->max_value_size = 1u << 20;
    out->file_mode = 0644;
}

int options_check(const native_options *opts, const char *op, native_error *err)
{
    if (opts == NULL)
        return fail(NULL, err, NATIVE_EINVAL, 0, op, "options pointer is NULL");
    if (opts->create != 0 && opts->create != 1)
        return fail(NULL, err, NATIVE_EINVAL, 0, op, "create must be 0 or 1, got %d", (int)opts->create);
    if (opts->sync != 0 && opts->sync != 1)
        return fail(NULL, err, NATIVE_EINVAL, 0, op, "sync must be 0 or 1, got %d", (int)opts->sync);
    if (opts->max_key_size < 1 || opts->max_key_size > NATIVE_MAX_KEY_LIMIT)
        return fail(NULL, err, NATIVE_EINVAL, 0, op, "max_key_size must be in 1..=%u, got %u",
                    NATIVE_MAX_KEY_LIMIT, (unsigned)opts->max_key_size);
    if (opts->max_value_size < 1 || opts->max_value_size > NATIVE_MAX_VALUE_LIMIT)
        return fail(NULL, err, NATIVE_EINVAL, 0, op, "max_value_size must be in 1..=%u, got %u",
                    NATIVE_MAX_VALUE_LIMIT, (unsigned)opts->max_value_size);
    if (opts->file_mode > 0777)
        return fail(NULL, err, NATIVE_EINVAL, 0, op, "file_mode must be in 0..=0777, got %#o",
                    (unsigned)opts->file_mode);
    return NATIVE_OK;
}

int native_stats_get(native_db *db, native_stats *out)
{
    COUNT_CALL();
    if (db == NULL || out == NULL)
        return NATIVE_EINVAL;
    memset(out, 0, sizeof *out);
    if (opened_in_another_process(db))
        return NATIVE_ESTATE;
    pthread_mutex_lock(&db->mu);
    out->keys = db->idx.count;
    out->puts = db->puts;
    out->gets = db->gets;
    out->deletes = db->deletes;
    out->file_bytes = db->file_bytes;
    out->generation = (uint32_t)db->generation;
    pthread_mutex_lock(&db->nt.mu);
    out->events_delivered = db->nt.delivered;
    out->events_dropped = db->nt.dropped;
    /* Counts the event in delivery too: 0 means every callback of every queued event has returned. */
    out->events_pending = db->nt.pending + (uint64_t)db->nt.delivering;
    out->subscriptions = db->nt.nsubs;
    pthread_mutex_unlock(&db->nt.mu);
    pthread_mutex_unlock(&db->mu);
    return NATIVE_OK;
}

void native_debug_counters_get(native_debug_counters *out)
{
    /* Deliberately not counted in `calls`: reading the ledger must not change it. */
    if (out == NULL)
        return;
    out->live_handles = atomic_load(&g_live_handles);
    out->live_subscriptions = atomic_load(&g_live_subscriptions);
    out->live_blocks = atomic_load(&g_live_blocks);
    out->calls = atomic_load(&g_calls);
}
