/*
 * Boundary concern: error translation. Every failure becomes a native_error with code, errno, op and
 * message, so a wrapper can build a precise exception. Checklist row: "How are errors translated?"
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

const char *native_status_name(int status)
{
    COUNT_CALL();
    switch (status) {
    case NATIVE_OK: return "NATIVE_OK";
    case NATIVE_ENOTFOUND: return "NATIVE_ENOTFOUND";
    case NATIVE_EIO: return "NATIVE_EIO";
    case NATIVE_ETIMEOUT: return "NATIVE_ETIMEOUT";
    case NATIVE_EPROTOCOL: return "NATIVE_EPROTOCOL";
    case NATIVE_ESTATE: return "NATIVE_ESTATE";
    case NATIVE_EINVAL: return "NATIVE_EINVAL";
    case NATIVE_ENOMEM: return "NATIVE_ENOMEM";
    case NATIVE_ECANCELLED: return "NATIVE_ECANCELLED";
    case NATIVE_EDONE: return "NATIVE_EDONE";
    default: return "NATIVE_UNKNOWN";
    }
}

static int vfail(native_db *db, native_error *err, int code, int sys_errno, const char *op,
                 const char *fmt, va_list ap)
{
    native_error e;
    memset(&e, 0, sizeof e);
    e.code = code;
    e.sys_errno = sys_errno;
    snprintf(e.op, sizeof e.op, "%s", op);
    int n = vsnprintf(e.message, sizeof e.message, fmt, ap);
    if (sys_errno != 0 && n >= 0 && (size_t)n < sizeof e.message) {
        char buf[128];
        /* GNU strerror_r: thread-safe, may return a static string instead of filling buf. */
        const char *s = strerror_r(sys_errno, buf, sizeof buf);
        snprintf(e.message + n, sizeof e.message - (size_t)n, ": %s", s);
    }
    if (err != NULL)
        *err = e;
    if (db != NULL)
        db->last = e;
    return code;
}

int fail(native_db *db, native_error *err, int code, int sys_errno, const char *op, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(db, err, code, sys_errno, op, fmt, ap);
    va_end(ap);
    return code;
}

int fail_unlocked(native_db *db, native_error *err, int code, int sys_errno, const char *op,
                  const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (db != NULL)
        pthread_mutex_lock(&db->mu);
    vfail(db, err, code, sys_errno, op, fmt, ap);
    if (db != NULL)
        pthread_mutex_unlock(&db->mu);
    va_end(ap);
    return code;
}

void native_last_error(native_db *db, native_error *out)
{
    COUNT_CALL();
    if (out == NULL)
        return;
    if (db == NULL) {
        memset(out, 0, sizeof *out);
        return;
    }
    if (opened_in_another_process(db)) {
        /* The handle's own last error lives behind its lock; report why it cannot be read instead. */
        fail(NULL, out, NATIVE_ESTATE, 0, "last_error", FORKED_MESSAGE);
        return;
    }
    pthread_mutex_lock(&db->mu);
    *out = db->last;
    pthread_mutex_unlock(&db->mu);
}
