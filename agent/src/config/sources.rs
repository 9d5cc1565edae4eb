//! Where settings come from besides the file: environment variables and flags, layered over
//! it with [figment](https://docs.rs/figment). Every key has a variable, its path in capitals
//! with `.` as `_` (`capture.capture_cap` is `APISCOPE_CAPTURE_CAPTURE_CAP`); the standard
//! OpenTelemetry variables set the keys they mean; `--set KEY=VALUE` sets any key, and a few
//! shorthand flags (`--otlp-endpoint`) set one key each.
//!
//! A value is written as in the file for lists and mappings (`[a, b]`, `{port: 22}`), and as
//! plain text otherwise; a list key given a single item gets it added, as a repeated flag
//! does; a mapping key also takes `name=value` pairs separated by commas, as
//! `OTEL_EXPORTER_OTLP_HEADERS` does. Lists add to the file's, other values replace it.

use std::{collections::BTreeMap, path::Path};

use figment::{
    Figment, Metadata, Profile, Provider,
    providers::Serialized,
    value::{Dict, Empty, Map, Tag, Value},
};

use super::{Config, ConfigError};

/// Prefix of the variables that set configuration keys.
pub const ENV_PREFIX: &str = "APISCOPE_";

/// Variables named `APISCOPE_*` that are not configuration keys.
const OTHER_APISCOPE_VARIABLES: &[&str] = &["APISCOPE_CONFIG"];

/// The OpenTelemetry SDK variables the agent honours, and the keys they set (in the
/// specification's units: milliseconds). `APISCOPE_*` variables win over them.
const OTEL_VARIABLES: &[(&str, &str)] = &[
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "export.otlp.endpoint"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "export.otlp.protocol"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "export.otlp.headers"),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "export.otlp.compression"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "export.otlp.timeout_ms"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "export.otlp.max_queue_size"),
    (
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        "export.otlp.max_export_batch_size",
    ),
    ("OTEL_BSP_SCHEDULE_DELAY", "export.otlp.schedule_delay_ms"),
    ("OTEL_TRACES_SAMPLER", "export.otlp.sampling.sampler"),
    (
        "OTEL_TRACES_SAMPLER_ARG",
        "export.otlp.sampling.sampler_arg",
    ),
    (
        "OTEL_METRIC_EXPORT_INTERVAL",
        "export.otlp.metric_interval_ms",
    ),
];

/// One key set outside the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// Where it was set, for messages: `environment variable NAME` or `flag --name`.
    pub origin: String,
    /// The key's path, e.g. `capture.capture_cap`.
    pub key: String,
    /// The value as written.
    pub text: String,
}

/// What a key holds, which decides how a value written for it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One value.
    Scalar,
    /// A list: a single item is added to it.
    List,
    /// A mapping: `name=value` pairs are accepted.
    Mapping,
}

/// Every configuration key, by path, with its shape: read off the defaults, so a key added to
/// a settings type is a key here with nothing else to write.
pub fn keys() -> BTreeMap<String, Shape> {
    let mut keys = BTreeMap::new();
    let defaults = serde_json::to_value(Config::default()).unwrap_or_default();
    collect_keys(&defaults, "", &mut keys);
    keys
}

fn collect_keys(value: &serde_json::Value, path: &str, keys: &mut BTreeMap<String, Shape>) {
    match value {
        serde_json::Value::Object(fields) if !fields.is_empty() => {
            for (name, field) in fields {
                let path = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                collect_keys(field, &path, keys);
            }
        }
        serde_json::Value::Object(_) => {
            keys.insert(path.to_owned(), Shape::Mapping);
        }
        serde_json::Value::Array(_) => {
            keys.insert(path.to_owned(), Shape::List);
        }
        _ => {
            keys.insert(path.to_owned(), Shape::Scalar);
        }
    }
}

/// The variable that sets `key`.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
}

