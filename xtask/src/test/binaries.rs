//! The workspace's test binaries: built once by cargo, then run one by one by xtask itself, so
//! that every binary runs even when another fails, each is timed, and the names of the tests
//! that failed are known for the summary.

use std::{
    collections::BTreeSet,
    ffi::OsString,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};

use crate::cargo;

/// How long one test binary may run before it is killed and counted as failed: far above the
/// slowest (the reliability tests, about 4 minutes), so that only a hang reaches it.
const BINARY_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// One test executable cargo built.
#[derive(Debug, Clone)]
pub struct TestBinary {
    /// How the summary names it: the integration test's name, or `<crate> (unit)`.
    pub name: String,
    /// The executable.
    pub executable: PathBuf,
    /// Its package's directory: cargo runs test binaries there, and with it in
    /// `CARGO_MANIFEST_DIR`.
    pub manifest_dir: PathBuf,
}

/// What one run of a test binary came to.
#[derive(Debug, Clone, Default)]
pub struct BinaryRun {
    /// Wall time.
    pub elapsed: Duration,
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed, by name.
    pub failed: Vec<String>,
    /// Why the binary itself failed beyond its failed tests (a crash, a timeout), if it did.
    pub problem: Option<String>,
}

impl BinaryRun {
    /// True when every test passed and the binary exited 0.
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.problem.is_none()
    }
}

/// Builds the test binaries in release mode (`cargo test --release --no-run`), of the whole
/// workspace or of `package`'s `tests` only, and lists them: unit tests first, then by name.
pub fn build(package: Option<&str>, tests: &[&str]) -> Result<Vec<TestBinary>> {
    let mut cmd = cargo();
    cmd.args(["test", "--release", "--no-run", "--message-format=json"]);
    if let Some(package) = package {
        cmd.args(["-p", package]);
    }
    for test in tests {
        cmd.args(["--test", test]);
    }
    let output = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("cannot start cargo to build the tests")?;
    ensure!(output.status.success(), "building the tests failed");
    let mut seen = BTreeSet::new();
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(executable), Some(manifest)) = (
            message["executable"].as_str(),
            message["manifest_path"].as_str(),
        ) else {
            continue;
        };
        if message["profile"]["test"] != true || !seen.insert(executable.to_owned()) {
            continue;
        }
        let target = &message["target"];
        let name = target["name"].as_str().unwrap_or("?");
        let integration = target["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|kind| kind == "test"));
        binaries.push(TestBinary {
            name: if integration {
                name.to_owned()
            } else {
                format!("{name} (unit)")
            },
            executable: PathBuf::from(executable),
            manifest_dir: Path::new(manifest)
                .parent()
                .context("a manifest path without a directory")?
                .to_owned(),
        });
    }
    ensure!(!binaries.is_empty(), "cargo built no test binary");
    // Unit tests first, then the end-to-end tests, each by name: the same order every run.
    binaries.sort_by(|a, b| {
        (!a.name.ends_with(" (unit)"), &a.name).cmp(&(!b.name.ends_with(" (unit)"), &b.name))
    });
    Ok(binaries)
}

impl TestBinary {
    /// Runs the binary with `args` (test name filters, harness options) and `env`, as `cargo
    /// test` would, echoing its output; kills it after [`BINARY_TIMEOUT`].
    pub fn run(&self, args: &[OsString], env: &[(&str, &str)]) -> Result<BinaryRun> {
        let started = Instant::now();
        let mut child = Command::new(&self.executable)
            .args(args)
            .envs(env.iter().copied())
            .env("CARGO_MANIFEST_DIR", &self.manifest_dir)
            .current_dir(&self.manifest_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", self.executable.display()))?;
        let stdout = child.stdout.take().context("the test binary's stdout")?;
        let (lines_tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut run = BinaryRun::default();
        loop {
            let left = BINARY_TIMEOUT.saturating_sub(started.elapsed());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    println!("{line}");
                    read_result(&line, &mut run);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    run.problem = Some(format!("killed after {BINARY_TIMEOUT:?}"));
                    break;
                }
            }
        }
        let status = child.wait()?;
        run.elapsed = started.elapsed();
        if !status.success() && run.problem.is_none() && run.failed.is_empty() {
            run.problem = Some(format!("exited with {status}"));
        }
        Ok(run)
    }
}

/// Counts a test's outcome from one line of the test harness's output.
fn read_result(line: &str, run: &mut BinaryRun) {
    let Some(rest) = line.strip_prefix("test ") else {
        return;
    };
    if let Some(name) = rest.strip_suffix(" ... FAILED") {
        run.failed.push(name.to_owned());
    } else if rest.ends_with(" ... ok") {
        run.passed += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_read_from_the_harness_lines() {
        let mut run = BinaryRun::default();
        for line in [
            "running 3 tests",
            "test kernel::a ... ok",
            "test b ... FAILED",
            "test c ... ignored",
            "test result: FAILED. 1 passed; 1 failed; 1 ignored",
            "failures:",
            "    b",
        ] {
            read_result(line, &mut run);
        }
        assert_eq!(run.passed, 1);
        assert_eq!(run.failed, ["b"]);
        assert!(!run.ok());
    }
}
