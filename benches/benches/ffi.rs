//! Python → C call overhead, buffer throughput, callbacks, handle methods and struct conversion, through
//! PyO3, the hand-written C-API, cffi (API and ABI mode), ctypes (CDLL and PyDLL), and bare C as the floor.
//!
//! Every Python-side case is a driver loop compiled on its own (benches/py/mechanisms.py), timed with
//! criterion's `iter_custom`: one sample = one call of `run(iters)`, wall time, minus `iters` times the
//! empty-loop baseline (calibrated right before each group). Defaults keep the whole run to a few minutes
//! on 2 cores; `BENCH_FULL=1` measures longer. At the end the table goes to stdout and
//! benches/results/latest.md, and the call-overhead plot to benches/results/call_overhead.svg.

use std::cell::RefCell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{measurement::WallTime, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use ffi_benches::report::{self, Report, Row, BARE_C};
use ffi_benches::{floor, setup_sys_path, shapes_module, Paths};
use pyo3::prelude::*;

struct Settings {
    warm_up: Duration,
    measurement: Duration,
    samples: usize,
    full: bool,
    /// `BENCH_SMOKE=1`: proves the benches run (CI), numbers not meaningful; results/ never rewritten.
    smoke: bool,
}

impl Settings {
    fn from_env() -> Self {
        let full = std::env::var("BENCH_FULL").is_ok_and(|v| v == "1");
        let smoke = std::env::var("BENCH_SMOKE").is_ok_and(|v| v == "1");
        if smoke {
            Settings {
                warm_up: Duration::from_millis(50),
                measurement: Duration::from_millis(200),
                samples: 10,
                full: false,
                smoke,
            }
        } else if full {
            Settings {
                warm_up: Duration::from_secs(2),
                measurement: Duration::from_secs(8),
                samples: 60,
                full,
                smoke,
            }
        } else {
            Settings {
                warm_up: Duration::from_millis(500),
                measurement: Duration::from_secs(2),
                samples: 20,
                full,
                smoke,
            }
        }
    }
}

/// One Python-side case (see mechanisms.Case).
struct Case {
    group: String,
    mechanism: String,
    param: String,
    run: Py<PyAny>,
    nbytes: u64,
    copies: Option<i64>,
    note: String,
}

/// Everything mechanisms.py set up: `sides` owns the stores, subscriptions and C-callable callbacks.
struct Loaded {
    sides: Py<PyAny>,
    cases: Vec<Case>,
    baseline: Py<PyAny>,
    info: Vec<String>,
}

fn load_cases(py: Python<'_>, paths: &Paths) -> PyResult<Loaded> {
    setup_sys_path(py, paths)?;
    let mechanisms = py.import("mechanisms")?;
    let shapes = shapes_module(py)?;
    let (sides, cases): (Bound<'_, PyAny>, Vec<Bound<'_, PyAny>>) = mechanisms
        .getattr("all_cases")?
        .call1((
            paths.libnative.to_string_lossy(),
            paths.py_build.to_string_lossy(),
            shapes,
        ))?
        .extract()?;
    let mut out = Vec::new();
    for c in cases {
        out.push(Case {
            group: c.getattr("group")?.extract()?,
            mechanism: c.getattr("mechanism")?.extract()?,
            param: c.getattr("param")?.extract()?,
            run: c.getattr("run")?.unbind(),
            nbytes: c.getattr("nbytes")?.extract()?,
            copies: c.getattr("copies")?.extract()?,
            note: c.getattr("note")?.extract()?,
        });
    }
    let baseline = mechanisms.getattr("baseline")?.call0()?.unbind();
    let info = PyModule::from_code(
                py,
                c"
import sys, sysconfig, platform, cffi, native
cfg = sysconfig.get_config_var('CONFIG_ARGS') or ''
flags = [f for f in ('--enable-optimizations', '--with-lto', '--enable-shared') if f in cfg]
lines = [
    f'Python: {platform.python_implementation()} {sys.version.split()[0]} ({sys.version.split(\"[\")[-1].rstrip(\"]\")}), '
    f'build flags: {\" \".join(flags) or \"none of --enable-optimizations/--with-lto\"}, prefix {sys.base_prefix}',
    f'cffi {cffi.__version__}, native {native.__version__}',
]
",
                c"bench_info.py",
                c"bench_info",
            )?
        .getattr("lines")?
        .extract()?;
    Ok(Loaded {
        sides: sides.unbind(),
        cases: out,
        baseline,
        info,
    })
}

/// ns per iteration of the empty driver loop: median of a few runs, subtracted from every Python sample.
fn calibrate(baseline: &Py<PyAny>) -> f64 {
    Python::attach(|py| {
        let run = baseline.bind(py);
        let n = 200_000u64;
        run.call1((n,)).unwrap();
        let xs = (0..9)
            .map(|_| {
                let t = Instant::now();
                run.call1((n,)).unwrap();
                t.elapsed().as_secs_f64() * 1e9 / n as f64
            })
            .collect();
        report::median(xs)
    })
}

/// Times `f(iters)` per sample and records the median of the measurement samples into the report.
fn bench_one(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rep: &mut Report,
    samples: usize,
    row: Row,
    mut f: impl FnMut(u64) -> Duration,
) {
    let per_iter = RefCell::new(Vec::<f64>::new());
    g.bench_function(BenchmarkId::new(&row.mechanism, &row.param), |b| {
        b.iter_custom(|iters| {
            let d = f(iters);
            per_iter
                .borrow_mut()
                .push(d.as_secs_f64() * 1e9 / iters as f64);
            d
        })
    });
    let v = per_iter.into_inner();
    if v.is_empty() {
        return; // filtered out on the command line
    }
    // Criterion calls the routine for warm-up first, then exactly `samples` times to measure.
    let measured = v[v.len().saturating_sub(samples)..].to_vec();
    rep.rows.push(Row {
        ns: report::median(measured),
        ..row
    });
}

fn python_group(
    c: &mut Criterion,
    s: &Settings,
    rep: &mut Report,
    name: &str,
    cases: &[&Case],
    baseline: &Py<PyAny>,
) {
    let base_ns = calibrate(baseline);
    let mut g = c.benchmark_group(name);
    for case in cases {
        // Explicit pre-run: past the specialising interpreter's warm-up (adaptive counters) before criterion's.
        let pre_ns = Python::attach(|py| {
            let t = Instant::now();
            case.run
                .bind(py)
                .call1((64u64,))
                .map(drop)
                .expect("driver pre-run failed");
            t.elapsed().as_secs_f64() * 1e9 / 64.0
        });
        // Cheap calls get a paired baseline: every sample also times the empty loop for the same number of
        // iterations, so load drifting on a shared machine hits both sides of the subtraction alike. For
        // calls of microseconds and more the calibrated baseline is far below the noise.
        let paired = pre_ns < 2_000.0;
        if case.nbytes > 0 {
            g.throughput(Throughput::Bytes(case.nbytes));
        }
        let row = Row {
            group: case.group.clone(),
            mechanism: case.mechanism.clone(),
            param: case.param.clone(),
            ns: 0.0,
            nbytes: case.nbytes,
            copies: case.copies,
            note: case.note.clone(),
        };
        bench_one(&mut g, rep, s.samples, row, |iters| {
            Python::attach(|py| {
                let run = case.run.bind(py);
                let t = Instant::now();
                run.call1((iters,)).expect("driver failed");
                let gross = t.elapsed();
                let base = if paired {
                    let empty = baseline.bind(py);
                    let t = Instant::now();
                    empty.call1((iters,)).expect("baseline failed");
                    t.elapsed()
                } else {
                    Duration::from_secs_f64(base_ns * iters as f64 * 1e-9)
                };
                gross.saturating_sub(base)
            })
        });
    }
    g.finish();
}

fn floor_row(group: &str, param: &str, nbytes: u64) -> Row {
    Row {
        group: group.into(),
        mechanism: BARE_C.into(),
        param: param.into(),
        ns: 0.0,
        nbytes,
        copies: (group == "floor_checksum").then_some(0),
        note: "libnative linked statically, direct call".into(),
    }
}

fn timed(iters: u64, mut body: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        body();
    }
    t.elapsed()
}

