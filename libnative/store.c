/*
 * Boundary concern: native handles and blocking calls. A handle owns a locked log file, its in-memory
 * index and a notifier thread; connect may block on the lock (timeout + cancel hook), flush blocks on fsync.
 * Checklist rows: "Who owns each native pointer?" (handles, returned blocks) and "Can the call block?"
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* File layout: a header "NKV1" u32le(version) u64le(committed) u32le(crc32 of the 16 bytes before it),
 * then records [u8 type][u32le klen][u32le vlen][key][value][u32le crc32(type..value)].
 * `committed` is the file length after the last complete append: it is rewritten after each record,
 * so a log cut at a record boundary (which every record checksum would accept) is refused, and bytes
 * after it (an append torn by a crash) are not part of the store. */
#define FILE_MAGIC "NKV1"
#define FILE_VERSION 2u
#define FILE_HEADER 20u
#define HDR_COMMITTED 8u
#define HDR_CRC 16u
#define REC_PUT 1u
#define REC_DELETE 2u
#define REC_FIXED 9u /* type + klen + vlen */
#define REC_CRC 4u
#define LOCK_POLL_MS 5

static atomic_uint g_flush_delay_ms;

/* ---- little helpers ---- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc32(const unsigned char *p, size_t n)
{
    pthread_once(&crc_once, crc_init);
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++)
        c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_u64(unsigned char *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get_u64(const unsigned char *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* The committed length and its checksum (the header's last 12 bytes), ready to write at HDR_COMMITTED. */
static void header_tail(unsigned char out[12], uint64_t committed)
{
    unsigned char hdr[FILE_HEADER];
    memcpy(hdr, FILE_MAGIC, 4);
    put_u32(hdr + 4, FILE_VERSION);
    put_u64(hdr + HDR_COMMITTED, committed);
    put_u32(hdr + HDR_CRC, crc32(hdr, HDR_CRC));
    memcpy(out, hdr + HDR_COMMITTED, 12);
}

static uint64_t hash_key(const unsigned char *k, size_t n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < n; i++)
        h = (h ^ k[i]) * UINT64_C(0x100000001b3);
    return h;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- index: dense entry array + linear-probing table (backward-shift deletion, no tombstones) ---- */

/* 1 and *slot = its slot if found; 0 and *slot = the empty slot to use otherwise. */
static int idx_find(const struct index *ix, const void *key, size_t klen, uint64_t h, size_t *slot)
{
    if (ix->slots == NULL) {
        *slot = 0;
        return 0;
    }
    for (size_t i = h & ix->mask;; i = (i + 1) & ix->mask) {
        size_t v = ix->slots[i];
        if (v == 0) {
            *slot = i;
            return 0;
        }
        const struct entry *e = &ix->items[v - 1];
        if (e->hash == h && e->klen == klen && memcmp(e->kv, key, klen) == 0) {
            *slot = i;
            return 1;
        }
    }
}

static int idx_rehash(struct index *ix, size_t nslots)
{
    size_t *slots = calloc(nslots, sizeof *slots);
    if (slots == NULL)
        return -1;
    free(ix->slots);
    ix->slots = slots;
    ix->mask = nslots - 1;
    for (size_t p = 0; p < ix->count; p++) {
        size_t i = ix->items[p].hash & ix->mask;
        while (slots[i] != 0)
            i = (i + 1) & ix->mask;
        slots[i] = p + 1;
    }
    return 0;
}

/* Makes room for one more entry so the insert after a successful log write cannot fail. */
static int idx_reserve(struct index *ix)
{
    if (ix->count == ix->cap) {
        size_t cap = ix->cap ? ix->cap * 2 : 16;
        struct entry *items = realloc(ix->items, cap * sizeof *items);
        if (items == NULL)
            return -1;
        ix->items = items;
        ix->cap = cap;
    }
    size_t nslots = ix->slots ? ix->mask + 1 : 0;
    if ((ix->count + 1) * 2 > nslots) /* load factor <= 1/2 */
        return idx_rehash(ix, nslots ? nslots * 2 : 32);
    return 0;
}

