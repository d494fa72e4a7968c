//! What the stores' migrations share: a migration shipped in the crate, its checksum, and the
//! check of what a database has applied.

use crate::error::Error;

/// A versioned migration, applied once and recorded with its checksum.
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
pub(crate) struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// FNV-1a: a stable checksum of a migration's text (not a security measure).
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
pub(crate) fn checksum(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Checks the migrations a database records (version, checksum) against this build's, and
/// returns the versions still to apply, in order. `database` names it in errors.
///
/// # Errors
/// [`Error::IncompatibleSchema`] when the database has a migration this build does not know (a
/// newer build migrated it) or one that differs from this build's.
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
pub(crate) fn pending<'m>(
    migrations: &'m [Migration],
    applied: &[(i32, String)],
    database: &str,
) -> Result<Vec<&'m Migration>, Error> {
    for (version, recorded) in applied {
        let Some(known) = migrations.iter().find(|m| m.version == *version) else {
            return Err(Error::IncompatibleSchema {
                schema: database.to_owned(),
                reason: format!(
                    "it has migration {version}, which this build does not know: it was migrated by a newer version of factum"
                ),
            });
        };
        if checksum(known.sql) != *recorded {
            return Err(Error::IncompatibleSchema {
                schema: database.to_owned(),
                reason: format!(
                    "its migration {version} ({}) differs from this build's",
                    known.name
                ),
            });
        }
    }
    Ok(migrations
        .iter()
        .filter(|m| !applied.iter().any(|(version, _)| *version == m.version))
        .collect())
}
