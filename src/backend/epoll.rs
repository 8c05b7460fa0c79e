//! The epoll backend, written over [`EpollKernel`] so that the same translation runs on the
//! real Linux kernel (`LinuxEpoll`) and on the simulated one (`dasynq::sim::EpollSim`, with
//! the `sim` feature).
//!
//! Fds carry the core's token in `epoll_data`. Enabled fds are level-triggered
//! ([`Registration::oneshot`] false) or `EPOLLONESHOT`; a disabled fd keeps its registration
//! and its token, armed `EPOLLONESHOT` with no events, so a hang-up or error is reported once,
//! to the right watcher (the original library cleared the data pointer here and crashed). Files
//! epoll cannot poll (`EPERM`) are reported as [`FdMode::Emulated`]. Timers: one `timerfd` per
//! clock, armed with an absolute time (`TFD_TIMER_ABSTIME`, so system-clock deadlines follow
//! wall-clock steps) and never read: re-arming resets it. Wake: an `eventfd`, edge-triggered
//! and never read (each poke is a new edge; shared mode: one-shot, read and re-armed). Signals: one `signalfd` whose mask is the armed signals, read when the loop asks,
//! as many records per read as it has room for (at most 16), each to its own handler call. Children: a pidfd per watched child, registered under the watcher's token,
//! reaped with `waitid(P_PIDFD)`; the fallback is `waitid(P_PID)`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The running Linux kernel, the [`EpollKernel`] of [`DefaultBackend`](crate::DefaultBackend).
#[cfg(dasynq_epoll)]
pub use crate::kernel::{EpollBuffer, LinuxEpoll, LinuxEventFd};

/// The epoll numbers of the target on Linux (from `libc`); elsewhere, where this backend runs
/// only over the simulated kernel, Linux's numbers as the simulation states them (pinned to
/// `libc`'s whenever the crate is built for Linux).
#[cfg(dasynq_epoll)]
mod abi {
    /// `EPOLLIN`.
    pub const EPOLLIN: u32 = libc::EPOLLIN as u32;
    /// `EPOLLOUT`.
    pub const EPOLLOUT: u32 = libc::EPOLLOUT as u32;
    /// `EPOLLERR`.
    pub const EPOLLERR: u32 = libc::EPOLLERR as u32;
    /// `EPOLLHUP`.
    pub const EPOLLHUP: u32 = libc::EPOLLHUP as u32;
    /// `EPOLLRDHUP`.
    pub const EPOLLRDHUP: u32 = libc::EPOLLRDHUP as u32;
    /// `EPOLLONESHOT`.
    pub const EPOLLONESHOT: u32 = libc::EPOLLONESHOT as u32;
    /// `EPOLLET`.
    pub const EPOLLET: u32 = libc::EPOLLET as u32;
}
#[cfg(not(dasynq_epoll))]
use crate::kernel::sim::linux_abi as abi;

pub use abi::{EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLONESHOT, EPOLLOUT, EPOLLRDHUP};

// `readiness` moves bits by these positions.
const _: () = assert!(
    EPOLLIN == 0x1
        && EPOLLOUT == 0x4
        && EPOLLERR == 0x8
        && EPOLLHUP == 0x10
        && EPOLLRDHUP == 0x2000
);

/// `epoll_ctl` operations.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum CtlOp {
    /// `EPOLL_CTL_ADD`
    Add,
    /// `EPOLL_CTL_MOD`
    Mod,
    /// `EPOLL_CTL_DEL`
    Del,
}

impl CtlOp {
    fn call(self) -> &'static str {
        match self {
            CtlOp::Add => "epoll_ctl(ADD)",
            CtlOp::Mod => "epoll_ctl(MOD)",
            CtlOp::Del => "epoll_ctl(DEL)",
        }
    }
}

