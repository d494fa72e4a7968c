//! The erasure story of the bank example on both stores: before, the customers' names and
//! emails read in plain; after Ada is forgotten, hers read as erased and her customer event is
//! marked shredded, while every account event and every balance is what it was.

use factum::pii::LocalKeyProvider;
use factum::store::SqlStore as _;
use factum::testing::TestDatabase;

async fn the_story_erases_ada_and_keeps_every_balance<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let store = database
        .another_client()
        .await
        .unwrap()
        .with_key_provider(LocalKeyProvider::ephemeral().unwrap());
    let told = bank::erasure::story(store).await.unwrap();
    let (before, after) = told.split_once("> forget(\"ada\")").unwrap();
    assert!(after.starts_with(": her data key is deleted"), "{told}");
    // Before: both in plain.
    for line in [
        r#"customer-ada@1 CustomerOnboarded {"customer_id":"ada","email":"ada@example.com","name":"Ada Lovelace"}"#,
        r#"ada: name "Ada Lovelace", email "ada@example.com", balance 150.00"#,
        r#"grace: name "Grace Hopper", email "grace@example.com", balance 70.00"#,
    ] {
        assert!(before.contains(line), "before, `{line}`:\n{told}");
    }
    // After: Ada's name and email erased, her event marked; Grace's and the accounts as before.
    for line in [
        r#"customer-ada@1 CustomerOnboarded {"customer_id":"ada","email":null,"name":"[erased]"}  (shredded)"#,
        r#"ada: name "[erased]", email "-", balance 150.00"#,
        r#"grace: name "Grace Hopper", email "grace@example.com", balance 70.00"#,
    ] {
        assert!(after.contains(line), "after, `{line}`:\n{told}");
    }
    assert!(!after.contains("Ada Lovelace") && !after.contains("ada@example.com"));
    let accounts = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| line.trim_start().starts_with("acc-"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        accounts(before),
        accounts(after),
        "the accounts' events are untouched"
    );
    assert_eq!(accounts(after).len(), 4);
}

factum::on_both_stores!(
    #[tokio::test]
    the_story_erases_ada_and_keeps_every_balance,
);
