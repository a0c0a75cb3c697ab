# The detector registry of ci/mutants (sourced). Each detector runs inside a tree (the scratch copy with
# one mutant applied) and exits non-zero on a finding; ci/mutants runs them fast ones first, each under
# a watchdog (a detector still running after its timeout is killed, and a hang counts as a catch:
# "watchdog"). Every detector is a plain ci/ script, so what catches a mutant is what CI runs.
#
# The registry is one table. Columns, separated by "|":
#   name     the detector's name in the matrix (and in `ci/mutants --detectors`)
#   timeout  seconds before the watchdog kills it (a hang past it counts as a catch: "watchdog")
#   present  a test run in the tree: is this detector there at all (else the cell reads n/a)
#   expect   how a patch's `# expect:` header may name it: words, comma-separated; `word*` also
#            matches longer words that start with it (fuzz* covers "fuzz-smoke", "fuzzing")
#   run      what runs, in the tree: a ci/ script or one of the det_* functions below
# To add a detector: add one row (and a det_* function if its command is more than one script).
DETECTOR_TABLE='
pytest     |  300 | true                                               | pytest                        | det_pytest
cargo-test |  300 | true                                               | cargo-test                    | det_cargo_test
leak-hunt  |  900 | test -x ci/leak-hunt                               | leak-hunt, leak hunt, leak_hunt | ci/leak-hunt
gil-check  |  420 | true                                               | gil-check                     | ci/gil-check
proptests  |  600 | test -d proptests                                  | proptests, proptest           | det_proptests
sanitize   |  600 | true                                               | sanitize                      | env FFI_HARNESS_STOP_AT_FIRST_FINDING=1 ci/sanitize --no-proptests
fuzz-smoke | 1200 | test -x ci/fuzz-smoke && test -d fuzz/fuzz_targets | fuzz*                         | det_fuzz_smoke
valgrind   |  900 | true                                               | valgrind                      | ci/valgrind
ffi-test   | 1200 | test -f cli/python/ffi_harness/testrun.py          | ffi-test                      | det_ffi_test
'
# What each one runs and what it catches, in words: mutants/README.md.

DETECTORS=()
declare -A DETECTOR_TIMEOUT DETECTOR_PRESENT DETECTOR_EXPECT DETECTOR_RUN
while IFS='|' read -r name timeout present expect run; do
  name=$(echo $name)
  [ -n "$name" ] || continue
  DETECTORS+=("$name")
  DETECTOR_TIMEOUT[$name]=$(echo $timeout)
  DETECTOR_PRESENT[$name]=$(sed 's/^ *//; s/ *$//' <<<"$present")
  DETECTOR_EXPECT[$name]=$(sed 's/^ *//; s/ *$//' <<<"$expect")
  DETECTOR_RUN[$name]=$(echo $run)
done <<<"$DETECTOR_TABLE"

# det_named_in <name> <text>: does the (lower-cased) expectation text name this detector?
det_named_in() {
  local alias re
  while IFS= read -r alias; do
    alias=$(sed 's/^ *//; s/ *$//' <<<"$alias")
    [ -n "$alias" ] || continue
    if [[ $alias == *'*' ]]; then re="(^|[^a-z_-])${alias%\*}"; else re="(^|[^a-z_-])$alias([^a-z_-]|$)"; fi
    grep -qE "$re" <<<"$2" && return 0
  done < <(tr ',' '\n' <<<"${DETECTOR_EXPECT[$1]}")
  return 1
}

# det_available <name>: is this detector present in the tree (cwd)?
det_available() { [ -n "${DETECTOR_RUN[$1]:-}" ] && eval "${DETECTOR_PRESENT[$1]}"; }

det_pytest() {
  source ci/lib.sh
  source ci/variants.sh
  make -s -C libnative >/dev/null
  make -s -C libnative test
  local site
  site=$(stage_wrapper release)
  # ci/mutants built the cffi API and Cython bindings: their tests must run, not skip.
  PYTHONPATH="$site:$PYTHONPATH_GUARD" FFI_HARNESS_REQUIRE_BINDINGS=1 "$PY" -m pytest pytests -x -q "${PYTEST_GUARD[@]}"
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
  PYTHONPATH="$site:$root/cli/python" FFI_HARNESS_REQUIRE_BINDINGS=1 "$PY" -m ffi_harness.testrun --leaks -q --timeout 90 -- pytests -p no:cacheprovider
}

# det_run <name>: runs the detector in the current directory (a subshell: detectors may source files).
det_run() {
  (set -euo pipefail; ${DETECTOR_RUN[$1]})
}
