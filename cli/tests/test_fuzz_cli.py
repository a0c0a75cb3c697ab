"""`ffi-harness fuzz` and `ffi-harness repro` end to end, on the deliberately buggy fixture extension.

One fuzz run of the instrumented build must find every bug class the fixture plants (heap overflow,
over-decref, SystemError, leaked reference, a leaked __index__ answer, use-after-free), each with a minimised repro that
`ffi-harness repro` reproduces; an uninstrumented build says so and still runs; a pure-Python or
missing module is a usage error.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from buggy_build import FIXTURE
from conftest import CLI, cli_env

EXPECTED = {
    ("heap-buffer-overflow", "table_get"),
    ("over-decref", "pop_last"),
    ("SystemError", "describe"),
    ("refcount-leak", "remember"),
    ("refcount-leak", "as_size"),
    ("refcount-leak", "each_entry"),
    ("heap-use-after-free", "Counter_incr"),
}
if sys.version_info < (3, 12):  # None is mortal: table_find's `return Py_None;` takes a reference from it
    EXPECTED.add(("over-decref", "table_find"))
# table_get's read past the table is one bug that ASan names by where the index lands: next to the table
# (heap-buffer-overflow), in memory freed earlier (heap-use-after-free) or unmapped (SEGV). Whichever comes
# first is masked by its shape (a plain int), so a run reports that one only (a rehearsal's SEGV at 16381).
_TABLE_GET_READ = {"heap-buffer-overflow", "heap-use-after-free", "SEGV"}


def _planted(kind: str, site: str) -> tuple[str, str]:
    """The planted bug a report names (EXPECTED's spelling)."""
    return ("heap-buffer-overflow", site) if site == "table_get" and kind in _TABLE_GET_READ else (kind, site)


def _fuzz(
    site: Path | None, tmp: Path, *extra: str, timeout: float = 300
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    summary = tmp / "summary.json"
    cmd = [CLI, "fuzz", *extra, "--artifacts", str(tmp / "art"), "--json", str(summary)]
    p = subprocess.run(cmd, env=cli_env(site), capture_output=True, text=True, timeout=timeout, check=False)
    data = json.loads(summary.read_text()) if summary.exists() else {}
    return p, data


@pytest.fixture(scope="module")
def asan_run(
    buggy_asan: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("fuzz-asan")
    return _fuzz(buggy_asan, tmp, "buggy", "--max-time", "90", "--timeout", "2", "--minimise-time", "8", "--seed", "7")


def test_finds_every_planted_bug(asan_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    p, data = asan_run
    assert p.returncode == 1, p.stdout + p.stderr
    found = {_planted(f["kind"], f["site"]) for f in data["findings"]}
    assert EXPECTED <= found, p.stdout
    assert data["exercised"] >= 8 and data["execs"] > 1000, p.stdout
    assert "libFuzzer-guided" in p.stdout and data["native_edges"] > 20


def test_each_repro_reproduces_and_is_minimal(
    asan_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]], buggy_asan: Path
) -> None:
    _p, data = asan_run
    for f in data["findings"]:
        if (f["kind"], f["site"]) not in EXPECTED:
            continue
        assert f["reproduced"], f
        assert f["steps"] <= (3 if f["kind"] == "heap-use-after-free" else 1), f
        # The detail and the log beside the repro are the minimised program's: no step past its last.
        log = Path(f["repro"]).with_suffix(".log").read_text()
        named = [int(n) for n in re.findall(r"FFI_HARNESS_STEP (\d+)", log) + re.findall(r"step (\d+)", f["detail"])]
        assert named and max(named) < f["steps"], (f, log[-2000:])
        r = subprocess.run([CLI, "repro", f["repro"]], env=cli_env(None), capture_output=True, text=True, check=False)
        assert r.returncode == 1, (f, r.stdout, r.stderr)
        assert f["kind"] in r.stdout


def test_a_crashing_corpus_input_is_moved_out_and_the_run_goes_on(
    asan_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]], buggy_asan: Path, tmp_path: Path
) -> None:
    # A resumed session's corpus can hold inputs that crash (saved while their shape was masked): each
    # engine run would die loading the corpus, before any fuzzing. The earlier session's own crash
    # artifacts decode to other calls once a callable was left out of its plan, and a near out-of-range
    # read need not crash in a fresh process, so the planted input is one that decodes, under the plan both
    # sessions share, to a table_get far out of range (a read of unmapped memory on any heap layout).
    from ffi_harness import _engine

    _p, data = asan_run
    plan = json.loads((Path(data["findings"][0]["repro"]).parent / ".work" / "plan.json").read_text())
    rng = random.Random(0)
    for _ in range(100_000):
        candidate = rng.randbytes(rng.randint(3, 12))
        steps = _engine.describe(plan, candidate)
        first = steps[0] if steps else {"callable": "", "args": []}
        far = first["callable"] == "table_get" and first["args"] and re.fullmatch(r"\d{11,}", first["args"][0])
        if far and int(first["args"][0]) < 2**63:  # past a Py_ssize_t, table_get raises OverflowError instead
            break
    else:
        pytest.fail("no input in 100,000 decodes to a far table_get")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    planted = corpus / hashlib.sha1(candidate).hexdigest()  # libFuzzer's naming
    planted.write_bytes(candidate)
    p, again = _fuzz(
        buggy_asan,
        tmp_path,
        "buggy",
        "--max-time",
        "10",
        "--timeout",
        "2",
        "--minimise-time",
        "3",
        "--corpus",
        str(corpus),
    )
    assert f"corpus input {planted.name[:12]} crashed: moved out of the corpus" in p.stdout, p.stdout + p.stderr
    assert not planted.exists()
    assert again["execs"] > 100 and again["native_edges"] > 20, p.stdout


