//! The operations on watchers and the handler's view of the loop ([`Cx`]).
//!
//! Every operation is an inherent method of both [`EventLoop`] and [`Cx`], generated from one
//! list (the `operations!` invocation below), so the two cannot drift apart; the sealed
//! [`Control`] trait has the same methods, for code generic over "a loop or a handler's
//! context". Registration is the only fallible operation (it hands the handler and fd back on
//! failure); everything else returns `()` or a caller mistake.

use std::os::fd::OwnedFd;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use crate::backend::{Backend, KernelError};
use crate::child::Spawned;
use crate::error::{Rejected, SignalChildError, SpawnError, UsageError};
use crate::event_loop::EventLoop;
use crate::exec::Exec;
use crate::handler::Handler;
use crate::id::{Priority, WatchId};
use crate::interest::{Half, Interest};
use crate::lock::Flavor;
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

/// A handler's view of its loop: every operation of the loop (the same methods as
/// [`EventLoop`]'s, listed below), plus the id of the watcher being dispatched.
///
/// A `Cx` is lent to a handler for one call; it cannot be kept past it:
///
/// ```compile_fail
/// use dasynq::{Cx, Event, Handler, Rearm};
/// struct Keep(Option<&'static Cx<'static, Keep>>);
/// impl Handler for Keep {
///     type Data = ();
///     fn on_event(&mut self, cx: &Cx<'_, Self>, _: &mut (), _: Event<'_>) -> Rearm {
///         self.0 = Some(cx); // error: lifetime may not live long enough
///         Rearm::Rearm
///     }
/// }
/// ```
pub struct Cx<'a, H: Handler> {
    pub(crate) ctl: &'a (dyn Ops<H> + 'a),
    pub(crate) id: WatchId,
}

impl<'a, H: Handler> Cx<'a, H> {
    /// The watcher whose handler (or `on_removed`) is running.
    pub fn id(&self) -> WatchId {
        self.id
    }
}

impl<H: Handler> core::fmt::Debug for Cx<'_, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Cx")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

mod sealed {
    /// Only this crate's [`EventLoop`](crate::EventLoop) (and an `Arc` of one) and
    /// [`Cx`](crate::Cx) implement [`Control`](crate::Control), so operations can be added
    /// without breaking anyone.
    pub trait Sealed {}
}

impl<H: Handler, B: Backend, F: Flavor> sealed::Sealed for EventLoop<H, B, F> {}
impl<H: Handler, B: Backend, F: Flavor> sealed::Sealed for std::sync::Arc<EventLoop<H, B, F>> {}
impl<H: Handler> sealed::Sealed for Cx<'_, H> {}

