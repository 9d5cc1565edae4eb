//! The Helm chart (helm/apiscope), checked by tests/fixtures/helm_check.py with the real Helm
//! (the Go SDK, from the PyPI package helm-python-sdk) and the real Kubernetes schemas (PyPI
//! kubernetes-validate): `helm lint`, renders with default and non-default values, each object
//! validated strictly against Kubernetes 1.31, the security settings, probes, RBAC and secret
//! handling asserted, and values the chart's schema must refuse.
//!
//! Needs neither root nor a cluster. The Python packages come from `cargo xtask setup
//! --for-tests`; without them the check fails, it is never skipped.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

/// Loading libhelm and rendering a dozen times takes a few seconds; a hang must not stall CI.
const TIMEOUT: Duration = Duration::from_secs(180);

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    manifest_dir().join("../helm/apiscope")
}

/// Waits for `child` at most `timeout`; kills it past that and returns `None`.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for helm_check.py") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn read_in_thread(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[test]
fn chart_lints_renders_valid_objects_and_enforces_its_schema() {
    let script = manifest_dir().join("fixtures/helm_check.py");
    let chart = chart_dir();
    assert!(
        chart.join("Chart.yaml").is_file(),
        "no chart at {}",
        chart.display()
    );
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(&chart)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start python3 {}: {error}", script.display()));
    let stdout = read_in_thread(child.stdout.take().expect("piped stdout"));
    let stderr = read_in_thread(child.stderr.take().expect("piped stderr"));
    let status = wait_timeout(&mut child, TIMEOUT);
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    let output = format!("--- stdout\n{stdout}--- stderr\n{stderr}");
    let Some(status) = status else {
        panic!("helm_check.py still running after {TIMEOUT:?}; killed it\n{output}");
    };
    assert!(
        status.success(),
        "helm_check.py failed ({status}); install its packages with `cargo xtask setup \
         --for-tests` if it could not import them\n{output}"
    );
    assert!(
        stdout.contains("checks passed"),
        "helm_check.py exited 0 without reporting its checks\n{output}"
    );
    print!("{stdout}");
}