def test_uninstrumented_build_says_so_and_runs(buggy_plain: Path, tmp_path: Path) -> None:
    p, data = _fuzz(
        buggy_plain,
        tmp_path,
        "buggy",
        "--max-time",
        "15",
        "--only",
        "describe",
        "remember",
        "add",
        "--minimise-time",
        "3",
    )
    assert "native coverage: none (not instrumented)" in p.stdout, p.stdout + p.stderr
    assert data["execs"] > 100
    assert p.returncode == 1  # SystemError and the leaked reference need no sanitizer
    assert ("SystemError", "describe") in {(f["kind"], f["site"]) for f in data["findings"]}


def test_an_engine_that_dies_with_nothing_to_replay_is_a_problem_not_a_clean_run(
    buggy_plain: Path, tmp_path: Path
) -> None:
    # The process ends mid-run with no sanitizer report and no crash artifact (here the setup, which runs
    # before every program, calls os._exit the 300th time: in an engine run, not while probing the setup):
    # no input reproduces it, so it is not a finding, but the run was not clean either.
    setup = tmp_path / "setup.py"
    setup.write_text(
        "import builtins\nimport os\n\n"
        "builtins._setups = getattr(builtins, '_setups', 0) + 1\n"
        "if builtins._setups == 300:\n    os._exit(7)\n"
    )
    p, data = _fuzz(buggy_plain, tmp_path, "buggy", "--setup", str(setup), "--max-time", "4", "--only", "add")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "PROBLEM: engine run 1 exited with status 7 without a crash report or an input to replay" in p.stdout
    assert data["problems"] and not data["findings"], data


def test_a_hang_the_user_allows_is_counted_not_reported(buggy_asan: Path, tmp_path: Path) -> None:
    # wait_for(7) deadlocks. Declared as a call that may block (--allow-hang), its hangs are no finding, and
    # the run says how many it forgave; the same run without the option reports the hang (exit 1). With add
    # in the programs too, a hang is often followed by calls that never ran: the engine blames the last one,
    # and only a replay names wait_for (an allowed connect() then a method was reported on `native`).
    common = ["buggy", "--only", "wait_for", "add", "--max-time", "20", "--timeout", "1", "--seed", "7"]
    for sub in ("allowed", "reported"):
        (tmp_path / sub).mkdir()
    p, data = _fuzz(buggy_asan, tmp_path / "allowed", *common, "--allow-hang", "wait_for")
    assert p.returncode == 0, p.stdout + p.stderr
    assert data["allowed_hangs"].get("wait_for", 0) >= 1 and not data["findings"], p.stdout
    assert "hangs allowed by --allow-hang (not findings): wait_for" in p.stdout
    p, data = _fuzz(buggy_asan, tmp_path / "reported", *common)
    assert p.returncode == 1, p.stdout + p.stderr
    assert ("hang", "wait_for") in {(f["kind"], f["callable"]) for f in data["findings"]}, p.stdout


