//! `/catalog/`: the event catalog's site, when the tool registered one.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Console, Failure, Shared};

/// `/catalog/`: the catalog site's index.
pub(super) async fn catalog_index(State(console): State<Shared>) -> Result<Response, Failure> {
    catalog(&console, "index.html")
}

/// `/catalog/<file>`: a file of the catalog site.
pub(super) async fn catalog_file(
    State(console): State<Shared>,
    Path(file): Path<String>,
) -> Result<Response, Failure> {
    catalog(&console, &file)
}

fn catalog(console: &Console, file: &str) -> Result<Response, Failure> {
    let Some((catalog, _)) = &console.cli.catalog else {
        let body = "<p>This tool has no catalog registered: build your tool with <code>Cli::new().catalog(catalog, dir)</code> to browse it here.</p>";
        return Ok(console.page("Catalog", "/catalog/", body).into_response());
    };
    let path = std::path::Path::new(crate::catalog::Catalog::SITE_DIR).join(file);
    let files = catalog.files();
    let Some(content) = files.get(&path) else {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("the catalog has no page {file}"),
        ));
    };
    let kind = if file.ends_with(".css") {
        "text/css; charset=utf-8"
    } else {
        "text/html; charset=utf-8"
    };
    Ok(([(header::CONTENT_TYPE, kind)], content.clone()).into_response())
}