/// Generates, from one list of operations: the object-safe internal trait `Ops` (implemented
/// by the loop, reached by `Cx` through a `dyn` reference), the inherent methods of
/// `EventLoop` (with the list's docs and examples) and of `Cx` (with its docs, pointing at the
/// loop's examples), and the sealed public trait `Control` over both.
macro_rules! operations {
    ($(
        $(#[doc = $doc:literal])*
        example:
        $(#[doc = $ex:literal])*
        fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) $(-> $ret:ty)?;
    )*) => {
        /// The loop's operations, object-safe: what `Cx` calls through.
        pub(crate) trait Ops<H: Handler> {
            $(fn $name(&self $(, $arg: $ty)*) $(-> $ret)?;)*
        }

        impl<H: Handler, B: Backend, F: Flavor> EventLoop<H, B, F> {
            $(
                $(#[doc = $doc])*
                ///
                /// # Example
                ///
                $(#[doc = $ex])*
                #[inline]
                pub fn $name(&self $(, $arg: $ty)*) $(-> $ret)? {
                    <Self as Ops<H>>::$name(self $(, $arg)*)
                }
            )*
        }

        impl<'a, H: Handler> Cx<'a, H> {
            $(
                $(#[doc = $doc])*
                ///
                #[doc = concat!("Example: [`EventLoop::", stringify!($name), "`].")]
                #[inline]
                pub fn $name(&self $(, $arg: $ty)*) $(-> $ret)? {
                    self.ctl.$name($($arg),*)
                }
            )*
        }

        /// The loop's operations as a trait, implemented by [`EventLoop`] (and an `Arc` of
        /// one) and [`Cx`] only (it is sealed), for code that works with either: a helper
        /// that registers a connection's watchers can take `&impl Control<H>` (or
        /// `&dyn Control<H>`) and be called with the loop at startup and with a handler's
        /// `cx` later. A generic helper that passes registration errors on into
        /// `Box<dyn Error + Send + Sync>` needs `H: Send` (see [`Rejected`]).
        ///
        /// Every method is documented (with an example) on [`EventLoop`], and available on
        /// both types without importing this trait.
        ///
        /// ```
        /// use dasynq::{Clock, Control, EventLoop, FnHandler, Priority, Rearm, WatchId};
        ///
        /// fn add_tick(c: &impl Control<FnHandler>) -> Result<WatchId, dasynq::Error> {
        ///     Ok(c.add_timer(Clock::Monotonic, Priority::DEFAULT,
        ///                    FnHandler::new(|_, _| Rearm::Rearm))?)
        /// }
        /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
        /// let lp = EventLoop::<FnHandler>::builder().watchers(4).build()?;
        /// let id = add_tick(&lp)?;
        /// assert!(lp.contains(id));
        /// # Ok(()) }
        /// ```
        pub trait Control<H: Handler>: sealed::Sealed {
            $(
                #[doc = concat!("See [`EventLoop::", stringify!($name), "`].")]
                fn $name(&self $(, $arg: $ty)*) $(-> $ret)?;
            )*
        }

        impl<H: Handler, B: Backend, F: Flavor> Control<H> for EventLoop<H, B, F> {
            $(
                #[inline]
                fn $name(&self $(, $arg: $ty)*) $(-> $ret)? {
                    <Self as Ops<H>>::$name(self $(, $arg)*)
                }
            )*
        }

        impl<H: Handler, B: Backend, F: Flavor> Control<H> for std::sync::Arc<EventLoop<H, B, F>> {
            $(
                #[inline]
                fn $name(&self $(, $arg: $ty)*) $(-> $ret)? {
                    <EventLoop<H, B, F> as Ops<H>>::$name(self $(, $arg)*)
                }
            )*
        }

        impl<'a, H: Handler> Control<H> for Cx<'a, H> {
            $(
                #[inline]
                fn $name(&self $(, $arg: $ty)*) $(-> $ret)? {
                    self.ctl.$name($($arg),*)
                }
            )*
        }
    };
}

operations! {
    /// Watch `fd` for `interest` (read, write or both); one handler call per event, with the
    /// combined readiness. The loop owns `fd` from now on, so it cannot be closed while
    /// registered; the handler reaches it through the event (typed:
    /// [`Event::view`](crate::Event::view)) and `on_removed` hands it back. Regular files are
    /// emulated as always ready unless `options` refuse emulation.
    ///
    /// Fails (handing back the handler and fd, [`Rejected`]) for a full pool, empty
    /// `interest`, an fd that cannot be polled with emulation refused, or a kernel refusal.
    example:
    /// ```
    /// use dasynq::{Event, EventLoop, FdOptions, FnHandler, Interest, Rearm};
    /// use std::io::{Read, Write};
    /// use std::os::unix::net::UnixStream;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(4).build()?;
    /// let (a, mut b) = UnixStream::pair()?;
    /// lp.add_fd(a.into(), Interest::READ, FdOptions::new(), FnHandler::new(|cx, ev| {
    ///     let mut s = ev.view::<UnixStream>().expect("an fd event");
    ///     let mut buf = [0; 16];
    ///     assert_eq!(s.read(&mut buf).unwrap(), 5);
    ///     cx.stop();
    ///     Rearm::Remove
    /// }))?;
    /// b.write_all(b"hello")?;
    /// lp.run();
    /// # Ok(()) }
    /// ```
    fn add_fd(&self, fd: OwnedFd, interest: Interest, options: FdOptions, handler: H)
        -> Result<WatchId, Rejected<H>>;

    /// Watch `fd` with independent read and write halves: each has its own priority, its own
    /// enabled state and its own dispatch ([`Event::Read`](crate::Event::Read) and
    /// [`Event::Write`](crate::Event::Write)); the two never run at the same time. A handler
    /// returning [`Rearm::Remove`](crate::Rearm::Remove) removes its half; the watcher is
    /// removed when both halves are.
    example:
    /// ```
    /// use dasynq::{BidiOptions, Event, EventLoop, FnHandler, Rearm};
    /// use std::os::unix::net::UnixStream;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(4).build()?;
    /// let (a, _b) = UnixStream::pair()?;
    /// // Only the write half is enabled: an idle socket is writable at once.
    /// let opts = BidiOptions::new().enabled(false, true);
    /// lp.add_bidi(a.into(), opts, FnHandler::new(|cx, ev| {
    ///     assert!(matches!(ev, Event::Write { .. }));
    ///     cx.stop();
    ///     Rearm::Remove
    /// }))?;
    /// assert_eq!(lp.run(), 1);
    /// # Ok(()) }
    /// ```
    fn add_bidi(&self, fd: OwnedFd, options: BidiOptions, handler: H)
        -> Result<WatchId, Rejected<H>>;

    /// Register a timer on `clock`, enabled and not armed ([`arm_timer`](Self::arm_timer)
    /// starts it). Takes a watcher slot and a timer slot.
    example:
    /// ```
    /// use dasynq::{Clock, EventLoop, FnHandler, Priority, Rearm};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(4).timers(1).build()?;
    /// let t = lp.add_timer(Clock::System, Priority::DEFAULT, FnHandler::new(|_, _| Rearm::Rearm))?;
    /// assert_eq!(lp.usage().timers, 1);
    /// # let _ = t; Ok(()) }
    /// ```
    fn add_timer(&self, clock: Clock, priority: Priority, handler: H)
        -> Result<WatchId, Rejected<H>>;

    /// Register a wake watcher, enabled, and get a [`Waker`] for it that any thread can use.
    /// Takes a watcher slot and a wake slot.
    example:
    /// ```
    /// use dasynq::{Event, EventLoop, FnHandler, Priority, Rearm};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(4).wakers(1).build()?;
    /// let (_id, waker) = lp.add_wake(Priority::DEFAULT, FnHandler::new(|cx, ev| {
    ///     assert!(matches!(ev, Event::Wake));
    ///     cx.stop();
    ///     Rearm::Rearm
    /// }))?;
    /// std::thread::spawn(move || waker.wake()).join().unwrap();
    /// assert_eq!(lp.run(), 1);
    /// # Ok(()) }
    /// ```
    fn add_wake(&self, priority: Priority, handler: H) -> Result<(WatchId, Waker), Rejected<H>>;

    /// Watch `signal`: each delivered instance is one handler call with its own
    /// [`SigInfo`](crate::SigInfo), in the order the kernel gave them. The loop takes
    /// instances only while it has a place for each (one per watcher, plus the room
    /// [`Builder::signal_instances`](crate::Builder::signal_instances) reserves); the rest stay
    /// pending in the kernel, as do those of a disabled watcher's signal, so none is lost or
    /// duplicated while it is queued, running or disabled; instances of a standard signal
    /// coalesce in the kernel meanwhile (POSIX), real-time ones queue. The run call that
    /// takes a burst runs the watcher once per instance it holds (a burst drains without a
    /// wait per instance; a threaded loop runs them on the one runner, one at a time, as
    /// always); `Rearm::Requeue` delivers the same instance again in the next batch.
    ///
    /// The signal must be blocked in every thread ([`block_signals`](crate::block_signals),
    /// see [the masking rule](crate::Signal#the-masking-rule)); registration checks the
    /// calling thread. Fails for `SIGKILL`, `SIGSTOP`, numbers out of range, a signal not
    /// blocked, and a signal this loop already watches. One loop should watch a given signal:
    /// two loops would race for its instances.
    example:
    /// ```
    /// use dasynq::{Event, EventLoop, FnHandler, Priority, Rearm, Signal, SignalSet};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // In a real program: in `main`, before any thread starts.
    /// dasynq::block_signals(SignalSet::of(&[Signal::USR2]))?;
    /// let lp = EventLoop::<FnHandler>::builder().watchers(4).build()?;
    /// lp.add_signal(Signal::USR2, Priority::DEFAULT, FnHandler::new(|cx, ev| {
    ///     if let Event::Signal(info) = ev {
    ///         assert_eq!(info.signal(), Signal::USR2);
    ///     }
    ///     cx.stop();
    ///     Rearm::Rearm
    /// }))?;
    /// // Aimed at this thread, which has it blocked: it stays pending for the loop. (libc
    /// // only for the example: a test process has threads with the signal unblocked, so a
    /// // signal to the whole process could go there; a daemon blocks it everywhere.)
    /// // SAFETY: pthread_kill on the calling thread's own id, with a valid signal number.
    /// unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2) };
    /// assert_eq!(lp.run(), 1);
    /// # Ok(()) }
    /// ```
    fn add_signal(&self, signal: Signal, priority: Priority, handler: H)
        -> Result<WatchId, Rejected<H>>;

    /// Register an idle child watcher: a reservation. It takes its watcher slot now (the one
    /// way it can fail), so that [`watch_child`](Self::watch_child) cannot fail for lack of
    /// resources later. After a watched child's exit has been reported the watcher is idle
    /// again and can watch another child; removing it gives the slot back.
    example:
    /// ```
    /// use dasynq::{EventLoop, FnHandler, Priority, Rearm};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(1).build()?;
    /// // The only slot, taken at startup: watching the service's child cannot fail later.
    /// let w = lp.reserve_child(Priority::DEFAULT, FnHandler::new(|_, _| Rearm::Rearm))?;
    /// let child = std::process::Command::new("true").spawn()?;
    /// lp.watch_child(w, child.id())?;
    /// # Ok(()) }
    /// ```
    fn reserve_child(&self, priority: Priority, handler: H) -> Result<WatchId, Rejected<H>>;

    /// Point an idle child watcher at child `pid`. Cannot fail for lack of resources (if a
    /// pidfd cannot be had, the child is watched the fallback way); reports only caller
    /// mistakes: a stale id, a watcher of another kind, a watcher still busy with a child
    /// ([`UsageError::Busy`]), a child another watcher of this loop already watches
    /// ([`UsageError::AlreadyWatched`]), or a pid that is not an unreaped child of this
    /// process.
    example:
    /// ```
    /// use dasynq::{Event, EventLoop, FnHandler, Priority, Rearm};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(2).build()?;
    /// let w = lp.reserve_child(Priority::DEFAULT, FnHandler::new(|cx, ev| {
    ///     if let Event::Child { status, .. } = ev {
    ///         assert!(status.success());
    ///     }
    ///     cx.stop();
    ///     Rearm::Rearm // idle again: ready to watch the next child
    /// }))?;
    /// let child = std::process::Command::new("true").spawn()?;
    /// lp.watch_child(w, child.id())?;
    /// assert_eq!(lp.run(), 1);
    /// # Ok(()) }
    /// ```
    fn watch_child(&self, id: WatchId, pid: u32) -> Result<(), UsageError>;

    /// Reserve and watch in one step (fails for capacity, with
    /// [`Error::NotAChild`](crate::Error::NotAChild), or with
    /// [`Error::ChildAlreadyWatched`](crate::Error::ChildAlreadyWatched), giving the handler
    /// back).
    example:
    /// ```
    /// use dasynq::{EventLoop, FnHandler, Priority, Rearm};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(2).build()?;
    /// let child = std::process::Command::new("true").spawn()?;
    /// lp.add_child(child.id(), Priority::DEFAULT, FnHandler::new(|cx, _| {
    ///     cx.stop();
    ///     Rearm::Remove
    /// }))?;
    /// assert_eq!(lp.run(), 1);
    /// # Ok(()) }
    /// ```
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
    example:
    /// ```
    /// use dasynq::{ChildStatus, Event, EventLoop, FnHandler, Rearm, SpawnOptions};
    /// use std::process::Command;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(2).build()?;
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "exit 3"]);
    /// lp.spawn_child(cmd, SpawnOptions::new(), FnHandler::new(|cx, ev| {
    ///     if let Event::Child { status, .. } = ev {
    ///         assert_eq!(status, ChildStatus::Exited(3));
    ///     }
    ///     cx.stop();
    ///     Rearm::Remove
    /// }))?;
    /// assert_eq!(lp.run(), 1);
    /// # Ok(()) }
    /// ```
    fn spawn_child(&self, cmd: Command, options: SpawnOptions, handler: H)
        -> Result<Spawned, Rejected<H>>;

    /// [`spawn_child`](Self::spawn_child) for an [`Exec`]: the same, but started with
    /// `posix_spawn`, which sets the child's clean signal state itself, so it costs no more
    /// than `Command::spawn` (`spawn_child`'s reset makes `Command` fork). Where the system's
    /// `posix_spawn` cannot do what the `Exec` asks (a working directory with an old C
    /// library, any `Exec` on OpenBSD, whose `posix_spawn` does not report a failed exec), it
    /// is started as a `Command`, with the same result. A NUL byte in the program, an
    /// argument or the environment fails with `Error::Spawn` and `EINVAL`.
    example:
    /// ```
    /// use dasynq::{Error, Errno, EventLoop, Exec, FnHandler, Rearm, SpawnOptions};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(2).build()?;
    /// let h = FnHandler::new(|_, _| Rearm::Remove);
    /// let err = lp.spawn_exec(Exec::new("/nonexistent/program"), SpawnOptions::new(), h)
    ///     .unwrap_err();
    /// assert_eq!(err.error(), Error::Spawn { errno: Errno::NOENT });
    /// assert_eq!(lp.usage().watchers, 0); // no slot taken
    /// let _handler_back = err.into_handler();
    /// # Ok(()) }
    /// ```
    fn spawn_exec(&self, exec: Exec, options: SpawnOptions, handler: H)
        -> Result<Spawned, Rejected<H>>;

    /// Start `cmd` as the next child of a reservation (a child watcher from
    /// [`reserve_child`](Self::reserve_child), or one whose previous child's exit has been
    /// reported): no slot is taken, so a service's restart cannot fail for capacity. The
    /// reservation's handler and priority stay; `options.priority` is not used. Allowed from
    /// the reservation's own handler while it reports the previous child's exit (a restart
    /// at once; a `Requeue` from that call then delivers nothing again).
    ///
    /// Errors, each leaving the reservation as it was (idle, with its handler and slot):
    /// [`SpawnError::Usage`] with [`UsageError::Stale`] (removed), `WrongKind` (not a child
    /// watcher) or [`UsageError::Busy`] (its child still runs, its exit is not yet reported,
    /// or another thread is spawning into it); [`SpawnError::Spawn`] when the process could
    /// not be started (`ENOENT` for a missing program; the hook's error for a failing
    /// `pre_exec`). While a spawn into it is under way (another thread),
    /// [`remove`](Self::remove) of the reservation is `UsageError::Busy`.
    ///
    /// The loop's own part allocates nothing; `Command::spawn` itself allocates (std builds
    /// the argument and environment arrays), as does the `pre_exec` hook that gives the child
    /// its clean signal state by default. [`spawn_exec_into`](Self::spawn_exec_into) with
    /// `posix_spawn` builds its C strings.
    example:
    /// ```
    /// use dasynq::{ChildStatus, Event, EventLoop, FnHandler, Priority, Rearm, SpawnOptions};
    /// use std::process::Command;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // One slot, reserved at startup for the service: every restart reuses it.
    /// let lp = EventLoop::<FnHandler>::builder().watchers(1).build()?;
    /// let service = lp.reserve_child(Priority::DEFAULT, FnHandler::new(|cx, ev| {
    ///     if let Event::Child { status, .. } = ev {
    ///         assert_eq!(status, ChildStatus::Exited(0));
    ///     }
    ///     cx.stop();
    ///     Rearm::Rearm
    /// }))?;
    /// for _ in 0..2 {
    ///     lp.spawn_into(service, Command::new("true"), SpawnOptions::new())?;
    ///     assert_eq!(lp.run(), 1);
    /// }
    /// assert_eq!(lp.usage().watchers, 1);
    /// # Ok(()) }
    /// ```
    fn spawn_into(&self, id: WatchId, cmd: Command, options: SpawnOptions)
        -> Result<Spawned, SpawnError>;

    /// [`spawn_into`](Self::spawn_into) for an [`Exec`] (started with `posix_spawn`, see
    /// [`spawn_exec`](Self::spawn_exec)).
    example:
    /// ```
    /// use dasynq::{Errno, EventLoop, Exec, FnHandler, Priority, Rearm, SpawnError, SpawnOptions};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(1).build()?;
    /// let w = lp.reserve_child(Priority::DEFAULT, FnHandler::new(|_, _| Rearm::Rearm))?;
    /// let err = lp.spawn_exec_into(w, Exec::new("/nonexistent/program"), SpawnOptions::new());
    /// assert_eq!(err.unwrap_err(), SpawnError::Spawn { errno: Errno::NOENT });
    /// // Still idle and still ours: the next try can succeed.
    /// lp.spawn_exec_into(w, Exec::new("true"), SpawnOptions::new())?;
    /// # Ok(()) }
    /// ```
    fn spawn_exec_into(&self, id: WatchId, exec: Exec, options: SpawnOptions)
        -> Result<Spawned, SpawnError>;

    /// Send `signal` to the child a watcher watches, race-free: through its pidfd (or, in the
    /// fallback, `kill` while the loop guarantees the child is not yet reaped), so a recycled
    /// pid is never hit. [`SignalChildError::Gone`] once the child has exited.
    example:
    /// ```
    /// use dasynq::{ChildStatus, Event, EventLoop, FnHandler, Rearm, Signal, SpawnOptions};
    /// use std::process::Command;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(2).build()?;
    /// let mut cmd = Command::new("sleep");
    /// cmd.arg("60");
    /// let child = lp.spawn_child(cmd, SpawnOptions::new(), FnHandler::new(|cx, ev| {
    ///     if let Event::Child { status, .. } = ev {
    ///         assert_eq!(status.signal(), Some(Signal::TERM));
    ///     }
    ///     cx.stop();
    ///     Rearm::Remove
    /// }))?;
    /// lp.signal_child(child.id, Signal::TERM)?;
    /// assert_eq!(lp.run(), 1);
    /// # Ok(()) }
    /// ```
    fn signal_child(&self, id: WatchId, signal: Signal) -> Result<(), SignalChildError>;

    /// Send `signal` to the process group the watched child leads (`kill(-pid, signal)`):
    /// the child and every process it started that stayed in its group. Start the child
    /// with [`SpawnOptions::new_process_group`] for it to lead one.
    ///
    /// Race-free while the child is unreaped, which the loop guarantees from the check to the
    /// `kill`: a group's id is its leader's pid, and a pid is not given to another process
    /// while its process is unreaped (nor while any group or session still has it as its id),
    /// so no other group can have this id. Once the leader has exited,
    /// [`SignalChildError::Gone`], even if members of its group live on: the loop reaps the
    /// leader at once, after which the id could in principle be reused, so it no longer
    /// sends to it; stop a group's members before (or by) stopping its leader.
    /// [`SignalChildError::NotGroupLeader`] if the child does not lead a group of its own.
    example:
    /// ```
    /// use dasynq::{Event, EventLoop, FnHandler, Rearm, Signal, SpawnOptions};
    /// use std::process::Command;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(2).build()?;
    /// // A shell with a child of its own: both are in the new group.
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "sleep 60 & wait"]);
    /// let sh = lp.spawn_child(cmd, SpawnOptions::new().new_process_group(), FnHandler::new(
    ///     |cx, ev| {
    ///         if let Event::Child { status, .. } = ev {
    ///             assert_eq!(status.signal(), Some(Signal::TERM));
    ///         }
    ///         cx.stop();
    ///         Rearm::Remove
    ///     },
    /// ))?;
    /// lp.signal_child_group(sh.id, Signal::TERM)?; // the shell and its sleep
    /// assert_eq!(lp.run(), 1);
    /// # Ok(()) }
    /// ```
    fn signal_child_group(&self, id: WatchId, signal: Signal) -> Result<(), SignalChildError>;

    /// Remove a watcher. If its handler is not running, `on_removed` runs now, on this thread;
    /// if it is running, the removal completes (and `on_removed` runs) when it returns, whatever
    /// it returns. A pending event is dropped.
    ///
    /// Never blocks, from any thread, even while the handler runs on another thread: once
    /// `remove` has returned, the handler is never started again, and `on_removed` runs
    /// exactly once (here, or on the dispatching thread right after the handler returns).
    example:
    /// ```
    /// use dasynq::{Clock, EventLoop, FnHandler, Priority, Rearm, UsageError};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(4).build()?;
    /// let t = lp.add_timer(Clock::Monotonic, Priority::DEFAULT, FnHandler::new(|_, _| Rearm::Rearm))?;
    /// lp.remove(t)?;
    /// assert!(!lp.contains(t));
    /// assert_eq!(lp.remove(t), Err(UsageError::Stale)); // a stale id is harmless
    /// # Ok(()) }
    /// ```
    fn remove(&self, id: WatchId) -> Result<(), UsageError>;

    /// Enable or disable a watcher (both halves of a bidirectional one). Enabling a watcher
    /// whose event is already queued does nothing more; disabling drops a queued event (an
    /// fd's error or hang-up, a timer's expirations and a wake are kept for when it is
    /// enabled again). Inside its own handler, enabling takes effect if the handler returns
    /// [`Rearm::Noop`](crate::Rearm::Noop).
    example:
    /// ```
    /// use dasynq::{EventLoop, FnHandler, Priority, Rearm};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(4).build()?;
    /// let (w, waker) = lp.add_wake(Priority::DEFAULT, FnHandler::new(|_, _| Rearm::Rearm))?;
    /// lp.set_enabled(w, false)?;
    /// waker.wake();
    /// assert_eq!(lp.poll(), 0); // disabled: the wake is kept
    /// lp.set_enabled(w, true)?;
    /// assert_eq!(lp.poll(), 1);
    /// # Ok(()) }
    /// ```
    fn set_enabled(&self, id: WatchId, enabled: bool) -> Result<(), UsageError>;

    /// Shorthand for `set_enabled(id, true)`.
    example:
    /// ```
    /// use dasynq::{EventLoop, FdOptions, FnHandler, Interest, Rearm};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(4).build()?;
    /// let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// // Registered disabled, enabled once the program is ready for it.
    /// let w = lp.add_fd(a.into(), Interest::WRITE, FdOptions::new().disabled(),
    ///                   FnHandler::new(|_, _| Rearm::Remove))?;
    /// assert_eq!(lp.poll(), 0);
    /// lp.enable(w)?;
    /// assert_eq!(lp.poll(), 1);
    /// # Ok(()) }
    /// ```
    fn enable(&self, id: WatchId) -> Result<(), UsageError>;

    /// Shorthand for `set_enabled(id, false)`.
    example:
    /// ```
    /// use dasynq::{EventLoop, FdOptions, FnHandler, Interest, Rearm};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(4).build()?;
    /// let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// let w = lp.add_fd(a.into(), Interest::WRITE, FdOptions::new(),
    ///                   FnHandler::new(|_, _| Rearm::Rearm))?;
    /// lp.disable(w)?; // writable, but nobody is told
    /// assert_eq!(lp.poll(), 0);
    /// # Ok(()) }
    /// ```
    fn disable(&self, id: WatchId) -> Result<(), UsageError>;

    /// Enable or disable one half of a bidirectional fd watcher.
    example:
    /// ```
    /// use dasynq::{BidiOptions, Event, EventLoop, FnHandler, Half, Rearm};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(4).build()?;
    /// let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// let opts = BidiOptions::new().enabled(true, false);
    /// let w = lp.add_bidi(a.into(), opts, FnHandler::new(|_, ev| {
    ///     assert!(matches!(ev, Event::Write { .. }));
    ///     Rearm::Disarm
    /// }))?;
    /// assert_eq!(lp.poll(), 0); // nothing to read
    /// lp.set_half_enabled(w, Half::Write, true)?; // output queued: wait for room
    /// assert_eq!(lp.poll(), 1);
    /// # Ok(()) }
    /// ```
    fn set_half_enabled(&self, id: WatchId, half: Half, enabled: bool) -> Result<(), UsageError>;

    /// Change which directions an fd watcher waits for (not for bidirectional watchers, whose
    /// halves are enabled separately). `interest` must not be empty.
    example:
    /// ```
    /// use dasynq::{EventLoop, FdOptions, FnHandler, Interest, Rearm};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(4).build()?;
    /// let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// let w = lp.add_fd(a.into(), Interest::READ, FdOptions::new(),
    ///                   FnHandler::new(|_, _| Rearm::Rearm))?;
    /// assert_eq!(lp.poll(), 0);
    /// lp.set_interest(w, Interest::BOTH)?;
    /// assert_eq!(lp.poll(), 1); // writable
    /// # Ok(()) }
    /// ```
    fn set_interest(&self, id: WatchId, interest: Interest) -> Result<(), UsageError>;

    /// Arm (or re-arm) a timer: first expiry at `deadline`, then every `interval` if given
    /// (`None` or zero: one-shot). Periodic timers keep their phase: expiries are at
    /// `deadline + k * interval`, and missed ones are counted. Arming resets the expiration
    /// count, drops a queued expiry and enables the timer. Deadlines in the past expire at
    /// once; deadlines too far to represent never expire.
    example:
    /// ```
    /// use dasynq::{Clock, Deadline, Event, EventLoop, FnHandler, Priority, Rearm};
    /// use std::time::Duration;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(4).timers(1).build()?;
    /// let t = lp.add_timer(Clock::Monotonic, Priority::DEFAULT, FnHandler::new(|cx, ev| {
    ///     assert!(matches!(ev, Event::Timer { expirations: 1.. }));
    ///     cx.stop();
    ///     Rearm::Rearm
    /// }))?;
    /// let start = lp.now();
    /// lp.arm_timer(t, Deadline::After(Duration::from_millis(5)), None)?;
    /// lp.run();
    /// assert!(lp.now() >= start + Duration::from_millis(5));
    /// # Ok(()) }
    /// ```
    fn arm_timer(&self, id: WatchId, deadline: Deadline, interval: Option<Duration>)
        -> Result<(), UsageError>;

    /// Stop a timer: it stops counting and a queued expiry is dropped. It stays registered
    /// and can be armed again.
    example:
    /// ```
    /// use dasynq::{Clock, Deadline, EventLoop, FnHandler, Priority, Rearm};
    /// use std::time::Duration;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(4).timers(1).build()?;
    /// let t = lp.add_timer(Clock::Monotonic, Priority::DEFAULT, FnHandler::new(|_, _| Rearm::Rearm))?;
    /// lp.arm_timer(t, Deadline::After(Duration::ZERO), None)?;
    /// lp.stop_timer(t)?;
    /// assert_eq!(lp.poll(), 0); // the expiry was dropped
    /// # Ok(()) }
    /// ```
    fn stop_timer(&self, id: WatchId) -> Result<(), UsageError>;

    /// Another [`Waker`] for a wake watcher.
    example:
    /// ```
    /// use dasynq::{EventLoop, FnHandler, Priority, Rearm};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(4).build()?;
    /// let (w, _first) = lp.add_wake(Priority::DEFAULT, FnHandler::new(|_, _| Rearm::Rearm))?;
    /// let second = lp.waker(w)?;
    /// second.wake();
    /// assert_eq!(lp.poll(), 1);
    /// # Ok(()) }
    /// ```
    fn waker(&self, id: WatchId) -> Result<Waker, UsageError>;

    /// Make the running `run`/`poll` call return after the current handler; if none is
    /// running, the next one returns at once.
    ///
    /// On a [`ThreadedLoop`](crate::ThreadedLoop) run by several threads, from any thread: every
    /// run call in progress returns after its current handler (those blocked in the kernel
    /// are woken, one after another). A call that starts afterwards runs as usual, so to shut
    /// the runners down, set a flag of your own that their loops check, then call `stop`
    /// until they have all returned.
    example:
    /// ```
    /// use dasynq::{EventLoop, FnHandler};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(4).build()?;
    /// lp.stop();
    /// assert_eq!(lp.run(), 0); // returns at once
    /// # Ok(()) }
    /// ```
    fn stop(&self);

    /// The loop's monotonic time (virtual time on the `Sim` backend).
    example:
    /// ```
    /// use dasynq::{EventLoop, FnHandler};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().build()?;
    /// assert!(lp.now() <= std::time::Instant::now());
    /// # Ok(()) }
    /// ```
    fn now(&self) -> Instant;

    /// The loop's wall-clock time (virtual time on the `Sim` backend).
    example:
    /// ```
    /// use dasynq::{EventLoop, FnHandler};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().build()?;
    /// assert!(lp.system_now() > std::time::UNIX_EPOCH);
    /// # Ok(()) }
    /// ```
    fn system_now(&self) -> SystemTime;

    /// Whether `id` names a live watcher of this loop.
    example:
    /// ```
    /// use dasynq::{Clock, EventLoop, FnHandler, Priority, Rearm};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let a = EventLoop::<FnHandler>::builder().build()?;
    /// let b = EventLoop::<FnHandler>::builder().build()?;
    /// let t = a.add_timer(Clock::Monotonic, Priority::DEFAULT, FnHandler::new(|_, _| Rearm::Rearm))?;
    /// assert!(a.contains(t));
    /// assert!(!b.contains(t)); // ids carry their loop
    /// # Ok(()) }
    /// ```
    fn contains(&self, id: WatchId) -> bool;

    /// How full the pools are.
    example:
    /// ```
    /// use dasynq::{EventLoop, FnHandler};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(100).timers(10).build()?;
    /// let u = lp.usage();
    /// assert_eq!((u.watchers, u.watchers_capacity, u.timers_capacity), (0, 100, 10));
    /// # Ok(()) }
    /// ```
    fn usage(&self) -> Usage;

    /// Kernel errors absorbed so far (see [`KernelFaults`]).
    example:
    /// ```
    /// use dasynq::{EventLoop, FnHandler};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().build()?;
    /// assert_eq!(lp.kernel_faults().count, 0); // a healthy kernel refuses nothing
    /// # Ok(()) }
    /// ```
    fn kernel_faults(&self) -> KernelFaults;
}
