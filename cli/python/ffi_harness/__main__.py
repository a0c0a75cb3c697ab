"""`python -m ffi_harness` is the `ffi-harness` command."""

from ffi_harness.cli import main

raise SystemExit(main())
