//! Tracepoint record layouts, read from their format files: a record's fields can move between
//! kernel versions (`sched_process_fork`'s pids did when its command names became `__data_loc`
//! strings), so the programs read them at the offsets the running kernel lists.

use std::path::Path;

use agent_common::ForkOffsets;

/// Where classic tracepoints live.
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Why a field's offset could not be read.
#[derive(Debug, thiserror::Error)]
#[error("tracepoint {event}: {reason}")]
pub struct FormatError {
    /// `category/name` of the tracepoint.
    event: String,
    /// What went wrong.
    reason: String,
}

/// The offsets of the pids in the `sched:sched_process_fork` record.
pub fn fork_offsets() -> Result<ForkOffsets, FormatError> {
    let format = read_format("sched", "sched_process_fork")?;
    Ok(ForkOffsets {
        parent_pid: field_offset(&format, "parent_pid")?,
        child_pid: field_offset(&format, "child_pid")?,
    })
}

/// A tracepoint's format file, with the event named for errors.
struct Format {
    event: String,
    text: String,
}

fn read_format(category: &str, name: &str) -> Result<Format, FormatError> {
    let event = format!("{category}/{name}");
    let path = Path::new(TRACEFS)
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Format { event, text }),
        Err(error) => Err(FormatError {
            event,
            reason: format!("cannot read {}: {error}", path.display()),
        }),
    }
}

/// The `offset:` of field `name` in a format file, whose field lines read
/// `field:TYPE NAME;\toffset:N;\tsize:N;\tsigned:N;`.
fn field_offset(format: &Format, name: &str) -> Result<u32, FormatError> {
    let found = format.text.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let declaration = parts.next()?.strip_prefix("field:")?;
        if declaration.rsplit(' ').next()? != name {
            return None;
        }
        parts.find_map(|part| part.strip_prefix("offset:")?.parse().ok())
    });
    found.ok_or_else(|| FormatError {
        event: format.event.clone(),
        reason: format!("no field `{name}` with an offset in its format file"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(text: &str) -> Format {
        Format {
            event: "sched/sched_process_fork".to_owned(),
            text: text.to_owned(),
        }
    }

    #[test]
    fn offsets_follow_the_layout_of_each_kernel() {
        // Linux 6.1: fixed-size command names.
        let old = format(
            "format:\n\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
             \tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
             \tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\
             \tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n",
        );
        assert_eq!(field_offset(&old, "parent_pid").unwrap(), 24);
        assert_eq!(field_offset(&old, "child_pid").unwrap(), 44);
        // Later kernels: __data_loc command names.
        let new = format(
            "\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
             \tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n",
        );
        assert_eq!(field_offset(&new, "parent_pid").unwrap(), 12);
        let missing = field_offset(&new, "child_pid").unwrap_err().to_string();
        assert!(
            missing.contains("sched/sched_process_fork") && missing.contains("child_pid"),
            "{missing}"
        );
    }

    #[test]
    fn running_kernel_lists_the_fork_pids() {
        let offsets = fork_offsets().expect("fork record layout");
        assert!(offsets.child_pid > offsets.parent_pid, "{offsets:?}");
    }
}
