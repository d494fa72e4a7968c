//! Read models of the bank, fed from the global feed.

use std::collections::HashMap;

use factum::{Envelope, projection};
use sqlx::PgConnection;

use crate::{AccountClosed, AccountOpened, MoneyDeposited, MoneyWithdrawn};

/// Per-account balances in a PostgreSQL table: balance, totals in and out, events applied.
///
/// The handlers only add up each batch's changes in memory; `#[flush]` writes them with two
/// statements per batch (the new accounts, then one update for every changed account), in the
/// batch's transaction, so catch-up runs at tens of thousands of events per second.
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

    /// The table's definition.
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
        envelope: &Envelope,
        _tx: &mut PgConnection,
    ) -> Result<(), sqlx::Error> {
        self.opened.push(Opened {
            account: envelope.stream_id.clone(),
            owner: event.owner.clone(),
            balance: cents(event.initial_deposit),
        });
        Ok(())
    }

    #[handle]
    async fn deposited(
        &mut self,
        event: &MoneyDeposited,
        envelope: &Envelope,
        _tx: &mut PgConnection,
    ) -> Result<(), sqlx::Error> {
        let change = self.change(&envelope.stream_id);
        change.balance += cents(event.amount);
        change.deposited += cents(event.amount);
        change.events += 1;
        Ok(())
    }

    #[handle]
    async fn withdrawn(
        &mut self,
        event: &MoneyWithdrawn,
        envelope: &Envelope,
        _tx: &mut PgConnection,
    ) -> Result<(), sqlx::Error> {
        let change = self.change(&envelope.stream_id);
        change.balance -= cents(event.amount);
        change.withdrawn += cents(event.amount);
        change.events += 1;
        Ok(())
    }

    #[handle]
    async fn closed(
        &mut self,
        _event: &AccountClosed,
        envelope: &Envelope,
        _tx: &mut PgConnection,
    ) -> Result<(), sqlx::Error> {
        let change = self.change(&envelope.stream_id);
        change.closed = true;
        change.events += 1;
        Ok(())
    }

    #[flush]
    async fn flush(
        &mut self,
        tx: &mut PgConnection,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let opened = std::mem::take(&mut self.opened);
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
        let changes = std::mem::take(&mut self.changes);
        if changes.is_empty() {
            return Ok(());
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
        let expected = changes.len() as u64;
        let mut columns = (vec![], vec![], vec![], vec![], vec![], vec![]);
        for (account, change) in changes {
            columns.0.push(account);
            columns.1.push(change.balance);
            columns.2.push(change.deposited);
            columns.3.push(change.withdrawn);
            columns.4.push(change.events);
            columns.5.push(change.closed);
        }
        let updated = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(columns.0)
            .bind(columns.1)
            .bind(columns.2)
            .bind(columns.3)
            .bind(columns.4)
            .bind(columns.5)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if updated != expected {
            return Err(Box::new(MissingAccounts {
                table: self.table.clone(),
                missing: expected - updated,
            }));
        }
        Ok(())
    }

    #[discard]
    fn discard(&mut self) {
        self.opened.clear();
        self.changes.clear();
    }
}
