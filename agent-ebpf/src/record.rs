//! Building records and handing them to userspace through `EVENTS`.

use core::ffi::c_void;

use agent_common::{
    ConnKey, Counter, DataEvent, DataHeader, EventKind, LifecycleEvent, data_flags,
    event::{MAX_FRAMED_RECORDS, MAX_PAYLOAD, SCRATCH_PAYLOAD, UNKNOWN_OFFSET},
};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_probe_read_user,
        generated::{self, bpf_ktime_get_ns},
    },
};

use crate::{
    conn,
    maps::{CONFIG, CONNS, EVENTS, FRAMED_CALLS, IOVEC_WALKS, MESSAGE_WALKS, SCRATCH, count},
};
use aya_ebpf::maps::{LruHashMap, PerCpuArray};

/// Most iovecs walked per call (the kernel's own `UIO_MAXIOV`); beyond it the rest of the call
/// is counted in `len` but not captured.
const MAX_IOVECS: u32 = 1024;

/// Userspace drains the ring on a short timer, so records only force a wake-up once this much
/// is waiting. One wake-up per record would cost a context switch per syscall.
const WAKEUP_THRESHOLD: u64 = 256 * 1024;

/// Most messages walked per `recvmmsg`/`sendmmsg`; beyond them the call is marked truncated.
const MAX_MESSAGES: u32 = 8;
/// `sizeof(struct mmsghdr)` and the offsets used inside it and `struct msghdr` (x86_64 ABI).
const MMSGHDR_SIZE: u64 = 64;
/// `msghdr.msg_iov`.
pub const MSGHDR_IOV: u64 = 16;
/// `msghdr.msg_iovlen`.
pub const MSGHDR_IOVLEN: u64 = 24;
/// `mmsghdr.msg_len`.
const MMSGHDR_LEN: u64 = 56;

/// Where a call's bytes are in user memory: one contiguous buffer, or an array of iovecs.
/// A plain struct rather than an enum, as it is kept in map values.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UserBytes {
    /// The buffer, or the iovec array.
    addr: u64,
    /// Number of iovecs at `addr`; unused for a buffer.
    iov_count: u64,
    /// Non-zero for an iovec array.
    vectored: u64,
}

impl UserBytes {
    /// One contiguous buffer.
    #[inline(always)]
    pub fn buffer(addr: u64) -> Self {
        Self {
            addr,
            iov_count: 0,
            vectored: 0,
        }
    }

    /// An array of `count` iovecs.
    #[inline(always)]
    pub fn iovecs(iov: u64, count: u64) -> Self {
        Self {
            addr: iov,
            iov_count: count,
            vectored: 1,
        }
    }
}

/// Who moved the bytes: the fixed fields of a data record.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataSource {
    /// `pid_tgid` of the calling thread.
    pub pid_tgid: u64,
    /// Socket fd.
    pub fd: i32,
    /// Kernel socket, 0 when unknown.
    pub sock: u64,
    /// `agent_common::Direction` as `u32`.
    pub direction: u32,
    /// [`data_flags`] known before copying.
    pub flags: u32,
    /// Stream offset of the first byte (`agent_common::event::UNKNOWN_OFFSET` when not counted).
    pub offset: u64,
}

/// A data record being assembled in the per-CPU scratch buffer.
pub struct DataRecord {
    event: *mut DataEvent,
    captured: u32,
    limit: u32,
}

impl DataRecord {
    /// Starts a record for a call that moved `len` bytes, to hold at most the capture cap;
    /// `None` when the scratch slot or the config is missing (never after a successful load).
    #[inline(always)]
    pub fn start(source: DataSource, len: u64) -> Option<Self> {
        Self::start_within(source, len, CONFIG.get(0)?.capture_cap)
    }

    /// As [`DataRecord::start`], to hold at most `cap` bytes (and never more than
    /// [`MAX_PAYLOAD`]).
    #[inline(always)]
    pub fn start_within(source: DataSource, len: u64, cap: u32) -> Option<Self> {
        // SAFETY: helper without arguments. Programs do not migrate between CPUs while they run
        // and do not nest on one CPU, so the slot is this program's alone until it returns.
        let cpu = unsafe { generated::bpf_get_smp_processor_id() };
        let event = SCRATCH.get_ptr_mut(cpu)?;
        let limit = at_most(
            if len < cap as u64 { len as u32 } else { cap },
            MAX_PAYLOAD as u32,
        );
        // SAFETY: `event` points into this CPU's scratch slot.
        unsafe {
            let header = &mut (*event).header;
            header.kind = EventKind::Data as u32;
            header.direction = source.direction;
            header.flags = source.flags;
            header.tgid = (source.pid_tgid >> 32) as u32;
            header.tid = source.pid_tgid as u32;
            header.fd = source.fd;
            header.sock = source.sock;
            header.len = len;
            header.captured = 0;
            header.reserved = 0;
            header.offset = source.offset;
            header.ts_ns = bpf_ktime_get_ns();
            header.comm = bpf_get_current_comm().unwrap_or([0; 16]);
        }
        Some(Self {
            event,
            captured: 0,
            limit,
        })
    }

