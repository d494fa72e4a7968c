//! Generated code names everything by absolute path: it still compiles when `Result`, `Option`,
//! `Ok`, `Some`, `Vec`, `From`, `Box`, `String` and `Default` mean something else next to the
//! annotated types.
#![allow(dead_code, non_snake_case, clippy::all, clippy::pedantic)]

mod shadowed {
    use ::factum::{aggregate, event, upcast};

    pub struct Result;
    pub struct Option;
    pub struct Vec;
    pub struct Box;
    pub struct String;
    pub struct Default;
    pub trait From {}
    pub trait Into {}
    pub trait Iterator {}
    pub trait Clone {}
    pub fn Ok() {}
    pub fn Err() {}
    pub fn Some() {}
    pub fn None() {}
    pub mod core {}
    pub mod std {}
    pub mod serde {}
    pub mod schemars {}
    pub mod factum {}

    #[event(name = "Incremented")]
    pub struct IncrementedV1 {
        pub by: u32,
    }

    #[event(version = 2)]
    pub struct Incremented {
        pub by: u64,
    }

    #[upcast]
    fn widen(old: IncrementedV1) -> Incremented {
        Incremented {
            by: u64::from(old.by),
        }
    }

    #[event(name = "CounterReset")]
    pub struct Reset;

    #[event]
    pub struct Audited {
        pub note: ::std::string::String,
    }

    #[event]
    pub enum CounterEvent {
        Incremented(Incremented),
        Reset(Reset),
        Audited(Audited),
    }

    pub struct Increment {
        pub by: u64,
    }

    #[derive(Debug)]
    pub struct TooBig;

    impl ::core::fmt::Display for TooBig {
        fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
            f.write_str("too big")
        }
    }

    impl ::std::error::Error for TooBig {}

    #[derive(::core::default::Default)]
    pub struct Counter {
        pub value: u64,
    }

    #[aggregate(events = CounterEvent, ignore(Audited))]
    impl Counter {
        #[apply]
        fn incremented(&mut self, event: &Incremented) {
            self.value += event.by;
        }

        #[apply]
        fn reset(&mut self, _: &Reset) {
            self.value = 0;
        }

        #[command]
        fn increment(&self, command: &Increment) -> ::core::result::Result<Incremented, TooBig> {
            if command.by > 10 {
                return ::core::result::Result::Err(TooBig);
            }
            ::core::result::Result::Ok(Incremented { by: command.by })
        }
    }
}

#[test]
fn the_generated_code_works_with_a_shadowed_prelude() {
    use factum::{Aggregate, EventSet, Handle};
    use shadowed::{Counter, CounterEvent, Increment, Incremented};

    let mut counter = Counter::default();
    let events = counter.handle(&Increment { by: 3 }).unwrap();
    for event in &events {
        counter.apply(event);
    }
    assert_eq!(counter.value, 3);
    assert_eq!(events[0].event_type(), "Incremented");
    assert_eq!(events[0].schema_version(), 2);
    let payload = events[0].encode().unwrap();
    let decoded = CounterEvent::decode_all("Incremented", 2, payload.as_str()).unwrap();
    assert!(matches!(
        decoded.as_slice(),
        [CounterEvent::Incremented(Incremented { by: 3 })]
    ));
    assert!(CounterEvent::decode_all("CounterReset", 1, "null").is_ok());
    let upcast = CounterEvent::decode_all("Incremented", 1, r#"{"by":4}"#).unwrap();
    assert!(matches!(
        upcast.as_slice(),
        [CounterEvent::Incremented(Incremented { by: 4 })]
    ));
    assert_eq!(<Counter as Aggregate>::TYPE, "Counter");
}