/// The variable an `APISCOPE_*` name that sets no key most likely meant: the only one whose
/// name ends with the part after the prefix, as a name shortened by hand, or written before
/// the keys had their sections, does (`APISCOPE_LISTEN`: `APISCOPE_SERVER_LISTEN`).
pub fn meant_variable(name: &str) -> Option<String> {
    let tail = format!("_{}", name.strip_prefix(ENV_PREFIX)?);
    let mut candidates = keys()
        .into_keys()
        .map(|key| env_name(&key))
        .filter(|variable| variable.ends_with(&tail));
    let only = candidates.next()?;
    candidates.next().is_none().then_some(only)
}

/// The settings in `variables` (name, value), standard OpenTelemetry ones first so that
/// `APISCOPE_*` ones win; and the names of `APISCOPE_*` variables that set no key, which
/// deserve a warning (a misspelt key is otherwise silently ignored). Empty values are unset,
/// as the OpenTelemetry specification has it.
pub fn from_environment(
    variables: impl IntoIterator<Item = (String, String)>,
) -> (Vec<Override>, Vec<String>) {
    let by_name: BTreeMap<String, String> = keys()
        .into_keys()
        .map(|key| (env_name(&key), key))
        .collect();
    let (mut standard, mut own, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for (name, text) in variables {
        if text.trim().is_empty() {
            continue;
        }
        let set = |key: &str| Override {
            origin: format!("environment variable {name}"),
            key: key.to_owned(),
            text: text.clone(),
        };
        if let Some((_, key)) = OTEL_VARIABLES
            .iter()
            .find(|(variable, _)| *variable == name)
        {
            standard.push(set(key));
        } else if let Some(key) = by_name.get(&name) {
            own.push(set(key));
        } else if name.starts_with(ENV_PREFIX) && !OTHER_APISCOPE_VARIABLES.contains(&&*name) {
            unknown.push(name);
        }
    }
    standard.sort_by(|a, b| a.origin.cmp(&b.origin));
    own.sort_by(|a, b| a.origin.cmp(&b.origin));
    standard.extend(own);
    (standard, unknown)
}

impl Config {
    /// The file at `path` (or the defaults), with `overrides` applied in order.
    pub fn layered(path: Option<&Path>, overrides: &[Override]) -> Result<Self, ConfigError> {
        let base = match path {
            Some(path) => Self::load(path)?,
            None => Self::default(),
        };
        if overrides.is_empty() {
            return Ok(base);
        }
        let keys = keys();
        let mut figment = Figment::from(Serialized::defaults(base));
        for set in overrides {
            let failed = |reason: String| ConfigError::Override {
                origin: set.origin.clone(),
                key: set.key.clone(),
                reason,
            };
            let shape = *keys.get(&set.key).ok_or_else(|| {
                failed("no such configuration key (see agent/docs/configuration.md)".to_owned())
            })?;
            let value = read_value(&set.text, shape).map_err(failed)?;
            figment = figment.admerge(Layer { set, value });
        }
        figment.extract_lossy().map_err(|error| {
            // The error's metadata names the layer of the value that failed, but not always
            // (a failed item of a concatenated list carries the file's): the last override
            // of the failed key, or of a key that holds it, is the culprit.
            let path = error.path.join(".");
            let culprit = overrides
                .iter()
                .rev()
                .find(|set| path == set.key || path.starts_with(&format!("{}.", set.key)));
            let (origin, key) = match culprit {
                Some(set) => (set.origin.clone(), set.key.clone()),
                None => (
                    error
                        .metadata
                        .as_ref()
                        .map_or_else(|| "a flag or variable".to_owned(), |md| md.name.to_string()),
                    path,
                ),
            };
            ConfigError::Override {
                origin,
                key,
                reason: error.kind.to_string(),
            }
        })
    }
}

/// One override as a figment provider, named after where it was set.
struct Layer<'a> {
    set: &'a Override,
    value: Value,
}

