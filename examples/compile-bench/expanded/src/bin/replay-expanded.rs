//! Replays events through every aggregate's apply dispatch: what `scripts/compile-bench`
//! counts instructions of (callgrind), with their expansion written out.

use compile_bench_expanded as compile_bench;

include!("../../../replay.rs");
