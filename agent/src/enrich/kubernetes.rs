//! Kubernetes: which pod, namespace and workload a container belongs to, from the pods the API
//! server schedules on this node (a list, then a watch, with a field selector on the node
//! name, so each agent holds its own node's pods only).

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{Arc, PoisonError, RwLock},
};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, watcher},
};
use log::{debug, info, warn};

/// Pods indexed at most; a node runs a few hundred at most, so more means a misbehaving API
/// server and the excess is ignored.
const MAX_PODS: usize = 10_000;
/// Labels kept per pod.
const MAX_LABELS: usize = 64;
/// Annotation a pod can set to name its service (OpenTelemetry's Kubernetes convention).
const SERVICE_NAME_ANNOTATION: &str = "resource.opentelemetry.io/service.name";
/// Label naming the application (Kubernetes' recommended labels).
const APP_NAME_LABEL: &str = "app.kubernetes.io/name";

/// The `kubernetes:` section of the configuration.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesSettings {
    /// Name calls after the pods, namespaces and workloads the API server reports for this
    /// node (in-cluster service account, else `$KUBECONFIG`).
    pub enabled: bool,
    /// This node's name (the Helm chart sets it from the downward API).
    pub node_name: Option<String>,
}

impl KubernetesSettings {
    /// The node whose pods are watched; `None` when enrichment is off, an error when it is on
    /// but the node is unnamed.
    pub fn node(&self) -> Result<Option<&str>, &'static str> {
        if !self.enabled {
            return Ok(None);
        }
        match self.node_name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => Ok(Some(name)),
            _ => Err("kubernetes.enabled needs this node's name: kubernetes.node_name"),
        }
    }
}

/// The kinds of workload that own pods, as named in the resource attributes
/// (`k8s.<kind>.name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// `k8s.deployment.name`.
    Deployment,
    /// `k8s.replicaset.name`: a ReplicaSet no Deployment manages.
    ReplicaSet,
    /// `k8s.statefulset.name`.
    StatefulSet,
    /// `k8s.daemonset.name`.
    DaemonSet,
    /// `k8s.job.name`.
    Job,
    /// `k8s.cronjob.name`.
    CronJob,
}

impl WorkloadKind {
    /// The resource attribute that carries the workload's name.
    pub fn attribute(self) -> &'static str {
        match self {
            Self::Deployment => "k8s.deployment.name",
            Self::ReplicaSet => "k8s.replicaset.name",
            Self::StatefulSet => "k8s.statefulset.name",
            Self::DaemonSet => "k8s.daemonset.name",
            Self::Job => "k8s.job.name",
            Self::CronJob => "k8s.cronjob.name",
        }
    }
}

/// What the API server says of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    /// `k8s.namespace.name`.
    pub namespace: String,
    /// `k8s.pod.name`.
    pub name: String,
    /// `k8s.pod.uid`.
    pub uid: String,
    /// `k8s.node.name`.
    pub node_name: Option<String>,
    /// The pod's labels (`k8s.pod.label.<key>`), at most [`MAX_LABELS`].
    pub labels: BTreeMap<String, String>,
    /// The workload that owns it, resolved through ReplicaSets and Jobs to the Deployment or
    /// CronJob that created them.
    pub workload: Option<(WorkloadKind, String)>,
    /// The service name the pod declares: its `resource.opentelemetry.io/service.name`
    /// annotation, else its `app.kubernetes.io/name` label.
    pub declared_service_name: Option<String>,
}

impl PodIdentity {
    /// The name of the service the pod runs: the one it declares, else its workload's name,
    /// else its own.
    pub fn service_name(&self) -> &str {
        self.declared_service_name
            .as_deref()
            .or(self.workload.as_ref().map(|(_, name)| name.as_str()))
            .unwrap_or(&self.name)
    }
}

/// One container of a pod, as a process's cgroup identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerIdentity {
    /// The pod.
    pub pod: Arc<PodIdentity>,
    /// `container.name`, when the process's container id was found in the pod's status.
    pub container_name: Option<String>,
}

#[derive(Debug, Default)]
struct Index {
    by_container: HashMap<String, Arc<ContainerIdentity>>,
    by_pod_uid: HashMap<String, Arc<ContainerIdentity>>,
    by_ip: HashMap<IpAddr, Arc<PodIdentity>>,
}

/// The pods on this node, by container id and by pod uid; shared by the watch task, which
/// fills it, and enrichment, which reads it.
#[derive(Debug, Default)]
pub struct PodIndex(RwLock<Index>);

