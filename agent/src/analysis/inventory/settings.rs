//! The `inventory:` section of the configuration, and the declared OpenAPI documents it
//! binds to services.

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use super::SpecBinding;
use crate::{
    analysis::spec::{DeclaredApi, SpecError},
    settings_format,
};

/// `inventory:` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct InventorySettings {
    /// Directory of the inventory database (`inventory.sqlite`), kept across restarts.
    pub directory: PathBuf,
    /// Seconds between saves of what changed.
    #[serde(
        rename = "persist_interval_secs",
        deserialize_with = "settings_format::secs_within::<_, 1, 86_400>",
        serialize_with = "settings_format::as_secs"
    )]
    pub persist_interval: Duration,
    /// Seconds between full inventory snapshots (`api.inventory.snapshot` events).
    #[serde(
        rename = "snapshot_interval_secs",
        deserialize_with = "settings_format::secs_within::<_, 1, 604_800>",
        serialize_with = "settings_format::as_secs"
    )]
    pub snapshot_interval: Duration,
    /// A declared operation without a call for this many seconds is an orphan.
    #[serde(
        rename = "orphan_after_secs",
        deserialize_with = "settings_format::secs_within::<_, 0, 31_536_000>",
        serialize_with = "settings_format::as_secs"
    )]
    pub orphan_after: Duration,
    /// Endpoints per service; more collapse into one overflow endpoint.
    #[serde(deserialize_with = "settings_format::within::<_, _, 1, 1_000_000>")]
    pub max_endpoints_per_service: usize,
    /// Services kept; calls of further services are not inventoried.
    #[serde(deserialize_with = "settings_format::within::<_, _, 1, 1_000_000>")]
    pub max_services: usize,
    /// Declared OpenAPI documents, each bound to the service it describes.
    pub specs: Vec<SpecFile>,
}

impl Default for InventorySettings {
    fn default() -> Self {
        Self {
            directory: PathBuf::from("/var/lib/apiscope"),
            persist_interval: Duration::from_secs(30),
            snapshot_interval: Duration::from_secs(300),
            orphan_after: Duration::from_secs(86_400),
            max_endpoints_per_service: 1_000,
            max_services: 4_096,
            specs: Vec::new(),
        }
    }
}

impl InventorySettings {
    /// Reads every declared document, so that a broken one stops the agent before it starts.
    pub fn load_specs(&self) -> Result<Vec<SpecBinding>, SpecError> {
        self.specs
            .iter()
            .map(|spec| {
                Ok(SpecBinding {
                    service: spec.service.clone(),
                    file: spec.file.display().to_string(),
                    api: Arc::new(DeclaredApi::load(&spec.file)?),
                })
            })
            .collect()
    }
}

/// A declared OpenAPI document (3.0 or 3.1, YAML or JSON) and the service it describes:
/// `{service: shop, file: shop.yaml}`, or `shop=shop.yaml` where a mapping is awkward (a
/// flag, an environment variable).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SpecFile {
    /// The `service.name` the document describes.
    pub service: String,
    /// The document's path.
    pub file: PathBuf,
}

impl<'de> Deserialize<'de> for SpecFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SpecFileVisitor)
    }
}

/// Reads a [`SpecFile`] from a mapping or from `NAME=PATH`.
struct SpecFileVisitor;

impl<'de> serde::de::Visitor<'de> for SpecFileVisitor {
    type Value = SpecFile;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("{service: NAME, file: PATH} or NAME=PATH")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<SpecFile, A::Error> {
        let fields = SpecFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(SpecFile {
            service: fields.service,
            file: fields.file,
        })
    }

    fn visit_str<E: serde::de::Error>(self, pair: &str) -> Result<SpecFile, E> {
        match pair.split_once('=') {
            Some((service, file)) if !service.trim().is_empty() && !file.trim().is_empty() => {
                Ok(SpecFile {
                    service: service.trim().to_owned(),
                    file: PathBuf::from(file.trim()),
                })
            }
            _ => Err(E::custom(format!(
                "`{pair}` is not a spec: write {{service: NAME, file: PATH}} or NAME=PATH"
            ))),
        }
    }
}

/// A [`SpecFile`] written as a mapping.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFields {
    service: String,
    file: PathBuf,
}
