//! Errors: the few ways registration and construction can fail, and the caller mistakes that
//! the infallible operations report.
//!
//! Registration fails only for a full pool, a kernel refusal or an invalid argument, and a
//! failed registration hands the handler and fd back ([`Rejected`]) so nothing is lost.
//! Enabling, disabling, arming, stopping and removing cannot fail; they only report
//! [`UsageError`] for an id that names no live watcher of the right kind.
//!
//! Every [`Errno`] constant is the `libc` value for the target being compiled: a number
//! typed by hand once made `EAGAIN` read as `EDEADLK` on every BSD.

use core::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::signal::Signal;

/// An OS error number as returned by a (real or simulated) kernel call.
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// Operation not permitted; epoll's answer for files that cannot be polled.
    pub const PERM: Errno = Errno(libc::EPERM);
    /// No such file or directory; epoll's answer for an fd not registered.
    pub const NOENT: Errno = Errno(libc::ENOENT);
    /// No such process.
    pub const SRCH: Errno = Errno(libc::ESRCH);
    /// Interrupted system call.
    pub const INTR: Errno = Errno(libc::EINTR);
    /// I/O error.
    pub const IO: Errno = Errno(libc::EIO);
    /// Bad file descriptor.
    pub const BADF: Errno = Errno(libc::EBADF);
    /// No child processes.
    pub const CHILD: Errno = Errno(libc::ECHILD);
    /// Resource temporarily unavailable (also "would block").
    pub const AGAIN: Errno = Errno(libc::EAGAIN);
    /// Out of memory.
    pub const NOMEM: Errno = Errno(libc::ENOMEM);
    /// File exists; epoll's answer for an fd registered twice.
    pub const EXIST: Errno = Errno(libc::EEXIST);
    /// Invalid argument.
    pub const INVAL: Errno = Errno(libc::EINVAL);
    /// Too many open files in the system.
    pub const NFILE: Errno = Errno(libc::ENFILE);
    /// Too many open files in the process.
    pub const MFILE: Errno = Errno(libc::EMFILE);
    /// No space left (epoll: the per-user watch limit).
    pub const NOSPC: Errno = Errno(libc::ENOSPC);
    /// Broken pipe: a write with no reader left.
    pub const PIPE: Errno = Errno(libc::EPIPE);
    /// Connection reset by peer.
    pub const CONNRESET: Errno = Errno(libc::ECONNRESET);
    /// Function not implemented (a system call this kernel lacks).
    pub const NOSYS: Errno = Errno(libc::ENOSYS);
    /// Operation not supported.
    pub const NOTSUP: Errno = Errno(libc::ENOTSUP);

    /// The raw number.
    pub fn raw(self) -> i32 {
        self.0
    }

    #[cfg_attr(not(any(dasynq_epoll, test, feature = "sim")), allow(dead_code))]
    pub(crate) fn from_rustix(e: rustix::io::Errno) -> Errno {
        Errno(e.raw_os_error())
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Errno({}: {})",
            self.0,
            std::io::Error::from_raw_os_error(self.0)
        )
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&std::io::Error::from_raw_os_error(self.0), f)
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for std::io::Error {
    /// The same OS error number as an `io::Error` (so `?` works in functions returning
    /// `io::Result`).
    fn from(e: Errno) -> Self {
        std::io::Error::from_raw_os_error(e.0)
    }
}

impl TryFrom<std::io::Error> for Errno {
    type Error = std::io::Error;
    /// The OS error number of an `io::Error`; the error itself back if it has none (one made
    /// by user code, not the OS).
    fn try_from(e: std::io::Error) -> Result<Self, std::io::Error> {
        match e.raw_os_error() {
            Some(n) => Ok(Errno(n)),
            None => Err(e),
        }
    }
}

