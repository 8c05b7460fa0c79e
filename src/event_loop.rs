//! The event loop: construction, the registration API ([`Control`]), and `run`/`poll`.
//!
//! `EventLoop<H, B, F>` owns three things: the state (behind the flavour's lock), the backend,
//! and one handler cell per slot. A handler cell is touched either under the state lock while
//! its watcher is not running (to store or take the handler), or, without the lock, by the one
//! thread that claimed the watcher for dispatch (marked `running` under the lock). No user code
//! runs while the state is locked.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::backend::{Backend, BackendEvent, ChildCommand, KernelError, SpawnHow};
use crate::child::Spawned;
use crate::control::{Cx, KernelFaults, Ops, Usage};
use crate::error::{BuildError, Error, Rejected, SignalChildError, SpawnError, UsageError};
use crate::handler::{Event, Handler, Rearm, Removed};
use crate::id::{Priority, WatchId};
use crate::interest::{Half, Interest};
use crate::lock::{Flavor, Single, StateLock, Threaded};
use crate::options::{BidiOptions, ChildSignals, Emulation, FdOptions, SpawnOptions};
use crate::signal::{SigInfo, Signal, SignalSet};
use crate::state::{Capacities, Delivery, Dispatch, Enter, Rearming, Removal, State};
use crate::timer::{Clock, Deadline, MonoAnchor, duration_ns, system_ns, system_time};
use crate::waker::{WakeShared, Waker};

use crate::DefaultBackend;

/// A loop that any number of threads may run at once (`Sync`), and that any thread may
/// register with, remove from, enable, arm, wake and stop, also while it runs.
///
/// Each event is dispatched on whichever runner is free; a handler never runs on two
/// threads at once. Each run call lends its own [`Handler::Data`], so per-thread state needs
/// no lock; state shared by all runners goes behind an `Arc` (atomics, a mutex). Handlers
/// must be `Send`. The README's "Many threads" section has the full contract.
///
/// ```
/// use dasynq::{Cx, Event, Handler, Priority, Rearm, ThreadedLoop};
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
///
/// struct Job;
/// #[derive(Default)]
/// struct PerThread { handled: u32 }
///
/// impl Handler for Job {
///     type Data = PerThread;
///     fn on_event(&mut self, _: &Cx<'_, Self>, mine: &mut PerThread, _: Event<'_>) -> Rearm {
///         mine.handled += 1;
///         Rearm::Rearm
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let lp = Arc::new(ThreadedLoop::<Job>::builder().runners(2).build()?);
/// let (_id, waker) = lp.add_wake(Priority::DEFAULT, Job)?;
/// let done = Arc::new(AtomicBool::new(false));
/// let runners: Vec<_> = (0..2)
///     .map(|_| {
///         let (lp, done) = (lp.clone(), done.clone());
///         std::thread::spawn(move || {
///             let mut mine = PerThread::default();
///             while !done.load(Ordering::SeqCst) {
///                 lp.run_with(&mut mine);
///             }
///             mine.handled
///         })
///     })
///     .collect();
/// waker.wake();
/// // Shut down: a flag the runners check, then `stop` until they have all returned.
/// done.store(true, Ordering::SeqCst);
/// let mut handled = 0;
/// for r in runners {
///     while !r.is_finished() {
///         lp.stop();
///         std::thread::sleep(std::time::Duration::from_millis(1));
///     }
///     handled += r.join().unwrap();
/// }
/// assert!(handled <= 1);
/// # Ok(()) }
/// ```
///
/// An `Arc<ThreadedLoop<H>>` is a [`Control`](crate::Control) too, so helpers generic over
/// `Control` take `&lp` as well as a handler's `cx`.
pub type ThreadedLoop<H, B = DefaultBackend> = EventLoop<H, B, Threaded>;

static NEXT_TAG: AtomicU32 = AtomicU32::new(1);

struct HandlerCell<H>(UnsafeCell<Option<H>>);

struct EventsCell<E>(UnsafeCell<E>);

/// An event loop with handlers of type `H`, on backend `B`, guarded by lock flavour `F`.
///
/// Built by [`EventLoop::builder`]; every pool is allocated then, and nothing allocates
/// afterwards. All operations take `&self`. The registration and control operations below
/// are also methods of [`Cx`], the handler's view of its loop (and of the [`Control`](crate::Control) trait,
/// for code generic over either). Handlers with [`Data`](Handler::Data) run through
/// [`run_with`](Self::run_with) and the other `_with` calls; plain [`run`](Self::run) and
/// friends exist when `Data = ()`.
///
/// ```
/// use dasynq::{EventLoop, Event, FnHandler, Interest, Rearm, FdOptions};
/// use std::io::Write;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let lp = EventLoop::<FnHandler>::builder().watchers(16).build()?;
/// let (r, mut w) = std::os::unix::net::UnixStream::pair()?;
/// lp.add_fd(r.into(), Interest::READ, FdOptions::new(), FnHandler::new(|cx, ev| {
///     if let Event::Fd { ready, .. } = ev {
///         assert!(ready.is_readable());
///     }
///     cx.stop();
///     Rearm::Remove
/// }))?;
/// w.write_all(b"x")?;
/// assert_eq!(lp.run(), 1);
/// # Ok(()) }
/// ```
pub struct EventLoop<H: Handler, B: Backend = DefaultBackend, F: Flavor = Single> {
    state: F::Lock<State>,
    /// Events buffers, one per run call that may wait in the backend at once; a call takes
    /// one by index under the state lock (single-threaded loops: one, borrowed around each
    /// wait).
    bufs: Box<[EventsCell<B::Events>]>,
    handlers: Box<[HandlerCell<H>]>,
    backend: B,
    wake: Arc<WakeShared>,
    anchor: MonoAnchor,
    tag: u32,
}

// SAFETY: the threaded flavour guards the state with a mutex; each events buffer is used by
// the one run call that took its index under that mutex, until it gives it back; and every
// handler cell is accessed by one thread at a time (the holder of the state lock while the
// watcher is idle, or the thread that claimed it for dispatch); handlers and buffers move
// between threads, hence `H: Send` (and `B::Events: Send`, required by `Backend`).
unsafe impl<H: Handler + Send, B: Backend> Sync for EventLoop<H, B, Threaded> {}

// SAFETY: as for `Threaded`: `Modelled` is the same flavour over shuttle's mutex.
#[cfg(feature = "model")]
unsafe impl<H: Handler + Send, B: Backend> Sync for EventLoop<H, B, crate::lock::Modelled> {}

/// Ties a builder to its loop's type parameters without owning any of them.
type Marker<H, B, F> = fn() -> (H, B, F);

