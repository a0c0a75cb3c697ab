# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, embedsignature=True
"""libnative through Cython: the same checklist rows as the PyO3 wrapper `native`, written in Cython.

- Declarations: `cdef extern from "native.h"` (libnative.pxd), so the C compiler checks every call against
  the real header.
- Arguments: typed C parameters (`long`, `uint32_t`) range-check at the boundary (OverflowError, never
  truncation), before any native call.
- Buffers: typed memoryviews (`const unsigned char[::1]` to read, `unsigned char[::1]` to write). The
  view holds the buffer export for the whole call, so a bytearray cannot be resized under C; only
  C-contiguous buffers are accepted, any item format is read as bytes, read-only ones are never written.
- GIL: `with nogil` around the calls that block or run long (checksum/process from 64 KiB, flush,
  connect's lock wait, unsubscribe, close); cancellable loops poll for signals with the GIL re-taken.
- Handles: a Connection owns one native_db*; calls that release the GIL pin it, close waits for the pins
  and then closes exactly once, dealloc closes a forgotten one (exceptions: InvalidStateError after close).
- Callbacks: the Connection owns a reference to each registered callable, in a tuple: the cycle collector
  sees it (a cycle through the callback is collectable) but can never clear it while libnative may call it
  (tuples have no tp_clear and Connection is no_gc_clear: a cycle is broken elsewhere, then dealloc closes
  the handle first). It is dropped only after native_unsubscribe/native_close guarantee no further call. The trampoline runs on the notifier thread
  and takes the GIL with `with gil` (PyGILState_Ensure); exceptions go to sys.unraisablehook.
- Errors: the same translation as the other bindings (facade.make_error: op, code, errno, message).
- Allocator: blocks from native_get/native_item_at are copied into bytes and freed with native_free.
"""

cimport cython
from cpython.exc cimport PyErr_CheckSignals
from cpython.number cimport PyNumber_Index
from libc.stdint cimport SIZE_MAX, int64_t, uint32_t, uint64_t
from posix.unistd cimport usleep

from libnative cimport *

import enum
import os

import facade

cdef extern from *:
    """
    /* How many libnative callbacks this thread is inside (the trampoline counts). A close requested from
       inside a callback must not wait for pinned calls: one of them may be waiting for that very callback. */
    static _Thread_local int cy_callback_depth = 0;
    static const unsigned char cy_empty_buffer[1] = {0};
    """
    int cy_callback_depth
    const unsigned char cy_empty_buffer[1]

cdef size_t DETACH_THRESHOLD = 64 * 1024
cdef uint64_t U32_MAX = 0xFFFFFFFF


class EventKind(enum.Enum):
    PUT = NATIVE_EVENT_PUT
    DELETE = NATIVE_EVENT_DELETE


# ---------------------------------------------------------------- errors

def status_name(int code):
    return native_status_name(code).decode("ascii")


cdef object _error(native_error *err, object filename=None, object key=None):
    info = facade.ErrInfo(err.code, err.sys_errno, err.op.decode("utf-8", "replace"),
                          err.message.decode("utf-8", "replace"))
    return facade.make_error(info, status_name(err.code), filename=filename, key=key)


cdef object _status_error(int rc, str op, str message):
    return facade.make_error(facade.ErrInfo(rc, 0, op, message), status_name(rc))


cdef object _closed(str op):
    return facade.make_error(facade.ErrInfo(NATIVE_ESTATE, 0, op, "connection is closed"), "NATIVE_ESTATE")


# ---------------------------------------------------------------- buffers

cdef object _as_bytes_view(object data, bint writable, str what):
    """A C-contiguous 1-D unsigned-byte memoryview of `data` (TypeError if it cannot be one)."""
    try:
        m = memoryview(data)
    except TypeError:
        raise TypeError(f"{what}: a bytes-like object is required, not {type(data).__name__!r}") from None
    if writable and m.readonly:
        raise TypeError(f"{what}: the buffer is read-only")
    if not m.c_contiguous:
        raise TypeError(f"{what}: the buffer is not C-contiguous")
    if m.ndim != 1 or m.format != "B":
        m = m.cast("B")
    return m


cdef inline const unsigned char *_ptr(const unsigned char[::1] v) noexcept:
    # An empty view has no element 0: hand C a valid pointer for a zero-length buffer.
    return &v[0] if v.shape[0] else cy_empty_buffer


cdef class _SignalPoll:
    """stop_data of native_process/native_connect: the exception a signal handler raised, if any."""
    cdef object error


