//! Transactions on a SQL store, whatever the store: what projection handlers, inline
//! projections and the runners write with.
//!
//! [`Tx`] is a transaction (or connection) borrowed from whoever began it: a projection runner's
//! batch, an append running inline projections, a [`Transaction`]. It is a sqlx executor for
//! [`sqlx::Any`], delegating to the store's own connection, so one handler body runs on
//! PostgreSQL and on SQLite when its SQL is portable:
//!
//! ```no_run
//! # async fn handler(tx: &mut factum::Tx<'_>) -> Result<(), sqlx::Error> {
//! sqlx::query("UPDATE totals SET amount = amount + $1 WHERE account = $2")
//!     .bind(5_i64)
//!     .bind("acc-1")
//!     .execute(&mut *tx)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! The `Any` driver binds and reads `bool`, integers, floats, text and bytes (and `Option` of
//! them): keep ids and times as text in portable read models. Store-specific SQL (PostgreSQL
//! arrays, `UNNEST`) goes through [`Tx::postgres`] / [`Tx::sqlite`], which give the store's
//! own connection.
//!
//! [`Transaction`] is a transaction a caller begins on a store (`store.begin()`): appends made in
//! it (`store.append_in(&mut transaction, ...)`) commit with its other writes, and wake the
//! store's live subscribers when it commits.

use std::fmt;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
use crate::error::{Error, Result};

/// Which SQL store a transaction runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreKind {
    /// [`PostgresStore`](crate::store::PostgresStore).
    Postgres,
    /// [`SqliteStore`](crate::store::SqliteStore).
    Sqlite,
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Postgres => "PostgreSQL",
            Self::Sqlite => "SQLite",
        })
    }
}

/// A transaction (or connection) on a SQL store, borrowed: see the [module](self) docs.
pub struct Tx<'c> {
    conn: Conn<'c>,
    /// What runs when the transaction commits, when it is a [`Transaction`]'s.
    on_commit: Option<&'c mut OnCommit>,
}

/// Wake-ups to send once a transaction commits (appends made in it wake live subscribers).
#[derive(Default)]
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
pub(crate) struct OnCommit {
    wakes: Vec<Box<dyn Fn() + Send + Sync>>,
}

#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
impl OnCommit {
    fn run(self) {
        for wake in &self.wakes {
            wake();
        }
    }
}

enum Conn<'c> {
    #[cfg(feature = "postgres")]
    Postgres(&'c mut sqlx::PgConnection),
    #[cfg(feature = "sqlite")]
    Sqlite(&'c mut sqlx::SqliteConnection),
    /// Without a SQL store compiled in, no transaction exists.
    #[cfg(not(any(feature = "postgres", feature = "sqlite")))]
    #[allow(dead_code)]
    None(
        std::convert::Infallible,
        std::marker::PhantomData<&'c mut ()>,
    ),
}

impl fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tx")
            .field("store", &self.kind())
            .finish_non_exhaustive()
    }
}

impl<'c> Tx<'c> {
    /// The store it runs on.
    #[must_use]
    pub fn kind(&self) -> StoreKind {
        match &self.conn {
            #[cfg(feature = "postgres")]
            Conn::Postgres(_) => StoreKind::Postgres,
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(_) => StoreKind::Sqlite,
            #[cfg(not(any(feature = "postgres", feature = "sqlite")))]
            Conn::None(never, _) => match *never {},
        }
    }

    /// The PostgreSQL connection, when it runs on PostgreSQL: for SQL only PostgreSQL has.
    #[cfg(feature = "postgres")]
    pub fn postgres(&mut self) -> Option<&mut sqlx::PgConnection> {
        match &mut self.conn {
            Conn::Postgres(connection) => Some(connection),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The SQLite connection, when it runs on SQLite: for SQL only SQLite has.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(&mut self) -> Option<&mut sqlx::SqliteConnection> {
        match &mut self.conn {
            Conn::Sqlite(connection) => Some(connection),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The same transaction, borrowed for a shorter time.
    #[must_use]
    #[cfg_attr(
        not(any(feature = "postgres", feature = "sqlite")),
        allow(unreachable_code, unused_variables)
    )]
    pub fn reborrow(&mut self) -> Tx<'_> {
        let conn = match &mut self.conn {
            #[cfg(feature = "postgres")]
            Conn::Postgres(connection) => Conn::Postgres(connection),
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(connection) => Conn::Sqlite(connection),
            #[cfg(not(any(feature = "postgres", feature = "sqlite")))]
            Conn::None(never, _) => match *never {},
        };
        Tx {
            conn,
            on_commit: self.on_commit.as_deref_mut(),
        }
    }

    /// Runs `wake` once the transaction commits, when it is a [`Transaction`]'s (otherwise
    /// whoever commits it wakes subscribers: `notify_subscribers`). Returns whether it will.
    #[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
    pub(crate) fn wake_on_commit(&mut self, wake: impl Fn() + Send + Sync + 'static) -> bool {
        match &mut self.on_commit {
            Some(on_commit) => {
                on_commit.wakes.push(Box::new(wake));
                true
            }
            None => false,
        }
    }
}

impl<'c> From<&'c mut Tx<'_>> for Tx<'c> {
    fn from(tx: &'c mut Tx<'_>) -> Self {
        tx.reborrow()
    }
}

#[cfg(feature = "postgres")]
impl<'c> From<&'c mut sqlx::PgConnection> for Tx<'c> {
    fn from(connection: &'c mut sqlx::PgConnection) -> Self {
        Self {
            conn: Conn::Postgres(connection),
            on_commit: None,
        }
    }
}