/// Builds an [`EventLoop`] with fixed capacities.
///
/// # Capacity guide
///
/// Everything the loop will ever use is allocated by [`build`](Self::build); after that,
/// registration fails with [`Error::Capacity`] naming the full pool, and nothing else fails
/// for lack of room.
///
/// | setting | default | what takes one |
/// | --- | --- | --- |
/// | [`watchers`](Self::watchers) | 1024 | every watcher of every kind (at most 2^24) |
/// | [`timers`](Self::timers) | 64 (at most `watchers`) | each timer, besides its watcher slot |
/// | [`wakers`](Self::wakers) | 16 (at most `watchers`) | each wake watcher, besides its watcher slot |
/// | [`events`](Self::events) | 256 | kernel events fetched per wait (at most 65,536) |
/// | [`runners`](Self::runners) | 1; threaded: available parallelism, at most 64 | an events buffer per thread that may run the loop at once |
/// | [`signal_instances`](Self::signal_instances) | 32 | a signal instance taken from the kernel and not yet delivered, beyond the first of each signal watcher |
///
/// Memory is at most 164 bytes per watcher slot plus `size_of::<Option<H>>()` (the handler's
/// size, or up to its alignment more when no bit pattern of `H` is spare), 16 bytes per timer,
/// 28 per wake watcher, 84 per signal instance, and per runner an events buffer of the
/// kernel's records (12 bytes each on x86_64 Linux): a daemon sized for 10,000 connections
/// with a 1 KiB buffer in each handler and 5,000 timers spends about 12 MB, once
/// (`tests/memory.rs` holds the loop to these figures). Reserve
/// a watcher for each thing that must never fail to register later (a child watcher per
/// service with [`reserve_child`](EventLoop::reserve_child)); [`usage`](EventLoop::usage)
/// reports how full each pool is.
///
/// ```
/// use dasynq::{EventLoop, FnHandler};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let lp = EventLoop::<FnHandler>::builder()
///     .watchers(10_000) // connections, listeners, timers, children...
///     .timers(5_000)    // one idle timer per connection
///     .wakers(2)
///     .build()?;
/// assert_eq!(lp.usage().watchers_capacity, 10_000);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Builder<H, B, F> {
    use_pidfd: bool,
    kill_children_on_drop: bool,
    watchers: usize,
    timers: Option<usize>,
    wakers: Option<usize>,
    events: usize,
    runners: Option<usize>,
    signal_instances: usize,
    _p: PhantomData<Marker<H, B, F>>,
}

impl<H: Handler, B: Backend, F: Flavor> Clone for Builder<H, B, F> {
    fn clone(&self) -> Self {
        Builder {
            _p: PhantomData,
            ..*self
        }
    }
}

/// What `options` ask of the backend's spawn; `watched`: the signals this loop watches.
fn spawn_how(options: SpawnOptions, watched: SignalSet) -> SpawnHow {
    SpawnHow {
        reset: match options.signals {
            ChildSignals::Reset => Some(watched),
            ChildSignals::Inherit => None,
        },
        new_group: options.new_group,
    }
}

const MAX_WATCHERS: usize = 1 << 24;
const MAX_EVENTS: usize = 1 << 16;
const MAX_RUNNERS: usize = 1024;
const MAX_SIGNAL_INSTANCES: usize = 1 << 16;
const DEFAULT_SIGNAL_INSTANCES: usize = 32;
/// The most runners a threaded loop reserves by default, whatever the machine.
const DEFAULT_RUNNERS_CAP: usize = 64;

impl<H: Handler, B: Backend, F: Flavor> Builder<H, B, F> {
    /// Watcher slots: every watcher of every kind takes one (default 1024, at most 2^24).
    pub fn watchers(mut self, n: usize) -> Self {
        self.watchers = n;
        self
    }
    /// Timer slots, at most `watchers` (default 64, or `watchers` if smaller; 0 allows no
    /// timers).
    pub fn timers(mut self, n: usize) -> Self {
        self.timers = Some(n);
        self
    }
    /// Wake slots, at most `watchers` (default 16, or `watchers` if smaller; 0 allows no wake
    /// watchers).
    pub fn wakers(mut self, n: usize) -> Self {
        self.wakers = Some(n);
        self
    }

    fn timers_or_default(&self) -> usize {
        self.timers.unwrap_or(64.min(self.watchers))
    }

    fn wakers_or_default(&self) -> usize {
        self.wakers.unwrap_or(16.min(self.watchers))
    }
    /// Watch children without pidfds, through `SIGCHLD` and `waitid(P_PID)` (for kernels older
    /// than Linux 5.3, and to exercise that path in tests). `SIGCHLD` must then be blocked in
    /// every thread; fallback children are also polled every 100 ms as a safety net.
    pub fn child_watch_fallback(mut self, fallback: bool) -> Self {
        self.use_pidfd = !fallback;
        self
    }
    /// What dropping the loop does with the children it still watches (running, or exited and
    /// not yet reaped). `false` (the default): it leaves them, closing only its pidfds; they
    /// are the program's from then on, to `waitpid` (each exited one stays a zombie until the
    /// program reaps it or itself exits, when init does). `true`: it sends each `SIGKILL`
    /// (through its pidfd, or under the guarantee `signal_child` gives, so never a recycled
    /// pid), all of them first, then reaps them before the drop returns, waiting up to 10
    /// seconds in all (a process in uninterruptible sleep dies only when it wakes; one still
    /// there after that is left to the program as above). Children whose watcher was removed
    /// are not the loop's any more and are left alone either way.
    pub fn kill_children_on_drop(mut self, kill: bool) -> Self {
        self.kill_children_on_drop = kill;
        self
    }
    /// Kernel events fetched per wait (default 256, at most 65536).
    pub fn events(mut self, n: usize) -> Self {
        self.events = n;
        self
    }

    /// Threads that may run the loop at once (`run`, `run_limit`, `run_timeout`, `poll`
    /// and `poll_limit` calls in progress together): one events buffer of
    /// [`events`](Self::events) entries is reserved for each. Threaded loops default to the
    /// machine's available parallelism (at most 64); single-threaded loops have exactly one
    /// runner, and any other number is refused. At most 1024.
    ///
    /// More calls than this at once do not fail: a blocking call waits (on a condition
    /// variable, not spinning) until another call returns and frees its buffer, or until its
    /// own timeout ends, and then runs as usual; `poll` never waits, and without a free buffer
    /// it runs only what is already queued in user space.
    pub fn runners(mut self, n: usize) -> Self {
        self.runners = Some(n);
        self
    }

    /// Signal instances the loop may hold, taken from the kernel and not yet delivered,
    /// beyond the first of each signal watcher (default 32, at most 65,536; 0 holds one per
    /// watcher at most).
    ///
    /// The loop reads instances only while each has a place, so none is ever lost: with
    /// room for several, one system call takes up to 16 of them and a single-threaded
    /// loop runs the watcher once per instance in the same batch, in the order taken (a
    /// threaded runner claims it again at once), so a burst of queued signals drains without
    /// a wait per instance. Instances beyond the room
    /// stay queued in the kernel (where real-time signals keep their order and data, and
    /// standard ones coalesce), as do those of a disabled watcher's signal. Each entry is a
    /// [`SigInfo`] and its link: 84 bytes on 64-bit targets.
    pub fn signal_instances(mut self, n: usize) -> Self {
        self.signal_instances = n;
        self
    }

    fn runners_or_default(&self) -> usize {
        match (self.runners, F::THREADED) {
            (Some(n), _) => n,
            (None, false) => 1,
            (None, true) => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(DEFAULT_RUNNERS_CAP),
        }
    }

    fn check(&self) -> Result<(), BuildError> {
        let bad = |what, value, max| Err(BuildError::InvalidCapacity { what, value, max });
        if self.watchers == 0 || self.watchers > MAX_WATCHERS {
            return bad("watchers", self.watchers, MAX_WATCHERS);
        }
        if self.timers_or_default() > self.watchers {
            return bad("timers", self.timers_or_default(), self.watchers);
        }
        if self.wakers_or_default() > self.watchers {
            return bad("wakers", self.wakers_or_default(), self.watchers);
        }
        if self.events == 0 || self.events > MAX_EVENTS {
            return bad("events", self.events, MAX_EVENTS);
        }
        if self.signal_instances > MAX_SIGNAL_INSTANCES {
            return bad(
                "signal_instances",
                self.signal_instances,
                MAX_SIGNAL_INSTANCES,
            );
        }
        let runners = self.runners_or_default();
        let max_runners = if F::THREADED { MAX_RUNNERS } else { 1 };
        if runners == 0 || runners > max_runners {
            return bad("runners", runners, max_runners);
        }
        Ok(())
    }

