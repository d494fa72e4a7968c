//! The console's HTML: one layout, escaped text, tables, bars and the lag chart, written on the
//! server (no script, no build step, nothing fetched from the internet).

use std::fmt::Write as _;

/// `text` escaped for HTML text and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` as a URL query value.
pub(super) fn query_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The pages of the navigation bar: path and label.
const NAV: [(&str, &str); 4] = [
    ("/", "Catch-up"),
    ("/dead-letters", "Dead letters"),
    ("/streams", "Streams"),
    ("/catalog/", "Catalog"),
];

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:0;color:#1d2433;background:#f6f7f9}
header{background:#1d2433;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.5rem;align-items:center}
header a{color:#c9d3e6;text-decoration:none}header a.on{color:#fff;font-weight:600}
header .store{margin-left:auto;font-size:.85rem;color:#9aa7bf}
main{padding:1rem 1.2rem;max-width:1200px}
h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:1.6rem}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.9rem}
th,td{border-bottom:1px solid #e3e6eb;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#eef1f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{background:#e3e6eb;height:.6rem;width:10rem;border-radius:.3rem;overflow:hidden}
.bar span{display:block;height:100%;background:#2f7d4f}
.state{padding:.1rem .4rem;border-radius:.3rem;font-size:.8rem}
.ok{background:#dff3e6;color:#215c38}.behind{background:#fdf0d5;color:#7a5200}.bad{background:#fbe0e0;color:#8a1f1f}
.alert{border-left:.3rem solid #c0392b;background:#fff;padding:.4rem .7rem;margin:.3rem 0}
.quiet{color:#6b7588}.mono{font-family:ui-monospace,monospace;font-size:.82rem;white-space:pre-wrap;word-break:break-all}
form.inline{display:inline}button{margin-right:.3rem}
.message{background:#e7f0fb;padding:.5rem .7rem;border-radius:.3rem}
";

/// A whole page: the navigation (`active` marked), `store` named, then `body`.
pub(super) fn layout(title: &str, active: &str, store: &str, body: &str) -> String {
    let mut nav = String::new();
    for (path, label) in NAV {
        let class = if path == active { " class=\"on\"" } else { "" };
        let _ = write!(nav, "<a href=\"{path}\"{class}>{label}</a>");
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title} · Factum</title><style>{STYLE}</style></head><body>\
         <header><strong>Factum</strong>{nav}<span class=\"store\">{store}</span></header>\
         <main><h1>{title}</h1>{body}</main></body></html>",
        title = escape(title),
        store = escape(store),
    )
}

/// A table of `head` and `rows` (cells already HTML).
pub(super) fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table><thead><tr>");
    for cell in head {
        let _ = write!(out, "<th>{}</th>", escape(cell));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            out.push_str(cell);
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// A text cell.
pub(super) fn cell(text: &str) -> String {
    format!("<td>{}</td>", escape(text))
}

/// A number cell.
pub(super) fn number(n: u64) -> String {
    format!("<td class=\"n\">{n}</td>")
}

/// How far `position` is towards `head`, as a bar.
pub(super) fn progress(position: u64, head: u64) -> String {
    let percent = if head == 0 {
        100.0
    } else {
        (position.min(head) as f64 / head as f64) * 100.0
    };
    format!(
        "<td><div class=\"bar\" title=\"{percent:.1}%\"><span style=\"width:{percent:.1}%\"></span></div></td>"
    )
}

/// A state badge of class `class` (`ok`, `behind`, `bad`).
pub(super) fn badge(class: &str, text: &str) -> String {
    format!("<span class=\"state {class}\">{}</span>", escape(text))
}

/// Events behind over time, as an SVG line: `samples` are (seconds ago, events behind), the
/// newest last, over `window` seconds.
pub(super) fn lag_chart(samples: &[(f64, u64)], window: f64) -> String {
    const W: f64 = 240.0;
    const H: f64 = 40.0;
    if samples.is_empty() {
        return "<span class=\"quiet\">no samples yet</span>".to_owned();
    }
    let top = samples.iter().map(|s| s.1).max().unwrap_or(0).max(1) as f64;
    let mut points = String::new();
    for (ago, behind) in samples {
        let x = W - (ago / window).clamp(0.0, 1.0) * W;
        let y = H - (*behind as f64 / top) * (H - 2.0) - 1.0;
        let _ = write!(points, "{x:.1},{y:.1} ");
    }
    format!(
        "<svg class=\"lag\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-label=\"events behind over the last {minutes:.0} minutes, at most {top:.0}\">\
         <rect width=\"{W}\" height=\"{H}\" fill=\"#fff\" stroke=\"#e3e6eb\"/>\
         <polyline fill=\"none\" stroke=\"#c27c0e\" stroke-width=\"1.5\" points=\"{points}\"/>\
         <text x=\"2\" y=\"10\" font-size=\"9\" fill=\"#6b7588\">{top:.0}</text></svg>",
        minutes = window / 60.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_queries_encoded() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(query_value("acme/a 1?&"), "acme%2Fa%201%3F%26");
    }

    #[test]
    fn the_chart_scales_to_its_highest_sample() {
        let chart = lag_chart(&[(60.0, 10), (0.0, 0)], 120.0);
        assert!(chart.contains("120.0,1.0 240.0,39.0"), "{chart}");
        assert!(lag_chart(&[], 60.0).contains("no samples"));
    }
}
