//! Capture: the kernel programs, their loader, and the reader that turns ring-buffer records
//! into [`CaptureEvent`]s.

mod btf;
pub mod exec_hold;
pub mod features;
mod filters;
pub mod fuzzing;
mod groups;
mod links;
mod loader;
mod probes;
mod reader;
pub mod records;
mod settings;
mod tls;
pub mod tracefs;

use std::{collections::HashSet, path::Path, time::Duration};

use agent_common::{
    CaptureConfig, ConnKey, ConnState, Counter, ExecOffsets, PayloadPolicy, PolicyEntry,
    SOCKET_LOOKUP_GLOBAL, SocketLookup,
    event::{MAX_FRAMED_RECORDS, MAX_PAYLOAD},
};
use aya::{
    Ebpf, EbpfLoader, VerifierLogLevel,
    maps::{Array, HashMap, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::ProgramError,
};
use log::{debug, info, warn};

pub use btf::BtfError;
pub use filters::{KernelSelection, ProcessVerdicts, StdioProcesses};
pub use groups::{GroupState, GroupStatus, LoadFailure, LoadReport, ProgramCost, VERIFIER_BUDGET};
pub use probes::ProbeGroup;
pub use reader::{ReaderStats, forward_kernel_log, read_events};
pub use records::{CaptureEvent, CodeLoaded, ConnectionSeen, DataChunk, LoadedBy, Transport};
pub use settings::{CaptureSettings, SocketLookupChoice};
pub use tls::{StackCoverage, TlsCoverage, TlsStack};
pub use tracefs::FormatError;

use self::{exec_hold::ExecHold, links::ProbeLink, tls::TlsAttacher};

/// The eBPF object built from `agent-ebpf` by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/apiscope-ebpf"));

/// Why capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The eBPF object was rejected as a whole (maps could not be created, bad ELF).
    #[error("cannot load the kernel programs: {0}")]
    Load(#[source] aya::EbpfError),
    /// A program the probe table names is not in the object.
    #[error("the kernel object has no program `{0}` (agent and object from different builds)")]
    MissingProgram(&'static str),
    /// The core group, without which nothing is captured, could not start.
    #[error("the core kernel programs cannot run: {0}")]
    Core(LoadFailure),
    /// A program failed to load or attach.
    #[error("kernel program `{name}` failed: {source}")]
    Program {
        /// Program name.
        name: &'static str,
        /// aya's error, with the verifier log where there is one.
        #[source]
        source: ProgramError,
    },
    /// A map the loader needs is missing or of the wrong type.
    #[error("kernel map `{name}`: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// aya's error.
        #[source]
        source: aya::maps::MapError,
    },
    /// The kernel's BTF could not give the socket field offsets.
    #[error(transparent)]
    Btf(#[from] BtfError),
    /// The kernel's BTF could not be loaded for the BTF tracepoints.
    #[error("cannot read kernel BTF: {0}")]
    KernelBtf(#[source] aya::BtfError),
    /// A tracepoint's record layout could not be read.
    #[error(transparent)]
    Tracefs(#[from] FormatError),
    /// An invalid setting.
    #[error("{0}")]
    Settings(String),
}

/// The channels the kernel side writes to, for the reader tasks.
pub struct CaptureOutputs {
    /// Records of the capture programs.
    pub ring: RingBuf<MapData>,
    /// Log records of the kernel programs (`aya-log`), if that map could be opened.
    pub kernel_log: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// The per-process verdicts, when the selection rules match processes.
    pub process_verdicts: Option<ProcessVerdicts>,
    /// The processes whose stdio is captured.
    pub stdio_processes: StdioProcesses,
}

/// The loaded and attached kernel side. Dropping it detaches every probe, all at once (see
/// `capture::links`), and returns when they are detached.
pub struct Capture {
    ebpf: Ebpf,
    tls: TlsAttacher,
    /// What the kernel's `CONFIG` map holds.
    config: CaptureConfig,
    /// The holds of processes at exec; `None` when processes are not held.
    exec_hold: Option<ExecHold>,
    /// The kernel probes' links, owned here rather than by their programs so that they can be
    /// detached concurrently.
    links: Vec<ProbeLink>,
    /// The tail-call slots, filled while this is open.
    _tail_calls: ProgramArray<MapData>,
    /// What loading came to: the groups on and off, the programs' verifier costs.
    report: LoadReport,
    conns: HashMap<MapData, ConnKey, ConnState>,
    payload_policies: HashMap<MapData, ConnKey, PolicyEntry>,
    counters: PerCpuArray<MapData, u64>,
}

fn map_error(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> CaptureError {
    move |source| CaptureError::Map { name, source }
}

impl Capture {
    /// Loads the kernel programs, configures them, and attaches every probe: syscall and socket
    /// tracepoints first, then the OpenSSL uprobes on every copy found on the host. Returns the
    /// ring buffer to read records from and the kernel-side log.
    pub fn start(
        settings: &CaptureSettings,
        selection: &KernelSelection,
    ) -> Result<(Self, CaptureOutputs), CaptureError> {
        if settings.capture_cap == 0 || settings.capture_cap as usize > MAX_PAYLOAD {
            return Err(CaptureError::Settings(format!(
                "capture cap must be between 1 and {MAX_PAYLOAD} bytes, not {}",
                settings.capture_cap
            )));
        }
        let framed_max = MAX_PAYLOAD * MAX_FRAMED_RECORDS as usize;
        if (settings.framed_cap as usize) < MAX_PAYLOAD || settings.framed_cap as usize > framed_max
        {
            return Err(CaptureError::Settings(format!(
                "framed cap must be between {MAX_PAYLOAD} and {framed_max} bytes, not {}",
                settings.framed_cap
            )));
        }
        let page = 4096;
        if !settings.ring_buffer_bytes.is_power_of_two() || settings.ring_buffer_bytes < page {
            return Err(CaptureError::Settings(format!(
                "ring buffer size must be a power of two of at least {page} bytes, not {}",
                settings.ring_buffer_bytes
            )));
        }
        // Locked-memory limits do not apply to memcg-accounted BPF maps (Linux 5.11+); raising
        // the limit only helps older kernels and may be refused, which is fine.
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: plain syscall with a valid pointer.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };

        // Start-up memory sets the agent's peak RSS, so the order below matters. The kernel's
        // BTF (5 MiB) is read three times, never two at once. Our walk for the field offsets
        // maps it and allocates 0.5 MiB. aya's loader parses its own copy in `EbpfLoader::new`
        // (some 30 MiB of allocations; it cannot be handed one, and the object has no CO-RE
        // relocations that would need it) and frees it at the end of the statement; the
        // allocator returns that memory before aya parses again for the BTF tracepoints' type
        // ids, and again after. Only then is the ring buffer mapped (twice its size, all
        // resident), so its pages do not add to the parses' peak.
        let wanted = settings.socket_lookup.lookup();
        let layout = btf::kernel_layout(Path::new(btf::VMLINUX_BTF), wanted)?;
        match Self::load(settings, selection, layout) {
            // The socket tracepoints are the one part of the core group that another path can
            // stand in for: on a kernel whose build refuses them, walk the file table instead.
            Err(CaptureError::Core(failure))
                if wanted.is_none() && layout.socket_lookup == SocketLookup::Tracepoints =>
            {
                warn!(
                    "the core kernel programs failed with the socket tracepoints ({failure}); \
                     finding sockets by walking the file table instead"
                );
                let layout =
                    btf::kernel_layout(Path::new(btf::VMLINUX_BTF), Some(SocketLookup::FdTable))?;
                Self::load(settings, selection, layout)
            }
            loaded => loaded,
        }
    }

    /// Loads the object for `layout`, configures it and loads and attaches the program groups.
    fn load(
        settings: &CaptureSettings,
        selection: &KernelSelection,
        layout: btf::KernelLayout,
    ) -> Result<(Self, CaptureOutputs), CaptureError> {
        let fork = tracefs::fork_offsets()?;
        // A refused program is loaded again to read the verifier's log: its whole trace only
        // when someone will read it, else just its verdict and statistics.
        let log_level = if settings.verifier_log.is_some() || log::log_enabled!(log::Level::Debug) {
            VerifierLogLevel::DEBUG | VerifierLogLevel::STATS
        } else {
            VerifierLogLevel::STATS
        };
        let socket_lookup = layout.socket_lookup as u32;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", settings.ring_buffer_bytes)
            .map_max_entries("SCRATCH", scratch_slots()?)
            .override_global(SOCKET_LOOKUP_GLOBAL, &socket_lookup, true)
            .verifier_log_level(log_level)
            .load(EBPF_OBJECT)
            .map_err(CaptureError::Load)?;
        release_freed_memory();
        let kernel_log = aya_log::EbpfLogger::init(&mut ebpf)
            .inspect_err(|error| warn!("kernel-side log messages unavailable: {error}"))
            .ok();

        let config = CaptureConfig {
            agent_tgid: std::process::id(),
            capture_cap: settings.capture_cap,
            filter_mode: selection.process_mode() as u32,
            filters: selection.filter_bits(),
            sock: layout.sock,
            framed_cap: settings.framed_cap,
            port_mode: selection.port_mode() as u32,
            fd_table: layout.fd_table,
            fork,
            // Switched on once the hold keeper runs.
            hold_new_executables: 0,
            reserved: 0,
            exec: layout.exec.unwrap_or_default(),
        };
        write_config(&mut ebpf, config)?;

        let ring = take_map(&mut ebpf, "EVENTS", RingBuf::try_from)?;
        let conns = take_map(&mut ebpf, "CONNS", HashMap::try_from)?;
        let payload_policies = take_map(&mut ebpf, "PAYLOAD_POLICIES", HashMap::try_from)?;
        let mut ports: HashMap<_, u32, u32> =
            take_map(&mut ebpf, "PORT_FILTER", HashMap::try_from)?;
        for (port, verdict) in &selection.ports {
            ports
                .insert(u32::from(*port), *verdict as u32, 0)
                .map_err(map_error("PORT_FILTER"))?;
        }
        let mut process_verdicts =
            ProcessVerdicts::new(take_map(&mut ebpf, "PID_FILTER", HashMap::try_from)?);
        for (pid, verdict) in &selection.processes {
            process_verdicts.set(*pid, *verdict);
        }
        let stdio_processes = StdioProcesses::new(
            take_map(&mut ebpf, "STDIO_PROCESSES", HashMap::try_from)?,
            take_map(&mut ebpf, "STDIO_FDS", HashMap::try_from)?,
        );
        let counters = take_map(&mut ebpf, "COUNTERS", PerCpuArray::try_from)?;
        let loaded = loader::load_and_attach(
            &mut ebpf,
            layout.socket_lookup,
            settings.verifier_log.as_deref(),
        )?;
        let mut capture = Self {
            ebpf,
            tls: TlsAttacher::new(tls_stacks_on(&loaded.report)),
            config,
            exec_hold: None,
            links: loaded.links,
            _tail_calls: loaded.tail_calls,
            report: loaded.report,
            conns,
            payload_policies,
            counters,
        };
        if capture.tls.is_on() {
            capture.tls.scan_host(&mut capture.ebpf);
            if !settings.exec_hold.is_zero() {
                capture.start_exec_hold(settings.exec_hold, layout.exec);
            }
        }
        let (on, off) = capture.report.group_counts();
        let coverage = capture.tls.coverage();
        info!(
            "capture attached: {} kernel probes in {on} groups ({off} off), TLS on {} OpenSSL \
             files, {} GnuTLS files and {} Go programs, sockets found by {}",
            capture.links.len(),
            coverage.openssl.attached,
            coverage.gnutls.attached,
            coverage.go.attached,
            socket_lookup_name(capture.report.socket_lookup),
        );
        Ok((
            capture,
            CaptureOutputs {
                ring,
                kernel_log,
                process_verdicts: selection.per_process.then_some(process_verdicts),
                stdio_processes,
            },
        ))
    }

    /// What loading came to: the groups on and off, the programs' verifier costs.
    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// Holds the processes that exec a file new to the agent until its TLS uprobes are
    /// attached, for at most `bound`; says in one sentence why not when they cannot be.
    fn start_exec_hold(&mut self, bound: Duration, offsets: Option<ExecOffsets>) {
        let started = offsets
            .ok_or_else(|| "this kernel's BTF lacks a field the exec tracepoint reads".to_owned())
            .and_then(|_| {
                let known = take_map(&mut self.ebpf, "KNOWN_EXECUTABLES", HashMap::try_from);
                let held = take_map(&mut self.ebpf, "HELD", HashMap::try_from);
                ExecHold::start(
                    known.map_err(|error| error.to_string())?,
                    held.map_err(|error| error.to_string())?,
                    bound,
                )
            })
            .and_then(|hold| {
                let config = CaptureConfig {
                    hold_new_executables: 1,
                    ..self.config
                };
                write_config(&mut self.ebpf, config).map_err(|error| error.to_string())?;
                self.config = config;
                Ok(hold)
            });
        match started {
            Ok(hold) => self.exec_hold = Some(hold),
            Err(error) => warn!(
                "processes are not held at exec or at a TLS library's mapping until their TLS \
                 uprobes are attached ({error}): the first TLS calls of a program's first run \
                 may be missed"
            ),
        }
    }

    /// Looks for TLS stacks in a process that just exec'd or mapped a new library, then
    /// continues it if it was held for that.
    pub fn inspect_code(&mut self, code: &CodeLoaded) {
        self.scan_process(code.tgid);
        if let Some(hold) = &mut self.exec_hold {
            hold.inspected(code.file, code.tgid, code.held);
        }
    }

    /// Looks for TLS stacks in a process (libraries it loaded since its exec).
    pub fn scan_process(&mut self, pid: u32) {
        if self.tls.is_on() {
            self.tls.scan_process(&mut self.ebpf, pid);
        }
    }

    /// Processes continued because their hold at exec passed its bound.
    pub fn exec_holds_expired(&self) -> u64 {
        self.exec_hold.as_ref().map_or(0, ExecHold::expired)
    }

    /// Detaches the TLS uprobes from the OpenSSL copies no process maps any more, on a thread
    /// of their own: closing each uprobe waits for the kernel (see [`links`]). The next exec
    /// or mapping of a file forgotten this way is held again.
    pub fn retire_unmapped_tls(&mut self) {
        let (retired, inodes) = self.tls.retire_unmapped();
        if let Some(hold) = &mut self.exec_hold {
            hold.forget(&inodes);
        }
        if retired.is_empty() {
            return;
        }
        // Said once the kernel is done: until then, attaching a new file's uprobes waits behind
        // these detaches (the kernel serialises both), so a program held for its first TLS call
        // may pass its bound.
        let detach = move || {
            let count = retired.len();
            links::detach_all(retired);
            info!("TLS capture detached from files no process maps any more ({count} uprobes)");
        };
        // Were the thread not to start, dropping the closure detaches the links here.
        let _ = std::thread::Builder::new()
            .name("apiscope-retire".into())
            .spawn(detach);
    }

    /// Drops the kernel-side state of a process's connections.
    pub fn forget_connections(&mut self, keys: impl IntoIterator<Item = ConnKey>) {
        for key in keys {
            // Already gone (closed, or evicted from the LRU map) is fine.
            let _ = self.conns.remove(&key);
            let _ = self.payload_policies.remove(&key);
        }
    }

    /// Sets what the kernel copies of these sockets' payload (fd, the socket it holds, the
    /// policy): nothing when no decoder wants them (their bytes are still counted), or whole
    /// calls for framed protocols. The kernel side forgets them at `close`.
    pub fn set_payload_policies(
        &mut self,
        sockets: impl IntoIterator<Item = (ConnKey, u64, PayloadPolicy)>,
    ) {
        for (key, sock, policy) in sockets {
            let entry = PolicyEntry {
                sock,
                policy: policy as u32,
                reserved: 0,
            };
            // The map is an LRU: when full, the oldest policy is what goes.
            let _ = self.payload_policies.insert(key, entry, 0);
        }
    }

    /// Kernel programs attached.
    pub fn kernel_probes_attached(&self) -> usize {
        self.links.len()
    }

    /// Files with TLS uprobes and files not probed, per stack.
    pub fn tls_coverage(&self) -> TlsCoverage {
        self.tls.coverage()
    }

    /// Current totals of the kernel-side counters, summed over CPUs.
    pub fn counters(&self) -> Vec<(Counter, u64)> {
        Counter::ALL
            .iter()
            .map(|&counter| {
                let total = self
                    .counters
                    .get(&(counter as u32), 0)
                    .map(|values| values.iter().sum())
                    .unwrap_or(0);
                (counter, total)
            })
            .collect()
    }
}

/// The TLS stacks whose programs loaded.
fn tls_stacks_on(report: &LoadReport) -> Vec<TlsStack> {
    [
        (ProbeGroup::TlsOpenssl, TlsStack::Openssl),
        (ProbeGroup::TlsOpenssl, TlsStack::Gnutls),
        (ProbeGroup::TlsGo, TlsStack::Go),
    ]
    .into_iter()
    .filter(|(group, _)| report.is_on(*group))
    .map(|(_, stack)| stack)
    .collect()
}

/// How the report names a socket lookup.
pub fn socket_lookup_name(lookup: SocketLookup) -> &'static str {
    match lookup {
        SocketLookup::Tracepoints => "the sock_send_length/sock_recv_length tracepoints",
        SocketLookup::FdTable => "walking the file table",
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Holding stops before the held are continued, and those before the probes go (which
        // takes a while): no process waits for the detaching.
        if self.exec_hold.is_some() {
            let config = CaptureConfig {
                hold_new_executables: 0,
                ..self.config
            };
            let _ = write_config(&mut self.ebpf, config);
            self.exec_hold = None;
        }
        let mut links = std::mem::take(&mut self.links);
        links.append(&mut self.tls.take_links());
        links::detach_all(links);
    }
}

/// The ids of the processes (and, for the thread entries forks left, their threads) running
/// now.
pub fn running_pids() -> impl Iterator<Item = u32> {
    let mut seen = HashSet::new();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(move |pid| seen.insert(*pid))
}

/// Hands the memory freed by the start-up work back to the kernel now. The agent's allocator
/// (mimalloc, `main.rs`) keeps freed pages for a second or more and only returns them on later
/// allocator activity, which an idle agent hardly has: aya's parses of the kernel BTF (some
/// 30 MiB, freed as soon as the programs are loaded) stayed resident, under the ring buffer's
/// mapping, for the agent's lifetime. Under another global allocator (the tests') this only
/// tidies mimalloc's own, unused, state.
fn release_freed_memory() {
    let started = std::time::Instant::now();
    // `mi_collect` is part of the mimalloc library that the `mimalloc` crate links in; its
    // Rust binding sits behind a feature that needs one more crate, so it is declared here.
    unsafe extern "C" {
        /// `void mi_collect(bool force)`: with `force`, frees and purges what it can at once.
        fn mi_collect(force: bool);
    }
    // SAFETY: no preconditions; it only touches the allocator's own structures.
    unsafe { mi_collect(true) };
    debug!("allocator collected in {:?}", started.elapsed());
}

/// One scratch slot per possible CPU, as `bpf_get_smp_processor_id` can return any of them.
fn scratch_slots() -> Result<u32, CaptureError> {
    let cpus = aya::util::nr_cpus().map_err(|(path, error)| {
        CaptureError::Settings(format!("cannot count CPUs from {path}: {error}"))
    })?;
    u32::try_from(cpus).map_err(|_| CaptureError::Settings(format!("{cpus} CPUs")))
}

/// Writes the single value of the `CONFIG` map.
fn write_config(ebpf: &mut Ebpf, config: CaptureConfig) -> Result<(), CaptureError> {
    let mut map: Array<_, CaptureConfig> = ebpf
        .map_mut("CONFIG")
        .ok_or(CaptureError::Settings("no CONFIG map".into()))
        .and_then(|map| Array::try_from(map).map_err(map_error("CONFIG")))?;
    map.set(0, config, 0).map_err(map_error("CONFIG"))
}

fn take_map<T>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, CaptureError> {
    let map = ebpf.take_map(name).ok_or(CaptureError::Settings(format!(
        "the kernel object has no map `{name}`"
    )))?;
    convert(map).map_err(map_error(name))
}
