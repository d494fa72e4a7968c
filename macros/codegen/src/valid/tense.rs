//! Event names as past-tense facts (seed 001: "events are facts that happened: `OrderPlaced`,
//! not `PlaceOrder`"): a heuristic over the name's last word, and a suggestion when it fails.
//!
//! The last word of the name (CamelCase, `_`, `-` or `.` separated; a trailing `V2` version
//! tag ignored) must read as a past participle: a regular one (`Placed`, `Shipped`, `Applied`)
//! or an irregular one (`Paid`, `Sent`, `Withdrawn`, `Rebuilt`). Names the heuristic gets wrong
//! opt out with `#[event(any_name)]`.

/// Irregular past participles (and past forms used as participles), lowercase. A word ending in
/// one of the longer ones counts too (`Rebuilt`, `Prepaid`, `Overdrawn`); the short ones (three
/// letters or fewer) must be the whole word.
const IRREGULAR: &[&str] = &[
    "arisen",
    "awoken",
    "been",
    "beaten",
    "become",
    "begun",
    "bent",
    "bet",
    "bid",
    "bitten",
    "bled",
    "blown",
    "borne",
    "born",
    "bought",
    "bound",
    "broken",
    "brought",
    "built",
    "burnt",
    "cast",
    "caught",
    "chosen",
    "clung",
    "come",
    "cost",
    "crept",
    "cut",
    "dealt",
    "done",
    "drawn",
    "dreamt",
    "driven",
    "drunk",
    "dug",
    "dwelt",
    "eaten",
    "fallen",
    "fed",
    "felt",
    "fled",
    "flown",
    "forbidden",
    "forgiven",
    "forgotten",
    "fought",
    "found",
    "frozen",
    "given",
    "gone",
    "got",
    "gotten",
    "ground",
    "grown",
    "held",
    "hid",
    "hidden",
    "hit",
    "hung",
    "hurt",
    "kept",
    "knelt",
    "known",
    "laid",
    "lain",
    "learnt",
    "led",
    "left",
    "lent",
    "let",
    "lit",
    "lost",
    "made",
    "meant",
    "met",
    "mown",
    "paid",
    "proven",
    "put",
    "quit",
    "preset",
    "read",
    "reset",
    "rid",
    "ridden",
    "risen",
    "run",
    "rung",
    "said",
    "sat",
    "seen",
    "sent",
    "set",
    "sewn",
    "shaken",
    "shed",
    "shone",
    "shot",
    "shown",
    "shrunk",
    "shut",
    "slain",
    "slept",
    "slid",
    "sold",
    "sought",
    "sown",
    "spat",
    "spelt",
    "spent",
    "spilt",
    "split",
    "spoken",
    "sped",
    "spread",
    "sprung",
    "stolen",
    "stood",
    "struck",
    "stuck",
    "stung",
    "striven",
    "sung",
    "sunk",
    "swept",
    "sworn",
    "swum",
    "swung",
    "taken",
    "taught",
    "thought",
    "thrown",
    "told",
    "torn",
    "trodden",
    "understood",
    "undone",
    "upheld",
    "upset",
    "wept",
    "withdrawn",
    "withheld",
    "woken",
    "won",
    "worn",
    "wound",
    "written",
    "wrung",
];

/// Words ending in `ed` that are not past tense (`Need`, `Speed`, `Embed`).
const NOT_PAST: &[&str] = &[
    "bed", "bleed", "breed", "creed", "deed", "embed", "feed", "greed", "heed", "meed", "need",
    "red", "reed", "seed", "shred", "sled", "speed", "steed", "tweed", "wed", "weed",
];

/// Verbs whose past participle is irregular, with it, for suggestions.
const IRREGULAR_VERBS: &[(&str, &str)] = &[
    ("begin", "begun"),
    ("bind", "bound"),
    ("break", "broken"),
    ("bring", "brought"),
    ("build", "built"),
    ("buy", "bought"),
    ("catch", "caught"),
    ("choose", "chosen"),
    ("come", "come"),
    ("cut", "cut"),
    ("deal", "dealt"),
    ("do", "done"),
    ("draw", "drawn"),
    ("drive", "driven"),
    ("eat", "eaten"),
    ("fall", "fallen"),
    ("feed", "fed"),
    ("feel", "felt"),
    ("find", "found"),
    ("fly", "flown"),
    ("forget", "forgotten"),
    ("forgive", "forgiven"),
    ("freeze", "frozen"),
    ("get", "got"),
    ("give", "given"),
    ("go", "gone"),
    ("grow", "grown"),
    ("hide", "hidden"),
    ("hold", "held"),
    ("keep", "kept"),
    ("know", "known"),
    ("lay", "laid"),
    ("lead", "led"),
    ("leave", "left"),
    ("lend", "lent"),
    ("lose", "lost"),
    ("make", "made"),
    ("meet", "met"),
    ("overdraw", "overdrawn"),
    ("pay", "paid"),
    ("prepay", "prepaid"),
    ("put", "put"),
    ("quit", "quit"),
    ("read", "read"),
    ("rebuild", "rebuilt"),
    ("repay", "repaid"),
    ("resend", "resent"),
    ("rewrite", "rewritten"),
    ("ride", "ridden"),
    ("rise", "risen"),
    ("run", "run"),
    ("say", "said"),
    ("see", "seen"),
    ("sell", "sold"),
    ("send", "sent"),
    ("set", "set"),
    ("shake", "shaken"),
    ("show", "shown"),
    ("shut", "shut"),
    ("sit", "sat"),
    ("sleep", "slept"),
    ("speak", "spoken"),
    ("spend", "spent"),
    ("split", "split"),
    ("stand", "stood"),
    ("steal", "stolen"),
    ("stick", "stuck"),
    ("strike", "struck"),
    ("swear", "sworn"),
    ("take", "taken"),
    ("teach", "taught"),
    ("tell", "told"),
    ("think", "thought"),
    ("throw", "thrown"),
    ("undo", "undone"),
    ("uphold", "upheld"),
    ("wake", "woken"),
    ("wear", "worn"),
    ("win", "won"),
    ("withdraw", "withdrawn"),
    ("withhold", "withheld"),
    ("write", "written"),
];

