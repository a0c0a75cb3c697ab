//! Crash isolation: run a scenario where a segfault or abort becomes a reported
//! failure ("SIGSEGV") instead of killing the test runner.
//!
//! Two ways, with different trade-offs:
//!
//! - [`run_python_isolated`]: a fresh `python` subprocess runs a script (for
//!   instance a rendered `repro.py`). Always safe; costs an interpreter start-up.
//! - [`run_in_fork`]: `fork()` the current process and run a Rust closure in the
//!   child. Cheap, and the child sees the parent's state, but fork only copies the
//!   calling thread. It is safe when no other thread can hold a lock the child
//!   needs: call it while attached to the interpreter (it brackets the fork with
//!   `PyOS_BeforeFork`/`PyOS_AfterFork_*`, as `os.fork()` does), and before any
//!   Python-side threads or native threads that take locks (a notifier thread,
//!   a thread pool) have started. If such threads exist, the child may deadlock
//!   (that is what the `timeout` is for) or crash for reasons unrelated to the
//!   scenario; use the subprocess route instead.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::oracles::OracleFailure;

/// How an isolated run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Termination {
    /// Exited with this status (0: success).
    Exited(i32),
    /// Killed by a signal (a crash: SIGSEGV, SIGABRT from ASan or `abort()`, ...).
    Signalled {
        /// The signal number.
        signal: i32,
        /// Its name, e.g. `"SIGSEGV"`.
        name: &'static str,
    },
    /// Still running at the deadline; killed with SIGKILL.
    TimedOut(Duration),
}

/// The result of an isolated run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// How it ended.
    pub termination: Termination,
    /// Captured standard output (subprocess runs only).
    pub stdout: String,
    /// Captured standard error (subprocess runs), or the failure/panic message the
    /// forked child reported (fork runs).
    pub stderr: String,
}

impl Outcome {
    /// True if the run exited with status 0.
    pub fn is_success(&self) -> bool {
        self.termination == Termination::Exited(0)
    }

    /// The signal name, if the run crashed.
    pub fn crash_signal(&self) -> Option<&'static str> {
        match self.termination {
            Termination::Signalled { name, .. } => Some(name),
            _ => None,
        }
    }

    /// `Ok` on success, otherwise an `isolation` oracle failure with the details.
    pub fn into_result(self) -> Result<(), OracleFailure> {
        if self.is_success() {
            Ok(())
        } else {
            Err(OracleFailure::new("isolation", self.to_string()))
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.termination {
            Termination::Exited(0) => write!(f, "exited successfully")?,
            Termination::Exited(code) => write!(f, "exited with status {code}")?,
            Termination::Signalled { signal, name } => {
                write!(f, "crashed: killed by {name} (signal {signal})")?
            }
            Termination::TimedOut(after) => write!(f, "STUCK: timed out after {after:?} (killed)")?,
        }
        for (label, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            if !text.trim().is_empty() {
                write!(f, "\n--- {label} ---\n{}", text.trim_end())?;
            }
        }
        Ok(())
    }
}

/// The conventional name of a signal number.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGSYS => "SIGSYS",
        libc::SIGALRM => "SIGALRM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => "unknown signal",
    }
}

// ---------------------------------------------------------------------------
// Fork.

