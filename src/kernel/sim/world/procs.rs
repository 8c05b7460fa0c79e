//! Simulated processes: children of the program under test (and foreign ones), which run
//! until they exit or a signal ends them, send `SIGCHLD` when they do, and are reaped once.
//!
//! A spawned child records what it was started as (program and arguments, whether it leads
//! a new process group, whether it started with a clean signal state) and acts on signals as
//! signal(7) says a process does: each signal's disposition is its default action unless a
//! test makes the child ignore or catch it (`SimWorld::set_disposition`); a signal blocked in
//! the child (one it inherited blocked, when it was spawned without a clean signal state)
//! stays pending in it and does nothing; `SIGKILL` and `SIGSTOP` cannot be caught, ignored or
//! blocked. Default actions (signal(7), "Standard signals"): `Ign` for `SIGCHLD`, `SIGURG`,
//! `SIGWINCH` (and `SIGCONT`, whose continuing happens whatever the disposition); `Stop` for
//! `SIGSTOP`, `SIGTSTP`, `SIGTTIN`, `SIGTTOU`; `Core` for `SIGQUIT`, `SIGILL`, `SIGABRT`,
//! `SIGFPE`, `SIGSEGV`, `SIGBUS`, `SIGSYS`, `SIGTRAP`, `SIGXCPU`, `SIGXFSZ`; `Term` for the
//! rest. A fatal signal ends a stopped process too, as Linux does (`complete_signal` in
//! kernel/signal.c wakes it to die). A child that stops or continues sends `SIGCHLD`
//! (`CLD_STOPPED`, `CLD_CONTINUED`; sigaction(2), without `SA_NOCLDSTOP`).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use super::{Objects, SimWorld};
use crate::backend::{ChildCommand, SpawnHow};
use crate::child::ChildStatus;
use crate::error::Errno;
use crate::signal::{SigInfo, Signal, SignalSet};

/// Processes the simulation can track.
pub(crate) const MAX_PROCESSES: usize = 4096;
/// The first simulated pid.
pub(super) const FIRST_PID: u32 = 10_000;
/// The simulated program's own pid, which is also its process group's id (children that do
/// not start a group of their own are in it).
pub(crate) const PROGRAM_PID: u32 = FIRST_PID - 1;
/// `si_code` values of `SIGCHLD`, as the target defines them.
const CLD_EXITED: i32 = libc::CLD_EXITED;
const CLD_KILLED: i32 = libc::CLD_KILLED;
const CLD_DUMPED: i32 = libc::CLD_DUMPED;
const CLD_STOPPED: i32 = libc::CLD_STOPPED;
const CLD_CONTINUED: i32 = libc::CLD_CONTINUED;
/// Bytes of a command line a simulated process records (program and arguments, each ended by
/// a NUL); a longer one is cut short and marked truncated.
const COMMAND_BYTES: usize = 256;
/// Signals a simulated process remembers receiving, in order (the latest ones).
const RECEIVED: usize = 32;

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub(crate) enum ProcState {
    Running,
    Exited(ChildStatus),
    Reaped,
}

/// What a simulated child does with a signal (see the module's documentation).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum SimDisposition {
    /// The signal's default action (signal(7)).
    Default,
    /// `SIG_IGN`: nothing happens.
    Ignore,
    /// A handler: the child notes the signal (see [`SimWorld::signals_caught`]) and runs on.
    Catch,
}

/// What a simulated child was started as (see [`SimWorld::child_command`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SimCommand {
    /// The program.
    pub program: OsString,
    /// Its arguments (not counting the program).
    pub args: Vec<OsString>,
    /// The command line was longer than the simulation records (256 bytes): cut short.
    pub truncated: bool,
    /// Started as the leader of a new process group.
    pub new_group: bool,
    /// Started with a clean signal state (an empty mask, default dispositions); otherwise it
    /// inherited the program's signal mask at the spawn.
    pub clean_signals: bool,
}

#[derive(Copy, Clone, Debug)]
pub(crate) struct Proc {
    pub(crate) pid: u32,
    /// A child of the simulated process (the program under test).
    pub(crate) ours: bool,
    pub(crate) state: ProcState,
    pub(crate) changed: u64,
    /// Stopped by a signal (still running, as far as waiting for its exit goes).
    stopped: bool,
    pgid: u32,
    /// Its signal mask: inherited at the spawn, or empty.
    blocked: SignalSet,
    /// Signals sent while blocked, waiting in it.
    pending: SignalSet,
    ignored: SignalSet,
    caught: SignalSet,
    /// How many signals it received (blocked or not) and the latest `RECEIVED` of them.
    received: u64,
    log: [i32; RECEIVED],
    caught_count: u64,
    command: [u8; COMMAND_BYTES],
    command_len: u16,
    truncated: bool,
    new_group: bool,
    clean: bool,
}

