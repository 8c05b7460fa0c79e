//! The `Sim` backend: a deterministic backend with virtual time, for testing the loop core and
//! for programs to test their own handlers without a kernel.
//!
//! It implements [`Backend`] directly over the simulated world: registrations live in a table,
//! readiness comes from the world's simulated fds, deadlines are compared with the virtual
//! clocks. A wait with nothing ready jumps virtual time to the next deadline (or to the end of
//! its timeout) instead of sleeping, so "run until the timer fires" takes no real time; a wait
//! with no deadline and no timeout sleeps for real until another thread changes the world or
//! wakes the loop. Reports follow epoll's rules (level-triggered or one-shot, errors and
//! hang-ups always reported, a disabled registration reports an error or hang-up once), so the
//! behavioural suite passes unchanged on `Sim`, `Epoll<EpollSim>` and the real kernel.
//!
//! ```
//! use dasynq::{EventLoop, FnHandler, Interest, Rearm, FdOptions};
//! use dasynq::sim::Sim;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = Sim::new();
//! let lp = EventLoop::<FnHandler, Sim>::builder().build_with(sim.clone())?;
//! let (r, w) = sim.pipe()?;
//! lp.add_fd(r, Interest::READ, FdOptions::new(), FnHandler::new(|_, _| Rearm::Remove))?;
//! sim.write(&w, 1)?;
//! assert_eq!(lp.poll(), 1);
//! # Ok(()) }
//! ```

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use super::{
    Backend, BackendEvent, ChildHandle, FdMode, KernelError, Registration, Token, WatchedBy,
};
use crate::child::{ChildStatus, SpawnedProcess};
use crate::error::Errno;
use crate::interest::Readiness;
use crate::kernel::sim::{Objects, ProcState, SimWorld};
use crate::signal::{Signal, SignalSet};
use crate::timer::Clock;
use crate::waker::Notify;

const MAX_REGISTRATIONS: usize = 8192;

#[derive(Copy, Clone, Debug)]
struct SimReg {
    fd: RawFd,
    /// A watched child's pid (its exit is reported as readiness), or 0 for an fd.
    child: u32,
    token: Token,
    reg: Registration,
    /// Disarmed after a one-shot report until the next change.
    fired: bool,
    /// The identity of the simulated file registered (a closed file's registration goes
    /// with it; a new file given the same number is not registered).
    serial: u64,
}

/// The `Sim` backend's own tables.
#[derive(Debug)]
pub struct SimTables {
    regs: Vec<SimReg>,
    scratch: Vec<(u64, usize)>,
    deadlines: [Option<u64>; 2],
    notified: bool,
    armed: SignalSet,
    /// Several runners ([`Backend::share_waits`]): a due clock is reported once, to one
    /// waiter, until its deadline is set again (as a one-shot timerfd registration is).
    clock_once: bool,
    clock_reported: [bool; 2],
    /// Run calls holding an events buffer ([`Backend::runners_changed`]).
    holding: u32,
    /// The ends (virtual monotonic ns; `u64::MAX`: none) of the waits blocked while other
    /// holders were not: virtual time moves only once every holder is blocked, and then to
    /// the earliest end or deadline any of them waits for.
    blocked: Vec<u64>,
}

/// The most waits that can be blocked at once (the loop's most runners).
const MAX_BLOCKED: usize = 1024;

/// The deterministic simulated backend. Cloning gives another handle to the same world: keep
/// one to drive the simulation while the loop owns the other.
pub type Sim = SimWorld<SimTables>;

struct SimNotifier(Sim);

impl Notify for SimNotifier {
    fn notify(&self) {
        self.0.change(|_, x| x.notified = true);
    }
}

impl Sim {
    /// A new simulated world with no fds, for the `Sim` backend.
    pub fn new() -> Self {
        let mut regs = Vec::new();
        regs.reserve_exact(MAX_REGISTRATIONS);
        let mut scratch = Vec::new();
        scratch.reserve_exact(MAX_REGISTRATIONS);
        let mut blocked = Vec::new();
        blocked.reserve_exact(MAX_BLOCKED);
        SimWorld::with_tables(SimTables {
            regs,
            scratch,
            deadlines: [None, None],
            notified: false,
            armed: SignalSet::new(),
            clock_once: false,
            clock_reported: [false, false],
            holding: 0,
            blocked,
        })
    }

