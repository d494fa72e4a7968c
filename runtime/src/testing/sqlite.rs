//! A SQLite database file of its own for each test, removed (with its write-ahead log) when the
//! test ends, even when it fails.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;
use crate::store::SqliteStore;

/// A migrated [`SqliteStore`] on a new file in the temporary directory; the file is removed
/// when the last clone of this value is dropped (clones share the database).
///
/// ```no_run
/// # async fn run() -> factum::Result<()> {
/// let store = factum::testing::sqlite::TemporaryDatabase::new().await?;
/// // `store` derefs to a `SqliteStore`.
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TemporaryDatabase {
    store: SqliteStore,
    file: Arc<File>,
}

/// The file of a [`TemporaryDatabase`], removed with it.
#[derive(Debug)]
struct File {
    path: PathBuf,
}

impl TemporaryDatabase {
    /// Creates and migrates the database.
    ///
    /// # Errors
    /// When the file cannot be created or migrated.
    pub async fn new() -> Result<Self> {
        let database = Self::unmigrated().await?;
        database.store.migrate().await?;
        Ok(database)
    }

    /// Creates the database file without the store's tables (to test what an unmigrated
    /// database does).
    ///
    /// # Errors
    /// When the file cannot be created.
    pub async fn unmigrated() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("factum-{}.db", crate::Uuid::now_v7()));
        let file = Arc::new(File { path });
        let store = SqliteStore::open(&file.path).await?;
        Ok(Self { store, file })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.file.path
    }
}

impl Deref for TemporaryDatabase {
    type Target = SqliteStore;

    fn deref(&self) -> &SqliteStore {
        &self.store
    }
}

impl Drop for File {
    fn drop(&mut self) {
        if let Err(error) = SqliteStore::remove_files(&self.path) {
            tracing::warn!(%error, path = %self.path.display(), "could not remove a test database");
        }
    }
}
