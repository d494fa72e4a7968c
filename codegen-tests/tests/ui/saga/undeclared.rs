use factum::saga::SagaContext;
use factum::{command, event, saga, timeout};

#[event]
pub struct OrderPlaced {
    pub order_id: String,
}

#[command]
pub struct ReserveInventory {
    pub order_id: String,
}

#[command]
pub struct ChargeCard {
    pub order_id: String,
}

#[timeout]
pub struct PaymentTimedOut;

pub struct NotACommand;

#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Fulfillment;

#[saga(commands(ReserveInventory, NotACommand))]
impl Fulfillment {
    #[start(by = oder_id)]
    fn placed(&mut self, event: &OrderPlaced, context: &mut SagaContext<Self>) {
        context.send("sku-1", ReserveInventory { order_id: event.order_id.clone() });
        // Not listed in `commands(...)`.
        context.send("card-1", ChargeCard { order_id: event.order_id.clone() });
        // No `#[timeout]` handler for it.
        context.schedule(std::time::Duration::from_secs(60), PaymentTimedOut);
    }
}

fn main() {}