impl PodIndex {
    /// The container (else, with no container name, the pod) a process belongs to.
    pub fn lookup(
        &self,
        container_id: Option<&str>,
        pod_uid: Option<&str>,
    ) -> Option<Arc<ContainerIdentity>> {
        let index = self.0.read().unwrap_or_else(PoisonError::into_inner);
        container_id
            .and_then(|id| index.by_container.get(id))
            .or_else(|| pod_uid.and_then(|uid| index.by_pod_uid.get(uid)))
            .cloned()
    }

    /// The pod with IP `ip` (pods on the host network share the node's IP and are left out).
    pub fn lookup_ip(&self, ip: IpAddr) -> Option<Arc<PodIdentity>> {
        let index = self.0.read().unwrap_or_else(PoisonError::into_inner);
        index.by_ip.get(&ip).cloned()
    }

    /// Pods indexed.
    pub fn len(&self) -> usize {
        let index = self.0.read().unwrap_or_else(PoisonError::into_inner);
        index.by_pod_uid.len()
    }

    /// Whether no pod is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds or updates a pod.
    pub fn apply(&self, pod: &Pod) {
        let mut index = self.0.write().unwrap_or_else(PoisonError::into_inner);
        index.remove(pod_uid(pod));
        index.insert(pod);
    }

    /// Removes a pod.
    pub fn delete(&self, pod: &Pod) {
        let mut index = self.0.write().unwrap_or_else(PoisonError::into_inner);
        index.remove(pod_uid(pod));
    }

    /// Replaces every pod (after a full list).
    pub fn replace(&self, pods: &[Pod]) {
        let mut fresh = Index::default();
        for pod in pods {
            fresh.insert(pod);
        }
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = fresh;
    }
}

impl Index {
    fn insert(&mut self, pod: &Pod) {
        if self.by_pod_uid.len() >= MAX_PODS {
            return;
        }
        let Some(identity) = pod_identity(pod) else {
            return;
        };
        let identity = Arc::new(identity);
        for (id, name) in container_ids(pod) {
            let container = ContainerIdentity {
                pod: Arc::clone(&identity),
                container_name: Some(name),
            };
            self.by_container.insert(id, Arc::new(container));
        }
        for ip in pod_ips(pod) {
            self.by_ip.insert(ip, Arc::clone(&identity));
        }
        let pod_only = ContainerIdentity {
            pod: Arc::clone(&identity),
            container_name: None,
        };
        self.by_pod_uid
            .insert(identity.uid.clone(), Arc::new(pod_only));
    }

    fn remove(&mut self, uid: Option<&str>) {
        let Some(uid) = uid else { return };
        if self.by_pod_uid.remove(uid).is_some() {
            self.by_container
                .retain(|_, container| container.pod.uid != uid);
            self.by_ip.retain(|_, pod| pod.uid != uid);
        }
    }
}

/// `namespace/name`, for logs.
fn pod_name(pod: &Pod) -> String {
    let metadata = &pod.metadata;
    format!(
        "{}/{}",
        metadata.namespace.as_deref().unwrap_or(""),
        metadata.name.as_deref().unwrap_or("")
    )
}

/// The pod's own IPs: none for pods on the host network.
fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.host_network)
        .unwrap_or(false);
    if host_network {
        return Vec::new();
    }
    status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

fn pod_uid(pod: &Pod) -> Option<&str> {
    pod.metadata.uid.as_deref()
}

/// The identity of a pod; `None` without a name, namespace and uid.
pub fn pod_identity(pod: &Pod) -> Option<PodIdentity> {
    let metadata = &pod.metadata;
    let labels: BTreeMap<String, String> = metadata
        .labels
        .iter()
        .flatten()
        .take(MAX_LABELS)
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let declared_service_name = metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(SERVICE_NAME_ANNOTATION))
        .or_else(|| labels.get(APP_NAME_LABEL))
        .filter(|name| !name.is_empty())
        .cloned();
    Some(PodIdentity {
        namespace: metadata.namespace.clone()?,
        name: metadata.name.clone()?,
        uid: metadata.uid.clone()?,
        node_name: pod.spec.as_ref().and_then(|spec| spec.node_name.clone()),
        workload: owner_workload(pod, &labels),
        declared_service_name,
        labels,
    })
}