/// A pool whose capacity was fixed when the loop was built.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum Pool {
    /// Watcher slots (every kind of watcher takes one).
    Watchers,
    /// Timer slots (each timer watcher also takes one of these).
    Timers,
    /// Wake slots (each wake watcher also takes one of these).
    Wakers,
}

impl Pool {
    fn builder_method(self) -> &'static str {
        match self {
            Pool::Watchers => "watchers",
            Pool::Timers => "timers",
            Pool::Wakers => "wakers",
        }
    }

    /// What one slot of the pool holds, for messages.
    fn slot(self) -> &'static str {
        match self {
            Pool::Watchers => "watcher",
            Pool::Timers => "timer",
            Pool::Wakers => "wake",
        }
    }
}

/// Why a registration failed.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Error {
    /// Every slot of the pool is in use.
    Capacity(Pool),
    /// The kernel refused the registration.
    Kernel {
        /// The kernel call that failed.
        call: &'static str,
        /// What it answered.
        errno: Errno,
    },
    /// The fd cannot be polled for readiness (a regular file or directory) and the
    /// registration asked for no emulation.
    NotPollable,
    /// The fd is already registered with this loop's kernel object (possible only through a
    /// duplicated `OwnedFd`, which safe code cannot make).
    AlreadyRegistered,
    /// An argument was out of its documented range.
    InvalidArgument(&'static str),
    /// The signal is not blocked in the registering thread, so the kernel could run its
    /// default action instead of queueing it for the loop.
    SignalNotBlocked(Signal),
    /// On the `Sim` backend (`dasynq::sim::Sim`): the signal is not blocked in the simulated
    /// process (the simulation keeps its own mask; `dasynq::block_signals` does not change it).
    SimSignalNotBlocked(Signal),
    /// Another watcher of this loop already watches the signal.
    SignalAlreadyWatched(Signal),
    /// The pid is not an unreaped child of this process.
    NotAChild(u32),
    /// Another watcher of this loop already watches the child.
    ChildAlreadyWatched(u32),
    /// The process could not be started (`fork`/`exec` failed: missing program, no
    /// permission, resource limits...).
    Spawn {
        /// What the OS answered.
        errno: Errno,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Capacity(pool) => write!(
                f,
                "every {} slot is in use; remove a watcher first or build the loop with a larger \
                 `.{}(n)` capacity",
                pool.slot(),
                pool.builder_method()
            ),
            Error::Kernel { call, errno } => write!(
                f,
                "the kernel refused the registration: {call} failed with {errno}; check the fd \
                 and the process's resource limits"
            ),
            Error::NotPollable => f.write_str(
                "the fd does not support readiness polling (a regular file or directory); \
                 register it with emulation allowed to treat it as always ready",
            ),
            Error::AlreadyRegistered => f.write_str(
                "the fd is already registered with this loop; remove the existing watcher \
                 first",
            ),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::SignalNotBlocked(sig) => write!(
                f,
                "{sig} is not blocked in this thread; block every watched signal in all threads \
                 (dasynq::block_signals in main, before starting threads)"
            ),
            Error::SimSignalNotBlocked(sig) => write!(
                f,
                "{sig} is not blocked in the simulated process; block it there with \
                 `sim.block_signal` before registering (the simulation keeps its own mask)"
            ),
            Error::SignalAlreadyWatched(sig) => write!(
                f,
                "{sig} is already watched by this loop; one watcher per signal (dispatch from \
                 its handler)"
            ),
            Error::NotAChild(pid) => write!(
                f,
                "pid {pid} is not an unreaped child of this process; watch only children this \
                 process started and has not waited for"
            ),
            Error::ChildAlreadyWatched(pid) => write!(
                f,
                "child {pid} is already watched by another watcher of this loop; use that \
                 watcher, or remove it first"
            ),
            Error::Spawn { errno } => write!(
                f,
                "could not start the process: {errno}; check the program's path and \
                 permissions and the process's resource limits"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// A failed registration: the error, plus the handler and fd given back untouched.
///
/// It is a `std::error::Error`, so `?` passes it on as it is (into `Box<dyn Error>`, and into
/// `Box<dyn Error + Send + Sync>` or `anyhow::Error` when the handler type is `Send`, as every
/// handler of a [`ThreadedLoop`](crate::ThreadedLoop) is), and the handler can still be had
/// back by downcasting. [`Error::from`] (or `?` in a function returning `dasynq::Error`)
/// drops the handler and fd and keeps the reason, which is `Send + Sync + 'static` whatever
/// the handler; so does `?` into `std::io::Error`.
///
/// ```
/// use dasynq::{Error, EventLoop, FdOptions, FnHandler, Interest, Pool, Rearm, WatchId};
/// use std::os::fd::OwnedFd;
/// use std::os::unix::net::UnixStream;
///
/// // `FnHandler` is not `Send`: `?` into `dasynq::Error` keeps the reason.
/// fn register(lp: &EventLoop<FnHandler>, fd: OwnedFd) -> Result<WatchId, Error> {
///     Ok(lp.add_fd(fd, Interest::READ, FdOptions::new(), FnHandler::new(|_, _| Rearm::Rearm))?)
/// }
/// # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let lp = EventLoop::<FnHandler>::builder().watchers(1).build()?;
/// let (a, b) = UnixStream::pair()?;
/// register(&lp, a.into())?;
/// assert_eq!(register(&lp, b.into()), Err(Error::Capacity(Pool::Watchers)));
///
/// // A handler that is `Send` (as every handler of a threaded loop is): `?` passes the
/// // `Rejected` itself on, handler and all.
/// let tlp = dasynq::ThreadedLoop::<dasynq::SendFnHandler>::builder().watchers(1).build()?;
/// let (c, d) = UnixStream::pair()?;
/// let h = || dasynq::SendFnHandler::new(|_, _| Rearm::Rearm);
/// tlp.add_fd(c.into(), Interest::READ, FdOptions::new(), h())?;
/// let e: Box<dyn std::error::Error + Send + Sync> =
///     tlp.add_fd(d.into(), Interest::READ, FdOptions::new(), h()).unwrap_err().into();
/// let back = e.downcast::<dasynq::Rejected<dasynq::SendFnHandler>>().unwrap();
/// assert!(back.fd().is_some());
/// # Ok(()) }
/// ```
pub struct Rejected<H> {
    error: Error,
    handler: H,
    fd: Option<OwnedFd>,
}

// SAFETY: a shared `&Rejected<H>` reaches only `error` (`Copy` data) and `fd` (an `OwnedFd`,
// which is `Sync`); the handler is reachable only by value (`into_handler`, `into_parts`) or
// through `&mut` (`handler_mut`), both of which need exclusive access, so sharing a
// `Rejected` between threads never shares the handler (the same argument as std's
// `Exclusive`). `Send` stays automatic: it needs `H: Send`.
unsafe impl<H> Sync for Rejected<H> {}

impl<H> Rejected<H> {
    pub(crate) fn new(error: Error, handler: H, fd: Option<OwnedFd>) -> Self {
        Rejected { error, handler, fd }
    }

    /// Why the registration failed.
    pub fn error(&self) -> Error {
        self.error
    }

    /// The fd passed to the `add_*` call, if any, still open.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|fd| fd.as_fd())
    }

    /// The handler passed to the `add_*` call, to change before retrying.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// The handler passed to the `add_*` call (the fd, if any, is closed).
    pub fn into_handler(self) -> H {
        self.handler
    }

    /// The fd passed to the `add_*` call, if any, still open (the handler is dropped).
    pub fn into_fd(self) -> Option<OwnedFd> {
        self.fd
    }

    /// Everything back: the reason, the handler and the fd.
    pub fn into_parts(self) -> (Error, H, Option<OwnedFd>) {
        (self.error, self.handler, self.fd)
    }
}

impl<H> fmt::Debug for Rejected<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejected")
            .field("error", &self.error)
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

impl<H> fmt::Display for Rejected<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<H> std::error::Error for Rejected<H> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<H> From<Rejected<H>> for Error {
    /// The reason; the handler and fd are dropped (the fd closed).
    fn from(r: Rejected<H>) -> Error {
        r.error
    }
}

impl<H> From<Rejected<H>> for std::io::Error {
    /// The reason as an `io::Error` (see [`From<Error> for io::Error`](Error)); the handler
    /// and fd are dropped.
    fn from(r: Rejected<H>) -> std::io::Error {
        r.error.into()
    }
}

impl From<Error> for std::io::Error {
    /// A kernel refusal or failed spawn keeps its OS error number; the other reasons become
    /// an `io::Error` of the closest kind with this error inside.
    fn from(e: Error) -> std::io::Error {
        use std::io::ErrorKind;
        let kind = match e {
            Error::Kernel { errno, .. } | Error::Spawn { errno } => {
                return std::io::Error::from_raw_os_error(errno.0);
            }
            Error::Capacity(_) => ErrorKind::OutOfMemory,
            Error::NotAChild(_) => ErrorKind::NotFound,
            Error::NotPollable => ErrorKind::Unsupported,
            Error::AlreadyRegistered
            | Error::SignalAlreadyWatched(_)
            | Error::ChildAlreadyWatched(_) => ErrorKind::AlreadyExists,
            Error::InvalidArgument(_)
            | Error::SignalNotBlocked(_)
            | Error::SimSignalNotBlocked(_) => ErrorKind::InvalidInput,
        };
        std::io::Error::new(kind, e)
    }
}

static_assertions::assert_impl_all!(Error: Send, Sync, std::error::Error);
static_assertions::assert_impl_all!(Rejected<crate::FnHandler>: Sync, std::error::Error);
static_assertions::assert_impl_all!(Rejected<crate::SendFnHandler>: Send, Sync, std::error::Error);

/// The kind of a watcher, as named in [`UsageError::WrongKind`].
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum WatchKind {
    /// An fd watcher (`add_fd`).
    Fd,
    /// A bidirectional fd watcher (`add_bidi`).
    Bidi,
    /// A timer (`add_timer`).
    Timer,
    /// A wake watcher (`add_wake`).
    Wake,
    /// A signal watcher (`add_signal`).
    Signal,
    /// A child watcher (`reserve_child`, `add_child`, `spawn_child`).
    Child,
}

impl WatchKind {
    /// "an fd watcher", "a timer"...: for messages.
    fn with_article(self) -> &'static str {
        match self {
            WatchKind::Fd => "an fd watcher",
            WatchKind::Bidi => "a bidirectional fd watcher",
            WatchKind::Timer => "a timer",
            WatchKind::Wake => "a wake watcher",
            WatchKind::Signal => "a signal watcher",
            WatchKind::Child => "a child watcher",
        }
    }
}

/// A caller mistake reported by an operation that otherwise cannot fail. The operation did
/// nothing.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum UsageError {
    /// The id names no live watcher of this loop: it was removed, or it came from another loop.
    Stale,
    /// The operation does not apply to this kind of watcher.
    WrongKind {
        /// The operation.
        op: &'static str,
        /// The watcher's kind.
        kind: WatchKind,
    },
    /// An absolute deadline on the other clock than the timer's.
    ClockMismatch,
    /// An argument was out of its documented range.
    InvalidArgument(&'static str),
    /// The child watcher is already watching a child (or has an exit not yet reported).
    Busy,
    /// The pid is not an unreaped child of this process.
    NotAChild,
    /// Another watcher of this loop already watches the child (two would race to reap it).
    AlreadyWatched,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::Stale => f.write_str(
                "the watch id is stale: its watcher was removed or it belongs to another loop",
            ),
            UsageError::WrongKind { op, kind } => {
                write!(f, "`{op}` does not apply to {}", kind.with_article())
            }
            UsageError::ClockMismatch => f.write_str(
                "the deadline is on the other clock: use Deadline::At(Instant) for monotonic \
                 timers and Deadline::AtSystem(SystemTime) for system-clock timers",
            ),
            UsageError::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            UsageError::Busy => f.write_str(
                "the child watcher is busy: it watches a child until that child's exit has \
                 been reported",
            ),
            UsageError::NotAChild => f.write_str(
                "the pid is not an unreaped child of this process; watch only children this \
                 process started and has not waited for",
            ),
            UsageError::AlreadyWatched => f.write_str(
                "another watcher of this loop already watches this child; use that watcher, or \
                 remove it first",
            ),
        }
    }
}

