"""The comparison-tracing shim: lets libFuzzer see the target's comparisons.

An extension built with ``-fsanitize=fuzzer-no-link`` reports every integer comparison, switch and
division (``__sanitizer_cov_trace_cmp*`` ...), and ASan's interceptors report ``memcmp``/``strcmp``...
through ``__sanitizer_weak_hook_*``. Those calls resolve to the first definition in the process's
global scope: clang's preloaded ASan runtime, whose definitions are no-ops. libFuzzer's own are
inside the engine (local to it). This shim, preloaded *before* the ASan runtime
(``verify_asan_link_order=0``), defines them all and forwards each call to the pointer the engine
installs at start-up (``ffi_harness_cmp_hooks``); until then they do nothing. Forwarding is a tail
call (``musttail``), so libFuzzer still sees the instrumented caller's return address.

Compiled on first use with the clang that provides the ASan runtime, cached per clang and source.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from ffi_harness import sanitizers

SOURCE = r"""
#include <stddef.h>
#include <stdint.h>
#define EXPORT __attribute__((visibility("default")))

struct ffi_harness_cmp_hooks {
    void (*cmp1)(uint8_t, uint8_t);
    void (*cmp2)(uint16_t, uint16_t);
    void (*cmp4)(uint32_t, uint32_t);
    void (*cmp8)(uint64_t, uint64_t);
    void (*const_cmp1)(uint8_t, uint8_t);
    void (*const_cmp2)(uint16_t, uint16_t);
    void (*const_cmp4)(uint32_t, uint32_t);
    void (*const_cmp8)(uint64_t, uint64_t);
    void (*cmp_switch)(uint64_t, uint64_t *);
    void (*div4)(uint32_t);
    void (*div8)(uint64_t);
    void (*gep)(uintptr_t);
    void (*pc_indir)(uintptr_t);
    void (*memcmp)(void *, const void *, const void *, size_t, int);
    void (*strncmp)(void *, const char *, const char *, size_t, int);
    void (*strcmp)(void *, const char *, const char *, int);
    void (*strncasecmp)(void *, const char *, const char *, size_t, int);
    void (*strcasecmp)(void *, const char *, const char *, int);
    void (*strstr)(void *, const char *, const char *, char *);
    void (*strcasestr)(void *, const char *, const char *, char *);
    void (*memmem)(void *, const void *, size_t, const void *, size_t, void *);
};

EXPORT struct ffi_harness_cmp_hooks ffi_harness_cmp_hooks;

#define FWD2(name, field, T) \
    EXPORT void name(T a, T b) { \
        if (ffi_harness_cmp_hooks.field) __attribute__((musttail)) return ffi_harness_cmp_hooks.field(a, b); \
    }
#define FWD1(name, field, T) \
    EXPORT void name(T a) { \
        if (ffi_harness_cmp_hooks.field) __attribute__((musttail)) return ffi_harness_cmp_hooks.field(a); \
    }

FWD2(__sanitizer_cov_trace_cmp1, cmp1, uint8_t)
FWD2(__sanitizer_cov_trace_cmp2, cmp2, uint16_t)
FWD2(__sanitizer_cov_trace_cmp4, cmp4, uint32_t)
FWD2(__sanitizer_cov_trace_cmp8, cmp8, uint64_t)
FWD2(__sanitizer_cov_trace_const_cmp1, const_cmp1, uint8_t)
FWD2(__sanitizer_cov_trace_const_cmp2, const_cmp2, uint16_t)
FWD2(__sanitizer_cov_trace_const_cmp4, const_cmp4, uint32_t)
FWD2(__sanitizer_cov_trace_const_cmp8, const_cmp8, uint64_t)
FWD1(__sanitizer_cov_trace_div4, div4, uint32_t)
FWD1(__sanitizer_cov_trace_div8, div8, uint64_t)
FWD1(__sanitizer_cov_trace_gep, gep, uintptr_t)
FWD1(__sanitizer_cov_trace_pc_indir, pc_indir, uintptr_t)

