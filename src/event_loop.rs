//! The event loop: construction, the registration API ([`Control`]), and `run`/`poll`.
//!
//! `EventLoop<H, B, F>` owns three things: the state (behind the flavour's lock), the backend,
//! and one handler cell per slot. A handler cell is touched either under the state lock while
//! its watcher is not running (to store or take the handler), or, without the lock, by the one
//! thread that claimed the watcher for dispatch (marked `running` under the lock). No user code
//! runs while the state is locked.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::Deref;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::backend::{Backend, BackendEvent, ChildCommand};
use crate::child::Spawned;
use crate::control::{Control, Cx, KernelFaults, Usage};
use crate::error::{BuildError, Error, Rejected, SignalChildError, UsageError};
use crate::handler::{Event, Handler, Rearm, Removed};
use crate::id::{Priority, WatchId};
use crate::interest::{Half, Interest};
use crate::lock::{Flavor, Single, StateLock, Threaded};
use crate::options::{BidiOptions, ChildSignals, Emulation, FdOptions, SpawnOptions};
use crate::signal::{Signal, SignalSet};
use crate::state::{Capacities, Delivery, Dispatch, Removal, State};
use crate::timer::{Clock, Deadline, MonoAnchor, duration_ns, system_ns, system_time};
use crate::waker::{WakeShared, Waker};

use crate::DefaultBackend;

/// A loop that other threads may use while one thread runs it.
pub type ThreadedLoop<H, B = DefaultBackend> = EventLoop<H, B, Threaded>;

static NEXT_TAG: AtomicU32 = AtomicU32::new(1);

struct HandlerCell<H>(UnsafeCell<Option<H>>);

/// An event loop with handlers of type `H`, on backend `B`, guarded by lock flavour `F`.
///
/// Built by [`EventLoop::builder`]; every pool is allocated then, and nothing allocates
/// afterwards. All operations take `&self`. The registration and control operations are those
/// of [`Control`], reachable directly on the loop (through `Deref`) and inside handlers
/// through [`Cx`].
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
    poll_buf: F::Lock<B::Events>,
    handlers: Box<[HandlerCell<H>]>,
    backend: B,
    wake: Arc<WakeShared>,
    anchor: MonoAnchor,
    tag: u32,
}

// SAFETY: the threaded flavour guards the state and the events buffer with mutexes, and every
// handler cell is accessed by one thread at a time (the holder of the state lock while the
// watcher is idle, or the thread that claimed it for dispatch); handlers move between threads,
// hence `H: Send`.
unsafe impl<H: Handler + Send, B: Backend> Sync for EventLoop<H, B, Threaded> {}

/// Ties a builder to its loop's type parameters without owning any of them.
type Marker<H, B, F> = fn() -> (H, B, F);

/// Builds an [`EventLoop`] with fixed capacities.
#[derive(Debug)]
pub struct Builder<H, B, F> {
    use_pidfd: bool,
    watchers: usize,
    timers: Option<usize>,
    wakers: Option<usize>,
    events: usize,
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

const MAX_WATCHERS: usize = 1 << 24;
const MAX_EVENTS: usize = 1 << 16;

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
    /// Kernel events fetched per wait (default 256, at most 65536).
    pub fn events(mut self, n: usize) -> Self {
        self.events = n;
        self
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
        Ok(())
    }

