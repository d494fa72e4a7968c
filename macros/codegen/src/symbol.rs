//! The keys our attributes accept.

pub const NAME: &str = "name";
pub const VERSION: &str = "version";
pub const EVENTS: &str = "events";
pub const IGNORE: &str = "ignore";
pub const APPLY: &str = "apply";
pub const COMMAND: &str = "command";
pub const STATE_VERSION: &str = "state_version";
pub const HANDLE: &str = "handle";
pub const FLUSH: &str = "flush";
pub const DISCARD: &str = "discard";
pub const SIDE_EFFECTS: &str = "side_effects";
pub const INLINE: &str = "inline";