    /// Build on the given backend (a `dasynq::sim::Sim`, with the `sim` feature, or an
    /// [`Epoll`](crate::backend::Epoll) over a chosen kernel).
    pub fn build_with(self, backend: B) -> Result<EventLoop<H, B, F>, BuildError> {
        self.check()?;
        let oom = |what| BuildError::OutOfMemory { what };
        let tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
        let (timers, wakers) = (self.timers_or_default(), self.wakers_or_default());
        let caps = Capacities {
            use_pidfd: self.use_pidfd,
            kill_children_on_drop: self.kill_children_on_drop,
            watchers: self.watchers,
            timers,
            wakers,
            runners: self.runners_or_default(),
            signal_spill: self.signal_instances,
        };
        let state = State::new(&caps, F::ONESHOT, F::THREADED, tag).ok_or(oom("watchers"))?;
        let mut bufs = Vec::new();
        bufs.try_reserve_exact(caps.runners)
            .map_err(|_| oom("events buffers"))?;
        for _ in 0..caps.runners {
            let events = backend
                .new_events(self.events)
                .map_err(|e| BuildError::Kernel {
                    call: e.call,
                    errno: e.errno,
                })?;
            bufs.push(EventsCell(UnsafeCell::new(events)));
        }
        if F::THREADED && caps.runners > 1 {
            backend.share_waits().map_err(|e| BuildError::Kernel {
                call: e.call,
                errno: e.errno,
            })?;
        }
        let wake = WakeShared::new(backend.notifier(), wakers).ok_or(oom("wakers"))?;
        let mut handlers = Vec::new();
        handlers
            .try_reserve_exact(self.watchers)
            .map_err(|_| oom("handlers"))?;
        handlers.extend((0..self.watchers).map(|_| HandlerCell(UnsafeCell::new(None))));
        let anchor = MonoAnchor {
            instant: Instant::now(),
            ns: backend.now(Clock::Monotonic),
        };
        Ok(EventLoop {
            state: F::Lock::new(state),
            bufs: bufs.into_boxed_slice(),
            handlers: handlers.into_boxed_slice(),
            backend,
            wake: Arc::new(wake),
            anchor,
            tag,
        })
    }
}

#[cfg(any(dasynq_epoll, dasynq_kqueue))]
impl<H: Handler, F: Flavor> Builder<H, DefaultBackend, F> {
    /// Build on the platform's default backend (epoll on Linux, kqueue on the BSDs and macOS).
    pub fn build(self) -> Result<EventLoop<H, DefaultBackend, F>, BuildError> {
        let backend = DefaultBackend::new().map_err(|e| BuildError::Kernel {
            call: e.call,
            errno: e.errno,
        })?;
        self.build_with(backend)
    }
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum Mode {
    Poll,
    Block,
    Until(u64),
}

impl<H: Handler, B: Backend, F: Flavor> EventLoop<H, B, F> {
    /// A builder with the default capacities.
    pub fn builder() -> Builder<H, B, F> {
        Builder {
            use_pidfd: true,
            kill_children_on_drop: false,
            watchers: 1024,
            timers: None,
            wakers: None,
            events: 256,
            runners: None,
            signal_instances: DEFAULT_SIGNAL_INSTANCES,
            _p: PhantomData,
        }
    }

    /// The backend (for example a `dasynq::sim::Sim` handle, to drive the simulation).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn cx(&self, id: WatchId) -> Cx<'_, H> {
        Cx { ctl: self, id }
    }

    /// Take the handler of a registration that ended. Called with the state locked.
    fn take_handler(&self, index: u32) -> Option<H> {
        let cell = self.handlers.get(index as usize)?;
        // SAFETY: the caller holds the state lock and the watcher is not running (it was just
        // detached), so no other thread or frame is using this cell.
        unsafe { (*cell.0.get()).take() }
    }

    fn put_handler(&self, index: u32, handler: H) {
        if let Some(cell) = self.handlers.get(index as usize) {
            // SAFETY: called with the state lock held for a slot that was free until this
            // registration, so nothing else references the cell.
            unsafe { *cell.0.get() = Some(handler) };
        }
    }

    fn finish_removal(&self, removal: Option<(Removal, Option<H>)>) {
        if let Some((r, Some(h))) = removal {
            let id = r.id;
            h.on_removed(&self.cx(id), Removed { id, fd: r.fd });
        }
    }

    /// Run until at least one handler has run (or [`stop`](Self::stop) is called), blocking
    /// as needed, lending `data` to each handler. Returns how many handlers ran (on this
    /// thread, by this call).
    ///
    /// On a [`ThreadedLoop`], any number of threads may be in `run_with` (and the other run
    /// calls) at once, each with its own `data`: each event is dispatched on whichever thread
    /// is free, with that thread's data, and each call keeps its own limit, deadline and
    /// count. See the README's "Many threads" section.
    ///
    /// With nothing registered, a single-threaded loop returns 0 at once (nothing could ever
    /// end the wait: only this thread can register, and no other thread can reach it); a
    /// threaded loop waits, because another thread may register a watcher or call `stop`.
    /// A loop whose watchers are all disabled or unarmed waits too: the program holds their
    /// ids and may be woken by a signal, a child or another loop's handler.
    pub fn run_with(&self, data: &mut H::Data) -> usize {
        self.run_inner(usize::MAX, Mode::Block, data)
    }

    /// Like [`run_with`](Self::run_with), but run at most `limit` handlers. Events beyond
    /// the limit stay queued for the next call. A limit of 0 returns 0 at once and changes
    /// nothing.
    pub fn run_limit_with(&self, limit: usize, data: &mut H::Data) -> usize {
        self.run_inner(limit, Mode::Block, data)
    }

    /// Run the handlers of whatever is ready now, without blocking, lending them `data`.
    /// Returns how many ran. Never blocks, whatever other threads are doing with the loop
    /// (without a free events buffer, it runs only what is already queued in user space).
    pub fn poll_with(&self, data: &mut H::Data) -> usize {
        self.run_inner(usize::MAX, Mode::Poll, data)
    }

    /// Like [`poll_with`](Self::poll_with), with at most `limit` handlers.
    pub fn poll_limit_with(&self, limit: usize, data: &mut H::Data) -> usize {
        self.run_inner(limit, Mode::Poll, data)
    }

    /// Like [`run_with`](Self::run_with), but give up after `timeout`; returns 0 if nothing
    /// ran in time. On the `Sim` backend the timeout passes in virtual time.
    pub fn run_timeout_with(&self, timeout: Duration, data: &mut H::Data) -> usize {
        let end = self
            .backend
            .now(Clock::Monotonic)
            .saturating_add(duration_ns(timeout));
        self.run_inner(usize::MAX, Mode::Until(end), data)
    }

    fn run_inner(&self, limit: usize, mode: Mode, data: &mut H::Data) -> usize {
        if limit == 0 {
            return 0;
        }
        if F::THREADED {
            self.run_shared(limit, mode, data)
        } else {
            self.run_single(limit, mode, data)
        }
    }

