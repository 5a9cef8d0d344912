//! The idweb demo: a development identity provider, sample web apps and a
//! sample downstream "todo" API, all on 127.0.0.1.
#![forbid(unsafe_code)]

pub mod control;
pub mod look;
pub mod metrics;
pub mod todo_api;
pub mod webapp;

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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