EXPORT void __sanitizer_cov_trace_switch(uint64_t v, uint64_t *cases) {
    if (ffi_harness_cmp_hooks.cmp_switch) __attribute__((musttail)) return ffi_harness_cmp_hooks.cmp_switch(v, cases);
}
EXPORT void __sanitizer_weak_hook_memcmp(void *pc, const void *a, const void *b, size_t n, int r) {
    if (ffi_harness_cmp_hooks.memcmp) ffi_harness_cmp_hooks.memcmp(pc, a, b, n, r);
}
EXPORT void __sanitizer_weak_hook_strncmp(void *pc, const char *a, const char *b, size_t n, int r) {
    if (ffi_harness_cmp_hooks.strncmp) ffi_harness_cmp_hooks.strncmp(pc, a, b, n, r);
}
EXPORT void __sanitizer_weak_hook_strcmp(void *pc, const char *a, const char *b, int r) {
    if (ffi_harness_cmp_hooks.strcmp) ffi_harness_cmp_hooks.strcmp(pc, a, b, r);
}
EXPORT void __sanitizer_weak_hook_strncasecmp(void *pc, const char *a, const char *b, size_t n, int r) {
    if (ffi_harness_cmp_hooks.strncasecmp) ffi_harness_cmp_hooks.strncasecmp(pc, a, b, n, r);
}
EXPORT void __sanitizer_weak_hook_strcasecmp(void *pc, const char *a, const char *b, int r) {
    if (ffi_harness_cmp_hooks.strcasecmp) ffi_harness_cmp_hooks.strcasecmp(pc, a, b, r);
}
EXPORT void __sanitizer_weak_hook_strstr(void *pc, const char *a, const char *b, char *r) {
    if (ffi_harness_cmp_hooks.strstr) ffi_harness_cmp_hooks.strstr(pc, a, b, r);
}
EXPORT void __sanitizer_weak_hook_strcasestr(void *pc, const char *a, const char *b, char *r) {
    if (ffi_harness_cmp_hooks.strcasestr) ffi_harness_cmp_hooks.strcasestr(pc, a, b, r);
}
EXPORT void __sanitizer_weak_hook_memmem(void *pc, const void *a, size_t n, const void *b, size_t m, void *r) {
    if (ffi_harness_cmp_hooks.memmem) ffi_harness_cmp_hooks.memmem(pc, a, n, b, m, r);
}
"""


def build() -> tuple[Path | None, str]:
    """The shim's path (compiling it if needed), or None and the reason it is unavailable."""
    clang = sanitizers.find_clang()
    if clang is None:
        return None, "no clang to build the comparison-tracing shim"
    digest = hashlib.sha1((clang + SOURCE).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ffi-harness"
    out = cache / f"cmpshim-{digest}.so"
    if out.is_file():
        return out, ""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        src = cache / f"cmpshim-{digest}.c"
        src.write_text(SOURCE)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        p = subprocess.run(
            [clang, "-shared", "-fPIC", "-O2", "-o", str(tmp), str(src)], capture_output=True, text=True, check=False
        )
        if p.returncode != 0:
            return None, f"the comparison-tracing shim did not compile: {p.stderr.strip()[-300:]}"
        os.replace(tmp, out)
    except OSError as e:
        return None, f"the comparison-tracing shim could not be built: {e}"
    return out, ""


def engine_env(env: dict[str, str]) -> tuple[dict[str, str], str]:
    """`env` (already holding the ASan runtime in LD_PRELOAD) with the shim preloaded before it."""
    shim, why = build()
    if shim is None:
        return env, why
    out = dict(env)
    out["LD_PRELOAD"] = ":".join([str(shim), *filter(None, env.get("LD_PRELOAD", "").split(":"))])
    opts = out.get("ASAN_OPTIONS", "")
    out["ASAN_OPTIONS"] = f"{opts}:verify_asan_link_order=0" if opts else "verify_asan_link_order=0"
    return out, ""