/* Takes ownership of kv. Requires a prior idx_reserve. */
static void idx_put(struct index *ix, uint64_t h, unsigned char *kv, uint32_t klen, uint32_t vlen)
{
    size_t slot;
    if (idx_find(ix, kv, klen, h, &slot)) {
        struct entry *e = &ix->items[ix->slots[slot] - 1];
        free(e->kv);
        e->kv = kv;
        e->vlen = vlen;
        return;
    }
    ix->items[ix->count] = (struct entry){.hash = h, .klen = klen, .vlen = vlen, .kv = kv};
    ix->slots[slot] = ++ix->count;
}

static void idx_remove(struct index *ix, size_t slot)
{
    size_t pos = ix->slots[slot] - 1, last = ix->count - 1;
    free(ix->items[pos].kv);
    /* Backward shift: pull later cluster members into the hole unless their home lies in (hole, j]. */
    size_t hole = slot;
    for (size_t j = (hole + 1) & ix->mask; ix->slots[j] != 0; j = (j + 1) & ix->mask) {
        size_t home = ix->items[ix->slots[j] - 1].hash & ix->mask;
        if (((j - home) & ix->mask) >= ((j - hole) & ix->mask)) {
            ix->slots[hole] = ix->slots[j];
            hole = j;
        }
    }
    ix->slots[hole] = 0;
    if (pos != last) { /* swap-remove: the last entry moves into pos; repoint its slot */
        size_t i = ix->items[last].hash & ix->mask;
        while (ix->slots[i] != last + 1)
            i = (i + 1) & ix->mask;
        ix->slots[i] = pos + 1;
        ix->items[pos] = ix->items[last];
    }
    ix->count--;
}

static void idx_free(struct index *ix)
{
    for (size_t p = 0; p < ix->count; p++)
        free(ix->items[p].kv);
    free(ix->items);
    free(ix->slots);
    memset(ix, 0, sizeof *ix);
}

/* ---- file ---- */

static int pwrite_all(int fd, const unsigned char *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

static int lock_file(int fd, int64_t timeout_ms, native_cancel_fn should_stop, void *stop_data,
                     native_error *err)
{
    /* Whole ms waited, rounded down from a µs clock: waited >= timeout_ms only once that much time has
     * passed (differences of ms-truncated readings could give up almost 1 ms early). */
    int64_t start = now_us();
    for (;;) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            return NATIVE_OK;
        int e = errno;
        if (e == EINTR)
            continue;
        if (e != EWOULDBLOCK)
            return fail(NULL, err, NATIVE_EIO, e, "connect", "flock failed");
        int64_t waited = (now_us() - start) / 1000;
        if (timeout_ms == 0 || (timeout_ms > 0 && waited >= timeout_ms))
            return fail(NULL, err, NATIVE_ETIMEOUT, 0, "connect",
                        "store is locked by another connection (gave up after %lld ms)", (long long)waited);
        if (should_stop != NULL && should_stop(stop_data))
            return fail(NULL, err, NATIVE_ECANCELLED, 0, "connect", "cancelled while waiting for the store lock");
        long nap = LOCK_POLL_MS;
        if (timeout_ms > 0 && timeout_ms - waited < nap)
            nap = (long)(timeout_ms - waited);
        sleep_ms(nap);
    }
}

