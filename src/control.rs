//! The operations on watchers ([`Control`]) and the handler's view of the loop ([`Cx`]).
//!
//! `Control` is implemented by the event loop; handlers reach the same operations through
//! `Cx`, which never names the backend or lock flavour. Registration is the only fallible
//! operation (it returns the handler and fd on failure); everything else returns `()` or a
//! caller mistake.

use core::ops::Deref;
use std::os::fd::OwnedFd;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use crate::backend::KernelError;
use crate::child::Spawned;
use crate::error::{Rejected, SignalChildError, UsageError};
use crate::handler::Handler;
use crate::id::{Priority, WatchId};
use crate::interest::{Half, Interest};
use crate::options::{BidiOptions, FdOptions, SpawnOptions};
use crate::signal::Signal;
use crate::timer::{Clock, Deadline};
use crate::waker::Waker;

/// How full the loop's pools are.
#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
pub struct Usage {
    /// Watcher slots in use (including kernel deregistrations still pending).
    pub watchers: usize,
    /// Watcher slots in all.
    pub watchers_capacity: usize,
    /// Timer slots in use.
    pub timers: usize,
    /// Timer slots in all.
    pub timers_capacity: usize,
    /// Wake slots in use.
    pub wakers: usize,
    /// Wake slots in all.
    pub wakers_capacity: usize,
    /// Children watched without a pidfd (through `SIGCHLD` and `waitid(P_PID)`): on kernels
    /// without pidfd, when one could not be had (`EMFILE`...), or when the loop was built
    /// with [`child_watch_fallback`](crate::Builder::child_watch_fallback).
    pub fallback_children: usize,
}

/// Kernel errors the loop absorbed in operations that cannot fail.
///
/// Enabling, disabling, re-arming and removing never fail; when the kernel refuses one of them
/// (which a healthy kernel does not do), the loop keeps its own state exact, counts the error
/// here, and retries the kernel change before every later wait (at least every 10 ms while
/// one is outstanding). Until a retry succeeds: an fd that should be enabled gets no events, an
/// fd that should be disabled has its readiness ignored, a timer fires on time through the
/// wait timeout instead of the timer fd, and an fd whose deregistration failed stays open,
/// registered and holding its slot (its handler is already gone; `on_removed` got no fd).
#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
pub struct KernelFaults {
    /// Kernel calls that failed.
    pub count: u64,
    /// The most recent failure.
    pub last: Option<KernelError>,
}

/// The operations on a loop's watchers, available on the loop itself and, in handlers, on
/// [`Cx`].
///
/// Only registration (`add_*`) can fail: for a full pool, a kernel refusal or an invalid
/// argument, and it then hands back the handler and fd. The other operations cannot fail; they
/// report a [`UsageError`] (and do nothing) only for an id that names no live watcher of the
/// right kind. None of them allocates.
pub trait Control<H: Handler> {
    /// Watch `fd` for `interest` (read, write or both); one handler call per event, with the
    /// combined readiness. The loop owns `fd` from now on, so it cannot be closed while
    /// registered; `on_removed` hands it back. Regular files are emulated as always ready
    /// unless `options` refuse emulation.
    fn add_fd(
        &self,
        fd: OwnedFd,
        interest: Interest,
        options: FdOptions,
        handler: H,
    ) -> Result<WatchId, Rejected<H>>;

    /// Watch `fd` with independent read and write halves: each has its own priority, its own
    /// enabled state and its own dispatch ([`Event::Read`](crate::Event::Read) and
    /// [`Event::Write`](crate::Event::Write)); the two never run at the same time. A handler
    /// returning [`Rearm::Remove`](crate::Rearm::Remove) removes its half; the watcher is
    /// removed when both halves are.
    fn add_bidi(
        &self,
        fd: OwnedFd,
        options: BidiOptions,
        handler: H,
    ) -> Result<WatchId, Rejected<H>>;

    /// Register a timer on `clock`, enabled and not armed ([`arm_timer`](Self::arm_timer)
    /// starts it).
    fn add_timer(
        &self,
        clock: Clock,
        priority: Priority,
        handler: H,
    ) -> Result<WatchId, Rejected<H>>;

    /// Register a wake watcher, enabled, and get a [`Waker`] for it that any thread can use.
    fn add_wake(&self, priority: Priority, handler: H) -> Result<(WatchId, Waker), Rejected<H>>;

