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
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(format!("-{}.lock", file_name(name)));
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

/// A lock's name as a file name: letters and digits kept, `-` as it is, any other character
/// written as `_` and its code in hex, so that different names (`a-b`, `a_b`, `a b`) never share
/// a file.
fn file_name(name: &str) -> String {
    let mut file = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            file.push(c);
        } else {
            file.push_str(&format!("_{:x}_", u32::from(c)));
        }
    }
    file
}

#[cfg(test)]
mod tests {
    #[test]
    fn different_names_never_share_a_lock_file() {
        let names = [
            "projection-a-b-v1",
            "projection-a_b-v1",
            "projection-a b-v1",
            "projection-a_2d_b-v1",
        ];
        let files: std::collections::HashSet<String> =
            names.iter().map(|n| super::file_name(n)).collect();
        assert_eq!(files.len(), names.len(), "{files:?}");
        assert_eq!(super::file_name("saga-orders"), "saga-orders");
    }
}
