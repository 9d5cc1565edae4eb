//! What `/proc` tells about a process: its executable and command, user, container and the
//! service name its own OpenTelemetry configuration gives it.

use std::{collections::HashMap, os::unix::fs::MetadataExt, path::Path};

use super::ProcessIdentity;

/// Most bytes of `/proc/PID/environ` read when looking for the OpenTelemetry variables.
const MAX_ENVIRON: u64 = 256 * 1024;

/// User ids remembered at once; beyond it the cache starts over.
const MAX_USERS: usize = 4096;

/// User names by uid, read from the host's `/etc/passwd` once per uid rather than once per
/// process (identities are read at every exec on the host).
#[derive(Debug, Default)]
pub(super) struct UserNames(HashMap<u32, Option<String>>);

impl UserNames {
    /// The name of `uid`, when the host knows it.
    fn name(&mut self, uid: u32) -> Option<String> {
        if self.0.len() >= MAX_USERS {
            self.0.clear();
        }
        self.0.entry(uid).or_insert_with(|| user_name(uid)).clone()
    }
}

/// Reads the identity of `pid` from `/proc`; `fallback` names it when its executable cannot be
/// read (it is gone), `path` is the executable when known otherwise.
pub(super) fn read(
    pid: u32,
    path: Option<&str>,
    fallback: &str,
    users: &mut UserNames,
) -> ProcessIdentity {
    let proc = format!("/proc/{pid}");
    let path = path.map(str::to_owned).or_else(|| {
        std::fs::read_link(format!("{proc}/exe"))
            .ok()
            .and_then(|path| path.to_str().map(str::to_owned))
    });
    let executable_name = path
        .as_deref()
        .and_then(|path| path.rsplit('/').next())
        .filter(|name| !name.is_empty())
        .unwrap_or(fallback)
        .to_owned();
    let cgroup = std::fs::read_to_string(format!("{proc}/cgroup")).unwrap_or_default();
    let cgroup_path = cgroup_v2_path(&cgroup);
    let environment = read_environ(&proc);
    let service_name =
        service_name_from_environment(&environment).unwrap_or_else(|| executable_name.clone());
    let user_id = read_user_id(&proc);
    ProcessIdentity {
        pid,
        service_name,
        command: std::fs::read(format!("{proc}/cmdline"))
            .ok()
            .and_then(|cmdline| command(&cmdline)),
        user_name: user_id.and_then(|uid| users.name(uid)),
        user_id,
        container_id: container_id(&cgroup).map(str::to_owned),
        pod_uid: pod_uid(&cgroup),
        cgroup_id: cgroup_path.and_then(cgroup_id),
        executable_name,
        executable_path: path,
    }
}

/// The user id that owns the process (the real uid of `/proc/PID/status`).
fn read_user_id(proc: &str) -> Option<u32> {
    let status = std::fs::read_to_string(format!("{proc}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The name of `uid` in the host's user database.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    })
}

/// The environment of the process, as `NAME=value` entries; empty when unreadable.
fn read_environ(proc: &str) -> Vec<u8> {
    use std::io::Read;
    let mut environ = Vec::new();
    if let Ok(file) = std::fs::File::open(format!("{proc}/environ")) {
        let _ = file.take(MAX_ENVIRON).read_to_end(&mut environ);
    }
    environ
}

/// The service name the process's own OpenTelemetry configuration gives it:
/// `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES` (as the SDKs read
/// them). Nothing else of the environment is kept: it holds secrets.
fn service_name_from_environment(environ: &[u8]) -> Option<String> {
    let variable = |name: &str| {
        environ.split(|byte| *byte == 0).find_map(|entry| {
            let value = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
            std::str::from_utf8(value).ok()
        })
    };
    let non_empty = |value: &str| Some(value.trim().to_owned()).filter(|value| !value.is_empty());
    variable("OTEL_SERVICE_NAME")
        .and_then(non_empty)
        .or_else(|| resource_attribute(variable("OTEL_RESOURCE_ATTRIBUTES")?, "service.name"))
}

/// The value of `key` in an `OTEL_RESOURCE_ATTRIBUTES` list (`k1=v1,k2=v2`, values
/// percent-encoded).
fn resource_attribute(list: &str, key: &str) -> Option<String> {
    list.split(',').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        if name.trim() != key {
            return None;
        }
        let decoded: String = form_urlencoded::parse(format!("v={}", value.trim()).as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())?;
        Some(decoded).filter(|value| !value.is_empty())
    })
}