    /// Lock the state; in threaded loops, poke the notifier after unlocking if the section
    /// handed work off to a runner sleeping in the backend (see `state/runners.rs`).
    #[inline(always)]
    fn locked<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        if !F::THREADED {
            return self.state.with(f);
        }
        let (r, poke) = self.state.with(|s| {
            let r = f(s);
            (r, s.take_notify())
        });
        if poke {
            self.wake.notify();
        }
        r
    }

    /// The timeout of the next wait: zero if work is queued or the call polls, else what the
    /// mode leaves, bounded by retries of failed kernel changes.
    #[inline(always)]
    fn wait_timeout(&self, s: &mut State, mode: Mode) -> Option<Duration> {
        // A wait begins: the clocks read after the last one are no longer the loop's time.
        s.loop_time = [None, None];
        let bound = s.retry_kernel(&self.backend);
        s.take_missed_signals(&self.backend, &self.wake);
        let mut t = if s.pending_len() > 0 || mode == Mode::Poll {
            Some(Duration::ZERO)
        } else {
            match mode {
                Mode::Until(end) => Some(Duration::from_nanos(
                    end.saturating_sub(self.backend.now(Clock::Monotonic)),
                )),
                _ => None,
            }
        };
        if let Some(b) = bound {
            t = Some(t.map_or(b, |t| t.min(b)));
        }
        t
    }

    /// Take in what a wait returned (under the lock). Returns whether the wait failed.
    #[inline(always)]
    fn take_in(&self, s: &mut State, buf: &B::Events, r: Result<(), KernelError>) -> bool {
        let failed = r.is_err();
        if let Err(e) = r {
            // Nothing came from the kernel; what lives in user space (wakes, timer counts,
            // fallback children) is still taken in, so that a wake made before this call
            // coalesces with an event queued before it.
            s.fault(e);
        }
        let mut fired = [false; 2];
        let mut woke = false;
        let mut signals = false;
        // (A failed wait leaves the buffer empty.)
        // Inlined into the backend's loop: a call per event, with the event passed through
        // memory, cost more than the work.
        self.backend.for_each_event(
            buf,
            #[inline(always)]
            |ev| match ev {
                BackendEvent::Fd { token, ready } => {
                    s.on_fd_event(token, ready, &self.backend, &self.wake)
                }
                BackendEvent::Clock(c) => fired[c.index()] = true,
                BackendEvent::Wake => woke = true,
                BackendEvent::SignalsPending => signals = true,
                BackendEvent::Garbled => s.fault(KernelError {
                    call: "wait (an event that names nothing registered)",
                    errno: crate::error::Errno::INVAL,
                }),
            },
        );
        if woke {
            // The notifier was drained: a hand-off poke, if one was out, has been taken.
            s.took_wake();
        }
        if signals {
            s.take_signals(&self.backend, &self.wake);
        }
        if s.has_fallback_children() {
            s.poll_fallback_children(&self.backend, &self.wake);
        }
        s.process_timers(fired, &self.backend, &self.wake);
        if woke || self.wake.has_pending() {
            s.process_wakes(&self.wake);
        }
        failed
    }

    /// The single-threaded run loop: wait, take in, run a batch (events queued during the
    /// batch wait for the next one, in the deferred FIFO).
    fn run_single(&self, limit: usize, mode: Mode, data: &mut H::Data) -> usize {
        // The lock sections of a call: one counts it in; one per wait readies it; one takes
        // in what the wait returned, opens the batch and claims the first event; one per
        // handler applies its answer and claims the next event; one closes the batch and
        // ends the call. So a pass with one event takes five, and the guard's drop has
        // nothing left to do.
        let Enter::Running(epoch) = self.state.with(State::enter_call) else {
            return 0;
        };
        let mut call = CallGuard::new(self, epoch);
        let Some(cell) = self.bufs.first() else {
            return 0;
        };
        let mut ran = 0;
        // The signal instance of a claimed signal watcher (see `Delivery::Signal`).
        let mut info = SigInfo::new(Signal::from_raw(0));
        loop {
            let timeout = self.state.with(|s| {
                if s.stopped(epoch) {
                    return None;
                }
                if mode == Mode::Block && !s.has_slots() {
                    // Nothing registered, and only this thread could register anything:
                    // nothing can ever end the wait (see `run_with`).
                    return None;
                }
                s.merge_deferred();
                Some(self.wait_timeout(s, mode))
            });
            let Some(timeout) = timeout else { return ran };
            // SAFETY: a single-threaded loop is not `Sync`, so only this thread reaches the
            // buffer, and this borrow ends before any handler runs (a handler's nested run
            // call is the only other user of the buffer).
            let buf = unsafe { &mut *cell.0.get() };
            let r = self.backend.wait(buf, timeout);
            let (failed, first) = self.state.with(|s| {
                let failed = self.take_in(s, buf, r);
                // The batch opens before the claim (what a claim queues is deferred).
                s.batch_depth += 1;
                if s.stopped(epoch) {
                    return (failed, None);
                }
                (failed, s.next_dispatch(&mut info))
            });
            let Some(mut d) = first else {
                // Nothing to run: close the batch; end the call or wait again.
                self.state
                    .with(|s| s.batch_depth = s.batch_depth.saturating_sub(1));
                let expired = match mode {
                    Mode::Until(end) => self.backend.now(Clock::Monotonic) >= end,
                    _ => false,
                };
                if mode == Mode::Poll || failed || expired {
                    return ran;
                }
                continue;
            };
            // The batch: run up to `limit` handlers of the events queued now, then end the
            // call (something ran).
            call.batch = true;
            loop {
                call.dispatch = Some(d.claimed());
                let rearm = self.call_handler(&d, data, &info);
                call.dispatch = None;
                ran += 1;
                let mut finished = Some((d.claimed(), rearm));
                // One lock section applies the handler's answer and claims the next event,
                // except after a removal: `on_removed` runs before anything else is claimed.
                let next = loop {
                    let (removal, next) = self.state.with(|s| {
                        let removal = finished.take().and_then(|(d, rearm)| {
                            s.finish_dispatch(d, rearm, &self.backend, &self.wake)
                                .map(|r| {
                                    let h = self.take_handler(r.id.index);
                                    (r, h)
                                })
                        });
                        if removal.is_some() || ran >= limit {
                            return (removal, Ok(None));
                        }
                        if s.stopped(epoch) {
                            return (removal, Err(()));
                        }
                        (removal, Ok(s.next_dispatch(&mut info)))
                    });
                    let had_removal = removal.is_some();
                    self.finish_removal(removal);
                    match next {
                        Ok(None) if had_removal && ran < limit => continue,
                        Ok(next) => break next,
                        Err(()) => break None,
                    }
                };
                match next {
                    Some(next) => d = next,
                    None => break,
                }
            }
            // One lock section closes the batch and ends the call.
            let poke = self.state.with(|s| {
                s.batch_depth = s.batch_depth.saturating_sub(1);
                self.leave_single(s, epoch)
            });
            call.batch = false;
            return call.ended(poke, ran);
        }
    }

    /// End a single-threaded run call (under the lock; what `CallGuard`'s drop does when a
    /// call ends early). Returns whether the notifier must be poked after unlocking: the
    /// loop's fd was lent to an embedding loop and work is left queued here.
    #[inline(always)]
    fn leave_single(&self, s: &mut State, epoch: u64) -> bool {
        // No events buffer is counted out (a single-threaded call takes none), so no call
        // waits for one.
        let (_, poke) = s.end_call(epoch, None);
        poke
    }

    /// Take a free events buffer (under the lock), telling the backend how many are held.
    fn take_buffer(&self, s: &mut State) -> Option<u32> {
        let b = s.take_buffer()?;
        self.backend.runners_changed(s.holding_buffers());
        Some(b)
    }

    /// Take an events buffer for a blocking call: wait (on the lock's condition variable)
    /// while every buffer is in use, until one is free, the call is stopped, or its time is
    /// up. `None`: no buffer (stopped, or out of time).
    fn wait_for_buffer(&self, epoch: u64, mode: Mode) -> Option<u32> {
        if let Some(b) = self.locked(|s| self.take_buffer(s)) {
            return Some(b);
        }
        let left = match mode {
            Mode::Until(end) => Some(Duration::from_nanos(
                end.saturating_sub(self.backend.now(Clock::Monotonic)),
            )),
            _ => None,
        };
        let mut counted = false;
        let got = self.state.with_wait(left, |s| {
            if counted {
                s.runners.buffer_waiters -= 1;
                counted = false;
            }
            if s.stopped(epoch) {
                return Some(None);
            }
            if let Some(b) = self.take_buffer(s) {
                return Some(Some(b));
            }
            s.runners.buffer_waiters += 1;
            counted = true;
            None
        });
        if counted {
            self.state.with(|s| s.runners.buffer_waiters -= 1);
        }
        got.flatten()
    }

    /// The threaded run loop: any number of threads run it at once (see `state/runners.rs`
    /// for the protocol). Each call holds one events buffer while it runs; its batch is
    /// bounded by where it began, so nothing it requeues runs again in the same batch, while
    /// other runners may take it at once.
    fn run_shared(&self, limit: usize, mode: Mode, data: &mut H::Data) -> usize {
        // The call is counted in and takes a free events buffer in one lock section.
        let (entered, buffer) = self.locked(|s| match s.enter_call() {
            Enter::Running(epoch) => (Some(epoch), self.take_buffer(s)),
            Enter::Stopped => (None, None),
        });
        let Some(epoch) = entered else {
            return 0;
        };
        let mut call = CallGuard::new(self, epoch);
        call.buffer = match (buffer, mode) {
            (Some(b), _) => Some(b),
            // `poll` never waits for a buffer: without one it runs only what is queued.
            (None, Mode::Poll) => None,
            // Every buffer is in use: wait for one (`wait_for_buffer` looks once more first).
            (None, _) => match self.wait_for_buffer(epoch, mode) {
                Some(b) => Some(b),
                None => return 0,
            },
        };
        let buf = call.buffer.and_then(|b| self.bufs.get(b as usize));
        let mut ran = 0;
        // The current batch: nodes queued before this sequence number.
        let mut bound: Option<u64> = None;
        let mut harvested = false;
        let mut failed = false;
        type Premod = Option<(Rearming, Result<(), KernelError>)>;
        let mut finished: Option<(Dispatch, Rearm, Premod)> = None;
        // The signal instance of a claimed signal watcher (see `Delivery::Signal`).
        let mut info = SigInfo::new(Signal::from_raw(0));
        // A wait's result, taken in by the next lock section.
        let mut waited: Option<(Result<(), KernelError>, bool)> = None;
        // What the lock section claimed for `Step::Run`.
        let mut claimed: Option<(Dispatch, Option<Rearming>)> = None;
        loop {
            let mut release_aside = false;
            let step = self.locked(|s| {
                if let Some((r, blocking)) = waited.take() {
                    if blocking {
                        release_aside = s.left_wait(epoch);
                    }
                    if let Some(cell) = buf {
                        s.runners.harvesting = true;
                        // SAFETY: this call took the buffer's index under the state lock and
                        // gives it back only when it ends; no other call uses it meanwhile.
                        failed |= self.take_in(s, unsafe { &*cell.0.get() }, r);
                        s.runners.harvesting = false;
                    }
                    s.pass_stop_on();
                    bound = Some(s.batch_bound());
                    harvested = true;
                }
                if let Some((d, rearm, premod)) = finished.take() {
                    if let Some((plan, r)) = premod {
                        s.record_premod(d.id.index, plan, r);
                    }
                    // Only a bidirectional watcher's half can have been parked.
                    if matches!(d.delivery, Delivery::Fd { half: Some(_), .. }) {
                        s.unpark_sibling(d.id.index, d.half, &self.wake);
                    }
                    let removal = s.finish_dispatch(d.claimed(), rearm, &self.backend, &self.wake);
                    if let Some(r) = removal {
                        let h = self.take_handler(r.id.index);
                        // `on_removed` runs before anything else is claimed.
                        return Step::Removed(r, h);
                    }
                }
                if s.stopped(epoch) || ran >= limit {
                    s.requeue_rerun(&self.wake);
                    return Step::Done;
                }
                // A signal watcher holding more instances runs again here (see
                // `finish_dispatch`).
                if let Some(d) = s.claim_rerun(&mut info) {
                    let plan = s.rearm_plan(&d);
                    claimed = Some((d, plan));
                    return Step::Run;
                }
                if let Some(b) = bound {
                    if let Some(d) = s.next_dispatch_before(b, &mut info) {
                        if s.pending_len() > 0 {
                            // More than this call takes now: give it to a sleeping runner.
                            s.hand_off();
                        }
                        let plan = s.rearm_plan(&d);
                        claimed = Some((d, plan));
                        return Step::Run;
                    }
                    bound = None;
                    let expired = match mode {
                        Mode::Until(end) => self.backend.now(Clock::Monotonic) >= end,
                        _ => false,
                    };
                    if ran > 0 || mode == Mode::Poll || failed || expired {
                        return Step::Done;
                    }
                }
                if buf.is_none() {
                    // `poll` without a buffer: what is queued now, once.
                    if harvested {
                        return Step::Done;
                    }
                    harvested = true;
                    bound = Some(s.batch_bound());
                    return Step::Again;
                }
                let timeout = self.wait_timeout(s, mode);
                let blocking = timeout != Some(Duration::ZERO);
                if blocking && s.runners.stale_waiting > 0 {
                    // Calls a stop ended still sleep in the backend: do not sleep beside them
                    // (a poke meant for them could come to this call instead).
                    s.runners.aside += 1;
                    return Step::Aside(timeout);
                }
                if blocking {
                    // Counted in the same section that found nothing to claim: whoever
                    // queues work after this sees it and hands it off (no lost wake-up).
                    s.runners.in_wait += 1;
                }
                Step::Wait(timeout, blocking)
            });
            if release_aside {
                self.state.notify_all();
            }
            match step {
                Step::Done => return ran,
                Step::Again => {}
                Step::Aside(timeout) => {
                    // Until the stale sleepers are gone, this call is stopped, or work comes
                    // (at most the wait's own timeout); then look again.
                    self.state.with_wait(timeout, |s| {
                        let go =
                            s.runners.stale_waiting == 0 || s.stopped(epoch) || s.pending_len() > 0;
                        go.then_some(())
                    });
                    self.state
                        .with(|s| s.runners.aside = s.runners.aside.saturating_sub(1));
                }
                Step::Removed(r, h) => self.finish_removal(Some((r, h))),
                Step::Run => {
                    let Some((d, plan)) = claimed.take() else {
                        continue;
                    };
                    call.dispatch = Some(d.claimed());
                    let rearm = self.call_handler(&d, data, &info);
                    call.dispatch = None;
                    ran += 1;
                    // The one-shot re-arm, the system call every threaded event needs, made
                    // here without the lock (the watcher is still ours: see `Rearming`).
                    let premod = match (rearm, plan) {
                        (Rearm::Rearm, Some(plan)) => {
                            // The watcher stays marked running until `finish_dispatch` below.
                            // SAFETY: `plan.fd` is the open fd its slot owns (read under the
                            // lock); a running watcher's slot is never freed; borrow ends here.
                            let fd = unsafe { BorrowedFd::borrow_raw(plan.fd) };
                            Some((
                                plan,
                                self.backend.modify_fd(fd, plan.token, plan.from, plan.to),
                            ))
                        }
                        _ => None,
                    };
                    finished = Some((d, rearm, premod));
                }
                Step::Wait(timeout, blocking) => {
                    let r = match buf {
                        // SAFETY: as above: this call holds the buffer's index.
                        Some(cell) => self.backend.wait(unsafe { &mut *cell.0.get() }, timeout),
                        None => Ok(()),
                    };
                    waited = Some((r, blocking));
                }
            }
        }
    }

    fn call_handler(&self, d: &Dispatch, data: &mut H::Data, info: &SigInfo) -> Rearm {
        let Some(cell) = self.handlers.get(d.id.index as usize) else {
            return Rearm::Disarm;
        };
        // Removal is deferred while running, dispatch skips running watchers, and registration
        // only uses free slots; the cell lives as long as the loop.
        // SAFETY: `next_dispatch` marked this watcher running under the state lock; until
        // `finish_dispatch` clears that mark nothing else touches its cell (see above).
        let Some(handler) = (unsafe { &mut *cell.0.get() }).as_mut() else {
            return Rearm::Disarm;
        };
        let cx = self.cx(d.id);
        match d.delivery {
            Delivery::Fd { fd, ready, half } => {
                // An fd watch always holds an `OwnedFd`, so this is an open fd, never -1.
                // SAFETY: `fd` is that open fd, read from the watcher's slot; a running
                // watcher's slot is never freed (closing it); the borrow ends with this call.
                let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                let ev = match half {
                    None => Event::Fd { fd, ready },
                    Some(0) => Event::Read { fd, ready },
                    Some(_) => Event::Write { fd, ready },
                };
                handler.on_event(&cx, data, ev)
            }
            Delivery::Timer(expirations) => {
                handler.on_event(&cx, data, Event::Timer { expirations })
            }
            Delivery::Wake => handler.on_event(&cx, data, Event::Wake),
            Delivery::Signal => handler.on_event(&cx, data, Event::Signal(*info)),
            Delivery::Child { pid, status } => {
                handler.on_event(&cx, data, Event::Child { pid, status })
            }
        }
    }

    /// Reserve a child watcher, start `cmd`, watch the child: all or nothing.
    fn spawn(
        &self,
        cmd: ChildCommand<'_>,
        options: SpawnOptions,
        handler: H,
    ) -> Result<Spawned, Rejected<H>> {
        let mut watched = SignalSet::new();
        let id = self.register(handler, |s| {
            watched = s.watched_signals();
            s.reserve_child(options.priority.0).map_err(|e| (e, None))
        })?;
        let how = spawn_how(options, watched);
        // Spawned unlocked (fork and exec take a while); nothing reaps the child before it is
        // watched: the loop reaps only watched children.
        let spawned = match self.backend.spawn(cmd, how) {
            Ok(p) => p,
            Err(e) => {
                let handler = self.locked(|s| {
                    let h = self.take_handler(id.index);
                    s.discard(id.index);
                    h
                });
                let error = Error::Spawn { errno: e.errno };
                return match handler {
                    Some(handler) => Err(Rejected::new(error, handler, None)),
                    // Unreachable: the handler was stored by the registration just above.
                    None => std::process::abort(),
                };
            }
        };
        self.locked(|s| {
            if s.watch_child(id.index, spawned.pid, &self.backend).is_err() {
                // Reaped already by someone else (a program-wide SIGCHLD handler): report it.
                s.child_lost(id.index, spawned.pid, &self.wake);
            }
        });
        Ok(Spawned {
            id,
            pid: spawned.pid,
            stdin: spawned.stdin,
            stdout: spawned.stdout,
            stderr: spawned.stderr,
        })
    }

    /// Start `cmd` as the next child of the idle reservation `id`: all or nothing, and no slot
    /// taken.
    fn spawn_into_reservation(
        &self,
        id: WatchId,
        cmd: ChildCommand<'_>,
        options: SpawnOptions,
    ) -> Result<Spawned, SpawnError> {
        let (index, watched) = self.locked(|s| -> Result<_, UsageError> {
            let index = s.lookup(id)?;
            s.begin_spawn(index)?;
            Ok((index, s.watched_signals()))
        })?;
        // Unlocked, as `spawn`; the reservation is marked busy meanwhile, so neither another
        // spawn nor a removal can take it.
        let spawned = self.backend.spawn(cmd, spawn_how(options, watched));
        let pid = spawned.as_ref().ok().map(|p| p.pid);
        self.locked(|s| s.end_spawn(index, pid, &self.backend, &self.wake));
        let spawned = spawned.map_err(|e| SpawnError::Spawn { errno: e.errno })?;
        Ok(Spawned {
            id,
            pid: spawned.pid,
            stdin: spawned.stdin,
            stdout: spawned.stdout,
            stderr: spawned.stderr,
        })
    }

    /// Run a registration under the lock and store the handler if it succeeded; a failure
    /// hands the handler back without dropping it under the lock.
    fn register(
        &self,
        handler: H,
        f: impl FnOnce(&mut State) -> Result<u32, (Error, Option<OwnedFd>)>,
    ) -> Result<WatchId, Rejected<H>> {
        self.locked(move |s| match f(s) {
            Ok(index) => {
                self.put_handler(index, handler);
                Ok(s.id(index))
            }
            Err((e, fd)) => Err(Rejected::new(e, handler, fd)),
        })
    }

    fn with_live<R>(
        &self,
        id: WatchId,
        f: impl FnOnce(&mut State, u32) -> Result<R, UsageError>,
    ) -> Result<R, UsageError> {
        self.locked(|s| {
            let index = s.lookup(id)?;
            f(s, index)
        })
    }
}

