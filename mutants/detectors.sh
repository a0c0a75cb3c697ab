# The detector registry of ci/mutants (sourced). Each detector runs inside a tree (the scratch copy with
# one mutant applied) and exits non-zero on a finding; ci/mutants runs them fast ones first, each under
# a watchdog (a detector still running after its timeout is killed, and a hang counts as a catch:
# "watchdog"). Every detector is a plain ci/ script, so what catches a mutant is what CI runs.
#
#   name        what runs (in the tree)                                              timeout (s)
#   pytest      C self-test + the whole pytest suite on the release wrapper, -x      300
#   cargo-test  cargo test -p libnative-sys -p native (layout check vs native.h, units) 300
#   leak-hunt   ci/leak-hunt (regrtest -R style, debug + release CPython)            900
#   gil-check   ci/gil-check: python3.11d + debug wrapper, PYTHONMALLOC=debug, -X dev 420
#   proptests   cargo test -p proptests (leak hunt excluded: see leak-hunt)           600
#   sanitize    ci/sanitize: ASan/UBSan C self-test + pytest (proptests under ASan
#               only with FFI_HARNESS_SANITIZE_PROPTESTS=1)                            600
#   fuzz-smoke  ci/fuzz-smoke with FUZZ_SECONDS=${MUTANTS_FUZZ_SECONDS:-20} per target 1200
#   valgrind    ci/valgrind: memcheck over the pytest subset                          900
#   ffi-test    ffi-harness test --leaks on the pytest suite (release wrapper and CPython):
#               per-test LEAK (blocks, gc objects, fds, threads, native ledger) / CRASH / HANG 1200
# To add one: append its name to DETECTORS, give it a timeout and a det_<name> function (dashes
# become underscores), and make det_available answer for it.

DETECTORS=(pytest cargo-test leak-hunt gil-check proptests sanitize fuzz-smoke valgrind ffi-test)

declare -A DETECTOR_TIMEOUT=(
  [pytest]=300 [cargo-test]=300 [gil-check]=420 [proptests]=600 [sanitize]=600
  [leak-hunt]=900 [fuzz-smoke]=1200 [valgrind]=900 [ffi-test]=1200
)

# det_available <name>: is this detector present in the tree (cwd)?
det_available() {
  case "$1" in
    proptests) [ -d proptests ] ;;
    leak-hunt) [ -x ci/leak-hunt ] ;;
    fuzz-smoke) [ -x ci/fuzz-smoke ] && [ -d fuzz/fuzz_targets ] ;;
    ffi-test) [ -f cli/python/ffi_harness/testrun.py ] ;;
    pytest | cargo-test | gil-check | sanitize | valgrind) return 0 ;;
    *) return 1 ;;
  esac
}

det_pytest() {
  source ci/lib.sh
  source ci/variants.sh
  make -s -C libnative >/dev/null
  make -s -C libnative test
  local site
  site=$(stage_wrapper release)
  PYTHONPATH="$site:$PYTHONPATH_GUARD" "$PY" -m pytest pytests -x -q "${PYTEST_GUARD[@]}"
}

det_cargo_test() {
  source ci/lib.sh
  PYO3_PYTHON="$PY" cargo test -q -p libnative-sys -p native
}

det_gil_check() { ci/gil-check; }

det_proptests() {
  source ci/lib.sh
  PYO3_PYTHON="$PY" cargo test -q -p proptests -- --skip leak_hunt
}

det_sanitize() { ci/sanitize; }

det_leak_hunt() { ci/leak-hunt; }

# cargo fuzz keeps its own target dir (fuzz/target, where ci/fuzz_run.py looks for the binaries).
det_fuzz_smoke() { env -u CARGO_TARGET_DIR FUZZ_SECONDS="${MUTANTS_FUZZ_SECONDS:-20}" ci/fuzz-smoke; }

det_valgrind() { ci/valgrind; }

# The tree's own copy of the command (pure Python: the compiled fuzz engine is not needed), run on the
# release wrapper; --timeout 90 matches the pytest watchdog of the other detectors.
det_ffi_test() {
  source ci/lib.sh
  source ci/variants.sh
  make -s -C libnative >/dev/null
  local site
  site=$(stage_wrapper release)
  PYTHONPATH="$site:$root/cli/python" "$PY" -m ffi_harness.testrun --leaks -q --timeout 90 -- pytests -p no:cacheprovider
}

# det_run <name>: runs the detector in the current directory (a subshell: detectors may source files).
det_run() {
  local fn="det_${1//-/_}"
  (set -euo pipefail; "$fn")
}
