//! Reproducers: turn a failing input into a standalone `repro.py` that rebuilds
//! the objects (through the embedded prelude) and replays the steps against the
//! installed module, so `python repro.py` shows the bug without Rust in the loop.
//! Also: crash artifact bytes → the fuzz target's input, exactly as libFuzzer did it.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};

use crate::oracles::AllowedExceptions;
use crate::prelude::{PRELUDE_ALIAS, PRELUDE_MODULE, PRELUDE_SOURCE};
use crate::pyvalue::{PyValue, str_literal};
use crate::scenario::Scenario;

/// What every reproducer of one target shares: the setup snippet, the documented
/// exceptions, and how to run it (the environment the bug class needs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReproConfig {
    /// Python run after the prelude and before the inputs, e.g. `import native`,
    /// `conn = native.connect(...)`, `_fh.set_reenter_hook(lambda n: conn.close())`.
    pub setup: String,
    /// Exceptions each step may raise without it being a failure (names as in
    /// [`AllowedExceptions`]; `SystemError` is never allowed).
    pub allowed_exceptions: Vec<String>,
    /// Environment assignments for the run command (`PYTHONMALLOC=malloc`, ...).
    pub env: Vec<(String, String)>,
    /// Extra header comment lines (why this environment, where the artifact came from).
    pub notes: Vec<String>,
}

impl ReproConfig {
    /// A config with `setup` as the setup snippet.
    pub fn new(setup: impl Into<String>) -> Self {
        ReproConfig {
            setup: setup.into(),
            ..Self::default()
        }
    }

    /// Use the names of `allowed` as the allowed exceptions.
    pub fn allow(mut self, allowed: &AllowedExceptions) -> Self {
        self.allowed_exceptions = allowed.names().to_vec();
        self
    }

    /// Add `KEY=value` to the run command.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Add a header comment line.
    pub fn note(mut self, line: impl Into<String>) -> Self {
        self.notes.push(line.into());
        self
    }

    /// Memory-safety bugs: preload clang's ASan runtime (the extension was built
    /// with `-fsanitize=address`, python was not), route every Python allocation
    /// through malloc so an over-decref is a real heap-use-after-free, and silence
    /// the interpreter's own at-exit "leaks".
    pub fn asan(self, clang: &str) -> Self {
        self.env(
            "LD_PRELOAD",
            format!("$({clang} -print-file-name=libclang_rt.asan-x86_64.so)"),
        )
        .env("PYTHONMALLOC", "malloc")
        .env(
            "ASAN_OPTIONS",
            format!("detect_leaks=0:{}", crate::fuzz_target::ASAN_FREE_FILL),
        )
    }

    /// GIL-discipline bugs: `PYTHONMALLOC=debug` aborts on allocator use without the GIL.
    pub fn python_debug_malloc(self) -> Self {
        self.env("PYTHONMALLOC", "debug")
            .env("PYTHONFAULTHANDLER", "1")
    }

    /// The command line printed in the header.
    pub fn run_command(&self, script_name: &str) -> String {
        let mut cmd = String::new();
        for (key, value) in &self.env {
            let _ = write!(cmd, "{key}={value} ");
        }
        let _ = write!(cmd, "python {script_name}");
        cmd
    }
}

/// One reproducer: header text, named inputs, and the steps to replay.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReproScript {
    config: ReproConfig,
    failure: Option<String>,
    bindings: Vec<(String, PyValue)>,
    steps: Vec<String>,
    epilogue: String,
}

impl ReproScript {
    /// An empty script using `config`.
    pub fn new(config: &ReproConfig) -> Self {
        ReproScript {
            config: config.clone(),
            ..Self::default()
        }
    }

    /// Record what failed (printed as a header comment).
    pub fn failure(mut self, failure: impl std::fmt::Display) -> Self {
        self.failure = Some(failure.to_string());
        self
    }

    /// Bind `name = <value>` before the steps.
    pub fn bind(mut self, name: impl Into<String>, value: &PyValue) -> Self {
        self.bindings.push((name.into(), value.clone()));
        self
    }

    /// Bind `arg0`, `arg1`, ... to `values`.
    pub fn bind_args(mut self, values: &[PyValue]) -> Self {
        for (i, value) in values.iter().enumerate() {
            self = self.bind(format!("arg{i}"), value);
        }
        self
    }

    /// Add one step (Python statements; may span lines).
    pub fn step(mut self, code: impl Into<String>) -> Self {
        self.steps.push(code.into());
        self
    }

    /// Add `scenario`'s set-up and steps (what it would run from Rust, as Python).
    pub fn scenario<S: Scenario>(self, scenario: &S) -> Self {
        scenario.repro(self)
    }

    /// Append Python to the set-up (after the configuration's own, before the bindings and steps):
    /// helpers a scenario's steps call.
    pub fn setup(mut self, code: &str) -> Self {
        if !self.config.setup.ends_with('\n') && !self.config.setup.is_empty() {
            self.config.setup.push('\n');
        }
        self.config.setup.push_str(code);
        self
    }

    /// Python run after all steps (e.g. `gc.collect()` and a ledger assertion).
    pub fn epilogue(mut self, code: impl Into<String>) -> Self {
        self.epilogue = code.into();
        self
    }

