//! A test's HTTP requests: HTTP/1.0, the server closing the connection after its response,
//! which is all a test needs to read a page or a metrics endpoint, or post a form.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The status and body of `GET path` on `127.0.0.1:port`.
pub async fn get(port: u16, path: &str) -> (u16, String) {
    request(
        port,
        &format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n"),
    )
    .await
}

/// The status and body of `POST path` of the form `fields` (URL-safe names and values).
#[allow(dead_code)] // not every test posts
pub async fn post_form(port: u16, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let safe = |text: &str| {
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
    };
    assert!(fields.iter().all(|(name, value)| safe(name) && safe(value)));
    let body = fields
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&");
    request(
        port,
        &format!(
            "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

async fn request(port: u16, request: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("127.0.0.1:{port} listens: {e}"));
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response: {response}"));
    (status, body.to_owned())
}
