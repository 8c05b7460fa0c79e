//! The kqueue backend (FreeBSD, NetBSD, OpenBSD, DragonFly, macOS), written over
//! [`KqueueKernel`] so the same translation runs on the real kernel and on the simulated one
//! (`dasynq::sim::KqueueSim`, with the `sim` feature).
//!
//! - **Fds**: separate `EVFILT_READ` and `EVFILT_WRITE` filters, `udata` = the core's token,
//!   re-sent with every change (most kernels overwrite `udata` on any change, even a plain
//!   enable or disable). Enabled filters are level-triggered (single-threaded loops) or
//!   `EV_DISPATCH` (threaded loops); enabling is `EV_ADD | EV_ENABLE`, which works whether or
//!   not the filter exists (`EV_ADD` alone does not re-enable an existing knote), disabling is
//!   `EV_DISABLE`, so a pending end-of-file is reported again on enable. `EV_EOF` on the read
//!   filter is [`Readiness::READ_CLOSED`], on the write filter [`Readiness::HANGUP`]; a socket
//!   error in `fflags` is [`Readiness::ERROR`]. Regular files are emulated as always ready on
//!   every kqueue platform: kqueue's own answer for them ("data past the file offset") differs
//!   from poll's, and the same program should behave the same everywhere.
//! - **Changes** of one operation (both filters of a bidirectional fd) go in one `kevent` call
//!   with `EV_RECEIPT` and room for every receipt, so each change's error comes back
//!   attributed to it and no pending event is drained.
//! - **Timers**: one relative `EVFILT_TIMER` per clock, re-armed to the clock's deadline.
//!   kqueue has no portable absolute timer, so system-clock deadlines are re-checked at least
//!   every second: a wall-clock step is followed within a second (on Linux, at once). A
//!   deadline already due when it is set ends the next wait at once (the clock is reported
//!   fired without blocking, as a timerfd set to a past time is on Linux); the kernel timer
//!   is still armed, for its shortest time (NetBSD's `filt_timerattach` refuses `data = 0` with
//!   `EINVAL`, in the sources read), so that a wait another thread is already in ends too.
//! - **Wake**: `EVFILT_USER` triggered with `NOTE_TRIGGER`; a pipe where the kernel refuses
//!   the filter.
//! - **Signals**: `EVFILT_SIGNAL` for each armed signal (it records delivery attempts even for
//!   blocked signals), then each instance is taken with `sigtimedwait`; on systems without it
//!   (macOS, OpenBSD) by a catching handler during a brief unblock (`kernel::sigcatch`). Both
//!   give the whole `siginfo` and never block. kqueue does not report signals already pending
//!   when the filter is added, so arming a signal triggers one check for pending instances.
//! - **Children**: `EVFILT_PROC` with `NOTE_EXIT` (one-shot), then `waitpid(pid)` for that pid
//!   only; a child that is already a zombie when watched (`ESRCH` on NetBSD, OpenBSD and
//!   macOS; FreeBSD and DragonFly report its exit at once) is reaped by the fallback poll.

/// The running BSD or Apple kernel, the [`KqueueKernel`] of
/// [`DefaultBackend`](crate::DefaultBackend).
#[cfg(dasynq_kqueue)]
pub use crate::kernel::{BsdKqueue, KqueueBuffer};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{
    Backend, BackendEvent, ChildHandle, FdMode, KernelError, Registration, Token, WatchedBy,
};
use crate::child::{ChildStatus, SpawnedProcess};
use crate::error::Errno;
use crate::interest::Readiness;
use crate::signal::{SigInfo, Signal, SignalSet};
use crate::timer::Clock;
use crate::waker::Notify;

/// A kqueue filter.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum Filter {
    /// `EVFILT_READ`.
    Read,
    /// `EVFILT_WRITE`.
    Write,
    /// `EVFILT_TIMER`.
    Timer,
    /// `EVFILT_SIGNAL`.
    Signal,
    /// `EVFILT_PROC`.
    Proc,
    /// `EVFILT_USER`.
    User,
}

/// `EV_*` flags (this crate's own bit values; a kernel maps them to its own).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Default)]
pub struct KevFlags(pub u16);

