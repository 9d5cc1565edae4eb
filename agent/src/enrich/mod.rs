//! Enrichment: who made or served a call: the process (executable, command line, user,
//! container, the service name its own OpenTelemetry configuration gives it), the Kubernetes
//! pod and workload it belongs to, and the host.

pub mod cgroup;
pub mod kubernetes;
mod process;
mod registry;

pub use registry::{ExecNotices, ProcessRegistry, start_identity_reader};

use std::{net::SocketAddr, sync::Arc};

use foldhash::HashMap;

use crate::calls::{ApiCall, Side};
use kubernetes::{ContainerIdentity, PodIndex};

/// A call with the identity of the workload that made or served it.
#[derive(Debug, Clone)]
pub struct EnrichedCall {
    /// The call.
    pub call: ApiCall,
    /// Who made or served it.
    pub workload: Arc<Workload>,
    /// For a client call, the service that answered it, when it runs on this host (a
    /// process seen serving that address, or a pod of this node with that IP).
    pub peer: Option<Arc<PeerService>>,
    /// This host's name.
    pub host_name: Arc<str>,
}

/// The service on the other end of a call (`service.peer.name`, `service.peer.namespace`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerService {
    /// Its `service.name`.
    pub name: String,
    /// Its `service.namespace`.
    pub namespace: Option<String>,
}

/// A process with what Kubernetes says of it, and the service name they give it together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The process on this host.
    pub process: Arc<ProcessIdentity>,
    /// Its container and pod, when it runs in one the Kubernetes API server knows.
    pub kubernetes: Option<Arc<ContainerIdentity>>,
    /// `service.name`: the process's own OpenTelemetry configuration, else the pod's
    /// `resource.opentelemetry.io/service.name` annotation or `app.kubernetes.io/name` label,
    /// else the owning workload's name, else the executable name.
    pub service_name: String,
}

impl Workload {
    /// Names `process`, running in `kubernetes` if known.
    pub fn new(process: Arc<ProcessIdentity>, kubernetes: Option<Arc<ContainerIdentity>>) -> Self {
        let pod = kubernetes.as_ref().map(|container| &container.pod);
        let service_name = process
            .otel_service_name
            .clone()
            .or_else(|| pod.and_then(|pod| pod.declared_service_name.clone()))
            .or_else(|| pod.and_then(|pod| pod.workload.as_ref().map(|(_, name)| name.clone())))
            .unwrap_or_else(|| process.executable_name.clone());
        Self {
            process,
            kubernetes,
            service_name,
        }
    }

    /// `service.namespace`: the Kubernetes namespace.
    pub fn service_namespace(&self) -> Option<&str> {
        self.kubernetes
            .as_ref()
            .map(|container| container.pod.namespace.as_str())
    }
}

/// Identity of one traced process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// Process id.
    pub pid: u32,
    /// Executable file name (`/proc/PID/exe`), or the thread name when the process is gone.
    pub executable_name: String,
    /// Full executable path, when it could be read.
    pub executable_path: Option<String>,
    /// The service name the process's own OpenTelemetry configuration gives it:
    /// `OTEL_SERVICE_NAME`, else `service.name` in its `OTEL_RESOURCE_ATTRIBUTES`.
    pub otel_service_name: Option<String>,
    /// The command it runs, its first argument only (`process.command`).
    pub command: Option<String>,
    /// The first 6 bytes of the SHA-256 of its whole command line, hex: names the same program
    /// run the same way (a stdio MCP server across restarts) without keeping arguments, which
    /// may hold secrets.
    pub command_line_digest: Option<String>,
    /// The user id that owns it (`process.user.id`).
    pub user_id: Option<u32>,
    /// That user's name on this host (`process.owner`).
    pub user_name: Option<String>,
    /// The container it runs in (`container.id`), from its cgroup.
    pub container_id: Option<String>,
    /// The Kubernetes pod it runs in (`k8s.pod.uid`), from its cgroup.
    pub pod_uid: Option<String>,
    /// Its cgroup v2 path, e.g. `/system.slice/nginx.service` (for the selection rules).
    pub cgroup_path: Option<String>,
}

/// Workloads remembered at once; beyond it the cache starts over.
const MAX_WORKLOADS: usize = 16_384;

/// Names calls after their workloads.
#[derive(Debug)]
pub struct Enricher {
    host_name: Arc<str>,
    processes: Arc<ProcessRegistry>,
    pods: Option<Arc<PodIndex>>,
    workloads: HashMap<u32, Arc<Workload>>,
    /// The service seen serving each local address, learned from server calls.
    servers: HashMap<SocketAddr, Arc<PeerService>>,
}

impl Enricher {
    /// An enricher for this host, naming processes from `processes` and, on Kubernetes nodes,
    /// pods from `pods`.
    pub fn new(processes: Arc<ProcessRegistry>, pods: Option<Arc<PodIndex>>) -> Self {
        Self {
            host_name: host_name().into(),
            processes,
            pods,
            workloads: HashMap::default(),
            servers: HashMap::default(),
        }
    }

    /// This host's name (`host.name`).
    pub fn host_name(&self) -> &Arc<str> {
        &self.host_name
    }

