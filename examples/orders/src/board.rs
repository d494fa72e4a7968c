//! The order board: a read model of every order's status (a table `order_board`), fed by a
//! projection. The same projection for both stores (the handlers take the store's connection).

/// Creates the `order_board` table (SQL both stores accept).
pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS order_board (
    order_id    TEXT PRIMARY KEY,
    customer    TEXT NOT NULL,
    amount      BIGINT NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT
)";

/// Reads the board, by order id.
pub const SELECT_ALL: &str =
    "SELECT order_id, customer, amount, status, reason FROM order_board ORDER BY order_id";

/// One row of the board: order id, customer, amount, status, why it was cancelled.
pub type Row = (String, String, i64, String, Option<String>);

macro_rules! order_board {
    ($(#[$doc:meta])* $name:ident, $connection:ty) => {
        $(#[$doc])*
        #[derive(Debug, Default)]
        pub struct $name;

        #[factum::projection(name = "order_board")]
        impl $name {
            #[handle]
            async fn placed(
                &mut self,
                event: &crate::order::OrderPlaced,
                _: &factum::Envelope,
                tx: &mut $connection,
            ) -> Result<(), sqlx::Error> {
                sqlx::query(
                    "INSERT INTO order_board (order_id, customer, amount, status)
                     VALUES ($1, $2, $3, 'placed') ON CONFLICT (order_id) DO NOTHING",
                )
                .bind(&event.order_id)
                .bind(&event.customer)
                .bind(i64::try_from(event.amount).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?;
                Ok(())
            }

            #[handle]
            async fn completed(
                &mut self,
                event: &crate::order::OrderCompleted,
                _: &factum::Envelope,
                tx: &mut $connection,
            ) -> Result<(), sqlx::Error> {
                sqlx::query("UPDATE order_board SET status = 'completed' WHERE order_id = $1")
                    .bind(&event.order_id)
                    .execute(&mut *tx)
                    .await?;
                Ok(())
            }

            #[handle]
            async fn cancelled(
                &mut self,
                event: &crate::order::OrderCancelled,
                _: &factum::Envelope,
                tx: &mut $connection,
            ) -> Result<(), sqlx::Error> {
                sqlx::query(
                    "UPDATE order_board SET status = 'cancelled', reason = $1 WHERE order_id = $2",
                )
                .bind(&event.reason)
                .bind(&event.order_id)
                .execute(&mut *tx)
                .await?;
                Ok(())
            }
        }
    };
}

order_board!(
    /// The order board on SQLite.
    OrderBoard,
    sqlx::SqliteConnection
);

order_board!(
    /// The order board on PostgreSQL.
    PgOrderBoard,
    sqlx::PgConnection
);