    /// Build on the given backend (a [`Sim`](crate::sim::Sim) or an
    /// [`Epoll`](crate::backend::Epoll) over a chosen kernel).
    pub fn build_with(self, backend: B) -> Result<EventLoop<H, B, F>, BuildError> {
        self.check()?;
        let oom = |what| BuildError::OutOfMemory { what };
        let tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
        let (timers, wakers) = (self.timers_or_default(), self.wakers_or_default());
        let caps = Capacities {
            use_pidfd: self.use_pidfd,
            watchers: self.watchers,
            timers,
            wakers,
        };
        let state = State::new(&caps, F::ONESHOT, F::THREADED, tag).ok_or(oom("watchers"))?;
        let events = backend
            .new_events(self.events)
            .map_err(|e| BuildError::Kernel {
                call: e.call,
                errno: e.errno,
            })?;
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
            poll_buf: F::Lock::new(events),
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
            watchers: 1024,
            timers: None,
            wakers: None,
            events: 256,
            _p: PhantomData,
        }
    }

    /// The backend (for example a [`Sim`](crate::sim::Sim) handle, to drive the simulation).
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

    /// Run until at least one handler has run (or [`stop`](Control::stop) is called), blocking
    /// as needed. Returns how many handlers ran.
    pub fn run(&self) -> usize {
        self.run_inner(usize::MAX, Mode::Block)
    }

    /// Like [`run`](Self::run), but run at most `limit` handlers. Events beyond the limit stay
    /// queued for the next call. `run_limit(0)` returns 0 at once and changes nothing.
    pub fn run_limit(&self, limit: usize) -> usize {
        self.run_inner(limit, Mode::Block)
    }

    /// Run the handlers of whatever is ready now, without blocking. Returns how many ran.
    pub fn poll(&self) -> usize {
        self.run_inner(usize::MAX, Mode::Poll)
    }

    /// Like [`poll`](Self::poll), with at most `limit` handlers.
    pub fn poll_limit(&self, limit: usize) -> usize {
        self.run_inner(limit, Mode::Poll)
    }

    /// Like [`run`](Self::run), but give up after `timeout`; returns 0 if nothing ran in time.
    /// On the `Sim` backend the timeout passes in virtual time.
    pub fn run_timeout(&self, timeout: Duration) -> usize {
        let end = self
            .backend
            .now(Clock::Monotonic)
            .saturating_add(duration_ns(timeout));
        self.run_inner(usize::MAX, Mode::Until(end))
    }

    fn run_inner(&self, limit: usize, mode: Mode) -> usize {
        if limit == 0 {
            return 0;
        }
        let mut ran = 0;
        loop {
            let timeout = self.state.with(|s| {
                if s.stop {
                    s.stop = false;
                    return None;
                }
                s.merge_deferred();
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
                s.waiting = t != Some(Duration::ZERO);
                Some(t)
            });
            let Some(timeout) = timeout else { return ran };
            let failed = self.poll_buf.with(|buf| {
                let r = self.backend.wait(buf, timeout);
                self.state.with(|s| {
                    s.waiting = false;
                    let failed = r.is_err();
                    if let Err(e) = r {
                        // Nothing came from the kernel; what lives in user space (wakes, timer
                        // counts, fallback children) is still taken in, so that a wake made
                        // before this call coalesces with an event queued before it.
                        s.fault(e);
                    }
                    let mut fired = [false; 2];
                    let mut woke = false;
                    let mut signals = false;
                    // (A failed wait leaves the buffer empty.)
                    self.backend.for_each_event(buf, |ev| match ev {
                        BackendEvent::Fd { token, ready } => {
                            s.on_fd_event(token, ready, &self.backend, &self.wake)
                        }
                        BackendEvent::Clock(c) => fired[c.index()] = true,
                        BackendEvent::Wake => woke = true,
                        BackendEvent::SignalsPending => signals = true,
                        BackendEvent::Garbled => s.fault(crate::backend::KernelError {
                            call: "wait (an event that names nothing registered)",
                            errno: crate::error::Errno::INVAL,
                        }),
                    });
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
                })
            });
            let (n, stopped) = self.run_batch(limit - ran);
            ran += n;
            let expired = match mode {
                Mode::Until(end) => self.backend.now(Clock::Monotonic) >= end,
                _ => false,
            };
            if stopped || ran > 0 || mode == Mode::Poll || failed || expired || ran >= limit {
                return ran;
            }
        }
    }

    /// Run up to `limit` handlers of the events queued now. Returns how many ran and whether a
    /// stop request ended the batch.
    fn run_batch(&self, limit: usize) -> (usize, bool) {
        self.state.with(|s| s.batch_depth += 1);
        let mut guard = BatchGuard {
            lp: self,
            dispatch: None,
        };
        let mut ran = 0;
        let mut stopped = false;
        let mut finished: Option<(Dispatch, Rearm)> = None;
        loop {
            // One lock section applies the last handler's answer and claims the next event,
            // except after a removal: `on_removed` runs before anything else is claimed.
            let (removal, next) = self.state.with(|s| {
                let removal = finished.take().and_then(|(d, rearm)| {
                    s.finish_dispatch(&d, rearm, &self.backend, &self.wake)
                        .map(|r| {
                            let h = self.take_handler(r.id.index);
                            (r, h)
                        })
                });
                if removal.is_some() || ran >= limit {
                    return (removal, Ok(None));
                }
                if s.stop {
                    s.stop = false;
                    return (removal, Err(()));
                }
                (removal, Ok(s.next_dispatch()))
            });
            let had_removal = removal.is_some();
            self.finish_removal(removal);
            let d = match next {
                Err(()) => {
                    stopped = true;
                    break;
                }
                Ok(Some(d)) => d,
                Ok(None) if had_removal && ran < limit => continue,
                Ok(None) => break,
            };
            guard.dispatch = Some(d);
            let rearm = self.call_handler(&d);
            guard.dispatch = None;
            ran += 1;
            finished = Some((d, rearm));
        }
        drop(guard);
        (ran, stopped)
    }

    fn call_handler(&self, d: &Dispatch) -> Rearm {
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
                // SAFETY: `fd` was read from the `OwnedFd` the watcher's slot holds (an fd
                // watch always has one, so it is an open fd, never -1), and the slot cannot be
                // freed (closing the fd) while the watcher is running; the borrow ends with
                // this call.
                let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                let ev = match half {
                    None => Event::Fd { fd, ready },
                    Some(0) => Event::Read { fd, ready },
                    Some(_) => Event::Write { fd, ready },
                };
                handler.on_event(&cx, ev)
            }
            Delivery::Timer(expirations) => handler.on_event(&cx, Event::Timer { expirations }),
            Delivery::Wake => handler.on_event(&cx, Event::Wake),
            Delivery::Signal(info) => handler.on_event(&cx, Event::Signal(info)),
            Delivery::Child { pid, status } => handler.on_event(&cx, Event::Child { pid, status }),
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
        let reset = match options.signals {
            ChildSignals::Reset => Some(watched),
            ChildSignals::Inherit => None,
        };
        // Spawned unlocked (fork and exec take a while); nothing reaps the child before it is
        // watched: the loop reaps only watched children.
        let spawned = match self.backend.spawn(cmd, reset) {
            Ok(p) => p,
            Err(e) => {
                let handler = self.state.with(|s| {
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
        self.state.with(|s| {
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

    /// Run a registration under the lock and store the handler if it succeeded; a failure
    /// hands the handler back without dropping it under the lock.
    fn register(
        &self,
        handler: H,
        f: impl FnOnce(&mut State) -> Result<u32, (Error, Option<OwnedFd>)>,
    ) -> Result<WatchId, Rejected<H>> {
        self.state.with(move |s| match f(s) {
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
        self.state.with(|s| {
            let index = s.lookup(id)?;
            f(s, index)
        })
    }
}

/// Completes an interrupted dispatch if a handler panics: the watcher ends up disabled (not
/// stuck as running), and the batch depth is restored, so the loop stays usable.
struct BatchGuard<'a, H: Handler, B: Backend, F: Flavor> {
    lp: &'a EventLoop<H, B, F>,
    dispatch: Option<Dispatch>,
}

impl<H: Handler, B: Backend, F: Flavor> Drop for BatchGuard<'_, H, B, F> {
    fn drop(&mut self) {
        let lp = self.lp;
        let d = self.dispatch.take();
        let removal = lp.state.with(|s| {
            s.batch_depth = s.batch_depth.saturating_sub(1);
            let d = d?;
            s.finish_dispatch(&d, Rearm::Disarm, &lp.backend, &lp.wake)
                .map(|r| {
                    let h = lp.take_handler(r.id.index);
                    (r, h)
                })
        });
        // A removal requested during the panicking handler: drop it without calling into
        // user code again while unwinding.
        drop(removal);
    }
}

impl<H: Handler, B: Backend, F: Flavor> Control<H> for EventLoop<H, B, F> {
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

    fn signal_child(&self, id: WatchId, signal: Signal) -> Result<(), SignalChildError> {
        self.state.with(|s| {
            let index = s.lookup(id)?;
            s.signal_child(index, signal, &self.backend)
        })
    }

    fn remove(&self, id: WatchId) -> Result<(), UsageError> {
        let removal = self.with_live(id, |s, index| {
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
        self.with_live(id, |s, index| {
            let clock = s.timer_clock(index, "arm_timer")?;
            let at = match (deadline, clock) {
                (Deadline::After(d), c) => self.backend.now(c).saturating_add(duration_ns(d)),
                (Deadline::At(t), Clock::Monotonic) => self.anchor.to_ns(t),
                (Deadline::AtSystem(t), Clock::System) => system_ns(t),
                _ => return Err(UsageError::ClockMismatch),
            };
            let every = interval.map_or(0, duration_ns);
            s.arm_timer(index, at, every, &self.backend)
        })
    }

    fn stop_timer(&self, id: WatchId) -> Result<(), UsageError> {
        self.with_live(id, |s, index| s.stop_timer(index, &self.backend))
    }

    fn waker(&self, id: WatchId) -> Result<Waker, UsageError> {
        let (cell, generation) = self.with_live(id, |s, index| s.wake_handle(index))?;
        Ok(Waker::new(self.wake.clone(), cell, generation))
    }

    fn stop(&self) {
        self.state.with(|s| {
            s.stop = true;
            if s.waiting {
                self.wake.notify();
            }
        });
    }

    fn now(&self) -> Instant {
        self.anchor.to_instant(self.backend.now(Clock::Monotonic))
    }

    fn system_now(&self) -> SystemTime {
        system_time(self.backend.now(Clock::System))
    }

    fn contains(&self, id: WatchId) -> bool {
        self.state.with(|s| s.contains(id))
    }

    fn usage(&self) -> Usage {
        self.state.with(|s| s.usage())
    }

    fn kernel_faults(&self) -> KernelFaults {
        self.state.with(|s| s.faults())
    }
}

impl<H: Handler, B: Backend, F: Flavor> Drop for EventLoop<H, B, F> {
    fn drop(&mut self) {
        // The loop holds pidfds by number (the kernel side of child watches): close them. The
        // rest (registered fds, the backend's own fds, handlers) drops by itself.
        let backend = &self.backend;
        self.state.with(|s| s.release_children(backend));
    }
}

impl<H: Handler + 'static, B: Backend, F: Flavor> Deref for EventLoop<H, B, F> {
    type Target = dyn Control<H>;
    fn deref(&self) -> &Self::Target {
        self
    }
}

impl<H: Handler, B: Backend, F: Flavor> core::fmt::Debug for EventLoop<H, B, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EventLoop")
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}
