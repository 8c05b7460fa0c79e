//! # dasynq
//!
//! An event loop for system-critical programs: init systems, service supervisors, network
//! daemons. It waits on file descriptors, timers on two clocks, POSIX signals (each instance
//! with its own `SigInfo`), child-process exits and cross-thread wakeups, and dispatches each
//! event to a handler, with these promises:
//!
//! - **No allocation after [`build`](Builder::build).** Every pool is sized once. Registering,
//!   dispatching, arming, enabling and removing never touch the heap.
//! - **Only registration can fail,** with a typed [`Error`], and a failed registration hands
//!   back the handler and fd ([`Rejected`]). Enabling, disabling, arming, stopping, removing
//!   and dispatching cannot fail; they report only caller mistakes ([`UsageError`]).
//! - **Stale ids are harmless.** A [`WatchId`] carries a generation and a loop tag; an id of a
//!   removed watcher, or of another loop, never reaches another watcher.
//! - **`on_removed` runs exactly once** per registration, even when a handler removes itself.
//! - **The loop owns registered fds**, so safe code cannot close an fd under it; handlers use
//!   them through typed views ([`Event::view`]).
//! - **The loop reaps only the children it watches**, and never signals a recycled pid.
//!
//! One handler type per loop (usually an enum of the program's watchers) keeps storage fixed
//! and dispatch static; the program's shared state is lent to every handler call by the run
//! call ([`Handler::Data`], [`EventLoop::run_with`]):
//!
//! ```
//! use dasynq::{Clock, Cx, Deadline, Event, EventLoop, FdOptions, Handler, Interest, Priority, Rearm};
//! use std::io::{Read, Write};
//! use std::os::unix::net::UnixStream;
//! use std::time::Duration;
//!
//! enum Watch { Input, Tick }
//!
//! #[derive(Default)]
//! struct Stats { bytes: usize, ticks: u64 }
//!
//! impl Handler for Watch {
//!     type Data = Stats;
//!     fn on_event(&mut self, cx: &Cx<'_, Self>, stats: &mut Stats, event: Event<'_>) -> Rearm {
//!         match self {
//!             Watch::Input => {
//!                 let Some(mut input) = event.view::<UnixStream>() else { return Rearm::Rearm };
//!                 let mut buf = [0; 512];
//!                 match input.read(&mut buf) {
//!                     Ok(0) | Err(_) => { cx.stop(); Rearm::Remove } // end of input
//!                     Ok(n) => { stats.bytes += n; Rearm::Rearm }
//!                 }
//!             }
//!             Watch::Tick => {
//!                 if let Event::Timer { expirations } = event { stats.ticks += expirations; }
//!                 Rearm::Rearm
//!             }
//!         }
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lp = EventLoop::<Watch>::builder().watchers(64).timers(8).build()?;
//! let (ours, mut theirs) = UnixStream::pair()?;
//! lp.add_fd(ours.into(), Interest::READ, FdOptions::new(), Watch::Input)?;
//! let tick = lp.add_timer(Clock::Monotonic, Priority::LOW, Watch::Tick)?;
//! let ms = Duration::from_millis(1);
//! lp.arm_timer(tick, Deadline::After(ms), Some(ms))?;
//! theirs.write_all(b"hello")?;
//! drop(theirs);
//! let mut stats = Stats::default();
//! while lp.usage().watchers > 1 {
//!     lp.run_with(&mut stats);
//! }
//! assert_eq!(stats.bytes, 5);
//! # Ok(()) }
//! ```
//!
//! Every operation ([`add_fd`](EventLoop::add_fd), [`arm_timer`](EventLoop::arm_timer),
//! [`remove`](EventLoop::remove)...) is a method of both [`EventLoop`] and the handler's
//! [`Cx`]; [`Control`] names them for code generic over either.
//!
//! ## Guides
//!
//! - **The masking rule**: a watched signal must be blocked in every thread, or the kernel may
//!   run its default action instead of queueing it for the loop. Block them in `main`, before
//!   any thread starts, with [`block_signals`]; see [`Signal`] for the details, and
//!   [`ChildSignals`] for how children still start with a clean signal state.
//! - **The reaping policy**: a loop reaps only the children it watches, and only after they
//!   exit (through a pidfd on Linux, `EVFILT_PROC` on the BSDs); children it does not watch
//!   are the program's to `waitpid`; a watched child must not be waited for by the program.
//!   See [`ChildStatus`] and [`EventLoop::spawn_child`].
//! - **Capacity**: [`Builder`] lists every pool and what takes a slot of it;
//!   [`EventLoop::usage`] reports how full each is. Registration fails with
//!   [`Error::Capacity`] naming the pool, and nothing else ever fails for capacity.
//! - **Many threads**: a [`ThreadedLoop`] may be run by several threads at once, each call
//!   with its own data; see [`EventLoop::run_with`] and the README's "Many threads".
//! - **Embedding**: a loop's [`AsFd`](std::os::fd::AsFd) is readable when it has work, so
//!   another event loop can drive it (see [`EventLoop::as_fd`](EventLoop#impl-AsFd-for-EventLoop%3CH,+B,+F%3E)).
//! - **At the open-file limit**: [`SpareFd`] lets a listener refuse connections cleanly
//!   instead of spinning.
//! - **Testing**: with the `sim` feature, the `sim` module has a deterministic backend with
//!   virtual time and simulated kernels.
//!
//! Layers: the portable core ([`EventLoop`], pools, queue, timers) knows nothing of the OS; a
//! [`Backend`](backend::Backend) ([`Epoll`](backend::Epoll) on Linux) translates watches into
//! kernel registrations through a kernel trait, which the `sim` feature also implements with
//! simulated kernels.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod backend;
mod child;
mod control;
mod error;
mod event_loop;
mod exec;
mod handler;
mod heap;
mod id;
mod interest;
mod kernel;
mod lock;
mod options;
mod pool;
mod queue;
mod signal;
mod spare;
mod state;
mod timer;
mod view;
mod waker;
mod watch;

