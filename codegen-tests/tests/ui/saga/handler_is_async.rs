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

// An async handler: that is the one error, not also one where the type is used as a saga, nor
// where its handlers send its commands and schedule its timeouts (the macro still emits stub
// `Saga`, `Sends` and `Schedules` implementations).
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Fulfillment;

#[saga(name = "fulfillment", commands(ReserveInventory))]
impl Fulfillment {
    #[start(by = order_id)]
    fn placed(&mut self, event: &OrderPlaced, context: &mut SagaContext<Self>) {
        context.send("sku-1", ReserveInventory { order_id: event.order_id.clone() });
        context.schedule(std::time::Duration::from_secs(60), PaymentTimedOut);
    }

    #[handle(by = order_id)]
    async fn shipped(&mut self, _event: &OrderShipped, _context: &mut SagaContext<Self>) {}

    #[timeout]
    fn timed_out(&mut self, _timeout: &PaymentTimedOut, _context: &mut SagaContext<Self>) {}
}

fn runs<S: factum::saga::Saga>() {}

fn main() {
    runs::<Fulfillment>();
}
