//! Selection: which workloads are captured. The configuration's include and exclude rules are
//! matched against each process's identity (executable, cgroup, Kubernetes pod) when the agent
//! starts and whenever a process execs, and the verdicts go to the kernel's filter map, so an
//! excluded process costs one map lookup per call and none of its bytes reach userspace.
//! Port rules are handed to the kernel as they are.

mod rules;
mod stdio_commands;

pub use rules::{SelectionRule, SelectionSettings};
pub use stdio_commands::StdioSelection;

use std::{
    sync::{Arc, mpsc},
    time::Duration,
};

use agent_common::Verdict;
use globset::GlobMatcher;

use crate::{
    capture::{KernelSelection, ProcessVerdicts, running_pids},
    enrich::{
        ProcessIdentity, ProcessRegistry,
        kubernetes::{PodIdentity, PodIndex},
    },
};

/// How often every process is matched again: a pod's metadata may arrive after its processes
/// started, and an exec whose notice was dropped (queue full) must not leave its process held.
const RESCAN_INTERVAL: Duration = Duration::from_secs(5);

/// A process rule, compiled.
#[derive(Debug, Clone)]
struct ProcessRule {
    namespace: Option<GlobMatcher>,
    labels: Vec<(String, String)>,
    executable: Option<(GlobMatcher, bool)>,
    cgroup: Option<GlobMatcher>,
}

impl ProcessRule {
    fn new(rule: &SelectionRule) -> Self {
        Self {
            namespace: rule.namespace.as_ref().map(|glob| glob.compile_matcher()),
            labels: rule
                .labels
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            executable: rule
                .executable
                .as_ref()
                .map(|glob| (glob.compile_matcher(), glob.glob().contains('/'))),
            cgroup: rule.cgroup.as_ref().map(|glob| glob.compile_matcher()),
        }
    }

    /// Every field the rule sets matches; pod fields never match a process outside a known
    /// pod.
    fn matches(&self, process: &ProcessIdentity, pod: Option<&PodIdentity>) -> bool {
        let executable = self.executable.as_ref().is_none_or(|(glob, full_path)| {
            if *full_path {
                process
                    .executable_path
                    .as_deref()
                    .is_some_and(|path| glob.is_match(path))
            } else {
                glob.is_match(&process.executable_name)
            }
        });
        let cgroup = self.cgroup.as_ref().is_none_or(|glob| {
            process
                .cgroup_path
                .as_deref()
                .is_some_and(|path| glob.is_match(path))
        });
        let namespace = self
            .namespace
            .as_ref()
            .is_none_or(|glob| pod.is_some_and(|pod| glob.is_match(&pod.namespace)));
        let labels = self.labels.iter().all(|(key, value)| {
            pod.and_then(|pod| pod.labels.get(key))
                .is_some_and(|found| found == value)
        });
        executable && cgroup && namespace && labels
    }
}

/// The selection rules, compiled.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    include: Vec<ProcessRule>,
    exclude: Vec<ProcessRule>,
    include_ports: Vec<u16>,
    exclude_ports: Vec<u16>,
}

impl Selection {
    /// Compiles the configuration's rules (already checked when it was read).
    pub fn new(config: &SelectionSettings) -> Self {
        let split = |rules: &[SelectionRule]| -> (Vec<ProcessRule>, Vec<u16>) {
            let processes = rules
                .iter()
                .filter(|rule| rule.port.is_none())
                .map(ProcessRule::new)
                .collect();
            let ports = rules.iter().filter_map(|rule| rule.port).collect();
            (processes, ports)
        };
        let (include, include_ports) = split(&config.include);
        let (exclude, exclude_ports) = split(&config.exclude);
        Self {
            include,
            exclude,
            include_ports,
            exclude_ports,
        }
    }

    /// Whether processes are matched one by one (any process rule).
    pub fn per_process(&self) -> bool {
        !self.include.is_empty() || !self.exclude.is_empty()
    }

    /// Whether `process` (in `pod`, if known) is captured.
    pub fn verdict(&self, process: &ProcessIdentity, pod: Option<&PodIdentity>) -> Verdict {
        let included =
            self.include.is_empty() || self.include.iter().any(|rule| rule.matches(process, pod));
        let excluded = self.exclude.iter().any(|rule| rule.matches(process, pod));
        if included && !excluded {
            Verdict::Trace
        } else {
            Verdict::Skip
        }
    }

    /// What the kernel programs are told, with the verdicts of `processes` (those running
    /// at start).
    pub fn kernel(&self, processes: Vec<(u32, Verdict)>) -> KernelSelection {
        let mut ports: Vec<(u16, Verdict)> = self
            .include_ports
            .iter()
            .map(|port| (*port, Verdict::Trace))
            .collect();
        // Excluding wins: later entries replace earlier ones in the map.
        ports.extend(self.exclude_ports.iter().map(|port| (*port, Verdict::Skip)));
        KernelSelection {
            per_process: self.per_process(),
            unlisted_processes: if self.include.is_empty() {
                Verdict::Trace
            } else {
                Verdict::Skip
            },
            processes,
            ports,
            unlisted_ports: if self.include_ports.is_empty() {
                Verdict::Trace
            } else {
                Verdict::Skip
            },
        }
    }
}

/// Matches processes against the rules and records the verdicts in the kernel.
#[derive(Debug)]
pub struct Selector {
    selection: Selection,
    processes: Arc<ProcessRegistry>,
    pods: Option<Arc<PodIndex>>,
    verdicts: ProcessVerdicts,
}

