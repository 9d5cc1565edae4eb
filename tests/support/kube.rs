//! A fake Kubernetes API server for the tests (tests/fixtures/kube_api.py): it serves pods, as
//! the real API server does, to a client that lists and watches them, e.g. kube-rs's watcher
//! asking for the pods of one node (`fieldSelector=spec.nodeName=NODE`).
//!
//! [`KubeApi::start`] makes a CA and a server certificate for `127.0.0.1`, starts the server on
//! HTTPS with a random bearer token, and writes a kubeconfig that trusts that CA and sends that
//! token, so a client verifies TLS for real. The test changes the pods while clients watch
//! ([`KubeApi::add_pod`]); the call returns
//! once the server has made the change. [`KubeApi::requests`] tells what clients asked for.
//! [`pod`] builds a pod in the JSON shape a kubelet reports.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{COMMAND_TIMEOUT, FIXTURE_READY_TIMEOUT, Proc, random_hex, run, spawn_python};

/// How long the fake server may take to apply one command from the test.
const COMMAND_APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The files of the fake server's TLS identity.
pub struct KubeTls {
    /// The CA certificate (PEM) a client must trust.
    pub ca_cert: PathBuf,
    /// The server certificate (PEM), for IP 127.0.0.1 and DNS localhost, signed by the CA.
    pub server_cert: PathBuf,
    /// The server certificate's private key (PEM).
    pub server_key: PathBuf,
}

/// Makes, with the `openssl` CLI, a CA and a server certificate it signs, for
/// `subjectAltName=IP:127.0.0.1,DNS:localhost` (rustls, which kube-rs uses, checks the SAN and
/// refuses a self-signed CA certificate as the server's own), into `dir`.
pub fn make_ca_and_server_cert(dir: &Path) -> KubeTls {
    let ca_key = dir.join("kube-ca.key");
    let tls = KubeTls {
        ca_cert: dir.join("kube-ca.crt"),
        server_cert: dir.join("kube-apiserver.crt"),
        server_key: dir.join("kube-apiserver.key"),
    };
    let csr = dir.join("kube-apiserver.csr");
    let ext = dir.join("kube-apiserver.ext");
    fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap_or_else(|e| panic!("write {}: {e}", ext.display()));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [(&str, Command); 3] = [
        ("make the CA", {
            let mut cmd = Command::new("openssl");
            cmd.arg("req")
                .arg("-x509")
                .args(ec)
                .arg("-keyout")
                .arg(&ca_key)
                .arg("-out")
                .arg(&tls.ca_cert)
                .args(["-days", "2", "-subj", "/CN=apiscope-e2e-kube-ca"])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
            cmd
        }),
        ("make the server's key and CSR", {
            let mut cmd = Command::new("openssl");
            cmd.arg("req")
                .args(ec)
                .arg("-keyout")
                .arg(&tls.server_key)
                .arg("-out")
                .arg(&csr)
                .args(["-subj", "/CN=kube-apiserver"]);
            cmd
        }),
        ("sign the server certificate", {
            let mut cmd = Command::new("openssl");
            cmd.args(["x509", "-req", "-in"])
                .arg(&csr)
                .arg("-CA")
                .arg(&tls.ca_cert)
                .arg("-CAkey")
                .arg(&ca_key)
                .args(["-set_serial", &format!("0x{}", random_hex(8))])
                .args(["-days", "2", "-extfile"])
                .arg(&ext)
                .arg("-out")
                .arg(&tls.server_cert);
            cmd
        }),
    ];
    for (what, mut cmd) in steps {
        let out = run(&mut cmd, COMMAND_TIMEOUT);
        assert!(
            out.status.success(),
            "openssl failed to {what}: {}",
            out.describe()
        );
    }
    tls
}

/// A running fake Kubernetes API server (tests/fixtures/kube_api.py) on `https://127.0.0.1:PORT`;
/// killed when dropped.
pub struct KubeApi {
    proc: Proc,
    port: u16,
    token: String,
    tls: KubeTls,
    kubeconfig: PathBuf,
    log: PathBuf,
}

