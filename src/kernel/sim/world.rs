//! The simulated world: fds with readiness, virtual clocks, fault injection, and the lock and
//! condition variable every simulated kernel shares.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::child::ChildStatus;
use crate::error::Errno;
use crate::interest::Readiness;
use crate::signal::{SigInfo, Signal, SignalSet};
use crate::timer::{Clock, duration_ns, system_ns};

/// Signal instances the simulated process can have pending at once (`RLIMIT_SIGPENDING`).
pub(crate) const SIGNAL_QUEUE: usize = 1024;
/// Processes the simulation can track.
pub(crate) const MAX_PROCESSES: usize = 4096;
/// The first simulated pid.
const FIRST_PID: u32 = 10_000;
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

/// Bytes a simulated pipe or socket buffers before writes would block.
pub(crate) const PIPE_CAPACITY: u64 = 65536;

/// A simulated kernel call that a fault can be injected into.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum SimCall {
    /// `epoll_create1`.
    EpollCreate,
    /// `epoll_ctl(EPOLL_CTL_ADD)`.
    EpollCtlAdd,
    /// `epoll_ctl(EPOLL_CTL_MOD)`.
    EpollCtlMod,
    /// `epoll_ctl(EPOLL_CTL_DEL)`.
    EpollCtlDel,
    /// `epoll_wait`.
    EpollWait,
    /// `timerfd_create`.
    TimerfdCreate,
    /// `timerfd_settime`.
    TimerfdSettime,
    /// `eventfd`.
    EventfdCreate,
    /// `read` on an eventfd.
    EventfdRead,
    /// `write` on an eventfd.
    EventfdWrite,
    /// The `Sim` backend's fd registration.
    SimAddFd,
    /// The `Sim` backend's registration change.
    SimModifyFd,
    /// The `Sim` backend's deregistration.
    SimRemoveFd,
    /// The `Sim` backend's deadline change.
    SimSetDeadline,
    /// The `Sim` backend's wait.
    SimWait,
    /// `signalfd` (create or change the mask).
    Signalfd,
    /// Reading one signal instance.
    SignalfdRead,
    /// `pidfd_open`.
    PidfdOpen,
    /// `waitid`.
    Waitid,
    /// Sending a signal to a child (`pidfd_send_signal` or `kill`).
    SignalChild,
    /// Starting a process.
    Spawn,
    /// `kqueue`.
    Kqueue,
    /// `kevent` with a change list.
    KeventChange,
    /// One `EV_ADD` inside a `kevent` change list: fails that change alone (its receipt, or
    /// the call where there is no room for one), as a kernel out of knote memory would.
    KnoteAdd,
    /// `kevent` waiting for events.
    KeventWait,
    /// `fstat`.
    Fstat,
}

/// A fault to inject: fail a call with `errno`, after letting `skip` calls through, `times`
/// times in a row.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct Fault {
    /// The error the call returns.
    pub errno: Errno,
    /// Calls that succeed before the first failure.
    pub skip: u32,
    /// Failures before the fault is spent (`u32::MAX`: never spent).
    pub times: u32,
}

impl Fault {
    /// Fail the next call once.
    pub fn once(errno: Errno) -> Fault {
        Fault {
            errno,
            skip: 0,
            times: 1,
        }
    }
    /// Fail every call from now on.
    pub fn always(errno: Errno) -> Fault {
        Fault {
            errno,
            skip: 0,
            times: u32::MAX,
        }
    }
    /// Fail the `n`th call from now (0 is the next one), once.
    pub fn nth(n: u32, errno: Errno) -> Fault {
        Fault {
            errno,
            skip: n,
            times: 1,
        }
    }
}

const MAX_FAULTS: usize = 16;

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    PipeRead,
    PipeWrite,
    Socket,
    File,
}

#[derive(Copy, Clone, Debug)]
pub(crate) struct Object {
    pub(crate) kind: Kind,
    peer: RawFd,
    pub(crate) open: bool,
    /// Bytes readable at this end.
    rx: u64,
    /// This end will send no more (shutdown(SHUT_WR) or close).
    shut_wr: bool,
    error: bool,
    /// Bumped on every change that can make this end newly ready (edge-triggered reports).
    pub(crate) changed: u64,
    /// Which object this is: a registration made on an fd number belongs to the object that
    /// had the number then, not to a later one given the same number.
    pub(crate) serial: u64,
}

