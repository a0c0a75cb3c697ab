//! What a stuck process is doing, from outside it: every thread's native stack, and which thread holds
//! each pthread mutex another thread is waiting for.
//!
//! Used wherever a bound expires: a forked property-test case ([`crate::isolate::run_in_fork`]), a fuzz
//! input ([`crate::fuzz_target`]'s watchdog, on its own process), a test of `ffi-harness test`. Python
//! stacks come from faulthandler inside the process; this is the native half.
//!
//! - **Lock owners** need nothing installed. A thread blocked on a contended glibc mutex sleeps in
//!   `futex(&mutex->__lock, FUTEX_WAIT, 2)`: `/proc/PID/task/TID/syscall` shows the call, and on
//!   x86-64 glibc the owner's thread id sits 8 bytes after the address (`__data.__owner`), read
//!   through `/proc/PID/mem`. Only that shape counts as a mutex wait (condition variables, Rust's own
//!   locks and the GIL's condvar wait with `FUTEX_WAIT_BITSET`), and the owner must be a thread of the
//!   process; other futex waits are counted without an owner.
//! - **Native stacks** come from `gdb -p PID -batch` (`ci/setup` installs gdb); without gdb the report
//!   says so and still lists the waits.
//!
//! Reading another process needs ptrace access to it. Under Yama's `ptrace_scope` 1 (Ubuntu's default
//! for non-root users) the `/proc` reads work from an ancestor or the process itself, but gdb, a
//! sibling of the stuck process, may attach only if that process allowed it (`PR_SET_PTRACER`, which
//! [`allow_ancestor_debuggers`] does; `run_in_fork`'s child and `ffi-harness test`'s worker call it).

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `futex` on x86-64 (the only architecture whose mutex layout the owner lookup knows).
const SYS_FUTEX_X86_64: u64 = 202;
/// `FUTEX_WAIT` (with or without `FUTEX_PRIVATE_FLAG`), and the value glibc waits for on a contended
/// mutex: "locked, with waiters".
const FUTEX_WAIT: u64 = 0;
const MUTEX_CONTENDED: u64 = 2;
/// How long gdb may take to attach and walk every thread.
const GDB_TIMEOUT: Duration = Duration::from_secs(20);

/// One thread blocked in `futex`, and the owner of that address when it is a held mutex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FutexWait {
    /// The waiting thread's id (`TID`, as in `/proc/PID/task/TID`).
    pub tid: i32,
    /// The futex address it waits on.
    pub addr: u64,
    /// The thread holding the mutex at `addr`, when it is a mutex held by a thread of this process
    /// (`tid` itself: a non-recursive mutex locked twice by one thread).
    pub owner: Option<i32>,
}

/// The threads of `pid`: `(tid, name)`.
pub fn threads(pid: i32) -> Vec<(i32, String)> {
    let mut out: Vec<(i32, String)> = fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .map(|tid| {
            let name = fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            (tid, name)
        })
        .collect();
    out.sort();
    out
}

/// Every thread of `pid` blocked in `futex`, each with the mutex owner when there is one.
pub fn futex_waits(pid: i32) -> Vec<FutexWait> {
    let tids: Vec<i32> = threads(pid).into_iter().map(|(t, _)| t).collect();
    let mut mem = fs::File::open(format!("/proc/{pid}/mem")).ok();
    let mut out = Vec::new();
    for &tid in &tids {
        let Ok(syscall) = fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")) else {
            continue;
        };
        // "NR arg0 .. arg5 sp pc", the arguments in hex.
        let mut fields = syscall.split_whitespace();
        let nr = fields.next().and_then(|f| f.parse::<u64>().ok());
        let mut arg = || {
            fields
                .next()
                .and_then(|f| u64::from_str_radix(f.trim_start_matches("0x"), 16).ok())
        };
        let (addr, op, val) = (arg(), arg(), arg());
        if !cfg!(all(target_arch = "x86_64", target_env = "gnu")) || nr != Some(SYS_FUTEX_X86_64) {
            continue;
        }
        let Some(addr) = addr else { continue };
        let mutex_wait =
            op.is_some_and(|op| op & 0x7f == FUTEX_WAIT) && val == Some(MUTEX_CONTENDED);
        let owner = mutex_wait
            .then(|| mem.as_mut().and_then(|m| read_i32(m, addr + 8)))
            .flatten()
            .filter(|o| tids.contains(o));
        out.push(FutexWait { tid, addr, owner });
    }
    out
}

fn read_i32(mem: &mut fs::File, addr: u64) -> Option<i32> {
    let mut buf = [0u8; 4];
    mem.seek(SeekFrom::Start(addr)).ok()?;
    mem.read_exact(&mut buf).ok()?;
    Some(i32::from_ne_bytes(buf))
}

/// Let this process's parent, and the parent's descendants (a gdb it starts), attach to it: what
/// Yama's `ptrace_scope` 1 otherwise refuses to a sibling. Call it in a process that may get stuck.
pub fn allow_ancestor_debuggers() {
    // SAFETY: getppid and prctl(PR_SET_PTRACER) take plain integers; the call only widens who may
    // trace this process (to its parent's descendants), and fails harmlessly without Yama.
    unsafe {
        libc::prctl(
            libc::PR_SET_PTRACER,
            libc::getppid() as libc::c_ulong,
            0,
            0,
            0,
        )
    };
}