impl std::error::Error for UsageError {}

/// Why [`Control::signal_child`](crate::Control::signal_child) sent nothing.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum SignalChildError {
    /// A caller mistake (stale id, not a child watcher, a signal number out of range).
    Usage(UsageError),
    /// The child has exited (it may already be reaped): nothing was sent, and no other process
    /// can have been hit.
    Gone,
    /// The kernel refused (for example `EPERM`).
    Kernel(Errno),
    /// [`signal_child_group`](crate::Control::signal_child_group): the child does not lead a
    /// process group of its own, so there is no group to signal.
    NotGroupLeader,
}

impl fmt::Display for SignalChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignalChildError::Usage(u) => fmt::Display::fmt(u, f),
            SignalChildError::Gone => f.write_str("the child has already exited; nothing was sent"),
            SignalChildError::NotGroupLeader => f.write_str(
                "the child does not lead a process group of its own; start it with \
                 SpawnOptions::new_process_group() (or CommandExt::process_group(0)) to signal \
                 its group",
            ),
            SignalChildError::Kernel(e) => write!(f, "the kernel refused to send the signal: {e}"),
        }
    }
}

impl std::error::Error for SignalChildError {}

impl From<UsageError> for SignalChildError {
    fn from(u: UsageError) -> Self {
        SignalChildError::Usage(u)
    }
}

