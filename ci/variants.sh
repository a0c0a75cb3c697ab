# Builds of the `native` wrapper in the variants the bug detectors need, staged outside every venv
# (sourced by ci/sanitize, ci/valgrind, ci/gil-check and mutants/detectors.sh, after ci/lib.sh):
#   release  optimised, as shipped                      (valgrind, the mutant runner's pytest)
#   debug    dev profile against Debian's python3.11d   (gil-check: debug_assertions => the trampoline
#            asserts PyGILState_Check; CPython's own Py_DEBUG checks: negative refcounts, GIL, 0xDD fill)
#   asan     release, Rust side -Zsanitizer=address, C side clang-19 -fsanitize=address,undefined
#            (sanitize; runs under clang-19's ASan runtime, LD_PRELOADed into the interpreter)
# `maturin build` writes a wheel that is unzipped into <target>/variants/<name>/site: put that directory
# first on PYTHONPATH and `import native` gives this build. Never `maturin develop` here: the editable
# install writes the extension into wrapper/python/native/, which would clobber .venv's build.
# Each variant has its own cargo target dir (RUSTFLAGS differ), so every one rebuilds incrementally.

variants_dir="${CARGO_TARGET_DIR:-$root/target}/variants"
ASAN_RT=${ASAN_RT:-$(clang-19 -print-file-name=libclang_rt.asan-x86_64.so 2>/dev/null || true)}
ASAN_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
PY_DEBUG="$root/.venv-debug/bin/python"
# Freed blocks' first 4 KiB filled with 0x55: a use after free by code ASan does not instrument (libc's
# open() reading a dead path) sees garbage, not the old bytes (harness/src/fuzz_target.rs ASAN_FREE_FILL).
ASAN_FREE_FILL="max_free_fill_size=4096"

# .venv-debug: python3.11d (Debian's debug CPython: Py_DEBUG, sys.gettotalrefcount) with pytest.
# Only an interpreter: nothing of this project is ever installed into it (builds are staged).
ensure_venv_debug() {
  local dbg=${FFI_HARNESS_DEBUG_PYTHON:-python3.11d}
  if [ ! -x "$PY_DEBUG" ]; then
    "$dbg" -m venv "$root/.venv-debug" >&2
  fi
  if [ ! -f "$root/.venv-debug/.pytest-stamp" ]; then
    "$PY_DEBUG" -m pip install -q --disable-pip-version-check 'pytest>=8' >&2
    touch "$root/.venv-debug/.pytest-stamp"
  fi
}

# stage_wrapper <variant>: builds the wrapper variant; prints the site directory to put on PYTHONPATH.
stage_wrapper() {
  local variant=$1 out="$variants_dir/$1"
  local -a args=(-m wrapper/Cargo.toml -o "$out/wheels" --auditwheel skip)
  local -a env=(CARGO_TARGET_DIR="$out/cargo")
  case "$variant" in
    release) args+=(--release --interpreter "$PY") ;;
    debug) ensure_venv_debug; args+=(--interpreter "$PY_DEBUG") ;;
    asan)
      # --target keeps RUSTFLAGS off build scripts and proc macros (they cannot be instrumented).
      args+=(--release --interpreter "$PY" --target x86_64-unknown-linux-gnu)
      env+=(RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address -Cforce-frame-pointers=yes"
            NATIVE_CC=clang-19 NATIVE_CFLAGS="$ASAN_CFLAGS")
      ;;
    *) echo "stage_wrapper: unknown variant $variant" >&2; return 2 ;;
  esac
  rm -rf "$out/wheels"
  mkdir -p "$out"
  if ! env "${env[@]}" "$root/.venv/bin/maturin" build "${args[@]}" >"$out/build.log" 2>&1; then
    tail -n 40 "$out/build.log" >&2
    echo "stage_wrapper: the $variant build failed (full log: $out/build.log)" >&2
    return 1
  fi
  rm -rf "$out/site"
  "$PY" -m zipfile -e "$out"/wheels/native-*.whl "$out/site"
  echo "$out/site"
}

# The pytest options every detector shares: the guard plugin (ci/pytest_guard.py) fails a test whose
# captured output shows a Rust panic, a sanitizer report or a fatal interpreter error, and unexpected
# unraisable exceptions or exceptions in threads fail the test that produced them.
PYTEST_GUARD=(-p pytest_guard -p no:cacheprovider
              -W error::pytest.PytestUnraisableExceptionWarning
              -W error::pytest.PytestUnhandledThreadExceptionWarning)
# FFI_HARNESS_TEST_TIMEOUT: per-test watchdog of the guard plugin, replacing pytest's faulthandler_timeout.
[ -z "${FFI_HARNESS_TEST_TIMEOUT:-}" ] || PYTEST_GUARD+=(-o faulthandler_timeout=0)
# FFI_HARNESS_PYTEST_ARGS: extra pytest options for every detector run (ci/mutants passes -x).
# shellcheck disable=SC2206 # word splitting wanted
PYTEST_GUARD+=(${FFI_HARNESS_PYTEST_ARGS:-})
export PYTHONPATH_GUARD="$root/ci"
