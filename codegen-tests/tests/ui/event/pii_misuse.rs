use factum::event;

// Personal data without a data subject.
#[event]
pub struct CustomerRegistered {
    pub customer_id: String,
    #[pii]
    pub email: Option<String>,
}

// Two subjects; a subject with a replacement; a field that cannot become `None` without a
// replacement; an unknown key.
#[event]
pub struct OrderShipped {
    #[pii(subject)]
    pub buyer: String,
    #[pii(subject, replacement = String::new())]
    pub recipient: String,
    #[pii]
    pub address: String,
    #[pii(secret)]
    pub phone: Option<String>,
}

// A subject that is no string, integer or UUID.
#[event]
pub struct ProfilePhotoUploaded {
    #[pii(subject)]
    pub owner: Vec<u8>,
    #[pii]
    pub photo: Option<String>,
}

// A replacement of the wrong type.
#[event]
pub struct PhoneNumberChanged {
    #[pii(subject)]
    pub customer_id: u64,
    #[pii(replacement = 0)]
    pub phone: String,
}

// Flattened: no field of its own in the payload.
#[event]
pub struct AddressCorrected {
    #[pii(subject)]
    pub customer_id: String,
    #[pii]
    #[serde(flatten)]
    pub address: Option<std::collections::BTreeMap<String, String>>,
}

// Correct: compiles.
#[event]
pub struct NewsletterJoined {
    #[pii(subject)]
    pub customer_id: factum::Uuid,
    #[pii(replacement = "[erased]".to_owned())]
    pub email: String,
    #[pii]
    pub name: Option<String>,
}

fn main() {}