#[cfg(feature = "postgres")]
impl<'c> From<&'c mut sqlx::Transaction<'_, sqlx::Postgres>> for Tx<'c> {
    fn from(transaction: &'c mut sqlx::Transaction<'_, sqlx::Postgres>) -> Self {
        Self::from(&mut **transaction)
    }
}

#[cfg(feature = "sqlite")]
impl<'c> From<&'c mut sqlx::SqliteConnection> for Tx<'c> {
    fn from(connection: &'c mut sqlx::SqliteConnection) -> Self {
        Self {
            conn: Conn::Sqlite(connection),
            on_commit: None,
        }
    }
}

#[cfg(feature = "sqlite")]
impl<'c> From<&'c mut sqlx::Transaction<'_, sqlx::Sqlite>> for Tx<'c> {
    fn from(transaction: &'c mut sqlx::Transaction<'_, sqlx::Sqlite>) -> Self {
        Self::from(&mut **transaction)
    }
}

/// A transaction begun on a SQL store (`store.begin()`): appends made in it
/// (`store.append_in(&mut transaction, ...)`) commit or roll back with its other writes, and wake
/// the store's live subscribers when it commits. It executes queries through `Any`, as [`Tx`]:
///
/// ```no_run
/// # async fn run(store: factum::store::SqliteStore, events: Vec<factum::NewEvent>) -> factum::Result<()> {
/// use factum::ExpectedVersion;
///
/// let mut transaction = store.begin().await?;
/// store.append_in(&mut transaction, "acc-1", "Account", ExpectedVersion::Any, events).await?;
/// sqlx::query("INSERT INTO audit (note) VALUES ($1)")
///     .bind("opened")
///     .execute(&mut transaction.tx())
///     .await
///     .map_err(|e| factum::Error::Backend(Box::new(e)))?;
/// transaction.commit().await?; // live subscribers see the events now
/// # Ok(()) }
/// ```
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub struct Transaction {
    owned: Owned,
    on_commit: OnCommit,
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
enum Owned {
    #[cfg(feature = "postgres")]
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction").finish_non_exhaustive()
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl Transaction {
    #[cfg(feature = "postgres")]
    pub(crate) fn postgres(transaction: sqlx::Transaction<'static, sqlx::Postgres>) -> Self {
        Self {
            owned: Owned::Postgres(transaction),
            on_commit: OnCommit::default(),
        }
    }

    #[cfg(feature = "sqlite")]
    pub(crate) fn sqlite(transaction: sqlx::Transaction<'static, sqlx::Sqlite>) -> Self {
        Self {
            owned: Owned::Sqlite(transaction),
            on_commit: OnCommit::default(),
        }
    }

    /// The transaction, borrowed: to execute queries, or hand to handlers.
    pub fn tx(&mut self) -> Tx<'_> {
        let conn = match &mut self.owned {
            #[cfg(feature = "postgres")]
            Owned::Postgres(transaction) => Conn::Postgres(transaction),
            #[cfg(feature = "sqlite")]
            Owned::Sqlite(transaction) => Conn::Sqlite(transaction),
        };
        Tx {
            conn,
            on_commit: Some(&mut self.on_commit),
        }
    }

    /// Commits, then wakes the live subscribers of the stores appended to.
    ///
    /// # Errors
    /// [`Error::Database`] when the commit fails (nothing of the transaction is stored).
    pub async fn commit(self) -> Result<()> {
        let committed = match self.owned {
            #[cfg(feature = "postgres")]
            Owned::Postgres(transaction) => transaction.commit().await,
            #[cfg(feature = "sqlite")]
            Owned::Sqlite(transaction) => transaction.commit().await,
        };
        committed.map_err(Error::Database)?;
        self.on_commit.run();
        Ok(())
    }

    /// Rolls back: nothing of the transaction is stored.
    ///
    /// # Errors
    /// [`Error::Database`] when the database cannot be told (it rolls back anyway when the
    /// connection closes).
    pub async fn rollback(self) -> Result<()> {
        let rolled_back = match self.owned {
            #[cfg(feature = "postgres")]
            Owned::Postgres(transaction) => transaction.rollback().await,
            #[cfg(feature = "sqlite")]
            Owned::Sqlite(transaction) => transaction.rollback().await,
        };
        rolled_back.map_err(Error::Database)
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl<'c> From<&'c mut Transaction> for Tx<'c> {
    fn from(transaction: &'c mut Transaction) -> Self {
        transaction.tx()
    }
}

/// A store's connection as a handler may ask for it: `&mut PgConnection` or
/// `&mut SqliteConnection` in a projection handler makes the projection run on that store only.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the connection of a Factum store",
    label = "not a store connection",
    note = "a handler takes `&mut factum::Tx<'_>` (either store), `&mut sqlx::PgConnection` (PostgreSQL) or `&mut sqlx::SqliteConnection` (SQLite)"
)]
pub trait StoreConnection: Send + 'static {
    /// The store it belongs to.
    const KIND: StoreKind;
    /// The store type, for compile-time checks of where a projection runs.
    type Store;

    /// The connection of `tx`, when `tx` runs on this store.
    fn of<'a>(tx: &'a mut Tx<'_>) -> Option<&'a mut Self>;
}

