//! The simulated world: what the simulated kernels share, under one lock with a condition
//! variable (so a wait sees one consistent world): simulated files ([`files`]), processes
//! ([`procs`]), the process's signals ([`signals`]) and two virtual clocks (here). Faults are
//! not the world's business: a wrapper around a kernel injects them
//! ([`Faulty`](crate::sim::Faulty)).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::error::Errno;
use crate::signal::{SigInfo, SignalSet};
use crate::timer::{Clock, duration_ns, system_ns};

mod files;
mod procs;
mod signals;

#[allow(unused_imports)]
pub(crate) use files::PIPE_CAPACITY;
pub(crate) use files::{Kind, Object};
pub(crate) use procs::{MAX_PROCESSES, ProcState};
pub use procs::{SimCommand, SimDisposition};

use procs::{FIRST_PID, Proc};
use signals::SIGNAL_QUEUE;

/// The simulated objects, clocks, signals, processes and fault plan.
pub struct Objects {
    table: Vec<Option<Object>>,
    /// Per fd number: the write end of the real pipe whose read end the program holds as
    /// that simulated file (see `files::placeholder`).
    witnesses: Vec<Option<std::os::fd::OwnedFd>>,
    /// What finds the witnesses whose placeholder was dropped.
    reaper: files::Reaper,
    clocks: [u64; 2],
    seq: u64,
    /// The simulated thread signal mask.
    blocked: SignalSet,
    /// Pending instances in arrival order.
    pending: Vec<SigInfo>,
    procs: Vec<Proc>,
    next_pid: u32,
    /// Delivery attempts per signal number, blocked or not (kqueue's `EVFILT_SIGNAL` counts
    /// these).
    attempts: [u64; 128],
    /// Programs whose spawns fail, with the errno they fail with.
    failing: [Option<(std::ffi::OsString, Errno)>; 4],
}

impl Objects {
    fn new() -> Self {
        Objects {
            table: Vec::new(),
            witnesses: Vec::new(),
            reaper: files::Reaper::new(),
            // Virtual boot 1000 s ago; wall clock 2026-01-01T00:00:00Z.
            clocks: [1_000_000_000_000, 1_767_225_600_000_000_000],
            seq: 1,
            blocked: SignalSet::new(),
            pending: Vec::with_capacity(SIGNAL_QUEUE),
            procs: Vec::with_capacity(MAX_PROCESSES),
            next_pid: FIRST_PID,
            attempts: [0; 128],
            failing: [None, None, None, None],
        }
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

impl<X> SimWorld<X> {
    pub(crate) fn with_tables(x: X) -> Self {
        SimWorld {
            shared: Arc::new(Shared {
                state: Mutex::new((Objects::new(), x)),
                changed: Condvar::new(),
            }),
        }
    }

    /// The world, with the files whose placeholders were dropped closed first.
    pub(crate) fn lock(&self) -> MutexGuard<'_, (Objects, X)> {
        let mut g = self.quiet();
        g.0.reap_dropped();
        g
    }

    /// The world as it is, for questions that involve no file (clocks, masks, tables).
    pub(crate) fn quiet(&self) -> MutexGuard<'_, (Objects, X)> {
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
                                // Other waits (other runners) may be due now.
                                self.shared.changed.notify_all();
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
                            g.0.reap_dropped();
                        }
                    }
                }
            }
        }
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
        self.quiet().0.now(clock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> SimWorld<()> {
        SimWorld::with_tables(())
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