impl KevFlags {
    /// `EV_ADD`.
    pub const ADD: KevFlags = KevFlags(0x0001);
    /// `EV_DELETE`.
    pub const DELETE: KevFlags = KevFlags(0x0002);
    /// `EV_ENABLE`.
    pub const ENABLE: KevFlags = KevFlags(0x0004);
    /// `EV_DISABLE`.
    pub const DISABLE: KevFlags = KevFlags(0x0008);
    /// `EV_ONESHOT`.
    pub const ONESHOT: KevFlags = KevFlags(0x0010);
    /// `EV_CLEAR`.
    pub const CLEAR: KevFlags = KevFlags(0x0020);
    /// `EV_RECEIPT`.
    pub const RECEIPT: KevFlags = KevFlags(0x0040);
    /// `EV_DISPATCH`.
    pub const DISPATCH: KevFlags = KevFlags(0x0080);
    /// `EV_EOF`.
    pub const EOF: KevFlags = KevFlags(0x8000);
    /// `EV_ERROR`.
    pub const ERROR: KevFlags = KevFlags(0x4000);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: KevFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for KevFlags {
    type Output = KevFlags;
    fn bitor(self, rhs: KevFlags) -> KevFlags {
        KevFlags(self.0 | rhs.0)
    }
}

impl core::fmt::Debug for KevFlags {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "KevFlags({:#06x})", self.0)
    }
}

/// `NOTE_EXIT` (this crate's value).
pub const NOTE_EXIT: u32 = 0x8000_0000;
/// `NOTE_TRIGGER` (this crate's value).
pub const NOTE_TRIGGER: u32 = 0x0100_0000;
/// `NOTE_NSECONDS`: the timer's `data` is in nanoseconds (else milliseconds).
pub const NOTE_NSECONDS: u32 = 0x0000_0004;
/// `NOTE_ABSTIME`: the timer's `data` is a time on the system clock (since the epoch), not a
/// period.
pub const NOTE_ABSTIME: u32 = 0x0000_0010;

/// One `struct kevent`, as a change or as an event.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct Kev {
    /// `ident`: the fd, timer id, signal number or pid.
    pub ident: u64,
    /// `filter`.
    pub filter: Filter,
    /// `flags`.
    pub flags: KevFlags,
    /// `fflags`.
    pub fflags: u32,
    /// `data` (for a receipt or error: the errno).
    pub data: i64,
    /// `udata`.
    pub udata: u64,
}

impl Kev {
    /// A change with no `fflags`/`data`.
    pub fn new(ident: u64, filter: Filter, flags: KevFlags, udata: u64) -> Kev {
        Kev {
            ident,
            filter,
            flags,
            fflags: 0,
            data: 0,
            udata,
        }
    }
}

/// What a kqueue implementation offers, where the BSDs and macOS differ. (`EV_RECEIPT` and
/// `EV_DISPATCH` are in every supported release of all five; `EVFILT_USER` is probed when the
/// backend is created: a kernel that refuses it with `EINVAL`, NetBSD before 10 or OpenBSD
/// before 7.8, gets a wake pipe instead.)
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct Features {
    /// `NOTE_NSECONDS` timers (else milliseconds, rounded up).
    pub timer_ns: bool,
    /// `NOTE_ABSTIME` timers in nanoseconds on the system clock (FreeBSD 12, NetBSD 10):
    /// system-clock deadlines are then given to the kernel as they are.
    pub abs_timer: bool,
    /// `sigtimedwait` (else a catching handler and a brief unblock; both give the whole
    /// `siginfo`).
    pub sigtimedwait: bool,
}

