//! The end-of-run report: one row per (group, mechanism, column) with the median ns/call of criterion's
//! measurement samples (baseline already subtracted), rendered as Markdown (printed and written to
//! results/latest.md) and as an SVG plot of the call-overhead groups (results/call_overhead.svg).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

/// The reference row of every call-overhead and checksum column.
pub const FASTCALL: &str = "C-API METH_FASTCALL";
pub const BARE_C: &str = "bare C (from Rust, the floor)";
pub const ARGS: [&str; 4] = ["0 args", "1 arg", "2 args", "5 args"];
pub const SIZES: [&str; 3] = ["64 B", "64 KiB", "1 MiB"];

#[derive(Clone, Debug)]
pub struct Row {
    pub group: String,
    pub mechanism: String,
    pub param: String,
    pub ns: f64,
    pub nbytes: u64,
    pub copies: Option<i64>,
    pub note: String,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Free-form lines for the header (machine, Python build, settings).
    pub header: Vec<String>,
}

/// Median of criterion's per-sample ns/iteration.
pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        "–".into()
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e4 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns >= 100.0 {
        format!("{ns:.0} ns")
    } else {
        format!("{ns:.1} ns")
    }
}

impl Report {
    fn find(&self, groups: &[&str], mechanism: &str, param: &str) -> Option<&Row> {
        self.rows.iter().find(|r| {
            groups.contains(&r.group.as_str()) && r.mechanism == mechanism && r.param == param
        })
    }

    /// Mechanisms of these groups in first-seen order.
    fn mechanisms(&self, groups: &[&str]) -> Vec<String> {
        let mut seen = Vec::<String>::new();
        for r in self
            .rows
            .iter()
            .filter(|r| groups.contains(&r.group.as_str()))
        {
            if !seen.contains(&r.mechanism) {
                seen.push(r.mechanism.clone());
            }
        }
        seen
    }

    fn notes(&self, groups: &[&str], mechanism: &str) -> String {
        let mut notes: Vec<&str> = self
            .rows
            .iter()
            .filter(|r| {
                groups.contains(&r.group.as_str()) && r.mechanism == mechanism && !r.note.is_empty()
            })
            .map(|r| r.note.as_str())
            .collect();
        notes.dedup();
        notes.join("; ")
    }

    /// A table of ns/call with `× reference` per column.
    fn table(
        &self,
        out: &mut String,
        groups: &[&str],
        cols: &[&str],
        reference: Option<&str>,
        throughput: bool,
    ) {
        let mechs = self.mechanisms(groups);
        let with_copies = self
            .rows
            .iter()
            .any(|r| groups.contains(&r.group.as_str()) && r.copies.is_some());
        let _ = write!(out, "| mechanism |");
        if with_copies {
            let _ = write!(out, " copies |");
        }
        for c in cols {
            let _ = write!(out, " {c} |");
        }
        let _ = writeln!(out, " notes |");
        let _ = write!(out, "|---|");
        if with_copies {
            let _ = write!(out, "---:|");
        }
        let _ = writeln!(out, "{}---|", "---:|".repeat(cols.len()));
        for m in &mechs {
            let _ = write!(out, "| {m} |");
            if with_copies {
                let copies = self
                    .rows
                    .iter()
                    .find(|r| groups.contains(&r.group.as_str()) && &r.mechanism == m);
                let _ = write!(
                    out,
                    " {} |",
                    copies
                        .and_then(|r| r.copies)
                        .map(|c| c.to_string())
                        .unwrap_or_default()
                );
            }
            for c in cols {
                let Some(row) = self.find(groups, m, c) else {
                    let _ = write!(out, " |");
                    continue;
                };
                let mut cell = fmt_ns(row.ns);
                if throughput && row.nbytes > 0 && row.ns > 0.0 {
                    let _ = write!(cell, ", {:.2} GB/s", row.nbytes as f64 / row.ns);
                }
                if let Some(r) = reference.and_then(|rf| self.find(groups, rf, c)) {
                    if r.ns > 0.0 {
                        let _ = write!(cell, " ({:.2}×)", row.ns / r.ns);
                    }
                }
                let _ = write!(out, " {cell} |");
            }
            let _ = writeln!(out, " {} |", self.notes(groups, m));
        }
        out.push('\n');
    }

