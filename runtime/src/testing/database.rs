//! Tests written once for both SQL stores: a [`TestDatabase`] gives each test a store of its own
//! (a PostgreSQL schema, a SQLite file), and [`execute`] / [`fetch_all`] run portable SQL on it.
//!
//! ```no_run
//! use factum::testing::{TestDatabase, execute};
//!
//! async fn creates_a_table<D: TestDatabase>() {
//!     let database = D::create().await.unwrap();
//!     let table = database.table("totals");
//!     execute(&*database, &format!("CREATE TABLE {table} (account TEXT PRIMARY KEY)"))
//!         .await
//!         .unwrap();
//! }
//!
//! #[tokio::test]
//! async fn on_sqlite() {
//!     creates_a_table::<factum::testing::sqlite::TemporaryDatabase>().await;
//! }
//! ```

use std::future::Future;
use std::ops::Deref;

use sqlx::any::AnyRow;

use crate::error::Result;
use crate::store::{SqlStore, StoreKind};

/// A database of its own for one test, removed when the last clone is dropped.
pub trait TestDatabase: Clone + Deref<Target = Self::Store> + Send + Sync + 'static {
    /// Its store.
    type Store: SqlStore;
    /// Which store it is.
    const KIND: StoreKind;

    /// A new, migrated database.
    ///
    /// # Errors
    /// When the store cannot be reached (the message says how to provide one) or migrated.
    fn create() -> impl Future<Output = Result<Self>> + Send;

    /// Another store on the same database with a pool of its own, as another process would
    /// have.
    ///
    /// # Errors
    /// When the store cannot be reached.
    fn another_client(&self) -> impl Future<Output = Result<Self::Store>> + Send;

    /// A table of the test's, named as its SQL must name it (in the test's schema).
    fn table(&self, name: &str) -> String;
}

#[cfg(feature = "postgres")]
impl TestDatabase for super::postgres::TemporaryStore {
    type Store = crate::store::PostgresStore;
    const KIND: StoreKind = StoreKind::Postgres;

    async fn create() -> Result<Self> {
        Self::new().await
    }

    async fn another_client(&self) -> Result<Self::Store> {
        super::postgres::TemporaryStore::another_client(self).await
    }

    fn table(&self, name: &str) -> String {
        format!("\"{}\".{name}", self.schema())
    }
}

#[cfg(feature = "sqlite")]
impl TestDatabase for super::sqlite::TemporaryDatabase {
    type Store = crate::store::SqliteStore;
    const KIND: StoreKind = StoreKind::Sqlite;

    async fn create() -> Result<Self> {
        Self::new().await
    }

    async fn another_client(&self) -> Result<Self::Store> {
        crate::store::SqliteStore::open(self.path()).await
    }

    fn table(&self, name: &str) -> String {
        name.to_owned()
    }
}

/// Runs `sql` (one statement, portable, through `Any`) in a transaction of its own.
///
/// # Errors
/// The statement's failure.
pub async fn execute<S: SqlStore>(store: &S, sql: &str) -> Result<u64> {
    let mut transaction = store.begin().await?;
    let done = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut transaction.tx())
        .await
        .map_err(|e| store.fail(e))?;
    transaction.commit().await?;
    Ok(done.rows_affected())
}

/// The rows of `sql` (portable, through `Any`), as `T` (a tuple of `i64`, `String`, `bool`,
/// `f64`, `Option` of them...).
///
/// # Errors
/// The query's failure, or rows that do not decode into `T`.
pub async fn fetch_all<S, T>(store: &S, sql: &str) -> Result<Vec<T>>
where
    S: SqlStore,
    T: for<'r> sqlx::FromRow<'r, AnyRow> + Send + Unpin,
{
    // A connection of the pool, outside any write transaction (SQLite's write lock stays free).
    let mut connection = store.acquire().await?;
    sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(&mut connection.tx())
        .await
        .map_err(|e| store.fail(e))
}

/// Runs test bodies written once (`async fn name<D: TestDatabase>()`) on both stores: each
/// becomes the tests `postgres::name` and `sqlite::name`, with the attributes written before its
/// name (`#[tokio::test]` with the flavor the scenario needs, `#[ignore = "..."]`). Needs the
/// `postgres` and `sqlite` features.
///
/// ```ignore
/// async fn appends_are_read_back<D: factum::testing::TestDatabase>() { /* ... */ }
///
/// factum::on_both_stores!(
///     #[tokio::test]
///     appends_are_read_back,
/// );
/// ```
#[macro_export]
macro_rules! on_both_stores {
    ($($(#[$attribute:meta])+ $name:ident),* $(,)?) => {
        mod postgres {
            $(
                $(#[$attribute])+
                async fn $name() {
                    super::$name::<$crate::testing::postgres::TemporaryStore>().await;
                }
            )*
        }

        mod sqlite {
            $(
                $(#[$attribute])+
                async fn $name() {
                    super::$name::<$crate::testing::sqlite::TemporaryDatabase>().await;
                }
            )*
        }
    };
}
