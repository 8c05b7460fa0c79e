//! Simulated processes: children of the program under test (and foreign ones), which run
//! until told to exit, send `SIGCHLD` when they do, and are reaped once.

use super::{Objects, SimWorld};
use crate::child::ChildStatus;
use crate::error::Errno;
use crate::signal::{SigInfo, Signal};

/// Processes the simulation can track.
pub(crate) const MAX_PROCESSES: usize = 4096;
/// The first simulated pid.
pub(super) const FIRST_PID: u32 = 10_000;
/// `si_code` values of `SIGCHLD`, as the target defines them.
const CLD_EXITED: i32 = libc::CLD_EXITED;
const CLD_KILLED: i32 = libc::CLD_KILLED;
const CLD_DUMPED: i32 = libc::CLD_DUMPED;

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub(crate) enum ProcState {
    Running,
    Exited(ChildStatus),
    Reaped,
}

#[derive(Copy, Clone, Debug)]
pub(crate) struct Proc {
    pub(crate) pid: u32,
    /// A child of the simulated process (the program under test).
    pub(crate) ours: bool,
    pub(crate) state: ProcState,
    pub(crate) changed: u64,
}

impl Objects {
    pub(crate) fn proc(&self, pid: u32) -> Option<&Proc> {
        self.procs.iter().find(|p| p.pid == pid)
    }

    fn proc_mut(&mut self, pid: u32) -> Option<&mut Proc> {
        self.procs.iter_mut().find(|p| p.pid == pid)
    }

    pub(crate) fn spawn_process(&mut self, ours: bool) -> Result<u32, Errno> {
        if self.procs.len() >= self.procs.capacity() {
            // Reuse a reaped entry (pids are never reused: a fresh number).
            let Some(i) = self.procs.iter().position(|p| p.state == ProcState::Reaped) else {
                return Err(Errno::AGAIN);
            };
            self.procs.remove(i);
        }
        let pid = self.next_pid;
        self.next_pid += 1;
        let s = self.next_seq();
        self.procs.push(Proc {
            pid,
            ours,
            state: ProcState::Running,
            changed: s,
        });
        Ok(pid)
    }

    /// The process ends; a child of ours also sends `SIGCHLD`.
    pub(crate) fn exit_process(&mut self, pid: u32, status: ChildStatus) -> Result<(), Errno> {
        let s = self.next_seq();
        let p = self.proc_mut(pid).ok_or(Errno::SRCH)?;
        if p.state != ProcState::Running {
            return Err(Errno::SRCH);
        }
        p.state = ProcState::Exited(status);
        p.changed = s;
        if p.ours {
            let (code, st) = match status {
                ChildStatus::Exited(c) => (CLD_EXITED, c),
                ChildStatus::Signaled {
                    signal,
                    core_dumped: false,
                } => (CLD_KILLED, signal.raw()),
                ChildStatus::Signaled {
                    signal,
                    core_dumped: true,
                } => (CLD_DUMPED, signal.raw()),
                ChildStatus::Unknown => (CLD_EXITED, 0),
            };
            let info = SigInfo::new(Signal::CHLD)
                .with_code(code)
                .with_sender(pid as i32, 0)
                .with_status(st);
            let _ = self.raise(info);
        }
        Ok(())
    }

    /// `waitid(P_PID, pid, WEXITED | WNOHANG [| WNOWAIT])`.
    pub(crate) fn wait_process(
        &mut self,
        pid: u32,
        reap: bool,
    ) -> Result<Option<ChildStatus>, Errno> {
        let s = self.next_seq();
        let p = self.proc_mut(pid).filter(|p| p.ours).ok_or(Errno::CHILD)?;
        match p.state {
            ProcState::Running => Ok(None),
            ProcState::Reaped => Err(Errno::CHILD),
            ProcState::Exited(status) => {
                if reap {
                    p.state = ProcState::Reaped;
                    p.changed = s;
                }
                Ok(Some(status))
            }
        }
    }

