//! Enrichment: who made or served a call: the process (executable, command line, user,
//! container, the service name its own OpenTelemetry configuration gives it) and the host.

mod process;

use std::{collections::HashMap, sync::Arc};

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
}

/// Processes remembered at once; beyond it the cache starts over (identities are cheap to read
/// again).
const MAX_PROCESSES: usize = 16_384;

/// Looks up and caches process identities.
#[derive(Debug)]
pub struct Enricher {
    host_name: Arc<str>,
    processes: HashMap<u32, Arc<ProcessIdentity>>,
    users: process::UserNames,
}

impl Default for Enricher {
    fn default() -> Self {
        Self::new()
    }
}

impl Enricher {
    /// An enricher for this host.
    pub fn new() -> Self {
        Self {
            host_name: host_name().into(),
            processes: HashMap::new(),
            users: process::UserNames::default(),
        }
    }

    /// This host's name (`host.name`).
    pub fn host_name(&self) -> &Arc<str> {
        &self.host_name
    }

    /// The identity of `pid`; `comm` names it if its executable can no longer be read.
    pub fn process(&mut self, pid: u32, comm: &str) -> Arc<ProcessIdentity> {
        if let Some(identity) = self.processes.get(&pid) {
            return Arc::clone(identity);
        }
        let identity = process::read(pid, None, comm, &mut self.users);
        self.remember(pid, identity)
    }

    /// Attaches the identity of the call's process.
    pub fn enrich(&mut self, call: ApiCall) -> EnrichedCall {
        let process = self.process(call.connection.pid, &call.connection.comm);
        EnrichedCall {
            call,
            process,
            host_name: Arc::clone(&self.host_name),
        }
    }

    /// `pid` exec'd `path`: its identity is read now, while the process most likely still
    /// runs, so that a short-lived client is still named after its executable.
    pub fn exec(&mut self, pid: u32, path: Option<&str>) {
        self.processes.remove(&pid);
        let fallback = path.and_then(|path| path.rsplit('/').next()).unwrap_or("");
        let mut identity = process::read(pid, None, fallback, &mut self.users);
        if identity.executable_path.is_none() {
            // Gone already: resolve the path it exec'd (symlinks such as python3 -> python3.11)
            // as seen from this host.
            if let Some(resolved) = path.and_then(|path| std::fs::canonicalize(path).ok()) {
                identity = process::read(pid, resolved.to_str(), fallback, &mut self.users);
            }
        }
        log::debug!(
            "process {pid} exec'd {path:?}: named {:?}",
            identity.executable_name
        );
        if !identity.executable_name.is_empty() {
            self.remember(pid, identity);
        }
    }

    fn remember(&mut self, pid: u32, identity: ProcessIdentity) -> Arc<ProcessIdentity> {
        if self.processes.len() >= MAX_PROCESSES {
            self.processes.clear();
        }
        let identity = Arc::new(identity);
        self.processes.insert(pid, Arc::clone(&identity));
        identity
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
        let mut enricher = Enricher::new();
        let identity = enricher.process(std::process::id(), "ignored");
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            identity.executable_name,
            exe.file_name().unwrap().to_str().unwrap()
        );
        assert_eq!(identity.service_name, identity.executable_name);
        assert!(!enricher.host_name().is_empty());
    }

    #[test]
    fn exec_of_a_gone_process_resolves_the_path_it_ran() {
        let mut enricher = Enricher::new();
        let exe = std::env::current_exe().unwrap();
        enricher.exec(u32::MAX, exe.to_str());
        let identity = enricher.process(u32::MAX, "comm");
        assert_eq!(identity.executable_path.as_deref(), exe.to_str());
        assert_eq!(
            identity.executable_name,
            exe.file_name().unwrap().to_str().unwrap()
        );
    }

    #[test]
    fn a_gone_process_falls_back_to_its_thread_name() {
        let identity = Enricher::new().process(u32::MAX, "curl");
        assert_eq!(identity.executable_name, "curl");
        assert_eq!(identity.executable_path, None);
    }
}