/* Rebuilds the index from a mapped log. Any inconsistency is NATIVE_EPROTOCOL naming the byte offset. */
static int replay(native_db *db, const unsigned char *map, uint64_t size, native_error *err)
{
    const char *op = "connect";
    if (memcmp(map, FILE_MAGIC, 4) != 0)
        return fail(NULL, err, NATIVE_EPROTOCOL, 0, op, "bad magic at offset 0 (not a libnative store)");
    uint32_t version = get_u32(map + 4);
    if (version != FILE_VERSION)
        return fail(NULL, err, NATIVE_EPROTOCOL, 0, op, "unsupported version %u at offset 4", version);
    if (crc32(map, HDR_CRC) != get_u32(map + HDR_CRC))
        return fail(NULL, err, NATIVE_EPROTOCOL, 0, op, "bad header checksum at offset %u", HDR_CRC);
    uint64_t off = FILE_HEADER;
    while (off < size) {
        const unsigned char *r = map + off;
        if (size - off < REC_FIXED)
            return fail(NULL, err, NATIVE_EPROTOCOL, 0, op, "truncated record at offset %llu",
                        (unsigned long long)off);
        unsigned type = r[0];
        uint32_t klen = get_u32(r + 1), vlen = get_u32(r + 5);
        uint64_t total = (uint64_t)REC_FIXED + klen + vlen + REC_CRC;
        if (size - off < total)
            return fail(NULL, err, NATIVE_EPROTOCOL, 0, op, "truncated record at offset %llu",
                        (unsigned long long)off);
        if (crc32(r, REC_FIXED + (size_t)klen + vlen) != get_u32(r + REC_FIXED + klen + vlen))
            return fail(NULL, err, NATIVE_EPROTOCOL, 0, op, "bad record checksum at offset %llu",
                        (unsigned long long)off);
        /* The crc matched, so these are writer bugs or deliberate forgery rather than bit rot. */
        if ((type != REC_PUT && type != REC_DELETE) || klen == 0 || klen > NATIVE_MAX_KEY_LIMIT ||
            vlen > NATIVE_MAX_VALUE_LIMIT || (type == REC_DELETE && vlen != 0))
            return fail(NULL, err, NATIVE_EPROTOCOL, 0, op, "malformed record (type %u) at offset %llu", type,
                        (unsigned long long)off);
        const unsigned char *key = r + REC_FIXED;
        uint64_t h = hash_key(key, klen);
        if (type == REC_PUT) {
            unsigned char *kv = malloc((size_t)klen + vlen);
            if (kv == NULL || idx_reserve(&db->idx) != 0) {
                free(kv);
                return fail(NULL, err, NATIVE_ENOMEM, 0, op, "out of memory loading the store");
            }
            memcpy(kv, key, (size_t)klen + vlen);
            idx_put(&db->idx, h, kv, klen, vlen);
        } else {
            size_t slot;
            if (idx_find(&db->idx, key, klen, h, &slot))
                idx_remove(&db->idx, slot);
        }
        off += total;
    }
    return NATIVE_OK;
}

