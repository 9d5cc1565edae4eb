//! Cgroups made for one test in the host's cgroup v2 tree, named the way container runtimes
//! name theirs, so that processes started in them look to the agent like containers.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::random_hex;

/// The cgroup v2 mount point: `/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on
/// hybrid ones.
pub fn v2_mount() -> PathBuf {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    mountinfo
        .lines()
        .find_map(|line| {
            let (mount, filesystem) = line.split_once(" - ")?;
            (filesystem.split_whitespace().next() == Some("cgroup2"))
                .then(|| mount.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
        .expect("this host mounts cgroup v2")
}

/// A tree of cgroups under a test-owned top cgroup, removed (leaves first) on drop. Every
/// process put in it must be gone by then: drop the processes first.
pub struct TestCgroups {
    top: PathBuf,
    made: Vec<PathBuf>,
}

impl TestCgroups {
    /// A new empty top cgroup `apiscope-e2e-<random>` under the v2 mount.
    pub fn new() -> TestCgroups {
        let top = v2_mount().join(format!("apiscope-e2e-{}", random_hex(4)));
        fs::create_dir(&top).unwrap_or_else(|e| panic!("mkdir {}: {e}", top.display()));
        TestCgroups {
            made: vec![top.clone()],
            top,
        }
    }

    /// Creates `relative` (slash-separated, e.g. `system.slice/docker-ID.scope`) under the
    /// top cgroup and returns its path in the cgroup tree (what `/proc/PID/cgroup` shows).
    pub fn create(&mut self, relative: &str) -> String {
        let mut dir = self.top.clone();
        for part in relative.split('/') {
            dir.push(part);
            if !dir.exists() {
                fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                self.made.push(dir.clone());
            }
        }
        self.tree_path(&dir)
    }

    /// A command that moves itself into the cgroup `tree_path` (from [`TestCgroups::create`])
    /// and then execs `program` with `args`, so the program runs there from its first
    /// instruction.
    pub fn command_in(&self, tree_path: &str, program: &Path, args: &[&str]) -> Command {
        let procs = v2_mount()
            .join(tree_path.trim_start_matches('/'))
            .join("cgroup.procs");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("echo $$ > \"$0\" && exec \"$@\"")
            .arg(procs)
            .arg(program)
            .args(args);
        command
    }

    fn tree_path(&self, dir: &Path) -> String {
        let relative = dir.strip_prefix(v2_mount()).expect("under the mount");
        format!("/{}", relative.display())
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        for dir in self.made.iter().rev() {
            if let Err(error) = fs::remove_dir(dir) {
                eprintln!("cannot remove test cgroup {}: {error}", dir.display());
            }
        }
    }
}
