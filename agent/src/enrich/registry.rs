//! The identities of the host's processes, shared by the stages that name calls and the
//! thread that reads them from `/proc` as soon as a process execs: a short-lived client such
//! as curl has often exited before its first call reaches enrichment, and what `/proc` said
//! of it then is gone.

use std::sync::{Arc, Mutex, PoisonError, mpsc};

use foldhash::HashMap;

use super::{ProcessIdentity, process};

/// Processes remembered at once; beyond it the cache starts over (identities are cheap to read
/// again).
const MAX_PROCESSES: usize = 16_384;

/// Execs waiting for the identity reader; more are not read early (their identity is read at
/// their first call instead).
const EXEC_QUEUE: usize = 4096;

/// Process identities by pid.
#[derive(Debug, Default)]
pub struct ProcessRegistry {
    processes: Mutex<HashMap<u32, Arc<ProcessIdentity>>>,
    users: Mutex<process::UserNames>,
}

impl ProcessRegistry {
    /// The identity of `pid`, read from `/proc` unless known; `comm` names it if its
    /// executable can no longer be read.
    pub fn get_or_read(&self, pid: u32, comm: &str) -> Arc<ProcessIdentity> {
        if let Some(identity) = self.lock().get(&pid) {
            return Arc::clone(identity);
        }
        let identity = self.read(pid, None, comm);
        self.remember(identity)
    }

    /// `pid` exec'd `path`: its identity is read again, resolving `path` as seen from this
    /// host when the process is already gone; returns it unless nothing could be read.
    pub fn exec(&self, pid: u32, path: Option<&str>) -> Option<Arc<ProcessIdentity>> {
        self.forget(pid);
        let fallback = path.and_then(|path| path.rsplit('/').next()).unwrap_or("");
        let mut identity = self.read(pid, None, fallback);
        if identity.executable_path.is_none() {
            // Gone already: resolve the path it exec'd (symlinks such as python3 -> python3.11).
            if let Some(resolved) = path.and_then(|path| std::fs::canonicalize(path).ok()) {
                identity = self.read(pid, resolved.to_str(), fallback);
            }
        }
        log::debug!(
            "process {pid} exec'd {path:?}: named {:?}",
            identity.executable_name
        );
        (!identity.executable_name.is_empty()).then(|| self.remember(identity))
    }

    /// Drops what is known of `pid` (it exec'd: the identity of its old image must not name
    /// the new one's calls).
    pub fn forget(&self, pid: u32) {
        self.lock().remove(&pid);
    }

    fn read(&self, pid: u32, path: Option<&str>, fallback: &str) -> ProcessIdentity {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        process::read(pid, path, fallback, &mut users)
    }

    fn remember(&self, identity: ProcessIdentity) -> Arc<ProcessIdentity> {
        let identity = Arc::new(identity);
        let mut processes = self.lock();
        if processes.len() >= MAX_PROCESSES {
            processes.clear();
        }
        processes.insert(identity.pid, Arc::clone(&identity));
        identity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<ProcessIdentity>>> {
        self.processes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where the ring-buffer reader reports execs, the moment it decodes them.
#[derive(Debug, Clone)]
pub struct ExecNotices {
    registry: Arc<ProcessRegistry>,
    queue: mpsc::SyncSender<(u32, Option<String>)>,
}

impl ExecNotices {
    /// `pid` exec'd `path`: its old identity is dropped now, its new one read on the identity
    /// thread. Never blocks.
    pub fn exec(&self, pid: u32, path: Option<String>) {
        self.registry.forget(pid);
        let _ = self.queue.try_send((pid, path));
    }
}

/// Starts the thread that reads the identity of every process that execs, into `registry`,
/// and hands each to every one of `identified` (the selection rules, the stdio selection). It
/// ends when every [`ExecNotices`] is dropped.
pub fn start_identity_reader(
    registry: &Arc<ProcessRegistry>,
    identified: Vec<mpsc::Sender<Arc<ProcessIdentity>>>,
) -> std::io::Result<ExecNotices> {
    let (queue, execs) = mpsc::sync_channel::<(u32, Option<String>)>(EXEC_QUEUE);
    let reader = Arc::clone(registry);
    std::thread::Builder::new()
        .name("identity".into())
        .spawn(move || {
            for (pid, path) in execs {
                let Some(identity) = reader.exec(pid, path.as_deref()) else {
                    continue;
                };
                for receiver in &identified {
                    let _ = receiver.send(Arc::clone(&identity));
                }
            }
        })?;
    Ok(ExecNotices {
        registry: Arc::clone(registry),
        queue,
    })
}