fn floor_groups(c: &mut Criterion, s: &Settings, rep: &mut Report) {
    let mut g = c.benchmark_group("floor_call");
    // SAFETY (all four): pure C functions of plain values and, for native_add, a valid out-param.
    bench_one(
        &mut g,
        rep,
        s.samples,
        floor_row("floor_call", "0 args", 0),
        |n| {
            timed(n, || {
                // SAFETY: see above.
                black_box(unsafe { floor::shapes_zero() });
            })
        },
    );
    bench_one(
        &mut g,
        rep,
        s.samples,
        floor_row("floor_call", "1 arg", 0),
        |n| {
            timed(n, || {
                // SAFETY: see above.
                black_box(unsafe { floor::shapes_one(black_box(2)) });
            })
        },
    );
    bench_one(
        &mut g,
        rep,
        s.samples,
        floor_row("floor_call", "2 args", 0),
        |n| {
            timed(n, || {
                let mut out = 0;
                // SAFETY: see above.
                black_box(unsafe { floor::native_add(black_box(2), black_box(3), &mut out) });
                black_box(out);
            })
        },
    );
    bench_one(
        &mut g,
        rep,
        s.samples,
        floor_row("floor_call", "5 args", 0),
        |n| {
            timed(n, || {
                let b = black_box;
                // SAFETY: see above.
                black_box(unsafe { floor::shapes_five(b(1), b(2), b(3), b(4), b(5)) });
            })
        },
    );
    g.finish();

    let mut g = c.benchmark_group("floor_checksum");
    for (label, size) in [("64 B", 64usize), ("64 KiB", 64 << 10), ("1 MiB", 1 << 20)] {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
        g.throughput(Throughput::Bytes(size as u64));
        bench_one(
            &mut g,
            rep,
            s.samples,
            floor_row("floor_checksum", label, size as u64),
            |n| {
                timed(n, || {
                    // SAFETY: `data` is a live buffer of exactly `size` bytes.
                    black_box(unsafe {
                        floor::native_checksum(black_box(data.as_ptr()).cast(), size)
                    });
                })
            },
        );
    }
    g.finish();
}