    /// The script text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let cfg = &self.config;
        out.push_str("#!/usr/bin/env python3\n");
        out.push_str(
            "# Reproducer generated by ffi-harness: rebuilds the failing input and replays it.\n",
        );
        if let Some(failure) = &self.failure {
            out.push_str("#\n# Failure:\n");
            for line in failure.lines() {
                let _ = writeln!(out, "#   {line}");
            }
        }
        out.push_str("#\n# Run with:\n");
        let _ = writeln!(out, "#   {}", cfg.run_command("repro.py"));
        for note in &cfg.notes {
            let _ = writeln!(out, "# {note}");
        }
        out.push_str(
            "#\n# An unexpected exception propagates (exit 1); a crash kills the interpreter.\n\n",
        );

        // The prelude, embedded verbatim and registered under its module name, so
        // its classes' __module__ and repr match what the fuzzer built.
        out.push_str("import sys as _sys\nimport types as _types\n\n");
        let _ = writeln!(out, "_PRELUDE_SOURCE = r'''{PRELUDE_SOURCE}'''\n");
        let _ = writeln!(out, "_prelude = _types.ModuleType({PRELUDE_MODULE:?})");
        let _ = writeln!(out, "_sys.modules[{PRELUDE_MODULE:?}] = _prelude");
        let _ = writeln!(
            out,
            "exec(compile(_PRELUDE_SOURCE, \"{PRELUDE_MODULE}.py\", \"exec\"), _prelude.__dict__)"
        );
        let _ = writeln!(
            out,
            "import {PRELUDE_MODULE} as {PRELUDE_ALIAS}  # noqa: E402\n"
        );

        out.push_str("# --- setup ---\n");
        out.push_str(cfg.setup.trim_end());
        out.push_str("\n\n");

        let allowed: Vec<&str> = cfg
            .allowed_exceptions
            .iter()
            .map(String::as_str)
            .filter(|name| *name != "SystemError")
            .collect();
        let _ = writeln!(
            out,
            "# Documented exceptions: raising one of these is not the bug.\n_ALLOWED = ({}{})\n",
            allowed.join(", "),
            if allowed.len() == 1 { "," } else { "" }
        );

        if !self.bindings.is_empty() {
            out.push_str("# --- inputs ---\n");
            for (name, value) in &self.bindings {
                let _ = writeln!(out, "{name} = {}", value.to_python_source());
            }
            out.push('\n');
        }

        out.push_str("# --- steps ---\n");
        for (i, step) in self.steps.iter().enumerate() {
            let title: Vec<u32> = first_line(step).chars().map(u32::from).collect();
            let _ = writeln!(
                out,
                "print('step {i}:', {}, flush=True)",
                str_literal(&title)
            );
            out.push_str("try:\n");
            for line in step.lines() {
                let _ = writeln!(out, "    {line}");
            }
            if step.trim().is_empty() {
                out.push_str("    pass\n");
            }
            // SystemError is never documented behaviour, even if a listed type is a base of it.
            out.push_str("except SystemError:\n    raise\n");
            let _ = writeln!(
                out,
                "except _ALLOWED as _exc:\n    print('  allowed', type(_exc).__name__ + ':', _exc, flush=True)"
            );
        }

        if !self.epilogue.trim().is_empty() {
            out.push_str("\n# --- epilogue ---\n");
            out.push_str(self.epilogue.trim_end());
            out.push('\n');
        }
        out.push_str("\nprint('repro finished without an unexpected exception', flush=True)\n");
        out
    }
}

fn first_line(step: &str) -> &str {
    step.lines().next().unwrap_or("")
}

/// Write `script` to `path` (a `repro.py`), executable.
pub fn write_repro(path: impl AsRef<Path>, script: &ReproScript) -> io::Result<()> {
    let path = path.as_ref();
    std::fs::write(path, script.render())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Decode a cargo-fuzz crash artifact into the target's input type exactly as
/// `fuzz_target!(|input: T| ...)` did (`Unstructured::new` + `arbitrary_take_rest`).
pub fn input_from_artifact<T>(bytes: &[u8]) -> arbitrary::Result<T>
where
    T: for<'a> Arbitrary<'a>,
{
    T::arbitrary_take_rest(Unstructured::new(bytes))
}

/// Read a crash artifact file (e.g. `fuzz/artifacts/<target>/crash-…`) and decode it.
pub fn read_artifact<T>(path: impl AsRef<Path>) -> io::Result<T>
where
    T: for<'a> Arbitrary<'a>,
{
    let bytes = std::fs::read(path)?;
    input_from_artifact(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prelude_embeds_as_a_raw_triple_quoted_string() {
        assert!(!PRELUDE_SOURCE.contains("'''"));
        assert!(!PRELUDE_SOURCE.trim_end().ends_with('\\'));
    }

    #[test]
    fn header_prints_the_environment() {
        let config = ReproConfig::new("import json").asan("clang-19");
        let text = ReproScript::new(&config).render();
        assert!(text.contains(
            "LD_PRELOAD=$(clang-19 -print-file-name=libclang_rt.asan-x86_64.so) \
             PYTHONMALLOC=malloc ASAN_OPTIONS=detect_leaks=0:max_free_fill_size=4096 python repro.py"
        ));
    }
}
