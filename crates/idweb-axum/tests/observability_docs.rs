//! The Grafana dashboard queries only metrics that docs/OBSERVABILITY.md
//! lists, and is valid JSON with a Prometheus data-source input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

fn doc() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/OBSERVABILITY.md"
    ))
    .unwrap()
}

/// The `idweb_*` names in `text`, without the exposition suffixes of
/// histograms (`_bucket`, `_count`, `_sum`).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("idweb_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let mut name = &tail[..end];
        for suffix in ["_bucket", "_count", "_sum"] {
            if let Some(n) = name.strip_suffix(suffix)
                && n.ends_with("_seconds")
            {
                name = n;
            }
        }
        names.insert(name.to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_uses_only_documented_metrics() {
    let json = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana/idweb.json"
    ))
    .unwrap();
    let dash: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(dash["__inputs"][0]["pluginId"], "prometheus");
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 10);
    let used = metric_names(&exprs.join("\n"));
    let documented = metric_names(&doc());
    for name in &used {
        assert!(
            documented.contains(name),
            "{name} is not in OBSERVABILITY.md"
        );
    }
    for wanted in [
        "idweb_sign_outs_total",
        "idweb_logout_requests_refused_total",
        "idweb_token_requests_total",
        "idweb_store_operation_duration_seconds",
    ] {
        assert!(used.contains(wanted), "the dashboard shows {wanted}");
    }
}