cdef int _should_stop(void *data) noexcept nogil:
    # Signals: polled by libnative about every 5 ms of work; runs the Python signal handlers (main
    # thread only) with the GIL re-taken, and stops the C loop if one raised (KeyboardInterrupt).
    with gil:
        try:
            PyErr_CheckSignals()
        except BaseException as e:
            (<_SignalPoll>data).error = e
            return 1
    return 0


cdef inline long _as_long(object x) except? -1:
    # Wrong results: Cython's own conversion of a `long` parameter calls __int__, so it would accept
    # 1.5 as 1 (found by test_add). Only integers (__index__) are accepted; out of range: OverflowError.
    if type(x) is not int:
        x = PyNumber_Index(x)
    return x


def add(a, b):
    """C long addition through libnative; OverflowError if an argument or the result does not fit."""
    cdef long x = _as_long(a)
    cdef long y = _as_long(b)
    cdef long out = 0
    if native_add(x, y, &out) != NATIVE_OK:
        raise OverflowError("add: result does not fit in a C long")
    return out


def checksum(data):
    """64-bit FNV-1a of any C-contiguous buffer, read in place (zero copies)."""
    cdef const unsigned char[::1] v
    cdef const unsigned char *p
    cdef uint64_t h
    cdef size_t n
    if type(data) is bytes or type(data) is bytearray:
        v = data
    else:
        v = _as_bytes_view(data, False, "checksum")
    n = v.shape[0]
    p = _ptr(v)
    if n >= DETACH_THRESHOLD:
        # GIL: released for big buffers; the memoryview keeps the export (and the memory) pinned.
        with nogil:
            h = native_checksum(p, n)
    else:
        h = native_checksum(p, n)
    return h


def process(data, *, key=0, rounds=1):
    """In-place transform of a writable C-contiguous buffer; signals stop it (CancelledError/KeyboardInterrupt)."""
    cdef unsigned char[::1] v
    cdef uint32_t k, r
    cdef void *p
    cdef size_t n, work
    cdef int rc
    cdef _SignalPoll poll
    key, rounds = PyNumber_Index(key), PyNumber_Index(rounds)
    if not 0 <= key <= U32_MAX:
        raise OverflowError(f"key {key} does not fit in 32 unsigned bits")
    if not 1 <= rounds <= U32_MAX:
        raise ValueError(f"rounds must be in 1..={U32_MAX}, got {rounds}")
    k, r = key, rounds
    if type(data) is bytearray:
        v = data
    else:
        v = _as_bytes_view(data, True, "process")
    n = v.shape[0]
    p = <void *>_ptr(v)
    # The work is the length times the rounds (saturating): a small buffer over many rounds is as long a
    # call as a big one, and must release the GIL and heed Ctrl-C the same way.
    work = n * r if r == 0 or n <= SIZE_MAX // r else SIZE_MAX
    if work >= DETACH_THRESHOLD:
        poll = _SignalPoll()
        # GIL: released; the writable memoryview keeps the export pinned (no resize under C).
        with nogil:
            rc = native_process(p, n, k, r, _should_stop, <void *>poll)
        if poll.error is not None:
            raise poll.error
    else:
        rc = native_process(p, n, k, r, NULL, NULL)
    if rc != NATIVE_OK:
        raise _status_error(rc, "process", "native_process failed")


def debug_counters():
    cdef native_debug_counters c
    native_debug_counters_get(&c)
    return {"live_handles": c.live_handles, "live_subscriptions": c.live_subscriptions,
            "live_blocks": c.live_blocks, "calls": c.calls}


def set_flush_delay_ms(uint32_t ms):
    native_debug_set_flush_delay_ms(ms)


# ---------------------------------------------------------------- handles

def connect(path, *, timeout=None):
    """Opens the store at `path`; waits for its lock up to `timeout` seconds (None: forever) without the GIL."""
    cdef bytes raw = os.fsencode(path)
    cdef const char *cpath
    cdef int64_t timeout_ms
    cdef native_db *db = NULL
    cdef native_error err
    cdef int rc
    cdef _SignalPoll poll = _SignalPoll()
    if b"\0" in raw:
        raise ValueError("embedded NUL in path")  # a char * would silently cut the path here
    timeout_ms = facade.timeout_ms(timeout)  # the same saturating, rounding-up conversion as every binding
    # Borrowed data: `raw` (a local) owns the bytes behind cpath for the whole GIL-free call.
    cpath = raw
    with nogil:
        rc = native_connect(cpath, NULL, timeout_ms, _should_stop, <void *>poll, &db, &err)
    if poll.error is not None:
        raise poll.error
    if rc != NATIVE_OK:
        raise _error(&err, os.fsdecode(raw))
    conn = Connection.__new__(Connection)
    (<Connection>conn)._h = db
    (<Connection>conn).path = os.fsdecode(raw)
    (<Connection>conn)._callbacks = ()
    return conn


