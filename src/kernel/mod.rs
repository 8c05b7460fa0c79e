//! Kernels under the backends: the real ones (system calls through `rustix`) and, with the
//! `sim` feature, simulated ones. This is the only place that talks to the OS.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::{EpollBuffer, LinuxEpoll, LinuxEventFd};

#[cfg(any(test, feature = "sim"))]
pub mod sim;
