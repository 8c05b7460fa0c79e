//! The handler model: one handler type per loop, what it is told ([`Event`]) and what it answers
//! ([`Rearm`]).
//!
//! A loop is generic over one handler type `H`, usually an enum of the program's watchers. The
//! loop owns every registered handler until it is removed; `on_removed` then hands it back by
//! value, exactly once. Boxed closures work through [`FnHandler`] and [`SendFnHandler`] for
//! programs that accept one allocation per registration.

use std::os::fd::{BorrowedFd, OwnedFd};

use crate::child::ChildStatus;
use crate::control::Cx;
use crate::id::WatchId;
use crate::interest::Readiness;
use crate::signal::SigInfo;
use crate::view::{FdView, View};

/// What a handler wants done with its watcher after it returns.
///
/// A watcher is disabled while its event is queued and while its handler runs, so the code says
/// what happens next. Whatever the code, a handler that removed itself (`cx.remove(cx.id())`)
/// stays removed and `on_removed` runs exactly once.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum Rearm {
    /// Enable the watcher again.
    Rearm,
    /// Leave the watcher disabled, even if the handler enabled it meanwhile.
    Disarm,
    /// Keep whatever state the handler set: disabled, unless it called `enable` on itself.
    Noop,
    /// Remove the watcher, then call `on_removed`. For one half of a bidirectional watcher,
    /// remove that half only; the watcher is removed when both halves are.
    Remove,
    /// Call the handler again after the other events already pending at its priority, with the
    /// same event (a timer reports the expirations counted since this call, usually 0). The
    /// watcher stays disabled meanwhile.
    Requeue,
}

/// What happened to a watcher.
///
/// Fd events carry the fd, borrowed for the duration of the call: the loop owns every
/// registered fd (see [`Control::add_fd`](crate::Control::add_fd)), so it cannot be closed
/// while the watcher exists.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// An fd watcher's fd is ready. `ready` holds the asked-for directions that are ready plus
    /// any error or hang-up condition.
    Fd {
        /// The watched fd.
        fd: BorrowedFd<'a>,
        /// What is ready.
        ready: Readiness,
    },
    /// The read half of a bidirectional watcher is ready (readable, end-of-file, read-side
    /// shutdown, hang-up or error; never writable).
    Read {
        /// The watched fd.
        fd: BorrowedFd<'a>,
        /// What is ready.
        ready: Readiness,
    },
    /// The write half of a bidirectional watcher is ready (writable, hang-up or error; never
    /// readable).
    Write {
        /// The watched fd.
        fd: BorrowedFd<'a>,
        /// What is ready.
        ready: Readiness,
    },
    /// A timer expired. `expirations` counts the expirations since the last report: 1
    /// normally, more after an overrun or while the timer was disabled, 0 on a requeued call.
    Timer {
        /// Expirations since the last report.
        expirations: u64,
    },
    /// A [`Waker`](crate::Waker) for this watcher was used since the last call. Several wakes
    /// before the handler runs coalesce into one call.
    Wake,
    /// One delivered instance of the watched signal, with its own data. Real-time instances
    /// each get a call, in order; instances of a standard signal that arrive while one is
    /// pending coalesce into one (POSIX).
    Signal(SigInfo),
    /// The watched child process ended (and was reaped). The watcher is now idle: it can watch
    /// another child ([`Control::watch_child`](crate::Control::watch_child)) unless the handler
    /// removes it.
    Child {
        /// The child's pid.
        pid: u32,
        /// How it ended.
        status: ChildStatus,
    },
}

impl<'a> Event<'a> {
    /// The fd of an fd event ([`Fd`](Event::Fd), [`Read`](Event::Read),
    /// [`Write`](Event::Write)), borrowed for the handler call.
    pub fn fd(&self) -> Option<BorrowedFd<'a>> {
        match self {
            Event::Fd { fd, .. } | Event::Read { fd, .. } | Event::Write { fd, .. } => Some(*fd),
            _ => None,
        }
    }

    /// The readiness of an fd event.
    pub fn ready(&self) -> Option<Readiness> {
        match self {
            Event::Fd { ready, .. } | Event::Read { ready, .. } | Event::Write { ready, .. } => {
                Some(*ready)
            }
            _ => None,
        }
    }

    /// The fd of an fd event as the std type it was registered as, for this handler call:
    /// `ev.view::<TcpListener>()?.accept()`, `ev.view::<TcpStream>()?.read(..)`. `None` for
    /// events without an fd. See [`View`].
    ///
    /// ```
    /// use dasynq::{Cx, Event, Handler, Rearm};
    /// use std::io::{ErrorKind, Read, Write};
    /// use std::net::TcpStream;
    ///
    /// struct Echo;
    /// impl Handler for Echo {
    ///     type Data = ();
    ///     fn on_event(&mut self, _: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
    ///         let Some(mut s) = ev.view::<TcpStream>() else { return Rearm::Remove };
    ///         let mut buf = [0; 4096];
    ///         match s.read(&mut buf) {
    ///             Ok(0) => Rearm::Remove,
    ///             Ok(n) => match s.write_all(&buf[..n]) {
    ///                 Ok(()) => Rearm::Rearm,
    ///                 Err(_) => Rearm::Remove,
    ///             },
    ///             Err(e) if e.kind() == ErrorKind::WouldBlock => Rearm::Rearm,
    ///             Err(_) => Rearm::Remove,
    ///         }
    ///     }
    /// }
    /// ```
    pub fn view<T: FdView>(&self) -> Option<View<'a, T>> {
        self.fd().map(View::new)
    }
}

