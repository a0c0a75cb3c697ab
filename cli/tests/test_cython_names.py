"""A sanitizer report in Cython code names the function as Python does (`pkg._m.Histogram.__getitem__`),
not by its generated C name (`__pyx_pf_3pkg_2_m_9Histogram_2__getitem__`). The C names come from the
Cython compiler itself, so a change in its naming scheme fails here rather than in a user's report."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ffi_harness import findings as fnd

SOURCE = """
cdef class Histogram:
    cdef int n
    def __init__(self, n):
        self.n = n
    cdef int _grow(self):
        return 1
    def __getitem__(self, i):
        return i
def to_tuple(x):
    return (x,)
cdef class to:
    def tuple(self):
        return 0
cdef int _helper(int a):
    return a
"""
EXPECTED = {
    "Histogram.__init__",
    "Histogram._grow",
    "Histogram.__getitem__",
    "to_tuple",
    "to.tuple",
    "_helper",
}


def _generated_names(tmp_path: Path) -> set[str]:
    cython = shutil.which("cython", path=str(Path(sys.executable).parent))
    if cython is None:
        pytest.skip("no cython next to this interpreter")
    pyx = tmp_path / "_m.pyx"
    pyx.write_text(SOURCE)
    subprocess.run([cython, "-3", str(pyx), "--module-name", "pkg._m", "-o", str(tmp_path / "m.c")], check=True)
    text = (tmp_path / "m.c").read_text()
    return set(re.findall(r"\b__pyx_(?:pf|pw|f)_\d\w*", text))


def test_generated_names_read_as_python_names(tmp_path: Path) -> None:
    names = _generated_names(tmp_path)
    read = {fnd.cython_name(n) for n in names if "pyx_unpickle" not in n and "_cython__" not in n}
    assert read == {f"pkg._m.{n}" for n in EXPECTED}, sorted(names)


def test_a_report_in_a_def_body_is_named_by_its_wrapper() -> None:
    # `_2to_tuple` alone could be a class `to`'s first def `tuple`; the wrapper frame below it says which.
    report = (
        "==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x5020\n"
        "    #0 0x7f in __pyx_pf_3pkg_2_m_2to_tuple /src/m.c:2301:9\n"
        "    #1 0x7f in __pyx_pw_3pkg_2_m_3to_tuple /src/m.c:2270:13\n"
        "SUMMARY: AddressSanitizer: heap-use-after-free /src/m.c:2301:9 in __pyx_pf_3pkg_2_m_2to_tuple\n"
    )
    v = fnd.classify_output(1, "", report)
    assert (v.kind, v.site, v.location) == ("heap-use-after-free", "pkg._m.to_tuple", "/src/m.c:2301"), v
    in_class_to = report.replace("__pyx_pw_3pkg_2_m_3to_tuple", "__pyx_pw_3pkg_2_m_2to_1tuple")
    assert fnd.classify_output(1, "", in_class_to).site == "pkg._m.to.tuple"
    ub = "/src/m.c:2301:9: runtime error: signed integer overflow\n" + report.split("\n", 1)[1].rsplit("SUMMARY", 1)[0]
    assert fnd.classify_output(1, "", ub).site == "pkg._m.to_tuple"


@pytest.mark.parametrize("func", ["table_get", "__pyx_tp_dealloc_3pkg_2_m_Histogram", "__pyx_pf_3pkg", "Foo::bar(int)"])
def test_other_names_are_left_alone(func: str) -> None:
    assert fnd.cython_name(func) == func
