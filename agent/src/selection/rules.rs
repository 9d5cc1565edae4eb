//! The `selection:` section of the configuration: the include and exclude rules, checked
//! where they are written.

use std::collections::BTreeMap;

use globset::Glob;
use serde::{Deserialize, Serialize};

/// `selection:` section: a process is captured when it matches an `include` rule (or there
/// are none) and no `exclude` rule; a connection likewise by its ports.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SelectionSettings {
    /// Rules that select what is captured; none means everything.
    pub include: Vec<SelectionRule>,
    /// Rules that exclude what they match, even if included.
    pub exclude: Vec<SelectionRule>,
}

/// One selection rule: it matches when every field it sets matches. A rule matches either
/// processes (by `namespace`, `labels`, `executable`, `cgroup`) or connections (by `port`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(try_from = "RawSelectionRule", into = "RawSelectionRule")]
pub struct SelectionRule {
    /// Kubernetes namespace glob, e.g. `kube-*`.
    pub namespace: Option<Glob>,
    /// Pod labels that must all be present with these values.
    pub labels: BTreeMap<String, String>,
    /// Executable glob: matched against the full path when it contains a `/`, else against
    /// the file name, e.g. `*/sshd` or `nginx`.
    pub executable: Option<Glob>,
    /// Cgroup v2 path glob, e.g. `/system.slice/*`.
    pub cgroup: Option<Glob>,
    /// TCP port, local or peer.
    pub port: Option<u16>,
}

/// A rule as written, before its globs are compiled.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawSelectionRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    executable: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

impl From<SelectionRule> for RawSelectionRule {
    fn from(rule: SelectionRule) -> Self {
        let pattern = |glob: Option<Glob>| glob.map(|glob| glob.glob().to_owned());
        Self {
            namespace: pattern(rule.namespace),
            labels: rule.labels,
            executable: pattern(rule.executable),
            cgroup: pattern(rule.cgroup),
            port: rule.port,
        }
    }
}

impl TryFrom<RawSelectionRule> for SelectionRule {
    type Error = String;

    fn try_from(raw: RawSelectionRule) -> Result<Self, String> {
        // The parser places errors of a list's items at the list's start: naming the rule's
        // fields tells which item is meant.
        let fields = raw.describe();
        let glob = |field: &str, pattern: Option<String>| {
            pattern
                .map(|pattern| {
                    Glob::new(&pattern).map_err(|error| format!("rule {fields}: {field}: {error}"))
                })
                .transpose()
        };
        let rule = SelectionRule {
            namespace: glob("namespace", raw.namespace)?,
            labels: raw.labels,
            executable: glob("executable", raw.executable)?,
            cgroup: glob("cgroup", raw.cgroup)?,
            port: raw.port,
        };
        let matches_processes = rule.namespace.is_some()
            || !rule.labels.is_empty()
            || rule.executable.is_some()
            || rule.cgroup.is_some();
        match (matches_processes, rule.port) {
            (false, None) => {
                Err("an empty rule: set namespace, labels, executable, cgroup or port".into())
            }
            (true, Some(_)) => Err(format!(
                "rule {fields}: a rule matches processes (namespace, labels, executable, cgroup) or connections (port), not both"
            )),
            _ => Ok(rule),
        }
    }
}

impl RawSelectionRule {
    /// The fields the rule sets, e.g. `{executable: x, port: 1}`.
    fn describe(&self) -> String {
        let mut fields = Vec::new();
        for (name, value) in [
            ("namespace", &self.namespace),
            ("executable", &self.executable),
            ("cgroup", &self.cgroup),
        ] {
            if let Some(value) = value {
                fields.push(format!("{name}: {value}"));
            }
        }
        if !self.labels.is_empty() {
            fields.push(format!("labels: {:?}", self.labels));
        }
        if let Some(port) = self.port {
            fields.push(format!("port: {port}"));
        }
        format!("{{{}}}", fields.join(", "))
    }
}