pub use child::{ChildStatus, Spawned, SpawnedProcess};
pub use control::{Control, Cx, KernelFaults, Usage};
pub use error::{
    BuildError, Errno, Error, Pool, Rejected, SignalChildError, SpawnError, UsageError, WatchKind,
};
pub use event_loop::{Builder, EventLoop, ThreadedLoop};
pub use exec::{Exec, ExecStdio};

/// The default backend of this platform: epoll on Linux, kqueue on the BSDs and macOS. (The
/// platform list lives in `build.rs`, which sets `dasynq_epoll` or `dasynq_kqueue`.)
#[cfg(dasynq_epoll)]
pub type DefaultBackend = backend::Epoll<kernel::LinuxEpoll>;
/// The default backend of this platform: epoll on Linux, kqueue on the BSDs and macOS.
#[cfg(dasynq_kqueue)]
pub type DefaultBackend = backend::Kqueue<kernel::BsdKqueue>;
// The kqueue backend stores a token of a 32-bit generation and a slot index in `udata`,
// which is pointer-sized: on a 32-bit kqueue system the generation would be cut off and
// stale events could reach a slot's next occupant.
#[cfg(all(dasynq_kqueue, not(target_pointer_width = "64")))]
compile_error!(
    "dasynq's kqueue backend needs a 64-bit target: its tokens (slot index and 32-bit \
     generation) do not fit a 32-bit kevent udata; 32-bit BSD and Apple targets are not \
     supported"
);
#[cfg(not(any(dasynq_epoll, dasynq_kqueue)))]
compile_error!(
    "dasynq runs on Linux (epoll) and on FreeBSD, NetBSD, OpenBSD, DragonFly and Apple systems \
     (kqueue); this target has neither"
);
pub use handler::{Event, FnHandler, Handler, Rearm, Removed, SendFnHandler};
pub use id::{Priority, WatchId};
pub use interest::{Half, Interest, Readiness};
pub use kernel::{block_signals, blocked_signals, unblock_signals};
#[cfg(feature = "model")]
#[cfg_attr(docsrs, doc(cfg(feature = "model")))]
pub use lock::Modelled;
pub use lock::{Flavor, Single, Threaded};
pub use options::{BidiOptions, ChildSignals, Emulation, FdOptions, SpawnOptions};
pub use signal::{SigInfo, Signal, SignalSet};
pub use spare::SpareFd;
pub use timer::{Clock, Deadline};
pub use view::{FdView, View};
pub use waker::{Notify, Waker};

/// Simulation: the deterministic [`Sim`](sim::Sim) backend and the simulated epoll kernel
/// [`EpollSim`](sim::EpollSim), for testing programs (and this crate) without a kernel.
#[cfg(any(test, feature = "sim"))]
#[cfg_attr(docsrs, doc(cfg(feature = "sim")))]
pub mod sim {
    pub use crate::backend::sim::{Sim, SimTables};
    pub use crate::kernel::faulty::{
        Fault, FaultPlan, Faulty, FaultyBuffer, FaultyEventFd, SimCall,
    };
    pub use crate::kernel::sim::{
        EpollSim, EpollTables, KqSimBuffer, KqSimFd, KqueuePlatform, KqueueSim, KqueueTables,
        SimCommand, SimDisposition, SimEventFd, SimFd, SimWorld,
    };
}

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

static_assertions::assert_eq_size!(WatchId, [u32; 3]);
static_assertions::assert_impl_all!(Waker: Send, Sync, Clone);
#[cfg(any(dasynq_epoll, dasynq_kqueue))]
static_assertions::assert_impl_all!(ThreadedLoop<SendFnHandler>: Send, Sync);
#[cfg(any(dasynq_epoll, dasynq_kqueue))]
static_assertions::assert_not_impl_any!(EventLoop<FnHandler>: Sync);
