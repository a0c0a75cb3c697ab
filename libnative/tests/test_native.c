/*
 * Self-test of libnative's whole API, in plain C: what a wrapper may rely on, checked without Python.
 * Run with `make -C libnative test` (add CC=clang-19 CFLAGS_EXTRA=-fsanitize=... for sanitizers).
 */
#define _GNU_SOURCE 1
#include "native.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK(c)                                                                   \
    do {                                                                           \
        if (!(c)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                               \
        }                                                                          \
    } while (0)

#define CHECK_RC(expr, want)                                                                        \
    do {                                                                                            \
        int rc_ = (expr);                                                                           \
        if (rc_ != (want)) {                                                                        \
            fprintf(stderr, "%s:%d: %s = %s, want %s\n", __FILE__, __LINE__, #expr,                \
                    native_status_name(rc_), native_status_name(want));                             \
            abort();                                                                                \
        }                                                                                           \
    } while (0)

static char g_dir[64];

static const char *path_in(const char *name)
{
    static _Thread_local char buf[256];
    snprintf(buf, sizeof buf, "%s/%s", g_dir, name);
    return buf;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static native_debug_counters counters(void)
{
    native_debug_counters c;
    native_debug_counters_get(&c);
    return c;
}

static native_stats stats_of(native_db *db)
{
    native_stats s;
    CHECK_RC(native_stats_get(db, &s), NATIVE_OK);
    return s;
}

/* Polls until the notifier has delivered `n` events in total (callbacks run asynchronously). */
static void wait_delivered(native_db *db, uint64_t n)
{
    int64_t deadline = now_ms() + 10000;
    while (stats_of(db).events_delivered < n) {
        CHECK(now_ms() < deadline);
        sleep_ms(1);
    }
}

static native_db *open_db(const char *name, const native_options *opts)
{
    native_db *db = NULL;
    native_error err;
    int rc = native_connect(path_in(name), opts, 0, NULL, NULL, &db, &err);
    if (rc != NATIVE_OK)
        fprintf(stderr, "connect %s: %s %s\n", name, native_status_name(rc), err.message);
    CHECK_RC(rc, NATIVE_OK);
    CHECK(db != NULL);
    return db;
}

static void put_s(native_db *db, const char *k, const char *v)
{
    native_error err;
    CHECK_RC(native_put(db, k, strlen(k), v, strlen(v), &err), NATIVE_OK);
}

/* Returns 1 and checks the value if present, 0 if absent. */
static int get_is(native_db *db, const char *k, const char *want)
{
    void *v = NULL;
    size_t n = 0;
    native_error err;
    int rc = native_get(db, k, strlen(k), &v, &n, &err);
    if (rc == NATIVE_ENOTFOUND) {
        CHECK(err.code == NATIVE_ENOTFOUND && strcmp(err.op, "get") == 0);
        return 0;
    }
    CHECK_RC(rc, NATIVE_OK);
    CHECK(want != NULL && n == strlen(want) && memcmp(v, want, n) == 0);
    native_free(v);
    return 1;
}

/* ---------------------------------------------------------------- compute */

static void ref_process(unsigned char *b, size_t len, uint32_t key, uint32_t rounds)
{
    for (uint32_t r = 0; r < rounds; r++)
        for (size_t i = 0; i < len; i++)
            b[i] = (unsigned char)(((b[i] ^ ((key >> (8 * (i % 4))) & 0xff)) + (i & 0xff)) & 0xff);
}

static int polls_left;
static int count_polls(void *data)
{
    ++*(int *)data;
    return --polls_left == 0;
}

static void test_compute(void)
{
    long out = 7;
    CHECK_RC(native_add(2, 3, &out), NATIVE_OK);
    CHECK(out == 5);
    out = 7;
    CHECK_RC(native_add(LONG_MAX, 1, &out), NATIVE_EINVAL);
    CHECK_RC(native_add(LONG_MIN, -1, &out), NATIVE_EINVAL);
    CHECK(out == 7);
    CHECK_RC(native_add(LONG_MIN, LONG_MAX, &out), NATIVE_OK);
    CHECK(out == -1);
    CHECK_RC(native_add(1, 1, NULL), NATIVE_EINVAL);

    CHECK(native_checksum("", 0) == UINT64_C(0xcbf29ce484222325));
    CHECK(native_checksum(NULL, 0) == UINT64_C(0xcbf29ce484222325));
    CHECK(native_checksum("a", 1) == UINT64_C(0xaf63dc4c8601ec8c));
    CHECK(native_checksum("foobar", 6) == UINT64_C(0x85944171f73967e8));

    size_t len = 4 * 256 * 1024 + 17;
    unsigned char *a = malloc(len), *b = malloc(len);
    CHECK(a && b);
    srand(42);
    for (size_t i = 0; i < len; i++)
        a[i] = b[i] = (unsigned char)rand();
    CHECK_RC(native_process(a, len, 0xdeadbeef, 3, NULL, NULL), NATIVE_OK);
    ref_process(b, len, 0xdeadbeef, 3);
    CHECK(memcmp(a, b, len) == 0);
    CHECK_RC(native_process(a, len, 1, 0, NULL, NULL), NATIVE_EINVAL);
    CHECK_RC(native_process(NULL, 1, 1, 1, NULL, NULL), NATIVE_EINVAL);
    CHECK_RC(native_process(NULL, 0, 1, 1, NULL, NULL), NATIVE_OK);

    /* Polled every 256 KiB of work across rounds: 2 rounds of 1 MiB = 8 polls; a stop on poll 3 ends it. */
    int polls = 0;
    polls_left = -1;
    CHECK_RC(native_process(a, 1 << 20, 0, 2, count_polls, &polls), NATIVE_OK);
    CHECK(polls == 8);
    polls = 0;
    polls_left = 3;
    CHECK_RC(native_process(a, 1 << 20, 0, 2, count_polls, &polls), NATIVE_ECANCELLED);
    CHECK(polls == 3);
    /* A tiny buffer with many rounds is still polled. */
    polls = 0;
    polls_left = -1;
    CHECK_RC(native_process(a, 16, 0, 65536, count_polls, &polls), NATIVE_OK);
    CHECK(polls == 4);
    free(a);
    free(b);
}

/* ---------------------------------------------------------------- structs, errors, alloc */

static void test_options_and_errors(void)
{
    native_options o;
    native_options_default(&o);
    CHECK(o.create == 1 && o.sync == 0 && o.max_key_size == 1024 && o.max_value_size == 1u << 20 &&
          o.file_mode == 0644);
    native_error err;
    CHECK_RC(native_options_validate(&o, &err), NATIVE_OK);
    struct {
        native_options o;
        const char *field;
    } bad[] = {
        {{2, 0, 1024, 1, 0644}, "create"},
        {{1, -1, 1024, 1, 0644}, "sync"},
        {{1, 0, 0, 1, 0644}, "max_key_size"},
        {{1, 0, NATIVE_MAX_KEY_LIMIT + 1, 1, 0644}, "max_key_size"},
        {{1, 0, 1, 0, 0644}, "max_value_size"},
        {{1, 0, 1, NATIVE_MAX_VALUE_LIMIT + 1, 0644}, "max_value_size"},
        {{1, 0, 1, 1, 01000}, "file_mode"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_RC(native_options_validate(&bad[i].o, &err), NATIVE_EINVAL);
        CHECK(err.code == NATIVE_EINVAL && strstr(err.message, bad[i].field) != NULL);
    }
    CHECK_RC(native_options_validate(NULL, NULL), NATIVE_EINVAL);

    static const char *names[] = {"NATIVE_OK", "NATIVE_ENOTFOUND", "NATIVE_EIO", "NATIVE_ETIMEOUT",
                                  "NATIVE_EPROTOCOL", "NATIVE_ESTATE", "NATIVE_EINVAL", "NATIVE_ENOMEM",
                                  "NATIVE_ECANCELLED", "NATIVE_EDONE"};
    for (int i = 0; i <= NATIVE_EDONE; i++)
        CHECK(strcmp(native_status_name(i), names[i]) == 0);
    CHECK(native_status_name(-1) != NULL && native_status_name(99) != NULL);

    /* Missing directory: EIO carrying the OS errno, op and a readable message; no handle is created. */
    native_db *db = (native_db *)&db;
    CHECK_RC(native_connect(path_in("missing/x.db"), NULL, 0, NULL, NULL, &db, &err), NATIVE_EIO);
    CHECK(db == NULL);
    CHECK(err.code == NATIVE_EIO && err.sys_errno == ENOENT && strcmp(err.op, "connect") == 0);
    CHECK(strcmp(err.message, "open failed: No such file or directory") == 0);
    native_options nocreate;
    native_options_default(&nocreate);
    nocreate.create = 0;
    CHECK_RC(native_connect(path_in("absent.db"), &nocreate, 0, NULL, NULL, &db, &err), NATIVE_EIO);
    CHECK(err.sys_errno == ENOENT);
    CHECK_RC(native_connect(path_in("x.db"), &bad[0].o, 0, NULL, NULL, &db, &err), NATIVE_EINVAL);
    CHECK(strcmp(err.op, "connect") == 0);
    CHECK_RC(native_connect(NULL, NULL, 0, NULL, NULL, &db, NULL), NATIVE_EINVAL);
    CHECK_RC(native_put(NULL, "k", 1, "v", 1, &err), NATIVE_EINVAL);
    CHECK(err.code == NATIVE_EINVAL && strcmp(err.op, "put") == 0);
    CHECK(native_count(NULL) == 0);
    native_close(NULL);
}

/* native_last_error against a model: after any sequence of calls on a handle it is the error of the last call
 * that failed (end of iteration, NATIVE_EDONE, is not a failure, and a success clears nothing). */
static uint32_t lcg_next(uint32_t *state)
{
    *state = *state * 1664525u + 1013904223u;
    return *state >> 8;
}

static void expect_last_error(native_db *db, const native_error *want, int step)
{
    native_error got;
    memset(&got, 0x5a, sizeof got);
    native_last_error(db, &got);
    if (got.code != want->code || got.sys_errno != want->sys_errno || strcmp(got.op, want->op) != 0 ||
        strcmp(got.message, want->message) != 0) {
        fprintf(stderr, "  step %d: last error %s/%s \"%s\", want %s/%s \"%s\"\n", step, native_status_name(got.code),
                got.op, got.message, native_status_name(want->code), want->op, want->message);
        abort();
    }
}

static void test_last_error_model(void)
{
    native_db *db = open_db("last_error.db", NULL);
    native_error want, err;
    memset(&want, 0, sizeof want);
    expect_last_error(db, &want, -1);
    uint32_t rng = 20261206u;
    for (int step = 0; step < 3000; step++) {
        char key[2] = {(char)('a' + lcg_next(&rng) % 4), 0};
        void *v = NULL, *k2 = NULL;
        size_t vn = 0, kn = 0;
        int rc = NATIVE_OK;
        memset(&err, 0, sizeof err);
        /* What errno held before a call is no part of its error: only an OS failure names one. */
        errno = step % 2 ? EACCES : 0;
        switch (lcg_next(&rng) % 12) {
        case 0: rc = native_put(db, key, 1, "value", 5, &err); break;
        case 1: rc = native_put(db, key, 0, "value", 5, &err); break;       /* EINVAL: empty key */
        case 2: rc = native_put(db, key, 1, NULL, 3, &err); break;          /* EINVAL: NULL value */
        case 3: rc = native_get(db, key, 1, &v, &vn, &err); break;          /* OK or ENOTFOUND */
        case 4: rc = native_get(db, key, 1, NULL, &vn, &err); break;        /* EINVAL */
        case 5: rc = native_delete(db, key, 1, &err); break;                /* OK or ENOTFOUND */
        case 6: {                                                           /* a whole pass, ending EDONE */
            uint64_t gen = native_generation(db);
            for (size_t i = 0; (rc = native_item_at(db, i, gen, &k2, &kn, &v, &vn, &err)) == NATIVE_OK; i++) {
                native_free(k2);
                native_free(v);
                v = NULL;
            }
            CHECK_RC(rc, NATIVE_EDONE);
            break;
        }
        case 7: rc = native_item_at(db, 0, native_generation(db) + 1, &k2, &kn, &v, &vn, &err); break; /* ESTATE */
        case 8: rc = native_item_at(db, 0, native_generation(db), NULL, &kn, &v, &vn, &err); break;     /* EINVAL */
        case 9: rc = native_flush(db, &err); break;
        case 10: rc = native_subscribe(db, NULL, NULL, NULL, &err); break;  /* EINVAL */
        default: {                                                          /* no error out-parameter */
            rc = native_unsubscribe(db, 1000000 + (uint64_t)step);
            CHECK_RC(rc, NATIVE_ENOTFOUND);
            native_last_error(db, &err); /* its message names the id: take it, check code and op below */
            CHECK(err.code == NATIVE_ENOTFOUND && strcmp(err.op, "unsubscribe") == 0);
            (void)stats_of(db);
            (void)native_count(db);
            break;
        }
        }
        if (rc == NATIVE_OK && v != NULL)
            native_free(v);
        if (rc != NATIVE_OK && rc != NATIVE_EDONE) {
            CHECK(err.code == rc);
            if (err.code != NATIVE_EIO)
                CHECK(err.sys_errno == 0 && strstr(err.message, strerror(EACCES)) == NULL);
            want = err;
        }
        expect_last_error(db, &want, step);
    }
    native_close(db);
}

static void expect_child_dies(void (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2); /* the abort message (or sanitizer report) is expected; keep output clean */
        fn();
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 0));
}