    /// Registrations the backend holds (for checking that nothing leaked).
    pub fn registered(&self) -> usize {
        self.lock().1.regs.len()
    }

    /// The deadline currently set for `clock`.
    pub fn deadline(&self, clock: Clock) -> Option<u64> {
        self.quiet().1.deadlines[clock.index()]
    }
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

fn kerr(call: &'static str) -> impl Fn(Errno) -> KernelError {
    move |errno| KernelError { call, errno }
}

impl SimTables {
    /// The registration of the file now at `fd`, after dropping those of closed files.
    fn find(&mut self, o: &Objects, fd: RawFd) -> Option<usize> {
        self.prune(o);
        self.regs.iter().position(|r| r.child == 0 && r.fd == fd)
    }

    /// Registrations of files closed since go with them.
    fn prune(&mut self, o: &Objects) {
        self.regs
            .retain(|r| r.child != 0 || o.serial(r.fd) == Some(r.serial));
    }

    /// Readiness and change count of a registration: an fd's, or a child's (readable once it
    /// has exited, like a pidfd).
    fn poll(o: &Objects, r: &SimReg) -> (Readiness, u64) {
        if r.child != 0 {
            return match o.proc(r.child) {
                Some(p) if p.state != ProcState::Running => (Readiness::READABLE, p.changed),
                _ => (Readiness::EMPTY, 0),
            };
        }
        let ready = o.readiness(r.fd).unwrap_or_default();
        (ready, o.get(r.fd).map_or(0, |x| x.changed))
    }

    fn collect(&mut self, o: &Objects, out: &mut Vec<BackendEvent>) {
        out.clear();
        self.prune(o);
        self.scratch.clear();
        for (i, r) in self.regs.iter().enumerate() {
            if r.fired {
                continue;
            }
            let (ready, changed) = Self::poll(o, r);
            if ready.intersects(Readiness::mask_for(r.reg.interest)) {
                self.scratch.push((changed, i));
            }
        }
        self.scratch.sort_unstable();
        let room = out.capacity();
        if self.notified && out.len() < room {
            self.notified = false;
            out.push(BackendEvent::Wake);
        }
        for c in Clock::ALL {
            if let Some(d) = self.deadlines[c.index()] {
                let reported = &mut self.clock_reported[c.index()];
                if o.now(c) >= d && out.len() < room && !*reported {
                    // Like a timerfd: stays due until the deadline is set again (reported
                    // once in all, when shared by several runners).
                    out.push(BackendEvent::Clock(c));
                    *reported = self.clock_once;
                }
            }
        }
        for &(_, i) in &self.scratch {
            if out.len() >= room {
                break;
            }
            let r = &mut self.regs[i];
            let (ready, _) = Self::poll(o, r);
            out.push(BackendEvent::Fd {
                token: r.token,
                ready: ready & Readiness::mask_for(r.reg.interest),
            });
            if r.reg.oneshot || r.reg.interest.is_empty() {
                r.fired = true;
            }
        }
    }

    fn next_deadline(&self, o: &Objects) -> Option<u64> {
        let now = o.now(Clock::Monotonic);
        Clock::ALL
            .iter()
            .filter(|&&c| !self.clock_reported[c.index()])
            .filter_map(|&c| {
                let d = self.deadlines[c.index()]?;
                Some(now.saturating_add(d.saturating_sub(o.now(c))))
            })
            .min()
    }
}

impl Backend for Sim {
    type Events = Vec<BackendEvent>;

    fn new_events(&self, capacity: usize) -> Result<Vec<BackendEvent>, KernelError> {
        let mut v = Vec::new();
        v.try_reserve_exact(capacity.max(1))
            .map_err(|_| KernelError {
                call: "malloc",
                errno: Errno::NOMEM,
            })?;
        Ok(v)
    }

