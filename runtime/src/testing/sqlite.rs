//! A SQLite database file of its own for each test, removed (with its write-ahead log) when the
//! test ends, even when it fails.

use std::ops::Deref;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::store::SqliteStore;

/// A migrated [`SqliteStore`] on a new file in the temporary directory; the file is removed
/// when this is dropped.
///
/// ```no_run
/// # async fn run() -> factum::Result<()> {
/// let store = factum::testing::sqlite::TemporaryDatabase::new().await?;
/// // `store` derefs to a `SqliteStore`.
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TemporaryDatabase {
    store: SqliteStore,
    path: PathBuf,
}

impl TemporaryDatabase {
    /// Creates and migrates the database.
    ///
    /// # Errors
    /// When the file cannot be created or migrated.
    pub async fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("factum-{}.db", crate::Uuid::now_v7()));
        let store = SqliteStore::open(&path).await?;
        let database = Self { store, path };
        database.store.migrate().await?;
        Ok(database)
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Deref for TemporaryDatabase {
    type Target = SqliteStore;

    fn deref(&self) -> &SqliteStore {
        &self.store
    }
}

impl Drop for TemporaryDatabase {
    fn drop(&mut self) {
        // The database, its write-ahead log and the runners' lock files beside it.
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .as_encoded_bytes()
                .starts_with(name.as_encoded_bytes())
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
