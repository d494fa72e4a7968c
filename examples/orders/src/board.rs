//! The order board: a read model of every order's status (a table `order_board`), fed by a
//! projection written once for both stores (its handlers take `factum::Tx`, and its SQL is
//! portable).

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

/// The order board: one row per order, its status and why it was cancelled.
#[derive(Debug, Default)]
pub struct OrderBoard;

#[factum::projection(name = "order_board")]
impl OrderBoard {
    #[handle]
    async fn placed(
        &mut self,
        event: &crate::order::OrderPlaced,
        _: &factum::Envelope,
        tx: &mut factum::Tx<'_>,
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
        tx: &mut factum::Tx<'_>,
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
        tx: &mut factum::Tx<'_>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE order_board SET status = 'cancelled', reason = $1 WHERE order_id = $2")
            .bind(&event.reason)
            .bind(&event.order_id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// Clears the board, for rebuilds (`factum-examples projections rebuild order_board`).
    #[reset]
    async fn reset(&mut self, tx: &mut factum::Tx<'_>) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM order_board")
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}