@cython.final
@cython.no_gc_clear
cdef class Connection:
    """One native_db handle. Context manager; close() is idempotent; dealloc closes a forgotten handle."""
    cdef native_db *_h
    cdef int _pins            # calls running with the GIL released on this handle
    cdef bint _close_pending  # closed for new calls; the native close may still be under way
    cdef bint _close_deferred # close asked from a callback while pinned: the last unpin finishes it
    cdef readonly str path
    # ((subscription id, callable), ...): the references behind libnative's user_data pointers.
    cdef tuple _callbacks
    cdef object __weakref__

    def __init__(self):
        raise TypeError("use connect()")

    cdef native_db *_handle(self, str op) except NULL:
        if self._h == NULL or self._close_pending:
            raise _closed(op)
        return self._h

    cdef native_db *_pin(self, str op) except NULL:
        cdef native_db *h = self._handle(op)
        self._pins += 1
        return h

    cdef void _unpin(self) noexcept:
        self._pins -= 1
        if self._pins == 0 and self._close_deferred:
            self._close_deferred = False
            self._finish_close()

    @property
    def closed(self):
        return self._h == NULL or self._close_pending

    def close(self):
        if self._h == NULL or self._close_pending:
            return
        self._close_pending = True
        if self._pins and cy_callback_depth > 0:
            self._close_deferred = True
            return
        self._finish_close()

    cdef void _finish_close(self) noexcept:
        cdef native_db *h
        while self._pins:
            # GIL: the pinned calls run without the GIL and may wait for a callback that needs it.
            with nogil:
                usleep(1000)
        h, self._h = self._h, NULL  # swapped under the GIL: native_close runs exactly once
        if h != NULL:
            # GIL: joining the notifier waits for an in-flight callback, which needs the GIL.
            with nogil:
                native_close(h)
        self._release_callbacks()

    cdef void _release_callbacks(self) noexcept:
        # Ownership: only now that libnative will never call them again.
        self._callbacks = ()

    cdef bint _has(self, uint64_t sid) noexcept:
        for entry in self._callbacks:
            if entry[0] == sid:
                return True
        return False

    def __dealloc__(self):
        # Also reached from the cycle collector: the callbacks are still referenced (no_gc_clear), and
        # Cython drops them only after this body, once native_close has stopped the notifier.
        cdef native_db *h = self._h
        self._h = NULL
        if h != NULL:
            with nogil:
                native_close(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<Connection {self.path!r} via cython{' closed' if self.closed else ''}>"

    def put(self, key, value):
        cdef const unsigned char[::1] k = key if type(key) is bytes else _as_bytes_view(key, False, "key")
        cdef const unsigned char[::1] v = value if type(value) is bytes else _as_bytes_view(value, False, "value")
        cdef native_error err
        if native_put(self._handle("put"), _ptr(k), k.shape[0], _ptr(v), v.shape[0], &err) != NATIVE_OK:
            raise _error(&err)

    def get(self, key):
        cdef const unsigned char[::1] k = key if type(key) is bytes else _as_bytes_view(key, False, "key")
        cdef native_error err
        cdef void *val = NULL
        cdef size_t vlen = 0
        if native_get(self._handle("get"), _ptr(k), k.shape[0], &val, &vlen, &err) != NATIVE_OK:
            raise _error(&err, None, bytes(key))
        return _take(val, vlen)

    def delete(self, key):
        cdef const unsigned char[::1] k = key if type(key) is bytes else _as_bytes_view(key, False, "key")
        cdef native_error err
        if native_delete(self._handle("delete"), _ptr(k), k.shape[0], &err) != NATIVE_OK:
            raise _error(&err, None, bytes(key))

    def __len__(self):
        cdef size_t n = native_count(self._handle("len"))
        cdef native_stats s
        if n == 0:  # also what a handle inherited across fork() reads: native_stats_get tells them apart
            self._native_stats("len", &s)
        return n

    def items(self):
        # The snapshot is taken now, when the iterator is made (as the PyO3 wrapper does), not at its
        # first next(): a write between the two must make it stale, and a closed handle refuses now.
        return self._items_of(native_generation(self._handle("items")))

    def _items_of(self, uint64_t generation):
        cdef size_t i = 0
        cdef void *k
        cdef void *v
        cdef size_t kl, vl
        cdef native_error err
        cdef int rc
        while True:
            k = v = NULL
            rc = native_item_at(self._handle("items"), i, generation, &k, &kl, &v, &vl, &err)
            if rc == NATIVE_EDONE:
                return
            if rc != NATIVE_OK:
                raise _error(&err)
            key = _take(k, kl)
            yield key, _take(v, vl)
            i += 1

    def flush(self):
        """fsync of the log: blocks, so it runs without the GIL (the handle stays pinned)."""
        cdef native_error err
        cdef int rc
        cdef native_db *h = self._pin("flush")
        with nogil:
            rc = native_flush(h, &err)
        self._unpin()
        if rc != NATIVE_OK:
            raise _error(&err)

    cdef int _native_stats(self, str op, native_stats *s) except -1:
        cdef native_error last
        cdef native_db *h = self._handle(op)
        cdef int rc = native_stats_get(h, s)
        if rc != NATIVE_OK:  # no error out-parameter: the handle's last error says why
            native_last_error(h, &last)
            raise _status_error(rc, op, last.message.decode("utf-8", "replace"))
        return 0

    def stats(self):
        cdef native_stats s
        self._native_stats("stats", &s)
        return facade.Stats(keys=s.keys, puts=s.puts, gets=s.gets, deletes=s.deletes, file_bytes=s.file_bytes,
                            events_delivered=s.events_delivered, events_dropped=s.events_dropped,
                            events_pending=s.events_pending,
                            subscriptions=s.subscriptions, generation=s.generation)

    def subscribe(self, callback):
        """Calls callback(Event) on libnative's notifier thread for every put and delete."""
        cdef uint64_t sid = 0
        cdef native_error err
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__!r}")
        cdef native_db *h = self._handle("subscribe")
        if native_subscribe(h, _on_event, <void *>callback, &sid, &err) != NATIVE_OK:
            raise _error(&err)
        # Ownership: this reference backs libnative's user_data until unsubscribe/close returned. No
        # callback can run before this line: the trampoline needs the GIL, which we hold.
        self._callbacks = self._callbacks + ((sid, callback),)
        sub = Subscription.__new__(Subscription)
        (<Subscription>sub)._conn = self
        (<Subscription>sub).id = sid
        return sub

    cdef bint _unsubscribe(self, uint64_t sid) except -1:
        cdef native_db *h
        if not self._has(sid) or self._h == NULL or self._close_pending:
            return False  # already cancelled, or dropped by close
        h = self._pin("unsubscribe")
        # GIL: native_unsubscribe waits for an in-flight callback, which needs the GIL to finish.
        with nogil:
            native_unsubscribe(h, sid)
        self._unpin()
        self._callbacks = tuple(e for e in self._callbacks if e[0] != sid)
        return True


