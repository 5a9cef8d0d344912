//! The modules of `idweb` import each other in one direction only: each
//! module uses only modules declared above it in `lib.rs` (the order is the
//! dependency order). A new import that points down this list is a cycle in
//! the making, and fails here.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

/// The private modules of `lib.rs`, in declaration order.
fn declared_modules(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("mod "))
        .filter_map(|rest| rest.strip_suffix(';'))
        .map(str::to_string)
        .collect()
}

/// The source of a module: `src/NAME.rs` plus the files of `src/NAME/`.
fn module_source(src: &Path, name: &str) -> String {
    let mut text = String::new();
    let file = src.join(format!("{name}.rs"));
    if let Ok(t) = std::fs::read_to_string(&file) {
        text.push_str(&t);
    }
    let dir = src.join(name);
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs")
                && p.file_name().is_some_and(|n| n != "tests.rs")
            {
                text.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    assert!(!text.is_empty(), "module {name} has no source");
    text
}

/// The module without its inline unit tests (tests may use anything; they
/// sit at the end of the file, or in a sibling `tests.rs` that is not read).
fn without_tests(source: &str) -> &str {
    match source.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &source[..i],
        None => source,
    }
}

/// `module uses crate::later` for every import against `order`.
fn violations(order: &[String], source_of: impl Fn(&str) -> String) -> Vec<String> {
    let rank: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut found = Vec::new();
    for (i, module) in order.iter().enumerate() {
        let source = source_of(module);
        let code = without_tests(&source);
        for (at, _) in code.match_indices("crate::") {
            let used: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if let Some(&j) = rank.get(used.as_str())
                && j > i
            {
                found.push(format!("{module} uses crate::{used}"));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn modules_import_only_modules_above_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let order = declared_modules(&lib);
    assert!(order.len() > 10, "lib.rs declares {order:?}");
    let found = violations(&order, |m| module_source(&src, m));
    assert!(
        found.is_empty(),
        "imports against the module order of lib.rs: {found:#?}"
    );
}

#[test]
fn an_import_of_a_later_module_is_reported() {
    let order = declared_modules("mod store;\nmod signout;\n");
    assert_eq!(order, ["store", "signout"]);
    let found = violations(&order, |m| match m {
        "store" => "use crate::signout::SignOut;\n#[cfg(test)]\nmod tests {}".to_string(),
        _ => "use crate::store::Store;".to_string(),
    });
    assert_eq!(found, ["store uses crate::signout"]);
    // Imports in unit tests do not count.
    let found = violations(&order, |_| {
        "#[cfg(test)]\nmod tests {\n    use crate::signout::X;\n}".to_string()
    });
    assert!(found.is_empty());
}