/// The system calls the kqueue backend uses, so it can run on the real kernel or a simulated
/// one. Each method mirrors one call; errors are the call's errno.
pub trait KqueueKernel: Clone + Send + Sync + 'static {
    /// A kernel object the backend owns (the kqueue, the wake pipe); closed when dropped.
    type Fd: AsRawFd + Send + Sync + 'static;
    /// A buffer of events filled by a waiting `kevent`.
    type Buffer: Send + 'static;

    /// What this kqueue offers.
    fn features(&self) -> Features;
    /// `kqueue()`.
    fn kqueue(&self) -> Result<Self::Fd, Errno>;
    /// `kevent(kq, changes, receipts, {0, 0})`: apply `changes`; entries the kernel returns
    /// (receipts, errors) go to `receipts`. Returns how many it returned.
    fn kevent_change(
        &self,
        kq: &Self::Fd,
        changes: &[Kev],
        receipts: &mut [Kev],
    ) -> Result<usize, Errno>;
    /// A buffer with room for `capacity` events.
    fn buffer(&self, capacity: usize) -> Result<Self::Buffer, Errno>;
    /// `kevent(kq, NULL, 0, buf, capacity, timeout)`, replacing the buffer's contents (left
    /// empty when the call fails).
    fn kevent_wait(
        &self,
        kq: &Self::Fd,
        buf: &mut Self::Buffer,
        timeout: Option<Duration>,
    ) -> Result<(), Errno>;
    /// The events of the last wait; `None` for one that does not decode (a filter the
    /// backend never registers: a faulty kernel).
    fn buffer_events(buf: &Self::Buffer) -> impl Iterator<Item = Option<Kev>> + '_;
    /// Whether `fd` is a regular file (`fstat`); `EBADF` for a closed one.
    fn is_regular_file(&self, fd: RawFd) -> Result<bool, Errno>;
    /// `clock_gettime(clock)` in nanoseconds.
    fn clock_now(&self, clock: Clock) -> u64;
    /// `pipe2(O_NONBLOCK | O_CLOEXEC)`: `(read, write)`.
    fn pipe(&self) -> Result<(Self::Fd, Self::Fd), Errno>;
    /// Write one byte to a pipe (a full pipe is already readable: not an error to report).
    fn pipe_poke(&self, fd: &Self::Fd);
    /// Read everything from a pipe.
    fn pipe_drain(&self, fd: &Self::Fd);
    /// Whether `signal` is blocked in the calling thread.
    fn signal_blocked(&self, signal: Signal) -> bool;

    /// The registration error for a signal that is not blocked: its message says how to
    /// block it in this kernel (a simulated one keeps its own mask).
    fn not_blocked_error(&self, signal: Signal) -> crate::Error {
        crate::Error::SignalNotBlocked(signal)
    }
    /// Take one pending instance of a signal in `set` without waiting: `sigtimedwait` with a
    /// zero timeout, or `sigpending` + `sigwait` (`Ok(None)`: none pending).
    fn signal_take(&self, set: SignalSet) -> Result<Option<SigInfo>, Errno>;
    /// The backend is done with the signals in `set` (it is dropped): undo whatever taking
    /// them needed (the catching handler where there is no `sigtimedwait`).
    fn signal_release(&self, set: SignalSet);
    /// Whether `pid` is an unreaped child of this process (`ECHILD` if not). Reaps nothing.
    fn probe_child(&self, pid: u32) -> Result<(), Errno>;
    /// `waitpid(pid, WNOHANG)`.
    fn waitpid(&self, pid: u32) -> Result<Option<ChildStatus>, Errno>;
    /// `kill(pid, signal)`.
    fn kill(&self, pid: u32, signal: Signal) -> Result<(), Errno>;
    /// `killpg(pgid, signal)`: every process in group `pgid`.
    fn kill_group(&self, pgid: u32, signal: Signal) -> Result<(), Errno>;
    /// `getpgid(pid)`.
    fn getpgid(&self, pid: u32) -> Result<u32, Errno>;
    /// Start a process (`Command::spawn` on the real kernel) as `how` says (see
    /// [`Backend::spawn`]).
    fn spawn(
        &self,
        cmd: super::ChildCommand<'_>,
        how: super::SpawnHow,
    ) -> Result<SpawnedProcess, Errno>;
}

const TOKEN_CLOCK: [u64; 2] = [Token::RESERVED, Token::RESERVED + 1];
const TOKEN_WAKE: u64 = Token::RESERVED + 2;
const TOKEN_SIGNAL: u64 = Token::RESERVED + 3;
/// The `EVFILT_USER` identifier of the wake channel.
const WAKE_IDENT: u64 = 1;
/// How often system-clock deadlines are re-checked (kqueue timers run on the monotonic
/// clock; this is how a wall-clock step is noticed).
const SYSTEM_RECHECK_NS: u64 = 1_000_000_000;

