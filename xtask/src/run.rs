//! `cargo xtask run [-- ARGS...]`: build, then become `apiscope run ARGS...`.

use std::{ffi::OsString, os::unix::process::CommandExt as _, process::Command};

use anyhow::{Context as _, Result};

use crate::{agent_bin, build, display};

/// Builds the agent, then replaces this process with `apiscope run ARGS...`, so that signals
/// (Ctrl-C) go straight to the agent. Returns only if the exec fails.
pub fn exec_agent(args: &[OsString]) -> Result<()> {
    build::build()?;
    let mut cmd = Command::new(agent_bin());
    cmd.arg("run").args(args);
    println!("+ exec {}", display(&cmd));
    let error = cmd.exec();
    Err(error).with_context(|| format!("cannot exec `{}`", display(&cmd)))
}
