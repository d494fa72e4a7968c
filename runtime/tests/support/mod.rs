//! What the tests written once for both stores share: the macro running a test body on each
//! store.

/// Runs generic test bodies (`async fn name<D: TestDatabase>()`) on both stores: each becomes
/// the tests `postgres::name` and `sqlite::name`, with the attributes written before its name
/// (`#[tokio::test]` with the flavor the scenario needs, `#[ignore = "..."]`).
macro_rules! on_both_stores {
    ($($(#[$attribute:meta])+ $name:ident),* $(,)?) => {
        mod postgres {
            $(
                $(#[$attribute])+
                async fn $name() {
                    super::$name::<factum::testing::postgres::TemporaryStore>().await;
                }
            )*
        }

        mod sqlite {
            $(
                $(#[$attribute])+
                async fn $name() {
                    super::$name::<factum::testing::sqlite::TemporaryDatabase>().await;
                }
            )*
        }
    };
}

pub(crate) use on_both_stores;