    fn notifier(&self) -> Arc<dyn Notify> {
        Arc::new(SimNotifier(self.clone()))
    }

    fn add_fd(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        reg: Registration,
    ) -> Result<FdMode, KernelError> {
        let fd = fd.as_raw_fd();
        self.change(|o, x| {
            let obj = o.get(fd).filter(|obj| obj.open).ok_or(KernelError {
                call: "sim_add_fd",
                errno: Errno::BADF,
            })?;
            if obj.kind == crate::kernel::sim::Kind::File {
                return Ok(FdMode::Emulated);
            }
            let serial = obj.serial;
            if x.find(o, fd).is_some() {
                return Err(KernelError {
                    call: "sim_add_fd",
                    errno: Errno::EXIST,
                });
            }
            if x.regs.len() == x.regs.capacity() {
                return Err(KernelError {
                    call: "sim_add_fd",
                    errno: Errno::NOSPC,
                });
            }
            x.regs.push(SimReg {
                fd,
                child: 0,
                token,
                reg,
                fired: false,
                serial,
            });
            Ok(FdMode::Native)
        })
    }

    fn modify_fd(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        _from: Registration,
        to: Registration,
    ) -> Result<(), KernelError> {
        let fd = fd.as_raw_fd();
        self.change(|o, x| {
            let i = x.find(o, fd).ok_or(KernelError {
                call: "sim_modify_fd",
                errno: Errno::NOENT,
            })?;
            x.regs[i] = SimReg {
                token,
                reg: to,
                fired: false,
                ..x.regs[i]
            };
            Ok(())
        })
    }

    fn remove_fd(
        &self,
        fd: BorrowedFd<'_>,
        _token: Token,
        _current: Registration,
    ) -> Result<(), KernelError> {
        let fd = fd.as_raw_fd();
        self.change(|o, x| {
            let i = x.find(o, fd).ok_or(KernelError {
                call: "sim_remove_fd",
                errno: Errno::NOENT,
            })?;
            x.regs.swap_remove(i);
            Ok(())
        })
    }

    fn now(&self, clock: Clock) -> u64 {
        self.quiet().0.now(clock)
    }

    fn set_deadline(&self, clock: Clock, deadline: Option<u64>) -> Result<(), KernelError> {
        self.change(|_, x| {
            x.deadlines[clock.index()] = deadline;
            x.clock_reported[clock.index()] = false;
            Ok(())
        })
    }

    fn share_waits(&self) -> Result<(), KernelError> {
        self.change(|_, x| x.clock_once = true);
        Ok(())
    }

    fn runners_changed(&self, holding: u32) {
        // A change: blocked waits look again (the last holder may just have left).
        self.change(|_, x| x.holding = holding);
    }

    fn wait(
        &self,
        events: &mut Vec<BackendEvent>,
        timeout: Option<Duration>,
    ) -> Result<(), KernelError> {
        // This wait's events only, none on error.
        events.clear();
        // This wait's end, and the entry it holds in `blocked` while it sleeps.
        let mut end: Option<Option<u64>> = None;
        let mut listed: Option<u64> = None;
        self.wait_with(timeout, |o, x, timed_out| {
            let now = o.now(Clock::Monotonic);
            let end = *end.get_or_insert_with(|| {
                timeout.map(|d| now.saturating_add(crate::timer::duration_ns(d)))
            });
            if let Some(e) = listed.take() {
                if let Some(at) = x.blocked.iter().position(|&b| b == e) {
                    x.blocked.swap_remove(at);
                }
            }
            x.collect(o, events);
            if o.signal_pending(x.armed) && events.len() < events.capacity() {
                events.push(BackendEvent::SignalsPending);
            }
            if !events.is_empty() || timed_out || timeout == Some(Duration::ZERO) {
                return Ok(());
            }
            let next = x.next_deadline(o);
            if x.holding <= 1 {
                return Err(next);
            }
            // Several runners: virtual time moves only when every holder of a buffer is
            // blocked, then to the earliest end or deadline any blocked wait has.
            let mine = match (next, end) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(u64::MAX),
            };
            let others = x.blocked.iter().copied().min().unwrap_or(u64::MAX);
            let last = x.blocked.len() + 1 >= x.holding as usize;
            let t = mine.min(others);
            if (last && others > now && t != u64::MAX) || x.blocked.len() >= x.blocked.capacity() {
                return Err((t != u64::MAX).then_some(t));
            }
            // Not the last, another wait is due and about to wake, or nothing to wait for:
            // sleep until the world changes (another runner blocks, leaves, or moves time),
            // counted as blocked.
            x.blocked.push(mine);
            listed = Some(mine);
            Err(None)
        });
        Ok(())
    }

