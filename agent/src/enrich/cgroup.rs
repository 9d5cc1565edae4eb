//! What a process's cgroups (`/proc/PID/cgroup`) say about it: the container and Kubernetes
//! pod it runs in, and its cgroup v2 path, which the selection rules match.

use std::os::fd::AsRawFd;

/// Moves the agent into the host's cgroup namespace when it runs in a namespace of its own (a
/// Kubernetes pod on cgroup v2): there, every host process's `/proc/PID/cgroup` reads
/// `0::/../..`, which names no container and no cgroup. With the host's PID namespace, PID 1
/// is the host's init. Returns whether it moved.
pub fn join_host_namespace() -> std::io::Result<bool> {
    let init = std::fs::read_to_string("/proc/1/cgroup")?;
    if !v2_path(&init).is_some_and(|path| path.starts_with("/..")) {
        return Ok(false);
    }
    let namespace = std::fs::File::open("/proc/1/ns/cgroup")?;
    // SAFETY: setns on a namespace fd we own; it changes only this process's cgroup view.
    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWCGROUP) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(true)
}

/// The process's cgroup v2 path (the `0::` line of `/proc/PID/cgroup`).
pub fn v2_path(cgroup: &str) -> Option<&str> {
    cgroup.lines().find_map(|line| line.strip_prefix("0::"))
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
}
