//! The examples' event catalog. The build script writes it into the workspace's `schemas/`.

mod catalog;

pub use crate::catalog::catalog;

/// Where the build writes the catalog.
#[must_use]
pub fn schemas_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}
