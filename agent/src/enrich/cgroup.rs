//! What a process's cgroups (`/proc/PID/cgroup`) say about it: the container and Kubernetes
//! pod it runs in, and its cgroup v2 path and id, which the selection rules and the kernel's
//! cgroup filter use.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// Where this host mounts the cgroup v2 hierarchy: `/sys/fs/cgroup` on unified hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones (cgroup v1 controllers beside a v2 tree), from
/// `/proc/self/mountinfo`. `None` without cgroup v2.
pub fn v2_mount() -> Option<&'static Path> {
    static MOUNT: OnceLock<Option<PathBuf>> = OnceLock::new();
    MOUNT
        .get_or_init(|| {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
            cgroup2_mount_point(&mountinfo).map(PathBuf::from)
        })
        .as_deref()
}

/// The mount point of the first `cgroup2` file system in a mountinfo text: fields are
/// `id parent major:minor root mount-point options... - fstype source options`.
fn cgroup2_mount_point(mountinfo: &str) -> Option<&str> {
    mountinfo.lines().find_map(|line| {
        let (mount, filesystem) = line.split_once(" - ")?;
        (filesystem.split_whitespace().next() == Some("cgroup2"))
            .then(|| mount.split_whitespace().nth(4))
            .flatten()
    })
}

/// The process's cgroup v2 path (the `0::` line of `/proc/PID/cgroup`).
pub fn v2_path(cgroup: &str) -> Option<&str> {
    cgroup.lines().find_map(|line| line.strip_prefix("0::"))
}

/// The cgroup v2 id of a cgroup path: the inode of its directory, which is what the kernel's
/// `bpf_get_current_cgroup_id` returns.
pub fn id(path: &str) -> Option<u64> {
    let dir = v2_mount()?.join(path.trim_start_matches('/'));
    std::fs::metadata(dir).ok().map(|metadata| metadata.ino())
}

/// The cgroup paths of a `/proc/PID/cgroup` (`hierarchy:controllers:path` lines), v1 and v2.
fn paths(cgroup: &str) -> impl Iterator<Item = &str> {
    cgroup.lines().filter_map(|line| line.splitn(3, ':').nth(2))
}

/// The container id in a `/proc/PID/cgroup`: the 64-hex-digit name the runtimes give a
/// container's cgroup, under cgroup v1 or v2, with the systemd or cgroupfs driver:
/// `docker-ID.scope`, `cri-containerd-ID.scope`, `crio-ID.scope`, `libpod-ID.scope`,
/// `/docker/ID`, `/kubepods/.../podUID/ID`. The last one on the innermost path wins.
pub fn container_id(cgroup: &str) -> Option<&str> {
    paths(cgroup)
        .flat_map(|path| path.rsplit('/'))
        .find_map(|segment| {
            let name = segment.strip_suffix(".scope").unwrap_or(segment);
            let id = name.rsplit(['-', ':']).next()?;
            (id.len() == 64 && id.bytes().all(|byte| byte.is_ascii_hexdigit())).then_some(id)
        })
}

/// The Kubernetes pod UID in a `/proc/PID/cgroup`: the kubelet names each pod's cgroup
/// `pod<UID>` (cgroupfs driver) or `kubepods-<class>-pod<UID with _ for ->.slice` (systemd
/// driver).
pub fn pod_uid(cgroup: &str) -> Option<String> {
    paths(cgroup)
        .flat_map(|path| path.split('/'))
        .find_map(|segment| {
            let name = segment.strip_suffix(".slice").unwrap_or(segment);
            let uid = name
                .strip_prefix("pod")
                .or_else(|| name.rsplit_once("-pod").map(|(_, uid)| uid))?
                .replace('_', "-");
            let is_uid = uid.len() == 36
                && uid.char_indices().all(|(i, c)| match i {
                    8 | 13 | 18 | 23 => c == '-',
                    _ => c.is_ascii_hexdigit(),
                });
            is_uid.then_some(uid)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";

    #[test]
    fn finds_the_container_id_of_every_runtime_layout() {
        let layouts = [
            // cgroup v2, systemd driver.
            format!("0::/system.slice/docker-{ID}.scope"),
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice/cri-containerd-{ID}.scope"
            ),
            format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podx.slice/crio-{ID}.scope"
            ),
            format!(
                "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
            ),
            format!("0::/machine.slice/libpod-{ID}.scope"),
            // cgroup v2, cgroupfs driver.
            format!("0::/kubepods/burstable/pod1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d/{ID}"),
            // cgroup v1.
            format!("12:memory:/docker/{ID}\n11:cpu,cpuacct:/docker/{ID}\n0::/"),
            format!(
                "4:pids:/kubepods/besteffort/podabc/{ID}\n1:name=systemd:/kubepods/besteffort/podabc/{ID}"
            ),
            // containerd outside Kubernetes (cgroupfs): namespace and id.
            format!("0::/default/{ID}"),
        ];
        for cgroup in &layouts {
            assert_eq!(container_id(cgroup), Some(ID), "{cgroup}");
        }
    }

    #[test]
    fn finds_the_pod_uid_of_both_cgroup_drivers() {
        let uid = "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d";
        for cgroup in [
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice/cri-containerd-{ID}.scope"
            ),
            format!(
                "0::/kubepods.slice/kubepods-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice/crio-{ID}.scope"
            ),
            format!("0::/kubepods/burstable/pod{uid}/{ID}"),
            format!("4:pids:/kubepods/besteffort/pod{uid}/{ID}"),
        ] {
            assert_eq!(pod_uid(&cgroup).as_deref(), Some(uid), "{cgroup}");
        }
        for cgroup in [
            format!("0::/system.slice/docker-{ID}.scope"),
            "0::/kubepods/burstable/podnotauid/x".to_owned(),
            "0::/init.scope".to_owned(),
        ] {
            assert_eq!(pod_uid(&cgroup), None, "{cgroup}");
        }
    }

    #[test]
    fn host_processes_have_no_container_id() {
        for cgroup in [
            "0::/init.scope",
            "0::/system.slice/nginx.service",
            "0::/user.slice/user-0.slice/session-3.scope",
            "12:memory:/\n0::/",
            "",
            // Not 64 hex digits.
            "0::/system.slice/docker-abc.scope",
        ] {
            assert_eq!(container_id(cgroup), None, "{cgroup}");
        }
    }

    #[test]
    fn finds_the_cgroup2_mount_of_unified_and_hybrid_hosts() {
        let unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount_point(unified), Some("/sys/fs/cgroup"));
        let hybrid = "25 23 0:22 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755\n\
            26 25 0:23 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
            27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(cgroup2_mount_point(hybrid), Some("/sys/fs/cgroup/unified"));
        assert_eq!(
            cgroup2_mount_point("27 25 0:24 / /x rw - cgroup cgroup rw\n"),
            None
        );
    }

    #[test]
    fn this_process_has_a_cgroup_id() {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = v2_path(&cgroups).expect("a cgroup v2 line");
        assert!(id(path).is_some(), "{path} under {:?}", v2_mount());
    }
}