/// What a handler gets back when its watcher is removed.
#[derive(Debug)]
pub struct Removed {
    pub(crate) id: WatchId,
    pub(crate) fd: Option<OwnedFd>,
}

impl Removed {
    /// The id of the removed registration (already stale).
    pub fn id(&self) -> WatchId {
        self.id
    }

    /// The fd of an fd watcher, handed back open. The kernel registration is gone; dropping it
    /// closes the fd, keeping it lets the program reuse the fd (for example register it again).
    pub fn into_fd(self) -> Option<OwnedFd> {
        self.fd
    }
}

/// The code that runs when a watcher's event is dispatched.
///
/// One handler type per loop keeps storage fixed-size and dispatch static; a program typically
/// declares an enum of its watchers:
///
/// ```
/// use dasynq::{Cx, Event, Handler, Rearm};
///
/// enum Watch { Tick(u64), Shutdown }
///
/// impl Handler for Watch {
///     type Data = ();
///     fn on_event(&mut self, cx: &Cx<'_, Self>, _: &mut (), event: Event<'_>) -> Rearm {
///         match (self, event) {
///             (Watch::Tick(n), Event::Timer { expirations }) => { *n += expirations; Rearm::Rearm }
///             (Watch::Shutdown, Event::Wake) => { cx.stop(); Rearm::Remove }
///             _ => Rearm::Rearm,
///         }
///     }
/// }
/// ```
///
/// # Watchers that need each other's ids
///
/// A handler is built before its watcher's id exists, and a registered handler cannot be
/// reached from outside, so two watchers that name each other (a connection and its idle
/// timer) are linked in the first call of the one registered first: the connection's
/// handler, which knows its own id ([`Cx::id`]), registers the timer with that id and keeps
/// the timer's id (the echo example registers a connection for `WRITE` first, so that call
/// comes at once, then switches it to `READ`). Ids made once at startup (a listener and its
/// back-off timer) can live in [`Data`](Handler::Data) instead, in each runner's copy.
pub trait Handler: Sized {
    /// The program's state that handlers share, lent to each call as `&mut Self::Data` by
    /// the run call dispatching it ([`EventLoop::run_with`](crate::EventLoop::run_with) and
    /// the other `_with` calls); `()` for handlers that need none (then plain
    /// [`run`](crate::EventLoop::run) works).
    ///
    /// It is a mutable borrow for the length of one handler call, never shared: a
    /// single-threaded loop lends the one value its run call was given; on a
    /// [`ThreadedLoop`](crate::ThreadedLoop) run by several threads, each run call lends its
    /// own (per-thread state, or a `&Shared` whose parts are atomics or mutexes).
    /// `on_removed` gets no data: it can run from `remove` outside any run call.
    type Data;

    /// Handle one event. The watcher is disabled while this runs; the return value says what
    /// happens next. `cx` can register, remove (this watcher included), enable, disable and
    /// arm watchers, and stop the loop; `data` is the program state the run call lent.
    fn on_event(&mut self, cx: &Cx<'_, Self>, data: &mut Self::Data, event: Event<'_>) -> Rearm;

    /// Called exactly once when the registration ends (by [`Rearm::Remove`] or
    /// [`Control::remove`](crate::Control::remove)), with the handler by value and, for fd
    /// watchers, the fd. The default drops both, closing the fd. Dropping the loop drops
    /// the remaining handlers and fds without calling this.
    fn on_removed(self, cx: &Cx<'_, Self>, removed: Removed) {
        let _ = (cx, removed);
    }
}

type DynFn = dyn FnMut(&Cx<'_, FnHandler>, Event<'_>) -> Rearm;
type DynSendFn = dyn FnMut(&Cx<'_, SendFnHandler>, Event<'_>) -> Rearm + Send;

/// A boxed closure as a handler, for single-threaded loops.
///
/// Registration allocates the box (before the call, in the program), nothing else does.
///
/// ```
/// use dasynq::{EventLoop, FnHandler, Rearm, Clock, Priority, Deadline};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let lp = EventLoop::<FnHandler>::builder().build()?;
/// let t = lp.add_timer(Clock::Monotonic, Priority::DEFAULT, FnHandler::new(|cx, _ev| {
///     cx.stop();
///     Rearm::Remove
/// }))?;
/// lp.arm_timer(t, Deadline::After(std::time::Duration::from_millis(1)), None)?;
/// lp.run();
/// # Ok(()) }
/// ```
pub struct FnHandler(Box<DynFn>);

impl FnHandler {
    /// Box a closure.
    pub fn new(f: impl FnMut(&Cx<'_, FnHandler>, Event<'_>) -> Rearm + 'static) -> Self {
        FnHandler(Box::new(f))
    }
}

impl Handler for FnHandler {
    type Data = ();
    fn on_event(&mut self, cx: &Cx<'_, Self>, _: &mut (), event: Event<'_>) -> Rearm {
        (self.0)(cx, event)
    }
}

/// A boxed `Send` closure as a handler, for threaded loops (or any loop).
pub struct SendFnHandler(Box<DynSendFn>);

impl SendFnHandler {
    /// Box a closure.
    pub fn new(f: impl FnMut(&Cx<'_, SendFnHandler>, Event<'_>) -> Rearm + Send + 'static) -> Self {
        SendFnHandler(Box::new(f))
    }
}

impl Handler for SendFnHandler {
    type Data = ();
    fn on_event(&mut self, cx: &Cx<'_, Self>, _: &mut (), event: Event<'_>) -> Rearm {
        (self.0)(cx, event)
    }
}