static void double_free(void)
{
    void *p = native_alloc(8);
    native_free(p);
    native_free(p);
}

static void foreign_free(void)
{
    static max_align_t not_ours[4];
    native_free(&not_ours[2]);
}

static void test_alloc(void)
{
    int64_t before = counters().live_blocks;
    void *a = native_alloc(0), *b = native_alloc(0), *c = native_alloc(100);
    CHECK(a && b && c && a != b);
    CHECK((uintptr_t)c % _Alignof(max_align_t) == 0);
    CHECK(counters().live_blocks == before + 3);
    native_free(a);
    native_free(b);
    native_free(c);
    native_free(NULL);
    CHECK(counters().live_blocks == before);
    /* Sizes whose block header would wrap size_t: no block can hold them, so NULL, never a small block
     * returned as a huge one. (Larger "too big" sizes reach malloc, which ASan refuses loudly by default.) */
    for (size_t k = 0; k < sizeof(max_align_t); k++)
        CHECK(native_alloc(SIZE_MAX - k) == NULL);
    CHECK(counters().live_blocks == before);
    expect_child_dies(double_free);
    expect_child_dies(foreign_free);
}

/* ---------------------------------------------------------------- store */

static void test_store(void)
{
    native_db *db = open_db("basic.db", NULL);
    native_error err;
    CHECK(native_count(db) == 0);
    CHECK(stats_of(db).file_bytes == 20); /* the header alone */
    put_s(db, "k1", "v1");
    put_s(db, "k2", "v2");
    put_s(db, "empty", "");
    CHECK(get_is(db, "k1", "v1") && get_is(db, "k2", "v2") && get_is(db, "empty", ""));
    CHECK(!get_is(db, "nope", NULL));
    native_error last;
    native_last_error(db, &last);
    CHECK(last.code == NATIVE_ENOTFOUND && strcmp(last.op, "get") == 0);
    CHECK_RC(native_delete(db, "k2", 2, &err), NATIVE_OK);
    CHECK_RC(native_delete(db, "k2", 2, &err), NATIVE_ENOTFOUND);
    CHECK(err.code == NATIVE_ENOTFOUND && strcmp(err.op, "delete") == 0);
    put_s(db, "k1", "v1-bis");
    CHECK(get_is(db, "k1", "v1-bis"));
    CHECK(native_count(db) == 2);

    CHECK_RC(native_put(db, "", 0, "v", 1, &err), NATIVE_EINVAL);
    CHECK_RC(native_put(db, NULL, 1, "v", 1, &err), NATIVE_EINVAL);
    CHECK_RC(native_put(db, "k", 1, NULL, 1, &err), NATIVE_EINVAL);
    CHECK_RC(native_put(db, "k", 1, NULL, 0, &err), NATIVE_OK);
    char big[1025];
    memset(big, 'x', sizeof big);
    CHECK_RC(native_put(db, big, 1025, "v", 1, &err), NATIVE_EINVAL);
    CHECK_RC(native_put(db, big, 1024, "v", 1, &err), NATIVE_OK);
    CHECK_RC(native_delete(db, big, 1024, &err), NATIVE_OK);
    CHECK_RC(native_get(db, "k", 1, NULL, NULL, &err), NATIVE_EINVAL);

    native_stats s = stats_of(db);
    struct stat st;
    CHECK(stat(path_in("basic.db"), &st) == 0);
    CHECK(s.keys == 3 && s.puts == 6 && s.deletes == 2 && s.gets == 5 && s.file_bytes == (uint64_t)st.st_size);
    CHECK(s.generation == (uint32_t)native_generation(db) && s.generation == 8);

    /* Cursor: every item once, then EDONE; a mutation invalidates the generation. */
    uint64_t gen = native_generation(db);
    size_t seen = 0;
    char order[3][8];
    for (size_t i = 0;; i++) {
        void *k, *v;
        size_t kl, vl;
        int rc = native_item_at(db, i, gen, &k, &kl, &v, &vl, &err);
        if (rc == NATIVE_EDONE)
            break;
        CHECK_RC(rc, NATIVE_OK);
        CHECK(kl < sizeof order[0]);
        memcpy(order[seen], k, kl);
        order[seen][kl] = 0;
        seen++;
        native_free(k);
        native_free(v);
    }
    CHECK(seen == 3);
    put_s(db, "k3", "v3");
    void *k, *v;
    size_t kl, vl;
    CHECK_RC(native_item_at(db, 0, gen, &k, &kl, &v, &vl, &err), NATIVE_ESTATE);
    CHECK(err.code == NATIVE_ESTATE);
    CHECK_RC(native_delete(db, "k3", 2, &err), NATIVE_OK);

    CHECK_RC(native_flush(db, &err), NATIVE_OK);
    native_debug_set_flush_delay_ms(60);
    int64_t t0 = now_ms();
    CHECK_RC(native_flush(db, &err), NATIVE_OK);
    CHECK(now_ms() - t0 >= 55);
    native_debug_set_flush_delay_ms(0);
    native_close(db);

    /* Reopen: replay rebuilds the same contents in the same order. */
    db = open_db("basic.db", NULL);
    CHECK(native_count(db) == 3 && get_is(db, "k1", "v1-bis") && get_is(db, "empty", "") && !get_is(db, "k2", NULL));
    gen = native_generation(db);
    for (size_t i = 0; i < 3; i++) {
        CHECK_RC(native_item_at(db, i, gen, &k, &kl, &v, &vl, &err), NATIVE_OK);
        CHECK(kl == strlen(order[i]) && memcmp(k, order[i], kl) == 0);
        native_free(k);
        native_free(v);
    }
    native_close(db);

    /* Many keys with interleaved deletes: table growth, backward-shift deletion, swap-remove, replay. */
    native_options o;
    native_options_default(&o);
    o.max_value_size = 16;
    db = open_db("many.db", &o);
    CHECK_RC(native_put(db, "k", 1, big, 17, &err), NATIVE_EINVAL);
    enum { N = 5000 };
    char key[16], val[16];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "key%d", i);
        snprintf(val, sizeof val, "val%d", i);
        put_s(db, key, val);
        if (i % 3 == 0 && i > 0) {
            snprintf(key, sizeof key, "key%d", i / 2);
            native_delete(db, key, strlen(key), NULL);
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        size_t live = 0;
        for (int i = 0; i < N; i++) {
            snprintf(key, sizeof key, "key%d", i);
            snprintf(val, sizeof val, "val%d", i);
            /* step j (a multiple of 3) deleted key j/2, which step j/2 < j had written */
            int deleted = (2 * i % 3 == 0 && 2 * i >= 3 && 2 * i < N) ||
                          ((2 * i + 1) % 3 == 0 && 2 * i + 1 >= 3 && 2 * i + 1 < N);
            CHECK(get_is(db, key, val) == !deleted);
            live += !deleted;
        }
        CHECK(native_count(db) == live);
        native_close(db);
        db = open_db("many.db", &o);
    }
    native_close(db);
}

static void write_file(const char *name, const void *data, size_t n)
{
    int fd = open(path_in(name), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0 && write(fd, data, n) == (ssize_t)n);
    close(fd);
}

static size_t read_file(const char *name, unsigned char *buf, size_t cap)
{
    int fd = open(path_in(name), O_RDONLY);
    CHECK(fd >= 0);
    ssize_t n = read(fd, buf, cap);
    CHECK(n >= 0 && (size_t)n < cap);
    close(fd);
    return (size_t)n;
}

static void expect_protocol(const char *name, const char *needle)
{
    native_db *db = NULL;
    native_error err;
    CHECK_RC(native_connect(path_in(name), NULL, 0, NULL, NULL, &db, &err), NATIVE_EPROTOCOL);
    if (strstr(err.message, needle) == NULL)
        fprintf(stderr, "message %s lacks %s\n", err.message, needle);
    CHECK(db == NULL && strstr(err.message, needle) != NULL);
}

static void test_corruption(void)
{
    native_db *db = open_db("good.db", NULL);
    put_s(db, "alpha", "one");   /* record at 20, 9+5+3+4 = 21 bytes */
    put_s(db, "beta", "two");    /* record at 41, 20 bytes */
    native_close(db);
    unsigned char buf[256];
    size_t n = read_file("good.db", buf, sizeof buf);
    CHECK(n == 61);

    buf[41 + 9 + 4 + 1] ^= 0x40; /* a value byte of the second record */
    write_file("badcrc.db", buf, n);
    expect_protocol("badcrc.db", "checksum at offset 41");
    buf[41 + 9 + 4 + 1] ^= 0x40;

    write_file("trunc.db", buf, n - 2);
    expect_protocol("trunc.db", "truncated record at offset 41");
    write_file("trunchdr.db", buf, 5);
    expect_protocol("trunchdr.db", "offset 0");
    write_file("trunclen.db", buf, 20 + 4);
    expect_protocol("trunclen.db", "truncated record at offset 20");
    /* Cut at a record boundary: every record checksum holds, the header's committed length does not. */
    write_file("truncrec.db", buf, 41);
    expect_protocol("truncrec.db", "truncated log at offset 41 (61 bytes committed)");
    buf[9] ^= 0x01; /* the committed length itself */
    write_file("badhdr.db", buf, n);
    expect_protocol("badhdr.db", "bad header checksum at offset 16");
    buf[9] ^= 0x01;
    /* Bytes after the committed end (a torn append) are not part of the store. */
    memcpy(buf + n, "\x01\x03\x00", 3);
    write_file("tail.db", buf, n + 3);
    db = open_db("tail.db", NULL);
    CHECK(native_count(db) == 2 && stats_of(db).file_bytes == 61);
    native_close(db);
    buf[0] = 'X';
    write_file("magic.db", buf, n);
    expect_protocol("magic.db", "bad magic at offset 0");

    write_file("empty.db", "", 0);
    db = open_db("empty.db", NULL);
    CHECK(native_count(db) == 0 && stats_of(db).file_bytes == 20);
    native_close(db);
    n = read_file("empty.db", buf, sizeof buf);
    CHECK(n == 20 && memcmp(buf, "NKV1\2\0\0\0\24\0\0\0\0\0\0\0", 16) == 0);
}

/* ---------------------------------------------------------------- lock */

static int stop_on_third(void *data)
{
    return ++*(int *)data == 3;
}

static void *connect_forever(void *arg)
{
    native_db *db = NULL;
    native_error err;
    *(int *)arg = native_connect(path_in("lock.db"), NULL, -1, NULL, NULL, &db, &err);
    native_close(db);
    return NULL;
}

static void test_lock(void)
{
    native_db *a = open_db("lock.db", NULL), *b = NULL;
    native_error err;
    /* Two opens in one process are distinct open file descriptions, so flock makes them conflict. */
    CHECK_RC(native_connect(path_in("lock.db"), NULL, 0, NULL, NULL, &b, &err), NATIVE_ETIMEOUT);
    CHECK(b == NULL && err.code == NATIVE_ETIMEOUT && strcmp(err.op, "connect") == 0);
    /* A timeout is a lower bound on the wait, to the µs, and the message reports at least that much. Each
     * wait starts late in a ms of the monotonic clock, where a wait measured with ms-truncated readings is
     * furthest off (its start reads almost 1 ms early): started anywhere, such a wait was on time in 3 of
     * 20 runs of these five timeouts. */
    for (int64_t timeout = 1; timeout <= 61; timeout += 15) {
        int64_t t0;
        do
            t0 = now_us();
        while (t0 % 1000 < 850 || t0 % 1000 >= 950);
        CHECK_RC(native_connect(path_in("lock.db"), NULL, timeout, NULL, NULL, &b, &err), NATIVE_ETIMEOUT);
        int64_t waited_us = now_us() - t0;
        long long reported = -1;
        CHECK(sscanf(strstr(err.message, "gave up after "), "gave up after %lld ms", &reported) == 1);
        if (waited_us < timeout * 1000 || reported < timeout)
            fprintf(stderr, "  timeout %lld ms: waited %lld us, reported %lld ms\n", (long long)timeout,
                    (long long)waited_us, reported);
        CHECK(waited_us >= timeout * 1000 && reported >= timeout && waited_us < 2000000);
    }
    int polls = 0;
    CHECK_RC(native_connect(path_in("lock.db"), NULL, -1, stop_on_third, &polls, &b, &err), NATIVE_ECANCELLED);
    CHECK(polls == 3 && err.code == NATIVE_ECANCELLED);

    int rc = -1;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, connect_forever, &rc) == 0);
    sleep_ms(30);
    native_close(a);
    pthread_join(t, NULL);
    CHECK_RC(rc, NATIVE_OK);
    a = open_db("lock.db", NULL);
    native_close(a);
}