/// Run `scenario` in a forked child and report how the child ended. The child
/// exits 0 if the scenario returns `Ok`, 1 with the message if it returns `Err`,
/// 101 if it panics; a crash shows up as [`Termination::Signalled`].
///
/// See the module docs for when forking is safe. The child never runs the
/// parent's destructors or atexit handlers (it leaves with `_exit`).
pub fn run_in_fork<F>(py: Python<'_>, timeout: Option<Duration>, scenario: F) -> io::Result<Outcome>
where
    F: FnOnce(Python<'_>) -> Result<(), String>,
{
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a writable array of two c_ints, as pipe(2) requires.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);

    // SAFETY: the `py` token proves this thread is attached, which PyOS_BeforeFork
    // requires; it takes the interpreter's fork-sensitive locks (import lock, ...).
    unsafe { pyo3::ffi::PyOS_BeforeFork() };
    // SAFETY: fork(2) has no memory-safety preconditions of its own; the hazards
    // (locks held by other threads) are documented on this function, and the child
    // below only runs the scenario and leaves with _exit.
    let pid = unsafe { libc::fork() };

    if pid == 0 {
        // Child: the only thread, and it holds the GIL it held before the fork.
        // SAFETY: called in the child right after fork(), while attached, as required.
        unsafe { pyo3::ffi::PyOS_AfterFork_Child() };
        // SAFETY: read_fd is our own pipe end; the child only writes.
        unsafe { libc::close(read_fd) };
        // A stuck child is asked for its Python stacks (SIGUSR2) before it is killed; they go down
        // the same pipe as the failure message.
        let _ = register_stack_dump(py, write_fd);
        crate::stuck::allow_ancestor_debuggers();
        let (code, message) = match catch_unwind(AssertUnwindSafe(|| scenario(py))) {
            Ok(Ok(())) => (0, String::new()),
            Ok(Err(message)) => (1, message),
            Err(panic) => (101, format!("panicked: {}", panic_message(&*panic))),
        };
        flush_python_stdio(py);
        write_all_fd(write_fd, message.as_bytes());
        // SAFETY: _exit ends the child without unwinding or running the parent's
        // destructors and atexit handlers, which belong to the parent.
        unsafe { libc::_exit(code) };
    }

    // SAFETY: called in the parent after fork() (successful or not), while
    // attached, releasing what PyOS_BeforeFork took.
    unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
    // SAFETY: write_fd is our pipe end; the parent only reads.
    unsafe { libc::close(write_fd) };
    if pid < 0 {
        let err = io::Error::last_os_error();
        // SAFETY: read_fd is our pipe end and nobody else uses it.
        unsafe { libc::close(read_fd) };
        return Err(err);
    }
    // Let other threads run Python while we wait.
    py.detach(|| wait_for_child(pid, read_fd, timeout))
}

/// `faulthandler.register(SIGUSR2, file=fd, all_threads=True)`: the signal writes every Python thread's
/// stack to `fd` without taking the GIL (a stuck child may hold it).
fn register_stack_dump(py: Python<'_>, fd: libc::c_int) -> PyResult<()> {
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("file", fd)?;
    kwargs.set_item("all_threads", true)?;
    py.import("faulthandler")?
        .call_method("register", (libc::SIGUSR2,), Some(&kwargs))?;
    Ok(())
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}

fn flush_python_stdio(py: Python<'_>) {
    if let Ok(sys) = py.import("sys") {
        for name in ["stdout", "stderr"] {
            if let Ok(stream) = sys.getattr(name) {
                let _ = stream.call_method0("flush");
            }
        }
    }
}

fn write_all_fd(fd: libc::c_int, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a live slice; write(2) reads at most `bytes.len()` bytes from it.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// Read the child's message until EOF (it closes the pipe by exiting), killing it
/// at the deadline; then reap it.
fn wait_for_child(
    pid: libc::pid_t,
    read_fd: libc::c_int,
    timeout: Option<Duration>,
) -> io::Result<Outcome> {
    let start = Instant::now();
    let mut message = Vec::new();
    let mut timed_out = None;
    let mut buf = [0u8; 4096];
    loop {
        let wait_ms = match timeout {
            Some(limit) => {
                let left = limit.saturating_sub(start.elapsed());
                if left.is_zero() {
                    message.extend_from_slice(b"\n--- Python stacks (faulthandler) ---\n");
                    // SAFETY: `pid` is our child, not yet reaped, so the pid cannot
                    // have been reused by another process; the child handles SIGUSR2.
                    unsafe { libc::kill(pid, libc::SIGUSR2) };
                    drain_for(read_fd, &mut message, Duration::from_millis(500));
                    message.extend_from_slice(b"--- native ---\n");
                    message.extend_from_slice(crate::stuck::native_report(pid).as_bytes());
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    timed_out = Some(limit);
                    break;
                }
                left.as_millis().min(100) as libc::c_int
            }
            None => 100,
        };
        let mut pfd = libc::pollfd {
            fd: read_fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd, and we pass a count of 1.
        let ready = unsafe { libc::poll(&mut pfd, 1, wait_ms) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if ready == 0 {
            continue;
        }
        // SAFETY: `buf` is a writable buffer of `buf.len()` bytes.
        let n = unsafe { libc::read(read_fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            break; // EOF: the child has exited (or closed the pipe).
        }
        message.extend_from_slice(&buf[..n as usize]);
    }
    // SAFETY: read_fd is our pipe end, no longer used.
    unsafe { libc::close(read_fd) };

    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; `pid` is our unreaped child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let termination = match timed_out {
        Some(limit) => Termination::TimedOut(limit),
        None if libc::WIFSIGNALED(status) => {
            let signal = libc::WTERMSIG(status);
            Termination::Signalled {
                signal,
                name: signal_name(signal),
            }
        }
        None => Termination::Exited(libc::WEXITSTATUS(status)),
    };
    Ok(Outcome {
        termination,
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&message).into_owned(),
    })
}

/// Append what arrives on `fd` until it stays quiet for `quiet` (or reaches EOF).
fn drain_for(fd: libc::c_int, out: &mut Vec<u8>, quiet: Duration) {
    let mut buf = [0u8; 4096];
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd, and we pass a count of 1.
        if unsafe { libc::poll(&mut pfd, 1, quiet.as_millis() as libc::c_int) } <= 0 {
            return;
        }
        // SAFETY: `buf` is a writable buffer of `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

// ---------------------------------------------------------------------------
// Subprocess.

/// Default deadline for [`run_python_isolated`].
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Run `script` in a fresh interpreter (see [`python_interpreter`]) with a 60 s
/// deadline, capturing exit status or signal, stdout and stderr. Always safe,
/// whatever threads this process runs. The GIL is released while waiting.
pub fn run_python_isolated(py: Python<'_>, script: &str) -> io::Result<Outcome> {
    let interpreter = python_interpreter(py).map_err(|e| io::Error::other(e.to_string()))?;
    py.detach(|| run_python_script(&interpreter, script, Some(DEFAULT_SCRIPT_TIMEOUT)))
}

/// Run `script` with the given interpreter. The script goes through a temporary
/// file, so tracebacks show line numbers and the script can read stdin.
pub fn run_python_script(
    interpreter: &Path,
    script: &str,
    timeout: Option<Duration>,
) -> io::Result<Outcome> {
    let path = temp_script_path();
    std::fs::write(&path, script)?;
    let result = run_command(Command::new(interpreter).arg(&path), timeout);
    let _ = std::fs::remove_file(&path);
    result
}

fn temp_script_path() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("ffi-harness-{}-{n}.py", std::process::id()))
}

/// Run a command to completion (or the deadline), capturing its output.
pub fn run_command(command: &mut Command, timeout: Option<Duration>) -> io::Result<Outcome> {
    use std::os::unix::process::ExitStatusExt;

    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Drain both pipes concurrently: a child blocked on a full pipe never exits.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let start = Instant::now();
    let mut timed_out = None;
    let mut native = String::new();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Some(limit) = timeout
            && start.elapsed() >= limit
        {
            native = crate::stuck::native_report(child.id() as i32);
            let _ = child.kill();
            timed_out = Some(limit);
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let mut stderr = err_reader.join().unwrap_or_default();
    if !native.is_empty() {
        stderr.extend_from_slice(b"\n--- native (the command was stuck) ---\n");
        stderr.extend_from_slice(native.as_bytes());
    }
    let termination = match (timed_out, status.code(), status.signal()) {
        (Some(limit), _, _) => Termination::TimedOut(limit),
        (None, Some(code), _) => Termination::Exited(code),
        (None, None, Some(signal)) => Termination::Signalled {
            signal,
            name: signal_name(signal),
        },
        (None, None, None) => Termination::Exited(-1),
    };
    Ok(Outcome {
        termination,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// The Python interpreter for subprocess runs, in order of preference:
/// `$FFI_HARNESS_PYTHON`; `sys.executable` if it is a python (when Python is
/// embedded it is the host binary instead); the venv's python (`FFI_HARNESS_VENV` /
/// `VIRTUAL_ENV`); `python3.X` in the running interpreter's `base_exec_prefix/bin`.
pub fn python_interpreter(py: Python<'_>) -> PyResult<PathBuf> {
    if let Some(path) = std::env::var_os("FFI_HARNESS_PYTHON").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let sys = py.import("sys")?;
    if let Ok(executable) = sys.getattr("executable")?.extract::<PathBuf>()
        && looks_like_python(&executable)
    {
        return Ok(executable);
    }
    if let Some(venv) = crate::env::venv_dir() {
        let candidate = venv.join("bin").join("python");
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    let prefix: PathBuf = sys.getattr("base_exec_prefix")?.extract()?;
    let (major, minor): (u8, u8) = (
        sys.getattr("version_info")?.get_item(0)?.extract()?,
        sys.getattr("version_info")?.get_item(1)?.extract()?,
    );
    let versioned: OsString = format!("python{major}.{minor}").into();
    Ok(prefix.join("bin").join(versioned))
}

fn looks_like_python(path: &Path) -> bool {
    path.is_file()
        && path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with("python"))
}