/// The simulated objects, clocks, signals, processes and fault plan.
pub struct Objects {
    table: Vec<Option<Object>>,
    clocks: [u64; 2],
    seq: u64,
    faults: heapless::Vec<(SimCall, Fault), MAX_FAULTS>,
    /// The simulated thread signal mask.
    blocked: SignalSet,
    /// Pending instances in arrival order.
    pending: Vec<SigInfo>,
    procs: Vec<Proc>,
    next_pid: u32,
    /// Delivery attempts per signal number, blocked or not (kqueue's `EVFILT_SIGNAL` counts
    /// these).
    attempts: [u64; 128],
}

impl Objects {
    fn new() -> Self {
        Objects {
            table: Vec::new(),
            // Virtual boot 1000 s ago; wall clock 2026-01-01T00:00:00Z.
            clocks: [1_000_000_000_000, 1_767_225_600_000_000_000],
            seq: 1,
            faults: heapless::Vec::new(),
            blocked: SignalSet::new(),
            pending: Vec::with_capacity(SIGNAL_QUEUE),
            procs: Vec::with_capacity(MAX_PROCESSES),
            next_pid: FIRST_PID,
            attempts: [0; 128],
        }
    }

    /// How many times `signal` was sent to the simulated process.
    pub(crate) fn signal_attempts(&self, signal: Signal) -> u64 {
        usize::try_from(signal.raw())
            .ok()
            .and_then(|i| self.attempts.get(i))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn blocked(&self) -> SignalSet {
        self.blocked
    }

    /// Queue a signal instance for the simulated process. A signal that is not blocked is
    /// taken by its default action (here: dropped); a standard signal already pending
    /// coalesces (POSIX); real-time instances queue up to `SIGNAL_QUEUE` (then `EAGAIN`).
    pub(crate) fn raise(&mut self, info: SigInfo) -> Result<(), Errno> {
        let sig = info.signal();
        if let Some(a) = usize::try_from(sig.raw())
            .ok()
            .and_then(|i| self.attempts.get_mut(i))
        {
            *a += 1;
        }
        if !self.blocked.contains(sig) {
            return Ok(());
        }
        if !sig.is_realtime() && self.pending.iter().any(|p| p.signal() == sig) {
            return Ok(());
        }
        if self.pending.len() >= self.pending.capacity() {
            return Err(Errno::AGAIN);
        }
        self.pending.push(info);
        self.next_seq();
        Ok(())
    }

    /// Whether an instance of a signal in `armed` is pending.
    pub(crate) fn signal_pending(&self, armed: SignalSet) -> bool {
        self.pending.iter().any(|p| armed.contains(p.signal()))
    }

    /// Take the first instance of the lowest-numbered pending signal in `armed` (the order a
    /// kernel dequeues them in).
    pub(crate) fn take_signal(&mut self, armed: SignalSet) -> Option<SigInfo> {
        let mut present = SignalSet::new();
        for p in &self.pending {
            if armed.contains(p.signal()) {
                present.add(p.signal());
            }
        }
        let sig = present.lowest()?;
        let i = self.pending.iter().position(|p| p.signal() == sig)?;
        Some(self.pending.remove(i))
    }

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

    pub(crate) fn now(&self, clock: Clock) -> u64 {
        self.clocks[clock.index()]
    }

    /// The world's change count.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Advance both clocks by `ns`.
    pub(crate) fn advance(&mut self, ns: u64) {
        for c in &mut self.clocks {
            *c = c.saturating_add(ns);
        }
    }

    /// Consume one call of `call` against the fault plan.
    pub(crate) fn check(&mut self, call: SimCall) -> Result<(), Errno> {
        let mut result = Ok(());
        let mut spent = None;
        for (i, (c, f)) in self.faults.iter_mut().enumerate() {
            if *c != call {
                continue;
            }
            if f.skip > 0 {
                f.skip -= 1;
                continue;
            }
            result = Err(f.errno);
            if f.times != u32::MAX {
                f.times -= 1;
                if f.times == 0 {
                    spent = Some(i);
                }
            }
            break;
        }
        if let Some(i) = spent {
            self.faults.remove(i);
        }
        result
    }

    pub(crate) fn get(&self, fd: RawFd) -> Option<&Object> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.table.get(i))
            .and_then(|o| o.as_ref())
    }

    fn get_mut(&mut self, fd: RawFd) -> Option<&mut Object> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.table.get_mut(i))
            .and_then(|o| o.as_mut())
    }

    fn put(&mut self, fd: RawFd, obj: Object) {
        let Ok(i) = usize::try_from(fd) else { return };
        if self.table.len() <= i {
            self.table.resize(i + 1, None);
        }
        // The number is free again, so whatever had it was closed (its `OwnedFd` dropped
        // without `close`): its peer loses it as on a real close.
        self.sever(fd);
        self.table[i] = Some(obj);
    }

    /// The object at `fd` is gone: a peer linked to it is linked to nothing.
    fn sever(&mut self, fd: RawFd) {
        let Some(obj) = self.get_mut(fd) else { return };
        obj.open = false;
        obj.shut_wr = true;
        let peer = core::mem::replace(&mut obj.peer, -1);
        // The link goes with the file: a new object that later gets this fd number is not
        // the old peer's peer (a pipe's ends are objects, not numbers).
        if let Some(p) = self.get_mut(peer).filter(|p| p.peer == fd) {
            p.peer = -1;
        }
        self.touch(fd);
        self.touch(peer);
    }

    /// The identity of the open object at `fd` (see [`Object::serial`]).
    pub(crate) fn serial(&self, fd: RawFd) -> Option<u64> {
        self.get(fd).filter(|o| o.open).map(|o| o.serial)
    }

    fn touch(&mut self, fd: RawFd) {
        let s = self.next_seq();
        if let Some(o) = self.get_mut(fd) {
            o.changed = s;
        }
    }

    /// Whether `fd` is a simulated object that is still open.
    pub(crate) fn is_open(&self, fd: RawFd) -> bool {
        self.get(fd).is_some_and(|o| o.open)
    }

    /// The readiness of `fd` as a poll would report it, or `None` if it is not an open
    /// simulated object.
    pub(crate) fn readiness(&self, fd: RawFd) -> Option<Readiness> {
        let o = self.get(fd).filter(|o| o.open)?;
        let peer = self.get(o.peer);
        let peer_open = peer.is_some_and(|p| p.open);
        let mut r = Readiness::EMPTY;
        match o.kind {
            Kind::File => r = Readiness::READABLE | Readiness::WRITABLE,
            Kind::PipeRead => {
                // pipe(7)/pipe_poll: readable while data is buffered; hang-up once no writer
                // is left (an empty pipe with no writer reports only the hang-up).
                if o.rx > 0 {
                    r |= Readiness::READABLE;
                }
                if !peer_open {
                    r |= Readiness::HANGUP;
                }
            }
            Kind::PipeWrite => {
                // Writable while there is room; error once no reader is left.
                let room = peer.is_some_and(|p| p.rx < PIPE_CAPACITY);
                if room || !peer_open {
                    r |= Readiness::WRITABLE;
                }
                if !peer_open {
                    r |= Readiness::ERROR;
                }
            }
            Kind::Socket => {
                // unix(7) stream sockets: readable with data or after the peer's shutdown,
                // read-closed after the peer's shutdown, hang-up once the peer is gone.
                let peer_shut = !peer_open || peer.is_some_and(|p| p.shut_wr);
                if o.rx > 0 || peer_shut {
                    r |= Readiness::READABLE;
                }
                if peer_shut {
                    r |= Readiness::READ_CLOSED;
                }
                if !peer_open {
                    r |= Readiness::HANGUP;
                }
                if !peer_open || peer.is_some_and(|p| p.rx < PIPE_CAPACITY) {
                    r |= Readiness::WRITABLE;
                }
            }
        }
        if o.error {
            r |= Readiness::ERROR;
        }
        Some(r)
    }
}

