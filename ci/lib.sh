# Shared helpers for ci/ scripts: repo root, venv python, timed steps, the build of libnative.so and
# of the `native` extension into the venv.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"
PY="$root/.venv/bin/python"
export VIRTUAL_ENV="$root/.venv"
# Disk. A run builds the workspace in a dozen target directories (debug, release, three wheel variants,
# fuzz, the patched trees of the mutants, ...), ~9 GB with cargo's defaults, and the CI machine's disk is
# shared: one run died of "No space left on device" 14 minutes in. No step edits code and rebuilds, so
# incremental caches are pure cost, and what CI reads from debug info (backtraces, sanitizer and valgrind
# stacks, gdb's stacks of a stuck worker, callgrind's functions) needs only line tables with their
# inlined frames, not types. Your own values win.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"
export CARGO_PROFILE_RELEASE_DEBUG="${CARGO_PROFILE_RELEASE_DEBUG:-line-tables-only}"

# The free space on the checkout's disk, for the step lines: a step that dies of a full disk says so.
disk_free() { df -h --output=avail "$root" 2>/dev/null | tail -1 | tr -d ' '; }

# CPU seconds (user + system) of every child this shell has waited for, into the variable named $1: a
# step's share, next to its wall time, shows whether it keeps one core or both busy (what decides which
# steps can share the 2 cores). Read from /proc (cutime + cstime, clock ticks of 1/100 s) in this very
# shell: a command substitution would be a subshell counting its own children.
children_cpu_seconds() {
  local -a stat
  read -r -a stat <"/proc/$BASHPID/stat"
  printf -v "$1" '%d' $(((stat[15] + stat[16]) / 100))
}

step() {
  local name=$1; shift
  local t0=$SECONDS cpu0 cpu1
  children_cpu_seconds cpu0
  printf '\033[1m==> %s\033[0m (disk free: %s)\n' "$name" "$(disk_free)" >&2
  if "$@"; then
    children_cpu_seconds cpu1
    printf '\033[1m<== %s ok (%ss, cpu %ss)\033[0m\n' "$name" $((SECONDS - t0)) $((cpu1 - cpu0)) >&2
  else
    local rc=$?
    printf '\033[1;31m<== %s FAILED (exit %s, %ss)\033[0m (disk free: %s)\n' "$name" "$rc" $((SECONDS - t0)) "$(disk_free)" >&2
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

# side_by_side NAME CMD NAME CMD ...: runs each command (a script or a shell function, no arguments)
# as a timed step at the same time as the others. For steps that keep one core busy for minutes, on
# the 2-core CI machine. Each step's output goes to its own file and is printed whole once all have
# ended, in the order given, so the log reads as if they ran one after another. Fails when any failed.
side_by_side() {
  local dir n=0 pids=() names=() status=0 i
  dir=$(mktemp -d)
  echo "side_by_side: starting $(($# / 2)) steps at once; each one's output follows when all have ended" >&2
  while [ $# -ge 2 ]; do
    names+=("$1")
    ( step "$1" "$2" ) >"$dir/$n.log" 2>&1 &
    pids+=($!)
    n=$((n + 1))
    shift 2
  done
  [ $# -eq 0 ] || { echo "side_by_side: expected NAME CMD pairs, left over: $*" >&2; rm -rf "$dir"; return 2; }
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || status=1
  done
  for i in "${!pids[@]}"; do cat "$dir/$i.log" >&2; done
  rm -rf "$dir"
  return "$status"
}
