//! The docs can't drift: the README and the book's every link and anchor resolve, every page is in
//! the book's summary, the configuration reference lists exactly `config/default.toml`'s keys, the
//! API reference every operation, parameter and field of `/openapi.json`, and the metrics reference
//! every metric the code describes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The README and every page of the book, with their text.
pub fn pages() -> Vec<(PathBuf, String)> {
    let mut pages = vec![root().join("README.md")];
    let mut dirs = vec![root().join("book/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                pages.push(path);
            }
        }
    }
    pages.sort();
    pages
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// The page's lines outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// A heading's anchor, as mdBook (and GitHub) make it.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    prose(text)
        .into_iter()
        .filter_map(|l| {
            l.trim_start_matches('#')
                .strip_prefix(' ')
                .filter(|_| l.starts_with('#'))
        })
        .map(slug)
        .collect()
}

/// Every `](target)` of a page's prose.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            found.push(after[..end].to_string());
            rest = &after[end.min(after.len())..];
        }
    }
    found
}

#[test]
fn every_link_and_anchor_of_the_readme_and_the_book_resolves() {
    let mut broken = Vec::new();
    for (page, text) in pages() {
        for link in links(&text) {
            if link.starts_with("http://")
                || link.starts_with("https://")
                || link.starts_with("mailto:")
            {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            if !target.exists() {
                broken.push(format!("{}: {link} (no such file)", page.display()));
                continue;
            }
            if !anchor.is_empty() {
                let target_text = std::fs::read_to_string(&target).unwrap_or_default();
                if !anchors(&target_text).contains(anchor) {
                    broken.push(format!("{}: {link} (no such heading)", page.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_page_of_the_book_is_in_its_summary() {
    let summary = std::fs::read_to_string(root().join("book/src/SUMMARY.md")).unwrap();
    let listed: BTreeSet<String> = links(&summary).into_iter().collect();
    let src = root().join("book/src");
    let pages: BTreeSet<String> = pages()
        .into_iter()
        .filter_map(|(p, _)| p.strip_prefix(&src).ok().map(|p| p.display().to_string()))
        .filter(|p| p != "SUMMARY.md")
        .collect();
    assert_eq!(listed, pages);
}

#[test]
fn the_readme_is_short() {
    let lines = std::fs::read_to_string(root().join("README.md"))
        .unwrap()
        .lines()
        .count();
    assert!(lines <= 150, "the README has {lines} lines");
}

#[test]
fn the_configuration_reference_lists_exactly_the_default_files_keys() {
    let defaults: toml::Table =
        toml::from_str(&std::fs::read_to_string(root().join("config/default.toml")).unwrap())
            .unwrap();
    let mut keys = BTreeSet::new();
    fn walk(prefix: &str, table: &toml::Table, keys: &mut BTreeSet<String>) {
        for (k, v) in table {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => walk(&key, t, keys),
                _ => {
                    keys.insert(key);
                }
            }
        }
    }
    walk("", &defaults, &mut keys);
    let reference =
        std::fs::read_to_string(root().join("book/src/reference/configuration.md")).unwrap();
    // Each row's first cell names one key or several: `a.b`, `a.c`.
    let listed: BTreeSet<String> = reference
        .lines()
        .filter_map(|row| row.strip_prefix('|')?.split('|').next())
        .flat_map(|cell| cell.split('`').skip(1).step_by(2).map(str::to_string))
        .filter(|k| k.contains('.'))
        .collect();
    let text = std::fs::read_to_string(root().join("config/default.toml")).unwrap();
    let missing: Vec<_> = keys.difference(&listed).collect();
    // Optional keys are in the file too, commented out; routes are the file's commented example.
    let unknown: Vec<_> = listed
        .difference(&keys)
        .filter(|k| {
            let name = k.rsplit('.').next().unwrap_or(k);
            !k.starts_with("hooks.<name>") && !text.contains(&format!("# {name} = "))
        })
        .collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "not in the reference: {missing:?}; not in config/default.toml: {unknown:?}"
    );
}

#[test]
fn the_metrics_reference_lists_every_metric() {
    let operations = std::fs::read_to_string(root().join("book/src/operations.md")).unwrap();
    let missing: Vec<_> = patchbay_core::metrics::DESCRIPTIONS
        .iter()
        .map(|(name, ..)| *name)
        .filter(|name| {
            !operations
                .lines()
                .any(|row| row.starts_with('|') && row.contains(&format!("`{name}`")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "metrics not in book/src/operations.md: {missing:?}"
    );
}

#[test]
fn the_api_reference_names_every_operation_parameter_and_field_of_the_openapi_document() {
    let reference = std::fs::read_to_string(root().join("book/src/reference/api.md")).unwrap();
    let headings: Vec<&str> = reference.lines().filter(|l| l.starts_with('#')).collect();
    let named = |name: &str| reference.contains(&format!("`{name}`"));
    let doc = patchbay::api::openapi::document();
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let heading = format!("`{} {path}`", method.to_uppercase());
            if !headings.iter().any(|h| h.contains(&heading)) {
                missing.push(format!("a heading {heading}"));
            }
            // A summary speaks to callers, not of the code that serves them.
            let summary = operation["summary"].as_str().unwrap_or_default();
            assert!(
                !summary.contains("[`") && !summary.contains("handler"),
                "{method} {path}: {summary}"
            );
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().unwrap();
                if !named(name) {
                    missing.push(format!("{method} {path}: the parameter `{name}`"));
                }
            }
        }
    }
    for (schema, body) in doc["components"]["schemas"].as_object().unwrap() {
        let branches = body["oneOf"].as_array().into_iter().flatten();
        for properties in std::iter::once(body)
            .chain(branches)
            .map(|b| &b["properties"])
        {
            for field in properties.as_object().into_iter().flat_map(|p| p.keys()) {
                if !named(field) {
                    missing.push(format!("{schema}: the field `{field}`"));
                }
            }
        }
        for value in body["enum"].as_array().into_iter().flatten() {
            let value = value.as_str().unwrap();
            if !named(value) {
                missing.push(format!("{schema}: the value `{value}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in book/src/reference/api.md: {missing:#?}"
    );
}

#[test]
fn the_docs_cite_no_file_outside_the_repository() {
    for (page, text) in pages() {
        assert!(
            !text.contains("../shared/"),
            "{}: cites ../shared/, which a clone does not have",
            page.display()
        );
    }
}
