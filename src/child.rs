//! Child processes: how one ended ([`ChildStatus`]) and what spawning one gives back
//! ([`Spawned`]).
//!
//! The reaping policy is documented on [`ChildStatus`].

use std::process::{ChildStderr, ChildStdin, ChildStdout};

use crate::id::WatchId;
use crate::signal::Signal;

/// How a child process ended.
///
/// # Reaping policy
///
/// A loop reaps only the children it watches, and only after they exit:
/// on Linux through a pidfd (`pidfd_open` + `waitid(P_PIDFD)`), so it installs no `SIGCHLD`
/// handler and several loops can live in one process. Children it does not watch are left for
/// the program to `waitpid`. A watched child must not be waited for by the program (it would
/// steal the status; the watcher then reports [`ChildStatus::Unknown`]). On kernels without
/// pidfd, or when a pidfd cannot be had (`EMFILE`...), a watch falls back to `SIGCHLD` plus
/// `waitid(P_PID, pid)` for each watched child; that path needs `SIGCHLD` blocked like any
/// watched signal.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum ChildStatus {
    /// It called `exit` (or returned from `main`) with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled {
        /// The signal.
        signal: Signal,
        /// Whether it dumped core.
        core_dumped: bool,
    },
    /// Someone else reaped it (the program waited for a watched child), so the status is lost.
    Unknown,
}

impl ChildStatus {
    /// Exited with code 0.
    pub fn success(self) -> bool {
        self == ChildStatus::Exited(0)
    }
    /// The exit code, if it exited.
    pub fn code(self) -> Option<i32> {
        match self {
            ChildStatus::Exited(c) => Some(c),
            _ => None,
        }
    }
    /// The signal that killed it, if one did.
    pub fn signal(self) -> Option<Signal> {
        match self {
            ChildStatus::Signaled { signal, .. } => Some(signal),
            _ => None,
        }
    }
    /// Whether it dumped core.
    pub fn core_dumped(self) -> bool {
        matches!(
            self,
            ChildStatus::Signaled {
                core_dumped: true,
                ..
            }
        )
    }
}

impl From<std::process::ExitStatus> for ChildStatus {
    fn from(s: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (s.code(), s.signal()) {
            (Some(c), _) => ChildStatus::Exited(c),
            (None, Some(sig)) => ChildStatus::Signaled {
                signal: Signal::from_raw(sig),
                core_dumped: s.core_dumped(),
            },
            (None, None) => ChildStatus::Unknown,
        }
    }
}

impl TryFrom<ChildStatus> for std::process::ExitStatus {
    type Error = ChildStatus;
    /// The `wait` status encoding of an exit or a killing signal; `Unknown` has none.
    fn try_from(s: ChildStatus) -> Result<Self, ChildStatus> {
        use std::os::unix::process::ExitStatusExt;
        match s {
            ChildStatus::Exited(c) => Ok(Self::from_raw((c & 0xff) << 8)),
            ChildStatus::Signaled {
                signal,
                core_dumped,
            } => Ok(Self::from_raw(
                (signal.raw() & 0x7f) | if core_dumped { 0x80 } else { 0 },
            )),
            ChildStatus::Unknown => Err(s),
        }
    }
}

/// A process started by a backend (real or simulated), before the loop watches it.
#[derive(Debug)]
pub struct SpawnedProcess {
    /// Its pid.
    pub pid: u32,
    /// Its stdin, if the command piped it.
    pub stdin: Option<ChildStdin>,
    /// Its stdout, if the command piped it.
    pub stdout: Option<ChildStdout>,
    /// Its stderr, if the command piped it.
    pub stderr: Option<ChildStderr>,
}

/// A child started and watched by [`Control::spawn_child`](crate::Control::spawn_child).
///
/// There is deliberately no `std::process::Child` here: its `wait`/`kill` would race with the
/// loop, which reaps the child; signal it with
/// [`Control::signal_child`](crate::Control::signal_child) instead.
#[derive(Debug)]
pub struct Spawned {
    /// The child watcher.
    pub id: WatchId,
    /// The child's pid (for logging; the loop never signals a pid, only the child it watches).
    pub pid: u32,
    /// Its stdin, if the command piped it.
    pub stdin: Option<ChildStdin>,
    /// Its stdout, if the command piped it.
    pub stdout: Option<ChildStdout>,
    /// Its stderr, if the command piped it.
    pub stderr: Option<ChildStderr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_and_from_std() {
        for s in [
            ChildStatus::Exited(0),
            ChildStatus::Exited(3),
            ChildStatus::Signaled {
                signal: Signal::KILL,
                core_dumped: false,
            },
            ChildStatus::Signaled {
                signal: Signal::ABRT,
                core_dumped: true,
            },
        ] {
            let std = std::process::ExitStatus::try_from(s).unwrap();
            assert_eq!(ChildStatus::from(std), s);
        }
        assert!(std::process::ExitStatus::try_from(ChildStatus::Unknown).is_err());
        assert!(ChildStatus::Exited(0).success() && !ChildStatus::Exited(1).success());
        assert_eq!(ChildStatus::Exited(3).code(), Some(3));
    }
}