cdef object _take(void *block, size_t n):
    """Copies a native_alloc block into bytes and frees it with the matching allocator."""
    try:
        return (<const char *>block)[:n] if n else b""
    finally:
        native_free(block)


@cython.final
cdef class Subscription:
    cdef Connection _conn
    cdef readonly uint64_t id

    def __init__(self):
        raise TypeError("use Connection.subscribe()")

    @property
    def active(self):
        return self._conn is not None and not self._conn.closed and self._conn._has(self.id)

    def cancel(self):
        """After this returns the callback is never called again and its reference is dropped."""
        if self._conn is not None:
            self._conn._unsubscribe(self.id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cancel()


@cython.final
cdef class Event:
    cdef readonly object kind
    cdef readonly uint64_t seq
    cdef readonly bytes key
    cdef readonly object value

    def __repr__(self):
        return f"Event(kind={self.kind}, seq={self.seq}, key={self.key!r}, value={self.value!r})"


cdef void _on_event(const native_event *ev, void *user_data) noexcept nogil:
    # Native thread -> Python: take the GIL first (PyGILState_Ensure), touch nothing Python before.
    with gil:
        _deliver(ev, <object>user_data)


cdef void _deliver(const native_event *ev, object callback) noexcept:
    # `callback` is a new reference for the duration of the call, whatever the callback does to its
    # subscription (cancel, close) meanwhile. An exception is reported through sys.unraisablehook.
    global cy_callback_depth
    cdef Event e = Event.__new__(Event)
    e.kind = EventKind(ev.kind)
    e.seq = ev.seq
    # Borrowed data: key and value are valid only during the callback, so they are copied now.
    e.key = (<const char *>ev.key)[:ev.klen] if ev.klen else b""
    e.value = None if ev.value == NULL else ((<const char *>ev.value)[:ev.vlen] if ev.vlen else b"")
    cy_callback_depth += 1
    try:
        callback(e)
    finally:
        cy_callback_depth -= 1
