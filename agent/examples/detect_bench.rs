//! The quality benchmark of the injection detector (driven by `cargo xtask detect-bench`, which
//! downloads and labels the corpora): replays labelled values through the real
//! `InjectionDetector` and prints recall per class and the false-positive rate on benign values.
//!
//! Input: JSON lines, `{"class": "sqli"|"xss"|"command_injection"|"path_traversal"|"ssrf"|
//! "benign", "value": "...", "location": "query:q", "source": "corpus name"}`. The location says
//! how the value is sent, so the whole request path (transport decoding included) is exercised:
//! `query:NAME` (percent-encoded into the target), `path` (one encoded segment), `header:NAME`,
//! `body:json` (the value is a whole JSON body), `body:form:NAME`, `body:text`; anything else is
//! handed to `scan_value` as is.
//!
//! Usage: `detect_bench FILE [--show N]` (N misses and false positives printed per class).

use std::{collections::BTreeMap, fs, process::ExitCode};

use agent::analysis::security::injection::{InjectionClass, InjectionDetector, InjectionMatch};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

/// Recall every injection class must reach.
const RECALL_TARGET: f64 = 0.90;
/// False-positive rate on benign values not to exceed.
const FP_TARGET: f64 = 0.005;

/// One labelled value.
#[derive(Deserialize)]
struct Record {
    class: String,
    value: String,
    location: String,
    source: String,
}

