//! The `security:` section of the configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `security:` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySettings {
    /// Check calls against the security rules.
    pub enabled: bool,
    /// The user's rule packs, applied in order over the built-in default pack; watched for
    /// changes (and reloaded on SIGHUP).
    pub rule_packs: Vec<PathBuf>,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            rule_packs: Vec::new(),
        }
    }
}