impl KubeApi {
    /// Makes the TLS files in `dir` ([`make_ca_and_server_cert`]), starts the server with
    /// `pods` (as [`pod`] builds them; their resourceVersions are set by the server) and waits
    /// until it listens, then writes `dir/kubeconfig`: one cluster at the server's URL trusting
    /// the CA, one user with the bearer token, and the context `test` as the current one.
    pub fn start(dir: &Path, pods: &[Value]) -> KubeApi {
        let tls = make_ca_and_server_cert(dir);
        let token = random_hex(16);
        let pods_file = dir.join("kube-pods.json");
        fs::write(&pods_file, Value::Array(pods.to_vec()).to_string())
            .unwrap_or_else(|e| panic!("write {}: {e}", pods_file.display()));
        let log = dir.join("kube-requests.log");
        let mut proc = spawn_python(
            "kube_api.py",
            &[
                "--cert",
                path_str(&tls.server_cert),
                "--key",
                path_str(&tls.server_key),
                "--token",
                &token,
                "--pods",
                path_str(&pods_file),
                "--log",
                path_str(&log),
            ],
        );
        let ready = proc.wait_stdout_line("READY <port>", FIXTURE_READY_TIMEOUT, |l| {
            l.starts_with("READY ")
        });
        let port = match ready["READY ".len()..].trim().parse() {
            Ok(port) => port,
            Err(e) => proc.fail(&format!("printed a bad READY line {ready:?}: {e}")),
        };
        let kubeconfig = dir.join("kubeconfig");
        fs::write(&kubeconfig, kubeconfig_yaml(port, &tls.ca_cert, &token))
            .unwrap_or_else(|e| panic!("write {}: {e}", kubeconfig.display()));
        KubeApi {
            proc,
            port,
            token,
            tls,
            kubeconfig,
            log,
        }
    }