/* ---------------------------------------------------------------- notifier */

struct recorder {
    pthread_mutex_t mu;
    int n;
    native_event ev[8];
    char keys[8][16];
    char vals[8][16];
};

static void record_cb(const native_event *ev, void *ud)
{
    struct recorder *r = ud;
    pthread_mutex_lock(&r->mu);
    if (r->n < 8) {
        r->ev[r->n] = *ev;
        snprintf(r->keys[r->n], 16, "%.*s", (int)ev->klen, (const char *)ev->key);
        snprintf(r->vals[r->n], 16, "%.*s", ev->value ? (int)ev->vlen : 0, ev->value ? (const char *)ev->value : "");
    }
    r->n++;
    pthread_mutex_unlock(&r->mu);
}

static void test_events_basic(void)
{
    native_db *db = open_db("events.db", NULL);
    native_error err;
    put_s(db, "before", "x"); /* nobody listens: not queued */
    struct recorder r = {.mu = PTHREAD_MUTEX_INITIALIZER};
    uint64_t id = 0;
    CHECK_RC(native_subscribe(db, record_cb, &r, &id, &err), NATIVE_OK);
    CHECK(id > 0 && counters().live_subscriptions == 1 && stats_of(db).subscriptions == 1);
    put_s(db, "a", "1");
    put_s(db, "b", "2");
    CHECK_RC(native_delete(db, "a", 1, &err), NATIVE_OK);
    wait_delivered(db, 3);
    CHECK(stats_of(db).events_pending == 0); /* one subscriber: its last call returned, nothing queued */
    pthread_mutex_lock(&r.mu);
    CHECK(r.n == 3);
    CHECK(r.ev[0].kind == NATIVE_EVENT_PUT && r.ev[0].seq == 1 && !strcmp(r.keys[0], "a") && !strcmp(r.vals[0], "1"));
    CHECK(r.ev[1].kind == NATIVE_EVENT_PUT && r.ev[1].seq == 2 && !strcmp(r.keys[1], "b"));
    CHECK(r.ev[2].kind == NATIVE_EVENT_DELETE && r.ev[2].seq == 3 && r.ev[2].value == NULL);
    pthread_mutex_unlock(&r.mu);
    CHECK_RC(native_unsubscribe(db, id), NATIVE_OK);
    CHECK_RC(native_unsubscribe(db, id), NATIVE_ENOTFOUND);
    CHECK(counters().live_subscriptions == 0 && stats_of(db).subscriptions == 0);
    put_s(db, "c", "3");
    sleep_ms(10);
    CHECK(r.n == 3 && stats_of(db).events_delivered == 3);
    native_close(db);
}

/* Subscribe/unsubscribe guarantee against a writer thread that never stops putting. */
struct racer {
    atomic_int in_cb, calls, unsubscribed, violations;
};
static atomic_int writer_stop;

static void racer_cb(const native_event *ev, void *ud)
{
    (void)ev;
    struct racer *r = ud;
    atomic_store(&r->in_cb, 1);
    if (atomic_load(&r->unsubscribed))
        atomic_fetch_add(&r->violations, 1);
    if (atomic_load(&r->calls) % 2) /* widen the window where unsubscribe meets an in-flight call */
        sleep_ms(1);
    atomic_fetch_add(&r->calls, 1);
    atomic_store(&r->in_cb, 0);
}

static void *writer(void *arg)
{
    native_db *db = arg;
    for (unsigned i = 0; !atomic_load(&writer_stop); i++) {
        char k[16];
        snprintf(k, sizeof k, "w%u", i % 64);
        CHECK_RC(native_put(db, k, strlen(k), "v", 1, NULL), NATIVE_OK);
        if (i % 16 == 0)
            sleep_ms(1); /* keep the queue short so unsubscribe hits in-flight calls, not a backlog */
    }
    return NULL;
}

static void test_unsubscribe_race(void)
{
    native_db *db = open_db("race.db", NULL);
    pthread_t t;
    atomic_store(&writer_stop, 0);
    CHECK(pthread_create(&t, NULL, writer, db) == 0);
    int hit_in_flight = 0;
    for (int round = 0; round < 60; round++) {
        struct racer *r = calloc(1, sizeof *r);
        uint64_t id;
        CHECK_RC(native_subscribe(db, racer_cb, r, &id, NULL), NATIVE_OK);
        sleep_ms(round % 4);
        /* Relaxed: a statistic only. A seq_cst load that saw the callback's in_cb = 1 would order this
         * thread after everything the notifier did before calling it, and hide from ThreadSanitizer any
         * notifier state native_unsubscribe reads that the notifier wrote outside its lock. */
        hit_in_flight += atomic_load_explicit(&r->in_cb, memory_order_relaxed);
        CHECK_RC(native_unsubscribe(db, id), NATIVE_OK);
        atomic_store(&r->unsubscribed, 1);
        CHECK(atomic_load(&r->in_cb) == 0);
        int calls = atomic_load(&r->calls);
        sleep_ms(2);
        CHECK(atomic_load(&r->calls) == calls && atomic_load(&r->violations) == 0);
        free(r); /* user_data is no longer referenced: freeing it must be safe (ASan checks) */
    }
    atomic_store(&writer_stop, 1);
    pthread_join(t, NULL);
    CHECK(counters().live_subscriptions == 0);
    if (hit_in_flight == 0)
        fprintf(stderr, "note: no unsubscribe met an in-flight callback this run\n");
    native_close(db);
}

static void wait_flag(atomic_int *f)
{
    int64_t deadline = now_ms() + 10000;
    while (!atomic_load(f)) {
        CHECK(now_ms() < deadline);
        sleep_ms(1);
    }
}

/* Re-entrancy: callbacks call back into the same handle, unsubscribe themselves, close it. */
struct reenter {
    native_db *db;
    uint64_t id;
    atomic_int go, calls, put_rc, get_rc, unsub_rc, after_close_rc, done;
};

static void reenter_cb(const native_event *ev, void *ud)
{
    struct reenter *r = ud;
    atomic_fetch_add(&r->calls, 1);
    if (ev->klen == 4 && memcmp(ev->key, "ping", 4) == 0) {
        void *v;
        size_t n;
        atomic_store(&r->put_rc, native_put(r->db, "pong", 4, "p", 1, NULL));
        int rc = native_get(r->db, "ping", 4, &v, &n, NULL);
        if (rc == NATIVE_OK)
            native_free(v);
        atomic_store(&r->get_rc, rc);
        native_stats s;
        native_stats_get(r->db, &s);
        atomic_store(&r->unsub_rc, native_unsubscribe(r->db, r->id)); /* on the notifier: must not wait */
        atomic_store(&r->done, 1);
    }
}

static void close_cb(const native_event *ev, void *ud)
{
    (void)ev;
    struct reenter *r = ud;
    atomic_fetch_add(&r->calls, 1);
    wait_flag(&r->go); /* the main thread's puts must not race the close (header contract) */
    native_close(r->db);
    /* Deferred teardown: the handle is still valid until we return, and calls fail cleanly. */
    atomic_store(&r->after_close_rc, native_put(r->db, "late", 4, "x", 1, NULL));
    sleep_ms(5);
    atomic_store(&r->done, 1);
}

static void test_reentrancy(void)
{
    native_db *db = open_db("reenter.db", NULL);
    struct reenter r = {.db = db};
    CHECK_RC(native_subscribe(db, reenter_cb, &r, &r.id, NULL), NATIVE_OK);
    put_s(db, "ping", "x");
    wait_flag(&r.done);
    CHECK(atomic_load(&r.put_rc) == NATIVE_OK && atomic_load(&r.get_rc) == NATIVE_OK &&
          atomic_load(&r.unsub_rc) == NATIVE_OK);
    CHECK(get_is(db, "pong", "p"));
    sleep_ms(10); /* the "pong" event had no later subscriber to reach */
    CHECK(atomic_load(&r.calls) == 1 && stats_of(db).subscriptions == 0);
    native_close(db);

    /* Close from inside a callback. */
    int64_t handles = counters().live_handles;
    db = open_db("closecb.db", NULL);
    struct reenter c = {.db = db};
    struct recorder rec = {.mu = PTHREAD_MUTEX_INITIALIZER};
    CHECK_RC(native_subscribe(db, close_cb, &c, &c.id, NULL), NATIVE_OK);
    uint64_t id2;
    CHECK_RC(native_subscribe(db, record_cb, &rec, &id2, NULL), NATIVE_OK);
    CHECK(counters().live_subscriptions == 2);
    put_s(db, "one", "1");
    put_s(db, "two", "2"); /* queued behind; must be dropped, never delivered */
    atomic_store(&c.go, 1);
    wait_flag(&c.done);
    int64_t deadline = now_ms() + 10000;
    while (counters().live_handles != handles) {
        CHECK(now_ms() < deadline);
        sleep_ms(1);
    }
    CHECK(atomic_load(&c.calls) == 1 && atomic_load(&c.after_close_rc) == NATIVE_ESTATE);
    CHECK(rec.n == 0 && counters().live_subscriptions == 0);
    db = open_db("closecb.db", NULL); /* lock released, log intact, the late put did not land */
    CHECK(native_count(db) == 2 && !get_is(db, "late", NULL));
    native_close(db);
}

/* Queue limit, and close from another thread while a callback is blocked. */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered, open, after_close;
    atomic_int calls, late;
};

static void gate_cb(const native_event *ev, void *ud)
{
    (void)ev;
    struct gate *g = ud;
    pthread_mutex_lock(&g->mu);
    if (g->after_close)
        atomic_fetch_add(&g->late, 1);
    g->entered = 1;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    sleep_ms(1);
    atomic_fetch_add(&g->calls, 1);
}

/* Returns once a callback is inside gate_cb (the notifier is stuck there until gate_open). */
static void gate_wait_entered(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->entered)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* Subscribes gate_cb on db and puts key: returns the subscription once the notifier is stuck in it. */
static uint64_t stick_the_notifier(native_db *db, struct gate *g, const char *key)
{
    uint64_t id;
    CHECK_RC(native_subscribe(db, gate_cb, g, &id, NULL), NATIVE_OK);
    put_s(db, key, "x");
    gate_wait_entered(g);
    return id;
}

static void test_queue_and_close(void)
{
    native_db *db = open_db("queue.db", NULL);
    struct gate g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    stick_the_notifier(db, &g, "first");
    /* The notifier is stuck in the first callback: puts must not block, the excess is counted. */
    const unsigned extra = 100;
    int64_t t0 = now_ms();
    for (unsigned i = 0; i < NATIVE_EVENT_QUEUE_LIMIT + extra; i++)
        CHECK_RC(native_put(db, "k", 1, "v", 1, NULL), NATIVE_OK);
    native_stats s = stats_of(db);
    CHECK(s.events_dropped == extra && s.events_delivered == 0);
    /* The one in delivery counts as pending until its callback returns. */
    CHECK(s.events_pending == NATIVE_EVENT_QUEUE_LIMIT + 1u);
    fprintf(stderr, "  %u puts with a stuck notifier took %lld ms\n", NATIVE_EVENT_QUEUE_LIMIT + extra,
            (long long)(now_ms() - t0));

    /* Open the gate and close at once: close waits for the in-flight call, drops the backlog. */
    gate_open(&g);
    native_close(db);
    int calls = atomic_load(&g.calls);
    CHECK(calls >= 1 && calls < 1000);
    pthread_mutex_lock(&g.mu);
    g.after_close = 1;
    pthread_mutex_unlock(&g.mu);
    sleep_ms(10);
    CHECK(atomic_load(&g.calls) == calls && atomic_load(&g.late) == 0);
    CHECK(counters().live_subscriptions == 0);
}

