//! Read models of the bank, fed from the global feed, on either store.

use std::collections::HashMap;

use factum::{Source, Tx, projection};

use crate::{AccountClosed, AccountOpened, MoneyDeposited, MoneyWithdrawn};

/// Per-account balances in a table: balance, totals in and out, events applied. Runs on
/// PostgreSQL and SQLite.
///
/// The handlers only add up each batch's changes in memory; `#[flush]` writes them in the
/// batch's transaction: on PostgreSQL with two statements per batch (the new accounts, then one
/// update for every changed account, through arrays), so catch-up runs at tens of thousands of
/// events per second; elsewhere with one portable statement per account. The handlers need only
/// each event's stream, so they take its [`Source`]: the runner reads no ids, versions or
/// metadata.
#[derive(Debug, Clone)]
pub struct AccountBalances {
    table: String,
    opened: Vec<Opened>,
    changes: HashMap<String, Change>,
}

#[derive(Debug, Clone)]
struct Opened {
    account: String,
    owner: String,
    balance: i64,
}

/// What a batch changes in one account's row: increments, never assignments, so an event
/// applied twice would show.
#[derive(Debug, Clone, Default)]
struct Change {
    balance: i64,
    deposited: i64,
    withdrawn: i64,
    events: i64,
    closed: bool,
}

impl AccountBalances {
    /// Balances kept in `table` (schema-qualified and quoted as needed, e.g. `"bank".balances`).
    #[must_use]
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            opened: Vec::new(),
            changes: HashMap::new(),
        }
    }

    /// The table's definition (SQL both stores accept).
    #[must_use]
    pub fn create_table(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
                 account text PRIMARY KEY,
                 owner text NOT NULL,
                 balance bigint NOT NULL,
                 deposited bigint NOT NULL DEFAULT 0,
                 withdrawn bigint NOT NULL DEFAULT 0,
                 events bigint NOT NULL DEFAULT 1,
                 closed boolean NOT NULL DEFAULT false
             )",
            self.table
        )
    }

    /// The table's rows: account, owner, balance, deposited, withdrawn, events, whether closed
    /// (as 0/1, the same on both stores), by account.
    #[must_use]
    pub fn select_all(&self) -> String {
        format!(
            "SELECT account, owner, balance, deposited, withdrawn, events,
                    CASE WHEN closed THEN 1 ELSE 0 END
             FROM {} ORDER BY account",
            self.table
        )
    }

    fn change(&mut self, account: &str) -> &mut Change {
        self.changes.entry(account.to_owned()).or_default()
    }
}

fn cents(amount: u64) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}

/// The flush found changes for accounts the table does not hold.
#[derive(Debug, thiserror::Error)]
#[error(
    "{missing} changed account(s) were never opened in {table}: is the table from another projection version?"
)]
pub struct MissingAccounts {
    table: String,
    missing: u64,
}

#[projection(name = "account_balances")]
impl AccountBalances {
    #[handle]
    async fn opened(
        &mut self,
        event: &AccountOpened,
        source: &Source<'_>,
        _tx: &mut Tx<'_>,
    ) -> Result<(), sqlx::Error> {
        self.opened.push(Opened {
            account: source.stream_id.to_owned(),
            owner: event.owner.clone(),
            balance: cents(event.initial_deposit),
        });
        Ok(())
    }

    #[handle]
    async fn deposited(
        &mut self,
        event: &MoneyDeposited,
        source: &Source<'_>,
        _tx: &mut Tx<'_>,
    ) -> Result<(), sqlx::Error> {
        let change = self.change(source.stream_id);
        change.balance += cents(event.amount);
        change.deposited += cents(event.amount);
        change.events += 1;
        Ok(())
    }

    #[handle]
    async fn withdrawn(
        &mut self,
        event: &MoneyWithdrawn,
        source: &Source<'_>,
        _tx: &mut Tx<'_>,
    ) -> Result<(), sqlx::Error> {
        let change = self.change(source.stream_id);
        change.balance -= cents(event.amount);
        change.withdrawn += cents(event.amount);
        change.events += 1;
        Ok(())
    }