impl Selector {
    /// A selector writing to `verdicts`.
    pub fn new(
        selection: Selection,
        processes: Arc<ProcessRegistry>,
        pods: Option<Arc<PodIndex>>,
        verdicts: ProcessVerdicts,
    ) -> Self {
        Self {
            selection,
            processes,
            pods,
            verdicts,
        }
    }

    /// The verdict of one process, recorded.
    pub fn select(&mut self, process: &ProcessIdentity) {
        let verdict = verdict_of(&self.selection, self.pods.as_deref(), process);
        self.verdicts.set(process.pid, verdict);
    }

    /// Matches every running process again.
    pub fn rescan(&mut self) {
        for pid in running_pids() {
            let process = self.processes.get_or_read(pid, "");
            self.select(&process);
        }
    }

    /// Runs on the calling thread: each exec'd process (from `execs`, once its identity is
    /// read) is matched at once, and every process again every few seconds. Returns when
    /// `execs` closes.
    pub fn run(mut self, execs: mpsc::Receiver<Arc<ProcessIdentity>>) {
        loop {
            match execs.recv_timeout(RESCAN_INTERVAL) {
                Ok(process) => self.select(&process),
                Err(mpsc::RecvTimeoutError::Timeout) => self.rescan(),
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

fn verdict_of(
    selection: &Selection,
    pods: Option<&PodIndex>,
    process: &ProcessIdentity,
) -> Verdict {
    let pod = pods
        .and_then(|pods| pods.lookup(process.container_id.as_deref(), process.pod_uid.as_deref()));
    selection.verdict(process, pod.as_ref().map(|container| &*container.pod))
}

/// The verdicts of the processes running now, read before capture starts.
pub fn initial_verdicts(
    selection: &Selection,
    processes: &ProcessRegistry,
    pods: Option<&PodIndex>,
) -> Vec<(u32, Verdict)> {
    if !selection.per_process() {
        return Vec::new();
    }
    let own = std::process::id();
    running_pids()
        .filter(|pid| *pid != own)
        .map(|pid| {
            let process = processes.get_or_read(pid, "");
            (pid, verdict_of(selection, pods, &process))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Config;

    fn selection(yaml: &str) -> Selection {
        let config = Config::parse(yaml, std::path::Path::new("t.yaml")).unwrap();
        Selection::new(&config.selection)
    }

    fn process(path: &str, cgroup: &str) -> ProcessIdentity {
        ProcessIdentity {
            pid: 7,
            executable_name: path.rsplit('/').next().unwrap().into(),
            executable_path: Some(path.into()),
            cgroup_path: Some(cgroup.into()),
            ..Default::default()
        }
    }

    fn pod(namespace: &str, labels: &[(&str, &str)]) -> PodIdentity {
        PodIdentity {
            namespace: namespace.into(),
            name: "p".into(),
            uid: "u".into(),
            node_name: None,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            workload: None,
            declared_service_name: None,
        }
    }

    #[test]
    fn exclusions_by_executable_and_cgroup() {
        let rules = selection(
            "selection:\n  exclude:\n    - executable: sshd\n    - executable: \"/usr/lib/*/worker\"\n    - cgroup: \"/system.slice/*\"\n",
        );
        assert!(rules.per_process());
        let verdict = |path, cgroup| rules.verdict(&process(path, cgroup), None);
        assert_eq!(verdict("/usr/sbin/sshd", "/user.slice"), Verdict::Skip);
        assert_eq!(verdict("/usr/lib/x/worker", "/user.slice"), Verdict::Skip);
        assert_eq!(
            verdict("/usr/bin/python3", "/system.slice/cron.service"),
            Verdict::Skip
        );
        assert_eq!(verdict("/usr/bin/python3", "/user.slice"), Verdict::Trace);
        let kernel = rules.kernel(vec![(1, Verdict::Skip)]);
        assert_eq!(kernel.unlisted_processes, Verdict::Trace);
        assert!(kernel.per_process);
    }

    #[test]
    fn inclusions_by_namespace_and_labels_need_the_pod() {
        let rules = selection(
            "selection:\n  include:\n    - namespace: \"shop-*\"\n      labels: {tier: web}\n  exclude:\n    - labels: {debug: \"true\"}\n",
        );
        let nginx = process("/usr/sbin/nginx", "/kubepods");
        assert_eq!(rules.verdict(&nginx, None), Verdict::Skip);
        let web = pod("shop-eu", &[("tier", "web")]);
        assert_eq!(rules.verdict(&nginx, Some(&web)), Verdict::Trace);
        let debug = pod("shop-eu", &[("tier", "web"), ("debug", "true")]);
        assert_eq!(rules.verdict(&nginx, Some(&debug)), Verdict::Skip);
        assert_eq!(
            rules.verdict(&nginx, Some(&pod("billing", &[("tier", "web")]))),
            Verdict::Skip
        );
        assert_eq!(rules.kernel(Vec::new()).unlisted_processes, Verdict::Skip);
    }

    #[test]
    fn port_rules_go_to_the_kernel_with_exclusions_winning() {
        let rules = selection(
            "selection:\n  include:\n    - port: 8080\n    - port: 22\n  exclude:\n    - port: 22\n",
        );
        assert!(!rules.per_process());
        let kernel = rules.kernel(Vec::new());
        assert_eq!(
            kernel.ports,
            [
                (8080, Verdict::Trace),
                (22, Verdict::Trace),
                (22, Verdict::Skip)
            ]
        );
        assert_eq!(kernel.unlisted_ports, Verdict::Skip);
        assert_eq!(selection("").kernel(Vec::new()), KernelSelection::default());
    }
}
