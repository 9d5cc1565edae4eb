//! The first check of every probe: is this process traced at all?

use agent_common::{FilterMode, filter_maps};
use aya_ebpf::helpers::generated::bpf_get_current_cgroup_id;

use crate::maps::{CGROUP_FILTER, CONFIG, PID_FILTER};

/// True when the calling process is selected for capture: never the agent itself, then the pid
/// and cgroup lists read as deny or allow lists according to the configured mode.
#[inline(always)]
pub fn is_traced(tgid: u32) -> bool {
    let Some(config) = CONFIG.get(0) else {
        return false;
    };
    if tgid == config.agent_tgid || config.capture_cap == 0 {
        return false;
    }
    // SAFETY: plain lookups of u32 values; a stale read only changes one decision.
    let listed_pid =
        config.filters & filter_maps::PIDS != 0 && unsafe { PID_FILTER.get(&tgid).is_some() };
    let listed = listed_pid
        || (config.filters & filter_maps::CGROUPS != 0 && {
            // SAFETY: helper without arguments.
            let cgroup = unsafe { bpf_get_current_cgroup_id() };
            // SAFETY: as above.
            unsafe { CGROUP_FILTER.get(&cgroup).is_some() }
        });
    if config.filter_mode == FilterMode::OnlyAllowed as u32 {
        listed
    } else {
        !listed
    }
}
