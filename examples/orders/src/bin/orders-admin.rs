//! The `factum` command-line tool with the orders example's aggregates registered: `stream show`
//! prints the state after each event, `state` rebuilds an aggregate at a version or a time.
//!
//! ```sh
//! cargo run -p orders --bin orders-admin -- --database-url sqlite://target/factum-orders-example.db stream show order-o-1
//! ```

use orders::inventory::Inventory;
use orders::order::Order;
use orders::payment::Payment;
use orders::shipping::Shipment;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    factum::cli::Cli::new()
        .aggregate::<Order>()
        .aggregate::<Inventory>()
        .aggregate::<Payment>()
        .aggregate::<Shipment>()
        .run()
        .await
}