/// What a threaded run call does next, decided under the lock.
enum Step<H> {
    /// Run the handler claimed (left in the call's `claimed`, with the re-arm to make
    /// unlocked if it answers `Rearm`: moved through the lock section's result, the record
    /// cost a copy more per event).
    Run,
    /// Call `on_removed` for a registration that ended when its handler returned.
    Removed(Removal, Option<H>),
    /// Wait in the backend (with this timeout; `true`: counted as a runner that may block).
    Wait(Option<Duration>, bool),
    /// Look again (nothing was waited for).
    Again,
    /// Sleep on the condition variable (at most this long) while calls a stop ended still
    /// sleep in the backend, then look again.
    Aside(Option<Duration>),
    /// The call returns.
    Done,
}

/// Ends a run call, also when a handler panics: an interrupted dispatch completes with the
/// watcher disabled (not stuck as running), the batch depth is restored, the call is counted
/// out and its events buffer given back, so the loop stays usable.
struct CallGuard<'a, H: Handler, B: Backend, F: Flavor> {
    lp: &'a EventLoop<H, B, F>,
    /// The stop epoch the call runs in.
    epoch: u64,
    buffer: Option<u32>,
    /// The claimed half whose handler runs (`Dispatch::claimed`).
    dispatch: Option<(u32, usize)>,
    /// Inside a single-threaded batch (`batch_depth` counts it).
    batch: bool,
    /// The call was ended under the lock (`leave_single`): nothing left to do.
    done: bool,
}

