"""ffi-harness: fuzz, reproduce and leak-check any Python extension (C-API, C++, Cython, cffi, PyO3).

The command-line front end is :mod:`ffi_harness.cli`; each subcommand lives in a module of its own:
``build_ext`` (instrumented builds), ``fuzz`` (zero-code, coverage-guided fuzzing), ``repro``
(replay and minimise findings) and ``testrun`` (a project's own pytest suite under leak and crash
oracles).
"""

__version__ = "0.1.0"
