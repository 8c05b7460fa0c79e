//! Kernels under the backends: the real ones (system calls through `rustix`) and, with the
//! `sim` feature, simulated ones. This is the only place that talks to the OS.

#[cfg(dasynq_kqueue)]
mod bsd;
#[cfg(dasynq_epoll)]
mod linux;
mod posix;

#[cfg(dasynq_kqueue)]
pub use bsd::{BsdKqueue, KqueueBuffer};
#[cfg(dasynq_epoll)]
pub use linux::{EpollBuffer, LinuxEpoll, LinuxEventFd};
pub use posix::{block_signals, blocked_signals, unblock_signals};

#[cfg(any(test, feature = "sim"))]
pub mod sim;