#[cfg(feature = "postgres")]
impl StoreConnection for sqlx::PgConnection {
    const KIND: StoreKind = StoreKind::Postgres;
    type Store = crate::store::PostgresStore;

    fn of<'a>(tx: &'a mut Tx<'_>) -> Option<&'a mut Self> {
        tx.postgres()
    }
}

#[cfg(feature = "sqlite")]
impl StoreConnection for sqlx::SqliteConnection {
    const KIND: StoreKind = StoreKind::Sqlite;
    type Store = crate::store::SqliteStore;

    fn of<'a>(tx: &'a mut Tx<'_>) -> Option<&'a mut Self> {
        tx.sqlite()
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod executor {
    //! `&mut Tx` as a sqlx executor for `Any`: each call goes to the store's own connection
    //! through its `AnyConnectionBackend` implementation (as `AnyConnection` does, but on a
    //! borrowed connection).

    use futures_core::future::BoxFuture;
    use futures_core::stream::BoxStream;
    use futures_util::{FutureExt as _, StreamExt as _};
    use sqlx::any::{Any, AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
    use sqlx::{Either, Execute, Executor};
    use sqlx_core::any::AnyConnectionBackend;
    use sqlx_core::sql_str::SqlStr;

    use super::{Conn, Tx};

    impl Tx<'_> {
        fn backend(&mut self) -> &mut dyn AnyConnectionBackend {
            match &mut self.conn {
                #[cfg(feature = "postgres")]
                Conn::Postgres(connection) => &mut **connection,
                #[cfg(feature = "sqlite")]
                Conn::Sqlite(connection) => &mut **connection,
            }
        }
    }

    impl<'t, 'c: 't> Executor<'t> for &'t mut Tx<'c> {
        type Database = Any;

        fn fetch_many<'e, 'q: 'e, E>(
            self,
            mut query: E,
        ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
        where
            't: 'e,
            E: 'q + Execute<'q, Any>,
        {
            let arguments = match query.take_arguments().map_err(sqlx::Error::Encode) {
                Ok(arguments) => arguments,
                Err(error) => {
                    return futures_util::stream::once(std::future::ready(Err(error))).boxed();
                }
            };
            let persistent = query.persistent();
            self.backend()
                .fetch_many(query.sql(), persistent, arguments)
        }

        fn fetch_optional<'e, 'q: 'e, E>(
            self,
            mut query: E,
        ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
        where
            't: 'e,
            E: 'q + Execute<'q, Any>,
        {
            let arguments = match query.take_arguments().map_err(sqlx::Error::Encode) {
                Ok(arguments) => arguments,
                Err(error) => return std::future::ready(Err(error)).boxed(),
            };
            let persistent = query.persistent();
            self.backend()
                .fetch_optional(query.sql(), persistent, arguments)
        }

        fn prepare_with<'e>(
            self,
            sql: SqlStr,
            parameters: &'e [AnyTypeInfo],
        ) -> BoxFuture<'e, Result<AnyStatement, sqlx::Error>>
        where
            't: 'e,
        {
            self.backend().prepare_with(sql, parameters)
        }

        // The store crates' `offline` features are always on (see Cargo.toml), so this
        // method of `Executor` exists whatever features the application enables.
        fn describe<'e>(
            self,
            sql: SqlStr,
        ) -> BoxFuture<'e, Result<sqlx_core::describe::Describe<Any>, sqlx::Error>>
        where
            't: 'e,
        {
            self.backend().describe(sql)
        }
    }
}

/// `tx`'s connection of the store `C` is for.
///
/// # Errors
/// [`Error::InvalidConfig`] naming both stores when `tx` runs on another.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn connection<'a, C: StoreConnection>(tx: &'a mut Tx<'_>) -> Result<&'a mut C> {
    let kind = tx.kind();
    C::of(tx).ok_or_else(|| {
        Error::InvalidConfig(format!(
            "this needs a {expected} transaction, and it was given a {kind} one: use a {expected} store's transaction",
            expected = C::KIND
        ))
    })
}
