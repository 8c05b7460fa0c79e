//! Kernels under the backends: the real ones (system calls through `rustix`) and, with the
//! `sim` feature, simulated ones. This is the only place that talks to the OS.

#[cfg(dasynq_kqueue)]
mod bsd;
#[cfg(any(dasynq_kqueue, test, feature = "sim"))]
pub(crate) mod kqueue_abi;
#[cfg(dasynq_epoll)]
mod linux;
mod posix;
#[cfg(any(all(dasynq_kqueue, not(dasynq_sigtimedwait)), all(test, dasynq_epoll)))]
mod sigcatch;
#[cfg(any(dasynq_epoll, dasynq_kqueue))]
mod spawn;

#[cfg(dasynq_kqueue)]
pub use bsd::{BsdKqueue, KqueueBuffer};
#[cfg(dasynq_epoll)]
pub use linux::{EpollBuffer, LinuxEpoll, LinuxEventFd};
pub(crate) use posix::cloexec_pipe;
pub use posix::{block_signals, blocked_signals, unblock_signals};

#[cfg(any(test, feature = "sim"))]
pub mod faulty;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