    /// Deliver `signal` to a process: the default action ends it, except for the signals whose
    /// default is to ignore. `ESRCH` once it has exited (for `pidfd_send_signal`; `kill` on a
    /// zombie succeeds without effect, which `zombie_ok` selects).
    pub(crate) fn signal_process(
        &mut self,
        pid: u32,
        signal: Signal,
        zombie_ok: bool,
    ) -> Result<(), Errno> {
        let p = *self.proc(pid).ok_or(Errno::SRCH)?;
        match p.state {
            ProcState::Running => {}
            ProcState::Exited(_) if zombie_ok => return Ok(()),
            _ => return Err(Errno::SRCH),
        }
        let ignored = [Signal::CHLD, Signal::CONT, Signal::URG, Signal::WINCH];
        if !ignored.contains(&signal) {
            let core = [
                Signal::QUIT,
                Signal::ABRT,
                Signal::SYS,
                Signal::XCPU,
                Signal::XFSZ,
            ]
            .contains(&signal);
            self.exit_process(
                pid,
                ChildStatus::Signaled {
                    signal,
                    core_dumped: core,
                },
            )?;
        }
        Ok(())
    }
}

impl<X> SimWorld<X> {
    /// `kill(pid, signal)` on a simulated process (the simulated kernels' shared call).
    pub(crate) fn sys_kill(&self, pid: u32, signal: Signal) -> Result<(), Errno> {
        self.change(|o, _| o.signal_process(pid, signal, true))
    }

    /// Start a simulated child (the simulated kernels' `Command::spawn`: no stdio).
    pub(crate) fn sys_spawn(&self) -> Result<crate::child::SpawnedProcess, Errno> {
        let pid = self.change(|o, _| o.spawn_process(true))?;
        Ok(crate::child::SpawnedProcess {
            pid,
            stdin: None,
            stdout: None,
            stderr: None,
        })
    }

    /// Start a simulated child process of the program under test; it runs until
    /// [`exit_child`](Self::exit_child).
    pub fn spawn_child(&self) -> Result<u32, Errno> {
        self.change(|o, _| o.spawn_process(true))
    }

    /// Start a simulated process that is not a child of the program under test.
    pub fn spawn_foreign(&self) -> Result<u32, Errno> {
        self.change(|o, _| o.spawn_process(false))
    }

    /// End a simulated process with `status` (a child also sends `SIGCHLD`).
    pub fn exit_child(&self, pid: u32, status: ChildStatus) -> Result<(), Errno> {
        self.change(|o, _| o.exit_process(pid, status))
    }

    /// Reap a child the way the program's own `waitpid` would (`CHILD` if it is not an
    /// unreaped child; `Ok(None)` while it runs).
    pub fn reap(&self, pid: u32) -> Result<Option<ChildStatus>, Errno> {
        self.change(|o, _| o.wait_process(pid, true))
    }

    /// Whether a simulated process is still running.
    pub fn is_running(&self, pid: u32) -> bool {
        self.lock()
            .0
            .proc(pid)
            .is_some_and(|p| p.state == ProcState::Running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::SignalSet;

    fn world() -> SimWorld<()> {
        SimWorld::with_tables(())
    }

    #[test]
    fn children_exit_send_sigchld_and_reap_once() {
        let w = world();
        w.block_signal(Signal::CHLD);
        let c = w.spawn_child().unwrap();
        let f = w.spawn_foreign().unwrap();
        assert_eq!(w.reap(c), Ok(None));
        assert_eq!(w.reap(f), Err(Errno::CHILD));
        w.exit_child(c, ChildStatus::Exited(3)).unwrap();
        assert_eq!(w.pending_signals(), 1);
        let info = w
            .lock()
            .0
            .take_signal(SignalSet::of(&[Signal::CHLD]))
            .unwrap();
        assert_eq!(
            (info.pid(), info.status(), info.code()),
            (c as i32, 3, CLD_EXITED)
        );
        assert_eq!(w.reap(c), Ok(Some(ChildStatus::Exited(3))));
        assert_eq!(w.reap(c), Err(Errno::CHILD));
        let k = w.spawn_child().unwrap();
        w.change(|o, _| o.signal_process(k, Signal::KILL, false))
            .unwrap();
        assert_eq!(
            w.reap(k),
            Ok(Some(ChildStatus::Signaled {
                signal: Signal::KILL,
                core_dumped: false
            }))
        );
    }
}