struct SignalState {
    armed: SignalSet,
    /// Every signal ever armed (released when the backend is dropped).
    used: SignalSet,
    /// An armed signal may have an instance pending that kqueue will not report again:
    /// set when one was armed (kqueue does not report instances already pending when a
    /// filter is added) and after each instance taken or failed take (`EVFILT_SIGNAL` reports
    /// delivery attempts once, not the instances still queued); cleared when a take finds
    /// none. While
    /// set, waits do not block and report [`BackendEvent::SignalsPending`], which gives the
    /// core the level-triggered report that a Linux signalfd gives.
    recheck: bool,
    /// Signals the core asked to disarm whose `EV_DELETE` failed: their knote stayed, so
    /// when the core arms them again nothing changes in the kernel, yet an instance may be
    /// pending that was reported before (the core disarms every signal after a failed take,
    /// counting on the re-arm to look again): arming one of these sets `recheck` too.
    lingering: SignalSet,
}

/// The kqueue backend over kernel `K`.
pub struct Kqueue<K: KqueueKernel> {
    kernel: K,
    kq: Arc<K::Fd>,
    features: Features,
    /// `(read end, write end)` of the wake pipe, where the kernel refuses `EVFILT_USER`.
    wake_pipe: Option<(K::Fd, Arc<K::Fd>)>,
    signals: Mutex<SignalState>,
    /// Per clock: the deadline last set was already due. The next wait does not block and
    /// reports the clock as fired, as a timerfd set to a past time does on Linux: the
    /// kernel timer armed for it (the shortest the kernel takes: 1 ns, or 1 ms where
    /// timers count milliseconds, which OpenBSD and DragonFly round up to a clock tick)
    /// would end the wait later. The timer is armed all the same, to end a wait that began
    /// on another thread before the deadline was set.
    due: [AtomicBool; 2],
}

struct UserNotify<K: KqueueKernel> {
    kernel: K,
    kq: Arc<K::Fd>,
}

impl<K: KqueueKernel> Notify for UserNotify<K> {
    fn notify(&self) {
        let mut t = Kev::new(WAKE_IDENT, Filter::User, KevFlags::default(), TOKEN_WAKE);
        t.fflags = NOTE_TRIGGER;
        // Cannot fail for a registered EVFILT_USER; if it did, the wake is picked up at the
        // loop's next wake-up (the list is checked after every wait).
        let _ = self.kernel.kevent_change(&self.kq, &[t], &mut []);
    }
}

struct PipeNotify<K: KqueueKernel> {
    kernel: K,
    write: Arc<K::Fd>,
}

impl<K: KqueueKernel> Notify for PipeNotify<K> {
    fn notify(&self) {
        self.kernel.pipe_poke(&self.write);
    }
}

fn kerr(call: &'static str) -> impl Fn(Errno) -> KernelError {
    move |errno| KernelError { call, errno }
}

impl<K: KqueueKernel> Kqueue<K> {
    /// The kqueue (for `AsFd` of a loop on the real kernel).
    #[cfg_attr(not(dasynq_kqueue), allow(dead_code))]
    pub(crate) fn kernel_fd(&self) -> &K::Fd {
        &self.kq
    }
}

impl<K: KqueueKernel> Kqueue<K> {
    /// Create the kqueue and the wake channel on `kernel`. Everything created so far is closed
    /// again if a later step fails.
    pub fn with_kernel(kernel: K) -> Result<Self, KernelError> {
        let features = kernel.features();
        let kq = Arc::new(kernel.kqueue().map_err(kerr("kqueue"))?);
        let user = {
            let add = Kev::new(
                WAKE_IDENT,
                Filter::User,
                KevFlags::ADD | KevFlags::CLEAR,
                TOKEN_WAKE,
            );
            match kernel.kevent_change(&kq, &[add], &mut []) {
                Ok(_) => true,
                // A kernel without EVFILT_USER: wake through a pipe instead.
                Err(Errno::INVAL) => false,
                Err(e) => return Err(kerr("kevent(EVFILT_USER)")(e)),
            }
        };
        let wake_pipe = if user {
            None
        } else {
            let (r, w) = kernel.pipe().map_err(kerr("pipe"))?;
            let add = Kev::new(
                r.as_raw_fd() as u64,
                Filter::Read,
                KevFlags::ADD,
                TOKEN_WAKE,
            );
            kernel
                .kevent_change(&kq, &[add], &mut [])
                .map_err(kerr("kevent(EVFILT_READ)"))?;
            Some((r, Arc::new(w)))
        };
        Ok(Kqueue {
            kernel,
            kq,
            features,
            wake_pipe,
            signals: Mutex::new(SignalState {
                armed: SignalSet::new(),
                used: SignalSet::new(),
                recheck: false,
                lingering: SignalSet::new(),
            }),
            due: [AtomicBool::new(false), AtomicBool::new(false)],
        })
    }

