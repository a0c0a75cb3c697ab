//! Leak hunt in the style of CPython's `regrtest -R`: run a scenario for some
//! warm-up rounds (caches fill, lazy imports happen), then for N measured rounds,
//! sampling after each round:
//!
//! - `sys.gettotalrefcount()` (debug builds of CPython only),
//! - `sys.getallocatedblocks()` (pymalloc blocks; always 0 under `PYTHONMALLOC=malloc`),
//! - `len(gc.get_objects())`,
//! - open file descriptors (`/proc/self/fd`),
//! - the user's ledger counters (live native handles, allocations, ...).
//!
//! A metric that grows in EVERY measured round is a leak (regrtest's rule for
//! refs and blocks: one-off growth is a cache, steady growth is a leak).

use std::fmt;

use pyo3::prelude::*;

use crate::oracles::{Ledger, OracleFailure};

/// Reads native counters (see [`crate::LedgerOracle`]).
pub type LedgerReader<'a> = Box<dyn FnMut(Python<'_>) -> PyResult<Ledger> + 'a>;

/// Configuration of a leak hunt; run it with [`LeakHunt::run`].
///
/// ```no_run
/// # use pyo3::prelude::*;
/// # use ffi_harness::LeakHunt;
/// # fn demo(py: Python<'_>) -> PyResult<()> {
/// let report = LeakHunt { rounds: 6, ..LeakHunt::default() }
///     .run(py, |py| { py.run(c"bytearray(1000)", None, None) })?;
/// println!("{report}");
/// report.check().unwrap();
/// # Ok(()) }
/// ```
pub struct LeakHunt<'a> {
    /// Rounds run before measuring (regrtest's default is 3).
    pub warmup: usize,
    /// Measured rounds (at least 2 for the rule to mean anything).
    pub rounds: usize,
    /// Scenario runs per round: raise it to lift a small leak above noise.
    pub runs_per_round: usize,
    /// Optional native counters, sampled with the Python metrics.
    pub ledger: Option<LedgerReader<'a>>,
}

impl Default for LeakHunt<'_> {
    fn default() -> Self {
        LeakHunt {
            warmup: 3,
            rounds: 5,
            runs_per_round: 1,
            ledger: None,
        }
    }
}

/// One metric's samples: the baseline after warm-up, then one per measured round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSeries {
    /// Metric name (`"gc_objects"`, `"ledger:handles"`, ...).
    pub name: String,
    /// `rounds + 1` samples; `None` if the metric is unavailable here.
    pub samples: Option<Vec<i64>>,
}

impl MetricSeries {
    /// Growth in each measured round.
    pub fn deltas(&self) -> Vec<i64> {
        match &self.samples {
            Some(samples) => samples.windows(2).map(|w| w[1] - w[0]).collect(),
            None => Vec::new(),
        }
    }

    /// True if the metric grew in every measured round.
    pub fn is_leaking(&self) -> bool {
        let deltas = self.deltas();
        !deltas.is_empty() && deltas.iter().all(|d| *d >= 1)
    }
}

/// What a leak hunt measured. `Display` prints the per-round deltas table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakReport {
    /// Warm-up rounds run.
    pub warmup: usize,
    /// Scenario runs per round.
    pub runs_per_round: usize,
    /// All metrics, in a fixed order (Python metrics first, then ledger counters).
    pub metrics: Vec<MetricSeries>,
}

impl LeakReport {
    /// Metrics that grew in every measured round.
    pub fn leaking(&self) -> Vec<&MetricSeries> {
        self.metrics.iter().filter(|m| m.is_leaking()).collect()
    }

    /// True if any metric leaks.
    pub fn is_leaking(&self) -> bool {
        !self.leaking().is_empty()
    }

    /// `Err` with the whole table if anything leaks.
    pub fn check(&self) -> Result<(), OracleFailure> {
        let leaking: Vec<&str> = self.leaking().iter().map(|m| m.name.as_str()).collect();
        if leaking.is_empty() {
            Ok(())
        } else {
            Err(OracleFailure::new(
                "leak-hunt",
                format!("grew in every round: {}\n{self}", leaking.join(", ")),
            ))
        }
    }
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rounds = self
            .metrics
            .iter()
            .map(|m| m.deltas().len())
            .max()
            .unwrap_or(0);
        writeln!(
            f,
            "leak hunt: {} warm-up round(s), {rounds} measured round(s) of {} run(s); deltas per round:",
            self.warmup, self.runs_per_round
        )?;
        let width = self
            .metrics
            .iter()
            .map(|m| m.name.len())
            .max()
            .unwrap_or(6)
            .max(6);
        write!(f, "  {:<width$}", "metric")?;
        for round in 1..=rounds {
            write!(f, " {:>8}", format!("r{round}"))?;
        }
        writeln!(f, "  verdict")?;
        for metric in &self.metrics {
            write!(f, "  {:<width$}", metric.name)?;
            match &metric.samples {
                None => writeln!(f, " {:>8}  unavailable", "-")?,
                Some(_) => {
                    for delta in metric.deltas() {
                        write!(f, " {:>8}", format!("{delta:+}"))?;
                    }
                    writeln!(f, "  {}", if metric.is_leaking() { "LEAK" } else { "ok" })?;
                }
            }
        }
        Ok(())
    }
}