static int load(native_db *db, native_error *err)
{
    const char *op = "connect";
    struct stat st;
    if (fstat(db->fd, &st) != 0) {
        int e = errno;
        return fail(NULL, err, NATIVE_EIO, e, op, "fstat failed");
    }
    if (st.st_size == 0) {
        unsigned char hdr[FILE_HEADER];
        memcpy(hdr, FILE_MAGIC, 4);
        put_u32(hdr + 4, FILE_VERSION);
        header_tail(hdr + HDR_COMMITTED, FILE_HEADER);
        if (pwrite_all(db->fd, hdr, sizeof hdr, 0) != 0) {
            int e = errno;
            return fail(NULL, err, NATIVE_EIO, e, op, "write failed");
        }
        if (db->opts.sync && fsync(db->fd) != 0) {
            int e = errno;
            return fail(NULL, err, NATIVE_EIO, e, op, "fsync failed");
        }
        db->file_bytes = FILE_HEADER;
        return NATIVE_OK;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < FILE_HEADER)
        return fail(NULL, err, NATIVE_EPROTOCOL, 0, op, "truncated header at offset 0 (file is %llu bytes)",
                    (unsigned long long)size);
    unsigned char hdr[FILE_HEADER];
    if (pread(db->fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr) {
        int e = errno;
        return fail(NULL, err, NATIVE_EIO, e, op, "read failed");
    }
    /* Only what the header says was committed is the store; a shorter file replays what it holds, so
     * that a cut inside a record is named by its offset, and a cut at a record boundary is refused. */
    uint64_t committed = get_u64(hdr + HDR_COMMITTED), file_size = size;
    if (memcmp(hdr, FILE_MAGIC, 4) == 0 && crc32(hdr, HDR_CRC) == get_u32(hdr + HDR_CRC) && committed >= FILE_HEADER &&
        committed < size)
        size = committed;
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, db->fd, 0);
    if (map == MAP_FAILED) {
        int e = errno;
        return fail(NULL, err, NATIVE_EIO, e, op, "mmap failed");
    }
    int rc = replay(db, map, size, err);
    munmap(map, (size_t)size);
    if (rc == NATIVE_OK && committed > file_size)
        rc = fail(NULL, err, NATIVE_EPROTOCOL, 0, op, "truncated log at offset %llu (%llu bytes committed)",
                  (unsigned long long)file_size, (unsigned long long)committed);
    db->file_bytes = size;
    /* Every live key must be usable through this handle: get/delete take keys up to the handle's
     * max_key_size, so a longer stored key would show up in iteration yet be unreachable. */
    for (size_t p = 0; rc == NATIVE_OK && p < db->idx.count; p++)
        if (db->idx.items[p].klen > db->opts.max_key_size)
            rc = fail(NULL, err, NATIVE_EINVAL, 0, op,
                      "the store holds a key of %u bytes, over max_key_size=%u (connect with a larger max_key_size)",
                      (unsigned)db->idx.items[p].klen, (unsigned)db->opts.max_key_size);
    return rc;
}

/* Appends one record; on failure the file is cut back so the log never keeps a half-applied change. */
static int append_record(native_db *db, unsigned type, const void *key, size_t klen, const void *val,
                         size_t vlen, const char *op, native_error *err)
{
    size_t n = REC_FIXED + klen + vlen + REC_CRC;
    unsigned char *rec = malloc(n);
    if (rec == NULL)
        return fail(db, err, NATIVE_ENOMEM, 0, op, "out of memory");
    rec[0] = (unsigned char)type;
    put_u32(rec + 1, (uint32_t)klen);
    put_u32(rec + 5, (uint32_t)vlen);
    memcpy(rec + REC_FIXED, key, klen);
    if (vlen > 0)
        memcpy(rec + REC_FIXED + klen, val, vlen);
    put_u32(rec + REC_FIXED + klen + vlen, crc32(rec, REC_FIXED + klen + vlen));
    uint64_t off = db->file_bytes;
    int rc = pwrite_all(db->fd, rec, n, off);
    int e = errno;
    free(rec);
    const char *what = "write failed";
    unsigned delay = atomic_load(&g_flush_delay_ms);
    if (rc == 0 && db->opts.sync && delay > 0)
        sleep_ms((long)delay);
    if (rc == 0 && db->opts.sync && fsync(db->fd) != 0) {
        e = errno;
        rc = -1;
        what = "fsync failed";
    }
    /* The record is complete (and durable under sync): only now does the header commit it. */
    unsigned char tail[12];
    header_tail(tail, off + n);
    if (rc == 0 && pwrite_all(db->fd, tail, sizeof tail, HDR_COMMITTED) != 0) {
        e = errno;
        rc = -1;
    }
    if (rc == 0 && db->opts.sync && fsync(db->fd) != 0) {
        e = errno;
        rc = -1;
        what = "fsync failed";
    }
    if (rc != 0) {
        header_tail(tail, off); /* best effort, like the cut below: the header commits `off` again */
        if (pwrite_all(db->fd, tail, sizeof tail, HDR_COMMITTED) != 0) {
            /* the original error is the one worth reporting */
        }
        if (ftruncate(db->fd, (off_t)off) != 0) {
            /* best effort: the original error is the one worth reporting */
        }
        return fail(db, err, NATIVE_EIO, e, op, "%s", what);
    }
    db->file_bytes = off + n;
    return NATIVE_OK;
}