    /// Appends up to `len` bytes from user memory at `src`, within the capture cap.
    #[inline(always)]
    pub fn append_user(&mut self, src: u64, len: u64) {
        match copy_user(self.event, self.captured, self.limit, src, len) {
            Ok(captured) => self.captured = captured,
            Err(()) => {
                self.set_flag(data_flags::READ_FAILED);
                // Stop here: later bytes would sit at the wrong offsets.
                self.limit = self.captured;
            }
        }
    }

    /// Appends `len` bytes of `bytes`, from `skip` bytes into them.
    #[inline(always)]
    pub fn append(&mut self, bytes: UserBytes, skip: u64, len: u64) {
        if bytes.vectored == 0 {
            self.append_user(bytes.addr + skip, len);
        } else {
            self.append_iovecs(bytes.addr, bytes.iov_count, skip, len);
        }
    }

    /// Appends the buffers of an iovec array, past the first `skip` bytes, up to `len` bytes in
    /// all. The walk runs in `bpf_loop` with its state in [`IOVEC_WALKS`], so the verifier
    /// checks the callback about once instead of once per iovec.
    #[inline(always)]
    pub fn append_iovecs(&mut self, iov: u64, iov_count: u64, skip: u64, len: u64) {
        let state = IovecWalk {
            iov,
            count: iov_count,
            skip,
            left: len,
            captured: self.captured,
            limit: self.limit,
            failed: 0,
            reserved: 0,
        };
        let Some(walk) = run_loop(&IOVEC_WALKS, state, MAX_IOVECS, copy_iovec) else {
            return;
        };
        self.captured = walk.captured;
        if walk.failed != 0 {
            self.set_flag(data_flags::READ_FAILED);
        }
        if iov_count > MAX_IOVECS as u64 && walk.left > 0 && walk.captured < walk.limit {
            count(Counter::IovecTruncated);
            self.set_flag(data_flags::IOV_TRUNCATED);
        }
    }

    /// The first `N` payload bytes, once that many were copied, for protocol sniffing.
    #[inline(always)]
    pub fn first_bytes<const N: usize>(&self) -> Option<[u8; N]> {
        // SAFETY: `event` points into this CPU's scratch slot, whose payload is far longer
        // than any N asked for.
        unsafe { leading_bytes((*self.event).payload.as_ptr(), self.captured) }
    }

    /// Sets the stream offset of the record's first byte.
    #[inline(always)]
    pub fn set_offset(&mut self, offset: u64) {
        // SAFETY: `event` points into this CPU's scratch slot.
        unsafe { (*self.event).header.offset = offset };
    }

    /// Adds a [`data_flags`] bit.
    #[inline(always)]
    pub fn set_flag(&mut self, flag: u32) {
        // SAFETY: `event` points into this CPU's scratch slot.
        unsafe { (*self.event).header.flags |= flag };
    }

    /// Copies the header and the captured payload into the ring buffer.
    #[inline(always)]
    pub fn submit(self) {
        let captured = at_most(self.captured, MAX_PAYLOAD as u32);
        // SAFETY: `event` points into this CPU's scratch slot.
        unsafe { (*self.event).header.captured = captured };
        let size = core::mem::size_of::<DataHeader>() + captured as usize;
        const _: () = assert!(SCRATCH_PAYLOAD >= MAX_PAYLOAD);
        // SAFETY: the scratch slot holds the header followed by at least MAX_PAYLOAD bytes.
        let bytes = unsafe { core::slice::from_raw_parts(self.event as *const u8, size) };
        output(bytes);
    }
}

/// Payload bytes a [`StashedRecord`] keeps: enough for a request's head and a small body.
pub const STASHED_PAYLOAD: usize = 4096;

/// A data record kept in a map until its socket is known: the first bytes of a [`DataEvent`],
/// so that the scratch slot can be copied into it as it is.
#[repr(C)]
pub struct StashedRecord {
    /// As assembled; `fd`, `sock` and `offset` are set when it is sent.
    pub header: DataHeader,
    /// The first [`STASHED_PAYLOAD`] bytes of the payload.
    pub payload: [u8; STASHED_PAYLOAD],
}

