use factum::saga::{Saga, SagaContext, SqliteSagaRunner};
use factum::store::SqliteStore;
use factum::{command, event, saga};

#[event]
pub struct OrderPlaced {
    pub order_id: String,
}

#[command]
pub struct ReserveInventory {
    pub order_id: String,
}

// The only handler is async: that is the one error, not also one where a runner is built for
// the saga or its trait items are used (the macro still emits stub `Saga` and `Sends`
// implementations).
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Fulfillment;

#[saga(name = "fulfillment", commands(ReserveInventory))]
impl Fulfillment {
    #[start(by = order_id)]
    async fn placed(&mut self, event: &OrderPlaced, context: &mut SagaContext<Self>) {
        context.send("sku-1", ReserveInventory { order_id: event.order_id.clone() });
    }
}

fn runner(store: SqliteStore) -> SqliteSagaRunner<Fulfillment> {
    SqliteSagaRunner::new(store, factum::saga::CommandBus::new())
}

fn main() {
    let _ = runner;
    let _ = <Fulfillment as Saga>::NAME;
}
