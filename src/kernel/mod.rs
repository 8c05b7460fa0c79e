//! Kernels under the backends: the real ones (system calls through `rustix`) and, with the
//! `sim` feature, simulated ones. This is the only place that talks to the OS.

#[cfg(target_os = "linux")]
mod linux;
mod posix;
#[cfg(target_os = "linux")]
pub use linux::{EpollBuffer, LinuxEpoll, LinuxEventFd};
pub use posix::{block_signals, blocked_signals, unblock_signals};

#[cfg(any(test, feature = "sim"))]
pub mod sim;