pub(crate) struct Shared<X> {
    state: Mutex<(Objects, X)>,
    changed: Condvar,
}

/// A simulated world of fds, clocks and faults, plus the tables of the kernel interface `X`
/// that runs on it. Cloning gives another handle to the same world.
pub struct SimWorld<X> {
    pub(crate) shared: Arc<Shared<X>>,
}

impl<X> Clone for SimWorld<X> {
    fn clone(&self) -> Self {
        SimWorld {
            shared: self.shared.clone(),
        }
    }
}

impl<X> core::fmt::Debug for SimWorld<X> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SimWorld")
    }
}

/// A real pipe whose fds stand for simulated objects (close-on-exec, so spawned processes do
/// not inherit them).
/// An empty vector with room for `n` entries, or `ENOMEM` (simulated kernels reserve their
/// tables when an instance is created, as a kernel allocates its object).
pub(crate) fn reserved<T>(n: usize) -> Result<Vec<T>, Errno> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Errno::NOMEM)?;
    Ok(v)
}

fn placeholder_pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    // `pipe2(O_CLOEXEC)` where it exists (also what Miri supports); macOS has only `pipe`.
    #[cfg(not(target_vendor = "apple"))]
    {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(Errno::from_rustix)
    }
    #[cfg(target_vendor = "apple")]
    {
        let (r, w) = rustix::pipe::pipe().map_err(Errno::from_rustix)?;
        for fd in [&r, &w] {
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)
                .map_err(Errno::from_rustix)?;
        }
        Ok((r, w))
    }
}