fn rust_to_python(c: &mut Criterion, s: &Settings, rep: &mut Report) {
    let fns: Vec<(&str, Py<PyAny>)> = Python::attach(|py| -> PyResult<_> {
        let native = py.import("native")?;
        let capi = py.import("_capi_bench")?;
        Ok(vec![
            ("PyO3 native.add", native.getattr("add")?.unbind()),
            ("PyO3 native.add_fast", native.getattr("add_fast")?.unbind()),
            (
                "C-API METH_FASTCALL add",
                capi.getattr("fast_add")?.unbind(),
            ),
            ("C-API METH_VARARGS add", capi.getattr("var_add")?.unbind()),
        ])
    })
    .expect("imports");
    let mut g = c.benchmark_group("rust_to_python");
    for (name, f) in &fns {
        let row = Row {
            group: "rust_to_python".into(),
            mechanism: (*name).into(),
            param: "2 args".into(),
            ns: 0.0,
            nbytes: 0,
            copies: None,
            note: "Bound::call1((2, 3)) in a Rust loop".into(),
        };
        bench_one(&mut g, rep, s.samples, row, |n| {
            Python::attach(|py| {
                let f = f.bind(py);
                timed(n, || {
                    black_box(f.call1((2i64, 3i64)).expect("call failed"));
                })
            })
        });
    }
    g.finish();
}

fn machine() -> Vec<String> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let uname = std::process::Command::new("uname")
        .arg("-srm")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    vec![
        format!("Date: {}", report::utc_now()),
        format!(
            "Machine: {cpu}, {cores} cores, {uname}; load average at start {}",
            load.join(" ")
        ),
        format!("Rust: {}, PyO3 0.30, criterion 0.8", env!("BENCH_RUSTC")),
    ]
}

fn main() {
    let paths = Paths::new();
    let s = Settings::from_env();
    let mut c = Criterion::default()
        .warm_up_time(s.warm_up)
        .measurement_time(s.measurement)
        .sample_size(s.samples)
        .nresamples(20_000)
        .configure_from_args();
    let mut rep = Report {
        header: machine(),
        ..Default::default()
    };
    let Loaded {
        sides,
        cases,
        baseline,
        info,
    } = Python::attach(|py| load_cases(py, &paths))
        .unwrap_or_else(|e| panic!("bench set-up failed: {e}"));
    rep.header.extend(info);

    floor_groups(&mut c, &s, &mut rep);
    let mut groups: Vec<&str> = Vec::new();
    for case in &cases {
        if !groups.contains(&case.group.as_str()) {
            groups.push(&case.group);
        }
    }
    for name in groups {
        let members: Vec<&Case> = cases.iter().filter(|c| c.group == name).collect();
        python_group(&mut c, &s, &mut rep, name, &members, &baseline);
    }
    rust_to_python(&mut c, &s, &mut rep);
    let base_ns = calibrate(&baseline);
    c.final_summary();
    Python::attach(|py| sides.bind(py).call_method0("close").map(drop))
        .expect("closing the stores");

    rep.header.push(format!(
        "Settings: {} (warm-up {:?}, measurement {:?}, {} samples); empty-loop baseline {base_ns:.1} ns/iteration",
        if s.full {
            "BENCH_FULL=1"
        } else if s.smoke {
            "BENCH_SMOKE=1 (smoke test, not a measurement)"
        } else {
            "default quick run"
        },
        s.warm_up,
        s.measurement,
        s.samples
    ));
    let md = rep.markdown();
    println!("\n{md}");
    let expected = cases.len() + 7 + 4;
    if s.smoke {
        println!(
            "(BENCH_SMOKE=1: {} cases ran; results/ not rewritten)",
            rep.rows.len()
        );
        return;
    }
    if rep.rows.len() < expected {
        println!(
            "(partial run: {} of {expected} cases; results/ not rewritten)",
            rep.rows.len()
        );
        return;
    }
    let results = paths.benches.join("results");
    std::fs::create_dir_all(&results).expect("benches/results");
    std::fs::write(results.join("latest.md"), md).expect("writing latest.md");
    if let Err(e) = rep.plot(&results.join("call_overhead.svg")) {
        eprintln!("plot failed: {e}");
    }
    println!(
        "wrote {}/latest.md and call_overhead.svg",
        results.display()
    );
}