/* ---- public API ---- */

int native_connect(const char *path, const native_options *opts, int64_t timeout_ms,
                   native_cancel_fn should_stop, void *stop_data, native_db **out, native_error *err)
{
    COUNT_CALL();
    const char *op = "connect";
    if (path == NULL || out == NULL)
        return fail(NULL, err, NATIVE_EINVAL, 0, op, "path and out must not be NULL");
    *out = NULL;
    native_options o;
    if (opts != NULL) {
        int rc = options_check(opts, op, err);
        if (rc != NATIVE_OK)
            return rc;
        o = *opts;
    } else {
        options_fill_default(&o);
    }
    int fd = open(path, O_RDWR | O_CLOEXEC | (o.create ? O_CREAT : 0), (mode_t)o.file_mode);
    if (fd < 0) {
        int e = errno;
        return fail(NULL, err, NATIVE_EIO, e, op, "open failed");
    }
    int rc = lock_file(fd, timeout_ms, should_stop, stop_data, err);
    if (rc != NATIVE_OK) {
        close(fd);
        return rc;
    }
    native_db *db = calloc(1, sizeof *db);
    if (db == NULL) {
        close(fd);
        return fail(NULL, err, NATIVE_ENOMEM, 0, op, "out of memory");
    }
    db->fd = fd;
    db->opts = o;
    rc = load(db, err);
    if (rc == NATIVE_OK) {
        pthread_mutex_init(&db->mu, NULL);
        notifier_init(db);
    }
    if (rc != NATIVE_OK) {
        idx_free(&db->idx);
        free(db);
        close(fd);
        return rc;
    }
    fork_track(db);
    atomic_fetch_add(&g_live_handles, 1);
    *out = db;
    return NATIVE_OK;
}

void store_teardown(native_db *db)
{
    fork_untrack(db);
    notifier_destroy(db);
    close(db->fd); /* releases the flock */
    idx_free(&db->idx);
    pthread_mutex_destroy(&db->mu);
    free(db);
    atomic_fetch_sub(&g_live_handles, 1);
}

void native_close(native_db *db)
{
    COUNT_CALL();
    if (db == NULL)
        return;
    if (opened_in_another_process(db)) {
        /* The parent's handle: its locks may be held by threads that are not here and its notifier is
         * not here to join. This process's copy of its descriptor was closed at the fork (fork.c); the
         * memory is left be. */
        atomic_fetch_sub(&g_live_handles, 1);
        return;
    }
    atomic_store(&db->closing, 1);
    pthread_mutex_lock(&db->nt.mu);
    if (on_notifier_thread(db)) {
        /* Inside a callback: the notifier tears down once it returns (see notifier_main). */
        db->nt.deferred_close = 1;
        pthread_mutex_unlock(&db->nt.mu);
        return;
    }
    pthread_mutex_unlock(&db->nt.mu);
    notifier_join_if_started(db);
    store_teardown(db);
}

/* Checks shared by the keyed calls; caller holds db->mu. */
static int check_key(native_db *db, const void *key, size_t klen, const char *op, native_error *err)
{
    if (atomic_load(&db->closing))
        return fail(db, err, NATIVE_ESTATE, 0, op, "handle is closed");
    if (key == NULL)
        return fail(db, err, NATIVE_EINVAL, 0, op, "key is NULL");
    if (klen < 1 || klen > db->opts.max_key_size)
        return fail(db, err, NATIVE_EINVAL, 0, op, "key length %zu not in 1..=%u", klen,
                    (unsigned)db->opts.max_key_size);
    return NATIVE_OK;
}

