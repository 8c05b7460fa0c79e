//! The `Backend` trait: what the portable loop core asks of an OS facility (or a simulation).
//!
//! A backend registers fds with the kernel, keeps one deadline per clock, waits, and reports
//! what happened as [`BackendEvent`]s. It knows nothing of watchers, priorities or handlers:
//! the core owns all of that and hands the backend only [`Token`]s, which come back with every
//! fd event. Backends: [`Epoll`] (Linux, over any [`EpollKernel`](epoll::EpollKernel), real or
//! simulated), [`Kqueue`] (the BSDs and macOS, over any [`KqueueKernel`](kqueue::KqueueKernel),
//! real or simulated) and, with the `sim` feature, `dasynq::sim::Sim` (virtual time,
//! deterministic).

use std::os::fd::{BorrowedFd, OwnedFd};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::child::{ChildStatus, SpawnedProcess};
use crate::error::Errno;
use crate::interest::{Interest, Readiness};
use crate::signal::{SigInfo, Signal, SignalSet};
use crate::timer::Clock;
use crate::waker::Notify;

// Elsewhere than Linux the epoll backend only runs over the simulated kernel.
#[cfg(any(dasynq_epoll, test, feature = "sim"))]
pub mod epoll;
pub mod kqueue;
#[cfg(feature = "model")]
#[cfg_attr(docsrs, doc(cfg(feature = "model")))]
pub mod model;
#[cfg(any(test, feature = "sim"))]
pub(crate) mod sim;

#[cfg(any(dasynq_epoll, test, feature = "sim"))]
pub use epoll::Epoll;
pub use kqueue::Kqueue;
#[cfg(feature = "model")]
pub use model::Model;

/// The core's name for an fd registration; the backend stores it with the registration (in
/// `epoll_data`, kqueue's `udata`) and reports it with every event. It encodes the watcher's
/// slot index and generation, so an event that outlives its watcher is recognised and
/// dropped. Values with the top bit set are reserved for a backend's own objects.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct Token(pub u64);

impl Token {
    /// The first value a backend may use for its own objects (timers, wake channel).
    pub const RESERVED: u64 = 1 << 63;
}

/// How an fd should be armed in the kernel.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct Registration {
    /// The directions to report. Empty means "disabled": the kernel may still report an
    /// error or hang-up once (epoll always does), and the backend must arrange that such a
    /// report is not repeated until the next change.
    pub interest: Interest,
    /// Disarm after each report (the threaded flavour), instead of level-triggered reports
    /// while ready (the single-threaded flavour).
    pub oneshot: bool,
}

/// Whether the kernel polls an fd or the loop must treat it as always ready.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum FdMode {
    /// The kernel reports readiness.
    Native,
    /// The kernel cannot poll this fd (a regular file or directory): nothing was registered.
    Emulated,
    /// The kernel took part of the registration, refused the rest with this error, and the
    /// part it took could not be taken back (kqueue registers each filter on its own). The
    /// registration stands: the loop counts the error as a kernel fault and resends the whole
    /// registration before its next wait, as for a failed enable, since a refused
    /// registration would leave the accepted part reporting under a token nobody owns.
    Partial(KernelError),
}

/// A failed kernel call.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct KernelError {
    /// The call, as a short name such as `"epoll_ctl(ADD)"`.
    pub call: &'static str,
    /// What it answered.
    pub errno: Errno,
}

impl core::fmt::Display for KernelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "the kernel refused {}: {}", self.call, self.errno)
    }
}

impl std::error::Error for KernelError {}

/// One thing a wait reported.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum BackendEvent {
    /// A registered fd is ready.
    Fd {
        /// The registration's token.
        token: Token,
        /// What is ready.
        ready: Readiness,
    },
    /// A clock reached the deadline last set for it.
    Clock(Clock),
    /// The notifier was poked (the wake channel was drained by the backend).
    Wake,
    /// Instances of armed signals are pending: take them with
    /// [`Backend::take_signal`].
    SignalsPending,
    /// The kernel reported something the backend never registered (a reserved token it does
    /// not use, a kqueue filter it never adds): dropped, and counted as a kernel fault.
    Garbled,
}

/// A child process a backend watches, and how. It owns what the watch holds in the kernel:
/// a pidfd is an [`OwnedFd`] inside it, so it is closed exactly once, when the handle goes
/// (through [`Backend::unwatch_child`], which takes it by value, or by being dropped). Neither
/// `Copy` nor `Clone`: a second handle to one pidfd cannot exist.
#[derive(Debug)]
pub struct ChildHandle {
    /// The child's pid.
    pub pid: u32,
    /// The token its exit is reported under (the watch's).
    pub token: Token,
    /// How it is watched.
    pub by: WatchedBy,
}

