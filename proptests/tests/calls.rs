//! Every public function and method of `native`, called with random arguments (harness `PyValue`s,
//! mixed with well-formed ones so the success paths run too), under three oracles:
//!
//! - refcount neutrality: every argument that is a fresh heap object, and the receiver, has the same
//!   refcount after the call as before (harness `check_call`);
//! - sole ownership: a returned object is referenced by the caller alone (`check_sole_owner`), and so
//!   is every item an iterator yields;
//! - exceptions: only the documented types escape (`proptests::allowed()`), never SystemError or
//!   PanicException.
//!
//! One property per entry point, each case in a forked child (a crash is a failing case). Every case
//! gets a fresh connection holding the pool keys, a live subscription, a Stats, an Options and an
//! items() iterator as receivers, and a re-entrancy hook that closes the connection (hostile
//! `Reenter` values pull the rug from under the call).

use std::cell::RefCell;

use ffi_harness::strategies::{buffer_value, int_value, leaf_callable, payload, pyvalue_strategy};
use ffi_harness::{
    CallableValue, DictKey, OracleFailure, PyValue, StrPiece, StrValue, check_call,
    check_sole_owner, set_reenter_hook,
};
use native_testkit::{Scratch, run_python};
use proptest::prelude::*;
use proptests::inputs::{POOL, key_arg, options_entries, pool_key, safe_rounds};
use proptests::{allowed, config, isolated, regressions, with_python};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyInt, PyString, PyTuple};

const CASES: u32 = 32;

/// What the call is made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    Module,
    OptionsClass,
    Options,
    Conn,
    Sub,
    Stats,
    Iter,
}

/// An argument: a harness value, or a path into the case's store directory.
#[derive(Debug, Clone)]
enum Arg {
    Value(PyValue),
    /// `<dir>/c.db` as str (0), bytes (1) or pathlib.Path (2).
    StorePath(u8),
}

#[derive(Debug, Clone)]
struct Call {
    recv: Recv,
    /// Method name, or attribute name when `getter`.
    name: &'static str,
    getter: bool,
    args: Vec<Arg>,
    kwargs: Vec<(String, Arg)>,
}

fn value(v: PyValue) -> Arg {
    Arg::Value(v)
}

// ---------------------------------------------------------------------------------------------
// Argument strategies.

fn any_arg() -> impl Strategy<Value = Arg> {
    pyvalue_strategy(2).prop_map(value)
}

fn int_arg() -> impl Strategy<Value = Arg> {
    prop_oneof![
        2 => int_value().prop_map(|i| value(PyValue::Int(i))),
        1 => pyvalue_strategy(1).prop_map(value),
    ]
}

fn buf_arg() -> impl Strategy<Value = Arg> {
    prop_oneof![
        2 => pool_key().prop_map(value),
        2 => payload().prop_map(|b| value(PyValue::Bytes(b))),
        2 => buffer_value().prop_map(value),
        2 => pyvalue_strategy(2).prop_map(value),
    ]
}

fn key() -> impl Strategy<Value = Arg> {
    key_arg().prop_map(value)
}

fn data_arg() -> impl Strategy<Value = Arg> {
    prop_oneof![
        3 => payload().prop_map(|b| value(PyValue::ByteArray(b))),
        3 => buffer_value().prop_map(value),
        2 => pyvalue_strategy(2).prop_map(value),
    ]
}

fn u32_key_arg() -> impl Strategy<Value = Arg> {
    prop_oneof![
        any::<u32>().prop_map(|k| value(PyValue::Int(ffi_harness::IntValue::Long(i64::from(k))))),
        int_arg(),
    ]
}

fn rounds_arg() -> impl Strategy<Value = Arg> {
    pyvalue_strategy(1)
        .prop_filter("rounds that finish quickly", safe_rounds)
        .prop_map(value)
}

fn callback_arg() -> impl Strategy<Value = Arg> {
    prop_oneof![
        2 => leaf_callable().prop_map(|c| value(PyValue::Callable(c))),
        1 => pyvalue_strategy(1)
            .prop_map(|v| value(PyValue::Callable(CallableValue::Returns(Box::new(v))))),
        1 => pyvalue_strategy(1).prop_map(value),
    ]
}

fn text(name: &str) -> StrValue {
    StrValue(vec![StrPiece::Text(name.to_owned())])
}

