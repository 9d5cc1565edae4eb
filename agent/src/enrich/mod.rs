//! Enrichment: who made or served a call: the process (executable, command line, user,
//! container, the service name its own OpenTelemetry configuration gives it) and the host.

mod cgroup;
mod process;
mod registry;

pub use registry::{ExecNotices, ProcessRegistry, start_identity_reader};

use std::sync::Arc;

use crate::calls::ApiCall;

/// A call with the identity of the process that made or served it.
#[derive(Debug, Clone)]
pub struct EnrichedCall {
    /// The call.
    pub call: ApiCall,
    /// The process on this host.
    pub process: Arc<ProcessIdentity>,
    /// This host's name.
    pub host_name: Arc<str>,
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
    /// The name calls are reported under (`service.name`): the process's own
    /// `OTEL_SERVICE_NAME` (or `service.name` in its `OTEL_RESOURCE_ATTRIBUTES`), else the
    /// executable name.
    pub service_name: String,
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
    /// Its cgroup v2 id, as the kernel programs see it (for the selection rules).
    pub cgroup_id: Option<u64>,
    /// Its cgroup v2 path, e.g. `/system.slice/nginx.service` (for the selection rules).
    pub cgroup_path: Option<String>,
}

/// Names calls after their processes.
#[derive(Debug)]
pub struct Enricher {
    host_name: Arc<str>,
    processes: Arc<ProcessRegistry>,
}

impl Enricher {
    /// An enricher for this host, naming processes from `processes`.
    pub fn new(processes: Arc<ProcessRegistry>) -> Self {
        Self {
            host_name: host_name().into(),
            processes,
        }
    }

    /// This host's name (`host.name`).
    pub fn host_name(&self) -> &Arc<str> {
        &self.host_name
    }

    /// Attaches the identity of the call's process.
    pub fn enrich(&self, call: ApiCall) -> EnrichedCall {
        let process = self
            .processes
            .get_or_read(call.connection.pid, &call.connection.comm);
        EnrichedCall {
            call,
            process,
            host_name: Arc::clone(&self.host_name),
        }
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
        assert_eq!(identity.service_name, identity.executable_name);
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
        let notices = start_identity_reader(&registry).unwrap();
        let exe = std::env::current_exe().unwrap();
        notices.exec(u32::MAX - 1, exe.to_str().map(str::to_owned));
        // Forgotten at once, so no call is named after the old image meanwhile.
        let new = registry.get_or_read(u32::MAX - 1, "unused");
        assert_ne!(new.executable_name, "sh");
    }
}
