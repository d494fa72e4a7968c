//! Read models of the bank, fed from the global feed.

use factum::{Envelope, projection};
use sqlx::PgConnection;

use crate::{AccountClosed, AccountOpened, MoneyDeposited, MoneyWithdrawn};

/// Per-account balances in a PostgreSQL table: balance, totals in and out, events applied.
#[derive(Debug, Clone)]
pub struct AccountBalances {
    table: String,
}

impl AccountBalances {
    /// Balances kept in `table` (schema-qualified and quoted as needed, e.g. `"bank".balances`).
    #[must_use]
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
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

    async fn change(
        &self,
        tx: &mut PgConnection,
        account: &str,
        set: &str,
        amount: i64,
    ) -> Result<(), sqlx::Error> {
        // Increments, not assignments: an event applied twice would show.
        let sql = format!(
            "UPDATE {} SET {set}, events = events + 1 WHERE account = $1",
            self.table
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(account)
            .bind(amount)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

fn cents(amount: u64) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}

#[projection(name = "account_balances")]
impl AccountBalances {
    #[handle]
    async fn opened(
        &mut self,
        event: &AccountOpened,
        envelope: &Envelope,
        tx: &mut PgConnection,
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO {} (account, owner, balance) VALUES ($1, $2, $3)",
            self.table
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&envelope.stream_id)
            .bind(&event.owner)
            .bind(cents(event.initial_deposit))
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    #[handle]
    async fn deposited(
        &mut self,
        event: &MoneyDeposited,
        envelope: &Envelope,
        tx: &mut PgConnection,
    ) -> Result<(), sqlx::Error> {
        let set = "balance = balance + $2, deposited = deposited + $2";
        self.change(tx, &envelope.stream_id, set, cents(event.amount))
            .await
    }

    #[handle]
    async fn withdrawn(
        &mut self,
        event: &MoneyWithdrawn,
        envelope: &Envelope,
        tx: &mut PgConnection,
    ) -> Result<(), sqlx::Error> {
        let set = "balance = balance - $2, withdrawn = withdrawn + $2";
        self.change(tx, &envelope.stream_id, set, cents(event.amount))
            .await
    }

    #[handle]
    async fn closed(
        &mut self,
        _event: &AccountClosed,
        envelope: &Envelope,
        tx: &mut PgConnection,
    ) -> Result<(), sqlx::Error> {
        self.change(
            tx,
            &envelope.stream_id,
            "closed = true, balance = balance + $2",
            0,
        )
        .await
    }
}