impl DataRecord {
    /// Keeps the record in `stash` under `key` instead of sending it (at most its first
    /// [`STASHED_PAYLOAD`] bytes), for [`send_stashed`].
    #[inline(always)]
    pub fn stash(self, stash: &LruHashMap<u64, StashedRecord>, key: u64) {
        let captured = at_most(self.captured, STASHED_PAYLOAD as u32);
        // SAFETY: `event` points into this CPU's scratch slot, whose first bytes have the
        // layout of a `StashedRecord` (same header, then payload bytes), and which is larger.
        unsafe {
            (*self.event).header.captured = captured;
            let _ = stash.insert(&key, &*(self.event as *const StashedRecord), 0);
        }
    }
}

impl StashedRecord {
    /// The first `N` payload bytes, once that many were captured, for protocol sniffing.
    ///
    /// # Safety
    /// `record` points to a valid map value and `N` is at most [`STASHED_PAYLOAD`].
    #[inline(always)]
    pub unsafe fn first_bytes<const N: usize>(record: *const Self) -> Option<[u8; N]> {
        // SAFETY: per the function's contract.
        unsafe { leading_bytes((*record).payload.as_ptr(), (*record).header.captured) }
    }
}

/// The first `N` of the `captured` bytes at `payload`, or `None` when fewer were captured.
///
/// # Safety
/// `payload` holds at least `N` readable bytes.
#[inline(always)]
unsafe fn leading_bytes<const N: usize>(payload: *const u8, captured: u32) -> Option<[u8; N]> {
    if (captured as usize) < N {
        return None;
    }
    let mut bytes = [0u8; N];
    for (i, byte) in bytes.iter_mut().enumerate() {
        // SAFETY: i < N, within the caller's promise.
        *byte = unsafe { *payload.add(i) };
    }
    Some(bytes)
}

/// Sends a stashed record as the bytes of socket `fd` (holding `sock`) at stream `offset`.
#[inline(always)]
pub fn send_stashed(record: *mut StashedRecord, fd: i32, sock: u64, offset: u64) {
    // SAFETY: `record` points to a map value, valid for the program's run.
    let captured = unsafe {
        (*record).header.fd = fd;
        (*record).header.sock = sock;
        (*record).header.offset = offset;
        at_most((*record).header.captured, STASHED_PAYLOAD as u32)
    };
    let size = core::mem::size_of::<DataHeader>() + captured as usize;
    // SAFETY: the value holds the header followed by STASHED_PAYLOAD bytes.
    let bytes = unsafe { core::slice::from_raw_parts(record as *const u8, size) };
    output(bytes);
}

/// A `bpf_loop` callback: gets the loop index and returns 1 to stop the loop.
type LoopBody = extern "C" fn(u64, *mut c_void) -> i64;

/// Runs `body` for indices from 0 up to `count` in `bpf_loop`, until it returns 1, with the
/// loop's `state` in this CPU's slot of `map`, where the body reads and updates it (see
/// `maps::IOVEC_WALKS` for why not on the stack). Returns the state as the loop left it; `None`
/// (and no loop) only if the slot is missing, which a loaded object never lacks.
#[inline(always)]
fn run_loop<T>(
    map: &'static PerCpuArray<T>,
    state: T,
    count: u32,
    body: LoopBody,
) -> Option<&'static mut T> {
    let slot = map.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot of a per-CPU map, the program's own until it returns (programs
    // neither migrate nor nest on a CPU); `body` has the signature bpf_loop calls, and takes
    // its state from the map, not from the context pointer.
    unsafe {
        *slot = state;
        generated::bpf_loop(count, body as *mut c_void, core::ptr::null_mut(), 0);
        Some(&mut *slot)
    }
}

