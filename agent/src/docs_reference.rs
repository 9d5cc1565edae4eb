//! Keeps the reference pages of `agent/docs/` true: these tests fail when the code has a key,
//! flag, variable or exported name that the page meant to list it does not.
//!
//! **`configuration.md`** ([`configuration_reference_names_every_key`] and
//! [`configuration_reference_names_every_flag_and_variable`]):
//!
//! - Every fenced ` ```yaml ` block of the page must be a valid configuration file: it is parsed
//!   by [`Config::parse`], the agent's own parser.
//! - Together, those blocks must write every key the agent accepts, at its place. The
//!   convention is the YAML block form of the dotted path: `export.otlp.retry.max_elapsed_ms`
//!   is written when a block has `max_elapsed_ms:` under `retry:` under `otlp:` under
//!   `export:`; a key below a list (`selection.exclude[].port`) is written when one item of
//!   that list has it. Sections count as keys too.
//! - The keys come from the code, not from a list: [`config_keys`] serializes the settings
//!   types (the defaults, with one item in each list of structures) and walks the result, so
//!   every field is found whatever its default, `None` included.
//! - Every flag of `apiscope run` (`--set`, the shorthands), from clap's own description of
//!   [`RunArgs`], and every environment variable `config/sources.rs` names (each
//!   `"APISCOPE_…"` and `"OTEL_…"` string literal outside its tests) must appear on the page
//!   as a whole word.
//!
//! **`telemetry.md`** ([`telemetry_reference_names_every_exported_name`]): every name below
//! must appear on the page as a whole word (not inside a longer name; a name followed by
//! `.<` as in `http.request.header.<name>` counts, and a Prometheus counter may carry the
//! `_total` suffix its encoder adds). The names are read from the source files as text, by
//! the patterns in [`NAME_SOURCES`]:
//!
//! - `pub const NAME: &str = "...";` in every `protocols/*/describe.rs`, in
//!   `calls/description.rs` and in `analysis/events.rs`: attribute and event names (a value
//!   without a `.`, such as `REDACTED`, is a value, not a name, and is skipped);
//! - `Instrument { name: "...", ... }` in the same files: the calls' metrics;
//! - every `"apiscope.…"` string in `export/otlp/own_metrics.rs`: the agent's own OTLP metrics and
//!   their attribute keys; every `"apiscope_…"` string in `export/server.rs`: its Prometheus
//!   metrics;
//! - `=> "..."` in `agent-common/src/counters.rs`: the kernel counters, the values of
//!   `apiscope_kernel_events_total{counter=...}`.
//!
//! Only the part of a file before its first `#[cfg(test)]` is read, and every file must yield
//! at least one name, so a scanner that stopped understanding a file fails instead of finding
//! nothing.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use clap::Args as _;
use regex::Regex;

use crate::{
    analysis::inventory::SpecFile, cli::RunArgs, config::Config, selection::SelectionRule,
};

/// The agent crate's directory.
fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// A file's text before its tests.
fn code_of(path: &Path) -> String {
    let text = read(path);
    match text.find("#[cfg(test)]") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

/// True when `text` has `word` with no name character (as `name_char` says) right before or
/// right after it.
fn mentions(text: &str, word: &str, name_char: fn(char) -> bool) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = &text[at + word.len()..];
        let mut rest = after.chars();
        let next = rest.next();
        let free_before = before.is_none_or(|c| !name_char(c) && c != '.');
        let free_after = match next {
            None => true,
            // A dot ends a name unless a name goes on after it (`a.b` inside `a.b.c`).
            Some('.') => rest.next().is_none_or(|c| !name_char(c)),
            Some(c) => !name_char(c),
        };
        free_before && free_after
    })
}

fn attribute_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn flag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

// ---------------------------------------------------------------------------------------------
// Configuration keys, from the configuration's own types.

/// A configuration key: its path, and how the reference's error names it
/// (`selection.exclude[].port`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    display: String,
    path: Vec<String>,
}

/// The defaults with one item, every field set, in each list of structures, so that their
/// items' keys are found too.
fn example_config() -> Config {
    let glob = |pattern: &str| Some(globset::Glob::new(pattern).expect("a valid glob"));
    let rule = SelectionRule {
        namespace: glob("shop"),
        labels: [("app".to_owned(), "web".to_owned())].into(),
        executable: glob("nginx"),
        cgroup: glob("/system.slice/*"),
        port: Some(22),
    };
    let mut config = Config::default();
    config.selection.include.push(rule.clone());
    config.selection.exclude.push(rule);
    config.inventory.specs.push(SpecFile {
        service: "shop".into(),
        file: "shop.yaml".into(),
    });
    config
}