int native_put(native_db *db, const void *key, size_t klen, const void *val, size_t vlen, native_error *err)
{
    COUNT_CALL();
    const char *op = "put";
    if (db == NULL)
        return fail(NULL, err, NATIVE_EINVAL, 0, op, "handle is NULL");
    if (opened_in_another_process(db))
        return fail(NULL, err, NATIVE_ESTATE, 0, op, FORKED_MESSAGE);
    pthread_mutex_lock(&db->mu);
    int rc = check_key(db, key, klen, op, err);
    if (rc == NATIVE_OK && (vlen > db->opts.max_value_size || (val == NULL && vlen > 0)))
        rc = fail(db, err, NATIVE_EINVAL, 0, op, "value length %zu not in 0..=%u (or NULL value)", vlen,
                  (unsigned)db->opts.max_value_size);
    unsigned char *kv = NULL;
    if (rc == NATIVE_OK) {
        kv = malloc(klen + vlen);
        if (kv == NULL || idx_reserve(&db->idx) != 0)
            rc = fail(db, err, NATIVE_ENOMEM, 0, op, "out of memory");
    }
    if (rc == NATIVE_OK)
        rc = append_record(db, REC_PUT, key, klen, val, vlen, op, err);
    if (rc != NATIVE_OK) {
        free(kv);
        pthread_mutex_unlock(&db->mu);
        return rc;
    }
    memcpy(kv, key, klen);
    if (vlen > 0)
        memcpy(kv + klen, val, vlen);
    idx_put(&db->idx, hash_key(kv, klen), kv, (uint32_t)klen, (uint32_t)vlen);
    db->puts++;
    db->generation++;
    notifier_enqueue(db, NATIVE_EVENT_PUT, key, klen, val, vlen);
    pthread_mutex_unlock(&db->mu);
    return NATIVE_OK;
}

