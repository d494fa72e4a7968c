//! `cargo build` writes the examples' event catalog into the workspace's `schemas/`: a JSON
//! Schema per event version, an AsyncAPI 3.1 document and a Markdown page. The committed
//! schemas are a lock: an incompatible change to a published event version fails the build, and
//! so does a change that breaks a consuming service's committed contract.

#[path = "src/catalog.rs"]
mod catalog;

fn main() {
    let catalog = catalog::catalog();
    catalog.emit_from_build_script("../../schemas");
    // The consuming services' contracts hold, or the build fails naming what breaks them.
    catalog.check_contracts_from_build_script([
        "../shipping/contracts/shipping-service.json",
        "../shipping/contracts/notifications-service.json",
    ]);
}