/* Seq numbers make loss visible: every mutation made while someone listens takes the next seq, queued or
 * dropped, so a subscriber sees a gap exactly where events were lost. A model of it: the seqs delivered
 * plus the events dropped are every mutation, and the gaps between delivered seqs are the dropped ones. */
struct seq_log {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered, open;
    uint64_t *seq;
    size_t n, cap;
};

static void seq_log_cb(const native_event *ev, void *ud)
{
    struct seq_log *l = ud;
    pthread_mutex_lock(&l->mu);
    l->entered = 1;
    pthread_cond_broadcast(&l->cv);
    while (!l->open)
        pthread_cond_wait(&l->cv, &l->mu);
    if (l->n < l->cap)
        l->seq[l->n] = ev->seq;
    l->n++;
    pthread_mutex_unlock(&l->mu);
}

static void test_event_seq_shows_loss(void)
{
    native_db *db = open_db("seq.db", NULL);
    enum { EXTRA = 100 };
    const uint64_t burst = 1 + NATIVE_EVENT_QUEUE_LIMIT + EXTRA; /* the stuck one, a full queue, the excess */
    struct seq_log l = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    l.cap = (size_t)burst + 1;
    l.seq = calloc(l.cap, sizeof *l.seq);
    CHECK(l.seq != NULL);
    uint64_t id;
    CHECK_RC(native_subscribe(db, seq_log_cb, &l, &id, NULL), NATIVE_OK);
    put_s(db, "k", "0");
    pthread_mutex_lock(&l.mu);
    while (!l.entered)
        pthread_cond_wait(&l.cv, &l.mu);
    pthread_mutex_unlock(&l.mu);
    for (uint64_t i = 1; i < burst; i++)
        CHECK_RC(native_put(db, "k", 1, "v", 1, NULL), NATIVE_OK);
    pthread_mutex_lock(&l.mu);
    l.open = 1;
    pthread_cond_broadcast(&l.cv);
    pthread_mutex_unlock(&l.mu);
    uint64_t dropped = stats_of(db).events_dropped;
    CHECK(dropped == EXTRA);
    wait_delivered(db, burst - dropped);
    /* One more mutation after the loss: its seq still counts every mutation before it. */
    put_s(db, "k", "after");
    wait_delivered(db, burst - dropped + 1);
    native_stats s = stats_of(db);
    const uint64_t mutations = burst + 1;
    pthread_mutex_lock(&l.mu);
    CHECK(l.n == s.events_delivered && s.events_delivered + s.events_dropped == mutations);
    uint64_t gaps = l.seq[0] - 1;
    for (size_t i = 1; i < l.n; i++) {
        CHECK(l.seq[i] > l.seq[i - 1]);
        gaps += l.seq[i] - l.seq[i - 1] - 1;
    }
    if (l.seq[l.n - 1] != mutations || gaps != s.events_dropped)
        fprintf(stderr, "  last seq %llu of %llu mutations, gaps %llu, dropped %llu\n",
                (unsigned long long)l.seq[l.n - 1], (unsigned long long)mutations, (unsigned long long)gaps,
                (unsigned long long)s.events_dropped);
    CHECK(l.seq[l.n - 1] == mutations && gaps == s.events_dropped);
    pthread_mutex_unlock(&l.mu);
    native_close(db);
    free(l.seq);
}

/* Waits (at most 10 s) for a forked child; it must exit with status 0. */
static void expect_child_exits_0(pid_t pid)
{
    int status = 0;
    int64_t deadline = now_ms() + 10000;
    pid_t got;
    while ((got = waitpid(pid, &status, WNOHANG)) == 0 && now_ms() < deadline)
        sleep_ms(5);
    if (got == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fprintf(stderr, "  forked child: stuck after 10 s\n");
    } else if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        fprintf(stderr, "  forked child: %s %d\n", WIFSIGNALED(status) ? "signal" : "exit status",
                WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    }
    CHECK(got == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A callback that forks: the child's only thread is a copy of the notifier. When the callback returns
 * there, the child's program ends (status 0) instead of going back into a copy of the notifier loop,
 * whether or not it closed its copy of the handle (a close from a callback normally defers the teardown
 * to the loop). */
/* Under LeakSanitizer the child's exit reports what it inherited (the parent's handle, the event in
 * delivery): memory this process never owned, and exactly what it must not free. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifdef UNDER_ASAN
#include <sanitizer/lsan_interface.h>
#define NOT_A_LEAK(p) __lsan_ignore_object(p)
#else
#define NOT_A_LEAK(p) ((void)(p))
#endif

struct forker {
    native_db *db;
    int close_in_child;
    atomic_int child; /* the child's pid, set in the parent */
};

static void fork_cb(const native_event *ev, void *ud)
{
    struct forker *f = ud;
    if (atomic_load(&f->child) != 0)
        return; /* one fork per test */
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t alrm; /* the notifier blocks every signal: let a stuck child die of its alarm */
        sigemptyset(&alrm);
        sigaddset(&alrm, SIGALRM);
        pthread_sigmask(SIG_UNBLOCK, &alrm, NULL);
        signal(SIGALRM, SIG_DFL); /* not the parent's group watchdog: a stuck child dies of the alarm */
        alarm(10);
        NOT_A_LEAK(f->db);
        NOT_A_LEAK(ev);
        if (f->close_in_child)
            native_close(f->db);
        return; /* into the copy of the notifier loop */
    }
    atomic_store(&f->child, pid > 0 ? pid : -1);
}

static void test_fork_in_a_callback(void)
{
    for (int close_in_child = 0; close_in_child < 2; close_in_child++) {
        struct forker f = {.db = open_db("fork-cb.db", NULL), .close_in_child = close_in_child};
        uint64_t id;
        CHECK_RC(native_subscribe(f.db, fork_cb, &f, &id, NULL), NATIVE_OK);
        put_s(f.db, "a", "1");
        put_s(f.db, "b", "2"); /* queued behind the fork: a child back in the loop would deliver it */
        int64_t deadline = now_ms() + 10000;
        while (atomic_load(&f.child) == 0 && now_ms() < deadline)
            sleep_ms(1);
        CHECK(atomic_load(&f.child) > 0);
        expect_child_exits_0(atomic_load(&f.child));
        wait_delivered(f.db, 2);
        native_close(f.db);
    }
}

/* A handle across fork(): the child is a copy of the forking thread only, here with the parent's notifier
 * stuck inside a callback. Every call on the parent's handle fails with NATIVE_ESTATE in the child (an
 * unsubscribe of the in-flight subscription would wait for a thread the child does not have; a put would
 * append to the parent's file at an offset the parent writes over next), close only lets go of it, the
 * store stays locked as long as the parent's handle is open (the child's copy of the descriptor
 * does not keep it locked), and the parent's handle and file are untouched. */
static void test_fork(void)
{
    native_db *db = open_db("fork.db", NULL);
    struct gate g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    const uint64_t id = stick_the_notifier(db, &g, "parent");
    const int64_t handles = counters().live_handles;
    int to_parent[2], to_child[2];
    CHECK(pipe(to_parent) == 0 && pipe(to_child) == 0);
    char byte = 0;

    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(to_parent[0]);
        close(to_child[1]);
        signal(SIGALRM, SIG_DFL); /* not the parent's group watchdog: a stuck child dies of the alarm */
        alarm(10); /* a hang here fails the parent's status check instead of the whole run */
        native_error e;
        void *k, *v;
        size_t kn, vn;
        uint64_t id2;
        native_stats st;
        CHECK_RC(native_put(db, "child", 5, "2", 1, &e), NATIVE_ESTATE);
        CHECK(strcmp(e.op, "put") == 0 && strstr(e.message, "fork()") != NULL);
        CHECK_RC(native_get(db, "parent", 6, &v, &vn, &e), NATIVE_ESTATE);
        CHECK_RC(native_delete(db, "parent", 6, &e), NATIVE_ESTATE);
        CHECK_RC(native_flush(db, &e), NATIVE_ESTATE);
        CHECK_RC(native_item_at(db, 0, 1, &k, &kn, &v, &vn, &e), NATIVE_ESTATE);
        CHECK_RC(native_subscribe(db, gate_cb, &g, &id2, &e), NATIVE_ESTATE);
        CHECK_RC(native_subscribe(db, NULL, NULL, NULL, &e), NATIVE_ESTATE);
        CHECK_RC(native_unsubscribe(db, id), NATIVE_ESTATE);
        CHECK_RC(native_stats_get(db, &st), NATIVE_ESTATE);
        CHECK(native_count(db) == 0 && native_generation(db) == 0);
        native_last_error(db, &e);
        CHECK(e.code == NATIVE_ESTATE && strstr(e.message, "fork()") != NULL);
        native_close(db);
        CHECK(counters().live_handles == handles - 1);
        native_db *again = NULL;
        CHECK_RC(native_connect(path_in("fork.db"), NULL, 0, NULL, NULL, &again, &e), NATIVE_ETIMEOUT);
        CHECK(write(to_parent[1], "c", 1) == 1);
        CHECK(read(to_child[0], &byte, 1) == 1); /* the parent has closed its handle */
        CHECK_RC(native_connect(path_in("fork.db"), NULL, 0, NULL, NULL, &again, &e), NATIVE_OK);
        CHECK(native_count(again) == 2);
        native_close(again);
        /* A handle the child opens is its own. */
        native_db *own = open_db("fork-child.db", NULL);
        put_s(own, "child", "2");
        CHECK(native_count(own) == 1);
        native_close(own);
        _exit(0);
    }
    close(to_parent[1]); /* so that a child that dies reads as end of file, not as a wait forever */
    close(to_child[0]);
    if (read(to_parent[0], &byte, 1) != 1) /* the child has checked its copy, or died */
        expect_child_exits_0(pid);           /* says how it ended and fails */
    gate_open(&g);
    CHECK(counters().live_handles == handles);
    put_s(db, "after", "3");
    wait_delivered(db, 2);
    CHECK(native_count(db) == 2);
    native_close(db);
    CHECK(write(to_child[1], "p", 1) == 1);
    expect_child_exits_0(pid);
    close(to_parent[0]);
    close(to_child[1]);
    db = open_db("fork.db", NULL); /* the file holds the parent's two records and nothing of the child's */
    void *v;
    size_t vn;
    native_error e;
    CHECK(native_count(db) == 2);
    CHECK_RC(native_get(db, "child", 5, &v, &vn, &e), NATIVE_ENOTFOUND);
    CHECK_RC(native_get(db, "after", 5, &v, &vn, &e), NATIVE_OK);
    CHECK(vn == 1 && memcmp(v, "3", 1) == 0);
    native_free(v);
    native_close(db);
}

/* ---------------------------------------------------------------- concurrent calls */

/*
 * Threads share one handle, as the wrapper lets them (it releases the GIL for every call). Each call is
 * one critical section, so: what a get or a cursor returns is what some put wrote, never memory a racing
 * put freed or replaced (ASan sees such a read; without ASan, a reused block fails the value checks);
 * each thread's own keys follow its own model; and the counters add up to every thread's calls.
 */
enum { CC_THREADS = 4, CC_ROUNDS = 2000, CC_OWN = 24, CC_SHARED_MAX = 32768 };

struct cc_thread {
    native_db *db;
    int id;
    unsigned seed;
    int own[CC_OWN]; /* the model of this thread's keys: -1 absent, else the value's length */
    uint64_t puts, deletes;
    unsigned char *buf; /* CC_SHARED_MAX bytes */
};

/* A value that says what it is: len bytes, each `fill` (a thread's letter, or shared_fill(len)). */
static int value_is(const unsigned char *v, size_t n, unsigned char fill)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] != fill)
            return 0;
    return 1;
}

static unsigned char owner_fill(int id) { return (unsigned char)('a' + id); }
static unsigned char shared_fill(size_t n) { return (unsigned char)(1 + n % 251); }

/* Keys: "shared" (every thread puts, gets and deletes it; values up to 32 KiB, so a copy takes a while),
 * or "t<id>-<j>" (only thread id touches it). */
static void cc_check_item(const unsigned char *k, size_t kn, const unsigned char *v, size_t vn)
{
    if (kn == 6 && memcmp(k, "shared", 6) == 0) {
        CHECK(vn >= 1 && vn <= CC_SHARED_MAX && value_is(v, vn, shared_fill(vn)));
    } else {
        CHECK(kn >= 4 && k[0] == 't' && k[1] >= '0' && k[1] < '0' + CC_THREADS && k[2] == '-');
        CHECK(value_is(v, vn, owner_fill(k[1] - '0')));
    }
}

