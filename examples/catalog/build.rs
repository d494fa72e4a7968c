//! `cargo build` writes the examples' event catalog into the workspace's `schemas/`: a JSON
//! Schema per event version, an AsyncAPI 3.1 document and a Markdown page. The committed
//! schemas are a lock: an incompatible change to a published event version fails the build.

#[path = "src/catalog.rs"]
mod catalog;

fn main() {
    catalog::catalog().emit_from_build_script("../../schemas");
}
