//! Hot reload: the active rule set is shared; a thread watches the user's pack files (and
//! SIGHUP) and swaps in a new set only once it has loaded whole. A pack that fails keeps the
//! old set active.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    path::PathBuf,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use log::{error, info};

use super::ActiveRules;

/// How often the pack files are read for changes. ConfigMap updates swap symlinks, which
/// inotify on the file would miss, so the contents are compared.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often the thread looks at its stop and reload flags.
const TICK: Duration = Duration::from_millis(100);

/// The rule set in force, shared by the analysis stage and the watcher.
#[derive(Debug)]
pub struct RuleHandle {
    current: RwLock<Arc<ActiveRules>>,
    /// Bumped on every swap, so readers re-read only when it moved.
    generation: AtomicU64,
    /// Reloads rejected since start.
    rejected: AtomicU64,
}

impl RuleHandle {
    /// A handle holding `rules`.
    pub fn new(rules: ActiveRules) -> Arc<Self> {
        info!("{}", rules.summary());
        Arc::new(Self {
            current: RwLock::new(Arc::new(rules)),
            generation: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    /// The rule set in force.
    pub fn current(&self) -> Arc<ActiveRules> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Changes so far: a reader holding the set of an older generation should fetch it again.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Reloads rejected (bad packs) since start.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Loads `files` again; swaps the set in when it loads and differs, keeps the old one
    /// otherwise.
    pub fn reload(&self, files: &[PathBuf]) {
        let active = self.current();
        match ActiveRules::load(files) {
            Ok(rules) if rules.audit == active.audit => {}
            Ok(rules) => {
                // Logged once in force: whoever reads the line may rely on the new rules.
                let summary = rules.summary();
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(rules);
                self.generation.fetch_add(1, Ordering::AcqRel);
                info!("rule packs changed: {summary}");
            }
            Err(reason) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                error!(
                    "rule pack rejected, the active rules stay ({}, sha256 {}): {reason}",
                    active.audit.version, active.audit.sha256
                );
            }
        }
    }
}

/// Watches `files` until `stop`, reloading on a change of their contents and whenever
/// `reload` is set (by SIGHUP).
pub fn spawn(
    files: Vec<PathBuf>,
    handle: Arc<RuleHandle>,
    reload: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("rule-watcher".into())
        .spawn(move || {
            let mut seen = fingerprint(&files);
            let mut polled = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(TICK);
                let asked = reload.swap(false, Ordering::Relaxed);
                if !asked && polled.elapsed() < POLL_INTERVAL {
                    continue;
                }
                polled = Instant::now();
                let now = fingerprint(&files);
                if asked || now != seen {
                    seen = now;
                    handle.reload(&files);
                }
            }
        })
}

/// A hash of every file's contents (a missing file hashes as such), to notice edits.
fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for file in files {
        std::fs::read(file).ok().hash(&mut hasher);
    }
    hasher.finish()
}