    /// Watch `signal`: each delivered instance is one handler call with its own
    /// [`SigInfo`](crate::SigInfo). The kernel keeps further instances pending until the
    /// watcher is ready again (enabled, and its handler returned), so none is lost or
    /// duplicated while it is queued, running or disabled; instances of a standard signal
    /// coalesce in the kernel meanwhile (POSIX), real-time ones queue. The signal must be
    /// blocked in every thread ([`block_signals`](crate::block_signals)); registration checks
    /// the calling thread. Fails for `SIGKILL`, `SIGSTOP`, numbers out of range, a signal not
    /// blocked, and a signal this loop already watches. One loop should watch a given signal:
    /// two loops would race for its instances.
    fn add_signal(
        &self,
        signal: Signal,
        priority: Priority,
        handler: H,
    ) -> Result<WatchId, Rejected<H>>;

    /// Register an idle child watcher: a reservation. It takes its watcher slot now (the one
    /// way it can fail), so that [`watch_child`](Self::watch_child) cannot fail for lack of
    /// resources later. After a watched child's exit has been reported the watcher is idle
    /// again and can watch another child; removing it gives the slot back.
    fn reserve_child(&self, priority: Priority, handler: H) -> Result<WatchId, Rejected<H>>;

    /// Point an idle child watcher at child `pid`. Cannot fail for lack of resources (if a
    /// pidfd cannot be had, the child is watched the fallback way); reports only caller
    /// mistakes: a stale id, a watcher of another kind, a watcher still busy with a child
    /// ([`UsageError::Busy`]), a child another watcher of this loop already watches
    /// ([`UsageError::AlreadyWatched`]), or a pid that is not an unreaped child of this
    /// process.
    fn watch_child(&self, id: WatchId, pid: u32) -> Result<(), UsageError>;

    /// Reserve and watch in one step (fails for capacity, with
    /// [`Error::NotAChild`](crate::Error::NotAChild), or with
    /// [`Error::ChildAlreadyWatched`](crate::Error::ChildAlreadyWatched), giving the handler
    /// back).
    fn add_child(&self, pid: u32, priority: Priority, handler: H) -> Result<WatchId, Rejected<H>>;

    /// Start `cmd` and watch the child, atomically: either the child runs and is watched, or
    /// there is no child, no slot is taken, and the error ([`Error::Spawn`](crate::Error::Spawn)
    /// for a missing program and other `fork`/`exec` failures) comes back with the handler.
    /// The child's stdio pipes (if `cmd` asked for them) are in the result; the loop reaps it.
    ///
    /// By default the child starts with a clean signal state (an empty mask, default
    /// dispositions for the signals blocked or watched here: [`ChildSignals::Reset`]), so
    /// the `SIGTERM` a supervisor sends reaches it although the masking rule blocks `SIGTERM`
    /// in the supervisor. `cmd` is taken by value because the reset is a `pre_exec` hook that
    /// would otherwise stay on the command and pile up with every restart; build the
    /// command afresh for each spawn.
    ///
    /// [`ChildSignals::Reset`]: crate::ChildSignals::Reset
    fn spawn_child(
        &self,
        cmd: Command,
        options: SpawnOptions,
        handler: H,
    ) -> Result<Spawned, Rejected<H>>;

    /// [`spawn_child`](Self::spawn_child) for an [`Exec`](crate::Exec): the same, but started
    /// with `posix_spawn`, which sets the child's clean signal state itself, so it costs no
    /// more than `Command::spawn` (`spawn_child`'s reset makes `Command` fork). Where the
    /// system's `posix_spawn` cannot do what the `Exec` asks (a working directory with an old
    /// C library, any `Exec` on OpenBSD, whose `posix_spawn` does not report a failed exec),
    /// it is started as a `Command`, with the same result. A NUL byte in the program, an
    /// argument or the environment fails with `Error::Spawn` and `EINVAL`.
    fn spawn_exec(
        &self,
        exec: crate::Exec,
        options: SpawnOptions,
        handler: H,
    ) -> Result<Spawned, Rejected<H>>;

    /// Send `signal` to the child a watcher watches, race-free: through its pidfd (or, in the
    /// fallback, `kill` while the loop guarantees the child is not yet reaped), so a recycled
    /// pid is never hit. [`SignalChildError::Gone`] once the child has exited.
    fn signal_child(&self, id: WatchId, signal: Signal) -> Result<(), SignalChildError>;