/// The command the process runs: the first argument of its `/proc/PID/cmdline`. The other
/// arguments are not read: they carry request bodies and credentials (`curl -d`, `-H
/// "Authorization: ..."`, `--password`), which must never leave the host.
fn command(cmdline: &[u8]) -> Option<String> {
    let first = cmdline.split(|byte| *byte == 0).next()?;
    (!first.is_empty()).then(|| String::from_utf8_lossy(first).into_owned())
}

/// The process's cgroup v2 path (the `0::` line of `/proc/PID/cgroup`).
fn cgroup_v2_path(cgroup: &str) -> Option<&str> {
    cgroup.lines().find_map(|line| line.strip_prefix("0::"))
}

/// The cgroup v2 id of a cgroup path: the inode of its directory, which is what the kernel's
/// `bpf_get_current_cgroup_id` returns.
fn cgroup_id(path: &str) -> Option<u64> {
    let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    std::fs::metadata(dir).ok().map(|metadata| metadata.ino())
}

/// The cgroup paths of a `/proc/PID/cgroup` (`hierarchy:controllers:path` lines), v1 and v2.
fn cgroup_paths(cgroup: &str) -> impl Iterator<Item = &str> {
    cgroup.lines().filter_map(|line| line.splitn(3, ':').nth(2))
}

/// The container id in a `/proc/PID/cgroup`: the 64-hex-digit name the runtimes give a
/// container's cgroup, under cgroup v1 or v2, with the systemd or cgroupfs driver:
/// `docker-ID.scope`, `cri-containerd-ID.scope`, `crio-ID.scope`, `libpod-ID.scope`,
/// `/docker/ID`, `/kubepods/.../podUID/ID`. The last one on the innermost path wins.
pub(super) fn container_id(cgroup: &str) -> Option<&str> {
    cgroup_paths(cgroup)
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
pub(super) fn pod_uid(cgroup: &str) -> Option<String> {
    cgroup_paths(cgroup)
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
    fn service_name_comes_from_the_process_environment() {
        let environ = |entries: &[&str]| entries.join("\0").into_bytes();
        let name = |entries: &[&str]| service_name_from_environment(&environ(entries));
        assert_eq!(
            name(&[
                "PATH=/bin",
                "OTEL_SERVICE_NAME=checkout",
                "OTEL_RESOURCE_ATTRIBUTES=service.name=other"
            ]),
            Some("checkout".into())
        );
        assert_eq!(
            name(&[
                "OTEL_RESOURCE_ATTRIBUTES=deployment.environment=prod, service.name=pay%20ments"
            ]),
            Some("pay ments".into())
        );
        assert_eq!(name(&["OTEL_SERVICE_NAME=", "HOME=/root"]), None);
        assert_eq!(
            name(&["MY_OTEL_SERVICE_NAME=x", "OTEL_SERVICE_NAMES=y"]),
            None
        );
        assert_eq!(name(&[]), None);
    }

    #[test]
    fn the_command_is_the_first_argument_only() {
        let cmdline = b"curl\0-H\0Authorization: Bearer abc\0-d\0{\"password\":\"x\"}\0";
        assert_eq!(command(cmdline).as_deref(), Some("curl"));
        assert_eq!(command(b""), None);
    }

    #[test]
    fn reads_this_process() {
        let identity = read(
            std::process::id(),
            None,
            "fallback",
            &mut UserNames::default(),
        );
        let exe = std::env::current_exe().unwrap();
        assert_eq!(identity.executable_path.as_deref(), exe.to_str());
        // SAFETY: getuid has no preconditions.
        assert_eq!(identity.user_id, Some(unsafe { libc::getuid() }));
        assert!(identity.command.is_some());
        assert!(identity.cgroup_id.is_some(), "cgroup v2 id of this process");
    }
}