    /// Attaches the identity of the call's workload, and of its server when that is local.
    pub fn enrich(&mut self, call: ApiCall) -> EnrichedCall {
        let workload = self.workload(call.connection.pid, &call.connection.comm);
        let peer = match call.side {
            Side::Server => {
                if let Some(local) = call.connection.local {
                    self.served(local, &workload);
                }
                None
            }
            Side::Client => call.connection.peer.and_then(|peer| self.server_at(peer)),
        };
        EnrichedCall {
            call,
            workload,
            peer,
            host_name: Arc::clone(&self.host_name),
        }
    }

    /// `workload` served a call on `address`.
    fn served(&mut self, address: SocketAddr, workload: &Workload) {
        let known = self.servers.get(&address).is_some_and(|service| {
            service.name == workload.service_name
                && service.namespace.as_deref() == workload.service_namespace()
        });
        if known {
            return;
        }
        if self.servers.len() >= MAX_WORKLOADS {
            self.servers.clear();
        }
        let service = PeerService {
            name: workload.service_name.clone(),
            namespace: workload.service_namespace().map(str::to_owned),
        };
        self.servers.insert(address, Arc::new(service));
    }

    /// The service serving `address`: a process seen serving it, else a pod of this node
    /// with its IP.
    fn server_at(&self, address: SocketAddr) -> Option<Arc<PeerService>> {
        if let Some(service) = self.servers.get(&address) {
            return Some(Arc::clone(service));
        }
        let pod = self.pods.as_ref()?.lookup_ip(address.ip())?;
        Some(Arc::new(PeerService {
            name: pod.service_name().to_owned(),
            namespace: Some(pod.namespace.clone()),
        }))
    }

    /// The workload of `pid`, kept while neither its process identity nor its pod changes
    /// (the same `Arc` then also keys its exported resource).
    pub fn workload(&mut self, pid: u32, comm: &str) -> Arc<Workload> {
        let process = self.processes.get_or_read(pid, comm);
        let kubernetes = self.pods.as_ref().and_then(|pods| {
            pods.lookup(process.container_id.as_deref(), process.pod_uid.as_deref())
        });
        if let Some(known) = self.workloads.get(&pid) {
            let same_pod = match (&known.kubernetes, &kubernetes) {
                (Some(known), Some(now)) => Arc::ptr_eq(known, now),
                (known, now) => known.is_none() && now.is_none(),
            };
            if Arc::ptr_eq(&known.process, &process) && same_pod {
                return Arc::clone(known);
            }
        }
        if self.workloads.len() >= MAX_WORKLOADS {
            self.workloads.clear();
        }
        let workload = Arc::new(Workload::new(process, kubernetes));
        self.workloads.insert(pid, Arc::clone(&workload));
        workload
    }
}

/// This host's name, as the kernel has it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_named_after_its_executable() {
        let registry = ProcessRegistry::default();
        let identity = registry.get_or_read(std::process::id(), "ignored");
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            identity.executable_name,
            exe.file_name().unwrap().to_str().unwrap()
        );
        let workload = Workload::new(identity, None);
        assert_eq!(workload.service_name, workload.process.executable_name);
        assert!(!host_name().is_empty());
    }

    #[test]
    fn exec_of_a_gone_process_resolves_the_path_it_ran() {
        let registry = ProcessRegistry::default();
        let exe = std::env::current_exe().unwrap();
        registry.exec(u32::MAX, exe.to_str());
        let identity = registry.get_or_read(u32::MAX, "comm");
        assert_eq!(identity.executable_path.as_deref(), exe.to_str());
        assert_eq!(
            identity.executable_name,
            exe.file_name().unwrap().to_str().unwrap()
        );
    }

    #[test]
    fn client_calls_name_the_local_service_that_served_them() {
        let registry = Arc::new(ProcessRegistry::default());
        let mut enricher = Enricher::new(Arc::clone(&registry), None);
        let server = enricher.workload(std::process::id(), "server");
        let address: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(enricher.server_at(address), None);
        enricher.served(address, &server);
        let peer = enricher
            .server_at(address)
            .expect("the local server's name");
        assert_eq!(peer.name, server.service_name);
        assert_eq!(peer.namespace, None);
        assert_eq!(enricher.server_at("10.1.2.3:8080".parse().unwrap()), None);
    }

    #[test]
    fn a_gone_process_falls_back_to_its_thread_name() {
        let identity = ProcessRegistry::default().get_or_read(u32::MAX, "curl");
        assert_eq!(identity.executable_name, "curl");
        assert_eq!(identity.executable_path, None);
    }

    #[test]
    fn exec_notices_replace_the_old_image_identity() {
        let registry = Arc::new(ProcessRegistry::default());
        let old = registry.get_or_read(u32::MAX - 1, "sh");
        assert_eq!(old.executable_name, "sh");
        let notices = start_identity_reader(&registry, Vec::new()).unwrap();
        let exe = std::env::current_exe().unwrap();
        notices.exec(u32::MAX - 1, exe.to_str().map(str::to_owned));
        // Forgotten at once, so no call is named after the old image meanwhile.
        let new = registry.get_or_read(u32::MAX - 1, "unused");
        assert_ne!(new.executable_name, "sh");
    }
}