int native_get(native_db *db, const void *key, size_t klen, void **val_out, size_t *vlen_out, native_error *err)
{
    COUNT_CALL();
    const char *op = "get";
    if (db == NULL)
        return fail(NULL, err, NATIVE_EINVAL, 0, op, "handle is NULL");
    if (opened_in_another_process(db))
        return fail(NULL, err, NATIVE_ESTATE, 0, op, FORKED_MESSAGE);
    pthread_mutex_lock(&db->mu);
    int rc = check_key(db, key, klen, op, err);
    if (rc == NATIVE_OK && (val_out == NULL || vlen_out == NULL))
        rc = fail(db, err, NATIVE_EINVAL, 0, op, "val_out and vlen_out must not be NULL");
    if (rc == NATIVE_OK) {
        db->gets++;
        size_t slot;
        if (!idx_find(&db->idx, key, klen, hash_key(key, klen), &slot)) {
            rc = fail(db, err, NATIVE_ENOTFOUND, 0, op, "key not found");
        } else {
            const struct entry *e = &db->idx.items[db->idx.slots[slot] - 1];
            void *b = block_alloc(e->vlen);
            if (b == NULL) {
                rc = fail(db, err, NATIVE_ENOMEM, 0, op, "native_alloc(%u) failed", (unsigned)e->vlen);
            } else {
                memcpy(b, e->kv + e->klen, e->vlen);
                *val_out = b;
                *vlen_out = e->vlen;
            }
        }
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

int native_delete(native_db *db, const void *key, size_t klen, native_error *err)
{
    COUNT_CALL();
    const char *op = "delete";
    if (db == NULL)
        return fail(NULL, err, NATIVE_EINVAL, 0, op, "handle is NULL");
    if (opened_in_another_process(db))
        return fail(NULL, err, NATIVE_ESTATE, 0, op, FORKED_MESSAGE);
    pthread_mutex_lock(&db->mu);
    size_t slot;
    int rc = check_key(db, key, klen, op, err);
    if (rc == NATIVE_OK && !idx_find(&db->idx, key, klen, hash_key(key, klen), &slot))
        rc = fail(db, err, NATIVE_ENOTFOUND, 0, op, "key not found");
    if (rc == NATIVE_OK)
        rc = append_record(db, REC_DELETE, key, klen, NULL, 0, op, err);
    if (rc == NATIVE_OK) {
        idx_remove(&db->idx, slot);
        db->deletes++;
        db->generation++;
        notifier_enqueue(db, NATIVE_EVENT_DELETE, key, klen, NULL, 0);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

size_t native_count(native_db *db)
{
    COUNT_CALL();
    if (db == NULL || opened_in_another_process(db))
        return 0;
    pthread_mutex_lock(&db->mu);
    size_t n = db->idx.count;
    pthread_mutex_unlock(&db->mu);
    return n;
}

int native_flush(native_db *db, native_error *err)
{
    COUNT_CALL();
    const char *op = "flush";
    if (db == NULL)
        return fail(NULL, err, NATIVE_EINVAL, 0, op, "handle is NULL");
    if (opened_in_another_process(db))
        return fail(NULL, err, NATIVE_ESTATE, 0, op, FORKED_MESSAGE);
    if (atomic_load(&db->closing))
        return fail_unlocked(db, err, NATIVE_ESTATE, 0, op, "handle is closed");
    unsigned delay = atomic_load(&g_flush_delay_ms);
    if (delay > 0)
        sleep_ms((long)delay);
    /* No handle lock around fsync: the fd lives as long as the handle, and puts need not wait. */
    if (fsync(db->fd) != 0) {
        int e = errno;
        return fail_unlocked(db, err, NATIVE_EIO, e, op, "fsync failed");
    }
    return NATIVE_OK;
}

uint64_t native_generation(native_db *db)
{
    COUNT_CALL();
    if (db == NULL || opened_in_another_process(db))
        return 0;
    pthread_mutex_lock(&db->mu);
    uint64_t g = db->generation;
    pthread_mutex_unlock(&db->mu);
    return g;
}

int native_item_at(native_db *db, size_t index, uint64_t generation, void **key_out, size_t *klen_out,
                   void **val_out, size_t *vlen_out, native_error *err)
{
    COUNT_CALL();
    const char *op = "item_at";
    if (db == NULL)
        return fail(NULL, err, NATIVE_EINVAL, 0, op, "handle is NULL");
    if (opened_in_another_process(db))
        return fail(NULL, err, NATIVE_ESTATE, 0, op, FORKED_MESSAGE);
    if (key_out == NULL || klen_out == NULL || val_out == NULL || vlen_out == NULL)
        return fail_unlocked(db, err, NATIVE_EINVAL, 0, op, "output pointers must not be NULL");
    pthread_mutex_lock(&db->mu);
    int rc = NATIVE_OK;
    if (atomic_load(&db->closing)) {
        rc = fail(db, err, NATIVE_ESTATE, 0, op, "handle is closed");
    } else if (db->generation != generation) {
        rc = fail(db, err, NATIVE_ESTATE, 0, op, "store modified during iteration (generation %llu, cursor has %llu)",
                  (unsigned long long)db->generation, (unsigned long long)generation);
    } else if (index >= db->idx.count) {
        /* End of iteration is not an error: report it to the caller but keep the handle's last error. */
        rc = fail(NULL, err, NATIVE_EDONE, 0, op, "cursor is past the last item");
    } else {
        const struct entry *e = &db->idx.items[index];
        void *k = block_alloc(e->klen), *v = block_alloc(e->vlen);
        if (k == NULL || v == NULL) {
            block_free(k);
            block_free(v);
            rc = fail(db, err, NATIVE_ENOMEM, 0, op, "native_alloc failed");
        } else {
            memcpy(k, e->kv, e->klen);
            memcpy(v, e->kv + e->klen, e->vlen);
            *key_out = k;
            *klen_out = e->klen;
            *val_out = v;
            *vlen_out = e->vlen;
        }
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

void native_debug_set_flush_delay_ms(uint32_t ms)
{
    COUNT_CALL();
    atomic_store(&g_flush_delay_ms, ms);
}