/// Every key the configuration accepts, sections included, read off the serialized
/// [`example_config`]: whatever a settings type declares is found, `None` fields included.
fn config_keys() -> BTreeSet<Key> {
    fn walk(
        value: &serde_json::Value,
        path: &mut Vec<String>,
        display: &str,
        keys: &mut BTreeSet<Key>,
    ) {
        if !path.is_empty() {
            keys.insert(Key {
                display: display.to_owned(),
                path: path.clone(),
            });
        }
        let items = match value {
            serde_json::Value::Array(items) => items.first(),
            _ => Some(value),
        };
        let (Some(serde_json::Value::Object(fields)), true) = (
            items,
            !matches!(value, serde_json::Value::Object(map) if map.is_empty()),
        ) else {
            return;
        };
        // A mapping of the user's own keys (headers, labels) is a value, not a section.
        if display.ends_with("headers") || display.ends_with("labels") {
            return;
        }
        let list = if value.is_array() { "[]" } else { "" };
        for (name, field) in fields {
            path.push(name.clone());
            let child = if display.is_empty() {
                name.clone()
            } else {
                format!("{display}{list}.{name}")
            };
            walk(field, path, &child, keys);
            path.pop();
        }
    }
    let mut keys = BTreeSet::new();
    let example = serde_json::to_value(example_config()).expect("the configuration serializes");
    walk(&example, &mut Vec::new(), "", &mut keys);
    keys
}

/// True when `value` writes `path`: a mapping has the key, and its value writes the rest; a
/// list writes it when one of its items does.
fn writes(value: &serde_yaml_ng::Value, path: &[String]) -> bool {
    let Some((key, rest)) = path.split_first() else {
        return true;
    };
    match value {
        serde_yaml_ng::Value::Mapping(_) => value.get(key).is_some_and(|child| writes(child, rest)),
        serde_yaml_ng::Value::Sequence(items) => items.iter().any(|item| writes(item, path)),
        _ => false,
    }
}

