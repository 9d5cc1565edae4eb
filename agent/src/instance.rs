//! One agent per state directory: two agents on one host would attach every probe twice,
//! report every call twice and write the same inventory database. The first takes an
//! exclusive lock on `<directory>/apiscope.pid`; the kernel releases it when that process
//! ends, however it ends, so a crash never leaves a stale lock behind.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{Read as _, Seek as _, Write as _},
    path::{Path, PathBuf},
};

/// The name of the lock file in the state directory.
const LOCK_FILE: &str = "apiscope.pid";

/// Held for the agent's lifetime: the locked file, holding this process's pid.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

/// Why the agent may not start here.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Another agent holds the lock.
    #[error(
        "another apiscope (pid {pid}) is running with the state directory {}: stop it first, \
         or give this one a directory of its own (inventory.directory)",
        directory.display()
    )]
    Running {
        /// The running agent's pid, as it wrote it (`unknown` if unreadable).
        pid: String,
        /// The shared state directory.
        directory: PathBuf,
    },
    /// The lock file cannot be created or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

impl InstanceLock {
    /// Locks `directory` (created if missing) for this process, or says which agent holds it.
    pub fn acquire(directory: &Path) -> Result<Self, InstanceError> {
        let path = directory.join(LOCK_FILE);
        let failed = |source| InstanceError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(directory).map_err(failed)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(failed)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let pid = match file.read_to_string(&mut pid) {
                    Ok(_) if !pid.trim().is_empty() => pid.trim().to_owned(),
                    _ => "unknown".to_owned(),
                };
                return Err(InstanceError::Running {
                    pid,
                    directory: directory.to_owned(),
                });
            }
            Err(TryLockError::Error(error)) => return Err(failed(error)),
        }
        file.set_len(0).map_err(failed)?;
        file.rewind().map_err(failed)?;
        writeln!(file, "{}", std::process::id()).map_err(failed)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_first_holder_and_the_lock_is_released_with_it() {
        let directory =
            std::env::temp_dir().join(format!("apiscope-instance-{}", std::process::id()));
        let first = InstanceLock::acquire(&directory).unwrap();
        let message = InstanceLock::acquire(&directory).unwrap_err().to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        assert!(message.contains("inventory.directory"), "{message}");
        drop(first);
        let again = InstanceLock::acquire(&directory).unwrap();
        drop(again);
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
