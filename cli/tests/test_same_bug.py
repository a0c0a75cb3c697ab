"""findings.same_bug: one out-of-range read reported as three sanitizer kinds (a heap-buffer-overflow near
the table, a use-after-free and a UBSan pointer overflow farther away) is one bug, told by the function and
source line the reports name; reports of other lines, with no line (the in-process oracles), or of
arithmetic on the same line (a signed overflow) stay apart."""

from __future__ import annotations

from ffi_harness import findings as fnd

ASAN = """==1==ERROR: AddressSanitizer: {kind} on address 0x50c00005ef00
    #0 0x7f in table_get /src/buggy.c:56:28
SUMMARY: AddressSanitizer: {kind} /src/buggy.c:56:28 in table_get
"""
# A SEGV's summary names the signal path; the first frame past it is the read.
SEGV = """==1==ERROR: AddressSanitizer: SEGV on unknown address 0x5a2e7f4fd878
    #0 0x7f5c in __pthread_kill_implementation nptl/pthread_kill.c:44:76
    #1 0x7f5c in raise signal/../sysdeps/posix/raise.c:26:13
    #2 0x7f5c  (/lib/x86_64-linux-gnu/libc.so.6+0x3c04f) (BuildId: 93ac61ec)
    #3 0x7f5c in table_get /src/buggy.c:56:28
SUMMARY: AddressSanitizer: SEGV nptl/pthread_kill.c:44:76 in __pthread_kill_implementation
"""
SIGNED = "signed integer overflow: -3978709922706044807 + -5353172792176656687 cannot be represented in type 'long'"
UBSAN = "/src/buggy.c:56:28: runtime error: subtraction of unsigned offset from 0x50c0 overflowed to 0x1198\n"


def _finding(stderr: str, after: float) -> fnd.Finding:
    v = fnd.classify_output(1, "", stderr)
    f = fnd.Finding(v.kind, v.site, v.site, v.detail, [], "crash", found_after=after)
    f.verdict = v
    return f


def test_reports_of_one_line_are_one_bug() -> None:
    near = _finding(ASAN.format(kind="heap-buffer-overflow"), 0.7)
    far = _finding(ASAN.format(kind="heap-use-after-free"), 17.8)
    wrapped = _finding(UBSAN + "    #0 0x7f in table_get /src/buggy.c:56:28\n", 33.6)
    other = _finding(ASAN.format(kind="heap-use-after-free").replace("56:28", "158:17").replace("table_get", "incr"), 9)
    faulted = _finding(SEGV, 18.8)
    overflow = _finding(UBSAN.replace("subtraction of unsigned offset from 0x50c0 overflowed to 0x1198", SIGNED), 39)
    oracle = fnd.Finding("over-decref", "table_find", "table_find", "", [], "oracle")
    assert (near.location, wrapped.location, other.location) == (
        "/src/buggy.c:56",
        "/src/buggy.c:56",
        "/src/buggy.c:158",
    )
    assert (near.kind, far.kind, wrapped.kind) == ("heap-buffer-overflow", "heap-use-after-free", "ubsan:subtraction")
    assert (faulted.kind, faulted.site, faulted.location) == ("SEGV", "table_get", "/src/buggy.c:56")
    assert overflow.kind == "ubsan:signed" and overflow.location == near.location  # arithmetic: another bug
    same = fnd.same_bug([near, oracle, other, far, faulted, overflow, wrapped])
    assert same == {id(far): near, id(faulted): near, id(wrapped): near}


# Mutant 15 under `ffi-harness fuzz` (2026-12-06): a freed path read by Rust's CStr::from_ptr. The summary
# names the standard library; the bug is the wrapper's line that handed it the pointer.
RUST_STD = """==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x502000a1b2d0
    #0 0x7f0a in strlen (/usr/lib/llvm-19/lib/clang/19/lib/linux/libclang_rt.asan-x86_64.so+0x82452)
    #1 0x7f0a in core::ffi::c_str::strlen::runtime /rustc/5980761/library/core/src/ffi/c_str.rs:756:22
    #2 0x7f0a in <core::ffi::c_str::CStr>::from_ptr /rustc/5980761/library/core/src/ffi/c_str.rs:256:28
    #3 0x7f0a in native_wrapper::handles::connection::connect /b/wrapper/src/handles/connection.rs:272:31
SUMMARY: AddressSanitizer: heap-use-after-free /rustc/5980761/library/core/src/ffi/c_str.rs:756:22 in core::ffi::c_str::strlen::runtime
"""
CPP_STD = """==1==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x502000a1b2d0
    #0 0x55 in std::vector<int, std::allocator<int> >::operator[](unsigned long) /usr/include/c++/12/bits/stl_vector.h:1123:25
    #1 0x55 in Table_get /b/src/table.cpp:41:12
SUMMARY: AddressSanitizer: heap-buffer-overflow /usr/include/c++/12/bits/stl_vector.h:1123:25 in std::vector<int, std::allocator<int> >::operator[](unsigned long)
"""