/// An options mapping as a dict of (mostly) real field names, or anything at all.
fn options_arg() -> impl Strategy<Value = Arg> {
    prop_oneof![
        2 => options_entries().prop_map(|entries| {
            value(PyValue::Dict(
                entries.into_iter().map(|(k, v)| (DictKey::Str(text(&k)), v)).collect(),
            ))
        }),
        1 => pyvalue_strategy(2).prop_map(value),
    ]
}

/// A path: a real one in the case's directory, or a non-path value (random str/bytes paths could
/// create files anywhere, so text and bytes are only ever the store path).
fn path_arg() -> impl Strategy<Value = Arg> {
    prop_oneof![
        2 => (0..3u8).prop_map(Arg::StorePath),
        1 => pyvalue_strategy(1)
            .prop_filter("no arbitrary file-system paths", |v| {
                !matches!(v, PyValue::Str(_) | PyValue::Bytes(_))
            })
            .prop_map(value),
    ]
}

fn call(
    recv: Recv,
    name: &'static str,
    args: impl Strategy<Value = Vec<Arg>> + 'static,
) -> BoxedStrategy<Call> {
    args.prop_map(move |args| Call {
        recv,
        name,
        getter: false,
        args,
        kwargs: Vec::new(),
    })
    .boxed()
}

fn call0(recv: Recv, name: &'static str) -> BoxedStrategy<Call> {
    call(recv, name, Just(Vec::new()))
}

fn getter(recv: Recv, name: &'static str) -> BoxedStrategy<Call> {
    Just(Call {
        recv,
        name,
        getter: true,
        args: Vec::new(),
        kwargs: Vec::new(),
    })
    .boxed()
}

fn with_kwargs(
    recv: Recv,
    name: &'static str,
    args: impl Strategy<Value = Vec<Arg>> + 'static,
    kwargs: impl Strategy<Value = Vec<(String, Arg)>> + 'static,
) -> BoxedStrategy<Call> {
    (args, kwargs)
        .prop_map(move |(args, kwargs)| Call {
            recv,
            name,
            getter: false,
            args,
            kwargs,
        })
        .boxed()
}

fn optional_kw(
    name: &'static str,
    arg: impl Strategy<Value = Arg>,
) -> impl Strategy<Value = Vec<(String, Arg)>> {
    proptest::option::of(arg)
        .prop_map(move |a| a.into_iter().map(|a| (name.to_owned(), a)).collect())
}

// ---------------------------------------------------------------------------------------------
// One case.

/// A no-op callback and the re-entrancy hook that closes the connection.
const RECEIVERS: &str = include_str!("py/calls_receivers.py");

struct Receivers<'py> {
    module: Bound<'py, PyAny>,
    options_class: Bound<'py, PyAny>,
    options: Bound<'py, PyAny>,
    conn: Bound<'py, PyAny>,
    sub: Bound<'py, PyAny>,
    stats: Bound<'py, PyAny>,
    iter: Bound<'py, PyAny>,
}

impl<'py> Receivers<'py> {
    fn new(py: Python<'py>, dir: &Scratch) -> PyResult<Self> {
        let module = py.import("native")?.into_any();
        let conn = module.call_method1("connect", (dir.path("s.db"),))?;
        for (i, k) in POOL.iter().enumerate() {
            conn.call_method1(
                "put",
                (PyBytes::new(py, k), format!("value-{i}").into_bytes()),
            )?;
        }
        let ns = run_python(py, RECEIVERS, &[])?;
        let sub = conn.call_method1("subscribe", (ns.get_item("noop")?.unwrap(),))?;
        let hook = ns.get_item("closing_hook")?.unwrap().call1((&conn,))?;
        set_reenter_hook(py, &hook)?;
        Ok(Receivers {
            options_class: module.getattr("Options")?,
            options: module.getattr("Options")?.call0()?,
            stats: conn.call_method0("stats")?,
            iter: conn.call_method0("items")?,
            sub,
            conn,
            module,
        })
    }

    fn get(&self, recv: Recv) -> &Bound<'py, PyAny> {
        match recv {
            Recv::Module => &self.module,
            Recv::OptionsClass => &self.options_class,
            Recv::Options => &self.options,
            Recv::Conn => &self.conn,
            Recv::Sub => &self.sub,
            Recv::Stats => &self.stats,
            Recv::Iter => &self.iter,
        }
    }

    fn close(&self, py: Python<'py>) -> PyResult<()> {
        set_reenter_hook(py, &py.None().into_bound(py))?;
        self.sub.call_method0("cancel")?;
        self.conn.call_method0("close")?;
        Ok(())
    }
}