    /// The kernel this backend runs on.
    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    /// Apply the changes of one operation, attributing errors: with `EV_RECEIPT`, in one call
    /// per four changes (an operation has at most two). Errors `ignore` lets through are not
    /// errors here (`ENOENT` when deleting what may already be gone). Returns the first error.
    fn apply(
        &self,
        changes: &[Kev],
        call: &'static str,
        ignore: &[Errno],
    ) -> Result<(), KernelError> {
        let mut first = None;
        let mut note = |errno: Errno| {
            if !ignore.contains(&errno) && first.is_none() {
                first = Some(KernelError { call, errno });
            }
        };
        for chunk in changes.chunks(4) {
            let mut batch = [Kev::new(0, Filter::Read, KevFlags::default(), 0); 4];
            for (b, c) in batch.iter_mut().zip(chunk) {
                *b = *c;
                b.flags = b.flags | KevFlags::RECEIPT;
            }
            // Room for a receipt per change: none is dropped, and no change is left undone
            // for want of room (kevent(2), EV_RECEIPT).
            let mut receipts = [Kev::new(0, Filter::Read, KevFlags::default(), 0); 4];
            match self
                .kernel
                .kevent_change(&self.kq, &batch[..chunk.len()], &mut receipts)
            {
                Ok(n) => {
                    for r in &receipts[..n.min(receipts.len())] {
                        if r.flags.contains(KevFlags::ERROR) && r.data != 0 {
                            note(Errno(r.data as i32));
                        }
                    }
                }
                Err(e) => note(e),
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn fd_change(&self, fd: RawFd, filter: Filter, on: bool, oneshot: bool, token: Token) -> Kev {
        let flags = if on {
            let once = if oneshot {
                KevFlags::DISPATCH
            } else {
                KevFlags::default()
            };
            KevFlags::ADD | KevFlags::ENABLE | once
        } else {
            KevFlags::DISABLE
        };
        Kev::new(fd as u64, filter, flags, token.0)
    }

    fn readiness(ev: &Kev) -> Readiness {
        let mut r = match ev.filter {
            Filter::Read => Readiness::READABLE,
            Filter::Write => Readiness::WRITABLE,
            _ => Readiness::EMPTY,
        };
        if ev.flags.contains(KevFlags::EOF) {
            r |= if ev.filter == Filter::Read {
                Readiness::READ_CLOSED
            } else {
                Readiness::HANGUP
            };
            if ev.fflags != 0 {
                r |= Readiness::ERROR;
            }
        }
        if ev.flags.contains(KevFlags::ERROR) {
            r |= Readiness::ERROR;
        }
        r
    }
}

impl<K: KqueueKernel> Drop for Kqueue<K> {
    fn drop(&mut self) {
        let used = self.signals.lock().map_or(SignalSet::new(), |s| s.used);
        self.kernel.signal_release(used);
    }
}

#[cfg(dasynq_kqueue)]
impl Kqueue<crate::kernel::BsdKqueue> {
    /// The kqueue backend on the running kernel.
    pub fn new() -> Result<Self, KernelError> {
        Self::with_kernel(crate::kernel::BsdKqueue)
    }
}

impl<K: KqueueKernel> Backend for Kqueue<K> {
    type Events = K::Buffer;

    fn new_events(&self, capacity: usize) -> Result<K::Buffer, KernelError> {
        self.kernel.buffer(capacity).map_err(kerr("malloc"))
    }

    fn notifier(&self) -> Arc<dyn Notify> {
        match &self.wake_pipe {
            Some((_, w)) => Arc::new(PipeNotify {
                kernel: self.kernel.clone(),
                write: w.clone(),
            }),
            None => Arc::new(UserNotify {
                kernel: self.kernel.clone(),
                kq: self.kq.clone(),
            }),
        }
    }

    fn add_fd(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        reg: Registration,
    ) -> Result<FdMode, KernelError> {
        let raw = fd.as_raw_fd();
        if self.kernel.is_regular_file(raw).map_err(kerr("fstat"))? {
            return Ok(FdMode::Emulated);
        }
        let mut changes = [Kev::new(0, Filter::Read, KevFlags::default(), 0); 2];
        let mut n = 0;
        for (filter, on) in [
            (Filter::Read, reg.interest.is_read()),
            (Filter::Write, reg.interest.is_write()),
        ] {
            if on {
                changes[n] = self.fd_change(raw, filter, true, reg.oneshot, token);
                n += 1;
            }
        }
        match self.apply(&changes[..n], "kevent(EV_ADD)", &[]) {
            Ok(()) => Ok(FdMode::Native),
            Err(e) => {
                // Leave nothing half-registered: drop whichever filter did get in.
                let undo = [
                    Kev::new(raw as u64, Filter::Read, KevFlags::DELETE, 0),
                    Kev::new(raw as u64, Filter::Write, KevFlags::DELETE, 0),
                ];
                match self.apply(&undo, "kevent(EV_DELETE)", &[Errno::NOENT]) {
                    Ok(()) => Err(e),
                    // Part of it is still in: the registration stands, to be completed.
                    Err(_) => Ok(FdMode::Partial(e)),
                }
            }
        }
    }

    fn modify_fd(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        from: Registration,
        to: Registration,
    ) -> Result<(), KernelError> {
        let raw = fd.as_raw_fd();
        let mut changes = [Kev::new(0, Filter::Read, KevFlags::default(), 0); 2];
        let mut n = 0;
        for (filter, had, want) in [
            (Filter::Read, from.interest.is_read(), to.interest.is_read()),
            (
                Filter::Write,
                from.interest.is_write(),
                to.interest.is_write(),
            ),
        ] {
            if want || had {
                changes[n] = self.fd_change(raw, filter, want, to.oneshot, token);
                n += 1;
            }
        }
        // Disabling a one-shot filter that already fired (and, without EV_DISPATCH, was
        // deleted) finds nothing: that is the state wanted.
        self.apply(&changes[..n], "kevent(EV_ADD/EV_DISABLE)", &[Errno::NOENT])
    }

    fn remove_fd(
        &self,
        fd: BorrowedFd<'_>,
        _token: Token,
        _current: Registration,
    ) -> Result<(), KernelError> {
        let raw = fd.as_raw_fd() as u64;
        let del = [
            Kev::new(raw, Filter::Read, KevFlags::DELETE, 0),
            Kev::new(raw, Filter::Write, KevFlags::DELETE, 0),
        ];
        self.apply(&del, "kevent(EV_DELETE)", &[Errno::NOENT])
    }

    fn now(&self, clock: Clock) -> u64 {
        self.kernel.clock_now(clock)
    }

    fn set_deadline(&self, clock: Clock, deadline: Option<u64>) -> Result<(), KernelError> {
        let ident = clock.index() as u64;
        let Some(deadline) = deadline else {
            self.due[clock.index()].store(false, Ordering::Release);
            let del = Kev::new(
                ident,
                Filter::Timer,
                KevFlags::DELETE,
                TOKEN_CLOCK[clock.index()],
            );
            return self.apply(&[del], "kevent(EVFILT_TIMER)", &[Errno::NOENT]);
        };
        let mut ns = deadline.saturating_sub(self.kernel.clock_now(clock));
        self.due[clock.index()].store(ns == 0, Ordering::Release);
        let mut t = Kev::new(
            ident,
            Filter::Timer,
            KevFlags::ADD | KevFlags::ONESHOT,
            TOKEN_CLOCK[clock.index()],
        );
        if clock == Clock::System {
            // No kqueue follows a wall-clock step made after a timer was added (an absolute
            // timer is converted to a relative one when added), so look again at least every
            // second; within the last second, hand the deadline over as it is where the
            // kernel takes absolute timers.
            if self.features.abs_timer && ns <= SYSTEM_RECHECK_NS {
                t.fflags = NOTE_NSECONDS | NOTE_ABSTIME;
                t.data = deadline.min(i64::MAX as u64) as i64;
                return self.apply(&[t], "kevent(EVFILT_TIMER)", &[]);
            }
            ns = ns.min(SYSTEM_RECHECK_NS);
        }
        if self.features.timer_ns {
            t.fflags = NOTE_NSECONDS;
            t.data = ns.max(1).min(i64::MAX as u64) as i64;
        } else {
            // Milliseconds, rounded up so a timer is never early.
            t.data = ns.div_ceil(1_000_000).clamp(1, i64::MAX as u64) as i64;
        }
        self.apply(&[t], "kevent(EVFILT_TIMER)", &[])
    }

    fn wait(&self, events: &mut K::Buffer, timeout: Option<Duration>) -> Result<(), KernelError> {
        let recheck = self.signals.lock().map(|s| s.recheck).unwrap_or(false);
        let due = self.due[0].load(Ordering::Acquire) | self.due[1].load(Ordering::Acquire);
        let timeout = if recheck || due {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        match self.kernel.kevent_wait(&self.kq, events, timeout) {
            Ok(()) | Err(Errno::INTR) => Ok(()),
            Err(errno) => Err(KernelError {
                call: "kevent",
                errno,
            }),
        }
    }

    fn for_each_event(&self, events: &K::Buffer, mut f: impl FnMut(BackendEvent)) {
        let mut signals = false;
        for ev in K::buffer_events(events) {
            let Some(ev) = ev else {
                f(BackendEvent::Garbled);
                continue;
            };
            match ev.udata {
                TOKEN_SIGNAL => signals = true,
                TOKEN_WAKE => {
                    if let Some((r, _)) = &self.wake_pipe {
                        self.kernel.pipe_drain(r);
                    }
                    f(BackendEvent::Wake);
                }
                t if t == TOKEN_CLOCK[0] => f(BackendEvent::Clock(Clock::Monotonic)),
                t if t == TOKEN_CLOCK[1] => f(BackendEvent::Clock(Clock::System)),
                t if t >= Token::RESERVED => f(BackendEvent::Garbled),
                t => f(BackendEvent::Fd {
                    token: Token(t),
                    ready: Self::readiness(&ev),
                }),
            }
        }
        if let Ok(s) = self.signals.lock() {
            signals |= s.recheck;
        }
        // A due deadline's clock, reported once (also when its kernel timer fired: the
        // core takes a clock reported twice as fired once).
        for clock in Clock::ALL {
            if self.due[clock.index()].swap(false, Ordering::AcqRel) {
                f(BackendEvent::Clock(clock));
            }
        }
        if signals {
            f(BackendEvent::SignalsPending);
        }
    }

    fn take_signal(&self) -> Result<Option<SigInfo>, KernelError> {
        let mut s = self.signals.lock().unwrap_or_else(|p| p.into_inner());
        if s.armed.is_empty() {
            s.recheck = false;
            return Ok(None);
        }
        let taken = self.kernel.signal_take(s.armed);
        // Look again after an instance (more may be queued); stop once a take finds none.
        // After a failure the core disarms every signal for one wait and then arms them
        // again, which sets the flag (an instance may still be there, and no new delivery
        // attempt may ever report it); looking again at once would only fail again, and
        // keep every wait from blocking.
        s.recheck = matches!(taken, Ok(Some(_)));
        taken.map_err(kerr("sigtimedwait"))
    }

    fn signal_blocked(&self, signal: Signal) -> bool {
        self.kernel.signal_blocked(signal)
    }

    fn not_blocked_error(&self, signal: Signal) -> crate::Error {
        self.kernel.not_blocked_error(signal)
    }

    fn arm_signals(&self, set: SignalSet) -> Result<(), KernelError> {
        let mut s = self.signals.lock().unwrap_or_else(|p| p.into_inner());
        let mut first = None;
        let mut added = false;
        let old = s.armed;
        for sig in old.iter().chain(set.iter()) {
            let (was, now) = (old.contains(sig), set.contains(sig));
            if was == now {
                if now && s.lingering.contains(sig) {
                    // Wanted off, stayed on, wanted on again: look for what may be pending.
                    s.lingering.remove(sig);
                    s.recheck = true;
                }
                continue;
            }
            let flags = if now { KevFlags::ADD } else { KevFlags::DELETE };
            let ignore: &[Errno] = if now { &[] } else { &[Errno::NOENT] };
            match self.apply(
                &[Kev::new(
                    sig.raw() as u64,
                    Filter::Signal,
                    flags,
                    TOKEN_SIGNAL,
                )],
                "kevent(EVFILT_SIGNAL)",
                ignore,
            ) {
                // Each change is recorded as the kernel took it: after a partial failure the
                // retry redoes only what is missing (a deletion that went through must not
                // be believed still armed, or re-adding it would be skipped).
                Ok(()) if now => {
                    s.armed.add(sig);
                    s.used.add(sig);
                    added = true;
                }
                Ok(()) => {
                    s.armed.remove(sig);
                    s.lingering.remove(sig);
                }
                Err(e) => {
                    if !now {
                        s.lingering.add(sig);
                    }
                    first.get_or_insert(e);
                }
            }
        }
        s.recheck |= added;
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn watch_child(
        &self,
        pid: u32,
        token: Token,
        use_pidfd: bool,
    ) -> Result<ChildHandle, KernelError> {
        self.kernel.probe_child(pid).map_err(kerr("waitid"))?;
        if !use_pidfd {
            return Ok(ChildHandle::fallback(pid, token));
        }
        let mut c = Kev::new(
            u64::from(pid),
            Filter::Proc,
            KevFlags::ADD | KevFlags::ONESHOT,
            token.0,
        );
        c.fflags = NOTE_EXIT;
        match self.apply(&[c], "kevent(EVFILT_PROC)", &[]) {
            Ok(()) => Ok(ChildHandle {
                pid,
                token,
                by: WatchedBy::Registered,
            }),
            // Already exited (a zombie): the poll after the next wait reaps it. Any other
            // refusal (resources): watch it the same way.
            Err(_) => Ok(ChildHandle::fallback(pid, token)),
        }
    }

    fn reap_child(&self, child: &ChildHandle) -> Result<Option<ChildStatus>, KernelError> {
        match self.kernel.waitpid(child.pid) {
            Ok(s) => Ok(s),
            Err(Errno::CHILD) => Ok(Some(ChildStatus::Unknown)),
            Err(errno) => Err(KernelError {
                call: "waitpid",
                errno,
            }),
        }
    }

    fn unwatch_child(&self, child: ChildHandle) {
        if !child.is_fallback() {
            let del = Kev::new(u64::from(child.pid), Filter::Proc, KevFlags::DELETE, 0);
            // Gone already after its one-shot report: nothing to do then.
            let _ = self.apply(&[del], "kevent(EV_DELETE)", &[Errno::NOENT, Errno::SRCH]);
        }
    }

    fn signal_child(&self, child: &ChildHandle, signal: Signal) -> Result<(), KernelError> {
        // Under the loop's state lock, where reaping also happens: the pid cannot have been
        // reaped and recycled.
        self.kernel.kill(child.pid, signal).map_err(kerr("kill"))
    }

    fn signal_child_group(&self, child: &ChildHandle, signal: Signal) -> Result<(), KernelError> {
        self.kernel
            .kill_group(child.pid, signal)
            .map_err(kerr("killpg"))
    }

    fn leads_group(&self, child: &ChildHandle) -> Result<bool, KernelError> {
        self.kernel
            .getpgid(child.pid)
            .map(|g| g == child.pid)
            .map_err(kerr("getpgid"))
    }

    fn spawn(
        &self,
        cmd: super::ChildCommand<'_>,
        how: super::SpawnHow,
    ) -> Result<SpawnedProcess, KernelError> {
        self.kernel.spawn(cmd, how).map_err(kerr("spawn"))
    }
}