impl<X> SimWorld<X> {
    /// `kill(pid, signal)` on a simulated process (the simulated kernels' shared call).
    pub(crate) fn sys_kill(&self, pid: u32, signal: Signal) -> Result<(), Errno> {
        self.change(|o, _| {
            o.check(SimCall::SignalChild)?;
            o.signal_process(pid, signal, true)
        })
    }

    /// Start a simulated child (the simulated kernels' `Command::spawn`: no stdio).
    pub(crate) fn sys_spawn(&self) -> Result<crate::child::SpawnedProcess, Errno> {
        let pid = self.change(|o, _| {
            o.check(SimCall::Spawn)?;
            o.spawn_process(true)
        })?;
        Ok(crate::child::SpawnedProcess {
            pid,
            stdin: None,
            stdout: None,
            stderr: None,
        })
    }

    pub(crate) fn with_tables(x: X) -> Self {
        SimWorld {
            shared: Arc::new(Shared {
                state: Mutex::new((Objects::new(), x)),
                changed: Condvar::new(),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, (Objects, X)> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the world and wake any simulated wait, since something may have changed.
    pub(crate) fn change<R>(&self, f: impl FnOnce(&mut Objects, &mut X) -> R) -> R {
        let mut g = self.lock();
        let (o, x) = &mut *g;
        let r = f(o, x);
        drop(g);
        self.shared.changed.notify_all();
        r
    }

    /// Block a simulated wait: `step` looks at the world and returns `Ok(r)` when the wait is
    /// over, or `Err(next)` with the monotonic time of the next deadline it knows of. With
    /// nothing ready, virtual time jumps to the earlier of that deadline and the end of the
    /// timeout; with neither, the wait sleeps (for real) until another thread changes the
    /// world. `Duration::ZERO` never sleeps or advances time.
    pub(crate) fn wait_with<R>(
        &self,
        timeout: Option<Duration>,
        mut step: impl FnMut(&mut Objects, &mut X, bool) -> Result<R, Option<u64>>,
    ) -> R {
        let mut g = self.lock();
        let end = timeout.map(|d| g.0.now(Clock::Monotonic).saturating_add(duration_ns(d)));
        loop {
            let (o, x) = &mut *g;
            let timed_out = end.is_some_and(|e| o.now(Clock::Monotonic) >= e);
            match step(o, x, timed_out) {
                Ok(r) => return r,
                Err(next) => {
                    let target = match (next, end) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    match target {
                        Some(t) => {
                            let now = o.now(Clock::Monotonic);
                            if t > now {
                                o.advance(t - now);
                            } else if timed_out {
                                // The step saw the timeout and still wants to wait: give up.
                                // (Steps return Ok on timeout; this guards a buggy step.)
                                o.advance(1);
                            }
                        }
                        None => {
                            g = self
                                .shared
                                .changed
                                .wait(g)
                                .unwrap_or_else(|p| p.into_inner());
                        }
                    }
                }
            }
        }
    }

    /// A simulated pipe: `(read end, write end)`.
    pub fn pipe(&self) -> Result<(OwnedFd, OwnedFd), Errno> {
        let (r, w) = placeholder_pair()?;
        let (rn, wn) = (r.as_raw_fd(), w.as_raw_fd());
        self.change(|o, _| {
            let s = o.next_seq();
            let mk = |kind, peer| Object {
                kind,
                peer,
                open: true,
                rx: 0,
                shut_wr: false,
                error: false,
                changed: s,
                serial: s,
            };
            o.put(rn, mk(Kind::PipeRead, wn));
            o.put(wn, mk(Kind::PipeWrite, rn));
        });
        Ok((r, w))
    }

    /// A simulated connected stream socket pair.
    pub fn socketpair(&self) -> Result<(OwnedFd, OwnedFd), Errno> {
        let (a, b) = placeholder_pair()?;
        let (an, bn) = (a.as_raw_fd(), b.as_raw_fd());
        self.change(|o, _| {
            let s = o.next_seq();
            let mk = |peer| Object {
                kind: Kind::Socket,
                peer,
                open: true,
                rx: 0,
                shut_wr: false,
                error: false,
                changed: s,
                serial: s,
            };
            o.put(an, mk(bn));
            o.put(bn, mk(an));
        });
        Ok((a, b))
    }

    /// A simulated regular file (always readable and writable; epoll refuses it).
    pub fn regular_file(&self) -> Result<OwnedFd, Errno> {
        let (f, _other) = placeholder_pair()?;
        let n = f.as_raw_fd();
        self.change(|o, _| {
            let s = o.next_seq();
            o.put(
                n,
                Object {
                    kind: Kind::File,
                    peer: -1,
                    open: true,
                    rx: 0,
                    shut_wr: false,
                    error: false,
                    changed: s,
                    serial: s,
                },
            );
        });
        Ok(f)
    }

    /// Write `n` bytes into a pipe's write end or a socket. Returns how many fit (`AGAIN` if
    /// none, `Errno::PIPE` once the reader is gone, `BADF` for a closed or
    /// foreign fd).
    pub fn write(&self, fd: &impl AsRawFd, n: u64) -> Result<u64, Errno> {
        let fd = fd.as_raw_fd();
        self.change(|o, _| {
            let obj = *o.get(fd).filter(|x| x.open).ok_or(Errno::BADF)?;
            if !matches!(obj.kind, Kind::PipeWrite | Kind::Socket) || obj.shut_wr {
                return Err(Errno::BADF);
            }
            let peer = o.get_mut(obj.peer).filter(|p| p.open).ok_or(Errno::PIPE)?;
            let room = PIPE_CAPACITY - peer.rx.min(PIPE_CAPACITY);
            let put = n.min(room);
            if put == 0 && n > 0 {
                return Err(Errno::AGAIN);
            }
            peer.rx += put;
            o.touch(obj.peer);
            Ok(put)
        })
    }

    /// Read up to `max` bytes from a pipe's read end or a socket. `Ok(0)` is end-of-file;
    /// `AGAIN` means nothing is buffered yet.
    pub fn read(&self, fd: &impl AsRawFd, max: u64) -> Result<u64, Errno> {
        let fd = fd.as_raw_fd();
        self.change(|o, _| {
            let obj = *o.get(fd).filter(|x| x.open).ok_or(Errno::BADF)?;
            if !matches!(obj.kind, Kind::PipeRead | Kind::Socket) {
                return Err(Errno::BADF);
            }
            let take = obj.rx.min(max);
            if take == 0 && max > 0 {
                let peer_gone = !o.is_open(obj.peer) || o.get(obj.peer).is_some_and(|p| p.shut_wr);
                return if peer_gone { Ok(0) } else { Err(Errno::AGAIN) };
            }
            if let Some(me) = o.get_mut(fd) {
                me.rx -= take;
            }
            // Room appeared for the writer.
            o.touch(obj.peer);
            Ok(take)
        })
    }

    /// Close the simulated object behind `fd` (the real placeholder stays open until dropped):
    /// its peer sees a hang-up and every simulated kernel drops registrations of it, as the
    /// real ones do when the last reference to a file closes.
    pub fn close(&self, fd: &impl AsRawFd) {
        let fd = fd.as_raw_fd();
        self.change(|o, _| o.sever(fd));
    }

    /// `shutdown(fd, SHUT_WR)` on a socket: the peer reads end-of-file.
    pub fn shutdown_write(&self, fd: &impl AsRawFd) {
        let fd = fd.as_raw_fd();
        self.change(|o, _| {
            let Some(obj) = o.get_mut(fd) else { return };
            obj.shut_wr = true;
            let peer = obj.peer;
            o.touch(peer);
        });
    }

    /// Put (or clear) a pending error on `fd`, as `SO_ERROR` would.
    pub fn set_error(&self, fd: &impl AsRawFd, error: bool) {
        let fd = fd.as_raw_fd();
        self.change(|o, _| {
            if let Some(obj) = o.get_mut(fd) {
                obj.error = error;
            }
            o.touch(fd);
        });
    }

    /// Bytes buffered for reading at `fd`.
    pub fn buffered(&self, fd: &impl AsRawFd) -> u64 {
        let g = self.lock();
        g.0.get(fd.as_raw_fd()).map_or(0, |o| o.rx)
    }

    /// Advance both virtual clocks.
    pub fn advance(&self, by: Duration) {
        self.change(|o, _| o.advance(duration_ns(by)));
    }

    /// Advance both virtual clocks to `ns` on the monotonic scale (no-op if already past).
    pub fn advance_to_ns(&self, ns: u64) {
        self.change(|o, _| {
            let now = o.now(Clock::Monotonic);
            if ns > now {
                o.advance(ns - now);
            }
        });
    }

    /// Step the virtual wall clock (the monotonic clock does not move), as `settimeofday` does.
    pub fn set_system_time(&self, t: SystemTime) {
        self.change(|o, _| o.clocks[Clock::System.index()] = system_ns(t));
    }

    /// The virtual time on `clock` in nanoseconds.
    pub fn now_ns(&self, clock: Clock) -> u64 {
        self.lock().0.now(clock)
    }

    /// Block `signal` in the simulated process (as `pthread_sigmask` would); watched signals
    /// must be blocked, as on a real kernel.
    pub fn block_signal(&self, signal: Signal) {
        self.change(|o, _| {
            o.blocked.add(signal);
        });
    }

    /// Unblock `signal`; pending instances of it are dropped (taken by the default action).
    pub fn unblock_signal(&self, signal: Signal) {
        self.change(|o, _| {
            o.blocked.remove(signal);
            o.pending.retain(|p| p.signal() != signal);
        });
    }

    /// Send a signal instance to the simulated process, as `kill` or `sigqueue` would (`AGAIN`
    /// when the queue of pending instances is full).
    pub fn raise(&self, info: SigInfo) -> Result<(), Errno> {
        self.change(|o, _| o.raise(info))
    }

    /// Signal instances pending in the simulated process.
    pub fn pending_signals(&self) -> usize {
        self.lock().0.pending.len()
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

    /// Inject a fault into `call`. At most 16 faults are pending at once; more are ignored.
    pub fn inject(&self, call: SimCall, fault: Fault) {
        self.change(|o, _| {
            let _ = o.faults.push((call, fault));
        });
    }

    /// Remove every pending fault.
    pub fn clear_faults(&self) {
        self.change(|o, _| o.faults.clear());
    }

    /// Tests: make regular files until one gets the (freed) number `n`; they are returned, the
    /// last one holding `n`, so the caller keeps them open.
    #[cfg(test)]
    pub(crate) fn files_until_number(&self, n: RawFd) -> Vec<OwnedFd> {
        let mut keep = Vec::new();
        for _ in 0..64 {
            let f = self.regular_file().unwrap();
            let hit = f.as_raw_fd() == n;
            keep.push(f);
            if hit {
                return keep;
            }
        }
        panic!("fd number {n} was not reused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> SimWorld<()> {
        SimWorld::with_tables(())
    }

    /// Found by the differential fuzz target: a pipe's read end looked for its writer by fd
    /// number, so a new object given the closed writer's number revived the hang-up's peer.
    #[test]
    fn a_closed_peers_reused_number_is_not_the_peer() {
        let w: SimWorld<()> = SimWorld::with_tables(());
        let (r, wr) = w.pipe().unwrap();
        let n = wr.as_raw_fd();
        w.close(&wr);
        drop(wr);
        let _keep = w.files_until_number(n);
        let g = w.lock();
        assert!(g.0.readiness(r.as_raw_fd()).unwrap().is_hangup());
    }

    #[test]
    fn pipe_readiness_follows_data_and_hangup() {
        let w = world();
        let (r, wr) = w.pipe().unwrap();
        let g = |fd: &OwnedFd| w.lock().0.readiness(fd.as_raw_fd()).unwrap();
        assert_eq!(g(&r), Readiness::EMPTY);
        assert_eq!(g(&wr), Readiness::WRITABLE);
        assert_eq!(w.write(&wr, 3), Ok(3));
        assert_eq!(g(&r), Readiness::READABLE);
        assert_eq!(w.read(&r, 10), Ok(3));
        assert_eq!(w.read(&r, 10), Err(Errno::AGAIN));
        w.close(&wr);
        assert_eq!(g(&r), Readiness::HANGUP);
        assert_eq!(w.read(&r, 10), Ok(0));
        assert!(w.lock().0.readiness(wr.as_raw_fd()).is_none());
    }

    #[test]
    fn broken_pipe_reports_error_to_the_writer() {
        let w = world();
        let (r, wr) = w.pipe().unwrap();
        w.close(&r);
        assert_eq!(
            w.lock().0.readiness(wr.as_raw_fd()),
            Some(Readiness::WRITABLE | Readiness::ERROR)
        );
        assert_eq!(w.write(&wr, 1), Err(Errno::PIPE));
    }

    #[test]
    fn full_pipe_blocks_the_writer() {
        let w = world();
        let (_r, wr) = w.pipe().unwrap();
        assert_eq!(w.write(&wr, PIPE_CAPACITY + 5), Ok(PIPE_CAPACITY));
        assert_eq!(w.write(&wr, 1), Err(Errno::AGAIN));
        assert_eq!(w.lock().0.readiness(wr.as_raw_fd()), Some(Readiness::EMPTY));
    }

    #[test]
    fn socket_shutdown_and_close() {
        let w = world();
        let (a, b) = w.socketpair().unwrap();
        w.shutdown_write(&b);
        let ra = w.lock().0.readiness(a.as_raw_fd()).unwrap();
        assert!(ra.is_readable() && ra.is_read_closed() && !ra.is_hangup());
        w.close(&b);
        let ra = w.lock().0.readiness(a.as_raw_fd()).unwrap();
        assert!(ra.is_hangup() && ra.is_writable());
    }

    #[test]
    fn standard_signals_coalesce_realtime_ones_queue_in_order() {
        let w = world();
        let rt = Signal::rt(0).unwrap();
        w.raise(SigInfo::new(Signal::USR1)).unwrap();
        assert_eq!(
            w.pending_signals(),
            0,
            "not blocked: the default action takes it"
        );
        w.block_signal(Signal::USR1);
        w.block_signal(rt);
        for v in 1..=3 {
            w.raise(SigInfo::new(Signal::USR1).with_value(v)).unwrap();
            w.raise(SigInfo::new(rt).with_value(v)).unwrap();
        }
        assert_eq!(w.pending_signals(), 4);
        let mut g = w.lock();
        let all = SignalSet::of(&[Signal::USR1, rt]);
        assert_eq!(
            g.0.take_signal(all).unwrap().signal(),
            Signal::USR1,
            "lowest number first"
        );
        let vals: Vec<u64> = std::iter::from_fn(|| g.0.take_signal(all))
            .map(|i| i.value_ptr() as u64)
            .collect();
        assert_eq!(vals, vec![1, 2, 3]);
        assert!(g.0.take_signal(all).is_none());
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

    #[test]
    fn faults_skip_then_fail_then_spend() {
        let w = world();
        w.inject(
            SimCall::EpollWait,
            Fault {
                errno: Errno::NOMEM,
                skip: 1,
                times: 2,
            },
        );
        let mut g = w.lock();
        assert_eq!(g.0.check(SimCall::EpollCtlAdd), Ok(()));
        assert_eq!(g.0.check(SimCall::EpollWait), Ok(()));
        assert_eq!(g.0.check(SimCall::EpollWait), Err(Errno::NOMEM));
        assert_eq!(g.0.check(SimCall::EpollWait), Err(Errno::NOMEM));
        assert_eq!(g.0.check(SimCall::EpollWait), Ok(()));
    }

    #[test]
    fn clocks_advance_together_and_wall_clock_steps_alone() {
        let w = world();
        let m0 = w.now_ns(Clock::Monotonic);
        let s0 = w.now_ns(Clock::System);
        w.advance(Duration::from_secs(2));
        assert_eq!(w.now_ns(Clock::Monotonic), m0 + 2_000_000_000);
        assert_eq!(w.now_ns(Clock::System), s0 + 2_000_000_000);
        w.set_system_time(SystemTime::UNIX_EPOCH + Duration::from_secs(5));
        assert_eq!(w.now_ns(Clock::System), 5_000_000_000);
        assert_eq!(w.now_ns(Clock::Monotonic), m0 + 2_000_000_000);
    }
}