fn materialise<'py>(
    py: Python<'py>,
    arg: &Arg,
    dir: &Scratch,
) -> PyResult<(Bound<'py, PyAny>, bool)> {
    match arg {
        Arg::Value(v) => Ok((v.materialise(py)?, v.is_fresh_heap_object())),
        Arg::StorePath(kind) => {
            let path = dir.path("c.db");
            let obj = match kind {
                0 => PyString::new(py, &path).into_any(),
                1 => PyBytes::new(py, path.as_bytes()).into_any(),
                _ => py.import("pathlib")?.getattr("Path")?.call1((path,))?,
            };
            Ok((obj, true))
        }
    }
}

/// Objects whose refcount says nothing about ownership: singletons, cached small ints, the
/// interpreter's one-character and empty bytes/str, and the receiver itself (`__enter__`).
fn may_be_shared(obj: &Bound<'_, PyAny>, recv: &Bound<'_, PyAny>) -> bool {
    if obj.is_none() || obj.is_instance_of::<PyBool>() || obj.is(recv) {
        return true;
    }
    if obj.is(obj.py().NotImplemented()) {
        return true;
    }
    if obj.is_instance_of::<PyInt>() {
        return obj.extract::<i64>().is_ok_and(|n| (-5..=256).contains(&n));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return b.as_bytes().len() < 2;
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return s.to_str().map(|s| s.chars().count() < 2).unwrap_or(false);
    }
    false
}

