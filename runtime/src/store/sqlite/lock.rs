//! Locks between the processes using one SQLite database: a lock on a file beside it
//! (`<database>-<name>.lock`), which the operating system releases when the holder's process
//! dies, so another takes over at once. An in-memory database belongs to one process: its locks
//! are kept in the store.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use super::SqliteStore;
use crate::error::{Error, Result};

/// A held lock, released when dropped.
#[derive(Debug)]
pub(crate) struct StoreLock {
    held: Held,
}

#[derive(Debug)]
enum Held {
    File(std::fs::File),
    Memory {
        name: String,
        locks: Arc<Mutex<HashSet<String>>>,
    },
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        match &self.held {
            Held::File(file) => {
                if let Err(error) = file.unlock() {
                    tracing::warn!(%error, "could not unlock; the lock goes when the file closes");
                }
            }
            Held::Memory { name, locks } => {
                locks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(name);
            }
        }
    }
}

impl SqliteStore {
    /// Takes the lock `name` unless another holder (in this process or another) has it.
    pub(crate) fn try_lock(&self, name: &str) -> Result<Option<StoreLock>> {
        let Some(path) = self.path() else {
            let mut held = self
                .memory_locks
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !held.insert(name.to_owned()) {
                return Ok(None);
            }
            return Ok(Some(StoreLock {
                held: Held::Memory {
                    name: name.to_owned(),
                    locks: Arc::clone(&self.memory_locks),
                },
            }));
        };
        let file_name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(format!("-{file_name}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::Backend(Box::new(e)))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(StoreLock {
                held: Held::File(file),
            })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(error)) => Err(Error::Backend(Box::new(error))),
        }
    }
}