/// Counts for one class or source.
#[derive(Default)]
struct Tally {
    samples: usize,
    hits: usize,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: detect_bench FILE [--show N]");
        return ExitCode::FAILURE;
    };
    let show = args
        .iter()
        .position(|arg| arg == "--show")
        .and_then(|at| args.get(at + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0usize);
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("cannot read {path}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let detector = InjectionDetector::new();
    let mut per_class: BTreeMap<String, Tally> = BTreeMap::new();
    let mut per_source: BTreeMap<(String, String), Tally> = BTreeMap::new();
    let mut fp_per_class: BTreeMap<InjectionClass, usize> = BTreeMap::new();
    let mut shown: BTreeMap<String, usize> = BTreeMap::new();
    let started = std::time::Instant::now();
    for (number, line) in text.lines().enumerate() {
        let record: Record = match serde_json::from_str(line) {
            Ok(record) => record,
            Err(error) => {
                eprintln!("{path}:{}: skipped: {error}", number + 1);
                continue;
            }
        };
        let matches = replay(&detector, &record);
        let benign = record.class == "benign";
        let hit = if benign {
            !matches.is_empty()
        } else {
            matches.iter().any(|m| m.class.name() == record.class)
        };
        if benign {
            let classes: std::collections::BTreeSet<_> = matches.iter().map(|m| m.class).collect();
            for class in classes {
                *fp_per_class.entry(class).or_default() += 1;
            }
        }
        for tally in [
            per_class.entry(record.class.clone()).or_default(),
            per_source
                .entry((record.class.clone(), record.source.clone()))
                .or_default(),
        ] {
            tally.samples += 1;
            tally.hits += usize::from(hit);
        }
        // Misses of attacks and hits on benign values are what is worth looking at.
        if hit == benign {
            let count = shown.entry(record.class.clone()).or_default();
            if *count < show {
                *count += 1;
                let found: Vec<String> = matches
                    .iter()
                    .map(|m| format!("{} [{}]", m.class.name(), m.evidence))
                    .collect();
                let what = if benign { "false positive" } else { "missed" };
                println!(
                    "{what} {} ({}, {}): {:?} -> {}",
                    record.class,
                    record.source,
                    record.location,
                    truncate(&record.value, 160),
                    found.join(", ")
                );
            }
        }
    }
    let elapsed = started.elapsed();
    report(&per_class, &per_source, &fp_per_class);
    println!("replayed in {:.2} s", elapsed.as_secs_f64());
    ExitCode::SUCCESS
}

/// Sends `record` through the detector the way its location says.
fn replay(detector: &InjectionDetector, record: &Record) -> Vec<InjectionMatch> {
    let mut out = Vec::new();
    let value = record.value.as_str();
    let encoded = || utf8_percent_encode(value, NON_ALPHANUMERIC).to_string();
    if let Some(name) = record.location.strip_prefix("query:") {
        let target = format!("/search?{name}={}", encoded());
        detector.scan_request(&target, &[], b"", None, &mut out);
    } else if record.location == "path" {
        let target = format!("/api/items/{}", encoded());
        detector.scan_request(&target, &[], b"", None, &mut out);
    } else if let Some(name) = record.location.strip_prefix("header:") {
        let headers = [(name, value.as_bytes())];
        detector.scan_request("/", &headers, b"", None, &mut out);
    } else if record.location == "body:json" {
        detector.scan_request(
            "/",
            &[],
            value.as_bytes(),
            Some("application/json"),
            &mut out,
        );
    } else if let Some(name) = record.location.strip_prefix("body:form:") {
        let body = format!("{name}={}", encoded());
        let form = Some("application/x-www-form-urlencoded");
        detector.scan_request("/", &[], body.as_bytes(), form, &mut out);
    } else if record.location == "body:text" {
        detector.scan_request("/", &[], value.as_bytes(), Some("text/plain"), &mut out);
    } else {
        detector.scan_value(value, &record.location, &mut out);
    }
    out
}

fn report(
    per_class: &BTreeMap<String, Tally>,
    per_source: &BTreeMap<(String, String), Tally>,
    fp_per_class: &BTreeMap<InjectionClass, usize>,
) {
    let percent = |part: usize, whole: usize| {
        if whole == 0 {
            0.0
        } else {
            part as f64 / whole as f64
        }
    };
    println!();
    println!(
        "{:<20} {:<44} {:>8} {:>8} {:>9}",
        "class", "source", "samples", "detected", "rate"
    );
    for ((class, source), tally) in per_source {
        println!(
            "{:<20} {:<44} {:>8} {:>8} {:>8.2}%",
            class,
            truncate(source, 44),
            tally.samples,
            tally.hits,
            100.0 * percent(tally.hits, tally.samples)
        );
    }
    println!();
    println!(
        "{:<20} {:>8} {:>8} {:>9}  target",
        "class", "samples", "detected", "recall"
    );
    let mut met = true;
    for class in InjectionClass::ALL {
        let tally = per_class.get(class.name());
        let (samples, hits) = tally.map_or((0, 0), |t| (t.samples, t.hits));
        let recall = percent(hits, samples);
        let ok = samples > 0 && recall >= RECALL_TARGET;
        met &= ok;
        println!(
            "{:<20} {:>8} {:>8} {:>8.2}%  {}",
            class.name(),
            samples,
            hits,
            100.0 * recall,
            if ok { "ok (>= 90%)" } else { "NOT MET (< 90%)" }
        );
    }
    let benign = per_class.get("benign");
    let (samples, fps) = benign.map_or((0, 0), |t| (t.samples, t.hits));
    let rate = percent(fps, samples);
    let fp_ok = samples > 0 && rate <= FP_TARGET;
    met &= fp_ok;
    println!(
        "{:<20} {:>8} {:>8} {:>8.3}%  {} (false positives)",
        "benign",
        samples,
        fps,
        100.0 * rate,
        if fp_ok {
            "ok (<= 0.5%)"
        } else {
            "NOT MET (> 0.5%)"
        }
    );
    for class in InjectionClass::ALL {
        let count = fp_per_class.get(&class).copied().unwrap_or(0);
        println!(
            "  benign flagged as {:<20} {:>6} {:>8.3}%",
            class.name(),
            count,
            100.0 * percent(count, samples)
        );
    }
    println!();
    println!(
        "targets (recall >= 90% per class at false-positive rate <= 0.5%): {}",
        if met { "MET" } else { "NOT MET" }
    );
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max - 1).collect();
        cut.push('…');
        cut
    }
}