/// The workload that owns the pod: its controller owner, with a ReplicaSet named
/// `<deployment>-<pod-template-hash>` read as its Deployment and a Job named
/// `<cronjob>-<minutes>` as its CronJob (the names those controllers give what they create),
/// so that no permission beyond reading pods is needed.
fn owner_workload(pod: &Pod, labels: &BTreeMap<String, String>) -> Option<(WorkloadKind, String)> {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true))?;
    let name = owner.name.clone();
    let workload = match owner.kind.as_str() {
        "ReplicaSet" => match labels
            .get("pod-template-hash")
            .and_then(|hash| name.strip_suffix(hash.as_str())?.strip_suffix('-'))
        {
            Some(deployment) => (WorkloadKind::Deployment, deployment.to_owned()),
            None => (WorkloadKind::ReplicaSet, name),
        },
        "StatefulSet" => (WorkloadKind::StatefulSet, name),
        "DaemonSet" => (WorkloadKind::DaemonSet, name),
        "Job" => match name.rsplit_once('-') {
            Some((cronjob, minutes))
                if !cronjob.is_empty()
                    && minutes.len() >= 8
                    && minutes.bytes().all(|byte| byte.is_ascii_digit()) =>
            {
                (WorkloadKind::CronJob, cronjob.to_owned())
            }
            _ => (WorkloadKind::Job, name),
        },
        _ => return None,
    };
    Some(workload)
}

/// Container ids (without their `containerd://`-style scheme) and names of every container of
/// the pod, init and ephemeral ones included.
fn container_ids(pod: &Pod) -> impl Iterator<Item = (String, String)> + '_ {
    let status = pod.status.as_ref();
    let lists: [Option<&Vec<ContainerStatus>>; 3] = [
        status.and_then(|status| status.container_statuses.as_ref()),
        status.and_then(|status| status.init_container_statuses.as_ref()),
        status.and_then(|status| status.ephemeral_container_statuses.as_ref()),
    ];
    lists
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|container| {
            let id = container.container_id.as_deref()?;
            let id = id.split_once("://").map_or(id, |(_, id)| id);
            (!id.is_empty()).then(|| (id.to_owned(), container.name.clone()))
        })
}

/// A client for the cluster this agent runs in: in-cluster service account, else
/// `$KUBECONFIG` or `~/.kube/config`.
pub async fn connect() -> Result<Client, String> {
    // The TLS stack has two crypto providers compiled in (from different dependencies) and
    // picks none by itself; ring is the one the OTLP exporters use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::infer()
        .await
        .map_err(|error| format!("no Kubernetes configuration found: {error}"))?;
    Client::try_from(config).map_err(|error| format!("cannot build the Kubernetes client: {error}"))
}