/// The page's fenced YAML blocks, with the line each starts on.
fn yaml_blocks(page: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, line) in page.lines().enumerate() {
        match &mut current {
            None if line.trim() == "```yaml" => current = Some((index + 2, String::new())),
            None => {}
            Some(_) if line.trim() == "```" => blocks.extend(current.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    blocks
}

fn configuration_page() -> (PathBuf, String) {
    let path = crate_dir().join("docs/configuration.md");
    let text = read(&path);
    (path, text)
}

#[test]
fn keys_are_found_at_every_depth() {
    let keys: Vec<String> = config_keys().into_iter().map(|key| key.display).collect();
    for expected in [
        "capture",
        "capture.capture_cap",
        "export.otlp.retry.max_elapsed_ms",
        "kubernetes.node_name",
        "inventory.specs[].file",
        "selection.exclude[].port",
        "selection.include[].labels",
    ] {
        assert!(
            keys.iter().any(|key| key == expected),
            "{expected} not in {keys:?}"
        );
    }
}

#[test]
fn configuration_reference_names_every_key() {
    let (path, page) = configuration_page();
    let blocks = yaml_blocks(&page);
    assert!(!blocks.is_empty(), "{}: no ```yaml block", path.display());
    let mut written = Vec::new();
    for (line, text) in &blocks {
        if let Err(error) = Config::parse(text, &path) {
            panic!(
                "{}: the YAML block starting at line {line} is not a valid configuration: {error} \
                 (the line is counted from the block's first line)",
                path.display()
            );
        }
        written.push(
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).unwrap_or_else(|error| {
                panic!("{}: block at line {line}: {error}", path.display())
            }),
        );
    }
    let missing: Vec<String> = config_keys()
        .into_iter()
        .filter(|key| !written.iter().any(|block| writes(block, &key.path)))
        .map(|key| key.display)
        .collect();
    assert!(
        missing.is_empty(),
        "{}: no YAML block writes these configuration keys: {}",
        path.display(),
        missing.join(", ")
    );
}

#[test]
fn configuration_reference_names_every_flag_and_variable() {
    let (path, page) = configuration_page();
    let command = RunArgs::augment_args(clap::Command::new("run"));
    let flags: Vec<String> = command
        .get_arguments()
        .filter_map(|argument| argument.get_long())
        .map(|long| format!("--{long}"))
        .collect();
    assert!(flags.len() > 10, "too few flags found: {flags:?}");
    let variable = Regex::new(r#""((?:APISCOPE|OTEL)_[A-Z0-9_]+)""#).expect("a valid pattern");
    let cli = code_of(&crate_dir().join("src/config/sources.rs"));
    let variables: BTreeSet<&str> = variable
        .captures_iter(&cli)
        .filter_map(|found| found.get(1))
        .map(|found| found.as_str())
        .collect();
    assert!(
        variables.len() >= 9,
        "too few variables found: {variables:?}"
    );
    let missing: Vec<&str> = flags
        .iter()
        .map(String::as_str)
        .filter(|flag| !mentions(&page, flag, flag_char))
        .chain(
            variables
                .iter()
                .copied()
                .filter(|name| !mentions(&page, name, attribute_char)),
        )
        .collect();
    assert!(
        missing.is_empty(),
        "{}: these flags and variables of `apiscope run` are not named: {}",
        path.display(),
        missing.join(", ")
    );
}

// ---------------------------------------------------------------------------------------------
// Exported names, from the source files.

/// Where exported names are declared: files (relative to the agent crate; `*` stands for every
/// folder of `src/protocols`) and the patterns whose first group is a name.
const NAME_SOURCES: &[(&str, &[&str])] = &[
    (
        "src/protocols/*/describe.rs",
        &[CONST_NAME, INSTRUMENT_NAME],
    ),
    ("src/calls/description.rs", &[CONST_NAME, INSTRUMENT_NAME]),
    ("src/analysis/events.rs", &[CONST_NAME]),
    (
        "src/export/otlp/own_metrics.rs",
        &[r#""(apiscope\.[a-z0-9_.]+)""#],
    ),
    ("src/export/server.rs", &[r#""(apiscope_[a-z0-9_]+)""#]),
    ("../agent-common/src/counters.rs", &[r#"=> "([a-z0-9_]+)""#]),
];

/// `pub const NAME: &str = "...";`: only values with a dot are names (see the module docs).
const CONST_NAME: &str = r#"pub const [A-Z0-9_]+: &str = "([a-z0-9_]+\.[a-z0-9_.]+)";"#;

/// `Instrument { name: "...", ...`.
const INSTRUMENT_NAME: &str = r#"Instrument \{\s*name: "([^"]+)""#;

/// The files `pattern` stands for.
fn source_files(pattern: &str) -> Vec<PathBuf> {
    let root = crate_dir();
    match pattern.split_once("/*/") {
        None => vec![root.join(pattern)],
        Some((folder, file)) => {
            let folder = root.join(folder);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
                .unwrap_or_else(|error| panic!("{}: {error}", folder.display()))
                .filter_map(Result::ok)
                .map(|entry| entry.path().join(file))
                .filter(|path| path.is_file())
                .collect();
            files.sort();
            assert!(!files.is_empty(), "no file matches {pattern}");
            files
        }
    }
}

/// Every exported name, with the file it was found in.
fn exported_names() -> Vec<(String, PathBuf)> {
    let mut names = Vec::new();
    for (pattern, expressions) in NAME_SOURCES {
        let expressions: Vec<Regex> = expressions
            .iter()
            .map(|expression| Regex::new(expression).expect("a valid pattern"))
            .collect();
        for file in source_files(pattern) {
            let code = code_of(&file);
            let before = names.len();
            for expression in &expressions {
                for found in expression
                    .captures_iter(&code)
                    .filter_map(|found| found.get(1))
                {
                    names.push((found.as_str().to_owned(), file.clone()));
                }
            }
            assert!(
                names.len() > before,
                "{}: no name found: the scanner no longer understands this file",
                file.display()
            );
        }
    }
    names
}

#[test]
fn telemetry_reference_names_every_exported_name() {
    let path = crate_dir().join("docs/telemetry.md");
    let page = read(&path);
    let mut missing: Vec<String> = exported_names()
        .into_iter()
        .filter(|(name, _)| {
            !mentions(&page, name, attribute_char)
                && !mentions(&page, &format!("{name}_total"), attribute_char)
        })
        .map(|(name, file)| {
            let file = file.strip_prefix(crate_dir()).unwrap_or(&file).to_owned();
            format!("{name} ({})", file.display())
        })
        .collect();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "{}: these exported names are not named: {}",
        path.display(),
        missing.join(", ")
    );
}

#[test]
fn whole_words_only() {
    let text = "`http.request.header.<name>`, `apiscope_export_spans_total`, `rpc.method.x`, --otlp-headers-file";
    assert!(mentions(text, "http.request.header", attribute_char));
    assert!(mentions(
        text,
        "apiscope_export_spans_total",
        attribute_char
    ));
    assert!(!mentions(text, "apiscope_export_spans", attribute_char));
    assert!(!mentions(text, "rpc.method", attribute_char));
    assert!(!mentions(text, "request.header", attribute_char));
    assert!(!mentions(text, "--otlp-header", flag_char));
    assert!(mentions(text, "--otlp-headers-file", flag_char));
}
