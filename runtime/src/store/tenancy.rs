//! Whose events a store sees and writes (conjoined tenancy): no tenant, one tenant, or every
//! tenant read only. PostgreSQL enforces it with row-level security on the store's sessions
//! ([`PostgresStore::for_tenant`](crate::store::PostgresStore::for_tenant)); SQLite, which has
//! none, by Factum's own statements ([`SqliteStore::for_tenant`](crate::store::SqliteStore::for_tenant)).

use crate::error::{Error, Result};

/// Whose events a store's sessions see and write (see
/// [`PostgresStore::for_tenant`](crate::store::PostgresStore::for_tenant) and
/// [`SqliteStore::for_tenant`](crate::store::SqliteStore::for_tenant)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tenancy {
    /// The events of no tenant: a store used without tenants.
    None,
    /// One tenant's events.
    Tenant(String),
    /// Every tenant's events, read only.
    All,
}

impl Tenancy {
    /// One tenant's, its name checked.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `tenant` is empty, longer than 63 bytes, or holds other
    /// characters than ASCII letters, digits, `_`, `-` and `.`.
    pub(crate) fn tenant(tenant: &str) -> Result<Self> {
        let valid = !tenant.is_empty()
            && tenant.len() <= 63
            && tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid {
            return Err(Error::InvalidConfig(format!(
                "tenant {tenant:?}: name a tenant with 1 to 63 ASCII letters, digits, `_`, `-` or `.`"
            )));
        }
        Ok(Self::Tenant(tenant.to_owned()))
    }

    /// The tenant whose events are appended and read, if one.
    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            Self::Tenant(tenant) => Some(tenant),
            Self::None | Self::All => None,
        }
    }

    /// The value of the `tenant` column of the rows this store sees: `''` (no tenant), the
    /// tenant's name, or `None` for every tenant's. Bound into the statements of a store that
    /// scopes its own reads (SQLite) as `(?n IS NULL OR tenant = ?n)`.
    #[cfg(feature = "sqlite")]
    pub(crate) fn scope(&self) -> Option<&str> {
        match self {
            Self::None => Some(""),
            Self::Tenant(tenant) => Some(tenant),
            Self::All => None,
        }
    }

    /// Refuses an append through a store across tenants.
    ///
    /// # Errors
    /// [`Error::TenantRequired`] for [`Tenancy::All`].
    pub(crate) fn check_append(&self, stream_id: &str) -> Result<()> {
        match self {
            Self::All => Err(Error::TenantRequired {
                stream_id: stream_id.to_owned(),
            }),
            Self::None | Self::Tenant(_) => Ok(()),
        }
    }

    /// The key a runner's lease takes within its store (`<store>` alone, `<store>/<tenant>` or
    /// `<store>/*`): each tenant's runners keep their own bookkeeping, so they lease apart.
    #[cfg(feature = "postgres")]
    pub(crate) fn lease_scope(&self, store: &str) -> String {
        match self {
            Self::Tenant(tenant) => format!("{store}/{tenant}"),
            Self::All => format!("{store}/*"),
            Self::None => store.to_owned(),
        }
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_name_is_checked_and_scopes_its_rows() {
        let acme = Tenancy::tenant("acme-1.eu_west").unwrap();
        assert_eq!(acme.name(), Some("acme-1.eu_west"));
        assert_eq!(acme.scope(), Some("acme-1.eu_west"));
        assert_eq!(Tenancy::None.scope(), Some(""));
        assert_eq!(Tenancy::All.scope(), None);
        for bad in ["", "a b", "a/b", "a'b", &"x".repeat(64)] {
            let error = Tenancy::tenant(bad).unwrap_err();
            assert!(error.to_string().contains("name a tenant with"), "{error}");
        }
        assert!(matches!(
            Tenancy::All.check_append("s"),
            Err(Error::TenantRequired { .. })
        ));
        #[cfg(feature = "postgres")]
        {
            assert_eq!(acme.lease_scope("db"), "db/acme-1.eu_west");
            assert_eq!(Tenancy::All.lease_scope("db"), "db/*");
            assert_eq!(Tenancy::None.lease_scope("db"), "db");
        }
    }
}
