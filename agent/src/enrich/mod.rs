//! Enrichment: who made or served a call: the process (executable, command line, user,
//! container, the service name its own OpenTelemetry configuration gives it), the Kubernetes
//! pod and workload it belongs to, and the host.

pub mod cgroup;
pub mod kubernetes;
mod process;
mod registry;

pub use registry::{ExecNotices, ProcessRegistry, start_identity_reader};

use std::{collections::HashMap, sync::Arc};

use crate::calls::ApiCall;
use kubernetes::{ContainerIdentity, PodIndex};

/// A call with the identity of the workload that made or served it.
#[derive(Debug, Clone)]
pub struct EnrichedCall {
    /// The call.
    pub call: ApiCall,
    /// Who made or served it.
    pub workload: Arc<Workload>,
    /// This host's name.
    pub host_name: Arc<str>,
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
}

impl Enricher {
    /// An enricher for this host, naming processes from `processes` and, on Kubernetes nodes,
    /// pods from `pods`.
    pub fn new(processes: Arc<ProcessRegistry>, pods: Option<Arc<PodIndex>>) -> Self {
        Self {
            host_name: host_name().into(),
            processes,
            pods,
            workloads: HashMap::new(),
        }
    }

    /// This host's name (`host.name`).
    pub fn host_name(&self) -> &Arc<str> {
        &self.host_name
    }

    /// Attaches the identity of the call's workload.
    pub fn enrich(&mut self, call: ApiCall) -> EnrichedCall {
        let workload = self.workload(call.connection.pid, &call.connection.comm);
        EnrichedCall {
            call,
            workload,
            host_name: Arc::clone(&self.host_name),
        }
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
        let notices = start_identity_reader(&registry, None).unwrap();
        let exe = std::env::current_exe().unwrap();
        notices.exec(u32::MAX - 1, exe.to_str().map(str::to_owned));
        // Forgotten at once, so no call is named after the old image meanwhile.
        let new = registry.get_or_read(u32::MAX - 1, "unused");
        assert_ne!(new.executable_name, "sh");
    }
}