def test_a_report_in_a_standard_library_names_the_modules_own_frame() -> None:
    rust, cpp = _finding(RUST_STD, 1.8), _finding(CPP_STD, 2.0)
    assert (rust.kind, rust.site, rust.location) == (
        "heap-use-after-free",
        "native_wrapper::handles::connection::connect",
        "/b/wrapper/src/handles/connection.rs:272",
    )
    assert (cpp.site, cpp.location) == ("Table_get", "/b/src/table.cpp:41")
    plain = _finding(ASAN.format(kind="heap-use-after-free"), 1.0)  # the module's own frame stays the site
    assert (plain.site, plain.location) == ("table_get", "/src/buggy.c:56")


TILE_OVERFLOW = (
    "FFI_HARNESS_STEP 0 tile\n"
    "/src/ringbuf.c:653:17: runtime error: signed integer overflow: 6 * 700000001 cannot be represented in type 'int'\n"
    "    #0 0x7f in tile /src/ringbuf.c:653:17\n"
)


def test_a_finding_whose_replay_stops_at_a_ubsan_report_is_that_reports_bug() -> None:
    # The engine prints a UBSan report once per line and process: a later program that overflows the same
    # size shows only the SystemError of the negative size it made. Its replay, in a fresh process, stops at
    # the report: the same bug as the report found first, not a finding that "did not reproduce".
    from ffi_harness import fuzz

    step = {"callable": "tile", "args": ["b'abc'", "700000001"], "kwargs": []}
    first = fnd.Finding("ubsan:signed", "tile", "tile", SIGNED, [step], "oracle")
    first.verdict = fnd.classify_output(1, "", TILE_OVERFLOW)
    later = fnd.Finding("SystemError", "tile", "tile", "SystemError: Negative size passed", [step], "oracle")
    v = fnd.classify_output(1, "", TILE_OVERFLOW)
    assert v.kind == "ubsan:signed" and v.step == 0, v
    fuzz._name_by_its_first_symptom(later, v)
    assert (later.kind, later.site, later.reproduced) == ("ubsan:signed", "tile", True), later
    assert fnd.same_bug([first, later]) == {id(later): first}
    # A replay that stopped in another callable, or at a finding that is not a UBSan report, names nothing.
    other = fnd.Finding("SystemError", "peek", "Ring.peek", "", [step], "oracle")
    fuzz._name_by_its_first_symptom(other, v)
    assert (other.kind, other.reproduced) == ("SystemError", None)


def _at(line: int, kind: str, callable_: str = "Log.get") -> fnd.Finding:
    f = fnd.Finding(kind, "log_get", callable_, "", [], "crash")
    f.verdict = fnd.Verdict(kind, "log_get", "", location=f"/src/reclog.c:{line}")
    return f


def test_a_pointer_overflow_and_the_read_on_the_next_line_are_one_bug() -> None:
    # A reviewer's reclog (2026-12-07): `p = base + off` overflowed on line 262 (UBSan), `*p` read past
    # the record on 263 (ASan): one bug, counted as two. Two accesses, or two pointer overflows, on
    # neighbouring lines stay apart, as do lines farther apart and another callable; a pointer overflow next
    # to two reads is the first one's half.
    made, read = _at(262, "ubsan:pointer"), _at(263, "heap-buffer-overflow")
    far = _at(262 + fnd.NEIGHBOUR_LINES + 1, "heap-use-after-free")
    other_read = _at(261, "stack-buffer-overflow")  # another kind: one kind, site and callable is one bug anyway
    other_pointer = _at(264, "ubsan:applying")
    elsewhere = _at(263, "SEGV", "Log.slice")
    same = fnd.same_bug([made, read, far, other_read, other_pointer, elsewhere])
    assert same == {id(read): made, id(other_read): made, id(other_pointer): far}, same


def test_a_segv_raised_again_by_faulthandler_says_its_address_is_not_the_faults() -> None:
    # A reviewer read "SEGV on unknown address 0x216d ... in __pthread_kill_implementation" as a bug in the
    # signal path: faulthandler printed its traceback, then raised the signal again, and ASan reported that
    # one, whose address is the sender's pid (0x216d is 8557). The site was right; the detail now says so.
    reraised = _finding(SEGV.replace("==1==", "==8557==").replace("0x5a2e7f4fd878", "0x00000000216d"), 1.0)
    assert (reraised.kind, reraised.site, reraised.location) == ("SEGV", "table_get", "/src/buggy.c:56")
    assert reraised.detail.startswith("SEGV in table_get at /src/buggy.c:56 (raised again"), reraised.detail
    assert "the report's address is the pid" in reraised.detail
    faulted = _finding(SEGV, 1.0)  # a real fault's address: the summary as ASan wrote it
    assert faulted.detail.startswith("SUMMARY: AddressSanitizer: SEGV"), faulted.detail