impl Proc {
    fn new(pid: u32, ours: bool, s: u64) -> Proc {
        Proc {
            pid,
            ours,
            state: ProcState::Running,
            changed: s,
            stopped: false,
            pgid: PROGRAM_PID,
            blocked: SignalSet::new(),
            pending: SignalSet::new(),
            ignored: SignalSet::new(),
            caught: SignalSet::new(),
            received: 0,
            log: [0; RECEIVED],
            caught_count: 0,
            command: [0; COMMAND_BYTES],
            command_len: 0,
            truncated: false,
            new_group: false,
            clean: true,
        }
    }

    /// Record `part` and a NUL after what the command line holds (cut short when full).
    fn record(&mut self, part: &OsStr) {
        let start = self.command_len as usize;
        let bytes = part.as_bytes();
        if start + bytes.len() + 1 > COMMAND_BYTES || self.truncated {
            self.truncated = true;
            return;
        }
        self.command[start..start + bytes.len()].copy_from_slice(bytes);
        self.command[start + bytes.len()] = 0;
        self.command_len = (start + bytes.len() + 1) as u16;
    }

    fn command(&self) -> SimCommand {
        let mut parts = self.command[..self.command_len as usize]
            .split(|&b| b == 0)
            .map(|p| OsString::from_vec(p.to_vec()));
        let program = parts.next().unwrap_or_default();
        let mut args: Vec<OsString> = parts.collect();
        // The split leaves an empty piece after the last NUL.
        args.pop();
        SimCommand {
            program,
            args,
            truncated: self.truncated,
            new_group: self.new_group,
            clean_signals: self.clean,
        }
    }
}

/// The default action of a signal (signal(7), "Standard signals").
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Action {
    Ignore,
    Terminate,
    Core,
    Stop,
}