impl Provider for Layer<'_> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.set.origin.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let nested = figment::util::nest(&self.set.key, self.value.clone());
        let dict = nested.into_dict().unwrap_or_default();
        Ok(Map::from([(Profile::Default, dict)]))
    }
}

/// Reads a value written for a key of `shape`.
fn read_value(text: &str, shape: Shape) -> Result<Value, String> {
    let text = text.trim();
    match shape {
        Shape::List if !text.starts_with('[') => Ok(Value::from(vec![read_item(text)?])),
        Shape::Mapping if !text.starts_with('{') => pairs(text),
        _ => read_item(text),
    }
}

/// A list or mapping in YAML's flow style, or plain text.
fn read_item(text: &str) -> Result<Value, String> {
    if text.starts_with('[') || text.starts_with('{') {
        let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
            .map_err(|error| format!("`{text}` is not YAML: {error}"))?;
        Ok(from_yaml(yaml))
    } else {
        Ok(Value::from(text.to_owned()))
    }
}

/// `name=value` pairs separated by commas.
fn pairs(text: &str) -> Result<Value, String> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                Ok((name.trim().to_owned(), Value::from(value.trim().to_owned())))
            }
            // The pair is not repeated: it may hold a secret.
            _ => Err("expected name=value pairs separated by commas".to_owned()),
        })
        .collect::<Result<Dict, String>>()
        .map(Value::from)
}