impl<'a, H: Handler, B: Backend, F: Flavor> CallGuard<'a, H, B, F> {
    fn new(lp: &'a EventLoop<H, B, F>, epoch: u64) -> Self {
        CallGuard {
            lp,
            epoch,
            buffer: None,
            dispatch: None,
            batch: false,
            done: false,
        }
    }

    /// The call was ended in a lock section (`leave_single`, with no dispatch in progress and
    /// the batch closed): poke the notifier if that said to, and return `ran`.
    fn ended(mut self, poke: bool, ran: usize) -> usize {
        self.done = true;
        if poke {
            // An embedding loop waits on our fd, which shows only kernel events: make it
            // readable for what is queued here (see `AsFd for EventLoop`).
            self.lp.wake.notify();
        }
        ran
    }
}

impl<H: Handler, B: Backend, F: Flavor> Drop for CallGuard<'_, H, B, F> {
    #[inline]
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let lp = self.lp;
        let d = self.dispatch.take();
        let (batch, buffer) = (self.batch, self.buffer.take());
        let (removal, waiters, poke) = lp.locked(|s| {
            if batch {
                s.batch_depth = s.batch_depth.saturating_sub(1);
            }
            let removal = d.and_then(|d| {
                if F::THREADED {
                    s.unpark_sibling(d.0, d.1, &lp.wake);
                }
                s.finish_dispatch(d, Rearm::Disarm, &lp.backend, &lp.wake)
                    .map(|r| {
                        let h = lp.take_handler(r.id.index);
                        (r, h)
                    })
            });
            let (waiters, poke) = s.end_call(self.epoch, buffer);
            if buffer.is_some() {
                lp.backend.runners_changed(s.holding_buffers());
            }
            (removal, waiters, poke)
        });
        if waiters {
            lp.state.notify_all();
        }
        if poke {
            // An embedding loop waits on our fd, which shows only kernel events: make it
            // readable for what is queued here (see `AsFd for EventLoop`).
            lp.wake.notify();
        }
        // A removal requested during a panicking handler: drop it without calling into user
        // code again while unwinding.
        drop(removal);
    }
}