fn default_action(signal: Signal) -> Action {
    match signal.raw() {
        libc::SIGCHLD | libc::SIGURG | libc::SIGWINCH | libc::SIGCONT => Action::Ignore,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => Action::Stop,
        libc::SIGQUIT
        | libc::SIGILL
        | libc::SIGABRT
        | libc::SIGFPE
        | libc::SIGSEGV
        | libc::SIGBUS
        | libc::SIGSYS
        | libc::SIGTRAP
        | libc::SIGXCPU
        | libc::SIGXFSZ => Action::Core,
        _ => Action::Terminate,
    }
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
        self.procs.push(Proc::new(pid, ours, s));
        Ok(pid)
    }

    /// The simulated `fork` + `exec` of `cmd`: a child recording what it runs, in a group of
    /// its own if `how` says so, with the program's mask unless `how` resets it. `ENOENT` (or
    /// whatever a test set) for a program told to fail.
    pub(crate) fn spawn_command(
        &mut self,
        cmd: &ChildCommand<'_>,
        how: SpawnHow,
    ) -> Result<u32, Errno> {
        let program = cmd.program();
        if let Some(&(_, errno)) = self
            .failing
            .iter()
            .flatten()
            .find(|(p, _)| p.as_os_str() == program)
        {
            return Err(errno);
        }
        let pid = self.spawn_process(true)?;
        let blocked = self.blocked;
        let p = self.proc_mut(pid).ok_or(Errno::AGAIN)?;
        p.record(program);
        match cmd {
            ChildCommand::Command(c) => c.get_args().for_each(|a| p.record(a)),
            ChildCommand::Exec(e) => e.args.iter().for_each(|a| p.record(a)),
        }
        p.new_group = how.new_group;
        if how.new_group {
            p.pgid = pid;
        }
        p.clean = how.reset.is_some();
        if how.reset.is_none() {
            p.blocked = blocked;
        }
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
        p.stopped = false;
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
            self.child_signal(pid, code, st);
        }
        Ok(())
    }

    /// `SIGCHLD` to the program, for a child of ours that changed state.
    fn child_signal(&mut self, pid: u32, code: i32, status: i32) {
        let info = SigInfo::new(Signal::CHLD)
            .with_code(code)
            .with_sender(pid as i32, 0)
            .with_status(status);
        let _ = self.raise(info);
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

    /// Deliver `signal` to a process as the module's documentation says. `ESRCH` once it has
    /// exited (for `pidfd_send_signal`; `kill` on a zombie succeeds without effect, which
    /// `zombie_ok` selects).
    pub(crate) fn signal_process(
        &mut self,
        pid: u32,
        signal: Signal,
        zombie_ok: bool,
    ) -> Result<(), Errno> {
        let p = self.proc_mut(pid).ok_or(Errno::SRCH)?;
        match p.state {
            ProcState::Running => {}
            ProcState::Exited(_) if zombie_ok => return Ok(()),
            _ => return Err(Errno::SRCH),
        }
        p.log[(p.received % RECEIVED as u64) as usize] = signal.raw();
        p.received += 1;
        let (ours, was_stopped) = (p.ours, p.stopped);
        if signal == Signal::KILL {
            return self.exit_process(
                pid,
                ChildStatus::Signaled {
                    signal,
                    core_dumped: false,
                },
            );
        }
        if signal == Signal::CONT {
            // signal(7): SIGCONT continues a stopped process whatever its disposition or mask.
            p.stopped = false;
        }
        let action = if signal == Signal::STOP {
            Action::Stop
        } else if p.blocked.contains(signal) {
            p.pending.add(signal);
            Action::Ignore
        } else if p.ignored.contains(signal) {
            Action::Ignore
        } else if p.caught.contains(signal) {
            p.caught_count += 1;
            Action::Ignore
        } else {
            default_action(signal)
        };
        match action {
            Action::Ignore => {}
            Action::Stop => p.stopped = true,
            Action::Terminate | Action::Core => {
                return self.exit_process(
                    pid,
                    ChildStatus::Signaled {
                        signal,
                        core_dumped: action == Action::Core,
                    },
                );
            }
        }
        let now_stopped = p.stopped;
        if ours && now_stopped != was_stopped {
            let s = self.next_seq();
            if let Some(p) = self.proc_mut(pid) {
                p.changed = s;
            }
            let code = if now_stopped {
                CLD_STOPPED
            } else {
                CLD_CONTINUED
            };
            self.child_signal(pid, code, signal.raw());
        }
        Ok(())
    }

    /// `kill(-pgid, signal)`: every process of the group, zombies counting as members (kill(2):
    /// "an existing process might be a zombie"); `ESRCH` if the group has none.
    pub(crate) fn signal_group(&mut self, pgid: u32, signal: Signal) -> Result<(), Errno> {
        let mut found = false;
        for i in 0..self.procs.len() {
            let p = self.procs[i];
            if p.pgid != pgid || p.state == ProcState::Reaped {
                continue;
            }
            found = true;
            let _ = self.signal_process(p.pid, signal, true);
        }
        if pgid == PROGRAM_PID {
            found = true;
            let _ = self.raise(SigInfo::new(signal));
        }
        if found { Ok(()) } else { Err(Errno::SRCH) }
    }

    /// `getpgid(pid)`.
    pub(crate) fn process_group(&self, pid: u32) -> Result<u32, Errno> {
        if pid == PROGRAM_PID {
            return Ok(PROGRAM_PID);
        }
        match self.proc(pid) {
            Some(p) if p.state != ProcState::Reaped => Ok(p.pgid),
            _ => Err(Errno::SRCH),
        }
    }
}

impl<X> SimWorld<X> {
    /// `kill(pid, signal)` on a simulated process (the simulated kernels' shared call).
    pub(crate) fn sys_kill(&self, pid: u32, signal: Signal) -> Result<(), Errno> {
        self.change(|o, _| o.signal_process(pid, signal, true))
    }

    /// `kill(-pgid, signal)` (the simulated kernels' shared call).
    pub(crate) fn sys_kill_group(&self, pgid: u32, signal: Signal) -> Result<(), Errno> {
        self.change(|o, _| o.signal_group(pgid, signal))
    }

    /// `getpgid(pid)` (the simulated kernels' shared call).
    pub(crate) fn sys_getpgid(&self, pid: u32) -> Result<u32, Errno> {
        self.lock().0.process_group(pid)
    }

