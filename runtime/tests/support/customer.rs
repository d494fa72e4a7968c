//! A customer's registration with personal data (name and email `#[pii]`, the customer id its
//! data subject), shared by the personal-data tests of the stores and of the relays.

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRegistered {
    #[pii(subject)]
    pub customer_id: String,
    #[pii(replacement = "[erased]".to_owned())]
    pub name: String,
    #[pii]
    pub email: Option<String>,
    pub plan: String,
}
