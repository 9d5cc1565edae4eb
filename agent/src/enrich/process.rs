//! What `/proc` tells about a process: its executable and command, user, container and the
//! service name its own OpenTelemetry configuration gives it.

use std::collections::HashMap;

use super::{ProcessIdentity, cgroup};
use crate::digest::sha256_hex_prefix;

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
    let cgroups = std::fs::read_to_string(format!("{proc}/cgroup")).unwrap_or_default();
    let cgroup_path = cgroup::v2_path(&cgroups);
    let environment = read_environ(&proc);
    let user_id = read_user_id(&proc);
    let cmdline = std::fs::read(format!("{proc}/cmdline")).ok();
    ProcessIdentity {
        pid,
        otel_service_name: service_name_from_environment(&environment),
        command: cmdline.as_deref().and_then(command),
        command_line_digest: cmdline
            .as_deref()
            .map(|cmdline| sha256_hex_prefix(cmdline, 6)),
        user_name: user_id.and_then(|uid| users.name(uid)),
        user_id,
        container_id: cgroup::container_id(&cgroups).map(str::to_owned),
        pod_uid: cgroup::pod_uid(&cgroups),
        cgroup_path: cgroup_path.map(str::to_owned),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(
            identity.cgroup_path.is_some(),
            "cgroup v2 path of this process"
        );
    }
}
