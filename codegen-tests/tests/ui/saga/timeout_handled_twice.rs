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

// Two handlers for one timeout: that is the one error (the stub lets the saga schedule it
// once, so there is no conflicting implementation either), not also one where the type is used
// as a saga or where it schedules the timeout.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Fulfillment;

#[saga(name = "fulfillment")]
impl Fulfillment {
    #[start(by = order_id)]
    fn placed(&mut self, _event: &OrderPlaced, context: &mut SagaContext<Self>) {
        context.schedule(std::time::Duration::from_secs(60), PaymentTimedOut);
    }

    #[timeout]
    fn timed_out(&mut self, _timeout: &PaymentTimedOut, _context: &mut SagaContext<Self>) {}

    #[timeout]
    fn timed_out_again(&mut self, _timeout: &PaymentTimedOut, _context: &mut SagaContext<Self>) {}
}

fn runs<S: factum::saga::Saga>() {}

fn main() {
    runs::<Fulfillment>();
}