static void *cc_main(void *arg)
{
    struct cc_thread *t = arg;
    unsigned char *buf = t->buf;
    char key[16];
    native_error err;
    for (int round = 0; round < CC_ROUNDS; round++) {
        unsigned r = (unsigned)rand_r(&t->seed);
        int j = (int)(r % CC_OWN);
        int klen = snprintf(key, sizeof key, "t%d-%d", t->id, j);
        void *v = NULL;
        size_t vn = 0;
        switch ((r >> 8) % 7) {
        case 0: { /* replace the shared value: the old block is freed under the lock */
            size_t n = 1 + (size_t)rand_r(&t->seed) % CC_SHARED_MAX;
            memset(buf, shared_fill(n), n);
            CHECK_RC(native_put(t->db, "shared", 6, buf, n, &err), NATIVE_OK);
            t->puts++;
            break;
        }
        case 1: {
            int rc = native_get(t->db, "shared", 6, &v, &vn, &err);
            if (rc == NATIVE_OK) {
                cc_check_item((const unsigned char *)"shared", 6, v, vn);
                native_free(v);
            } else {
                CHECK_RC(rc, NATIVE_ENOTFOUND); /* deleted by another thread */
            }
            break;
        }
        case 2: { /* a small record written, then the (big) value freed: quicker than a get's copy */
            int rc = native_delete(t->db, "shared", 6, &err);
            if (rc == NATIVE_OK)
                t->deletes++;
            else
                CHECK_RC(rc, NATIVE_ENOTFOUND);
            break;
        }
        case 3: { /* an own key: new keys grow the index while others read it */
            size_t n = (r >> 12) % 200;
            memset(buf, owner_fill(t->id), n);
            CHECK_RC(native_put(t->db, key, (size_t)klen, buf, n, &err), NATIVE_OK);
            t->own[j] = (int)n;
            t->puts++;
            break;
        }
        case 4: {
            int rc = native_get(t->db, key, (size_t)klen, &v, &vn, &err);
            if (t->own[j] < 0) {
                CHECK_RC(rc, NATIVE_ENOTFOUND);
            } else {
                CHECK_RC(rc, NATIVE_OK);
                CHECK(vn == (size_t)t->own[j] && value_is(v, vn, owner_fill(t->id)));
                native_free(v);
            }
            if (r & 0x40000) {
                CHECK_RC(native_delete(t->db, key, (size_t)klen, &err), t->own[j] < 0 ? NATIVE_ENOTFOUND : NATIVE_OK);
                t->deletes += t->own[j] >= 0;
                t->own[j] = -1;
            }
            break;
        }
        default: { /* a cursor pass: stops with ESTATE as soon as anyone writes, which is fine */
            uint64_t gen = native_generation(t->db);
            for (size_t i = 0;; i++) {
                void *k = NULL;
                size_t kn = 0;
                int rc = native_item_at(t->db, i, gen, &k, &kn, &v, &vn, &err);
                if (rc == NATIVE_EDONE || rc == NATIVE_ESTATE)
                    break;
                CHECK_RC(rc, NATIVE_OK);
                cc_check_item(k, kn, v, vn);
                native_free(k);
                native_free(v);
            }
            break;
        }
        }
    }
    return NULL;
}

static void test_concurrent_calls(void)
{
    native_db *db = open_db("concurrent.db", NULL);
    struct cc_thread ts[CC_THREADS];
    pthread_t th[CC_THREADS];
    for (int i = 0; i < CC_THREADS; i++) {
        ts[i] = (struct cc_thread){.db = db, .id = i, .seed = 0x5eed + (unsigned)i, .buf = malloc(CC_SHARED_MAX)};
        CHECK(ts[i].buf != NULL);
        for (int j = 0; j < CC_OWN; j++)
            ts[i].own[j] = -1;
        CHECK(pthread_create(&th[i], NULL, cc_main, &ts[i]) == 0);
    }
    uint64_t puts = 0, deletes = 0, keys = 0;
    for (int i = 0; i < CC_THREADS; i++) {
        CHECK(pthread_join(th[i], NULL) == 0);
        free(ts[i].buf);
        puts += ts[i].puts;
        deletes += ts[i].deletes;
        for (int j = 0; j < CC_OWN; j++) {
            char key[16];
            snprintf(key, sizeof key, "t%d-%d", i, j);
            if (ts[i].own[j] < 0) {
                CHECK(!get_is(db, key, NULL));
            } else {
                char want[256];
                memset(want, owner_fill(i), (size_t)ts[i].own[j]);
                want[ts[i].own[j]] = '\0';
                CHECK(get_is(db, key, want));
                keys++;
            }
        }
    }
    void *v;
    size_t vn;
    native_error err;
    int rc = native_get(db, "shared", 6, &v, &vn, &err);
    if (rc == NATIVE_OK) {
        cc_check_item((const unsigned char *)"shared", 6, v, vn);
        native_free(v);
        keys++;
    } else {
        CHECK_RC(rc, NATIVE_ENOTFOUND);
    }
    native_stats s = stats_of(db);
    CHECK(native_count(db) == keys && s.keys == keys && s.puts == puts && s.deletes == deletes);
    CHECK(native_generation(db) == puts + deletes);
    native_close(db);
    /* The file replays to the same store. */
    db = open_db("concurrent.db", NULL);
    CHECK(native_count(db) == keys);
    native_close(db);
}

/* ---------------------------------------------------------------- boundary sweep */

/*
 * Every size, length, count, index, limit and option parameter of native.h, called at and around each boundary
 * its contract documents (or the code implies), against a model of that contract: one table (function,
 * parameter, documented accepted range, outcome inside it, outcome outside it) and one loop.
 *
 * The values tried for a row come from its range [lo, hi], resolved from the options actually in force and the
 * store's current state (max_key_size, max_value_size, count, generation, ...): 0, 1, lo-1, lo, lo+1, hi-1, hi,
 * hi+1, the type's max-1 and max (and min, min+1 for a signed type), UINT32_MAX-1..UINT32_MAX+1 for a 64-bit
 * type, and the row's own extras; a value outside the parameter's type is left out, duplicates once. A value
 * inside the range must give the row's `inside` outcome and the correct result (the call checks it: bytes read
 * back equal, reference checksum/transform, alignment, ...); outside, the documented refusal with the error's
 * code and op, and no change. After every call the store is compared with the model: count, generation,
 * file_bytes, subscriptions, every key's value byte for byte, and a full cursor pass (each item once, EDONE
 * right after), and libnative's live blocks, handles and subscriptions must not move. Store rows run under
 * several option sets (the smallest limits, small ones, the defaults, the hard limits); an accepted value too
 * costly to try (a 1 GiB value, 2^32 - 1 rounds, a 49-day flush delay) is counted as skipped, never guessed.
 * `build/test_native boundary_sweep` runs this group alone; LIBNATIVE_SWEEP_VERBOSE=1 prints every case.
 */

enum ptype { T_I32, T_U32, T_I64, T_LONG, T_U64, T_SIZE };
enum base { B_ABS, B_KEYMAX, B_VALMAX, B_COUNT, B_GEN, B_SUB, B_STORED_KLEN, B_ALLOC_MAX, B_TMAX, B_TMIN };
struct sym {
    enum base base;
    int64_t delta;
};

/* Outcomes besides the NATIVE_* codes, for calls that return no status or whose result is checked. */
enum {
    SW_SKIP = -1,      /* accepted, but too costly to try */
    SW_WRONG = 100,    /* the status was right but the result (bytes, checksum, error struct, ...) was not */
    SW_ANYNAME = 101,  /* native_status_name: a non-NULL name that is none of the ten codes' */
    SW_SETUP = 102,    /* the valid put the call needs first was refused */
};

#define SW_KEY_CAP ((size_t)NATIVE_MAX_KEY_LIMIT + 1)
#define SW_VAL_CAP ((size_t)1 << 20) /* largest value / buffer actually built */
#define SW_POLL_BYTES ((size_t)256 * 1024) /* native_process polls should_stop every 256 KiB of work */
#define SW_CANCEL_MS 20

struct sw_entry {
    unsigned char *k, *v;
    size_t kn, vn;
};

struct sweep {
    native_options o;
    int config;
    native_db *db;
    char name[32];
    /* the model */
    struct sw_entry m[128];
    size_t n;
    uint64_t gen, file_bytes;
    uint32_t subs;
    /* per-row state */
    uint64_t sub_id, step;
    native_db *aux;
    size_t stored_klen;
    unsigned char *kbuf, *vbuf, *vbuf2;
    int64_t t0;
    mode_t umask;
};

static void sw_fill(unsigned char *b, size_t n, uint64_t salt)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(salt * 131 + n * 31 + i * 7 + 1);
}

static struct sw_entry *sw_find(struct sweep *s, const void *k, size_t kn)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->m[i].kn == kn && memcmp(s->m[i].k, k, kn) == 0)
            return &s->m[i];
    return NULL;
}

static void sw_model_put(struct sweep *s, const void *k, size_t kn, const void *v, size_t vn)
{
    struct sw_entry *e = sw_find(s, k, kn);
    if (e == NULL) {
        CHECK(s->n < sizeof s->m / sizeof s->m[0]);
        e = &s->m[s->n++];
        e->k = malloc(kn);
        CHECK(e->k != NULL);
        memcpy(e->k, k, kn);
        e->kn = kn;
    } else {
        free(e->v);
    }
    e->v = malloc(vn ? vn : 1);
    CHECK(e->v != NULL);
    if (vn)
        memcpy(e->v, v, vn);
    e->vn = vn;
    s->gen++;
    s->file_bytes += 9 + kn + vn + 4; /* store.c's record: type, klen, vlen, key, value, crc */
}

static void sw_model_delete(struct sweep *s, const void *k, size_t kn)
{
    struct sw_entry *e = sw_find(s, k, kn);
    CHECK(e != NULL);
    free(e->k);
    free(e->v);
    *e = s->m[--s->n];
    s->gen++;
    s->file_bytes += 9 + kn + 4;
}

static void sw_model_clear(struct sweep *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->m[i].k);
        free(s->m[i].v);
    }
    s->n = 0;
}

/* The model rebuilt from the store (after a mismatch was reported, so that one defect is not reported again
 * at every later step). */
static void sw_model_resync(struct sweep *s)
{
    sw_model_clear(s);
    uint64_t gen = native_generation(s->db);
    size_t count = native_count(s->db);
    for (size_t i = 0; i < count; i++) {
        void *k, *v;
        size_t kn, vn;
        if (native_item_at(s->db, i, gen, &k, &kn, &v, &vn, NULL) != NATIVE_OK)
            break;
        uint64_t fb = s->file_bytes;
        sw_model_put(s, k, kn, v, vn);
        s->file_bytes = fb;
        native_free(k);
        native_free(v);
    }
    native_stats st = stats_of(s->db);
    s->gen = gen;
    s->file_bytes = st.file_bytes;
    s->subs = st.subscriptions;
}

/* Compares the store with the model; returns the number of differences (each printed). */
static int sw_model_check(struct sweep *s, const char *where)
{
    int bad = 0;
#define SW_EXPECT(c, ...)                                                          \
    do {                                                                           \
        if (!(c)) {                                                                \
            fprintf(stderr, "  boundary sweep: after %s: store differs from the model: ", where); \
            fprintf(stderr, __VA_ARGS__);                                          \
            fputc('\n', stderr);                                                   \
            bad++;                                                                 \
        }                                                                          \
    } while (0)
    SW_EXPECT(native_count(s->db) == s->n, "count %zu, model %zu", native_count(s->db), s->n);
    uint64_t gen = native_generation(s->db);
    SW_EXPECT(gen == s->gen, "generation %llu, model %llu", (unsigned long long)gen, (unsigned long long)s->gen);
    native_stats st = stats_of(s->db);
    SW_EXPECT(st.keys == s->n && st.generation == (uint32_t)s->gen && st.file_bytes == s->file_bytes &&
                  st.subscriptions == s->subs,
              "stats keys=%llu generation=%u file_bytes=%llu subscriptions=%u, model %zu %u %llu %u",
              (unsigned long long)st.keys, st.generation, (unsigned long long)st.file_bytes, st.subscriptions, s->n,
              (uint32_t)s->gen, (unsigned long long)s->file_bytes, s->subs);
    for (size_t i = 0; i < s->n; i++) {
        void *v = NULL;
        size_t vn = 0;
        int rc = native_get(s->db, s->m[i].k, s->m[i].kn, &v, &vn, NULL);
        SW_EXPECT(rc == NATIVE_OK && vn == s->m[i].vn && (vn == 0 || memcmp(v, s->m[i].v, vn) == 0),
                  "get of the model's key of %zu bytes: %s, %zu bytes (model %zu)", s->m[i].kn, native_status_name(rc),
                  vn, s->m[i].vn);
        if (rc == NATIVE_OK)
            native_free(v);
    }
    unsigned char seen[sizeof s->m / sizeof s->m[0]] = {0};
    for (size_t i = 0; i <= s->n; i++) {
        void *k = NULL, *v = NULL;
        size_t kn = 0, vn = 0;
        int rc = native_item_at(s->db, i, gen, &k, &kn, &v, &vn, NULL);
        if (i == s->n) {
            SW_EXPECT(rc == NATIVE_EDONE, "item_at(count=%zu): %s, want NATIVE_EDONE", i, native_status_name(rc));
        } else {
            struct sw_entry *e = rc == NATIVE_OK ? sw_find(s, k, kn) : NULL;
            SW_EXPECT(e != NULL && !seen[e - s->m] && e->vn == vn && (vn == 0 || memcmp(e->v, v, vn) == 0),
                      "item_at(%zu): %s, key of %zu bytes %s", i, native_status_name(rc), kn,
                      e == NULL ? "not in the model" : seen[e - s->m] ? "seen twice" : "with another value");
            if (e != NULL)
                seen[e - s->m] = 1;
        }
        if (rc == NATIVE_OK) {
            native_free(k);
            native_free(v);
        }
    }
#undef SW_EXPECT
    return bad;
}

