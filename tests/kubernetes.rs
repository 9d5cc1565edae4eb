//! End-to-end Kubernetes enrichment: the real agent, with the real `kube` client, lists and
//! watches the pods of its node on a local HTTPS endpoint that speaks the Kubernetes API
//! (support/kube.rs), and names the calls of processes in those pods' container cgroups after
//! their pod, namespace, workload and container, including a pod added while it runs.

mod support;

use std::{process::Command, time::Duration};

use support::cgroup::TestCgroups;
use support::kube::{KubeApi, PodSpec, pod, uid};
use support::otlp::{FlatSpan, OtlpReceiver, summarize_spans};
use support::{
    Agent, COMMAND_TIMEOUT, FIXTURE_READY_TIMEOUT, Proc, TempDir, free_port, python, random_hex,
    run,
};

/// How long the test waits for its spans at the receiver.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the agent may take to list the pods, or to see one added.
const WATCH_TIMEOUT: Duration = Duration::from_secs(30);
const NODE: &str = "node-a";

/// A container of a pod: its id (without runtime prefix) and its cgroup path.
struct Container {
    id: String,
    cgroup: String,
}

fn container_cgroup(cgroups: &mut TestCgroups, pod_uid: &str) -> Container {
    let id = random_hex(32);
    let cgroup = cgroups.create(&format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
        pod_uid.replace('-', "_")
    ));
    Container { id, cgroup }
}

/// Starts the HTTP fixture in `container`; returns it once it serves.
fn serve_in(cgroups: &TestCgroups, container: &Container, port: u16) -> Proc {
    let fixture = support::fixture("http_server.py");
    let mut server = Proc::spawn(
        "http_server.py",
        cgroups
            .command_in(
                &container.cgroup,
                python(),
                &["-u", fixture.to_str().unwrap(), "--port", &port.to_string()],
            )
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    );
    server.wait_stdout_line("READY", FIXTURE_READY_TIMEOUT, |l| l.trim() == "READY");
    server
}

fn get(port: u16, path: &str) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let out = run(
        Command::new("curl").args(["-s", "-o", "/dev/null", &url]),
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "curl: {}", out.describe());
}

/// The server span of `pid` for `path`, once it arrived.
fn server_span(receiver: &OtlpReceiver, agent: &mut Agent, pid: u32, path: &str) -> FlatSpan {
    let find = |spans: &[FlatSpan]| {
        spans
            .iter()
            .find(|s| s.pid() == Some(pid) && s.attr_str("url.path") == Some(path))
            .cloned()
    };
    match receiver.try_wait_for_spans(|spans| find(spans).is_some(), EXPORT_TIMEOUT) {
        Ok(spans) => find(&spans).unwrap(),
        Err(spans) => agent.fail(&format!(
            "no server span for {path}; got {}",
            summarize_spans(&spans)
        )),
    }
}

#[test]
fn calls_are_named_after_the_pods_of_this_node_including_one_added_later() {
    let dir = TempDir::new("kubernetes");
    let mut cgroups = TestCgroups::new();
    let checkout_uid = uid();
    let checkout = container_cgroup(&mut cgroups, &checkout_uid);
    let checkout_pod = pod(PodSpec::new("checkout-7d9f8b6c5d-x7k2p", NODE)
        .namespace("shop")
        .uid(&checkout_uid)
        .label("app", "checkout")
        .label("pod-template-hash", "7d9f8b6c5d")
        .owner("ReplicaSet", "checkout-7d9f8b6c5d")
        .container("web", &format!("containerd://{}", checkout.id)));
    // A pod of another node: never asked for, so never seen.
    let elsewhere = pod(PodSpec::new("elsewhere", "node-b")
        .namespace("shop")
        .container("web", &format!("containerd://{}", random_hex(32))));
    let mut api = KubeApi::start(dir.path(), &[checkout_pod, elsewhere]);

    let receiver = OtlpReceiver::start();
    let kubeconfig = api.kubeconfig().to_str().unwrap().to_owned();
    let mut agent = receiver.agent(
        &["--set", "kubernetes.enabled=true", "--node-name", NODE],
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("KUBECONFIG", &kubeconfig),
            ("RUST_LOG", "info,agent::enrich::kubernetes=debug"),
        ],
    );
    // Ready means listed: the agent waits for its node's pods before it starts capturing.

    let port = free_port();
    let server = serve_in(&cgroups, &checkout, port);
    get(port, "/checkout");
    let span = server_span(&receiver, &mut agent, server.pid(), "/checkout");
    for (key, value) in [
        ("service.name", "checkout"),
        ("service.namespace", "shop"),
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "checkout-7d9f8b6c5d-x7k2p"),
        ("k8s.pod.uid", checkout_uid.as_str()),
        ("k8s.deployment.name", "checkout"),
        ("k8s.node.name", NODE),
        ("container.name", "web"),
        ("container.id", checkout.id.as_str()),
        ("k8s.pod.label.app", "checkout"),
    ] {
        assert_eq!(span.resource_str(key), Some(value), "{key} of {span}");
    }

    // A pod scheduled while the agent runs: a StatefulSet's, naming its service itself.
    let ledger_uid = uid();
    let ledger = container_cgroup(&mut cgroups, &ledger_uid);
    api.add_pod(pod(PodSpec::new("ledger-0", NODE)
        .namespace("bank")
        .uid(&ledger_uid)
        .annotation("resource.opentelemetry.io/service.name", "ledger-api")
        .owner("StatefulSet", "ledger")
        .container("db", &format!("containerd://{}", ledger.id))));
    agent.wait_log_line("the added pod", WATCH_TIMEOUT, |line| {
        line.contains("kubernetes: pod bank/ledger-0 applied")
    });
    let port = free_port();
    let ledger_server = serve_in(&cgroups, &ledger, port);
    get(port, "/ledger");
    let span = server_span(&receiver, &mut agent, ledger_server.pid(), "/ledger");
    for (key, value) in [
        ("service.name", "ledger-api"),
        ("service.namespace", "bank"),
        ("k8s.pod.name", "ledger-0"),
        ("k8s.statefulset.name", "ledger"),
        ("container.name", "db"),
    ] {
        assert_eq!(span.resource_str(key), Some(value), "{key} of {span}");
    }
    agent.stop();
    drop((server, ledger_server));

    let requests = api.requests();
    let selected = |watch: bool| {
        requests.iter().any(|request| {
            request.contains("/api/v1/pods")
                && request.contains("fieldSelector=spec.nodeName%3Dnode-a")
                && request.contains("watch=true") == watch
        })
    };
    assert!(
        selected(false),
        "no list of this node's pods: {requests:#?}"
    );
    assert!(
        selected(true),
        "no watch of this node's pods: {requests:#?}"
    );
}