impl ChildHandle {
    /// A child watched the fallback way (`SIGCHLD` plus `waitid(P_PID)`).
    pub fn fallback(pid: u32, token: Token) -> Self {
        ChildHandle {
            pid,
            token,
            by: WatchedBy::Fallback,
        }
    }

    /// Watched through `SIGCHLD` and polling: the loop polls it after every wait.
    pub fn is_fallback(&self) -> bool {
        matches!(self.by, WatchedBy::Fallback)
    }
}

/// How a backend watches a child (see [`ChildHandle`]).
#[derive(Debug)]
pub enum WatchedBy {
    /// A pidfd (Linux), registered under the watch's token: its exit is reported as
    /// readiness. Owned here; on a simulated kernel it is a placeholder fd standing for the
    /// simulated pidfd.
    Pidfd(OwnedFd),
    /// A registration the kernel keys by pid (kqueue's `EVFILT_PROC`, a simulation's), reported
    /// under the watch's token and removed by [`Backend::unwatch_child`].
    Registered,
    /// `SIGCHLD` and `waitid(P_PID)`: nothing is held in the kernel.
    Fallback,
}

/// What to start as a child: a `std::process::Command`, or an [`Exec`](crate::Exec) (which the
/// real kernels hand to `posix_spawn`).
#[derive(Debug)]
pub enum ChildCommand<'a> {
    /// A std command.
    Command(&'a mut Command),
    /// A `posix_spawn` description (its stdio fds are taken from it).
    Exec(&'a mut crate::Exec),
}

impl ChildCommand<'_> {
    /// The program to run.
    pub fn program(&self) -> &std::ffi::OsStr {
        match self {
            ChildCommand::Command(c) => c.get_program(),
            ChildCommand::Exec(e) => e.get_program(),
        }
    }
}

