//! The command line's settings: the configuration file, `--set KEY=VALUE`, the shorthand
//! flags and the environment, resolved into a [`Config`] (see [`crate::config::sources`]),
//! then into the [`RunOptions`] of `apiscope run`, with every file the configuration names
//! read and checked before anything is loaded into the kernel.

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, FromArgMatches};
use log::warn;

use crate::{
    analysis::{
        security::rules::{ActiveRules, PackError},
        spec::SpecError,
    },
    config::{
        Config, ConfigError,
        sources::{self, Override},
    },
    export::otlp::HeadersFileError,
    pipeline::RunOptions,
    selection::{Selection, StdioSelection},
};

/// Flags that set one key each, for the keys set most often: each is `--set KEY=VALUE`
/// under a shorter name.
const SHORTHANDS: &[(&str, &str)] = &[
    ("otlp-endpoint", "export.otlp.endpoint"),
    ("otlp-protocol", "export.otlp.protocol"),
    ("include", "selection.include"),
    ("exclude", "selection.exclude"),
    ("stdio-command", "capture.stdio_commands"),
    ("spec", "inventory.specs"),
    ("rule-pack", "security.rule_packs"),
    ("node-name", "kubernetes.node_name"),
    ("socket-lookup", "capture.socket_lookup"),
    ("verifier-log", "capture.verifier_log"),
];

/// The flags and variables every command that reads the configuration takes.
#[derive(Debug, Clone, clap::Args)]
pub struct SettingsArgs {
    /// YAML configuration file; the environment and flags override its keys.
    #[arg(long, env = "APISCOPE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Sets a configuration key, e.g. `--set capture.capture_cap=4096` or `--set
    /// 'selection.exclude={port: 22}'`; repeatable, wins over the file and the environment.
    /// Every key is also `APISCOPE_<KEY>`, e.g. `APISCOPE_CAPTURE_CAPTURE_CAP`.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
    pub set: Vec<(String, String)>,
    #[command(flatten)]
    shorthands: Shorthands,
}

/// Flags of `apiscope run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Print every captured chunk as one JSON line on stdout.
    #[arg(long)]
    pub dump: bool,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// The values of the [`SHORTHANDS`] flags, as overrides.
#[derive(Debug, Clone, Default)]
struct Shorthands(Vec<Override>);

impl FromArgMatches for Shorthands {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut overrides = Vec::new();
        for (flag, key) in SHORTHANDS {
            for text in matches.get_many::<String>(flag).into_iter().flatten() {
                overrides.push(Override {
                    origin: format!("flag --{flag}"),
                    key: (*key).to_owned(),
                    text: text.clone(),
                });
            }
        }
        Ok(Self(overrides))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for Shorthands {
    fn augment_args(command: clap::Command) -> clap::Command {
        SHORTHANDS.iter().fold(command, |command, (flag, key)| {
            command.arg(
                Arg::new(*flag)
                    .long(*flag)
                    .value_name("VALUE")
                    .action(ArgAction::Append)
                    .help(format!("Same as --set {key}=VALUE")),
            )
        })
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

/// A flag, variable or file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Kubernetes enrichment is on but the node is unnamed.
    #[error("{0}, --node-name or APISCOPE_KUBERNETES_NODE_NAME")]
    NodeName(&'static str),
    /// A stdio command glob that does not compile.
    #[error("capture.stdio_commands: {0}")]
    StdioCommand(String),
    /// A declared spec that cannot be used.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A rule pack that cannot be used.
    #[error(transparent)]
    RulePack(#[from] PackError),
    /// The OTLP headers file.
    #[error(transparent)]
    HeadersFile(#[from] HeadersFileError),
}

impl SettingsArgs {
    /// The configuration: the file (or defaults), then the environment, then these flags.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let (overrides, unknown) = self.overrides(std::env::vars());
        for name in unknown {
            let hint = sources::meant_variable(&name)
                .map(|meant| format!(" (did you mean {meant}?)"))
                .unwrap_or_default();
            warn!("environment variable {name} sets no configuration key{hint}; ignored");
        }
        Config::layered(self.config.as_deref(), &overrides)
    }

    /// What `variables` and these flags set, in the order they apply; and the `APISCOPE_*`
    /// variables that set no key.
    fn overrides(
        &self,
        variables: impl IntoIterator<Item = (String, String)>,
    ) -> (Vec<Override>, Vec<String>) {
        let (mut overrides, unknown) = sources::from_environment(variables);
        overrides.extend(self.shorthands.0.iter().cloned());
        overrides.extend(self.set.iter().map(|(key, text)| Override {
            origin: "flag --set".to_owned(),
            key: key.clone(),
            text: text.clone(),
        }));
        (overrides, unknown)
    }
}

impl RunArgs {
    /// Everything `apiscope run` needs, every file the configuration names read.
    pub fn run_options(&self) -> Result<RunOptions, SettingsError> {
        let mut config = self.settings.config()?;
        config.kubernetes.node().map_err(SettingsError::NodeName)?;
        config.export.otlp.read_headers_file()?;
        let specs = config.inventory.load_specs()?;
        let rules = config
            .security
            .enabled
            .then(|| ActiveRules::load(&config.security.rule_packs))
            .transpose()?;
        Ok(RunOptions {
            selection: Selection::new(&config.selection),
            stdio: StdioSelection::new(&config.capture.stdio_commands)
                .map_err(SettingsError::StdioCommand)?,
            dump: self.dump,
            specs,
            rules,
            config,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(arguments: &[&str]) -> RunArgs {
        Command::try_parse_from(std::iter::once("apiscope").chain(arguments.iter().copied()))
            .unwrap()
            .run
    }

    #[test]
    fn shorthands_and_set_reach_their_keys_in_order() {
        let args = parse(&[
            "--otlp-endpoint",
            "http://c:4318",
            "--exclude",
            "{port: 22}",
            "--exclude",
            "{executable: sshd}",
            "--set",
            "capture.capture_cap=4096",
            "--set",
            "export.otlp.endpoint=http://d:4318",
        ]);
        let (overrides, _) = args
            .settings
            .overrides([("APISCOPE_CAPTURE_CAPTURE_CAP".to_owned(), "1024".to_owned())]);
        let origins: Vec<(&str, &str)> = overrides
            .iter()
            .map(|set| (set.origin.as_str(), set.key.as_str()))
            .collect();
        assert_eq!(
            origins,
            [
                (
                    "environment variable APISCOPE_CAPTURE_CAPTURE_CAP",
                    "capture.capture_cap"
                ),
                ("flag --otlp-endpoint", "export.otlp.endpoint"),
                ("flag --exclude", "selection.exclude"),
                ("flag --exclude", "selection.exclude"),
                ("flag --set", "capture.capture_cap"),
                ("flag --set", "export.otlp.endpoint"),
            ]
        );
        let config = Config::layered(None, &overrides).unwrap();
        assert_eq!(
            config.export.otlp.endpoint.as_deref(),
            Some("http://d:4318")
        );
        assert_eq!(config.selection.exclude.len(), 2);
        assert_eq!(config.capture.capture_cap, 4096);
    }

    #[test]
    fn every_shorthand_names_a_key() {
        let keys = sources::keys();
        for (flag, key) in SHORTHANDS {
            assert!(keys.contains_key(*key), "--{flag}: {key}");
        }
        assert!(key_value("novalue").is_err());
        assert_eq!(key_value("a.b=c=d").unwrap(), ("a.b".into(), "c=d".into()));
    }
}