    /// Start a simulated child for `cmd` (the simulated kernels' `Command::spawn`: it records
    /// the command; no stdio).
    pub(crate) fn sys_spawn(
        &self,
        cmd: &ChildCommand<'_>,
        how: SpawnHow,
    ) -> Result<crate::child::SpawnedProcess, Errno> {
        let pid = self.change(|o, _| o.spawn_command(cmd, how))?;
        Ok(crate::child::SpawnedProcess {
            pid,
            stdin: None,
            stdout: None,
            stderr: None,
        })
    }

    /// Start a simulated child process of the program under test; it runs until
    /// [`exit_child`](Self::exit_child) or a signal ends it.
    pub fn spawn_child(&self) -> Result<u32, Errno> {
        self.change(|o, _| o.spawn_process(true))
    }

    /// Start a simulated process that is not a child of the program under test.
    pub fn spawn_foreign(&self) -> Result<u32, Errno> {
        self.change(|o, _| o.spawn_process(false))
    }

    /// Start a simulated process in process group `pgid` that is not a child of the program
    /// under test (a grandchild a service started, say): signalling the group reaches it.
    pub fn spawn_in_group(&self, pgid: u32) -> Result<u32, Errno> {
        self.change(|o, _| {
            o.process_group(pgid)?;
            let pid = o.spawn_process(false)?;
            if let Some(p) = o.proc_mut(pid) {
                p.pgid = pgid;
            }
            Ok(pid)
        })
    }

    /// The living (running or stopped) processes of group `pgid`.
    pub fn group_members(&self, pgid: u32) -> Vec<u32> {
        let g = self.lock();
        g.0.procs
            .iter()
            .filter(|p| p.pgid == pgid && p.state == ProcState::Running)
            .map(|p| p.pid)
            .collect()
    }

