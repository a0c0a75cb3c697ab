# Shared helpers for ci/ scripts: repo root, venv python, timed steps, the build of libnative.so and
# of the `native` extension into the venv.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"
PY="$root/.venv/bin/python"
export VIRTUAL_ENV="$root/.venv"

step() {
  local name=$1; shift
  local t0=$SECONDS
  printf '\033[1m==> %s\033[0m\n' "$name" >&2
  if "$@"; then
    printf '\033[1m<== %s ok (%ss)\033[0m\n' "$name" $((SECONDS - t0)) >&2
  else
    local rc=$?
    printf '\033[1;31m<== %s FAILED (exit %s, %ss)\033[0m\n' "$name" "$rc" $((SECONDS - t0)) >&2
    return "$rc"
  fi
}

build_libnative() { make -s -C libnative >/dev/null; }

build_wrapper() {
  # Release build installed editable into .venv: `import native` works from any venv process.
  "$root/.venv/bin/maturin" develop --release -q -m wrapper/Cargo.toml >/dev/null 2>&1 \
    || "$root/.venv/bin/maturin" develop --release -m wrapper/Cargo.toml
}

build_cffi_api() { "$PY" pytests/bindings/cffi_build.py >/dev/null; }

# The Cython binding of libnative and the capsule consumer extension (pytests/bindings/): both only
# need libnative.so and the venv's headers; each build script skips an up-to-date module.
build_cython_and_capsule() {
  "$PY" pytests/bindings/cython_build.py >/dev/null || return
  if [ -f pytests/bindings/capsule_consumer/build.py ]; then "$PY" pytests/bindings/capsule_consumer/build.py >/dev/null; fi
}
