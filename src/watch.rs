//! One watcher's state in its pool slot: the lifecycle of each half, and what each kind keeps.
//!
//! Lifecycle per half, tracked explicitly so that every release happens exactly once:
//! `enabled` (armed for the next event), `queued` (an event is pending), `running` (its handler
//! is executing), `removed` (a bidirectional half that returned `Remove`, or the unused second
//! half of other kinds), `parked` (threaded loops: queued while the other half's handler runs,
//! kept off the queue until it returns). Invariant: a queued half is never enabled; a running half is enabled
//! only if its handler asked for that during the call. Per watcher: `running` (some half's
//! handler holds the handler cell), `remove_pending` (removal requested while running, completed
//! when the handler returns), `dirty` (a kernel change failed and is on the retry list).

use std::os::fd::OwnedFd;

use crate::backend::{ChildHandle, Registration};
use crate::child::ChildStatus;
use crate::error::WatchKind;
use crate::interest::{Interest, Readiness};
use crate::signal::Signal;
use crate::timer::Clock;

#[derive(Copy, Clone, Debug)]
pub(crate) struct Half {
    pub(crate) priority: i32,
    pub(crate) enabled: bool,
    pub(crate) queued: bool,
    pub(crate) running: bool,
    pub(crate) removed: bool,
    /// Threaded loops: queued while the other half's handler runs, and kept off the queue
    /// until it returns (then queued again by the returning thread).
    pub(crate) parked: bool,
    /// Readiness pending delivery (fd watchers).
    pub(crate) ready: Readiness,
    /// Readiness delivered by the current call, re-delivered by `Requeue`.
    pub(crate) last: Readiness,
}

impl Half {
    pub(crate) fn new(priority: i32, enabled: bool) -> Self {
        Half {
            priority,
            enabled,
            queued: false,
            running: false,
            removed: false,
            parked: false,
            ready: Readiness::EMPTY,
            last: Readiness::EMPTY,
        }
    }

    pub(crate) fn absent() -> Self {
        Half {
            removed: true,
            ..Half::new(0, false)
        }
    }
}

#[derive(Debug)]
pub(crate) struct FdWatch {
    /// The registered fd, owned by the slot from registration until `detach` hands it back.
    pub(crate) fd: OwnedFd,
    /// Plain watchers: the asked-for directions. Bidirectional: `BOTH`.
    pub(crate) interest: Interest,
    pub(crate) bidi: bool,
    pub(crate) emulated: bool,
    /// The registration the kernel holds.
    pub(crate) kernel: Registration,
    /// The kernel disarmed the registration after a one-shot report.
    pub(crate) fired: bool,
    /// Threaded loops: a report came while the handler ran (after the dispatching thread's
    /// own re-arm, made without the lock), so the registration is disarmed again.
    pub(crate) late: bool,
    /// A change failed: the kernel may hold any part of `kernel` (the union of the old and
    /// the wanted registration), so the next sync sends a change whatever it compares to.
    pub(crate) unsure: bool,
}

#[derive(Copy, Clone, Debug)]
pub(crate) struct TimerWatch {
    pub(crate) clock: Clock,
    pub(crate) deadline: u64,
    pub(crate) interval: u64,
    pub(crate) expirations: u64,
}

#[derive(Copy, Clone, Debug)]
pub(crate) struct WakeWatch {
    pub(crate) cell: u32,
    pub(crate) pending: bool,
}

#[derive(Copy, Clone, Debug)]
pub(crate) struct SignalWatch {
    pub(crate) signal: Signal,
    /// An instance was taken from the kernel and not yet delivered (the instances are held
    /// in the loop's signal tables).
    pub(crate) pending: bool,
    /// Threaded loops: disarmed because reading was blocked for room while it held
    /// instances; armed again once it holds none (see `State::take_signals`).
    pub(crate) stalled: bool,
}

#[derive(Debug)]
pub(crate) struct ChildWatch {
    /// The child being watched, until it is reaped (the handle owns its pidfd).
    pub(crate) watching: Option<ChildHandle>,
    /// A spawn into this reservation is under way (unlocked, on some thread): it is busy.
    pub(crate) spawning: bool,
    /// The pid of the child watched last.
    pub(crate) pid: u32,
    /// Its exit, reaped and not yet reported.
    pub(crate) status: Option<ChildStatus>,
    /// The exit being reported by the running handler (restored by `Requeue`).
    pub(crate) delivered: Option<ChildStatus>,
}

#[derive(Debug)]
pub(crate) enum Detail {
    Fd(FdWatch),
    Timer(TimerWatch),
    Wake(WakeWatch),
    Signal(SignalWatch),
    Child(ChildWatch),
    /// The handler is gone but the kernel refused to deregister the fd: the slot and fd are
    /// kept until a retry succeeds.
    Zombie(FdWatch),
}

#[derive(Debug)]
pub(crate) struct Watch {
    pub(crate) halves: [Half; 2],
    pub(crate) detail: Detail,
    pub(crate) running: bool,
    pub(crate) remove_pending: bool,
    pub(crate) dirty: bool,
}

impl Watch {
    pub(crate) fn new(halves: [Half; 2], detail: Detail) -> Self {
        Watch {
            halves,
            detail,
            running: false,
            remove_pending: false,
            dirty: false,
        }
    }

    pub(crate) fn kind(&self) -> WatchKind {
        match &self.detail {
            Detail::Fd(f) | Detail::Zombie(f) if f.bidi => WatchKind::Bidi,
            Detail::Fd(_) | Detail::Zombie(_) => WatchKind::Fd,
            Detail::Timer(_) => WatchKind::Timer,
            Detail::Wake(_) => WatchKind::Wake,
            Detail::Signal(_) => WatchKind::Signal,
            Detail::Child(_) => WatchKind::Child,
        }
    }

    /// The directions half `h` stands for.
    pub(crate) fn half_interest(&self, h: usize) -> Interest {
        match &self.detail {
            Detail::Fd(f) if f.bidi => {
                if h == 0 {
                    Interest::READ
                } else {
                    Interest::WRITE
                }
            }
            Detail::Fd(f) => f.interest,
            _ => Interest::NONE,
        }
    }

    /// Whether half `h` has something to deliver if enabled.
    pub(crate) fn has_pending(&self, h: usize) -> bool {
        match &self.detail {
            Detail::Fd(f) => f.emulated || !self.halves[h].ready.is_empty(),
            Detail::Timer(t) => t.expirations > 0,
            Detail::Wake(w) => w.pending,
            Detail::Signal(s) => s.pending,
            Detail::Child(c) => c.status.is_some(),
            Detail::Zombie(_) => false,
        }
    }

    /// The interest the kernel should hold for this fd watcher. Level-triggered
    /// (single-threaded) registrations stay armed while a half is queued or running, so a
    /// handler that re-arms costs no system call; one-shot (threaded) registrations are armed
    /// only for halves waiting for an event.
    #[inline]
    pub(crate) fn desired_interest(&self, oneshot: bool) -> Interest {
        let mut m = Interest::NONE;
        for (h, half) in self.halves.iter().enumerate() {
            if half.removed {
                continue;
            }
            let on = if oneshot {
                half.enabled && !half.queued && !half.running
            } else {
                half.enabled || half.queued || half.running
            };
            if on {
                m |= self.half_interest(h);
            }
        }
        m
    }
}
