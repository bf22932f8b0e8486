//! End-to-end tests (in `tests/`) and benchmarks (in `src/bin/`) that drive the
//! suite's real binaries as separate processes, the way operators run them.

pub mod bench;