/// The state of the loop a `bpf_loop` body runs in (see [`run_loop`]).
#[inline(always)]
fn loop_state<T>(map: &'static PerCpuArray<T>) -> Option<&'static mut T> {
    // SAFETY: as in `run_loop`, which filled the slot before the loop started.
    map.get_ptr_mut(0).map(|slot| unsafe { &mut *slot })
}

/// `value` as a number LLVM knows nothing about. The verifier must see every bound it relies on
/// as a comparison with a constant (older verifiers, such as Linux 6.1's, learn nothing from a
/// comparison of two registers), and LLVM drops such a comparison when it can prove it
/// redundant from one it already made between registers.
#[inline(always)]
fn opaque(value: u32) -> u32 {
    // SAFETY: reads a local.
    unsafe { core::ptr::read_volatile(&value) }
}

/// `value`, but never above the constant `bound`, clamped in a way every verifier follows
/// (see [`opaque`]).
#[inline(always)]
fn at_most(value: u32, bound: u32) -> u32 {
    let value = opaque(value);
    if value > bound { bound } else { value }
}

/// Copies up to `len` bytes from user memory at `src` into the payload of `event` at `offset`,
/// never past `limit`. Returns the new payload length, or `Err` when the read failed.
#[inline(always)]
fn copy_user(
    event: *mut DataEvent,
    offset: u32,
    limit: u32,
    src: u64,
    len: u64,
) -> Result<u32, ()> {
    let offset = opaque(offset);
    if offset >= MAX_PAYLOAD as u32 || offset >= limit {
        return Ok(offset);
    }
    let room = limit - offset;
    let n = at_most(
        if len < room as u64 { len as u32 } else { room },
        MAX_PAYLOAD as u32,
    );
    // SAFETY: offset < MAX_PAYLOAD and n <= MAX_PAYLOAD, so the write stays inside the
    // SCRATCH_PAYLOAD (= 2 * MAX_PAYLOAD) bytes of the payload array.
    let rc = unsafe {
        let dst = (*event).payload.as_mut_ptr().add(offset as usize);
        generated::bpf_probe_read_user(dst as *mut c_void, n, src as *const c_void)
    };
    if rc < 0 {
        count(Counter::UserReadFailed);
        return Err(());
    }
    Ok(offset + n)
}

/// State of an iovec walk, shared with the `bpf_loop` callback through [`IOVEC_WALKS`].
#[repr(C)]
pub struct IovecWalk {
    iov: u64,
    count: u64,
    /// Bytes still to pass over before copying starts.
    skip: u64,
    left: u64,
    captured: u32,
    limit: u32,
    failed: u32,
    reserved: u32,
}

/// `bpf_loop` callback: copies iovec number `index`; returns 1 to stop the walk.
extern "C" fn copy_iovec(index: u64, _context: *mut c_void) -> i64 {
    let Some(walk) = loop_state(&IOVEC_WALKS) else {
        return 1;
    };
    if index >= walk.count || walk.left == 0 || walk.captured >= walk.limit {
        return 1;
    }
    // SAFETY: user read through the helper, which checks the address.
    let Ok([base, vec_len]) =
        (unsafe { bpf_probe_read_user((walk.iov + index * 16) as *const [u64; 2]) })
    else {
        count(Counter::UserReadFailed);
        walk.failed = 1;
        return 1;
    };
    if walk.skip >= vec_len {
        walk.skip -= vec_len;
        return 0;
    }
    let (base, vec_len) = (base + walk.skip, vec_len - walk.skip);
    walk.skip = 0;
    let take = if vec_len < walk.left {
        vec_len
    } else {
        walk.left
    };
    walk.left -= take;
    // SAFETY: helper without arguments; see `DataRecord::start` for why the slot is ours.
    let cpu = unsafe { generated::bpf_get_smp_processor_id() };
    let Some(event) = SCRATCH.get_ptr_mut(cpu) else {
        return 1;
    };
    match copy_user(event, walk.captured, walk.limit, base, take) {
        Ok(captured) => {
            walk.captured = captured;
            0
        }
        Err(()) => {
            walk.failed = 1;
            1
        }
    }
}

/// A call of a framed connection being cut into records, shared with the `bpf_loop` callback
/// through [`FRAMED_CALLS`]. Each record's place comes from the loop index.
#[repr(C)]
pub struct FramedCall {
    source: DataSource,
    bytes: UserBytes,
    /// Bytes the call moved.
    len: u64,
    /// Where recording stops: `len`, or the framed cap.
    end: u64,
}

/// Sends a call of a framed connection as consecutive records of at most [`MAX_PAYLOAD`]
/// bytes, up to the framed cap, so that no frame header inside it is lost. Each record's `len`
/// is its own part, except the last one's, which also counts the bytes past the cap (a gap for
/// userspace). `source.offset` is where the call starts.
#[inline(always)]
pub fn submit_framed(source: DataSource, len: u64, bytes: UserBytes) {
    let Some(config) = CONFIG.get(0) else {
        return;
    };
    let cap = config.framed_cap as u64;
    let call = FramedCall {
        source,
        bytes,
        len,
        end: if len < cap { len } else { cap },
    };
    run_loop(&FRAMED_CALLS, call, MAX_FRAMED_RECORDS, emit_framed_record);
}

/// `bpf_loop` callback: sends record number `index` of a framed call; returns 1 when done.
extern "C" fn emit_framed_record(index: u64, _context: *mut c_void) -> i64 {
    let Some(call) = loop_state(&FRAMED_CALLS) else {
        return 1;
    };
    let done = index * MAX_PAYLOAD as u64;
    if done >= call.end {
        return 1;
    }
    let left = call.end - done;
    let part = if left < MAX_PAYLOAD as u64 {
        left
    } else {
        MAX_PAYLOAD as u64
    };
    let record_len = if done + part >= call.end {
        call.len - done
    } else {
        part
    };
    let mut source = call.source;
    if source.offset != UNKNOWN_OFFSET {
        source.offset += done;
    }
    let Some(mut record) = DataRecord::start_within(source, record_len, part as u32) else {
        return 1;
    };
    record.append(call.bytes, done, part);
    record.submit();
    0
}

/// A `recvmmsg`/`sendmmsg` being walked, shared with the `bpf_loop` callback through
/// [`MESSAGE_WALKS`].
#[repr(C)]
pub struct MessageWalk {
    source: DataSource,
    /// The `struct mmsghdr` array.
    messages: u64,
    /// Messages the call moved.
    count: u64,
}

/// Sends one record per message of a `recvmmsg`/`sendmmsg` that moved `count` messages,
/// walking at most [`MAX_MESSAGES`]; each message's bytes are counted on the connection's
/// offsets as it is sent.
#[inline(always)]
pub fn submit_messages(source: DataSource, messages: u64, count: u64) {
    let walk = MessageWalk {
        source,
        messages,
        count,
    };
    run_loop(&MESSAGE_WALKS, walk, MAX_MESSAGES, emit_message);
}

/// `bpf_loop` callback: sends message number `index`; returns 1 when done.
extern "C" fn emit_message(index: u64, _context: *mut c_void) -> i64 {
    let Some(walk) = loop_state(&MESSAGE_WALKS) else {
        return 1;
    };
    if index >= walk.count {
        return 1;
    }
    let msg = walk.messages + index * MMSGHDR_SIZE;
    // SAFETY: user reads through the helper.
    let len = unsafe { bpf_probe_read_user((msg + MMSGHDR_LEN) as *const u32) }.unwrap_or(0);
    // SAFETY: as above.
    let iov = unsafe { bpf_probe_read_user((msg + MSGHDR_IOV) as *const u64) }.unwrap_or(0);
    // SAFETY: as above.
    let iov_count =
        unsafe { bpf_probe_read_user((msg + MSGHDR_IOVLEN) as *const u64) }.unwrap_or(0);
    let mut source = walk.source;
    let key = ConnKey {
        tgid: (source.pid_tgid >> 32) as u32,
        fd: source.fd,
    };
    source.offset = match CONNS.get_ptr_mut(&key) {
        Some(state) => conn::advance(state, source.direction, len as u64),
        None => UNKNOWN_OFFSET,
    };
    let last_walked = index + 1 == MAX_MESSAGES as u64 && walk.count > MAX_MESSAGES as u64;
    let Some(mut record) = DataRecord::start(source, len as u64) else {
        return 1;
    };
    record.append_iovecs(iov, iov_count, 0, len as u64);
    if last_walked {
        count(Counter::IovecTruncated);
        record.set_flag(data_flags::IOV_TRUNCATED);
    }
    record.submit();
    0
}

/// Records a call whose bytes moved inside the kernel: counted, not captured.
#[inline(always)]
pub fn submit_gap(source: DataSource, len: u64) {
    if let Some(mut record) = DataRecord::start(source, len) {
        record.limit = 0;
        record.set_flag(data_flags::GAP);
        record.submit();
    }
}

/// Sends a lifecycle record.
#[inline(always)]
pub fn submit_lifecycle(kind: EventKind, tgid: u32, fd: i32, sock: u64) {
    let event = LifecycleEvent {
        kind: kind as u32,
        tgid,
        fd,
        reserved: 0,
        sock,
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    };
    // SAFETY: `event` is a plain repr(C) value; viewing it as bytes is sound.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            &event as *const LifecycleEvent as *const u8,
            core::mem::size_of::<LifecycleEvent>(),
        )
    };
    output(bytes);
}

/// Ring-buffer flags for a new record: wake the reader only once enough is waiting.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    let pending = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let flags = if pending >= WAKEUP_THRESHOLD {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    flags as u64
}

/// Writes one record to `EVENTS`, counting it or its loss.
#[inline(always)]
pub fn output(bytes: &[u8]) {
    match EVENTS.output::<[u8]>(bytes, wakeup_flags()) {
        Ok(()) => count(Counter::EventsSent),
        Err(_) => count(Counter::RingBufferFull),
    }
}