static int sw_err_is(const native_error *err, int rc, const char *op)
{
    return rc == NATIVE_OK || (err->code == rc && strcmp(err->op, op) == 0);
}

/* ---- one call per row: the parameter takes the value v, the others a valid one ---- */

static int sw_put_klen(struct sweep *s, uint64_t v, int in)
{
    unsigned char val = (unsigned char)s->step;
    native_error err;
    sw_fill(s->kbuf, v <= SW_KEY_CAP ? (size_t)v : 0, 0);
    int rc = native_put(s->db, s->kbuf, (size_t)v, &val, 1, &err);
    if (in)
        sw_model_put(s, s->kbuf, (size_t)v, &val, 1);
    return sw_err_is(&err, rc, "put") ? rc : SW_WRONG;
}

static int sw_put_vlen(struct sweep *s, uint64_t v, int in)
{
    if (in && v > SW_VAL_CAP)
        return SW_SKIP;
    native_error err;
    sw_fill(s->vbuf, v <= SW_VAL_CAP ? (size_t)v : 0, s->step);
    int rc = native_put(s->db, "V", 1, s->vbuf, (size_t)v, &err);
    if (in)
        sw_model_put(s, "V", 1, s->vbuf, (size_t)v);
    return sw_err_is(&err, rc, "put") ? rc : SW_WRONG;
}

/* get and delete of a key of v bytes that the store holds (put first, when v is a valid key length). */
static int sw_put_key_of(struct sweep *s, uint64_t v, uint64_t salt)
{
    unsigned char val[3] = {'g', (unsigned char)salt, (unsigned char)s->step};
    size_t vn = s->o.max_value_size < 3 ? s->o.max_value_size : 3;
    sw_fill(s->kbuf, (size_t)v, salt);
    int rc = native_put(s->db, s->kbuf, (size_t)v, val, vn, NULL);
    sw_model_put(s, s->kbuf, (size_t)v, val, vn);
    return rc;
}

static int sw_get_klen(struct sweep *s, uint64_t v, int in)
{
    if (in && sw_put_key_of(s, v, 1) != NATIVE_OK)
        return SW_SETUP;
    if (!in)
        sw_fill(s->kbuf, v <= SW_KEY_CAP ? (size_t)v : 0, 1);
    void *val = NULL;
    size_t vn = 0;
    native_error err;
    int rc = native_get(s->db, s->kbuf, (size_t)v, &val, &vn, &err);
    if (rc != NATIVE_OK)
        return sw_err_is(&err, rc, "get") ? rc : SW_WRONG;
    struct sw_entry *e = sw_find(s, s->kbuf, (size_t)v);
    int right = e != NULL && e->vn == vn && (vn == 0 || memcmp(e->v, val, vn) == 0);
    native_free(val);
    return right ? rc : SW_WRONG;
}

static int sw_delete_klen(struct sweep *s, uint64_t v, int in)
{
    if (in && sw_put_key_of(s, v, 2) != NATIVE_OK)
        return SW_SETUP;
    if (!in)
        sw_fill(s->kbuf, v <= SW_KEY_CAP ? (size_t)v : 0, 2);
    native_error err;
    int rc = native_delete(s->db, s->kbuf, (size_t)v, &err);
    if (in)
        sw_model_delete(s, s->kbuf, (size_t)v);
    return sw_err_is(&err, rc, "delete") ? rc : SW_WRONG;
}

static int sw_item(struct sweep *s, size_t index, uint64_t gen)
{
    void *k = NULL, *v = NULL;
    size_t kn = 0, vn = 0;
    native_error err;
    int rc = native_item_at(s->db, index, gen, &k, &kn, &v, &vn, &err);
    if (rc == NATIVE_EDONE)
        return err.code == NATIVE_EDONE ? rc : SW_WRONG;
    if (rc != NATIVE_OK)
        return sw_err_is(&err, rc, "item_at") ? rc : SW_WRONG;
    struct sw_entry *e = sw_find(s, k, kn);
    int right = e != NULL && e->vn == vn && (vn == 0 || memcmp(e->v, v, vn) == 0);
    native_free(k);
    native_free(v);
    return right ? rc : SW_WRONG;
}

static int sw_item_index(struct sweep *s, uint64_t v, int in)
{
    (void)in;
    return sw_item(s, (size_t)v, s->gen);
}

static int sw_item_generation(struct sweep *s, uint64_t v, int in)
{
    (void)in;
    return sw_item(s, 0, v);
}

static void sw_no_event(const native_event *ev, void *ud)
{
    (void)ev;
    (void)ud;
}

static void sw_subscribe(struct sweep *s)
{
    CHECK_RC(native_subscribe(s->db, sw_no_event, NULL, &s->sub_id, NULL), NATIVE_OK);
    CHECK(s->sub_id > 0);
    s->subs++;
}

static int sw_unsubscribe_id(struct sweep *s, uint64_t v, int in)
{
    int rc = native_unsubscribe(s->db, v);
    if (in)
        s->subs--;
    return rc;
}

/* A second store holding one key of max_key_size bytes, reopened with max_key_size = v. */
static void sw_make_stored_key(struct sweep *s)
{
    snprintf(s->name, sizeof s->name, "sweep-held-%d.db", s->config);
    unlink(path_in(s->name));
    native_db *db = open_db(s->name, &s->o);
    s->stored_klen = s->o.max_key_size;
    sw_fill(s->kbuf, s->stored_klen, 3);
    CHECK_RC(native_put(db, s->kbuf, s->stored_klen, "h", 1, NULL), NATIVE_OK);
    native_close(db);
}

static int sw_reopen_max_key(struct sweep *s, uint64_t v, int in)
{
    (void)in;
    native_options o = s->o;
    o.max_key_size = (uint32_t)v;
    native_db *db = NULL;
    native_error err;
    int rc = native_connect(path_in(s->name), &o, 0, NULL, NULL, &db, &err);
    if (rc != NATIVE_OK)
        return db == NULL && sw_err_is(&err, rc, "connect") ? rc : SW_WRONG;
    void *val = NULL;
    size_t vn = 0;
    sw_fill(s->kbuf, s->stored_klen, 3);
    int right = native_count(db) == 1 && native_get(db, s->kbuf, s->stored_klen, &val, &vn, NULL) == NATIVE_OK &&
                vn == 1 && memcmp(val, "h", 1) == 0;
    native_free(val);
    native_close(db);
    return right ? rc : SW_WRONG;
}

/* ---- rows without a store ---- */

/* A refusal names the field in its message. */
static int sw_options_field(const char *field, const native_options *o)
{
    native_error err;
    int rc = native_options_validate(o, &err);
    if (rc != NATIVE_OK && !(err.code == rc && strstr(err.message, field) != NULL))
        return SW_WRONG;
    return rc;
}

#define SW_OPTION_ROW(field, ctype)                                        \
    static int sw_validate_##field(struct sweep *s, uint64_t v, int in)  \
    {                                                                      \
        (void)in;                                                          \
        native_options o;                                                  \
        native_options_default(&o);                                        \
        o.field = (ctype)v;                                                \
        (void)s;                                                           \
        return sw_options_field(#field, &o);                               \
    }
SW_OPTION_ROW(create, int32_t)
SW_OPTION_ROW(sync, int32_t)
SW_OPTION_ROW(max_key_size, uint32_t)
SW_OPTION_ROW(max_value_size, uint32_t)
SW_OPTION_ROW(file_mode, uint32_t)

/* connect on a path that does not exist yet: a refusal creates no file; an accepted file_mode is the file's
 * mode (less the umask). */
static int sw_connect_with(struct sweep *s, native_options *o, int check_mode)
{
    s->step++;
    char name[48];
    snprintf(name, sizeof name, "sweep-new-%llu.db", (unsigned long long)s->step);
    unlink(path_in(name));
    native_db *db = NULL;
    native_error err;
    int rc = native_connect(path_in(name), o, 0, NULL, NULL, &db, &err);
    struct stat st;
    int exists = stat(path_in(name), &st) == 0;
    if (rc != NATIVE_OK)
        return db == NULL && !exists && sw_err_is(&err, rc, "connect") ? rc : SW_WRONG;
    int right = exists && native_count(db) == 0 &&
                (!check_mode || (st.st_mode & 0777) == (o->file_mode & ~(uint32_t)s->umask & 0777));
    native_close(db);
    unlink(path_in(name));
    return right ? rc : SW_WRONG;
}

#define SW_CONNECT_ROW(field, check_mode)                                 \
    static int sw_connect_##field(struct sweep *s, uint64_t v, int in)   \
    {                                                                     \
        (void)in;                                                         \
        native_options o;                                                 \
        native_options_default(&o);                                       \
        o.field = (uint32_t)v;                                            \
        return sw_connect_with(s, &o, check_mode);                        \
    }
SW_CONNECT_ROW(max_key_size, 0)
SW_CONNECT_ROW(max_value_size, 0)
SW_CONNECT_ROW(file_mode, 1)

static void sw_hold_lock(struct sweep *s)
{
    s->aux = open_db("sweep-lock.db", NULL);
}

static int sw_stop_after(void *data)
{
    return now_ms() - *(int64_t *)data >= SW_CANCEL_MS;
}

static int sw_connect_timeout(struct sweep *s, uint64_t v, int in)
{
    (void)s;
    (void)in;
    native_db *db = NULL;
    native_error err;
    int64_t timeout = (int64_t)v, t0 = now_ms(), t0_us = now_us();
    int rc = native_connect(path_in("sweep-lock.db"), NULL, timeout, sw_stop_after, &t0, &db, &err);
    int64_t waited_us = now_us() - t0_us;
    if (rc == NATIVE_OK) {
        native_close(db);
        return SW_WRONG; /* the lock is held */
    }
    if (rc == NATIVE_ETIMEOUT && timeout > 0 && timeout <= INT64_MAX / 1000 && waited_us < timeout * 1000)
        return SW_WRONG; /* gave up early */
    return db == NULL && sw_err_is(&err, rc, "connect") ? rc : SW_WRONG;
}

static int sw_alloc(struct sweep *s, uint64_t v, int in)
{
    (void)s;
    if (in && v > SW_VAL_CAP)
        return SW_SKIP;
    int64_t before = counters().live_blocks;
    unsigned char *p = native_alloc((size_t)v);
    if (p == NULL)
        return counters().live_blocks == before ? NATIVE_ENOMEM : SW_WRONG;
    if (!in) { /* a block of a size no block can have: touch none of it */
        native_free(p);
        return NATIVE_OK;
    }
    int right = (uintptr_t)p % _Alignof(max_align_t) == 0 && counters().live_blocks == before + 1;
    if (v == 0) { /* a unique block */
        void *q = native_alloc(0);
        right = right && q != NULL && q != (void *)p;
        native_free(q);
    }
    memset(p, 0xa5, (size_t)v);
    native_free(p);
    return right && counters().live_blocks == before ? NATIVE_OK : SW_WRONG;
}

static uint64_t sw_ref_checksum(const unsigned char *p, size_t n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * UINT64_C(0x100000001b3);
    return h;
}

static int sw_checksum_len(struct sweep *s, uint64_t v, int in)
{
    (void)in;
    if (v > SW_VAL_CAP)
        return SW_SKIP;
    sw_fill(s->vbuf, (size_t)v, s->step);
    int right = native_checksum(s->vbuf, (size_t)v) == sw_ref_checksum(s->vbuf, (size_t)v);
    if (v == 0)
        right = right && native_checksum(NULL, 0) == UINT64_C(0xcbf29ce484222325);
    return right ? NATIVE_OK : SW_WRONG;
}

static int sw_count_poll(void *data)
{
    ++*(uint64_t *)data;
    return 0;
}

/* native_process on a buffer of len bytes against ref_process; a refusal leaves the buffer as it was. The
 * stop hook is polled once per 256 KiB of work, across rounds. */
static int sw_process(struct sweep *s, size_t len, uint32_t key, uint32_t rounds)
{
    if ((uint64_t)(len ? len : 1) * rounds > 4 * SW_VAL_CAP) /* e.g. 2^32 - 1 rounds */
        return SW_SKIP;
    sw_fill(s->vbuf, len, s->step);
    memcpy(s->vbuf2, s->vbuf, len);
    uint64_t polls = 0;
    int rc = native_process(s->vbuf, len, key, rounds, sw_count_poll, &polls);
    if (rc != NATIVE_OK)
        return memcmp(s->vbuf, s->vbuf2, len) == 0 ? rc : SW_WRONG;
    ref_process(s->vbuf2, len, key, rounds);
    return memcmp(s->vbuf, s->vbuf2, len) == 0 && polls == (uint64_t)len * rounds / SW_POLL_BYTES ? rc : SW_WRONG;
}

static int sw_process_len(struct sweep *s, uint64_t v, int in)
{
    (void)in;
    return v > SW_VAL_CAP ? SW_SKIP : sw_process(s, (size_t)v, 0xdeadbeefu, 2);
}

static int sw_process_null_len(struct sweep *s, uint64_t v, int in)
{
    (void)s;
    (void)in;
    return native_process(NULL, (size_t)v, 1, 1, NULL, NULL);
}

static int sw_process_rounds(struct sweep *s, uint64_t v, int in)
{
    (void)in;
    return sw_process(s, 16, 0x01020304u, (uint32_t)v);
}

static int sw_process_key(struct sweep *s, uint64_t v, int in)
{
    (void)in;
    return sw_process(s, 300, (uint32_t)v, 1);
}

static void sw_open_flush_store(struct sweep *s)
{
    s->aux = open_db("sweep-flush.db", NULL);
}

static int sw_flush_delay(struct sweep *s, uint64_t v, int in)
{
    (void)in;
    if (v > 50)
        return SW_SKIP;
    native_debug_set_flush_delay_ms((uint32_t)v);
    int64_t t0 = now_us();
    native_error err;
    int rc = native_flush(s->aux, &err);
    int64_t waited_us = now_us() - t0;
    native_debug_set_flush_delay_ms(0);
    return rc == NATIVE_OK && waited_us >= (int64_t)v * 1000 ? rc : SW_WRONG;
}

static int sw_status_name(struct sweep *s, uint64_t v, int in)
{
    (void)s;
    static const char *names[] = {"NATIVE_OK", "NATIVE_ENOTFOUND", "NATIVE_EIO", "NATIVE_ETIMEOUT",
                                  "NATIVE_EPROTOCOL", "NATIVE_ESTATE", "NATIVE_EINVAL", "NATIVE_ENOMEM",
                                  "NATIVE_ECANCELLED", "NATIVE_EDONE"};
    const char *got = native_status_name((int)(int64_t)v);
    if (got == NULL)
        return SW_WRONG;
    if (in)
        return strcmp(got, names[(int64_t)v]) == 0 ? NATIVE_OK : SW_WRONG;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(got, names[i]) == 0)
            return SW_WRONG;
    return SW_ANYNAME;
}