    fn for_each_event(&self, events: &Vec<BackendEvent>, mut f: impl FnMut(BackendEvent)) {
        for e in events {
            f(*e);
        }
    }

    fn take_signal(&self) -> Result<Option<crate::signal::SigInfo>, KernelError> {
        self.change(|o, x| Ok(o.take_signal(x.armed)))
    }

    fn signal_blocked(&self, signal: Signal) -> bool {
        self.quiet().0.blocked().contains(signal)
    }

    fn not_blocked_error(&self, signal: Signal) -> crate::Error {
        crate::Error::SimSignalNotBlocked(signal)
    }

    fn arm_signals(&self, set: SignalSet) -> Result<(), KernelError> {
        self.change(|_, x| {
            x.armed = set;
            Ok(())
        })
    }

    fn watch_child(
        &self,
        pid: u32,
        token: Token,
        use_pidfd: bool,
    ) -> Result<ChildHandle, KernelError> {
        self.change(|o, x| {
            o.wait_process(pid, false).map_err(kerr("waitid"))?;
            if !use_pidfd || x.regs.len() == x.regs.capacity() {
                return Ok(ChildHandle::fallback(pid, token));
            }
            let reg = Registration {
                interest: crate::interest::Interest::READ,
                oneshot: false,
            };
            x.regs.push(SimReg {
                fd: -1,
                child: pid,
                token,
                reg,
                fired: false,
                serial: 0,
            });
            Ok(ChildHandle {
                pid,
                token,
                by: WatchedBy::Registered,
            })
        })
    }

    fn reap_child(&self, child: &ChildHandle) -> Result<Option<ChildStatus>, KernelError> {
        self.change(|o, _| match o.wait_process(child.pid, true) {
            Err(Errno::CHILD) => Ok(Some(ChildStatus::Unknown)),
            r => r.map_err(kerr("waitid")),
        })
    }

    fn unwatch_child(&self, child: ChildHandle) {
        if !child.is_fallback() {
            self.change(|_, x| x.regs.retain(|r| r.child != child.pid));
        }
    }

    fn signal_child(&self, child: &ChildHandle, signal: Signal) -> Result<(), KernelError> {
        let fallback = child.is_fallback();
        self.change(|o, _| {
            o.signal_process(child.pid, signal, fallback)
                .map_err(kerr("sim_signal_child"))
        })
    }

    fn signal_child_group(&self, child: &ChildHandle, signal: Signal) -> Result<(), KernelError> {
        self.change(|o, _| {
            o.signal_group(child.pid, signal)
                .map_err(kerr("sim_signal_child_group"))
        })
    }

    fn leads_group(&self, child: &ChildHandle) -> Result<bool, KernelError> {
        self.change(|o, _| {
            o.process_group(child.pid)
                .map(|g| g == child.pid)
                .map_err(kerr("sim_getpgid"))
        })
    }

    fn spawn(
        &self,
        cmd: crate::backend::ChildCommand<'_>,
        how: crate::backend::SpawnHow,
    ) -> Result<SpawnedProcess, KernelError> {
        let pid = self.change(|o, _| o.spawn_command(&cmd, how).map_err(kerr("spawn")))?;
        Ok(SpawnedProcess {
            pid,
            stdin: None,
            stdout: None,
            stderr: None,
        })
    }
}