    /// `kill(pid, signal)` from another process: delivered as the module's documentation
    /// says (a zombie takes it without effect; `ESRCH` once reaped).
    pub fn kill(&self, pid: u32, signal: Signal) -> Result<(), Errno> {
        self.sys_kill(pid, signal)
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

    /// Whether a simulated process is still running (a stopped one is).
    pub fn is_running(&self, pid: u32) -> bool {
        self.lock()
            .0
            .proc(pid)
            .is_some_and(|p| p.state == ProcState::Running)
    }

    /// Whether a simulated process is stopped (by `SIGSTOP` or another stop signal).
    pub fn is_stopped(&self, pid: u32) -> bool {
        self.lock().0.proc(pid).is_some_and(|p| p.stopped)
    }

    /// Whether a simulated process has exited and not been reaped (a zombie).
    pub fn is_zombie(&self, pid: u32) -> bool {
        self.lock()
            .0
            .proc(pid)
            .is_some_and(|p| matches!(p.state, ProcState::Exited(_)))
    }

    /// What a child spawned through a loop was started as; `None` for an unknown pid (a
    /// child made with [`spawn_child`](Self::spawn_child) has an empty program).
    pub fn child_command(&self, pid: u32) -> Option<SimCommand> {
        self.lock().0.proc(pid).map(Proc::command)
    }

    /// A process's process group (`getpgid`); `ESRCH` once it is reaped.
    pub fn process_group(&self, pid: u32) -> Result<u32, Errno> {
        self.lock().0.process_group(pid)
    }

    /// Make a simulated process ignore, catch, or take the default action of `signal` (as
    /// its own `sigaction` would). `EINVAL` for `SIGKILL` and `SIGSTOP` (sigaction(2)),
    /// `ESRCH` for a process that has exited.
    pub fn set_disposition(
        &self,
        pid: u32,
        signal: Signal,
        disposition: SimDisposition,
    ) -> Result<(), Errno> {
        if signal == Signal::KILL || signal == Signal::STOP {
            return Err(Errno::INVAL);
        }
        self.change(|o, _| {
            let p = o
                .proc_mut(pid)
                .filter(|p| p.state == ProcState::Running)
                .ok_or(Errno::SRCH)?;
            p.ignored.remove(signal);
            p.caught.remove(signal);
            match disposition {
                SimDisposition::Default => {}
                SimDisposition::Ignore => {
                    p.ignored.add(signal);
                }
                SimDisposition::Catch => {
                    p.caught.add(signal);
                }
            }
            Ok(())
        })
    }

    /// The signals a process received, oldest first (the latest 32; blocked, ignored and
    /// caught ones included).
    pub fn signals_received(&self, pid: u32) -> Vec<Signal> {
        let g = self.lock();
        let Some(p) = g.0.proc(pid) else {
            return Vec::new();
        };
        let n = p.received.min(RECEIVED as u64);
        (p.received - n..p.received)
            .map(|i| Signal::from_raw(p.log[(i % RECEIVED as u64) as usize]))
            .collect()
    }

    /// How many signals a process's handlers caught (see [`SimDisposition::Catch`]).
    pub fn signals_caught(&self, pid: u32) -> u64 {
        self.lock().0.proc(pid).map_or(0, |p| p.caught_count)
    }

    /// The signals waiting in a process because it has them blocked (it was spawned without a
    /// clean signal state while the program had them blocked).
    pub fn signals_pending_in(&self, pid: u32) -> SignalSet {
        self.lock()
            .0
            .proc(pid)
            .map_or(SignalSet::new(), |p| p.pending)
    }

    /// Make every later spawn of `program` fail with `errno` (as `execve` fails with
    /// `ENOENT` for a program that does not exist); up to four programs at once. `NOMEM`
    /// when four are set already.
    pub fn fail_spawns_of(&self, program: impl Into<OsString>, errno: Errno) -> Result<(), Errno> {
        let program = program.into();
        self.change(|o, _| {
            let slot = o
                .failing
                .iter_mut()
                .find(|f| f.is_none())
                .ok_or(Errno::NOMEM)?;
            *slot = Some((program, errno));
            Ok(())
        })
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

    fn spawn(w: &SimWorld<()>, cmd: &mut std::process::Command, reset: bool) -> u32 {
        let how = SpawnHow {
            reset: reset.then(SignalSet::new),
            new_group: false,
        };
        w.sys_spawn(&ChildCommand::Command(cmd), how).unwrap().pid
    }

    fn signaled(signal: Signal, core_dumped: bool) -> Option<ChildStatus> {
        Some(ChildStatus::Signaled {
            signal,
            core_dumped,
        })
    }

    /// signal(7)'s default actions: Term, Core, Ign, Stop (and SIGCONT continuing).
    #[test]
    fn default_actions_follow_signal_7() {
        let w = world();
        let t = w.spawn_child().unwrap();
        w.kill(t, Signal::TERM).unwrap();
        assert_eq!(w.reap(t), Ok(signaled(Signal::TERM, false)));
        let q = w.spawn_child().unwrap();
        w.kill(q, Signal::QUIT).unwrap();
        assert_eq!(w.reap(q), Ok(signaled(Signal::QUIT, true)));
        let i = w.spawn_child().unwrap();
        for sig in [Signal::CHLD, Signal::WINCH, Signal::URG, Signal::CONT] {
            w.kill(i, sig).unwrap();
        }
        assert!(w.is_running(i) && !w.is_stopped(i));
        w.kill(i, Signal::TSTP).unwrap();
        assert!(w.is_stopped(i) && w.is_running(i), "stopped, not exited");
        assert_eq!(w.reap(i), Ok(None));
        w.kill(i, Signal::CONT).unwrap();
        assert!(!w.is_stopped(i));
        w.kill(i, Signal::STOP).unwrap();
        // A fatal signal ends a stopped process (Linux's complete_signal).
        w.kill(i, Signal::TERM).unwrap();
        assert_eq!(w.reap(i), Ok(signaled(Signal::TERM, false)));
        assert_eq!(
            w.signals_received(i),
            vec![
                Signal::CHLD,
                Signal::WINCH,
                Signal::URG,
                Signal::CONT,
                Signal::TSTP,
                Signal::CONT,
                Signal::STOP,
                Signal::TERM
            ]
        );
    }

    /// Stopping and continuing send SIGCHLD with CLD_STOPPED and CLD_CONTINUED.
    #[test]
    fn stop_and_continue_are_reported_with_sigchld() {
        let w = world();
        w.block_signal(Signal::CHLD);
        let c = w.spawn_child().unwrap();
        let chld = SignalSet::of(&[Signal::CHLD]);
        w.kill(c, Signal::STOP).unwrap();
        let info = w.lock().0.take_signal(chld).unwrap();
        assert_eq!((info.pid(), info.code()), (c as i32, CLD_STOPPED));
        w.kill(c, Signal::STOP).unwrap();
        assert!(
            w.lock().0.take_signal(chld).is_none(),
            "no change, no report"
        );
        w.kill(c, Signal::CONT).unwrap();
        let info = w.lock().0.take_signal(chld).unwrap();
        assert_eq!((info.pid(), info.code()), (c as i32, CLD_CONTINUED));
    }

    /// sigaction(2): SIGKILL and SIGSTOP cannot be caught or ignored; others can, and the
    /// default comes back.
    #[test]
    fn dispositions_ignore_catch_and_default() {
        let w = world();
        let c = w.spawn_child().unwrap();
        for sig in [Signal::KILL, Signal::STOP] {
            assert_eq!(
                w.set_disposition(c, sig, SimDisposition::Ignore),
                Err(Errno::INVAL)
            );
        }
        w.set_disposition(c, Signal::TERM, SimDisposition::Ignore)
            .unwrap();
        w.set_disposition(c, Signal::HUP, SimDisposition::Catch)
            .unwrap();
        w.kill(c, Signal::TERM).unwrap();
        w.kill(c, Signal::HUP).unwrap();
        w.kill(c, Signal::HUP).unwrap();
        assert!(w.is_running(c));
        assert_eq!(w.signals_caught(c), 2);
        w.set_disposition(c, Signal::HUP, SimDisposition::Default)
            .unwrap();
        w.kill(c, Signal::HUP).unwrap();
        assert_eq!(w.reap(c), Ok(signaled(Signal::HUP, false)));
        assert_eq!(
            w.set_disposition(c, Signal::TERM, SimDisposition::Ignore),
            Err(Errno::SRCH),
            "reaped"
        );
        let k = w.spawn_child().unwrap();
        w.set_disposition(k, Signal::TERM, SimDisposition::Ignore)
            .unwrap();
        w.kill(k, Signal::KILL).unwrap();
        assert_eq!(w.reap(k), Ok(signaled(Signal::KILL, false)));
    }

    /// kill(2) on a zombie succeeds without effect; once reaped it is ESRCH.
    #[test]
    fn a_zombie_takes_kill_and_a_reaped_process_is_gone() {
        let w = world();
        let c = w.spawn_child().unwrap();
        w.exit_child(c, ChildStatus::Exited(0)).unwrap();
        assert!(w.is_zombie(c));
        assert_eq!(w.kill(c, Signal::TERM), Ok(()));
        assert_eq!(
            w.change(|o, _| o.signal_process(c, Signal::TERM, false)),
            Err(Errno::SRCH),
            "pidfd_send_signal on an exited process"
        );
        assert_eq!(w.reap(c), Ok(Some(ChildStatus::Exited(0))));
        assert_eq!(w.kill(c, Signal::TERM), Err(Errno::SRCH));
    }

    /// A child spawned without a clean signal state inherits the program's mask: a blocked
    /// signal waits in it and does nothing (what made `signal_child(TERM)` a no-op before
    /// children got a clean state); a clean child dies of it.
    #[test]
    fn an_inherited_mask_keeps_a_signal_pending_in_the_child() {
        let w = world();
        w.block_signal(Signal::TERM);
        let inherit = spawn(&w, std::process::Command::new("svc").arg("-x"), false);
        let clean = spawn(&w, &mut std::process::Command::new("svc"), true);
        w.kill(inherit, Signal::TERM).unwrap();
        w.kill(clean, Signal::TERM).unwrap();
        assert!(w.is_running(inherit));
        assert_eq!(
            w.signals_pending_in(inherit),
            SignalSet::of(&[Signal::TERM])
        );
        assert_eq!(w.reap(clean), Ok(signaled(Signal::TERM, false)));
        let c = w.child_command(inherit).unwrap();
        assert_eq!(
            (c.program.as_os_str(), c.args.len()),
            (OsStr::new("svc"), 1)
        );
        assert!(!c.clean_signals && w.child_command(clean).unwrap().clean_signals);
    }

    /// The command line is recorded up to 256 bytes, then marked cut short.
    #[test]
    fn a_long_command_line_is_truncated_and_says_so() {
        let w = world();
        let long = "a".repeat(100);
        let c = spawn(
            &w,
            std::process::Command::new("prog").args([&long, &long, &long]),
            true,
        );
        let cmd = w.child_command(c).unwrap();
        assert_eq!(cmd.program, OsStr::new("prog"));
        assert_eq!(cmd.args, vec![OsString::from(&long), OsString::from(&long)]);
        assert!(cmd.truncated);
        let d = spawn(&w, std::process::Command::new("prog").arg(&long), true);
        assert!(!w.child_command(d).unwrap().truncated);
    }
}