    #[handle]
    async fn closed(
        &mut self,
        _event: &AccountClosed,
        source: &Source<'_>,
        _tx: &mut Tx<'_>,
    ) -> Result<(), sqlx::Error> {
        let change = self.change(source.stream_id);
        change.closed = true;
        change.events += 1;
        Ok(())
    }

    #[flush]
    async fn flush(
        &mut self,
        tx: &mut Tx<'_>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let opened = std::mem::take(&mut self.opened);
        let changes = std::mem::take(&mut self.changes);
        let expected = changes.len() as u64;
        let updated = match tx.postgres() {
            Some(pg) => self.write_arrays(pg, opened, changes).await?,
            None => self.write_rows(tx, opened, changes).await?,
        };
        if updated != expected {
            return Err(Box::new(MissingAccounts {
                table: self.table.clone(),
                missing: expected - updated,
            }));
        }
        Ok(())
    }

    /// Clears the balances, for rebuilds.
    #[reset]
    async fn reset(&mut self, tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {}", self.table)))
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    #[discard]
    fn discard(&mut self) {
        self.opened.clear();
        self.changes.clear();
    }
}

impl AccountBalances {
    /// The batch's writes on PostgreSQL: two statements, through arrays. Returns the accounts
    /// updated.
    async fn write_arrays(
        &self,
        tx: &mut sqlx::PgConnection,
        opened: Vec<Opened>,
        changes: HashMap<String, Change>,
    ) -> Result<u64, sqlx::Error> {
        if !opened.is_empty() {
            let sql = format!(
                "INSERT INTO {} (account, owner, balance)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[])",
                self.table
            );
            let (accounts, owners, balances): (Vec<_>, Vec<_>, Vec<_>) = opened
                .into_iter()
                .map(|o| (o.account, o.owner, o.balance))
                .collect();
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(accounts)
                .bind(owners)
                .bind(balances)
                .execute(&mut *tx)
                .await?;
        }
        if changes.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "UPDATE {t} AS b SET balance = b.balance + c.balance,
                 deposited = b.deposited + c.deposited, withdrawn = b.withdrawn + c.withdrawn,
                 events = b.events + c.events, closed = b.closed OR c.closed
             FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::bool[])
                  AS c (account, balance, deposited, withdrawn, events, closed)
             WHERE b.account = c.account",
            t = self.table
        );
        let mut columns = (vec![], vec![], vec![], vec![], vec![], vec![]);
        for (account, change) in changes {
            columns.0.push(account);
            columns.1.push(change.balance);
            columns.2.push(change.deposited);
            columns.3.push(change.withdrawn);
            columns.4.push(change.events);
            columns.5.push(change.closed);
        }
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(columns.0)
            .bind(columns.1)
            .bind(columns.2)
            .bind(columns.3)
            .bind(columns.4)
            .bind(columns.5)
            .execute(&mut *tx)
            .await?
            .rows_affected())
    }

    /// The batch's writes in portable SQL: one statement per account. Returns the accounts
    /// updated.
    async fn write_rows(
        &self,
        tx: &mut Tx<'_>,
        opened: Vec<Opened>,
        changes: HashMap<String, Change>,
    ) -> Result<u64, sqlx::Error> {
        let insert = format!(
            "INSERT INTO {} (account, owner, balance) VALUES ($1, $2, $3)",
            self.table
        );
        for o in opened {
            sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                .bind(o.account)
                .bind(o.owner)
                .bind(o.balance)
                .execute(&mut *tx)
                .await?;
        }
        let update = format!(
            "UPDATE {} SET balance = balance + $2, deposited = deposited + $3,
                 withdrawn = withdrawn + $4, events = events + $5, closed = closed OR $6
             WHERE account = $1",
            self.table
        );
        let mut updated = 0;
        for (account, change) in changes {
            updated += sqlx::query(sqlx::AssertSqlSafe(update.as_str()))
                .bind(account)
                .bind(change.balance)
                .bind(change.deposited)
                .bind(change.withdrawn)
                .bind(change.events)
                .bind(change.closed)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        Ok(updated)
    }
}