/// The system calls the epoll backend uses, so it can run on the real kernel or a simulated
/// one. Each method mirrors one call; errors are the call's errno.
pub trait EpollKernel: Send + Sync + 'static {
    /// A kernel object the backend owns (epoll instance, timerfd); closed when dropped.
    type Fd: AsRawFd + Send + Sync + 'static;
    /// An eventfd, shared with wakers (which write to it from any thread).
    type EventFd: AsRawFd + Notify;
    /// A buffer of `(events, data)` pairs filled by `epoll_wait`.
    type Buffer: Send + 'static;

    /// `epoll_create1(EPOLL_CLOEXEC)`.
    fn epoll_create(&self) -> Result<Self::Fd, Errno>;
    /// `epoll_ctl(ep, op, fd, {events, data})`.
    fn epoll_ctl(
        &self,
        ep: &Self::Fd,
        op: CtlOp,
        fd: RawFd,
        events: u32,
        data: u64,
    ) -> Result<(), Errno>;
    /// A buffer with room for `capacity` events.
    fn buffer(&self, capacity: usize) -> Result<Self::Buffer, Errno>;
    /// `epoll_wait(ep, buf, capacity, timeout)`, replacing the buffer's contents (left empty
    /// when the call fails, so a failed wait never hands back the last wait's events).
    fn epoll_wait(
        &self,
        ep: &Self::Fd,
        buf: &mut Self::Buffer,
        timeout: Option<Duration>,
    ) -> Result<(), Errno>;
    /// The `(events, data)` pairs of the last wait.
    fn buffer_events(buf: &Self::Buffer) -> impl Iterator<Item = (u32, u64)> + '_;
    /// `timerfd_create(clock, TFD_CLOEXEC | TFD_NONBLOCK)`.
    fn timerfd_create(&self, clock: Clock) -> Result<Self::Fd, Errno>;
    /// `timerfd_settime(fd, TFD_TIMER_ABSTIME, deadline)`; `None` disarms.
    fn timerfd_settime(&self, fd: &Self::Fd, deadline: Option<u64>) -> Result<(), Errno>;
    /// `clock_gettime(clock)` in nanoseconds.
    fn clock_now(&self, clock: Clock) -> u64;
    /// `eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)`.
    fn eventfd_create(&self) -> Result<Self::EventFd, Errno>;
    /// Read (and so reset) the eventfd counter.
    fn eventfd_read(&self, fd: &Self::EventFd) -> Result<u64, Errno>;
    /// `signalfd(-1, {}, SFD_NONBLOCK | SFD_CLOEXEC)`.
    fn signalfd_create(&self) -> Result<Self::Fd, Errno>;
    /// `signalfd(fd, set, 0)`: change the set it reports.
    fn signalfd_set_mask(&self, fd: &Self::Fd, set: SignalSet) -> Result<(), Errno>;
    /// Read one instance (`Ok(None)`: none pending in the set).
    fn signalfd_read(&self, fd: &Self::Fd) -> Result<Option<SigInfo>, Errno>;
    /// Read up to `max` instances, handing each to `f`; returns how many (fewer than `max`:
    /// none more pending). A failed read is the answer even after some were read (those
    /// were handed to `f`). signalfd(2): a read
    /// returns as many `signalfd_siginfo` records as fit in the buffer and are pending, so
    /// one system call can take several. The default reads one at a time.
    fn signalfd_read_many(
        &self,
        fd: &Self::Fd,
        max: usize,
        f: &mut dyn FnMut(SigInfo),
    ) -> Result<usize, Errno> {
        crate::signal::take_each(max, f, || self.signalfd_read(fd))
    }
    /// Whether `signal` is blocked in the calling thread (`pthread_sigmask`).
    fn signal_blocked(&self, signal: Signal) -> bool;

    /// The registration error for a signal that is not blocked: its message says how to
    /// block it in this kernel (a simulated one keeps its own mask).
    fn not_blocked_error(&self, signal: Signal) -> crate::Error {
        crate::Error::SignalNotBlocked(signal)
    }
    /// `waitid(P_PID, pid, WEXITED | WNOHANG | WNOWAIT)`: `Ok` if `pid` is an unreaped child
    /// of this process (running or not), `ECHILD` otherwise. Reaps nothing.
    fn probe_child(&self, pid: u32) -> Result<(), Errno>;
    /// `pidfd_open(pid, 0)`.
    fn pidfd_open(&self, pid: u32) -> Result<OwnedFd, Errno>;
    /// Close a pidfd from `pidfd_open` (a simulated kernel forgets its simulated pidfd).
    fn close_pidfd(&self, fd: OwnedFd);
    /// `waitid(P_PIDFD, fd, WEXITED | WNOHANG)`.
    fn waitid_pidfd(&self, fd: BorrowedFd<'_>) -> Result<Option<ChildStatus>, Errno>;
    /// `waitid(P_PID, pid, WEXITED | WNOHANG)`.
    fn waitid_pid(&self, pid: u32) -> Result<Option<ChildStatus>, Errno>;
    /// `pidfd_send_signal(fd, signal, NULL, 0)`.
    fn pidfd_send_signal(&self, fd: BorrowedFd<'_>, signal: Signal) -> Result<(), Errno>;
    /// `kill(pid, signal)`.
    fn kill(&self, pid: u32, signal: Signal) -> Result<(), Errno>;
    /// `kill(-pgid, signal)`: every process in group `pgid`.
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

/// The epoll backend over kernel `K`.
pub struct Epoll<K: EpollKernel> {
    kernel: K,
    ep: K::Fd,
    timers: [K::Fd; 2],
    wake: Arc<K::EventFd>,
    signals: K::Fd,
    /// Several runners wait at once ([`Backend::share_waits`]): the wake eventfd and the
    /// timerfds are registered one-shot, so each readiness wakes one waiter, and re-armed
    /// as they are consumed.
    shared: AtomicBool,
    /// Shared mode: a clock was reported, and its one-shot registration is re-armed by the
    /// next `set_deadline` (which the loop makes after every reported fire).
    clock_fired: [AtomicBool; 2],
    /// Shared mode: re-arming the wake eventfd failed; `wait` retries it, polls every 10 ms
    /// meanwhile, and reports a wake after each wait, so nothing waits on a disarmed
    /// notifier.
    wake_disarmed: AtomicBool,
    /// Shared mode: re-arming the signalfd failed; likewise, reporting signals pending.
    signals_disarmed: AtomicBool,
}

/// How often a wait polls while the shared wake eventfd could not be re-armed.
const WAKE_RETRY: Duration = Duration::from_millis(10);

impl<K: EpollKernel> Epoll<K> {
    /// The epoll instance (for `AsFd` of a loop on the real kernel).
    #[cfg_attr(not(dasynq_epoll), allow(dead_code))]
    pub(crate) fn kernel_fd(&self) -> &K::Fd {
        &self.ep
    }
}

impl<K: EpollKernel> Epoll<K> {
    /// Create the epoll instance, one timerfd per clock and the wake eventfd on `kernel`.
    /// Everything created so far is closed again if a later step fails.
    pub fn with_kernel(kernel: K) -> Result<Self, KernelError> {
        let err = |call| move |errno| KernelError { call, errno };
        let ep = kernel.epoll_create().map_err(err("epoll_create1"))?;
        let mono = kernel
            .timerfd_create(Clock::Monotonic)
            .map_err(err("timerfd_create"))?;
        let sys = kernel
            .timerfd_create(Clock::System)
            .map_err(err("timerfd_create"))?;
        let wake = kernel.eventfd_create().map_err(err("eventfd"))?;
        let signals = kernel.signalfd_create().map_err(err("signalfd"))?;
        let add = |fd: RawFd, events: u32, token: u64| {
            kernel
                .epoll_ctl(&ep, CtlOp::Add, fd, events, token)
                .map_err(err("epoll_ctl(ADD)"))
        };
        add(mono.as_raw_fd(), EPOLLIN, TOKEN_CLOCK[0])?;
        add(sys.as_raw_fd(), EPOLLIN, TOKEN_CLOCK[1])?;
        // Edge-triggered: each write to an eventfd wakes its waiters (eventfd(2): a write
        // that adds to the counter makes it readable anew, eventfd_write's wake-up), so an
        // edge-triggered entry is queued once per poke made since it was last reported, and
        // the counter need never be read (it would take 2^64 pokes to fill). Shared mode
        // makes it one-shot and reads it instead (`share_waits`).
        add(wake.as_raw_fd(), EPOLLIN | EPOLLET, TOKEN_WAKE)?;
        add(signals.as_raw_fd(), EPOLLIN, TOKEN_SIGNAL)?;
        Ok(Epoll {
            kernel,
            ep,
            timers: [mono, sys],
            wake: Arc::new(wake),
            signals,
            shared: AtomicBool::new(false),
            clock_fired: [AtomicBool::new(false), AtomicBool::new(false)],
            wake_disarmed: AtomicBool::new(false),
            signals_disarmed: AtomicBool::new(false),
        })
    }

    /// Re-arm a one-shot internal source (shared mode). epoll(7): with `EPOLLONESHOT` the
    /// fd is disabled after one report, "the user must call epoll_ctl() with
    /// EPOLL_CTL_MOD to rearm the file descriptor with a new event mask"; a source still
    /// ready reports again at once.
    fn rearm_internal(&self, fd: RawFd, token: u64) -> Result<(), KernelError> {
        self.ctl(CtlOp::Mod, fd, EPOLLIN | EPOLLONESHOT, token)
    }

    /// Shared mode: re-arm the one-shot signalfd registration (a failure is retried by
    /// `wait`, which meanwhile reports signals pending after every wait).
    fn rearm_signals(&self) {
        if self.shared.load(Ordering::Acquire)
            && self
                .rearm_internal(self.signals.as_raw_fd(), TOKEN_SIGNAL)
                .is_err()
        {
            self.signals_disarmed.store(true, Ordering::Release);
        }
    }

    /// The registration of a pidfd: one-shot in shared mode (a child exits once; a reap
    /// that does not complete re-arms it).
    fn pidfd_events(&self) -> u32 {
        if self.shared.load(Ordering::Acquire) {
            EPOLLIN | EPOLLONESHOT
        } else {
            EPOLLIN
        }
    }

    /// The kernel this backend runs on.
    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    fn events_for(reg: Registration) -> u32 {
        let mut ev = 0;
        if reg.interest.is_read() {
            ev |= EPOLLIN | EPOLLRDHUP;
        }
        if reg.interest.is_write() {
            ev |= EPOLLOUT;
        }
        if reg.oneshot || reg.interest.is_empty() {
            ev |= EPOLLONESHOT;
        }
        ev
    }

    /// The event a reserved token reports (the loop's own registrations: clocks, notifier,
    /// signalfd).
    #[cold]
    fn reserved_event(&self, data: u64) -> BackendEvent {
        match data {
            TOKEN_SIGNAL => BackendEvent::SignalsPending,
            TOKEN_WAKE => {
                // Edge-triggered (one waiter): the report consumed the poke, nothing to
                // read. Shared mode: reset the counter (a failure, EAGAIN: already
                // drained, leaves nothing to do), then re-arm the one-shot registration,
                // so a poke made since reports again (to one waiter).
                if self.shared.load(Ordering::Acquire) {
                    let _ = self.kernel.eventfd_read(&self.wake);
                    if self
                        .rearm_internal(self.wake.as_raw_fd(), TOKEN_WAKE)
                        .is_err()
                    {
                        self.wake_disarmed.store(true, Ordering::Release);
                    }
                }
                BackendEvent::Wake
            }
            d if d == TOKEN_CLOCK[0] || d == TOKEN_CLOCK[1] => {
                let c = if d == TOKEN_CLOCK[0] {
                    Clock::Monotonic
                } else {
                    Clock::System
                };
                if self.shared.load(Ordering::Acquire) {
                    self.clock_fired[c.index()].store(true, Ordering::Release);
                }
                BackendEvent::Clock(c)
            }
            // A reserved token the backend never registered: a faulty kernel.
            _ => BackendEvent::Garbled,
        }
    }

    #[inline]
    fn readiness(events: u32) -> Readiness {
        // Bit moves, no branches: IN (0x1) -> READABLE, OUT (0x4) -> WRITABLE, RDHUP (0x2000)
        // -> READ_CLOSED, HUP (0x10) -> HANGUP, ERR (0x8) -> ERROR.
        let bits = (events & EPOLLIN)
            | ((events >> 1) & 0x2)
            | ((events >> 11) & 0x4)
            | ((events >> 1) & 0x8)
            | ((events << 1) & 0x10);
        Readiness::from_bits(bits as u8)
    }

    fn ctl(&self, op: CtlOp, fd: RawFd, events: u32, data: u64) -> Result<(), KernelError> {
        self.kernel
            .epoll_ctl(&self.ep, op, fd, events, data)
            .map_err(|errno| KernelError {
                call: op.call(),
                errno,
            })
    }
}

#[cfg(dasynq_epoll)]
impl Epoll<crate::kernel::LinuxEpoll> {
    /// The epoll backend on the running Linux kernel.
    pub fn new() -> Result<Self, KernelError> {
        Self::with_kernel(crate::kernel::LinuxEpoll)
    }
}

impl<K: EpollKernel> Backend for Epoll<K> {
    type Events = K::Buffer;

    fn new_events(&self, capacity: usize) -> Result<K::Buffer, KernelError> {
        self.kernel.buffer(capacity).map_err(|errno| KernelError {
            call: "malloc",
            errno,
        })
    }

    fn notifier(&self) -> Arc<dyn Notify> {
        self.wake.clone()
    }

    fn add_fd(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        reg: Registration,
    ) -> Result<FdMode, KernelError> {
        match self.ctl(CtlOp::Add, fd.as_raw_fd(), Self::events_for(reg), token.0) {
            Ok(()) => Ok(FdMode::Native),
            // epoll(7): EPERM "The target file fd does not support epoll" (regular files,
            // directories).
            Err(KernelError {
                errno: Errno::PERM, ..
            }) => Ok(FdMode::Emulated),
            Err(e) => Err(e),
        }
    }

    fn modify_fd(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        _from: Registration,
        to: Registration,
    ) -> Result<(), KernelError> {
        self.ctl(CtlOp::Mod, fd.as_raw_fd(), Self::events_for(to), token.0)
    }

    fn remove_fd(
        &self,
        fd: BorrowedFd<'_>,
        _token: Token,
        _current: Registration,
    ) -> Result<(), KernelError> {
        self.ctl(CtlOp::Del, fd.as_raw_fd(), 0, 0)
    }

    fn now(&self, clock: Clock) -> u64 {
        self.kernel.clock_now(clock)
    }

    fn set_deadline(&self, clock: Clock, deadline: Option<u64>) -> Result<(), KernelError> {
        let c = clock.index();
        self.kernel
            .timerfd_settime(&self.timers[c], deadline)
            .map_err(|errno| KernelError {
                call: "timerfd_settime",
                errno,
            })?;
        // Shared mode: the setting above reset the timerfd (no longer readable), so the
        // one-shot registration that reported its fire can be re-armed without waking anyone.
        if self.clock_fired[c].swap(false, Ordering::AcqRel) {
            if let Err(e) = self.rearm_internal(self.timers[c].as_raw_fd(), TOKEN_CLOCK[c]) {
                // Retried with the deadline (the loop retries a failed `set_deadline`).
                self.clock_fired[c].store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    fn share_waits(&self) -> Result<(), KernelError> {
        self.rearm_internal(self.wake.as_raw_fd(), TOKEN_WAKE)?;
        self.rearm_internal(self.signals.as_raw_fd(), TOKEN_SIGNAL)?;
        for c in Clock::ALL {
            self.rearm_internal(self.timers[c.index()].as_raw_fd(), TOKEN_CLOCK[c.index()])?;
        }
        self.shared.store(true, Ordering::Release);
        Ok(())
    }

    #[inline]
    fn wait(&self, events: &mut K::Buffer, timeout: Option<Duration>) -> Result<(), KernelError> {
        let mut timeout = timeout;
        for (flag, fd, token) in [
            (&self.wake_disarmed, self.wake.as_raw_fd(), TOKEN_WAKE),
            (
                &self.signals_disarmed,
                self.signals.as_raw_fd(),
                TOKEN_SIGNAL,
            ),
        ] {
            if flag.load(Ordering::Acquire) {
                if self.rearm_internal(fd, token).is_ok() {
                    flag.store(false, Ordering::Release);
                } else {
                    timeout = Some(timeout.map_or(WAKE_RETRY, |t| t.min(WAKE_RETRY)));
                }
            }
        }
        match self.kernel.epoll_wait(&self.ep, events, timeout) {
            Ok(()) => Ok(()),
            Err(Errno::INTR) => Ok(()),
            Err(errno) => Err(KernelError {
                call: "epoll_wait",
                errno,
            }),
        }
    }

    #[inline]
    fn for_each_event(&self, events: &K::Buffer, mut f: impl FnMut(BackendEvent)) {
        for (ev, data) in K::buffer_events(events) {
            // One call of `f` per event: the loop's own registrations are decoded apart.
            let event = if data < Token::RESERVED {
                BackendEvent::Fd {
                    token: Token(data),
                    ready: Self::readiness(ev),
                }
            } else if data == TOKEN_WAKE && !self.shared.load(Ordering::Acquire) {
                // A poke to the one waiter: as common as an fd event in some programs.
                BackendEvent::Wake
            } else {
                self.reserved_event(data)
            };
            f(event);
        }
        if self.wake_disarmed.load(Ordering::Acquire) {
            // The notifier could not be re-armed: take every wait as a possible wake.
            f(BackendEvent::Wake);
        }
        if self.signals_disarmed.load(Ordering::Acquire) {
            f(BackendEvent::SignalsPending);
        }
    }

    fn take_signal(&self) -> Result<Option<SigInfo>, KernelError> {
        let r = self
            .kernel
            .signalfd_read(&self.signals)
            .map_err(|errno| KernelError {
                call: "read(signalfd)",
                errno,
            });
        // Shared mode: drained (or failing), so the one-shot registration can be re-armed
        // without waking anyone for what was just taken; the other re-arm point is
        // `arm_signals` (the loop changes the set when a held instance is delivered).
        if !matches!(r, Ok(Some(_))) {
            self.rearm_signals();
        }
        r
    }

    fn take_signals(&self, max: usize, mut f: impl FnMut(SigInfo)) -> Result<usize, KernelError> {
        let r = self
            .kernel
            .signalfd_read_many(&self.signals, max, &mut f)
            .map_err(|errno| KernelError {
                call: "read(signalfd)",
                errno,
            });
        // As in `take_signal`: drained (fewer than asked for) or failing, re-arm.
        if !matches!(r, Ok(n) if n >= max) {
            self.rearm_signals();
        }
        r
    }

    fn signal_blocked(&self, signal: Signal) -> bool {
        self.kernel.signal_blocked(signal)
    }

    fn not_blocked_error(&self, signal: Signal) -> crate::Error {
        self.kernel.not_blocked_error(signal)
    }

    fn arm_signals(&self, set: SignalSet) -> Result<(), KernelError> {
        self.kernel
            .signalfd_set_mask(&self.signals, set)
            .map_err(|errno| KernelError {
                call: "signalfd",
                errno,
            })?;
        self.rearm_signals();
        Ok(())
    }

    fn watch_child(
        &self,
        pid: u32,
        token: Token,
        use_pidfd: bool,
    ) -> Result<ChildHandle, KernelError> {
        self.kernel.probe_child(pid).map_err(|errno| KernelError {
            call: "waitid",
            errno,
        })?;
        if !use_pidfd {
            return Ok(ChildHandle::fallback(pid, token));
        }
        let fd = match self.kernel.pidfd_open(pid) {
            Ok(fd) => fd,
            // The probe said it is our child, so it exists; be exact anyway.
            Err(Errno::SRCH) => {
                return Err(KernelError {
                    call: "pidfd_open",
                    errno: Errno::CHILD,
                });
            }
            // ENOSYS (old kernel), EMFILE, ENFILE, ENOMEM: watch it the old way.
            Err(_) => return Ok(ChildHandle::fallback(pid, token)),
        };
        match self.kernel.epoll_ctl(
            &self.ep,
            CtlOp::Add,
            fd.as_raw_fd(),
            self.pidfd_events(),
            token.0,
        ) {
            Ok(()) => Ok(ChildHandle {
                pid,
                token,
                by: WatchedBy::Pidfd(fd),
            }),
            Err(_) => {
                self.kernel.close_pidfd(fd);
                Ok(ChildHandle::fallback(pid, token))
            }
        }
    }

    fn reap_child(&self, child: &ChildHandle) -> Result<Option<ChildStatus>, KernelError> {
        let r = match &child.by {
            WatchedBy::Pidfd(fd) => {
                let r = self.kernel.waitid_pidfd(fd.as_fd());
                if !matches!(r, Ok(Some(_)) | Err(Errno::CHILD)) {
                    // Not reaped (a spurious report, or a failure): a one-shot pidfd must
                    // report again. (Level-triggered, this changes nothing.)
                    let _ = self.ctl(
                        CtlOp::Mod,
                        fd.as_raw_fd(),
                        self.pidfd_events(),
                        child.token.0,
                    );
                }
                r
            }
            _ => self.kernel.waitid_pid(child.pid),
        };
        match r {
            Ok(s) => Ok(s),
            Err(Errno::CHILD) => Ok(Some(ChildStatus::Unknown)),
            Err(errno) => Err(KernelError {
                call: "waitid",
                errno,
            }),
        }
    }

    fn unwatch_child(&self, child: ChildHandle) {
        if let WatchedBy::Pidfd(fd) = child.by {
            // Closing removes it from the epoll set anyway; deleting first keeps a duplicate
            // elsewhere from leaving a stale registration. Errors change nothing here.
            let _ = self
                .kernel
                .epoll_ctl(&self.ep, CtlOp::Del, fd.as_raw_fd(), 0, 0);
            self.kernel.close_pidfd(fd);
        }
    }

    fn signal_child(&self, child: &ChildHandle, signal: Signal) -> Result<(), KernelError> {
        match &child.by {
            WatchedBy::Pidfd(fd) => {
                self.kernel
                    .pidfd_send_signal(fd.as_fd(), signal)
                    .map_err(|errno| KernelError {
                        call: "pidfd_send_signal",
                        errno,
                    })
            }
            _ => self
                .kernel
                .kill(child.pid, signal)
                .map_err(|errno| KernelError {
                    call: "kill",
                    errno,
                }),
        }
    }

    fn signal_child_group(&self, child: &ChildHandle, signal: Signal) -> Result<(), KernelError> {
        self.kernel
            .kill_group(child.pid, signal)
            .map_err(|errno| KernelError {
                call: "kill(-pgid)",
                errno,
            })
    }

    fn leads_group(&self, child: &ChildHandle) -> Result<bool, KernelError> {
        self.kernel
            .getpgid(child.pid)
            .map(|g| g == child.pid)
            .map_err(|errno| KernelError {
                call: "getpgid",
                errno,
            })
    }

    fn spawn(
        &self,
        cmd: super::ChildCommand<'_>,
        how: super::SpawnHow,
    ) -> Result<SpawnedProcess, KernelError> {
        self.kernel.spawn(cmd, how).map_err(|errno| KernelError {
            call: "spawn",
            errno,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::sim::EpollSim;

    #[test]
    fn epoll_bits_map_to_readiness() {
        type E = Epoll<EpollSim>;
        assert_eq!(E::readiness(EPOLLIN), Readiness::READABLE);
        assert_eq!(E::readiness(EPOLLOUT), Readiness::WRITABLE);
        assert_eq!(E::readiness(EPOLLRDHUP), Readiness::READ_CLOSED);
        assert_eq!(E::readiness(EPOLLHUP), Readiness::HANGUP);
        assert_eq!(E::readiness(EPOLLERR), Readiness::ERROR);
        assert_eq!(
            E::readiness(EPOLLONESHOT | EPOLLET | 0x2 | 0x40),
            Readiness::EMPTY
        );
        assert_eq!(
            E::readiness(EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLHUP | EPOLLERR),
            Readiness::READABLE
                | Readiness::WRITABLE
                | Readiness::READ_CLOSED
                | Readiness::HANGUP
                | Readiness::ERROR
        );
    }
}