/// A YAML value as figment's, its scalars as text: the extraction reads text as whatever the
/// key holds, so `version: 2` suits a label as well as `port: 22` suits a port.
fn from_yaml(yaml: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Yaml;
    match yaml {
        Yaml::Null => Value::Empty(Tag::Default, Empty::None),
        Yaml::Bool(flag) => Value::from(flag.to_string()),
        Yaml::Number(number) => Value::from(number.to_string()),
        Yaml::String(text) => Value::from(text),
        Yaml::Sequence(items) => Value::from(items.into_iter().map(from_yaml).collect::<Vec<_>>()),
        Yaml::Mapping(entries) => Value::from(
            entries
                .into_iter()
                .map(|(name, value)| {
                    let name = match from_yaml(name) {
                        Value::String(_, name) => name,
                        _ => String::new(),
                    };
                    (name, from_yaml(value))
                })
                .collect::<Dict>(),
        ),
        Yaml::Tagged(tagged) => from_yaml(tagged.value),
    }
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::Duration};

    use super::*;
    use crate::{
        capture::SocketLookupChoice,
        export::{otlp::OtlpProtocol, server::Listen},
    };

    fn set(key: &str, text: &str) -> Override {
        Override {
            origin: "flag --set".into(),
            key: key.into(),
            text: text.into(),
        }
    }

    fn layered(overrides: &[Override]) -> Result<Config, ConfigError> {
        Config::layered(None, overrides)
    }

    #[test]
    fn every_key_has_one_variable_and_none_is_ambiguous() {
        let keys = keys();
        assert!(keys.len() > 40, "{}", keys.len());
        for key in [
            "capture.capture_cap",
            "export.otlp.retry.max_elapsed_ms",
            "inventory.specs",
            "selection.exclude",
        ] {
            assert!(keys.contains_key(key), "{key}");
        }
        assert_eq!(keys["export.otlp.headers"], Shape::Mapping);
        assert_eq!(keys["selection.include"], Shape::List);
        let names: std::collections::BTreeSet<String> = keys.keys().map(|k| env_name(k)).collect();
        assert_eq!(names.len(), keys.len());
        assert_eq!(
            env_name("kubernetes.node_name"),
            "APISCOPE_KUBERNETES_NODE_NAME"
        );
        for (_, key) in OTEL_VARIABLES {
            assert!(keys.contains_key(*key), "{key}");
        }
    }

    #[test]
    fn scalars_lists_and_mappings_are_read_as_the_key_holds_them() {
        let config = layered(&[
            set("capture.capture_cap", "4096"),
            set("capture.socket_lookup", "fd_table"),
            set("kubernetes.enabled", "true"),
            set("kubernetes.node_name", "1234"),
            set("selection.exclude", "{port: 22}"),
            set(
                "selection.exclude",
                "[{executable: sshd}, {labels: {version: 2}}]",
            ),
            set("inventory.specs", "shop=shop.yaml"),
            set("export.otlp.headers", "x-api-key=k, x-team=shop"),
            set("export.otlp.protocol", "http/protobuf"),
            set("export.otlp.compression", "none"),
            set("export.otlp.headers", "x-api-key = abc=def"),
            set("export.otlp.retry.max_elapsed_ms", "0"),
        ])
        .unwrap();
        assert_eq!(config.capture.capture_cap, 4096);
        assert_eq!(config.capture.socket_lookup, SocketLookupChoice::FdTable);
        assert!(config.kubernetes.enabled);
        assert_eq!(config.kubernetes.node_name.as_deref(), Some("1234"));
        assert_eq!(config.selection.exclude.len(), 3);
        assert_eq!(config.selection.exclude[0].port, Some(22));
        let sshd = config.selection.exclude[1].executable.as_ref().unwrap();
        assert_eq!(sshd.glob(), "sshd");
        assert_eq!(config.selection.exclude[2].labels["version"], "2");
        assert_eq!(config.inventory.specs[0].file, PathBuf::from("shop.yaml"));
        assert_eq!(config.export.otlp.headers.0["x-team"], "shop");
        assert_eq!(config.export.otlp.headers.0["x-api-key"], "abc=def");
        assert!(!config.export.otlp.gzip());
        assert_eq!(config.export.otlp.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(config.export.otlp.retry.max_elapsed, Duration::ZERO);
        let listen = |text| {
            layered(&[set("server.listen", text)])
                .unwrap()
                .server
                .listen
        };
        assert_eq!(listen("off"), Listen::Off);
        assert_eq!(
            listen("0.0.0.0:9750"),
            Listen::On("0.0.0.0:9750".parse().unwrap())
        );
    }

    #[test]
    fn flags_and_variables_win_over_the_file_and_add_to_its_lists() {
        let dir = std::env::temp_dir().join(format!("apiscope-layers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("apiscope.yaml");
        std::fs::write(
            &file,
            "capture:\n  capture_cap: 1024\n  framed_cap: 65536\nselection:\n  exclude:\n    - port: 22\n",
        )
        .unwrap();
        let config = Config::layered(
            Some(&file),
            &[
                set("capture.capture_cap", "2048"),
                set("selection.exclude", "{port: 23}"),
            ],
        )
        .unwrap();
        assert_eq!(config.capture.capture_cap, 2048);
        assert_eq!(config.capture.framed_cap, 65_536);
        let ports: Vec<_> = config.selection.exclude.iter().map(|r| r.port).collect();
        assert_eq!(ports, [Some(22), Some(23)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_values_name_their_origin_key_and_reason() {
        for (set, expected) in [
            (
                set("capture.capture_cap", "0"),
                "flag --set: capture.capture_cap: 0 is out of range: expected 1 to 32768",
            ),
            (
                set("capture.capture_cap", "lots"),
                "flag --set: capture.capture_cap: invalid type",
            ),
            (
                set("capture.captur_cap", "1"),
                "flag --set: capture.captur_cap: no such configuration key",
            ),
            (
                set("selection.exclude", "{port: 22, executable: x}"),
                "flag --set: selection.exclude: rule {executable: x, port: 22}: a rule matches processes",
            ),
            (
                set("selection.exclude", "{exe: x}"),
                "flag --set: selection.exclude",
            ),
            (
                set("export.otlp.protocol", "http/json"),
                "flag --set: export.otlp.protocol: unknown variant",
            ),
            (
                set("export.otlp.headers", "s3cret"),
                "flag --set: export.otlp.headers: expected name=value pairs",
            ),
            (
                set("export.http_headers", "authorization"),
                "flag --set: export.http_headers: header `authorization` cannot be exported",
            ),
            (
                set("server.listen", "localhost"),
                "flag --set: server.listen: `localhost` is not an address such as 127.0.0.1:9750, nor `off`",
            ),
        ] {
            let message = layered(&[set]).unwrap_err().to_string();
            assert!(message.starts_with(expected), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
    }

    #[test]
    fn an_unknown_variable_is_matched_to_the_one_it_shortens() {
        let meant = |name| meant_variable(name);
        assert_eq!(
            meant("APISCOPE_LISTEN").as_deref(),
            Some("APISCOPE_SERVER_LISTEN")
        );
        assert_eq!(
            meant("APISCOPE_CAPTURE_CAP").as_deref(),
            Some("APISCOPE_CAPTURE_CAPTURE_CAP")
        );
        // Both `security.enabled` and `kubernetes.enabled`: no guess.
        assert_eq!(meant("APISCOPE_ENABLED"), None);
        assert_eq!(meant("APISCOPE_NO_SUCH_THING"), None);
        assert_eq!(meant("OTHER_LISTEN"), None);
    }

    #[test]
    fn the_environment_sets_keys_and_unknown_names_are_reported() {
        let (overrides, unknown) = from_environment([
            ("APISCOPE_CAPTURE_CAPTURE_CAP".to_owned(), "4096".to_owned()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                "http://a:4317".to_owned(),
            ),
            (
                "APISCOPE_EXPORT_OTLP_ENDPOINT".to_owned(),
                "http://b:4317".to_owned(),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "200".to_owned()),
            ("APISCOPE_CAPTURE_CAPTUR_CAP".to_owned(), "1".to_owned()),
            (
                "APISCOPE_CONFIG".to_owned(),
                "/etc/apiscope.yaml".to_owned(),
            ),
            ("APISCOPE_SERVER_LISTEN".to_owned(), " ".to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
        ]);
        assert_eq!(unknown, ["APISCOPE_CAPTURE_CAPTUR_CAP"]);
        let config = layered(&overrides).unwrap();
        assert_eq!(config.capture.capture_cap, 4096);
        assert_eq!(
            config.export.otlp.endpoint.as_deref(),
            Some("http://b:4317")
        );
        assert_eq!(
            config.export.otlp.schedule_delay,
            Duration::from_millis(200)
        );
        assert_eq!(
            config.server,
            crate::export::server::ServerSettings::default()
        );
        let message = layered(
            &from_environment([(
                "APISCOPE_STREAMS_MAX_CONNECTIONS".to_owned(),
                "many".to_owned(),
            )])
            .0,
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.starts_with(
                "environment variable APISCOPE_STREAMS_MAX_CONNECTIONS: streams.max_connections:"
            ),
            "{message}"
        );
    }

    #[test]
    fn the_sampler_variables_set_the_sampling_and_bad_values_are_refused() {
        let variables = |sampler: &str, arg: &str| {
            from_environment([
                ("OTEL_TRACES_SAMPLER".to_owned(), sampler.to_owned()),
                ("OTEL_TRACES_SAMPLER_ARG".to_owned(), arg.to_owned()),
            ])
            .0
        };
        let config = layered(&variables("parentbased_traceidratio", "0.1")).unwrap();
        let sampling = config.export.otlp.sampling;
        assert_eq!(
            sampling.sampler,
            crate::export::otlp::SamplerName::ParentBasedTraceIdRatio
        );
        assert!((sampling.sampler_arg.get() - 0.1).abs() < 1e-12);
        for (sampler, arg, variable) in [
            ("sometimes", "0.1", "OTEL_TRACES_SAMPLER"),
            ("traceidratio", "1.5", "OTEL_TRACES_SAMPLER_ARG"),
            ("traceidratio", "half", "OTEL_TRACES_SAMPLER_ARG"),
        ] {
            let message = layered(&variables(sampler, arg)).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("environment variable {variable}: ")),
                "{message}"
            );
        }
    }
}
