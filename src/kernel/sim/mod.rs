//! Simulated kernels: a deterministic world of fds, clocks and faults, and the kernel
//! interfaces modelled over it.
//!
//! [`SimWorld`] holds the simulated objects (pipes, stream sockets, regular files), two
//! virtual clocks and a fault plan; it is generic over the tables of the kernel interface that
//! runs on it, kept under the same lock so that a wait sees one consistent world:
//! [`EpollSim`] models epoll(7) with timerfds, eventfds, signalfds and pidfds for the epoll
//! backend, [`KqueueSim`] models kqueue(2) (with per-platform differences) for the kqueue
//! backend, and the `Sim` backend keeps its own registrations directly.
//!
//! Simulated fds are real fds (each simulated object is backed by one end of a real pipe, made
//! by the world), so the loop can own them like any other; their readiness and data, however,
//! exist only in the simulation and change only through the world's methods, or when the fd
//! is dropped (the world notices, as a kernel closes a file whose last fd went). Register only
//! fds made by the world with a simulated kernel.

mod epoll;
mod kqueue;
// On Linux the backend takes these from `libc`; the simulation's copies are checked against
// them (and used by the epoll backend elsewhere).
#[cfg_attr(dasynq_epoll, allow(dead_code))]
pub(crate) mod linux_abi;
mod world;

pub use epoll::{EpollSim, EpollTables, SimEventFd, SimFd};
pub use kqueue::{KqSimBuffer, KqSimFd, KqueuePlatform, KqueueSim, KqueueTables};
pub(crate) use world::{Kind, Objects, ProcState};
pub use world::{SimCommand, SimDisposition, SimWorld};
