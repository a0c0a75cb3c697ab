//! `ffi_harness._engine`: the compiled half of the `ffi-harness` command.
//!
//! It runs inside the interpreter that imports the target extension, and holds libFuzzer
//! (`libclang_rt.fuzzer_no_main`, linked by `build.rs`):
//!
//! - [`coverage`]: registers the 8-bit counters and PC tables of every instrumented object loaded in
//!   the process with libFuzzer (clang's preloaded ASan runtime defines weak no-op registration hooks
//!   that win over libFuzzer's, so nothing registers itself), plus a region of our own counting
//!   *outcome signatures* (callable × outcome × exception type × message words).
//! - [`program`]: fuzz bytes → a short program of calls (callable, receiver, positional and keyword
//!   arguments: [`ffi_harness::PyValue`]s, integers of every magnitude, pool instances, earlier results).
//! - [`fuzz`] drives `LLVMFuzzerRunDriver`; each input is decoded, materialised and handed to the
//!   Python runtime (`ffi_harness.runtime`, the same code every repro embeds), which runs the steps
//!   and judges them. [`describe`] turns a crash artifact back into the program as Python source.
use std::ffi::{c_char, c_int, CString};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

pub mod coverage;
pub mod program;

use program::{Arg, CallableSpec, Program};

unsafe extern "C" {
    fn LLVMFuzzerRunDriver(
        argc: *mut c_int,
        argv: *mut *mut *mut c_char,
        callback: extern "C" fn(*const u8, usize) -> c_int,
    ) -> c_int;
}

/// Everything the libFuzzer callback needs (the callback is a plain `extern "C" fn`).
struct Session {
    specs: Vec<CallableSpec>,
    names: Vec<Py<PyString>>,
    runtime: Py<PyAny>,
    findings_dir: PathBuf,
    stats_path: PathBuf,
    last_stats: Option<Instant>,
    execs: u64,
}

static SESSION: Mutex<Option<Session>> = Mutex::new(None);

fn parse_specs(callables: &Bound<'_, PyList>) -> PyResult<Vec<CallableSpec>> {
    callables
        .iter()
        .map(|c| {
            let d = c.cast_into::<PyDict>().map_err(PyErr::from)?;
            let get = |k: &str| -> PyResult<Bound<'_, PyAny>> {
                d.get_item(k)?
                    .ok_or_else(|| PyValueError::new_err(format!("plan callable lacks {k:?}")))
            };
            Ok(CallableSpec {
                name: get("name")?.extract()?,
                min_args: get("min_args")?.extract()?,
                max_args: get("max_args")?.extract()?,
                keywords: get("keywords")?.extract()?,
                method: get("kind")?.extract::<String>()? == "method",
                returns: d.get_item("returns")?.map(|r| r.extract()).transpose()?,
            })
        })
        .collect()
}

/// Materialise one argument. `None` when the value itself cannot be built (e.g. no mmap here).
fn materialise_arg<'py>(
    py: Python<'py>,
    runtime: &Bound<'py, PyAny>,
    arg: &Arg,
) -> PyResult<Bound<'py, PyAny>> {
    match arg {
        Arg::Int(i) => i.materialise(py),
        Arg::Indexable(i) => ffi_harness::prelude(py)?
            .getattr("Indexable")?
            .call1((i.materialise(py)?,)),
        Arg::Value(v) => v.materialise(py),
        Arg::Instance(k) => runtime.getattr("I")?.call1((*k,)),
        Arg::Result(k) => runtime.getattr("R")?.call1((*k,)),
    }
}

/// The program as the runtime takes it: `[(name, receiver, [args], {kwargs}), ...]`.
fn materialise_program<'py>(
    py: Python<'py>,
    runtime: &Bound<'py, PyAny>,
    names: &[Py<PyString>],
    specs: &[CallableSpec],
    program: &Program,
) -> PyResult<Bound<'py, PyList>> {
    let steps = PyList::empty(py);
    for step in &program.steps {
        let args = PyList::empty(py);
        for a in &step.args {
            args.append(materialise_arg(py, runtime, a)?)?;
        }
        let kwargs = PyDict::new(py);
        for (k, a) in &step.kwargs {
            kwargs.set_item(
                &specs[step.callable].keywords[*k],
                materialise_arg(py, runtime, a)?,
            )?;
        }
        let name = names[step.callable].bind(py);
        steps.append(PyTuple::new(
            py,
            [
                name.as_any(),
                &step.receiver.into_pyobject(py)?.into_any(),
                args.as_any(),
                kwargs.as_any(),
            ],
        )?)?;
    }
    Ok(steps)
}

