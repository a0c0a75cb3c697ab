#!/usr/bin/env bash
# Instructions per call (callgrind) of the 2-argument add written the ways PyO3 0.30 offers
# (src/lib.rs, one #[pyfunction] per variant) and built with PyO3's/cargo's build-level knobs, against
# the hand-written METH_FASTCALL C-API fast_add measured in the same valgrind run. Same method as
# ci/bench-instructions. Each build: `maturin build --release` with its own CARGO_TARGET_DIR
# (target/pyo3-variants-<build>), the wheel unzipped into a scratch dir (target/pyo3-variants-site) put first on sys.path.
#
#   benches/pyo3-variants/measure.sh                 build every variant, measure, print the table
#   PYO3V_BUILDS="base norefpool" .../measure.sh     only these builds (the first is the Δ baseline)
#   PYO3V_CALLS=N                                    calls per function (default 200000)
#   PYO3V_NO_BUILD=1                                 reuse the wheels already built
#   ANNOTATE=1                                       also print per-function differences (callgrind_annotate)
# Output: the table on stdout and in target/pyo3-variants-results/table.md (table-full.md: every variant
# of every build), callgrind dumps in target/pyo3-variants-results/<build>/.
#
# Builds: base       release profile as the root workspace (debug = 1, no LTO, 16 codegen units)
#         norefpool  RUSTFLAGS="--cfg pyo3_disable_reference_pool"
#         cgu1       CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 (no LTO)
#         lto-thin   CARGO_PROFILE_RELEASE_LTO=thin
#         lto        CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
#         norefpool-lto  both
#         abi3       --features abi3 (pyo3/abi3-py311: the stable ABI, Py_LIMITED_API)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
py="$root/.venv/bin/python"
maturin="$root/.venv/bin/maturin"
calls=${PYO3V_CALLS:-200000}
builds=${PYO3V_BUILDS:-base norefpool cgu1 lto-thin lto norefpool-lto abi3}
results="$root/target/pyo3-variants-results"

# The C-API reference (_capi_bench, with the callgrind client requests), as ci/bench-instructions builds it.
capi="$root/target/pyo3-variants-capi/py"
make -s -C "$root/libnative"
"$py" "$root/benches/py/build_ext.py" "$capi" "$root/libnative/build/libnative.so" 2>/dev/null

# Every build is unzipped into the same scratch directory in turn: the interpreter then sees the same
# paths (and string hashes, so the same allocation history) in every run. With a random temp dir the
# loops' counts move by ~2 Ir/iteration from run to run (pymalloc state at the loop counter's int).
site="$root/target/pyo3-variants-site"

for b in $builds; do
  target="$root/target/pyo3-variants-$b"
  rustflags="" features=() lto=false cgu=16
  case $b in
    base) ;;
    norefpool) rustflags="--cfg pyo3_disable_reference_pool" ;;
    cgu1) cgu=1 ;;
    lto-thin) lto=thin ;;
    lto) lto=fat cgu=1 ;;
    norefpool-lto) rustflags="--cfg pyo3_disable_reference_pool" lto=fat cgu=1 ;;
    abi3) features=(--features abi3) ;;
    *) echo "unknown build '$b'" >&2; exit 2 ;;
  esac
  if [ "${PYO3V_NO_BUILD:-0}" != 1 ]; then
    rm -rf "$target/wheels"
    RUSTFLAGS="$rustflags" CARGO_TARGET_DIR="$target" \
      CARGO_PROFILE_RELEASE_LTO=$lto CARGO_PROFILE_RELEASE_CODEGEN_UNITS=$cgu \
      "$maturin" build --release -q -i "$py" -m "$here/Cargo.toml" -o "$target/wheels" "${features[@]}"
  fi
  wheel=$(ls "$target"/wheels/pyo3_variants-*.whl)
  rm -rf "$site" && "$py" -m zipfile -e "$wheel" "$site"
  rm -rf "${results:?}/$b" && mkdir -p "$results/$b"
  PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file="$results/$b/cg.out" -q \
    "$py" "$here/measure.py" run "$site" "$capi" "$calls"
done

# shellcheck disable=SC2086
"$py" "$here/measure.py" report "$results" "$calls" $builds --full > "$results/table-full.md"
# shellcheck disable=SC2086
"$py" "$here/measure.py" report "$results" "$calls" $builds | tee "$results/table.md"
echo "(every variant of every build: $results/table-full.md)"

if [ "${ANNOTATE:-0}" = 1 ]; then
  dump() { grep -lE "^desc: Trigger: Client Request: $2\$" "$results/$1"/cg.out.* | head -1; }
  first=${builds%% *}
  ref=$(dump "$first" "C-API METH_FASTCALL fast_add")
  base=$(dump "$first" "add")
  for v in add_posonly add_ret_bound add_any add_lean add_varargs; do
    "$py" "$here/measure.py" diff "$base" "$(dump "$first" "$v")" "$calls"
  done
  "$py" "$here/measure.py" diff "$ref" "$base" "$calls"
  for b in $builds; do
    [ "$b" = "$first" ] && continue
    "$py" "$here/measure.py" diff "$base" "$(dump "$b" "add")" "$calls"
  done
fi
