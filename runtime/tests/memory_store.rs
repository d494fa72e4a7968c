//! The conformance suite on the in-memory store.

async fn fresh_store() -> factum::MemoryStore {
    factum::MemoryStore::new()
}

factum::conformance_tests!(setup = fresh_store);

mod repository {
    use std::num::NonZeroUsize;

    use factum::{EventStore, ExpectedVersion, MemoryStore, NewEvent, Repository};

    #[factum::event]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Counted {
        pub by: u64,
    }

    #[factum::event]
    #[derive(Debug, Clone, PartialEq)]
    pub enum CounterEvent {
        Counted(Counted),
    }

    pub struct Count;

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    pub struct Never;

    #[derive(Default)]
    pub struct Counter {
        total: u64,
    }

    #[factum::aggregate(events = CounterEvent)]
    impl Counter {
        #[apply]
        fn counted(&mut self, event: &Counted) {
            self.total += event.by;
        }

        #[command]
        fn count(&self, _: &Count) -> Result<Counted, Never> {
            Ok(Counted { by: 1 })
        }
    }

    /// A command that meets a concurrent change reloads and tries again; the repository says
    /// how many attempts it took.
    #[tokio::test]
    async fn the_repository_tells_how_many_attempts_a_command_took() {
        let store = MemoryStore::new();
        let counters =
            Repository::<Counter, _>::new(store.clone()).cache(NonZeroUsize::new(8).unwrap());
        let first = counters
            .execute_detailed("c-1", Count, &factum::CommandContext::new())
            .await
            .unwrap();
        assert_eq!((first.events.len(), first.attempts), (1, 1));
        // Another writer appends: the cached state is stale, the next command conflicts once.
        store
            .append(
                "c-1",
                "Counter",
                ExpectedVersion::Exact(1),
                vec![NewEvent::of(&Counted { by: 10 }).unwrap()],
            )
            .await
            .unwrap();
        let second = counters
            .execute_detailed("c-1", Count, &factum::CommandContext::new())
            .await
            .unwrap();
        assert_eq!(second.attempts, 2);
        assert_eq!(second.events[0].stream_version, 3);
        assert_eq!(counters.load("c-1").await.unwrap().state.total, 12);
    }
}