/// An OS event facility (or a simulation of one) under the loop core.
///
/// Every method takes `&self`; the core serialises the calls that change registrations (it
/// makes them with its state locked) and makes at most one `wait` at a time per events buffer.
/// No method may allocate after construction and `new_events`, and none may block except
/// `wait`.
pub trait Backend: Send + Sync + 'static {
    /// The buffer a wait fills.
    type Events: Send + 'static;

    /// A buffer for up to `capacity` events per wait (called while building the loop).
    fn new_events(&self, capacity: usize) -> Result<Self::Events, KernelError>;

    /// The handle that interrupts `wait` from any thread.
    fn notifier(&self) -> Arc<dyn Notify>;

    /// Register `fd` under `token`. `Ok(FdMode::Emulated)` means the kernel cannot poll it and
    /// nothing was registered.
    fn add_fd(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        reg: Registration,
    ) -> Result<FdMode, KernelError>;

    /// Change a native registration from `from` to `to`. On error the kernel may hold `from`,
    /// `to`, or a mix of the two (kqueue changes each filter on its own): the core then
    /// passes the union of both as `from` until a change succeeds, so a backend must bring
    /// every filter named by `from` or `to` to its state in `to`.
    fn modify_fd(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        from: Registration,
        to: Registration,
    ) -> Result<(), KernelError>;

    /// Remove a native registration currently armed as `current`.
    fn remove_fd(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        current: Registration,
    ) -> Result<(), KernelError>;

    /// The current time on `clock`, in nanoseconds on the backend's scale.
    fn now(&self, clock: Clock) -> u64;

    /// Report [`BackendEvent::Clock`] once `clock` reaches `deadline` (`None`: never).
    /// Replaces the previous deadline of that clock.
    fn set_deadline(&self, clock: Clock, deadline: Option<u64>) -> Result<(), KernelError>;

    /// Wait until something is ready or `timeout` passes (`None`: no limit,
    /// `Some(ZERO)`: do not block), filling `events`. An interrupted wait returns `Ok` with
    /// nothing in `events`.
    fn wait(&self, events: &mut Self::Events, timeout: Option<Duration>)
    -> Result<(), KernelError>;

    /// Hand every event of the last wait to `f`, translating the backend's own objects.
    fn for_each_event(&self, events: &Self::Events, f: impl FnMut(BackendEvent));

    /// Several threads will wait at once (a threaded loop built for more than one runner;
    /// called once, while building): make the backend's own sources (the notifier, the
    /// clocks) report each readiness to one waiter, not to every waiter, re-arming them as
    /// they are consumed. The default does nothing (a backend whose sources already report
    /// once, or a herd it accepts).
    fn share_waits(&self) -> Result<(), KernelError> {
        Ok(())
    }

    /// How many run calls now hold an events buffer (so may wait), under the loop's lock,
    /// each time it changes. A simulated backend uses it to advance virtual time only when
    /// every one of them is blocked; the default ignores it.
    fn runners_changed(&self, _holding: u32) {}

    /// Take one pending instance of an armed signal (`Ok(None)`: none is pending). The loop
    /// takes instances only while it has room for what the next one may be (through
    /// [`take_signals`](Self::take_signals)).
    fn take_signal(&self) -> Result<Option<SigInfo>, KernelError>;

    /// Take up to `max` pending instances of armed signals, handing each to `f` in the order
    /// taken; returns how many were taken. Fewer than `max` means none more was pending. A
    /// failure is returned even after some were taken (those were handed to `f` and are the
    /// loop's): the loop then disarms every signal until a retry, which is what makes a
    /// backend that reports a delivery once look again. The loop asks for no more than it has
    /// room for. The default calls
    /// [`take_signal`](Self::take_signal) until it has `max` or finds none; a backend that
    /// can read several instances in one system call (a `signalfd`) overrides it.
    fn take_signals(&self, max: usize, mut f: impl FnMut(SigInfo)) -> Result<usize, KernelError>
    where
        Self: Sized,
    {
        crate::signal::take_each(max, &mut f, || self.take_signal())
    }

    /// Whether `signal` is blocked in the calling thread (watched signals must be).
    fn signal_blocked(&self, signal: Signal) -> bool;

    /// The registration error for a signal [`signal_blocked`](Self::signal_blocked) says is
    /// not blocked: its message says how to block it on this backend.
    fn not_blocked_error(&self, signal: Signal) -> crate::Error {
        crate::Error::SignalNotBlocked(signal)
    }

    /// Report instances of exactly the signals in `set` (replacing the previous set); the
    /// others stay pending in the kernel.
    fn arm_signals(&self, set: SignalSet) -> Result<(), KernelError>;

    /// Start watching child `pid`, reporting its exit as readiness under `token`. Uses a pidfd
    /// if `use_pidfd` and one can be had, else the fallback. Fails only if `pid` is not an
    /// unreaped child of this process (`ECHILD`).
    fn watch_child(
        &self,
        pid: u32,
        token: Token,
        use_pidfd: bool,
    ) -> Result<ChildHandle, KernelError>;

    /// Reap the child if it has exited (`Ok(None)`: still running). A child someone else
    /// reaped gives `Ok(Some(ChildStatus::Unknown))`.
    fn reap_child(&self, child: &ChildHandle) -> Result<Option<ChildStatus>, KernelError>;

    /// Stop watching (take the pidfd out of the kernel's set and close it); the child itself
    /// is not touched.
    fn unwatch_child(&self, child: ChildHandle);

    /// Send `signal` to a watched, unreaped child (`ESRCH`: it has exited).
    fn signal_child(&self, child: &ChildHandle, signal: Signal) -> Result<(), KernelError>;

    /// Send `signal` to the process group a watched, unreaped child leads (`kill(-pid)`).
    /// `ESRCH` if no group has the child's pid as its id (the child does not lead one).
    /// Called with the loop's state locked, where the child is
    /// also reaped: while the leader is unreaped its pid, which is the group's id, cannot be
    /// given to another process, so no other group can have that id.
    fn signal_child_group(&self, child: &ChildHandle, signal: Signal) -> Result<(), KernelError>;

    /// Whether a watched, unreaped child leads its own process group (`getpgid(pid) == pid`).
    fn leads_group(&self, child: &ChildHandle) -> Result<bool, KernelError>;

    /// Start a process for `cmd` (a real one, or a simulated one on simulated backends), as
    /// `how` says.
    fn spawn(&self, cmd: ChildCommand<'_>, how: SpawnHow) -> Result<SpawnedProcess, KernelError>;
}

/// How [`Backend::spawn`] starts a child, beyond what its command says.
#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
pub struct SpawnHow {
    /// `Some(set)`: the child starts with an empty signal mask and the default disposition
    /// for every signal in `set` and every signal blocked in the calling thread (what
    /// `posix_spawn`'s `POSIX_SPAWN_SETSIGMASK` and `SETSIGDEF` do); `None`: it inherits the
    /// calling thread's mask and the dispositions, as `Command::spawn` gives them.
    pub reset: Option<SignalSet>,
    /// The child leads a new process group (its id the child's pid): `setpgid(0, 0)`, what
    /// std's `CommandExt::process_group(0)` does.
    pub new_group: bool,
}
