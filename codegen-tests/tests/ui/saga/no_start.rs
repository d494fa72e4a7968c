use factum::saga::SagaContext;
use factum::{command, event, saga, timeout};

#[event]
pub struct OrderPlaced {
    pub order_id: String,
}

#[event]
pub struct OrderShipped {
    pub order_id: String,
}

#[command]
pub struct ReserveInventory {
    pub order_id: String,
}

#[timeout]
pub struct PaymentTimedOut;

// No handler starts an instance: that is the one error, not also one where the type is used as
// a saga.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Fulfillment;

#[saga(name = "fulfillment", commands(ReserveInventory))]
impl Fulfillment {
    #[handle(by = order_id)]
    fn placed(&mut self, event: &OrderPlaced, context: &mut SagaContext<Self>) {
        context.send("sku-1", ReserveInventory { order_id: event.order_id.clone() });
    }

    #[handle(by = order_id, end)]
    fn shipped(&mut self, _event: &OrderShipped, _context: &mut SagaContext<Self>) {}
}

fn runs<S: factum::saga::Saga>() {}

fn main() {
    runs::<Fulfillment>();
}