/// Keeps `index` equal to the pods scheduled on `node` until the task is dropped, and says on
/// `listed` when the first full list is in. Errors are logged and retried with backoff; the
/// index keeps its last state meanwhile.
pub async fn watch_node(
    client: Client,
    node: String,
    index: Arc<PodIndex>,
    listed: tokio::sync::oneshot::Sender<()>,
) {
    let mut listed = Some(listed);
    let pods: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher(pods, config).default_backoff().boxed();
    let mut listing: Vec<Pod> = Vec::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(pod)) => {
                if listing.len() < MAX_PODS {
                    listing.push(pod);
                }
            }
            Ok(watcher::Event::InitDone) => {
                index.replace(&listing);
                info!("kubernetes: {} pods on node {node}", index.len());
                listing = Vec::new();
                if let Some(listed) = listed.take() {
                    let _ = listed.send(());
                }
            }
            Ok(watcher::Event::Apply(pod)) => {
                index.apply(&pod);
                debug!("kubernetes: pod {} applied", pod_name(&pod));
            }
            Ok(watcher::Event::Delete(pod)) => {
                index.delete(&pod);
                debug!("kubernetes: pod {} deleted", pod_name(&pod));
            }
            Err(error) => warn!("kubernetes: watching the pods of node {node}: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod as the API server returns it (the shape of a kubelet-reported pod).
    fn pod(name: &str, owner: Option<(&str, &str)>, labels: serde_json::Value) -> Pod {
        let owners = owner.map(|(kind, owner)| {
            serde_json::json!([{
                "apiVersion": "apps/v1", "kind": kind, "name": owner,
                "uid": "7f3e2c1a-0000-4000-8000-000000000001",
                "controller": true, "blockOwnerDeletion": true
            }])
        });
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name, "namespace": "shop",
                "uid": format!("{name}-uid"),
                "labels": labels,
                "ownerReferences": owners,
            },
            "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "x"}]},
            "status": {
                "phase": "Running",
                "podIP": format!("10.0.0.{}", name.as_bytes()[0]),
                "containerStatuses": [{
                    "name": "app", "image": "x", "imageID": "x", "ready": true,
                    "restartCount": 0,
                    "containerID": format!("containerd://{name}-container"),
                }],
                "initContainerStatuses": [{
                    "name": "init", "image": "x", "imageID": "x", "ready": false,
                    "restartCount": 0,
                    "containerID": format!("cri-o://{name}-init"),
                }],
            },
        }))
        .unwrap()
    }

    #[test]
    fn deployments_are_found_through_their_replica_sets() {
        let labels = serde_json::json!({"pod-template-hash": "7d9f8b6c5d", "app": "checkout"});
        let identity = pod_identity(&pod(
            "checkout-7d9f8b6c5d-x7k2p",
            Some(("ReplicaSet", "checkout-7d9f8b6c5d")),
            labels,
        ))
        .unwrap();
        assert_eq!(
            identity.workload,
            Some((WorkloadKind::Deployment, "checkout".into()))
        );
        assert_eq!(identity.namespace, "shop");
        assert_eq!(identity.node_name.as_deref(), Some("node-a"));
        assert_eq!(identity.labels["app"], "checkout");
    }

    #[test]
    fn every_owner_kind_names_its_workload() {
        let cases = [
            (
                ("ReplicaSet", "bare-rs"),
                WorkloadKind::ReplicaSet,
                "bare-rs",
            ),
            (("StatefulSet", "db"), WorkloadKind::StatefulSet, "db"),
            (("DaemonSet", "fluent"), WorkloadKind::DaemonSet, "fluent"),
            (("Job", "migrate"), WorkloadKind::Job, "migrate"),
            (("Job", "report-29123456"), WorkloadKind::CronJob, "report"),
            (("Job", "batch-12"), WorkloadKind::Job, "batch-12"),
        ];
        for ((kind, owner), expected, name) in cases {
            let identity =
                pod_identity(&pod("p", Some((kind, owner)), serde_json::json!({}))).unwrap();
            assert_eq!(identity.workload, Some((expected, name.into())), "{kind}");
        }
        let bare = pod_identity(&pod("p", None, serde_json::json!({}))).unwrap();
        assert_eq!(bare.workload, None);
    }

    #[test]
    fn the_annotation_then_the_app_label_declare_the_service_name() {
        let mut labelled = pod(
            "p",
            None,
            serde_json::json!({"app.kubernetes.io/name": "cart"}),
        );
        assert_eq!(
            pod_identity(&labelled).unwrap().declared_service_name,
            Some("cart".into())
        );
        labelled.metadata.annotations = Some(BTreeMap::from([(
            SERVICE_NAME_ANNOTATION.to_owned(),
            "cart-api".to_owned(),
        )]));
        assert_eq!(
            pod_identity(&labelled).unwrap().declared_service_name,
            Some("cart-api".into())
        );
    }

    #[test]
    fn containers_and_pods_are_found_and_forgotten() {
        let index = PodIndex::default();
        let first = pod("a", None, serde_json::json!({}));
        index.replace(&[first.clone(), pod("b", None, serde_json::json!({}))]);
        assert_eq!(index.len(), 2);
        let app = index.lookup(Some("a-container"), None).unwrap();
        assert_eq!(app.container_name.as_deref(), Some("app"));
        assert_eq!(app.pod.name, "a");
        assert_eq!(
            index
                .lookup_ip("10.0.0.97".parse().unwrap())
                .unwrap()
                .service_name(),
            "a"
        );
        let init = index.lookup(Some("a-init"), None).unwrap();
        assert_eq!(init.container_name.as_deref(), Some("init"));
        // A container not (yet) in the pod's status: the pod, from the cgroup's pod uid.
        let by_uid = index.lookup(Some("unknown"), Some("b-uid")).unwrap();
        assert_eq!(
            (by_uid.pod.name.as_str(), by_uid.container_name.as_deref()),
            ("b", None)
        );
        index.delete(&first);
        assert_eq!(index.lookup(Some("a-container"), Some("a-uid")), None);
        assert_eq!(index.lookup_ip("10.0.0.97".parse().unwrap()), None);
        assert_eq!(index.len(), 1);
        let mut renamed = pod("b", None, serde_json::json!({"v": "2"}));
        renamed.metadata.uid = Some("b-uid".into());
        index.apply(&renamed);
        assert_eq!(index.len(), 1);
        let updated = index.lookup(Some("b-container"), None).unwrap();
        assert_eq!(updated.pod.labels["v"], "2");
    }

    #[test]
    fn pods_without_identity_are_skipped() {
        let mut nameless = pod("a", None, serde_json::json!({}));
        nameless.metadata.uid = None;
        let index = PodIndex::default();
        index.apply(&nameless);
        assert!(index.is_empty());
    }
}