fn run_call(py: Python<'_>, call: &Call) -> Result<(), OracleFailure> {
    let setup = |e: PyErr| OracleFailure::new("setup", native_testkit::describe(py, &e));
    let dir = Scratch::new();
    let recvs = Receivers::new(py, &dir).map_err(setup)?;
    let recv = recvs.get(call.recv).clone();

    let mut fresh: Vec<(String, Bound<'_, PyAny>)> = Vec::new();
    if !matches!(call.recv, Recv::Module | Recv::OptionsClass) {
        fresh.push(("self".to_owned(), recv.clone()));
    }
    let mut args = Vec::new();
    for (i, arg) in call.args.iter().enumerate() {
        let (obj, is_fresh) = materialise(py, arg, &dir).map_err(setup)?;
        if is_fresh {
            fresh.push((format!("arg{i}"), obj.clone()));
        }
        args.push(obj);
    }
    let kwargs = PyDict::new(py);
    for (name, arg) in &call.kwargs {
        let (obj, is_fresh) = materialise(py, arg, &dir).map_err(setup)?;
        if is_fresh {
            fresh.push((name.clone(), obj.clone()));
        }
        kwargs.set_item(name, obj).map_err(setup)?;
    }
    let tracked: Vec<(&str, &Bound<'_, PyAny>)> = fresh
        .iter()
        .map(|(label, obj)| (label.as_str(), obj))
        .collect();

    let ownership: RefCell<Option<OracleFailure>> = RefCell::new(None);
    let owned = |label: &str, obj: &Bound<'_, PyAny>| {
        if !may_be_shared(obj, &recv)
            && let Err(f) = check_sole_owner(label, obj)
        {
            ownership.borrow_mut().get_or_insert(f);
        }
    };
    let result = check_call(py, &tracked, &allowed(), || {
        let returned = if call.getter {
            recv.getattr(call.name)?
        } else if call.recv == Recv::OptionsClass && call.name == "__call__" {
            recv.call((), Some(&kwargs))?
        } else {
            let args = PyTuple::new(py, &args)?;
            recv.call_method(call.name, args, Some(&kwargs))?
        };
        owned("returned object", &returned);
        // Iterators: every item is the caller's alone too.
        if matches!(call.name, "items" | "keys" | "__iter__") {
            while let Some(item) = returned.call_method0("__next__").map(Some).or_else(|e| {
                if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) {
                    Ok(None)
                } else {
                    Err(e)
                }
            })? {
                owned("yielded item", &item);
            }
        }
        // Resources the call created go back before refcounts are compared.
        let type_name = returned.get_type().name()?.to_string();
        match type_name.as_str() {
            "Connection" => {
                returned.call_method0("close")?;
            }
            "Subscription" => {
                returned.call_method0("cancel")?;
            }
            _ => {}
        }
        Ok(())
    });
    drop(args);
    recvs.close(py).map_err(setup)?;
    result?;
    match ownership.into_inner() {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

fn check(call: &Call) -> Result<(), TestCaseError> {
    with_python(|py| isolated(py, |py| run_call(py, call).map_err(|f| f.to_string())))
        .map_err(TestCaseError::fail)
}

macro_rules! call_properties {
    ($($name:ident => $strategy:expr;)*) => {$(
        proptest! {
            #![proptest_config(config(CASES, regressions!("calls")))]
            #[test]
            fn $name(call in $strategy) {
                check(&call)?;
            }
        }
    )*};
}

call_properties! {
    add => call(Recv::Module, "add", (int_arg(), int_arg()).prop_map(|(a, b)| vec![a, b]));
    add_fast => call(Recv::Module, "add_fast", (int_arg(), int_arg()).prop_map(|(a, b)| vec![a, b]));
    checksum => call(Recv::Module, "checksum", buf_arg().prop_map(|a| vec![a]));
    process => with_kwargs(
        Recv::Module,
        "process",
        data_arg().prop_map(|a| vec![a]),
        (optional_kw("key", u32_key_arg()), optional_kw("rounds", rounds_arg()))
            .prop_map(|(mut a, b)| { a.extend(b); a }),
    );
    connect => with_kwargs(
        Recv::Module,
        "connect",
        path_arg().prop_map(|a| vec![a]),
        (optional_kw("options", options_arg()), optional_kw("timeout", any_arg()))
            .prop_map(|(mut a, b)| { a.extend(b); a }),
    );
    debug_counters => call0(Recv::Module, "debug_counters");
    options_new => options_entries().prop_map(|entries| Call {
        recv: Recv::OptionsClass,
        name: "__call__",
        getter: false,
        args: Vec::new(),
        kwargs: entries.into_iter().map(|(k, v)| (k, value(v))).collect(),
    });
    options_from_mapping => call(Recv::OptionsClass, "from_mapping", options_arg().prop_map(|a| vec![a]));
    options_to_dict => call0(Recv::Options, "to_dict");
    options_eq => call(Recv::Options, "__eq__", any_arg().prop_map(|a| vec![a]));
    options_repr => call0(Recv::Options, "__repr__");
    conn_close => call0(Recv::Conn, "close");
    conn_closed => getter(Recv::Conn, "closed");
    conn_path => getter(Recv::Conn, "path");
    conn_put => call(Recv::Conn, "put", (key(), buf_arg()).prop_map(|(a, b)| vec![a, b]));
    conn_get => call(Recv::Conn, "get", key().prop_map(|a| vec![a]));
    conn_delete => call(Recv::Conn, "delete", key().prop_map(|a| vec![a]));
    conn_len => call0(Recv::Conn, "__len__");
    conn_contains => call(Recv::Conn, "__contains__", key().prop_map(|a| vec![a]));
    conn_getitem => call(Recv::Conn, "__getitem__", key().prop_map(|a| vec![a]));
    conn_setitem => call(Recv::Conn, "__setitem__", (key(), buf_arg()).prop_map(|(a, b)| vec![a, b]));
    conn_delitem => call(Recv::Conn, "__delitem__", key().prop_map(|a| vec![a]));
    conn_items => call0(Recv::Conn, "items");
    conn_keys => call0(Recv::Conn, "keys");
    conn_iter => call0(Recv::Conn, "__iter__");
    conn_flush => call0(Recv::Conn, "flush");
    conn_stats => call0(Recv::Conn, "stats");
    conn_subscribe => call(Recv::Conn, "subscribe", callback_arg().prop_map(|a| vec![a]));
    conn_enter => call0(Recv::Conn, "__enter__");
    conn_exit => call(Recv::Conn, "__exit__", proptest::collection::vec(any_arg(), 0..=3));
    conn_repr => call0(Recv::Conn, "__repr__");
    sub_cancel => call0(Recv::Sub, "cancel");
    sub_active => getter(Recv::Sub, "active");
    sub_enter => call0(Recv::Sub, "__enter__");
    sub_exit => call(Recv::Sub, "__exit__", proptest::collection::vec(any_arg(), 0..=3));
    sub_repr => call0(Recv::Sub, "__repr__");
    stats_to_dict => call0(Recv::Stats, "to_dict");
    stats_eq => call(Recv::Stats, "__eq__", any_arg().prop_map(|a| vec![a]));
    stats_hash => call0(Recv::Stats, "__hash__");
    stats_repr => call0(Recv::Stats, "__repr__");
    stats_field => getter(Recv::Stats, "file_bytes");
    iter_next => call0(Recv::Iter, "__next__");
}
