//! The `factum` command-line tool with the examples' aggregates and catalog registered:
//! `stream show` prints the state after each event, `state` rebuilds an aggregate at a version
//! or a time, `projections rebuild order_board` rebuilds the order board, `dlq retry|skip`
//! handle its parked streams, `catalog check` checks the schema lock. On PostgreSQL the board's
//! table is unqualified: give the store's schema as the search path in the URL
//! (`?options=-c%20search_path%3Dorders_example`).
//!
//! ```sh
//! cargo run -p example-catalog --bin factum-examples -- \
//!     --database-url sqlite://target/factum-orders-example.db stream show order-o-1
//! cargo run -p example-catalog --bin factum-examples -- catalog check
//! ```

#[tokio::main]
async fn main() -> std::process::ExitCode {
    factum::cli::Cli::new()
        .aggregate::<bank::BankAccount>()
        .aggregate::<orders::order::Order>()
        .aggregate::<orders::inventory::Inventory>()
        .aggregate::<orders::payment::Payment>()
        .aggregate::<orders::shipping::Shipment>()
        .projection(orders::board::OrderBoard::default)
        .catalog(example_catalog::catalog(), example_catalog::schemas_dir())
        .run()
        .await
}