/// Verbs a command name starts with (`CreateOrder`, `WithdrawMoney`), lowercase: a name
/// starting with one is suggested as its object and the verb's participle (`OrderCreated`).
const COMMAND_VERBS: &[&str] = &[
    "accept",
    "activate",
    "add",
    "adjust",
    "allocate",
    "apply",
    "approve",
    "archive",
    "assign",
    "authorize",
    "block",
    "book",
    "buy",
    "calculate",
    "cancel",
    "capture",
    "change",
    "charge",
    "check",
    "claim",
    "clear",
    "close",
    "complete",
    "confirm",
    "create",
    "credit",
    "deactivate",
    "debit",
    "decline",
    "delete",
    "deliver",
    "deposit",
    "disable",
    "dispatch",
    "enable",
    "end",
    "enroll",
    "execute",
    "expire",
    "fail",
    "finish",
    "fulfill",
    "grant",
    "hold",
    "import",
    "increase",
    "invite",
    "issue",
    "join",
    "leave",
    "lock",
    "log",
    "make",
    "mark",
    "merge",
    "move",
    "open",
    "pay",
    "place",
    "post",
    "process",
    "publish",
    "receive",
    "record",
    "refund",
    "register",
    "reject",
    "release",
    "remove",
    "rename",
    "renew",
    "request",
    "reserve",
    "reset",
    "resolve",
    "restore",
    "resume",
    "return",
    "revoke",
    "schedule",
    "sell",
    "send",
    "set",
    "settle",
    "ship",
    "sign",
    "start",
    "stop",
    "submit",
    "suspend",
    "transfer",
    "unlock",
    "update",
    "upload",
    "validate",
    "verify",
    "void",
    "withdraw",
];

/// Two-syllable verbs stressed on the last syllable, whose final consonant doubles
/// (`Submitted`, `Transferred`), and `-el` verbs as written in British English (`Cancelled`).
const DOUBLING: &[&str] = &[
    "admit", "cancel", "commit", "compel", "control", "emit", "equip", "expel", "label", "model",
    "occur", "omit", "patrol", "permit", "prefer", "propel", "refer", "regret", "remit", "submit",
    "transfer", "travel", "unplug",
];

/// Whether `name` (an event's stored type name) reads as a past-tense fact.
pub fn is_past_tense(name: &str) -> bool {
    let words = words(name);
    let Some(last) = words.last() else {
        return true;
    };
    let last = last.to_ascii_lowercase();
    if let Some(stem) = last.strip_suffix("ed") {
        return stem.len() >= 2 && !NOT_PAST.contains(&last.as_str());
    }
    IRREGULAR.iter().any(|form| {
        if form.len() <= 3 {
            last == *form
        } else {
            last.ends_with(form)
        }
    })
}

/// A past-tense name for `name`: `CreateOrder` → `OrderCreated`, `OrderCreate` → `OrderCreated`,
/// `Deposit` → `Deposited`.
pub fn suggestion(name: &str) -> String {
    let mut words = words(name);
    if words.is_empty() {
        return String::from("SomethingHappened");
    }
    let command_verb = |word: &String| COMMAND_VERBS.contains(&word.to_ascii_lowercase().as_str());
    // `CreateOrder`, but not `TransferRequest` (whose last word is the verb).
    let starts_with_verb =
        words.len() > 1 && command_verb(&words[0]) && !words.last().is_some_and(command_verb);
    let verb = if starts_with_verb {
        words.remove(0)
    } else {
        words.pop().unwrap_or_default()
    };
    words.push(capitalized(&participle(&verb.to_ascii_lowercase())));
    words.concat()
}

