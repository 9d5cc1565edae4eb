//! End-to-end workload identity: the real agent names each call after the process that made or
//! served it, from what `/proc` says of that process: the service name its own OpenTelemetry
//! configuration gives it (`OTEL_SERVICE_NAME`, or `service.name` in
//! `OTEL_RESOURCE_ATTRIBUTES`), its command (never its other arguments: they carry credentials)
//! and its user.
//! Exported over OTLP to an in-process receiver (support/otlp.rs).

mod support;

use std::{process::Command, time::Duration};

use support::cgroup::TestCgroups;
use support::otlp::{FlatSpan, OtlpReceiver, summarize_spans};
use support::{COMMAND_TIMEOUT, FIXTURE_READY_TIMEOUT, Proc, free_port, python, random_hex, run};

/// How long the test waits for its spans at the receiver.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(30);
/// Credentials on curl's command line: none may reach the collector.
const SECRETS: [&str; 3] = ["s3cr3t-bearer", "hunter2pw", "k3y-in-query"];

#[test]
fn calls_carry_the_service_name_command_line_and_user_of_their_process() {
    let receiver = OtlpReceiver::start();
    let port = free_port();
    let mut server = Proc::spawn(
        "http_server.py",
        Command::new(python())
            .arg("-u")
            .arg(support::fixture("http_server.py"))
            .args(["--port", &port.to_string()])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("OTEL_SERVICE_NAME", "checkout-api"),
    );
    server.wait_stdout_line("READY", FIXTURE_READY_TIMEOUT, |l| l.trim() == "READY");
    let mut agent = receiver.agent(&[], &[("OTEL_BSP_SCHEDULE_DELAY", "200")]);
    let url = format!(
        "http://alice:{}@127.0.0.1:{port}/identity?api_key={}",
        SECRETS[1], SECRETS[2]
    );
    let auth = format!("Authorization: Bearer {}", SECRETS[0]);
    let out = run(
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-H", &auth, &url])
            .env(
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=test,service.name=web%20frontend",
            ),
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "curl: {}", out.describe());
    let (server_pid, client_pid) = (server.pid(), out.pid);
    let ours = |spans: &[FlatSpan], pid: u32| {
        spans
            .iter()
            .filter(|s| s.pid() == Some(pid) && s.attr_str("url.path") == Some("/identity"))
            .count()
    };
    if let Err(spans) = receiver.try_wait_for_spans(
        |spans| ours(spans, server_pid) >= 1 && ours(spans, client_pid) >= 1,
        EXPORT_TIMEOUT,
    ) {
        agent.fail(&format!(
            "the two spans did not arrive; got {}",
            summarize_spans(&spans)
        ));
    }
    agent.stop();
    let spans = receiver.spans();
    let span_of = |pid: u32| {
        spans
            .iter()
            .find(|s| s.pid() == Some(pid) && s.attr_str("url.path") == Some("/identity"))
            .expect("a span of the call")
    };
    let (server_span, client_span) = (span_of(server_pid), span_of(client_pid));
    assert_eq!(
        server_span.resource_str("service.name"),
        Some("checkout-api"),
        "{server_span}"
    );
    assert_eq!(
        client_span.resource_str("service.name"),
        Some("web frontend"),
        "{client_span}"
    );
    // The server runs on this host: the client span names it.
    assert_eq!(
        client_span.attr_str("service.peer.name"),
        Some("checkout-api"),
        "{client_span}"
    );
    assert_eq!(
        server_span.attr_str("service.peer.name"),
        None,
        "{server_span}"
    );
    for span in [server_span, client_span] {
        // The tests run as root.
        assert_eq!(span.resource_int("process.user.id"), Some(0), "{span}");
        assert_eq!(span.resource_str("process.owner"), Some("root"), "{span}");
    }
    // The command only: the other arguments carry credentials and bodies.
    assert_eq!(
        client_span.resource_str("process.command"),
        Some("curl"),
        "{client_span}"
    );
    assert!(
        !client_span.resource.contains_key("process.command_args"),
        "{client_span}"
    );
    let exported = receiver.all_bytes();
    for secret in SECRETS {
        assert!(
            !exported
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "{secret:?} was exported"
        );
    }
}

#[test]
fn calls_from_docker_and_containerd_cgroups_carry_their_container_ids() {
    let (docker_id, containerd_id) = (random_hex(32), random_hex(32));
    let pod_uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    let mut cgroups = TestCgroups::new();
    let docker = cgroups.create(&format!("system.slice/docker-{docker_id}.scope"));
    let containerd = cgroups.create(&format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{containerd_id}.scope",
        pod_uid.replace('-', "_")
    ));
    let receiver = OtlpReceiver::start();
    let mut agent = receiver.agent(&[], &[("OTEL_BSP_SCHEDULE_DELAY", "200")]);
    let port = free_port();
    let fixture = support::fixture("http_server.py");
    let mut server = Proc::spawn(
        "http_server.py",
        cgroups
            .command_in(
                &docker,
                python(),
                &["-u", fixture.to_str().unwrap(), "--port", &port.to_string()],
            )
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    );
    server.wait_stdout_line("READY", FIXTURE_READY_TIMEOUT, |l| l.trim() == "READY");
    let url = format!("http://127.0.0.1:{port}/containers");
    let out = run(
        &mut cgroups.command_in(
            &containerd,
            "curl".as_ref(),
            &["-s", "-o", "/dev/null", &url],
        ),
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "curl: {}", out.describe());
    let (server_pid, client_pid) = (server.pid(), out.pid);
    let span_of = |spans: &[FlatSpan], pid: u32| {
        spans
            .iter()
            .find(|s| s.pid() == Some(pid) && s.attr_str("url.path") == Some("/containers"))
            .cloned()
    };
    let spans = match receiver.try_wait_for_spans(
        |spans| span_of(spans, server_pid).is_some() && span_of(spans, client_pid).is_some(),
        EXPORT_TIMEOUT,
    ) {
        Ok(spans) => spans,
        Err(spans) => agent.fail(&format!(
            "the two spans did not arrive; got {}",
            summarize_spans(&spans)
        )),
    };
    agent.stop();
    drop(server);
    let (server_span, client_span) = (
        span_of(&spans, server_pid).unwrap(),
        span_of(&spans, client_pid).unwrap(),
    );
    assert_eq!(
        server_span.resource_str("container.id"),
        Some(docker_id.as_str()),
        "{server_span}"
    );
    assert_eq!(
        server_span.resource_str("k8s.pod.uid"),
        None,
        "{server_span}"
    );
    assert_eq!(
        client_span.resource_str("container.id"),
        Some(containerd_id.as_str()),
        "{client_span}"
    );
    assert_eq!(
        client_span.resource_str("k8s.pod.uid"),
        Some(pod_uid),
        "{client_span}"
    );
}