    pub fn markdown(&self) -> String {
        let mut s = String::from("# ffi-harness benchmarks: latest run\n\n");
        for h in &self.header {
            let _ = writeln!(s, "- {h}");
        }
        s.push('\n');
        s.push_str(
            "ns per call from Python bytecode (one compiled driver loop per mechanism), median of criterion's \
             samples, empty-loop baseline subtracted. `(n×)` is the ratio to the reference row named above \
             each table. Shared, noisy machine: read ratios, not the last digit.\n\n",
        );
        s.push_str(&format!("## Call overhead (× {FASTCALL})\n\n"));
        s.push_str(
            "0/1/5 args call capi/shapes.c (`shapes_zero/one/five`); 2 args call libnative's `native_add(a, b, &out)`. \
             The PyO3 0/1/5-arg row is the bench's own `#[pyfunction]`s; its 2-arg row is the real `native.add`. \
             Likewise the Cython 2-arg row is the real Cython binding's `add` (pytests/bindings/cython/), its 0/1/5-arg \
             row `_cython_shapes`; pybind11 and nanobind (rows present when installed) bind the same C functions \
             with `m.def` (benches/py/cpp_bench.cpp).\n\n",
        );
        let call_groups = [
            "call_0_args",
            "call_1_arg",
            "call_2_args",
            "call_5_args",
            "floor_call",
        ];
        self.table(&mut s, &call_groups, &ARGS, Some(FASTCALL), false);

        s.push_str(&format!(
            "## checksum throughput (× {BARE_C} time; copies of the input per call)\n\n"
        ));
        let ck = [
            "checksum_64B",
            "checksum_64KiB",
            "checksum_1MiB",
            "floor_checksum",
        ];
        self.table(&mut s, &ck, &SIZES, Some(BARE_C), true);
        if let (Some(p), Some(c)) = (
            self.find(&ck, "PyO3 native.checksum", "1 MiB"),
            self.find(&ck, BARE_C, "1 MiB"),
        ) {
            let _ = writeln!(
                s,
                "native.checksum at 1 MiB reaches **{:.3}×** bare-C throughput (target ≥ 0.95).\n",
                c.ns / p.ns
            );
        }
        if let (Some(p), Some(c)) = (
            self.find(&ck, "Cython checksum", "1 MiB"),
            self.find(&ck, BARE_C, "1 MiB"),
        ) {
            let _ = writeln!(
                s,
                "The Cython binding's checksum (typed memoryview) at 1 MiB: **{:.3}×** bare-C throughput.\n",
                c.ns / p.ns
            );
        }
        let _ = writeln!(
            s,
            "## Handle method: `conn.get(key)` of a 16-byte value (× PyO3)\n"
        );
        self.table(
            &mut s,
            &["handle_get"],
            &["get"],
            Some("PyO3 Connection.get"),
            false,
        );
        let _ = writeln!(
            s,
            "## Callback round trip: C notifier thread → Python (per put)\n"
        );
        let _ = writeln!(
            s,
            "`put alone` has no subscriber; `put → callback` waits until the callback, run on libnative's notifier \
             thread, releases a lock the main thread blocks on. The difference is the notification latency.\n"
        );
        self.table(
            &mut s,
            &["callback"],
            &["put alone", "put → callback"],
            None,
            false,
        );
        let _ = writeln!(s, "## Struct conversion: dict → native_options (× PyO3)\n");
        self.table(
            &mut s,
            &["struct_options"],
            &["from dict"],
            Some("PyO3 Options.from_mapping"),
            false,
        );
        let _ = writeln!(
            s,
            "## Rust → Python (calls made from Rust with `call1`, not a Python user's cost)\n"
        );
        self.table(
            &mut s,
            &["rust_to_python"],
            &["2 args"],
            Some("C-API METH_FASTCALL add"),
            false,
        );
        s
    }

    /// Call overhead by number of arguments, one line per mechanism, log scale.
    pub fn plot(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let groups = [
            "call_0_args",
            "call_1_arg",
            "call_2_args",
            "call_5_args",
            "floor_call",
        ];
        let xs: BTreeMap<&str, f64> = [
            ("0 args", 0.0),
            ("1 arg", 1.0),
            ("2 args", 2.0),
            ("5 args", 5.0),
        ]
        .into();
        let mechs = self.mechanisms(&groups);
        let series: Vec<(String, Vec<(f64, f64)>)> = mechs
            .iter()
            .map(|m| {
                let pts = ARGS
                    .iter()
                    .filter_map(|c| self.find(&groups, m, c).map(|r| (xs[c], r.ns.max(0.3))))
                    .collect();
                (m.clone(), pts)
            })
            .collect();
        let ymax = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|p| p.1))
            .fold(1.0, f64::max)
            * 1.5;
        let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let (plot_area, legend_area) = root.split_horizontally(640);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(
                "Python → C call overhead (ns/call, log scale)",
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.3f64..5.3f64, (0.3f64..ymax).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("arguments")
            .y_desc("ns per call (baseline subtracted)")
            .x_labels(6)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| {
                if *y >= 1.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y:.1}")
                }
            })
            .draw()?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?;
            chart.draw_series(
                pts.iter()
                    .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
            )?;
            // Legend in its own area, so no line is hidden behind it.
            let y = 50 + 24 * i as i32;
            legend_area.draw(&PathElement::new(
                vec![(5, y), (30, y)],
                color.stroke_width(3),
            ))?;
            legend_area.draw(&Circle::new((17, y), 4, color.filled()))?;
            let label = match pts.iter().find(|p| p.0 == 2.0) {
                Some(p) => format!("{name}  ({:.0} ns @2)", p.1),
                None => name.clone(),
            };
            legend_area.draw(&Text::new(
                label,
                (38, y - 7),
                ("sans-serif", 13).into_font(),
            ))?;
        }
        root.present()?;
        Ok(())
    }
}

/// "YYYY-MM-DD HH:MM UTC" without a date crate.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}