    /// Remove a watcher. If its handler is not running, `on_removed` runs now, on this thread;
    /// if it is running, the removal completes (and `on_removed` runs) when it returns, whatever
    /// it returns. A pending event is dropped.
    ///
    /// Never blocks, from any thread, even while the handler runs on another thread: once
    /// `remove` has returned, the handler is never started again, and `on_removed` runs
    /// exactly once (here, or on the dispatching thread right after the handler returns).
    fn remove(&self, id: WatchId) -> Result<(), UsageError>;

    /// Enable or disable a watcher (both halves of a bidirectional one). Enabling a watcher
    /// whose event is already queued does nothing more; disabling drops a queued event (an
    /// fd's error or hang-up, a timer's expirations and a wake are kept for when it is
    /// enabled again). Inside its own handler, enabling takes effect if the handler returns
    /// [`Rearm::Noop`](crate::Rearm::Noop).
    fn set_enabled(&self, id: WatchId, enabled: bool) -> Result<(), UsageError>;

    /// Shorthand for `set_enabled(id, true)`.
    fn enable(&self, id: WatchId) -> Result<(), UsageError> {
        self.set_enabled(id, true)
    }

    /// Shorthand for `set_enabled(id, false)`.
    fn disable(&self, id: WatchId) -> Result<(), UsageError> {
        self.set_enabled(id, false)
    }

    /// Enable or disable one half of a bidirectional fd watcher.
    fn set_half_enabled(&self, id: WatchId, half: Half, enabled: bool) -> Result<(), UsageError>;

    /// Change which directions an fd watcher waits for (not for bidirectional watchers, whose
    /// halves are enabled separately). `interest` must not be empty.
    fn set_interest(&self, id: WatchId, interest: Interest) -> Result<(), UsageError>;

    /// Arm (or re-arm) a timer: first expiry at `deadline`, then every `interval` if given
    /// (`None` or zero: one-shot). Periodic timers keep their phase: expiries are at
    /// `deadline + k * interval`, and missed ones are counted. Arming resets the expiration
    /// count, drops a queued expiry and enables the timer. Deadlines in the past expire at
    /// once; deadlines too far to represent never expire.
    fn arm_timer(
        &self,
        id: WatchId,
        deadline: Deadline,
        interval: Option<Duration>,
    ) -> Result<(), UsageError>;

    /// Stop a timer: it stops counting and a queued expiry is dropped. It stays registered
    /// and can be armed again.
    fn stop_timer(&self, id: WatchId) -> Result<(), UsageError>;

    /// Another [`Waker`] for a wake watcher.
    fn waker(&self, id: WatchId) -> Result<Waker, UsageError>;

    /// Make the running `run`/`poll` call return after the current handler; if none is
    /// running, the next one returns at once.
    ///
    /// On a [`ThreadedLoop`](crate::ThreadedLoop) run by several threads, from any thread: every
    /// run call in progress returns after its current handler (those blocked in the kernel
    /// are woken, one after another). A call that starts afterwards runs as usual, so to shut
    /// the runners down, set a flag of your own that their loops check, then call `stop`
    /// until they have all returned.
    fn stop(&self);

    /// The loop's monotonic time (virtual time on the `Sim` backend).
    fn now(&self) -> Instant;

    /// The loop's wall-clock time (virtual time on the `Sim` backend).
    fn system_now(&self) -> SystemTime;

    /// Whether `id` names a live watcher of this loop.
    fn contains(&self, id: WatchId) -> bool;

    /// How full the pools are.
    fn usage(&self) -> Usage;

    /// Kernel errors absorbed so far (see [`KernelFaults`]).
    fn kernel_faults(&self) -> KernelFaults;
}

/// A handler's view of its loop: every [`Control`] operation (through `Deref`), plus the id of
/// the watcher being dispatched.
pub struct Cx<'a, H: Handler> {
    pub(crate) ctl: &'a (dyn Control<H> + 'a),
    pub(crate) id: WatchId,
}

impl<'a, H: Handler> Cx<'a, H> {
    /// The watcher whose handler (or `on_removed`) is running.
    pub fn id(&self) -> WatchId {
        self.id
    }
}

impl<'a, H: Handler> Deref for Cx<'a, H> {
    type Target = dyn Control<H> + 'a;
    fn deref(&self) -> &Self::Target {
        self.ctl
    }
}

impl<H: Handler> core::fmt::Debug for Cx<'_, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Cx")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
