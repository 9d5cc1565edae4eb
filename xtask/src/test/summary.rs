//! What a `cargo xtask test` run came to: each step and test binary with its wall time and
//! outcome, and every failure, printed once at the end.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Result;

use super::binaries::BinaryRun;

/// One line of the summary.
#[derive(Debug)]
struct Entry {
    /// The step or test binary.
    name: String,
    /// The round it ran in (1 unless `--repeat`).
    round: u32,
    /// Wall time.
    elapsed: Duration,
    /// `ok`, or what failed.
    outcome: Result<String, Vec<String>>,
}

/// Every step and binary run so far.
#[derive(Debug, Default)]
pub struct Summary {
    entries: Vec<Entry>,
}

impl Summary {
    /// Runs a step and records its outcome and time.
    pub fn step(&mut self, name: &str, step: impl FnOnce() -> Result<()>) {
        let started = std::time::Instant::now();
        let result = step();
        let outcome = match result {
            Ok(()) => Ok("ok".to_owned()),
            Err(error) => {
                eprintln!("{name} failed: {error:#}");
                Err(vec![format!("{error:#}")])
            }
        };
        self.entries.push(Entry {
            name: name.to_owned(),
            round: 1,
            elapsed: started.elapsed(),
            outcome,
        });
    }

    /// Records a test binary's run (or why it could not start).
    pub fn binary(&mut self, round: u32, name: &str, run: Result<BinaryRun>) {
        let (elapsed, outcome) = match run {
            Ok(run) if run.ok() => (run.elapsed, Ok(format!("ok, {} tests", run.passed))),
            Ok(run) => {
                let mut failed: Vec<String> = run
                    .failed
                    .iter()
                    .map(|test| format!("{name}::{test}"))
                    .collect();
                failed.extend(run.problem.map(|problem| format!("{name}: {problem}")));
                (run.elapsed, Err(failed))
            }
            Err(error) => (Duration::ZERO, Err(vec![format!("{name}: {error:#}")])),
        };
        self.entries.push(Entry {
            name: name.to_owned(),
            round,
            elapsed,
            outcome,
        });
    }

    /// How many failures (failed tests, binaries that failed beyond them, failed steps).
    pub fn failures(&self) -> usize {
        self.entries
            .iter()
            .filter_map(|entry| entry.outcome.as_ref().err())
            .map(Vec::len)
            .sum()
    }

    /// Prints the table of steps and binaries, then every failure; with several rounds, each
    /// test that failed with the number of rounds it failed in.
    pub fn print(&self, rounds: u32, total: Duration) {
        println!("\n=== Summary");
        for entry in &self.entries {
            let round = if rounds > 1 {
                format!("round {:<3} ", entry.round)
            } else {
                String::new()
            };
            let outcome = match &entry.outcome {
                Ok(text) => text.clone(),
                Err(failed) => format!("FAILED ({})", failed.len()),
            };
            println!(
                "  {round}{:<30} {:>8.1} s  {outcome}",
                entry.name,
                entry.elapsed.as_secs_f64()
            );
        }
        println!("  total {:.1} min", total.as_secs_f64() / 60.0);
        let mut failed: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for entry in &self.entries {
            for failure in entry.outcome.as_ref().err().into_iter().flatten() {
                failed.entry(failure).or_default().push(entry.round);
            }
        }
        if failed.is_empty() {
            println!("\nno failure");
            return;
        }
        println!("\n=== Failures");
        for (failure, in_rounds) in failed {
            if rounds > 1 {
                println!(
                    "  {failure}: failed in {} of {rounds} rounds ({in_rounds:?})",
                    in_rounds.len()
                );
            } else {
                println!("  {failure}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_of_every_kind_are_counted() {
        let mut summary = Summary::default();
        summary.step("fmt", || Ok(()));
        summary.step("clippy", || anyhow::bail!("warnings"));
        summary.binary(
            1,
            "capture",
            Ok(BinaryRun {
                passed: 3,
                failed: vec!["a".to_owned(), "b".to_owned()],
                ..BinaryRun::default()
            }),
        );
        summary.binary(
            1,
            "otlp",
            Ok(BinaryRun {
                problem: Some("killed".to_owned()),
                ..BinaryRun::default()
            }),
        );
        summary.binary(
            1,
            "kernel",
            Ok(BinaryRun {
                passed: 2,
                ..BinaryRun::default()
            }),
        );
        assert_eq!(summary.failures(), 4);
    }
}