impl<'a> LeakHunt<'a> {
    /// The same hunt, also sampling native counters with `read`.
    pub fn with_ledger<F>(mut self, read: F) -> Self
    where
        F: FnMut(Python<'_>) -> PyResult<Ledger> + 'a,
    {
        self.ledger = Some(Box::new(read));
        self
    }

    /// Warm up, then measure `rounds` rounds of `scenario`. A scenario error aborts
    /// the hunt (it is not a leak verdict; check exceptions inside the scenario).
    pub fn run<F>(mut self, py: Python<'_>, mut scenario: F) -> PyResult<LeakReport>
    where
        F: FnMut(Python<'_>) -> PyResult<()>,
    {
        // Sample in warm-up rounds too (and discard those samples), as regrtest
        // does: the sampling code's own first-time allocations must not land in
        // the first measured delta.
        let mut samples = vec![self.sample(py)?];
        for _ in 0..self.warmup + self.rounds {
            for _ in 0..self.runs_per_round {
                scenario(py)?;
            }
            samples.push(self.sample(py)?);
        }
        let samples = samples.split_off(self.warmup);
        Ok(LeakReport {
            warmup: self.warmup,
            runs_per_round: self.runs_per_round,
            metrics: transpose(samples),
        })
    }

    /// Clean up as regrtest does between rounds, then read every metric.
    fn sample(&mut self, py: Python<'_>) -> PyResult<Vec<(String, Option<i64>)>> {
        let sys = py.import("sys")?;
        let gc = py.import("gc")?;
        // Method caches and free lists hold blocks that are not leaks.
        if sys.hasattr("_clear_type_cache")? {
            sys.call_method0("_clear_type_cache")?;
        }
        gc.call_method0("collect")?;
        let mut out = Vec::new();
        let total_refs = if sys.hasattr("gettotalrefcount")? {
            Some(sys.call_method0("gettotalrefcount")?.extract()?)
        } else {
            None
        };
        out.push(("total_refs".to_owned(), total_refs));
        out.push((
            "allocated_blocks".to_owned(),
            Some(sys.call_method0("getallocatedblocks")?.extract()?),
        ));
        out.push((
            "gc_objects".to_owned(),
            Some(gc.call_method0("get_objects")?.len()? as i64),
        ));
        out.push(("open_fds".to_owned(), open_fds()));
        if let Some(ledger) = self.ledger.as_mut() {
            for (name, value) in ledger(py)? {
                out.push((format!("ledger:{name}"), Some(value)));
            }
        }
        Ok(out)
    }
}

/// Number of open file descriptors, where `/proc/self/fd` exists.
pub fn open_fds() -> Option<i64> {
    // The directory handle itself is one fd: constant across samples, so harmless.
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count() as i64)
}

/// Turn per-sample rows into per-metric series (a ledger key missing from some
/// samples makes that series unavailable rather than misaligned).
fn transpose(samples: Vec<Vec<(String, Option<i64>)>>) -> Vec<MetricSeries> {
    let mut names: Vec<String> = Vec::new();
    for row in &samples {
        for (name, _) in row {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
        .into_iter()
        .map(|name| {
            let values: Option<Vec<i64>> = samples
                .iter()
                .map(|row| row.iter().find(|(n, _)| *n == name).and_then(|(_, v)| *v))
                .collect();
            MetricSeries {
                name,
                samples: values,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_growth_is_a_leak_and_one_off_growth_is_not() {
        let leak = MetricSeries {
            name: "x".into(),
            samples: Some(vec![10, 15, 20, 26]),
        };
        let cache = MetricSeries {
            name: "y".into(),
            samples: Some(vec![10, 13, 13, 14]),
        };
        assert!(leak.is_leaking());
        assert!(!cache.is_leaking());
        let report = LeakReport {
            warmup: 1,
            runs_per_round: 1,
            metrics: vec![leak, cache],
        };
        let text = report.to_string();
        assert!(text.contains("LEAK") && text.contains("+5"), "{text}");
        assert!(report.check().is_err());
    }
}