/// Every thread's native stack, from `gdb -p pid -batch`; `None` when gdb is missing or failed.
pub fn gdb_stacks(pid: i32) -> Option<String> {
    if pid == std::process::id() as i32 {
        // Our own process (a watchdog thread reporting on its siblings): under Yama's ptrace_scope 1
        // a child may not attach to its parent unless the parent allows it.
        // SAFETY: prctl(PR_SET_PTRACER) takes plain integers and changes only who may trace us.
        unsafe { libc::prctl(libc::PR_SET_PTRACER, libc::PR_SET_PTRACER_ANY, 0, 0, 0) };
    }
    let mut child = Command::new("gdb")
        .args(["-p", &pid.to_string(), "-batch", "-nx", "-q"])
        .args([
            "-ex",
            "set pagination off",
            "-ex",
            "set print frame-arguments none",
        ])
        .args(["-ex", "thread apply all bt 30"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // Read while gdb writes: many threads' stacks overflow a pipe, and gdb would block on it.
    let mut stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < GDB_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let text = reader.join().ok()?;
    // gdb's chatter about symbols and the attach itself: only the thread lines and frames matter.
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("Thread ") || l.starts_with('#'))
        .collect();
    (!kept.is_empty()).then(|| kept.join("\n"))
}

/// The native half of a stuck report on `pid`: the mutex waits with their owners, then every thread's
/// native stack. Takes the process's threads as they are (gdb stops them only while it reads).
pub fn native_report(pid: i32) -> String {
    let names: std::collections::HashMap<i32, String> = threads(pid).into_iter().collect();
    let name = |tid: i32| names.get(&tid).map(String::as_str).unwrap_or("?");
    let mut out = String::new();
    let waits = futex_waits(pid);
    let held: Vec<&FutexWait> = waits.iter().filter(|w| w.owner.is_some()).collect();
    if held.is_empty() {
        let _ = writeln!(
            out,
            "locks: no thread waits on a held pthread mutex ({} in futex waits: condition variables, \
             the GIL, Rust locks)",
            waits.len()
        );
    }
    for w in &held {
        let owner = w.owner.unwrap_or_default();
        let holder = if owner == w.tid {
            "which it holds itself (a non-recursive mutex locked twice)".to_owned()
        } else {
            format!("held by thread {owner} ({})", name(owner))
        };
        let _ = writeln!(
            out,
            "locks: thread {} ({}) waits for the mutex at {:#x}, {holder}",
            w.tid,
            name(w.tid),
            w.addr,
        );
    }
    match gdb_stacks(pid) {
        Some(stacks) => {
            let _ = writeln!(out, "native stacks (gdb):\n{stacks}");
        }
        None => {
            let _ = writeln!(
                out,
                "native stacks: gdb is not installed or could not attach (ci/setup installs it)"
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A real deadlock shape: thread A holds a pthread mutex and sleeps, thread B blocks on it. The
    /// report must name A as the holder B waits for.
    #[test]
    fn names_the_thread_holding_a_mutex() {
        static mut MUTEX: libc::pthread_mutex_t = libc::PTHREAD_MUTEX_INITIALIZER;
        static HELD: AtomicBool = AtomicBool::new(false);
        static HOLDER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
        let holder = std::thread::spawn(|| {
            // SAFETY: MUTEX is a statically initialised pthread mutex; only these two threads use it.
            unsafe { libc::pthread_mutex_lock(std::ptr::addr_of_mut!(MUTEX)) };
            // SAFETY: gettid has no preconditions.
            HOLDER.store(unsafe { libc::gettid() }, Ordering::SeqCst);
            HELD.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1500));
            // SAFETY: locked above by this thread.
            unsafe { libc::pthread_mutex_unlock(std::ptr::addr_of_mut!(MUTEX)) };
        });
        while !HELD.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let waiter = std::thread::spawn(|| {
            // SAFETY: as above; blocks until the holder unlocks.
            unsafe { libc::pthread_mutex_lock(std::ptr::addr_of_mut!(MUTEX)) };
            // SAFETY: locked above by this thread.
            unsafe { libc::pthread_mutex_unlock(std::ptr::addr_of_mut!(MUTEX)) };
        });
        let pid = std::process::id() as i32;
        let holder_tid = HOLDER.load(Ordering::SeqCst);
        // Until the waiter is blocked (bounded: the holder lets go after 1.5 s).
        let mut waits = futex_waits(pid);
        let deadline = std::time::Instant::now() + Duration::from_millis(1200);
        while !waits.iter().any(|w| w.owner == Some(holder_tid))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
            waits = futex_waits(pid);
        }
        holder.join().unwrap();
        waiter.join().unwrap();
        assert!(
            waits.iter().any(|w| w.owner == Some(holder_tid)),
            "no wait names the holder {holder_tid}: {waits:?}"
        );
    }
}
