#!/bin/bash -eu
# ClusterFuzzLite / OSS-Fuzz build of ffi-harness's cargo-fuzz targets (fuzz/fuzz_targets/*.rs).
# Conventions: run from the project checkout ($SRC/ffi-harness, the Dockerfile's WORKDIR); everything the
# runner needs goes to $OUT:
#   $OUT/<target>                 launcher (sh, "LLVMFuzzerTestOneInput" marker) setting PYTHONHOME etc.
#   $OUT/bin/<target>             the libFuzzer binary (`cargo fuzz build -O`, ASan; C side instrumented)
#   $OUT/<target>_seed_corpus.zip fuzz/corpus/<target>/ (committed seeds)
#   $OUT/<target>.dict            fuzz/dict/<target>.dict or fuzz/<target>.dict, when there is one
#   $OUT/<target>.options         libFuzzer options (Python + ASan needs more than the 2 GB default RSS)
#   $OUT/python/                  the CPython 3.11 the targets embed: libpython, stdlib, and site-packages
#                                 with cffi plus pytests/bindings (the `differential` target's ctypes/cffi
#                                 side, which loads $OUT/python/lib/libnative.so through NATIVE_LIB)
# The runner image has no Python 3.11, so the interpreter travels with the targets; the launcher points
# PYTHONHOME at it because an embedded interpreter would otherwise look for its stdlib through the
# `python3` on PATH.
# Local test:  SRC=/tmp/cfl/src OUT=/tmp/cfl/out bash .clusterfuzzlite/build.sh   (from the checkout)
repo=$(pwd)
: "${OUT:?set OUT (the directory the fuzz targets go to)}"
mkdir -p "$OUT"

python=${PYO3_PYTHON:-$(command -v python3.11)}
export PYO3_PYTHON=$python
pyroot=$("$python" -c 'import sys; print(sys.base_prefix)')
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# OSS-Fuzz provides CC/CFLAGS with its sanitizer and coverage flags: instrument libnative's C with them.
# Locally (no CC), libnative-sys/build.rs picks clang-19 with ASan + fuzzer-no-link under `cargo fuzz` itself.
if [ -n "${CC:-}" ] && [ -n "${CFLAGS:-}" ]; then
  export NATIVE_CC=$CC NATIVE_CFLAGS="$CFLAGS -Wno-error"
fi
# libpython resolves from $OUT/python/lib on the runner (the build-time rpath points into this image).
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-rpath,\$ORIGIN/../python/lib"
export RUSTC_BOOTSTRAP=1

rm -f fuzz/target/.rustc_info.json # cargo's rustc probe does not key on RUSTC_BOOTSTRAP
cargo fuzz build -O
targets=$(cargo fuzz list)

mkdir -p "$OUT/bin"
for t in $targets; do
  cp "fuzz/target/x86_64-unknown-linux-gnu/release/$t" "$OUT/bin/$t"
  cat >"$OUT/$t" <<EOF
#!/bin/sh
# LLVMFuzzerTestOneInput: launcher of the cargo-fuzz target "$t" (embeds CPython from ./python).
here=\$(dirname "\$0")
export PYTHONHOME="\$here/python" PYTHONPATH="\$here/python/site" NATIVE_LIB="\$here/python/lib/libnative.so"
export PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1
exec "\$here/bin/$t" "\$@"
EOF
  chmod +x "$OUT/$t"
  rm -f "$OUT/${t}_seed_corpus.zip"
  if [ -d "fuzz/corpus/$t" ] && [ -n "$(ls -A "fuzz/corpus/$t")" ]; then
    (cd "fuzz/corpus/$t" && zip -q -r "$OUT/${t}_seed_corpus.zip" .)
  fi
  for d in "fuzz/dict/$t.dict" "fuzz/dictionaries/$t.dict" "fuzz/$t.dict"; do
    if [ -f "$d" ]; then cp "$d" "$OUT/$t.dict"; break; fi
  done
  printf '[libfuzzer]\nrss_limit_mb = 4096\ntimeout = 60\n' >"$OUT/$t.options"
done

# The embedded interpreter: libpython + the stdlib (minus tests, GUI and pip), lib-dynload included.
rm -rf "$OUT/python" && mkdir -p "$OUT/python/lib" "$OUT/python/site"
cp -L "$pyroot"/lib/libpython"$pyver"*.so* "$OUT/python/lib/" 2>/dev/null || true
tar -C "$pyroot/lib" -cf - --exclude="python$pyver/test" --exclude="python$pyver/site-packages" \
  --exclude="python$pyver/idlelib" --exclude="python$pyver/tkinter" --exclude="python$pyver/turtledemo" \
  --exclude="python$pyver/ensurepip" --exclude="python$pyver/lib2to3" --exclude="__pycache__" \
  --exclude="python$pyver/config-$pyver-*" "python$pyver" | tar -C "$OUT/python/lib" -xf -
# The `differential` target's other side: libnative.so (plain build) and the ctypes/cffi bindings.
make -s -C libnative BUILD="$repo/fuzz/target/libnative-plain" >/dev/null
cp "fuzz/target/libnative-plain/libnative.so" "$OUT/python/lib/libnative.so"
cp pytests/bindings/*.py "$OUT/python/site/"
"$python" -m pip install -q --disable-pip-version-check --target "$OUT/python/site" cffi
echo "build.sh: $(echo "$targets" | wc -w) targets in $OUT: $(echo $targets)"
