/*
 * The C API of `native`, exported as the capsule "native._C_API" (wrapper/src/capsule.rs fills this
 * struct; its #[repr(C)] twin must stay in step, as `version` and `size` let a consumer check).
 * A consumer imports it once with PyCapsule_Import and keeps a reference to the capsule for as long as
 * it uses the table: the capsule owns the table (freed by its destructor) and holds a strong reference
 * to the exporting module (its context), so holding the capsule keeps both alive.
 *
 * Handles: pin() is the only way to reach a native.Connection's native_db. The pointer is valid until
 * the matching unpin(); while pinned, conn.close() waits (with the GIL released) for the unpin, so a
 * pin is short-lived: unpin before returning to Python, never cache the pointer past it. After close,
 * pin() fails with native.InvalidStateError, exactly like the Connection's own methods.
 */
#ifndef NATIVE_CAPI_H
#define NATIVE_CAPI_H

#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#include "native.h"

#define NATIVE_CAPI_NAME "native._C_API"
#define NATIVE_CAPI_VERSION 1u

typedef struct native_capi_pin native_capi_pin; /* opaque */

typedef struct native_capi {
    uint32_t version; /* NATIVE_CAPI_VERSION of the exporter: a consumer built for another refuses it */
    uint32_t size;    /* sizeof(native_capi) in the exporter: later versions only append fields */
    /* Buffer kernels: any thread, no GIL needed, no Python object touched. */
    uint64_t (*checksum)(const void *buf, size_t len);
    int (*process)(void *buf, size_t len, uint32_t key, uint32_t rounds); /* NATIVE_* status */
    /* Handle accessor. GIL held. NULL with an exception set if conn is not a native.Connection
       (TypeError) or is closed (native.InvalidStateError); else *db_out is usable until unpin(). */
    native_capi_pin *(*pin)(PyObject *conn, native_db **db_out);
    void (*unpin)(native_capi_pin *pin); /* with or without the GIL; NULL is a no-op */
    /* A pin and its db belong to the process that pinned: after fork() the child must not use them
       (put fails with NATIVE_ESTATE and count returns 0 there: libnative refuses inherited handles;
       unpinning the child's copy is allowed and leaves the parent's handle alone). */
    /* Operations on a pinned handle: any thread, GIL not needed. */
    size_t (*count)(native_db *db);
    int (*put)(native_db *db, const void *key, size_t klen, const void *val, size_t vlen); /* NATIVE_* */
} native_capi;

#endif /* NATIVE_CAPI_H */
