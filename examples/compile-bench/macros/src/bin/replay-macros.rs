//! Replays events through every aggregate's apply dispatch: what `scripts/compile-bench`
//! counts instructions of (callgrind), with the macros.

use compile_bench_macros as compile_bench;

include!("../../../replay.rs");
