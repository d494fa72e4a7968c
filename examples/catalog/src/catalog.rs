//! The examples' catalog: shared by the build script (which writes it) and the tests (which
//! check it).

use factum::catalog::Catalog;

/// Every example aggregate's events.
#[must_use]
pub fn catalog() -> Catalog {
    Catalog::new("Factum examples", env!("CARGO_PKG_VERSION"))
        .description("The events of Factum's examples.")
        .aggregate::<bank::BankAccount>()
        .projection::<bank::projections::AccountBalances>()
        .aggregate::<orders::order::Order>()
        .aggregate::<orders::inventory::Inventory>()
        .aggregate::<orders::payment::Payment>()
        .aggregate::<orders::shipping::Shipment>()
        .projection::<orders::board::OrderBoard>()
        .saga::<orders::fulfillment::OrderFulfillment>()
}