fn write_finding(
    session: &Session,
    finding: &Bound<'_, PyAny>,
    data: &[u8],
    program: &Program,
) -> PyResult<()> {
    let py = finding.py();
    let key: String = finding.get_item("key")?.extract()?;
    let name = format!("finding-{:016x}.json", program::fnv1a(key.as_bytes()));
    let path = session.findings_dir.join(&name);
    if path.exists() {
        return Ok(());
    }
    let json = py.import("json")?;
    let record = PyDict::new(py);
    record.set_item("finding", finding)?;
    record.set_item("program", describe_program(py, &session.specs, program)?)?;
    record.set_item("input_hex", hex(data))?;
    let text: String = json.call_method1("dumps", (record,))?.extract()?;
    let tmp = session.findings_dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    eprintln!("FFI_HARNESS_FINDING {}", path.display());
    Ok(())
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn run_one(py: Python<'_>, session: &mut Session, data: &[u8]) -> PyResult<()> {
    let program = Program::decode(&session.specs, data);
    if program.steps.is_empty() {
        return Ok(());
    }
    let runtime = session.runtime.bind(py).clone();
    let steps = match materialise_program(py, &runtime, &session.names, &session.specs, &program) {
        Ok(s) => s,
        Err(_) => return Ok(()), // an unbuildable value (e.g. mmap refused): not the target's fault
    };
    let out = runtime.call_method1("run", (steps,))?;
    let (sigs, finding): (Vec<u64>, Bound<'_, PyAny>) = out.extract()?;
    for s in sigs {
        coverage::bump_signature(s);
    }
    if !finding.is_none() {
        write_finding(session, &finding, data, &program)?;
    }
    session.execs += 1;
    // Every second, and at each power of two before that: a run that a crash ends within its first
    // second (libFuzzer then exits without our at-exit hook) still leaves counts close to its real ones.
    if session.execs.is_power_of_two()
        || session
            .last_stats
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
    {
        session.last_stats = Some(Instant::now());
        dump_stats(py, session)?;
    }
    Ok(())
}

fn dump_stats(py: Python<'_>, session: &Session) -> PyResult<()> {
    let runtime = session.runtime.bind(py);
    let extra = PyDict::new(py);
    extra.set_item("execs", session.execs)?;
    extra.set_item("signatures", coverage::signatures_seen())?;
    extra.set_item("native_modules", coverage::registered_modules())?;
    runtime.call_method1(
        "dump_stats",
        (session.stats_path.to_string_lossy().into_owned(), extra),
    )?;
    Ok(())
}

extern "C" fn callback(data: *const u8, size: usize) -> c_int {
    let bytes: &[u8] = if size == 0 || data.is_null() {
        &[]
    } else {
        // SAFETY: libFuzzer hands us `size` readable bytes at `data`, valid for this call.
        unsafe { std::slice::from_raw_parts(data, size) }
    };
    let mut guard = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    let Some(session) = guard.as_mut() else {
        return 0;
    };
    Python::attach(|py| {
        if let Err(e) = run_one(py, session, bytes) {
            // A failure of the harness itself, not of the target: say so and stop (exit 3).
            eprintln!("ffi-harness engine: internal error while running an input: {e}");
            e.print(py);
            std::process::exit(3);
        }
    });
    0
}

extern "C" fn at_exit() {
    let guard = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(session) = guard.as_ref() {
        Python::attach(|py| {
            let _ = dump_stats(py, session);
        });
    }
}

/// Run libFuzzer over the plan's callables. `runtime` is an `ffi_harness.runtime.Context` (module
/// imported, setup run); `argv` is libFuzzer's command line (argv[0] first). Never returns normally:
/// libFuzzer exits the process when done.
#[pyfunction]
fn fuzz(
    py: Python<'_>,
    plan: &Bound<'_, PyDict>,
    runtime: &Bound<'_, PyAny>,
    argv: Vec<String>,
    findings_dir: PathBuf,
    stats_path: PathBuf,
) -> PyResult<i32> {
    let callables = plan
        .get_item("callables")?
        .ok_or_else(|| PyValueError::new_err("plan has no callables"))?
        .cast_into::<PyList>()
        .map_err(PyErr::from)?;
    let specs = parse_specs(&callables)?;
    if specs.is_empty() {
        return Err(PyValueError::new_err(
            "nothing to call: the plan lists no callable",
        ));
    }
    let names = specs
        .iter()
        .map(|s| PyString::intern(py, &s.name).unbind())
        .collect();
    let cmp = coverage::install_cmp_hooks();
    let mut report = coverage::register_loaded_objects();
    report.pop(); // the closing brace
    report.push_str(&format!(", \"cmp_tracing\": {cmp}}}"));
    eprintln!("FFI_HARNESS_COVERAGE {}", report);
    std::fs::create_dir_all(&findings_dir)
        .map_err(|e| PyValueError::new_err(format!("{}: {e}", findings_dir.display())))?;
    *SESSION.lock().unwrap_or_else(|e| e.into_inner()) = Some(Session {
        specs,
        names,
        runtime: runtime.clone().unbind(),
        findings_dir,
        stats_path,
        last_stats: None,
        execs: 0,
    });
    // SAFETY: `at_exit` is a plain extern "C" fn that lives as long as the process.
    unsafe { libc::atexit(at_exit) };
    let c_args: Vec<CString> = argv
        .iter()
        .map(|a| {
            CString::new(a.as_str())
                .map_err(|_| PyValueError::new_err("NUL byte in a libFuzzer argument"))
        })
        .collect::<PyResult<_>>()?;
    let mut ptrs: Vec<*mut c_char> = c_args.iter().map(|c| c.as_ptr() as *mut c_char).collect();
    ptrs.push(std::ptr::null_mut());
    let mut argc = c_args.len() as c_int;
    let mut argv_ptr = ptrs.as_mut_ptr();
    let _ = std::io::stderr().flush();
    // SAFETY: argc/argv describe NUL-terminated strings (`c_args`) that outlive the call (libFuzzer exits
    // the process at the end rather than returning); the callback only touches the GIL through
    // `Python::attach`, and we keep holding the GIL ourselves (we are attached), so the callback runs
    // on this thread with the interpreter attached.
    let rc = unsafe { LLVMFuzzerRunDriver(&mut argc, &mut argv_ptr, callback) };
    drop(c_args);
    Ok(rc)
}

fn describe_program<'py>(
    py: Python<'py>,
    specs: &[CallableSpec],
    program: &Program,
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for step in &program.steps {
        let spec = &specs[step.callable];
        let d = PyDict::new(py);
        d.set_item("callable", &spec.name)?;
        d.set_item("receiver", step.receiver)?;
        d.set_item(
            "args",
            step.args
                .iter()
                .map(Arg::to_python_source)
                .collect::<Vec<_>>(),
        )?;
        let kw: Vec<(String, String)> = step
            .kwargs
            .iter()
            .map(|(k, a)| (spec.keywords[*k].clone(), a.to_python_source()))
            .collect();
        d.set_item("kwargs", kw)?;
        out.append(d)?;
    }
    Ok(out)
}

/// Decode `data` (a fuzz input) against the plan's callables: the program as Python source pieces.
#[pyfunction]
fn describe<'py>(
    py: Python<'py>,
    plan: &Bound<'py, PyDict>,
    data: &Bound<'py, PyBytes>,
) -> PyResult<Bound<'py, PyList>> {
    let callables = plan
        .get_item("callables")?
        .ok_or_else(|| PyValueError::new_err("plan has no callables"))?
        .cast_into::<PyList>()
        .map_err(PyErr::from)?;
    let specs = parse_specs(&callables)?;
    let program = Program::decode(&specs, data.as_bytes());
    describe_program(py, &specs, &program)
}

/// The harness prelude (hostile classes, helper constructors) every repro embeds.
#[pyfunction]
fn prelude_source() -> &'static str {
    ffi_harness::PRELUDE_SOURCE
}

/// The prelude module the materialiser uses (created on first use, registered in `sys.modules`).
#[pyfunction]
fn prelude(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    ffi_harness::prelude(py).cloned()
}

/// The native half of a stuck report on process `pid` (`ffi-harness test` on a HANG): the threads
/// waiting on a held mutex with its holder, and every thread's native stack (gdb).
#[pyfunction]
fn native_report(py: Python<'_>, pid: i32) -> String {
    py.detach(|| ffi_harness::stuck::native_report(pid))
}

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(fuzz, m)?)?;
    m.add_function(wrap_pyfunction!(describe, m)?)?;
    m.add_function(wrap_pyfunction!(prelude_source, m)?)?;
    m.add_function(wrap_pyfunction!(prelude, m)?)?;
    m.add_function(wrap_pyfunction!(native_report, m)?)?;
    m.add("PRELUDE_ALIAS", ffi_harness::PRELUDE_ALIAS)?;
    Ok(())
}