static int sw_add(long a, uint64_t v)
{
    long b = (long)(int64_t)v, out = 12345;
    int rc = native_add(a, b, &out);
    if (rc != NATIVE_OK)
        return out == 12345 ? rc : SW_WRONG;
    long want;
    return !__builtin_add_overflow(a, b, &want) && out == want ? rc : SW_WRONG;
}

static int sw_add_to_max(struct sweep *s, uint64_t v, int in)
{
    (void)s;
    (void)in;
    return sw_add(LONG_MAX, v);
}

static int sw_add_to_min(struct sweep *s, uint64_t v, int in)
{
    (void)s;
    (void)in;
    return sw_add(LONG_MIN, v);
}

/* ---- the table ---- */

struct sw_row {
    const char *fn, *param;
    int per_store; /* run under every option set, against the model of its store */
    enum ptype type;
    struct sym lo, hi; /* the documented accepted range */
    int inside, outside;
    int (*call)(struct sweep *s, uint64_t v, int in);
    void (*prepare)(struct sweep *s);
    int only_extras; /* the standard set does not apply (timeouts: its values are explicit) */
    struct sym extra[10];
};

#define ABS(x) {B_ABS, (int64_t)(x)}
#define KEYMAX(d) {B_KEYMAX, d}
#define VALMAX(d) {B_VALMAX, d}
#define TMAX(d) {B_TMAX, d}
#define TMIN(d) {B_TMIN, d}
#define END {B_TMAX, INT64_MIN} /* ends an extra list */
#define SW_IS_END(y) ((y).base == B_TMAX && (y).delta == INT64_MIN)

static const struct sw_row sw_rows[] = {
    /* the store, under each option set */
    {"native_put", "klen", 1, T_SIZE, ABS(1), KEYMAX(0), NATIVE_OK, NATIVE_EINVAL, sw_put_klen, NULL, 0, {END}},
    {"native_put", "vlen", 1, T_SIZE, ABS(0), VALMAX(0), NATIVE_OK, NATIVE_EINVAL, sw_put_vlen, NULL, 0, {END}},
    {"native_get", "klen", 1, T_SIZE, ABS(1), KEYMAX(0), NATIVE_OK, NATIVE_EINVAL, sw_get_klen, NULL, 0, {END}},
    {"native_delete", "klen", 1, T_SIZE, ABS(1), KEYMAX(0), NATIVE_OK, NATIVE_EINVAL, sw_delete_klen, NULL, 0, {END}},
    {"native_item_at", "index", 1, T_SIZE, ABS(0), {B_COUNT, -1}, NATIVE_OK, NATIVE_EDONE, sw_item_index, NULL, 0,
     {{B_COUNT, -2}, END}},
    {"native_item_at", "generation", 1, T_U64, {B_GEN, 0}, {B_GEN, 0}, NATIVE_OK, NATIVE_ESTATE, sw_item_generation,
     NULL, 0, {END}},
    {"native_unsubscribe", "id", 1, T_U64, {B_SUB, 0}, {B_SUB, 0}, NATIVE_OK, NATIVE_ENOTFOUND, sw_unsubscribe_id,
     sw_subscribe, 0, {END}},
    {"native_connect(store holding a max_key_size key)", "max_key_size", 1, T_U32, {B_STORED_KLEN, 0},
     ABS(NATIVE_MAX_KEY_LIMIT), NATIVE_OK, NATIVE_EINVAL, sw_reopen_max_key, sw_make_stored_key, 0, {END}},
    /* options */
    {"native_options_validate", "create", 0, T_I32, ABS(0), ABS(1), NATIVE_OK, NATIVE_EINVAL, sw_validate_create,
     NULL, 0, {END}},
    {"native_options_validate", "sync", 0, T_I32, ABS(0), ABS(1), NATIVE_OK, NATIVE_EINVAL, sw_validate_sync, NULL,
     0, {END}},
    {"native_options_validate", "max_key_size", 0, T_U32, ABS(1), ABS(NATIVE_MAX_KEY_LIMIT), NATIVE_OK,
     NATIVE_EINVAL, sw_validate_max_key_size, NULL, 0, {END}},
    {"native_options_validate", "max_value_size", 0, T_U32, ABS(1), ABS(NATIVE_MAX_VALUE_LIMIT), NATIVE_OK,
     NATIVE_EINVAL, sw_validate_max_value_size, NULL, 0, {END}},
    {"native_options_validate", "file_mode", 0, T_U32, ABS(0), ABS(0777), NATIVE_OK, NATIVE_EINVAL,
     sw_validate_file_mode, NULL, 0, {ABS(0644), END}},
    {"native_connect", "max_key_size", 0, T_U32, ABS(1), ABS(NATIVE_MAX_KEY_LIMIT), NATIVE_OK, NATIVE_EINVAL,
     sw_connect_max_key_size, NULL, 0, {END}},
    {"native_connect", "max_value_size", 0, T_U32, ABS(1), ABS(NATIVE_MAX_VALUE_LIMIT), NATIVE_OK, NATIVE_EINVAL,
     sw_connect_max_value_size, NULL, 0, {END}},
    {"native_connect", "file_mode", 0, T_U32, ABS(0), ABS(0777), NATIVE_OK, NATIVE_EINVAL, sw_connect_file_mode,
     NULL, 0, {ABS(0400), ABS(0600), ABS(0644), END}},
    /* timeout_ms with the lock held and a stop hook that fires after SW_CANCEL_MS: 0 "do not wait", a short
     * timeout gives up (not early), < 0 and the huge ones wait until the hook stops them */
    {"native_connect(store locked)", "timeout_ms", 0, T_I64, ABS(0), ABS(2), NATIVE_ETIMEOUT, NATIVE_ECANCELLED,
     sw_connect_timeout, sw_hold_lock, 1,
     {TMIN(0), TMIN(1), ABS(-2), ABS(-1), ABS(0), ABS(1), ABS(2), TMAX(-1), TMAX(0), END}},
    /* memory and kernels */
    {"native_alloc", "size", 0, T_SIZE, ABS(0), {B_ALLOC_MAX, 0}, NATIVE_OK, NATIVE_ENOMEM, sw_alloc, NULL, 0,
     {END}},
    {"native_checksum", "len", 0, T_SIZE, ABS(0), TMAX(0), NATIVE_OK, NATIVE_OK, sw_checksum_len, NULL, 0,
     {ABS(2), ABS(3), ABS(4), ABS(8), ABS(255), ABS(256), ABS(257), END}},
    {"native_process", "len", 0, T_SIZE, ABS(0), TMAX(0), NATIVE_OK, NATIVE_OK, sw_process_len, NULL, 0,
     {ABS(3), ABS(4), ABS(5), ABS(255), ABS(256), ABS(257), ABS(SW_POLL_BYTES / 2 - 1), ABS(SW_POLL_BYTES / 2),
      ABS(SW_POLL_BYTES / 2 + 1), END}},
    {"native_process(buf=NULL)", "len", 0, T_SIZE, ABS(0), ABS(0), NATIVE_OK, NATIVE_EINVAL, sw_process_null_len,
     NULL, 0, {END}},
    {"native_process", "rounds", 0, T_U32, ABS(1), TMAX(0), NATIVE_OK, NATIVE_EINVAL, sw_process_rounds, NULL, 0,
     {ABS(2), ABS(255), ABS(256), ABS(257), ABS(SW_POLL_BYTES / 16), END}},
    {"native_process", "key", 0, T_U32, ABS(0), TMAX(0), NATIVE_OK, NATIVE_OK, sw_process_key, NULL, 0,
     {ABS(0xff), ABS(0x100), ABS(0xffff), ABS(0x10000), ABS(0xffffff), ABS(0x1000000), END}},
    {"native_debug_set_flush_delay_ms", "ms", 0, T_U32, ABS(0), TMAX(0), NATIVE_OK, NATIVE_OK, sw_flush_delay,
     sw_open_flush_store, 0, {ABS(2), END}},
    {"native_status_name", "status", 0, T_I32, ABS(NATIVE_OK), ABS(NATIVE_EDONE), NATIVE_OK, SW_ANYNAME,
     sw_status_name, NULL, 0, {END}},
    {"native_add(LONG_MAX, b)", "b", 0, T_LONG, TMIN(0), ABS(0), NATIVE_OK, NATIVE_EINVAL, sw_add_to_max, NULL, 0,
     {END}},
    {"native_add(LONG_MIN, b)", "b", 0, T_LONG, ABS(0), TMAX(0), NATIVE_OK, NATIVE_EINVAL, sw_add_to_min, NULL, 0,
     {END}},
};

#undef KEYMAX
#undef VALMAX

/* ---- values ---- */

static int sw_signed(enum ptype t)
{
    return t == T_I32 || t == T_I64 || t == T_LONG;
}

static void sw_type_range(enum ptype t, int64_t *smin, int64_t *smax, uint64_t *umax)
{
    *smin = t == T_I32 ? INT32_MIN : t == T_LONG ? LONG_MIN : INT64_MIN;
    *smax = t == T_I32 ? INT32_MAX : t == T_LONG ? LONG_MAX : INT64_MAX;
    *umax = t == T_U32 ? UINT32_MAX : t == T_SIZE ? SIZE_MAX : UINT64_MAX;
}