impl<H: Handler, B: Backend, F: Flavor> Ops<H> for EventLoop<H, B, F> {
    fn enable(&self, id: WatchId) -> Result<(), UsageError> {
        Ops::set_enabled(self, id, true)
    }

    fn disable(&self, id: WatchId) -> Result<(), UsageError> {
        Ops::set_enabled(self, id, false)
    }

    fn add_fd(
        &self,
        fd: OwnedFd,
        interest: Interest,
        options: FdOptions,
        handler: H,
    ) -> Result<WatchId, Rejected<H>> {
        if interest.is_empty() {
            let e = Error::InvalidArgument("an fd watcher needs READ, WRITE or BOTH interest");
            return Err(Rejected::new(e, handler, Some(fd)));
        }
        self.register(handler, |s| {
            s.add_fd(
                fd,
                interest,
                false,
                [options.priority.0, 0],
                [options.enabled, false],
                options.emulation == Emulation::Allow,
                &self.backend,
                &self.wake,
            )
            .map_err(|(e, fd)| (e, Some(fd)))
        })
    }

    fn add_bidi(
        &self,
        fd: OwnedFd,
        options: BidiOptions,
        handler: H,
    ) -> Result<WatchId, Rejected<H>> {
        self.register(handler, |s| {
            s.add_fd(
                fd,
                Interest::BOTH,
                true,
                [options.read_priority.0, options.write_priority.0],
                [options.read_enabled, options.write_enabled],
                options.emulation == Emulation::Allow,
                &self.backend,
                &self.wake,
            )
            .map_err(|(e, fd)| (e, Some(fd)))
        })
    }

    fn add_timer(
        &self,
        clock: Clock,
        priority: Priority,
        handler: H,
    ) -> Result<WatchId, Rejected<H>> {
        self.register(handler, |s| {
            s.add_timer(clock, priority.0).map_err(|e| (e, None))
        })
    }

    fn add_wake(&self, priority: Priority, handler: H) -> Result<(WatchId, Waker), Rejected<H>> {
        let mut handle = None;
        let id = self.register(handler, |s| {
            let (index, cell, generation) =
                s.add_wake(priority.0, &self.wake).map_err(|e| (e, None))?;
            handle = Some((cell, generation));
            Ok(index)
        })?;
        let (cell, generation) = handle.unwrap_or((u32::MAX, 0));
        Ok((id, Waker::new(self.wake.clone(), cell, generation)))
    }

    fn add_signal(
        &self,
        signal: Signal,
        priority: Priority,
        handler: H,
    ) -> Result<WatchId, Rejected<H>> {
        self.register(handler, |s| {
            s.add_signal(signal, priority.0, &self.backend)
                .map_err(|e| (e, None))
        })
    }

    fn reserve_child(&self, priority: Priority, handler: H) -> Result<WatchId, Rejected<H>> {
        self.register(handler, |s| {
            s.reserve_child(priority.0).map_err(|e| (e, None))
        })
    }

    fn watch_child(&self, id: WatchId, pid: u32) -> Result<(), UsageError> {
        self.with_live(id, |s, index| s.watch_child(index, pid, &self.backend))
    }

    fn add_child(&self, pid: u32, priority: Priority, handler: H) -> Result<WatchId, Rejected<H>> {
        self.register(handler, |s| {
            let index = s.reserve_child(priority.0).map_err(|e| (e, None))?;
            match s.watch_child(index, pid, &self.backend) {
                Ok(()) => Ok(index),
                Err(e) => {
                    s.discard(index);
                    let error = match e {
                        UsageError::AlreadyWatched => Error::ChildAlreadyWatched(pid),
                        _ => Error::NotAChild(pid),
                    };
                    Err((error, None))
                }
            }
        })
    }

    fn spawn_child(
        &self,
        mut cmd: std::process::Command,
        options: SpawnOptions,
        handler: H,
    ) -> Result<Spawned, Rejected<H>> {
        self.spawn(ChildCommand::Command(&mut cmd), options, handler)
    }

    fn spawn_exec(
        &self,
        mut exec: crate::Exec,
        options: SpawnOptions,
        handler: H,
    ) -> Result<Spawned, Rejected<H>> {
        self.spawn(ChildCommand::Exec(&mut exec), options, handler)
    }

    fn spawn_into(
        &self,
        id: WatchId,
        mut cmd: std::process::Command,
        options: SpawnOptions,
    ) -> Result<Spawned, SpawnError> {
        self.spawn_into_reservation(id, ChildCommand::Command(&mut cmd), options)
    }

    fn spawn_exec_into(
        &self,
        id: WatchId,
        mut exec: crate::Exec,
        options: SpawnOptions,
    ) -> Result<Spawned, SpawnError> {
        self.spawn_into_reservation(id, ChildCommand::Exec(&mut exec), options)
    }

    fn signal_child(&self, id: WatchId, signal: Signal) -> Result<(), SignalChildError> {
        self.locked(|s| {
            let index = s.lookup(id)?;
            s.signal_child(index, signal, &self.backend)
        })
    }

    fn signal_child_group(&self, id: WatchId, signal: Signal) -> Result<(), SignalChildError> {
        self.locked(|s| {
            let index = s.lookup(id)?;
            s.signal_child_group(index, signal, &self.backend)
        })
    }

    fn remove(&self, id: WatchId) -> Result<(), UsageError> {
        let removal = self.with_live(id, |s, index| {
            if s.spawning(index) {
                // A spawn into this reservation is under way on another thread: its child
                // would have no watcher.
                return Err(UsageError::Busy);
            }
            Ok(s.remove(index, &self.backend, &self.wake).map(|r| {
                let h = self.take_handler(r.id.index);
                (r, h)
            }))
        })?;
        self.finish_removal(removal);
        Ok(())
    }

    fn set_enabled(&self, id: WatchId, enabled: bool) -> Result<(), UsageError> {
        self.with_live(id, |s, index| {
            s.set_enabled(index, None, enabled, &self.backend, &self.wake);
            Ok(())
        })
    }