/// Why [`Control::spawn_into`](crate::Control::spawn_into) (or
/// [`spawn_exec_into`](crate::Control::spawn_exec_into)) started nothing. The reservation is
/// untouched by a failure: it keeps its handler and its slot, idle, ready for the next try.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum SpawnError {
    /// A caller mistake: a stale id (the reservation was removed), a watcher that is not a
    /// child watcher, or a reservation still busy with a child ([`UsageError::Busy`]: its
    /// child runs, its exit is not yet reported, or another thread is spawning into it).
    Usage(UsageError),
    /// The process could not be started: `fork`/`exec` failed (a missing program is
    /// `ENOENT`, no permission `EACCES`...) or the command's `pre_exec` hook returned this
    /// error.
    Spawn {
        /// What the OS (or the hook) answered.
        errno: Errno,
    },
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Usage(u) => fmt::Display::fmt(u, f),
            SpawnError::Spawn { errno } => write!(
                f,
                "could not start the process: {errno}; check the program's path and \
                 permissions and the process's resource limits (the reservation is still \
                 idle)"
            ),
        }
    }
}

impl std::error::Error for SpawnError {}

impl From<UsageError> for SpawnError {
    fn from(u: UsageError) -> Self {
        SpawnError::Usage(u)
    }
}

/// Why a loop could not be built.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// A capacity is zero or above its maximum.
    InvalidCapacity {
        /// The builder setting.
        what: &'static str,
        /// The value given.
        value: usize,
        /// The largest accepted value.
        max: usize,
    },
    /// The pools could not be allocated.
    OutOfMemory {
        /// The pool that failed.
        what: &'static str,
    },
    /// The kernel refused to create one of the loop's own objects.
    Kernel {
        /// The kernel call that failed.
        call: &'static str,
        /// What it answered.
        errno: Errno,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::InvalidCapacity { what, value, max } => {
                // Timer and wake slots may be 0 (no watchers of that kind); the rest need one.
                let min = if matches!(*what, "timers" | "wakers") {
                    0
                } else {
                    1
                };
                write!(
                    f,
                    "capacity `{what}` = {value} is out of range: give a value from {min} to {max}"
                )
            }
            BuildError::OutOfMemory { what } => write!(
                f,
                "could not allocate the `{what}` pool; build with smaller capacities"
            ),
            BuildError::Kernel { call, errno } => write!(
                f,
                "could not create the loop's kernel objects: {call} failed with {errno}; check \
                 the process's open-file limit"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_converts_to_and_from_io_error() {
        let io: std::io::Error = Errno::AGAIN.into();
        assert_eq!(io.raw_os_error(), Some(Errno::AGAIN.raw()));
        assert_eq!(io.kind(), std::io::ErrorKind::WouldBlock);
        assert_eq!(Errno::try_from(io).ok(), Some(Errno::AGAIN));
        let made = std::io::Error::other("not from the OS");
        assert!(Errno::try_from(made).is_err());
    }

    #[test]
    fn messages_read_as_sentences_and_say_what_to_do() {
        let m = UsageError::WrongKind {
            op: "arm_timer",
            kind: WatchKind::Fd,
        }
        .to_string();
        assert_eq!(m, "`arm_timer` does not apply to an fd watcher");
        let m = Error::SignalNotBlocked(Signal::TERM).to_string();
        assert!(m.contains("dasynq::block_signals"), "{m}");
        let m = Error::SimSignalNotBlocked(Signal::TERM).to_string();
        assert!(
            m.contains("sim.block_signal") && !m.contains("dasynq::block_signals"),
            "{m}"
        );
        let m = Error::Spawn {
            errno: Errno::NOENT,
        }
        .to_string();
        assert!(
            m.starts_with("could not start the process") && m.contains("path"),
            "{m}"
        );
    }

    #[test]
    fn errors_convert_into_io_errors() {
        let io: std::io::Error = Error::Spawn {
            errno: Errno::NOENT,
        }
        .into();
        assert_eq!(io.raw_os_error(), Some(libc::ENOENT));
        let io: std::io::Error = Error::Capacity(Pool::Watchers).into();
        assert_eq!(io.kind(), std::io::ErrorKind::OutOfMemory);
        let inner = io.get_ref().and_then(|e| e.downcast_ref::<Error>());
        assert_eq!(inner, Some(&Error::Capacity(Pool::Watchers)));
        let r = Rejected::new(Error::NotPollable, 7u8, None);
        assert_eq!(Error::from(r), Error::NotPollable);
        let r = Rejected::new(Error::NotPollable, 7u8, None);
        assert_eq!(
            std::io::Error::from(r).kind(),
            std::io::ErrorKind::Unsupported
        );
        let mut r = Rejected::new(Error::NotPollable, 7u8, None);
        *r.handler_mut() += 1;
        assert_eq!(r.into_parts().1, 8);
    }

    #[test]
    fn capacity_messages_name_the_slot_and_the_real_range() {
        let m = Error::Capacity(Pool::Timers).to_string();
        assert!(m.starts_with("every timer slot is in use"), "{m}");
        assert!(m.contains("`.timers(n)`"), "{m}");
        let zero_ok = BuildError::InvalidCapacity {
            what: "timers",
            value: 8,
            max: 4,
        };
        assert!(zero_ok.to_string().ends_with("from 0 to 4"), "{zero_ok}");
        let one_up = BuildError::InvalidCapacity {
            what: "watchers",
            value: 0,
            max: 1 << 24,
        };
        assert!(one_up.to_string().contains("from 1 to"), "{one_up}");
    }
}