/* The value of a symbol for this row now, as a bit pattern of the parameter's type; 0 if it falls outside. */
static int sw_resolve(const struct sweep *s, enum ptype t, struct sym y, uint64_t *out)
{
    int64_t smin, smax;
    uint64_t umax, base;
    sw_type_range(t, &smin, &smax, &umax);
    switch (y.base) {
    case B_ABS: base = 0; break;
    case B_KEYMAX: base = s->o.max_key_size; break;
    case B_VALMAX: base = s->o.max_value_size; break;
    case B_COUNT: base = s->n; break;
    case B_GEN: base = s->gen; break;
    case B_SUB: base = s->sub_id; break;
    case B_STORED_KLEN: base = s->stored_klen; break;
    case B_ALLOC_MAX: base = SIZE_MAX - sizeof(max_align_t); break; /* larger sizes would wrap the block header */
    case B_TMAX: base = sw_signed(t) ? (uint64_t)smax : umax; break;
    case B_TMIN: base = sw_signed(t) ? (uint64_t)smin : 0; break;
    default: return 0;
    }
    if (sw_signed(t)) {
        int64_t v;
        if (__builtin_add_overflow((int64_t)base, y.delta, &v) || v < smin || v > smax)
            return 0;
        *out = (uint64_t)v;
        return 1;
    }
    uint64_t v;
    if (y.delta >= 0 ? __builtin_add_overflow(base, (uint64_t)y.delta, &v)
                     : __builtin_sub_overflow(base, (uint64_t)(-(y.delta + 1)) + 1, &v))
        return 0;
    if (v > umax)
        return 0;
    *out = v;
    return 1;
}

static int sw_in(enum ptype t, uint64_t v, uint64_t lo, uint64_t hi)
{
    return sw_signed(t) ? (int64_t)v >= (int64_t)lo && (int64_t)v <= (int64_t)hi : v >= lo && v <= hi;
}

static size_t sw_values(const struct sweep *s, const struct sw_row *r, uint64_t *out, size_t cap)
{
    uint64_t lo, hi;
    CHECK(sw_resolve(s, r->type, r->lo, &lo) && sw_resolve(s, r->type, r->hi, &hi));
    struct sym cand[32];
    size_t nc = 0;
    if (!r->only_extras) {
        const struct sym set[] = {ABS(0), ABS(1), TMAX(-1), TMAX(0), TMIN(0), TMIN(1),
                                  ABS(UINT32_MAX - 1), ABS(UINT32_MAX), {B_ABS, (int64_t)UINT32_MAX + 1}};
        for (size_t i = 0; i < sizeof set / sizeof set[0]; i++)
            cand[nc++] = set[i];
        for (int d = -1; d <= 1; d++) {
            cand[nc++] = (struct sym){r->lo.base, r->lo.delta + d};
            cand[nc++] = (struct sym){r->hi.base, r->hi.delta + d};
        }
    }
    for (size_t i = 0; !SW_IS_END(r->extra[i]); i++)
        cand[nc++] = r->extra[i];
    size_t n = 0;
    for (size_t i = 0; i < nc; i++) {
        uint64_t v;
        if ((cand[i].base == B_TMIN && !sw_signed(r->type)) || !sw_resolve(s, r->type, cand[i], &v))
            continue;
        size_t j = 0;
        while (j < n && out[j] != v)
            j++;
        if (j == n) {
            CHECK(n < cap);
            out[n++] = v;
        }
    }
    return n;
}

static const char *sw_outcome(int rc)
{
    return rc == SW_WRONG    ? "a wrong result"
           : rc == SW_ANYNAME ? "an unknown code's name"
           : rc == SW_SETUP   ? "a refusal of the valid put before it"
                              : native_status_name(rc);
}

static int sw_open_store(struct sweep *s)
{
    snprintf(s->name, sizeof s->name, "sweep-%d.db", s->config);
    unlink(path_in(s->name));
    s->db = open_db(s->name, &s->o);
    s->n = 0;
    s->gen = 0;
    s->subs = 0;
    s->file_bytes = stats_of(s->db).file_bytes;
    /* two keys to begin with (a value of min(3, max_value_size) bytes), so that the cursor has a count - 1 */
    int bad = 0;
    for (int i = 0; i < 2; i++) {
        size_t kn = i ? s->o.max_key_size : 1;
        int rc = sw_put_key_of(s, kn, 7 + (uint64_t)i);
        if (rc != NATIVE_OK) {
            fprintf(stderr, "  boundary sweep: seeding a key of %zu bytes (max_key_size=%u max_value_size=%u): %s\n", kn,
                    s->o.max_key_size, s->o.max_value_size, native_status_name(rc));
            bad++;
        }
    }
    if (bad)
        sw_model_resync(s);
    return bad;
}

static void test_boundary_sweep(void)
{
    int64_t t0 = now_us();
    struct sweep s;
    memset(&s, 0, sizeof s);
    s.kbuf = malloc(SW_KEY_CAP);
    s.vbuf = malloc(4 * SW_VAL_CAP + 1);
    s.vbuf2 = malloc(4 * SW_VAL_CAP + 1);
    CHECK(s.kbuf && s.vbuf && s.vbuf2);
    s.umask = umask(0);
    umask(s.umask);
    /* the smallest limits, small ones, the defaults, and the hard limits (where a value of max_value_size bytes is
     * too costly: refusals and small values only) */
    const uint32_t configs[][2] = {{1, 1}, {8, 64}, {1024, 1u << 20}, {NATIVE_MAX_KEY_LIMIT, NATIVE_MAX_VALUE_LIMIT}};
    size_t nconfigs = sizeof configs / sizeof configs[0];
    int failures = 0, cases = 0, skipped = 0;
    const char *env = getenv("LIBNATIVE_SWEEP_VERBOSE"); /* =1: print every case and its outcome */
    int verbose = env != NULL && strcmp(env, "1") == 0;
    for (size_t c = 0; c < nconfigs; c++) {
        native_options_default(&s.o);
        s.o.max_key_size = configs[c][0];
        s.o.max_value_size = configs[c][1];
        s.config = (int)c;
        failures += sw_open_store(&s);
        char store_name[32];
        snprintf(store_name, sizeof store_name, "%s", s.name);
        for (size_t ri = 0; ri < sizeof sw_rows / sizeof sw_rows[0]; ri++) {
            const struct sw_row *r = &sw_rows[ri];
            if (!r->per_store && c > 0)
                continue;
            if (r->prepare != NULL)
                r->prepare(&s);
            uint64_t vals[40], lo, hi;
            size_t nv = sw_values(&s, r, vals, sizeof vals / sizeof vals[0]);
            CHECK(sw_resolve(&s, r->type, r->lo, &lo) && sw_resolve(&s, r->type, r->hi, &hi));
            for (size_t i = 0; i < nv; i++) {
                uint64_t v = vals[i];
                int in = sw_in(r->type, v, lo, hi), want = in ? r->inside : r->outside;
                native_debug_counters before = counters();
                s.step++;
                int got = r->call(&s, v, in);
                if (got == SW_SKIP) {
                    skipped++;
                    continue;
                }
                cases++;
                char where[256];
                int at = snprintf(where, sizeof where, sw_signed(r->type) ? "%s(%s=%lld) [accepts %lld..=%lld"
                                                                          : "%s(%s=%llu) [accepts %llu..=%llu",
                                  r->fn, r->param, (unsigned long long)v, (unsigned long long)lo,
                                  (unsigned long long)hi);
                if (at > 0 && (size_t)at < sizeof where)
                    snprintf(where + at, sizeof where - (size_t)at, r->per_store ? "; max_key_size=%u max_value_size=%u]" : "]",
                             s.o.max_key_size, s.o.max_value_size);
                if (verbose)
                    fprintf(stderr, "    %s: %s\n", where, sw_outcome(got));
                if (got != want) {
                    fprintf(stderr, "  boundary sweep: %s: %s, want %s\n", where, sw_outcome(got), sw_outcome(want));
                    failures++;
                }
                native_debug_counters after = counters();
                if (after.live_blocks != before.live_blocks || after.live_handles != before.live_handles ||
                    after.live_subscriptions != before.live_subscriptions - (r->call == sw_unsubscribe_id && in)) {
                    fprintf(stderr, "  boundary sweep: %s: live blocks/handles/subscriptions %lld/%lld/%lld -> %lld/%lld/%lld\n",
                            where, (long long)before.live_blocks, (long long)before.live_handles,
                            (long long)before.live_subscriptions, (long long)after.live_blocks,
                            (long long)after.live_handles, (long long)after.live_subscriptions);
                    failures++;
                }
                int bad = sw_model_check(&s, where);
                if (bad) {
                    failures += bad;
                    sw_model_resync(&s);
                }
            }
            if (s.aux != NULL) {
                native_close(s.aux);
                s.aux = NULL;
            }
            snprintf(s.name, sizeof s.name, "%s", store_name);
        }
        /* The records written at the boundaries replay to the same store. */
        native_close(s.db);
        s.db = open_db(s.name, &s.o);
        s.gen = native_generation(s.db);
        char where[64];
        snprintf(where, sizeof where, "reopening the store of K=%u V=%u", s.o.max_key_size, s.o.max_value_size);
        failures += sw_model_check(&s, where);
        native_close(s.db);
        s.db = NULL;
        sw_model_clear(&s);
    }
    free(s.kbuf);
    free(s.vbuf);
    free(s.vbuf2);
    fprintf(stderr, "  boundary sweep: %d rows, %d cases checked, %d skipped (too costly to accept), %d failures, %lld ms\n",
            (int)(sizeof sw_rows / sizeof sw_rows[0]), cases, skipped, failures, (long long)((now_us() - t0) / 1000));
    CHECK(failures == 0);
}

/* A group still running after GROUP_LIMIT_S has hung (a lock never released, a join that never
 * returns): say which one and abort, instead of waiting for the caller's own timeout. */
enum { GROUP_LIMIT_S = 60 };
static const char *volatile g_group = "start-up";

static void group_hung(int sig)
{
    (void)sig;
    static const char msg[] = "libnative self-test: a group still runs after its time limit (a hang): ";
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    ignored = write(2, (const char *)g_group, strlen((const char *)g_group));
    ignored = write(2, "\n", 1);
    (void)ignored;
    abort();
}

/* With arguments, runs only the groups they name (e.g. `build/test_native boundary_sweep`). */
int main(int argc, char **argv)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/libnative-test-XXXXXX");
    CHECK(mkdtemp(g_dir) != NULL);
    native_debug_counters start = counters();
    CHECK(start.live_handles == 0 && start.live_subscriptions == 0 && start.live_blocks == 0);

    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"compute", test_compute},
        {"options_and_errors", test_options_and_errors},
        {"last_error_model", test_last_error_model},
        {"alloc", test_alloc},
        {"store", test_store},
        {"corruption", test_corruption},
        {"lock", test_lock},
        {"events_basic", test_events_basic},
        {"unsubscribe_race", test_unsubscribe_race},
        {"reentrancy", test_reentrancy},
        {"queue_and_close", test_queue_and_close},
        {"event_seq_shows_loss", test_event_seq_shows_loss},
        {"concurrent_calls", test_concurrent_calls},
        {"fork", test_fork},
        {"fork_in_a_callback", test_fork_in_a_callback},
        {"boundary_sweep", test_boundary_sweep},
    };
    signal(SIGALRM, group_hung);
    size_t ran = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int chosen = argc < 2;
        for (int a = 1; a < argc; a++)
            chosen = chosen || strcmp(argv[a], tests[i].name) == 0;
        if (!chosen)
            continue;
        ran++;
        fprintf(stderr, "test %s\n", tests[i].name);
        g_group = tests[i].name;
        alarm(GROUP_LIMIT_S);
        tests[i].fn();
    }
    alarm(0);
    signal(SIGALRM, SIG_DFL);

    native_debug_counters end = counters();
    CHECK(end.live_handles == 0 && end.live_subscriptions == 0 && end.live_blocks == 0);
    /* debug_counters_get is not an entry point for `calls`; native_add is exactly one. */
    CHECK(counters().calls == end.calls);
    long out;
    native_add(1, 2, &out);
    CHECK(counters().calls == end.calls + 1);

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    CHECK(system(cmd) == 0);
    CHECK(ran == (size_t)(argc < 2 ? (int)(sizeof tests / sizeof tests[0]) : argc - 1)); /* no unknown name */
    printf("libnative self-test: all %zu groups passed (%lld calls)\n", ran, (long long)end.calls);
    return 0;
}