    fn set_half_enabled(&self, id: WatchId, half: Half, enabled: bool) -> Result<(), UsageError> {
        self.with_live(id, |s, index| {
            match s.kind(index) {
                Some(crate::WatchKind::Bidi) => {}
                Some(kind) => {
                    return Err(UsageError::WrongKind {
                        op: "set_half_enabled",
                        kind,
                    });
                }
                None => return Err(UsageError::Stale),
            }
            s.set_enabled(
                index,
                Some(half.index()),
                enabled,
                &self.backend,
                &self.wake,
            );
            Ok(())
        })
    }

    fn set_interest(&self, id: WatchId, interest: Interest) -> Result<(), UsageError> {
        self.with_live(id, |s, index| {
            s.set_interest(index, interest, &self.backend)
        })
    }

    fn arm_timer(
        &self,
        id: WatchId,
        deadline: Deadline,
        interval: Option<Duration>,
    ) -> Result<(), UsageError> {
        let at = |clock, loop_time: &mut Option<u64>| match (deadline, clock) {
            (Deadline::After(d), c) => Ok(self.backend.now(c).saturating_add(duration_ns(d))),
            (Deadline::AfterLoopTime(d), c) => {
                let now = *loop_time.get_or_insert_with(|| self.backend.now(c));
                Ok(now.saturating_add(duration_ns(d)))
            }
            (Deadline::At(t), Clock::Monotonic) => Ok(self.anchor.to_ns(t)),
            (Deadline::AtSystem(t), Clock::System) => Ok(system_ns(t)),
            _ => Err(UsageError::ClockMismatch),
        };
        let every = interval.map_or(0, duration_ns);
        self.locked(|s| s.arm_timer(id, at, every, &self.backend))
    }

    fn stop_timer(&self, id: WatchId) -> Result<(), UsageError> {
        self.with_live(id, |s, index| s.stop_timer(index, &self.backend))
    }

    fn waker(&self, id: WatchId) -> Result<Waker, UsageError> {
        let (cell, generation) = self.with_live(id, |s, index| s.wake_handle(index))?;
        Ok(Waker::new(self.wake.clone(), cell, generation))
    }

    fn stop(&self) {
        if self.locked(State::request_stop) {
            // Calls waiting for an events buffer, or stepped aside, end too.
            self.state.notify_all();
        }
    }

    fn now(&self) -> Instant {
        self.anchor.to_instant(self.backend.now(Clock::Monotonic))
    }

    fn system_now(&self) -> SystemTime {
        system_time(self.backend.now(Clock::System))
    }

    fn contains(&self, id: WatchId) -> bool {
        self.locked(|s| s.contains(id))
    }

    fn usage(&self) -> Usage {
        self.locked(|s| s.usage())
    }

    fn kernel_faults(&self) -> KernelFaults {
        self.locked(|s| s.faults())
    }
}

/// The run calls of loops whose handlers take no data (`Handler::Data = ()`, as
/// [`FnHandler`](crate::FnHandler)'s and most programs' do).
impl<H: Handler<Data = ()>, B: Backend, F: Flavor> EventLoop<H, B, F> {
    /// [`run_with`](Self::run_with) for handlers without data: run until at least one handler
    /// has run (or [`stop`](Self::stop) is called), blocking as needed. Returns how many
    /// handlers ran (on this thread, by this call).
    ///
    /// ```
    /// use dasynq::{Clock, Deadline, EventLoop, FnHandler, Priority, Rearm};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().watchers(4).build()?;
    /// let t = lp.add_timer(Clock::Monotonic, Priority::DEFAULT, FnHandler::new(|_, _| Rearm::Remove))?;
    /// lp.arm_timer(t, Deadline::After(std::time::Duration::from_millis(1)), None)?;
    /// assert_eq!(lp.run(), 1);
    /// assert_eq!(lp.run(), 0); // nothing registered any more: returns at once
    /// # Ok(()) }
    /// ```
    pub fn run(&self) -> usize {
        self.run_with(&mut ())
    }

    /// [`run_limit_with`](Self::run_limit_with) for handlers without data.
    pub fn run_limit(&self, limit: usize) -> usize {
        self.run_limit_with(limit, &mut ())
    }

    /// [`poll_with`](Self::poll_with) for handlers without data: run what is ready now,
    /// without blocking.
    pub fn poll(&self) -> usize {
        self.poll_with(&mut ())
    }

    /// [`poll_limit_with`](Self::poll_limit_with) for handlers without data.
    pub fn poll_limit(&self, limit: usize) -> usize {
        self.poll_limit_with(limit, &mut ())
    }

    /// [`run_timeout_with`](Self::run_timeout_with) for handlers without data.
    pub fn run_timeout(&self, timeout: Duration) -> usize {
        self.run_timeout_with(timeout, &mut ())
    }
}

impl<H: Handler, B: Backend, F: Flavor> Drop for EventLoop<H, B, F> {
    fn drop(&mut self) {
        // The loop holds pidfds by number (the kernel side of child watches): close them. The
        // rest (registered fds, the backend's own fds, handlers) drops by itself.
        let backend = &self.backend;
        self.locked(|s| s.release_children(backend));
    }
}

/// The loop's kernel object (the epoll instance), readable when the loop has work: for a
/// program that drives this loop from another event loop (tokio's `AsyncFd`, glib, calloop,
/// mio). Wait for it to be readable, then call [`poll`](EventLoop::poll) (or
/// [`poll_with`](EventLoop::poll_with)).
///
/// Taking the fd marks the loop as embedded: from then on a run call that ends with work
/// queued in user space (a `Requeue`, an emulated regular file, events left over by a
/// `poll_limit`) makes the fd readable again through the loop's wake notifier, so nothing
/// waits on the outer loop's next event. An fd watcher left ready (level-triggered, not
/// drained) keeps the fd readable for a level-triggered outer loop; an edge-triggered one
/// (mio, tokio) reports it again only on the next change, so drain what handlers are told
/// about, as with any edge-triggered loop. The loop's timers live in the same kernel object
/// (timerfds), so their expiries make it readable too.
///
/// ```
/// use dasynq::{EventLoop, FnHandler, Priority, Rearm};
/// use std::os::fd::AsFd;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let lp = EventLoop::<FnHandler>::builder().build()?;
/// let (_id, waker) = lp.add_wake(Priority::DEFAULT, FnHandler::new(|_, _| Rearm::Rearm))?;
/// let fd = lp.as_fd();
/// // rustix's `poll` stands in for the other loop's wait.
/// let mut pfd = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
/// waker.wake();
/// // What the other loop does: wait for the fd, then poll this loop.
/// assert_eq!(rustix::event::poll(&mut pfd, None)?, 1);
/// assert_eq!(lp.poll(), 1);
/// # Ok(()) }
/// ```
#[cfg(dasynq_epoll)]
impl<H: Handler, F: Flavor> std::os::fd::AsFd
    for EventLoop<H, crate::backend::Epoll<crate::kernel::LinuxEpoll>, F>
{
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.state.with(|s| s.embedded = true);
        self.backend.kernel_fd().as_fd()
    }
}

/// The loop's kernel object (the kqueue), readable when the loop has work: see the Linux
/// documentation of this impl; the same holds, with the kqueue in place of the epoll instance
/// (kqueue descriptors are pollable, and the loop's timers are kqueue filters).
#[cfg(dasynq_kqueue)]
impl<H: Handler, F: Flavor> std::os::fd::AsFd
    for EventLoop<H, crate::backend::Kqueue<crate::kernel::BsdKqueue>, F>
{
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.state.with(|s| s.embedded = true);
        self.backend.kernel_fd().as_fd()
    }
}

impl<H: Handler, B: Backend, F: Flavor> core::fmt::Debug for EventLoop<H, B, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EventLoop")
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}