/// The words of a name: split at `_`, `-`, `.`, at lower-to-upper case changes, before the
/// last capital of a run of capitals (`HTTPRequest` → `HTTP`, `Request`) and before numbers;
/// trailing version tags (`V2`) and numbers dropped.
fn words(name: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for part in name.split(['_', '-', '.', ':', '/']) {
        let chars: Vec<char> = part.chars().collect();
        let mut current = String::new();
        for (i, &c) in chars.iter().enumerate() {
            let Some(&previous) = i.checked_sub(1).and_then(|i| chars.get(i)) else {
                current.push(c);
                continue;
            };
            let case_change = c.is_uppercase()
                && (previous.is_lowercase()
                    || previous.is_ascii_digit()
                    || chars.get(i + 1).is_some_and(|next| next.is_lowercase()));
            // `Happened9x4` → `Happened`, `9x4`; but `V2` stays one word.
            let number = c.is_ascii_digit()
                && previous.is_alphabetic()
                && !matches!(current.as_str(), "V" | "v");
            let boundary = !current.is_empty() && (case_change || number);
            if boundary {
                words.push(std::mem::take(&mut current));
            }
            current.push(c);
        }
        if !current.is_empty() {
            words.push(current);
        }
    }
    // A version tag (`V2`) or a number (`9x4`) says which, not what happened.
    let tag = |word: &String| {
        let mut chars = word.chars();
        match chars.next() {
            Some('V' | 'v') => chars.clone().next().is_some() && chars.all(|c| c.is_ascii_digit()),
            Some(first) => first.is_ascii_digit(),
            None => true,
        }
    };
    while words.len() > 1 && words.last().is_some_and(tag) {
        words.pop();
    }
    words
}

/// The past participle of the lowercase verb `verb` (or of the verb of a present participle:
/// `shipping` → `shipped`).
fn participle(verb: &str) -> String {
    if let Some(stem) = verb.strip_suffix("ing").filter(|stem| stem.len() >= 3) {
        let bytes = stem.as_bytes();
        let doubled = bytes[bytes.len() - 1] == bytes[bytes.len() - 2]
            && !matches!(bytes[bytes.len() - 1], b's' | b'l' | b'e' | b'o');
        let stem = if doubled {
            &stem[..stem.len() - 1]
        } else {
            stem
        };
        return participle(stem);
    }
    if let Some((_, form)) = IRREGULAR_VERBS.iter().find(|(base, _)| *base == verb) {
        return (*form).to_owned();
    }
    if is_past_tense(verb) {
        return verb.to_owned();
    }
    let chars: Vec<char> = verb.chars().collect();
    let vowel = |c: char| "aeiou".contains(c);
    match chars.as_slice() {
        [.., 'e'] => format!("{verb}d"),
        [.., before, 'y'] if !vowel(*before) => format!("{}ied", &verb[..verb.len() - 1]),
        [.., a, b, c]
            if (DOUBLING.contains(&verb) || chars.iter().filter(|c| vowel(**c)).count() == 1)
                && !vowel(*a)
                && vowel(*b)
                && !vowel(*c)
                && !"wxy".contains(*c) =>
        {
            format!("{verb}{c}ed")
        }
        _ => format!("{verb}ed"),
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_pass() {
        for name in [
            "OrderPlaced",
            "MoneyDeposited",
            "MoneyWithdrawn",
            "PaymentSent",
            "InvoicePaid",
            "AccountOpened",
            "OrderShipped",
            "PolicyApplied",
            "IndexRebuilt",
            "CardPrepaid",
            "HTTPRequestSent",
            "MoneyWithdrawnV2",
            "order_placed",
            "bank.account-closed",
            "Noted",
            "StockSet",
            "MeetingHeld",
            "CounterReset",
            "Happened9x4",
            "Tick2Happened",
        ] {
            assert!(is_past_tense(name), "{name}");
        }
    }

    #[test]
    fn commands_and_nouns_fail() {
        for name in [
            "CreateOrder",
            "OrderCreate",
            "Deposit",
            "WithdrawMoney",
            "SpeedChange",
            "FeedSeed",
            "AccountNeed",
            "Ed",
            "OrderV2",
        ] {
            assert!(!is_past_tense(name), "{name}");
        }
    }

    #[test]
    fn suggestions_read_as_facts() {
        for (name, suggested) in [
            ("CreateOrder", "OrderCreated"),
            ("OrderCreate", "OrderCreated"),
            ("Deposit", "Deposited"),
            ("WithdrawMoney", "MoneyWithdrawn"),
            ("ShipOrder", "OrderShipped"),
            ("PayInvoice", "InvoicePaid"),
            ("CancelOrder", "OrderCancelled"),
            ("SubmitForm", "FormSubmitted"),
            ("ApplyPolicy", "PolicyApplied"),
            ("OrderStop", "OrderStopped"),
            ("AccountOpen", "AccountOpened"),
            ("PriceChange", "PriceChanged"),
            ("TransferRequest", "TransferRequested"),
            ("OrderShipping", "OrderShipped"),
            ("PaymentProcessing", "PaymentProcessed"),
        ] {
            assert_eq!(suggestion(name), suggested, "{name}");
            assert!(is_past_tense(&suggestion(name)), "{suggested}");
        }
    }
}
