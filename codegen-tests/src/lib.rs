//! Tests of what Factum's macros generate; see `tests/`.