def test_an_engine_restart_that_cannot_set_up_is_a_problem_not_a_clean_run(buggy_plain: Path, tmp_path: Path) -> None:
    # The first engine run ends (os._exit on the setup's 300th run in it); the restart's setup raises at once
    # (the third process to run it, after discovery's and the first run's). The fuzzing stopped early: a
    # clean summary would hide that.
    setup = tmp_path / "setup.py"
    starts = tmp_path / "starts"
    setup.write_text(
        "import builtins\nimport os\n\n"
        "builtins._setups = getattr(builtins, '_setups', 0) + 1\n"
        "if builtins._setups == 1:\n"
        f"    with open({str(starts)!r}, 'a') as f:\n        f.write('x')\n"
        f"    if os.path.getsize({str(starts)!r}) >= 3:\n        raise RuntimeError('setup broke')\n"
        "if builtins._setups == 300:\n    os._exit(7)\n"
    )
    p, data = _fuzz(buggy_plain, tmp_path, "buggy", "--setup", str(setup), "--max-time", "20", "--only", "add")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "PROBLEM: an engine run could not start, fuzzing stopped early" in p.stdout, p.stdout
    assert "setup broke" in p.stdout and not data["findings"], data


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("json", "pure Python"),
        ("no_such_module_xyz", "no module named"),
        ("buggy", "--only: no callable named nope"),
        ("buggy", "--allow-hang: no callable named nope"),
    ],
)
def test_usage_errors(module: str, message: str, buggy_plain: Path, tmp_path: Path) -> None:
    extra = [message.split(":")[0], "nope"] if module == "buggy" else []
    p, _ = _fuzz(buggy_plain, tmp_path, module, "--max-time", "5", *extra, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--max-time", "nan", "--max-time must be a positive number of seconds"),
        ("--max-time", "inf", "--max-time must be a positive number of seconds"),
        ("--timeout", "nan", "--timeout must be a positive number of seconds"),
        ("--minimise-time", "-1", "--minimise-time must be 0 or a positive number"),
        ("--max-findings", "-1", "--max-findings must be 0"),
        ("--corpus", "FILE", "exists and is not a directory"),
    ],
)
def test_bad_option_values_are_usage_errors_before_the_run(
    flag: str, value: str, message: str, buggy_plain: Path, tmp_path: Path
) -> None:
    if value == "FILE":
        (tmp_path / "a-file").write_text("")
        value = str(tmp_path / "a-file")
    p, _ = _fuzz(buggy_plain, tmp_path, "buggy", flag, value, timeout=120)
    assert p.returncode == 2 and message in p.stderr, p.stdout + p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "art").exists()


