//! The catalog's HTML site in a real browser (headless Chromium from Debian's `chromium` and
//! `chromium-driver` packages, which the test command installs when missing, driven over
//! WebDriver): the index lists every event and draws the flows, the search box finds an event
//! by its name or by one of its fields, and the event's page shows every version with its
//! schema and an example, and what reads it. Screenshots go to `target/catalog-site/` (and to
//! `docs/screenshots/`, which the README shows, with `FACTUM_WRITE_SCREENSHOTS=1`).

use std::path::{Path, PathBuf};

use factum::catalog::Catalog;
use factum::testing::browser::{self, Client, Driver, Locator};

fn site() -> PathBuf {
    example_catalog::schemas_dir().join(Catalog::SITE_DIR)
}

async fn visible_events(client: &Client) -> Vec<String> {
    let mut names = Vec::new();
    for item in client
        .find_all(Locator::Css("#events li:not([hidden]) a"))
        .await
        .unwrap()
    {
        names.push(item.text().await.unwrap());
    }
    names
}

async fn screenshot(client: &Client, name: &str) {
    browser::screenshot(
        client,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
        "catalog-site",
        name,
    )
    .await;
}

#[tokio::test]
async fn the_catalog_site_finds_an_event_through_its_search_and_shows_its_versions() {
    let driver = Driver::start();
    let client = driver.browser().await;
    let index = site().join("index.html");
    client
        .goto(&format!("file://{}", index.display()))
        .await
        .unwrap();

    // Every event, and the flows drawn without a network.
    let all = visible_events(&client).await;
    let expected = Catalog::files(&example_catalog::catalog())
        .keys()
        .filter(|path| {
            path.starts_with(Catalog::SITE_DIR) && path.extension().is_some_and(|e| e == "html")
        })
        .count()
        - 1;
    assert_eq!(all.len(), expected, "{all:?}");
    assert!(all.contains(&"MoneyWithdrawn".to_owned()), "{all:?}");
    let boxes = client.find_all(Locator::Css("#flows rect")).await.unwrap();
    assert!(
        boxes.len() > all.len(),
        "the diagram has a box per aggregate, event and reader"
    );
    screenshot(&client, "catalog-index.png").await;

    // The search: by name, then by a field only one event has.
    let search = client.find(Locator::Id("search")).await.unwrap();
    search.send_keys("withdrawn").await.unwrap();
    assert_eq!(visible_events(&client).await, ["MoneyWithdrawn"]);
    let count = client
        .find(Locator::Id("count"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(count, format!("1 of {} events", all.len()));
    screenshot(&client, "catalog-search.png").await;
    search.clear().await.unwrap();
    search.send_keys("initial_deposit").await.unwrap();
    assert_eq!(visible_events(&client).await, ["AccountOpened"]);
    search.clear().await.unwrap();
    search.send_keys("withdrawn").await.unwrap();

    // The event's page: its versions (newest first), schemas, examples and readers.
    client
        .find(Locator::LinkText("MoneyWithdrawn"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let title = client
        .wait()
        .for_element(Locator::Id("event"))
        .await
        .unwrap();
    assert_eq!(title.text().await.unwrap(), "MoneyWithdrawn");
    let mut versions = Vec::new();
    for section in client
        .find_all(Locator::Css("section.version h2"))
        .await
        .unwrap()
    {
        versions.push(section.text().await.unwrap());
    }
    assert_eq!(
        versions,
        [
            "Version 3 (current)",
            "Version 2 (read through upcasters)",
            "Version 1 (read through upcasters)"
        ]
    );
    let example = client
        .find(Locator::Css("#v3 pre.example"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let example: serde_json::Value = serde_json::from_str(&example).unwrap();
    assert_eq!(example["channel"], "atm", "{example}");
    let readers = client
        .find(Locator::Id("readers"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(readers.contains("account_balances"), "{readers}");
    screenshot(&client, "catalog-event.png").await;
    client.close().await.unwrap();
}
