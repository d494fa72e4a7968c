//! The compile-time benchmark's domain (`scripts/compile-bench`).

#![allow(missing_docs, clippy::all, clippy::pedantic)]

// Generated, checked by a test against its generator: formatted as generated.
#[rustfmt::skip]
mod domain;

pub use domain::*;
