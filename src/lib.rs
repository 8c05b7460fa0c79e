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
//! - **The loop owns registered fds**, so safe code cannot close an fd under it.
//! - **The loop reaps only the children it watches**, and never signals a recycled pid.
//!
//! Watched signals must be blocked in every thread: see [`block_signals`] and the module
//! docs of [`Signal`].
//!
//! One handler type per loop (usually an enum of the program's watchers) keeps storage fixed
//! and dispatch static:
//!
//! ```
//! use dasynq::{Clock, Cx, Deadline, Event, EventLoop, Handler, Priority, Rearm};
//! use std::time::Duration;
//!
//! enum Watch { Tick { left: u32 } }
//!
//! impl Handler for Watch {
//!     fn on_event(&mut self, cx: &Cx<'_, Self>, event: Event<'_>) -> Rearm {
//!         match (self, event) {
//!             (Watch::Tick { left }, Event::Timer { expirations }) => {
//!                 *left = left.saturating_sub(expirations as u32);
//!                 if *left == 0 { cx.stop(); Rearm::Remove } else { Rearm::Rearm }
//!             }
//!             _ => Rearm::Rearm,
//!         }
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lp = EventLoop::<Watch>::builder().watchers(64).timers(8).build()?;
//! let tick = lp.add_timer(Clock::Monotonic, Priority::DEFAULT, Watch::Tick { left: 3 })?;
//! let ms = Duration::from_millis(1);
//! lp.arm_timer(tick, Deadline::After(ms), Some(ms))?;
//! while lp.contains(tick) {
//!     lp.run();
//! }
//! # Ok(()) }
//! ```
//!
//! Layers: the portable core ([`EventLoop`], pools, queue, timers) knows nothing of the OS; a
//! [`Backend`](backend::Backend) ([`Epoll`](backend::Epoll) on Linux) translates watches into
//! kernel registrations through a kernel trait, which the `sim` feature also implements with
//! simulated kernels ([`sim`]).

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
pub mod kernel;
mod lock;
mod options;
mod pool;
mod queue;
mod signal;
mod state;
mod timer;
mod waker;
mod watch;

pub use child::{ChildStatus, Spawned, SpawnedProcess};
pub use control::{Control, Cx, KernelFaults, Usage};
pub use error::{
    BuildError, Errno, Error, Pool, Rejected, SignalChildError, UsageError, WatchKind,
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
pub use lock::Modelled;
pub use lock::{Flavor, Single, Threaded};
pub use options::{BidiOptions, ChildSignals, Emulation, FdOptions, SpawnOptions};
pub use signal::{SigInfo, Signal, SignalSet};
pub use timer::{Clock, Deadline};
pub use waker::{Notify, Waker};

/// Simulation: the deterministic [`Sim`](sim::Sim) backend and the simulated epoll kernel
/// [`EpollSim`](sim::EpollSim), for testing programs (and this crate) without a kernel.
#[cfg(any(test, feature = "sim"))]
pub mod sim {
    pub use crate::backend::sim::{Sim, SimTables};
    pub use crate::kernel::faulty::{
        Fault, FaultPlan, Faulty, FaultyBuffer, FaultyEventFd, SimCall,
    };
    pub use crate::kernel::sim::{
        EpollSim, EpollTables, KqSimBuffer, KqSimFd, KqueuePlatform, KqueueSim, KqueueTables,
        SimEventFd, SimFd, SimWorld,
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