def test_a_json_summary_in_a_missing_directory_is_refused_before_the_run(buggy_plain: Path, tmp_path: Path) -> None:
    cmd = [CLI, "fuzz", "buggy", "--artifacts", str(tmp_path / "art"), "--json", str(tmp_path / "no" / "s.json")]
    p = subprocess.run(cmd, env=cli_env(buggy_plain), capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 2 and "its directory does not exist" in p.stderr, p.stdout + p.stderr
    assert not (tmp_path / "art").exists()


def test_a_module_built_in_place_in_the_current_directory_is_fuzzed(buggy_plain: Path, tmp_path: Path) -> None:
    # `python setup.py build_ext --inplace`: importable from the current directory only, which the engine
    # (run in a scratch directory) would not have on its path.
    here = tmp_path / "project"
    here.mkdir()
    for so in buggy_plain.glob("buggy*.so"):
        shutil.copy(so, here / so.name)
    cmd = [CLI, "fuzz", "buggy", "--only", "add", "--max-time", "3", "--artifacts", str(tmp_path / "art")]
    p = subprocess.run(cmd, cwd=here, env=cli_env(None), capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "could not start" not in p.stdout + p.stderr and "add " in p.stdout


def test_files_the_target_writes_to_relative_paths_stay_out_of_the_current_directory(tmp_path: Path) -> None:
    # Probing, the engine, every replay while minimising and `ffi-harness repro` call writer.save() with fuzzed
    # names: each must run in a scratch directory, not where the user typed the command, and leave no
    # directory of its own behind (TMPDIR is watched).
    if shutil.which("clang-19") is None:
        pytest.skip("clang-19 is needed to build the fixture")
    here, site, tmpdir = tmp_path / "project", tmp_path / "site", tmp_path / "tmpdir"
    for d in (here, site, tmpdir):
        d.mkdir()
    _build_fixture("writer", site)
    env = {**cli_env(site), "TMPDIR": str(tmpdir)}
    cmd = [CLI, "fuzz", "writer", "--max-time", "5", "--minimise-time", "5", "--seed", "1"]
    cmd += ["--artifacts", str(tmp_path / "art"), "--json", str(tmp_path / "s.json")]
    p = subprocess.run(cmd, cwd=here, env=env, capture_output=True, text=True, timeout=300, check=False)
    data = json.loads((tmp_path / "s.json").read_text())
    assert p.returncode == 1 and any(f["kind"] == "SystemError" for f in data["findings"]), p.stdout + p.stderr
    repros = sorted((tmp_path / "art").glob("repro-*.py"))
    assert repros, p.stdout
    r = subprocess.run([CLI, "repro", str(repros[0])], cwd=here, env=env, capture_output=True, text=True, check=False)
    assert r.returncode == 1 and "reproduced: SystemError" in r.stdout, r.stdout + r.stderr
    assert sorted(here.iterdir()) == []
    assert sorted(tmpdir.iterdir()) == []
    assert list((tmp_path / "art" / ".work" / "cwd").iterdir())  # where the engine's files went


def _build_fixture(name: str, site: Path) -> None:
    """cli/tests/fixtures/NAME/NAME.c as the extension module NAME in `site` (no sanitizer)."""
    import sysconfig

    so = site / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"
    flags = ["-g", "-O1", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror", f"-I{sysconfig.get_paths()['include']}"]
    subprocess.run(["clang-19", *flags, str(FIXTURE.parent / name / f"{name}.c"), "-o", str(so)], check=True)


def test_a_constructor_that_hangs_on_a_repeated_call_is_still_fuzzed(tmp_path: Path) -> None:
    # locker.Lock(n) waits for ever while a live Lock(n) holds the name. The hang is reported once; the
    # constructor must not be left out after it (that starved every method of its class): only a call
    # repeating an earlier one is skipped.
    if shutil.which("clang-19") is None:
        pytest.skip("clang-19 is needed to build the fixture")
    site = tmp_path / "site"
    site.mkdir()
    _build_fixture("locker", site)
    p, data = _fuzz(
        site, tmp_path, "locker", "--timeout", "1", "--max-time", "12", "--minimise-time", "5", "--seed", "2"
    )
    assert p.returncode == 1, p.stdout + p.stderr
    assert [(f["kind"], f["callable"]) for f in data["findings"]] == [("hang", "Lock")], p.stdout
    assert data["excluded"] == [], p.stdout
    assert any("later runs skip such repeats" in n for n in data["notes"]), data["notes"]
    assert data["masked_calls"] > 0
    calls = re.search(r"Lock\.name (\d+)", p.stdout)
    assert calls and int(calls.group(1)) > 1000, p.stdout  # hundreds before the hang, tens of thousands after


def test_another_copy_of_ffi_harness_in_the_target_interpreter_does_not_run_the_engine(
    buggy_plain: Path, tmp_path: Path
) -> None:
    # A target venv holding an older ffi-harness (here a stub whose engine refuses to run and which has
    # no discovery module): discovery and the engine must still be this command's own copy.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    stale = site / "ffi_harness"
    stale.mkdir()
    (stale / "__init__.py").write_text("")
    (stale / "runtime.py").write_text("")
    (stale / "_engine.py").write_text("def fuzz(*args):\n    raise SystemExit('the stale engine ran')\n")
    for so in buggy_plain.glob("buggy*.so"):
        shutil.copy(so, site / so.name)
    cmd = [CLI, "fuzz", "buggy", "--python", str(venv), "--only", "add", "--max-time", "3"]
    cmd += ["--artifacts", str(tmp_path / "art"), "--json", str(tmp_path / "s.json")]
    p = subprocess.run(cmd, env=cli_env(None), capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "stale engine" not in p.stdout + p.stderr
    assert json.loads((tmp_path / "s.json").read_text())["execs"] > 0
    repro_env = [ln for ln in p.stdout.splitlines() if "ffi-harness-package-" in ln]
    assert not repro_env, repro_env  # the link is the engine's, never a repro's


def test_a_type_the_module_never_names_is_fuzzed_on_the_objects_calls_return(tmp_path: Path) -> None:
    # hidden.Cursor is reachable only as Box().cursor(); its peek() reads past the box for i > 3.
    if shutil.which("clang-19") is None:
        pytest.skip("clang-19 is needed for the instrumented build")
    import sysconfig

    site = tmp_path / "site"
    site.mkdir()
    flags = ["-fsanitize=address,fuzzer-no-link", "-g", "-O1", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror"]
    so = site / f"hidden{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run(
        ["clang-19", *flags, f"-I{sysconfig.get_paths()['include']}", str(FIXTURE.parent / "hidden_type" / "hidden.c")]
        + ["-o", str(so)],
        check=True,
    )
    p, data = _fuzz(site, tmp_path, "hidden", "--max-time", "15", "--minimise-time", "5", "--seed", "3")
    assert "Cursor.peek" in p.stdout, p.stdout + p.stderr  # planned, though no module attribute names it
    found = {(f["kind"], f["site"], f["callable"]) for f in data["findings"]}
    assert ("heap-buffer-overflow", "Cursor_peek", "Cursor.peek") in found, p.stdout + p.stderr
    assert p.returncode == 1


def test_repro_timeout_sets_the_watchdog_of_the_script(tmp_path: Path) -> None:
    # A repro whose header says 60 s, of a call that sleeps 30 s: `--timeout 1` must judge it a hang
    # after about 1 s (the script arms its own watchdog; the option once only bounded the parent's wait).
    from ffi_harness import findings as fnd

    (tmp_path / "sleeper.py").write_text("import time\n\n\ndef slow(x):\n    time.sleep(30)\n")
    plan = {
        "module": "sleeper",
        "classes": [],
        "callables": [
            {"name": "slow", "kind": "function", "path": "slow", "min_args": 1, "max_args": 1, "keywords": []}
        ],
        "setup": None,
        "setup_file": None,
    }
    steps = [{"callable": "slow", "receiver": 0, "args": ["1"], "kwargs": []}]
    meta = {"kind": "hang", "site": "slow", "module": "sleeper", "python": sys.executable, "asan": False}
    script = tmp_path / "repro-hang-slow.py"
    script.write_text(fnd.render(plan, steps, {**meta, "timeout": 60.0, "pythonpath": [str(tmp_path)]}))
    started = time.monotonic()
    cmd = [CLI, "repro", "--timeout", "1", str(script)]
    p = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "reproduced: hang in slow" in p.stdout, p.stdout + p.stderr
    assert time.monotonic() - started < 20


def test_repro_usage_errors(tmp_path: Path) -> None:
    missing = subprocess.run([CLI, "repro", str(tmp_path / "nope.py")], capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    other = tmp_path / "other.py"
    other.write_text("print('hello')\n")
    p = subprocess.run([CLI, "repro", str(other)], capture_output=True, text=True, check=False)
    assert p.returncode == 2 and "not an ffi-harness repro" in p.stderr


def _other_pythons() -> list[str]:
    """The newest pyenv CPython 3.12 and 3.13, when installed."""
    root = Path.home() / ".pyenv" / "versions"
    found = []
    for minor in ("3.12", "3.13"):
        candidates = sorted(root.glob(f"{minor}.*/bin/python3")) if root.is_dir() else []
        if candidates:
            found.append(str(candidates[-1]))
    return found


@pytest.mark.parametrize(
    "python", _other_pythons() or [pytest.param("", marks=pytest.mark.skip(reason="no pyenv 3.12/3.13"))]
)
def test_other_interpreters_with_python_option(python: str, tmp_path: Path) -> None:
    """--python: the abi3 engine runs under another CPython (the fixture built for it with clang directly)."""
    if shutil.which("clang-19") is None:
        pytest.skip("clang-19 is needed for the instrumented build")
    info = subprocess.run(
        [python, "-c", "import sysconfig as s; print(s.get_paths()['include']); print(s.get_config_var('EXT_SUFFIX'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    site = tmp_path / "site"
    site.mkdir()
    flags = ["-fsanitize=address,undefined,fuzzer-no-link", "-g", "-O1", "-fPIC", "-shared"]
    subprocess.run(
        ["clang-19", *flags, f"-I{info[0]}", str(FIXTURE / "buggy.c"), "-o", str(site / f"buggy{info[1]}")], check=True
    )
    p, data = _fuzz(
        site,
        tmp_path,
        "buggy",
        "--python",
        python,
        "--max-time",
        "15",
        "--only",
        "describe",
        "remember",
        "--minimise-time",
        "3",
    )
    assert p.returncode == 1, p.stdout + p.stderr
    assert "libFuzzer-guided" in p.stdout
    assert ("SystemError", "describe") in {(f["kind"], f["site"]) for f in data["findings"]}