    /// The kubeconfig file that points a client at this server (context `test`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Every request the server has received so far, as `METHOD PATH?QUERY`, oldest first, the
    /// query exactly as sent (still percent-encoded: `fieldSelector=spec.nodeName%3Dnode-a`).
    pub fn requests(&self) -> Vec<String> {
        match fs::read_to_string(&self.log) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("read {}: {e}", self.log.display()),
        }
    }

    /// Adds a pod (an ADDED event for every watch it matches); returns its resourceVersion.
    pub fn add_pod(&mut self, pod: Value) -> u64 {
        self.command(json!({"op": "add", "pod": pod}))
    }

    /// Sends one control command and waits for the server's `OK <resourceVersion>`.
    fn command(&mut self, command: Value) -> u64 {
        self.proc.write_line(&command.to_string());
        let line = self
            .proc
            .wait_stdout_line("OK or ERR", COMMAND_APPLY_TIMEOUT, |l| {
                l.starts_with("OK ") || l.starts_with("ERR ")
            });
        match line.strip_prefix("OK ").map(|rv| rv.trim().parse()) {
            Some(Ok(rv)) => rv,
            _ => self.proc.fail(&format!("refused {command}: {line}")),
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("path {} is not UTF-8", path.display()))
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn yaml_str(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn kubeconfig_yaml(port: u16, ca_cert: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: test\n  \
           cluster:\n    \
             server: {server}\n    \
             certificate-authority: {ca}\n\
         users:\n\
         - name: test\n  \
           user:\n    \
             token: {token}\n\
         contexts:\n\
         - name: test\n  \
           context:\n    \
             cluster: test\n    \
             user: test\n    \
             namespace: default\n\
         current-context: test\n\
         preferences: {{}}\n",
        server = yaml_str(&format!("https://127.0.0.1:{port}")),
        ca = yaml_str(path_str(ca_cert)),
        token = yaml_str(token),
    )
}

// ---------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------

/// When the built pods were created and their containers started (fixed: tests compare
/// nothing against the clock).
const CREATED_AT: &str = "2025-06-02T08:15:30Z";
const STARTED_AT: &str = "2025-06-02T08:15:34Z";

/// What [`pod`] needs to build one pod; a builder, e.g.
/// `PodSpec::new("checkout-7d9f8b6c5d-x7k2p", "node-a").namespace("shop")
/// .label("app", "checkout").owner("ReplicaSet", "checkout-7d9f8b6c5d")
/// .container("checkout", &container_id("containerd"))`.
#[derive(Clone, Debug)]
pub struct PodSpec {
    name: String,
    namespace: String,
    uid: String,
    node: String,
    labels: Map<String, Value>,
    annotations: Map<String, Value>,
    owner: Option<(String, String)>,
    containers: Vec<(String, String)>,
    pod_ip: String,
    host_ip: String,
    service_account: String,
}

impl PodSpec {
    /// A pod named `name` on node `node` (`spec.nodeName`; "" for an unscheduled pod) in
    /// namespace `default`, with a random uid, no labels, annotations, owner or containers,
    /// pod IP 10.244.1.17 and host IP 10.0.0.11 (only data: nothing connects to them).
    pub fn new(name: &str, node: &str) -> PodSpec {
        PodSpec {
            name: name.to_owned(),
            namespace: "default".to_owned(),
            uid: uid(),
            node: node.to_owned(),
            labels: Map::new(),
            annotations: Map::new(),
            owner: None,
            containers: Vec::new(),
            pod_ip: "10.244.1.17".to_owned(),
            host_ip: "10.0.0.11".to_owned(),
            service_account: "default".to_owned(),
        }
    }

    /// Sets `metadata.namespace`.
    pub fn namespace(mut self, namespace: &str) -> PodSpec {
        self.namespace = namespace.to_owned();
        self
    }

    /// Sets `metadata.uid` (the pod's cgroup path carries it).
    pub fn uid(mut self, uid: &str) -> PodSpec {
        self.uid = uid.to_owned();
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> PodSpec {
        self.labels.insert(key.to_owned(), value.into());
        self
    }

    /// Adds an annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> PodSpec {
        self.annotations.insert(key.to_owned(), value.into());
        self
    }

    /// Sets the controller owner, e.g. ("ReplicaSet", "checkout-7d9f8b6c5d"): one
    /// `ownerReferences` entry (with `controller: true`), and `generateName` `"<owner>-"` for the
    /// kinds whose pods are named so (ReplicaSet, DaemonSet, Job).
    pub fn owner(mut self, kind: &str, name: &str) -> PodSpec {
        self.owner = Some((kind.to_owned(), name.to_owned()));
        self
    }

    /// Adds a running container: its name and its id with the runtime's prefix, as kubelet
    /// reports it in `containerStatuses[].containerID` (e.g. `containerd://<64 hex>`; see
    /// [`container_id`]).
    pub fn container(mut self, name: &str, id: &str) -> PodSpec {
        self.containers.push((name.to_owned(), id.to_owned()));
        self
    }
}

/// A random pod uid, a UUID v4 as the API server makes them.
pub fn uid() -> String {
    let hex = random_hex(16);
    format!(
        "{}-{}-4{}-{}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        ["8", "9", "a", "b"][usize::from(hex.as_bytes()[16]) % 4],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The API group version of an owner kind in `ownerReferences`.
fn owner_api_version(kind: &str) -> &'static str {
    match kind {
        "ReplicaSet" | "DaemonSet" | "StatefulSet" | "Deployment" => "apps/v1",
        "Job" => "batch/v1",
        _ => "v1",
    }
}

/// A running pod in the JSON shape the API server returns for one a kubelet reports on
/// (without `kind`/`apiVersion`, as in a list; `resourceVersion` is set by the server).
pub fn pod(spec: PodSpec) -> Value {
    let mut metadata = json!({
        "name": spec.name,
        "namespace": spec.namespace,
        "uid": spec.uid,
        "resourceVersion": "1",
        "creationTimestamp": CREATED_AT,
    });
    // The API server leaves out empty maps and empty strings.
    if !spec.labels.is_empty() {
        metadata["labels"] = spec.labels.into();
    }
    if !spec.annotations.is_empty() {
        metadata["annotations"] = spec.annotations.into();
    }
    if let Some((kind, name)) = &spec.owner {
        if matches!(kind.as_str(), "ReplicaSet" | "DaemonSet" | "Job") {
            metadata["generateName"] = format!("{name}-").into();
        }
        metadata["ownerReferences"] = json!([{
            "apiVersion": owner_api_version(kind),
            "kind": kind,
            "name": name,
            "uid": uid(),
            "controller": true,
            "blockOwnerDeletion": true,
        }]);
    }
    let image = |name: &str| format!("registry.example.com/apiscope-e2e/{name}:1.0");
    let containers: Vec<Value> = spec
        .containers
        .iter()
        .map(|(name, _)| {
            json!({
                "name": name,
                "image": image(name),
                "imagePullPolicy": "IfNotPresent",
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
            })
        })
        .collect();
    let statuses: Vec<Value> = spec
        .containers
        .iter()
        .map(|(name, id)| {
            json!({
                "name": name,
                "containerID": id,
                "image": image(name),
                "imageID": format!(
                    "registry.example.com/apiscope-e2e/{name}@sha256:{}",
                    random_hex(32)
                ),
                "ready": true,
                "restartCount": 0,
                "started": true,
                "lastState": {},
                "state": {"running": {"startedAt": STARTED_AT}},
            })
        })
        .collect();
    let condition = |kind: &str, at: &str| json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": at});
    let scheduled = !spec.node.is_empty();
    let mut pod = json!({
        "metadata": metadata,
        "spec": {
            "containers": containers,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": spec.service_account,
            "serviceAccount": spec.service_account,
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "priority": 0,
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": if scheduled {
            json!({
                "phase": "Running",
                "conditions": [
                    condition("PodReadyToStartContainers", STARTED_AT),
                    condition("Initialized", CREATED_AT),
                    condition("Ready", STARTED_AT),
                    condition("ContainersReady", STARTED_AT),
                    condition("PodScheduled", CREATED_AT),
                ],
                "hostIP": spec.host_ip,
                "hostIPs": [{"ip": spec.host_ip}],
                "podIP": spec.pod_ip,
                "podIPs": [{"ip": spec.pod_ip}],
                "startTime": CREATED_AT,
                "containerStatuses": statuses,
                "qosClass": "BestEffort",
            })
        } else {
            json!({
                "phase": "Pending",
                "conditions": [{
                    "type": "PodScheduled",
                    "status": "False",
                    "lastProbeTime": null,
                    "lastTransitionTime": CREATED_AT,
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available.",
                }],
                "qosClass": "BestEffort",
            })
        },
    });
    if scheduled {
        pod["spec"]["nodeName"] = spec.node.into();
    }
    pod
}
