//! Signal watchers: one per signal per loop. Each watcher holds at most one instance taken from
//! the kernel and not yet delivered; the others stay pending in the kernel, so each handler call
//! gets its own `SigInfo` and none is lost or duplicated while the watcher is queued, running or
//! disabled.
//!
//! Instances are taken one at a time, and only while the next one has somewhere to go: not
//! while an armed signal's watcher already holds one (queued, running, or taken). The one
//! exception is `SIGCHLD` armed for children watched the fallback way: it is read regardless
//! (those children are polled), and an extra instance coalesces into the one its watcher holds,
//! as POSIX lets the kernel do for standard signals. A disabled watcher's signal is disarmed,
//! so its instances wait in the kernel. Otherwise the flavours differ like
//! they do for fds: single-threaded loops keep a signal armed while its watcher is queued or
//! running (so a handler that re-arms costs no `signalfd` call), threaded loops disarm it then.

use std::time::Duration;

use super::State;
use crate::backend::Backend;
use crate::error::{Error, Pool as PoolKind};
use crate::signal::{MAX_SIGNAL, SigInfo, Signal, SignalSet};
use crate::waker::WakeShared;
use crate::watch::{Detail, Half, SignalWatch, Watch};

const NONE: u32 = u32::MAX;

/// Per-signal tables, indexed by signal number.
pub(crate) struct SignalTables {
    /// The slot of the watcher of each signal.
    owner: Box<[u32]>,
    /// The instance each watcher has taken and not yet delivered.
    info: Box<[SigInfo]>,
    /// Signals with a watcher.
    pub(super) watched: SignalSet,
    /// Signals whose watcher is ready for an instance.
    pub(super) ready: SignalSet,
    /// What the backend was last told to report (after a failed change: every signal it may
    /// report, the old set and the wanted one together, until a retry succeeds).
    pub(super) armed: SignalSet,
    pub(super) dirty: bool,
    /// A take failed: every signal stays disarmed through the next wait (bounded to the retry
    /// period), and the retry before the wait after it arms them again.
    pub(super) suspended: Suspension,
    /// The backend said instances were pending while reading was blocked by an armed signal
    /// with no watcher, and a take has not since found the kernel empty: kqueue reports each
    /// delivery once, so the core must look again by itself once reading is possible.
    pub(super) missed: bool,
}

impl SignalTables {
    pub(crate) fn new() -> Option<Self> {
        let n = MAX_SIGNAL as usize + 1;
        let mut owner = Vec::new();
        owner.try_reserve_exact(n).ok()?;
        owner.resize(n, NONE);
        let mut info = Vec::new();
        info.try_reserve_exact(n).ok()?;
        info.resize(n, SigInfo::new(Signal::from_raw(0)));
        Some(SignalTables {
            owner: owner.into_boxed_slice(),
            info: info.into_boxed_slice(),
            watched: SignalSet::new(),
            ready: SignalSet::new(),
            armed: SignalSet::new(),
            dirty: false,
            suspended: Suspension::None,
            missed: false,
        })
    }

    fn owner(&self, sig: Signal) -> Option<u32> {
        let i = usize::try_from(sig.raw()).ok()?;
        self.owner.get(i).copied().filter(|o| *o != NONE)
    }

    pub(super) fn info(&self, sig: Signal) -> SigInfo {
        usize::try_from(sig.raw())
            .ok()
            .and_then(|i| self.info.get(i).copied())
            .unwrap_or(SigInfo::new(sig))
    }

    fn set_owner(&mut self, sig: Signal, owner: u32) {
        if owner == NONE {
            self.watched.remove(sig);
        } else {
            self.watched.add(sig);
        }
        if let Some(o) = usize::try_from(sig.raw())
            .ok()
            .and_then(|i| self.owner.get_mut(i))
        {
            *o = owner;
        }
    }

    fn set_info(&mut self, info: SigInfo) {
        if let Some(slot) = usize::try_from(info.signal().raw())
            .ok()
            .and_then(|i| self.info.get_mut(i))
        {
            *slot = info;
        }
    }
}

impl State {
    /// The signals this loop watches.
    pub(crate) fn watched_signals(&self) -> SignalSet {
        self.signals.watched
    }

    /// Register a signal watcher (enabled, armed at once).
    pub(crate) fn add_signal<B: Backend>(
        &mut self,
        signal: Signal,
        priority: i32,
        backend: &B,
    ) -> Result<u32, Error> {
        if let Some(why) = signal.unwatchable() {
            return Err(Error::InvalidArgument(why));
        }
        if self.signals.owner(signal).is_some() {
            return Err(Error::SignalAlreadyWatched(signal));
        }
        if !backend.signal_blocked(signal) {
            return Err(backend.not_blocked_error(signal));
        }
        let w = Watch::new(
            [Half::new(priority, true), Half::absent()],
            Detail::Signal(SignalWatch {
                signal,
                pending: false,
            }),
        );
        let (index, _) = self
            .slots
            .insert(w)
            .map_err(|_| Error::Capacity(PoolKind::Watchers))?;
        self.signals.set_owner(signal, index);
        self.sync_signal(index, backend);
        Ok(index)
    }

    /// Arm or disarm the watcher's signal according to its state.
    pub(super) fn sync_signal<B: Backend>(&mut self, index: u32, backend: &B) {
        let Some(w) = self.slots.at(index) else {
            return;
        };
        let Detail::Signal(sw) = w.detail else { return };
        let h = &w.halves[0];
        let armed = if h.removed || w.remove_pending {
            false
        } else if self.oneshot {
            h.enabled && !h.queued && !h.running && !sw.pending
        } else {
            h.enabled || h.queued || h.running
        };
        if armed {
            self.signals.ready.add(sw.signal);
        } else {
            self.signals.ready.remove(sw.signal);
        }
        self.flush_signals(backend);
    }

    /// Why the next instance read could have nowhere to go, if it could: an armed signal's
    /// watcher holds an instance (queued, running, or taken), or an armed signal has no
    /// watcher (its disarming failed and waits for a retry).
    fn reading_blocked(&self) -> Option<Blocked> {
        let chld_coalesces = !self.fallback_children.is_empty();
        self.signals.armed.iter().find_map(|sig| {
            if sig == Signal::CHLD && chld_coalesces {
                return None;
            }
            let Some(index) = self.signals.owner(sig) else {
                // Armed with no watcher: the kernel refused to disarm it (the change is
                // retried). An instance read now would have nowhere to go: leave them all in
                // the kernel until the mask is right.
                return Some(Blocked::Orphan);
            };
            match self.slots.at(index) {
                Some(
                    w @ Watch {
                        detail: Detail::Signal(sw),
                        ..
                    },
                ) if sw.pending || w.halves[0].queued || w.halves[0].running => {
                    Some(Blocked::Holding)
                }
                _ => None,
            }
        })
    }

    /// The backend says instances are pending: take them, one at a time, while each has
    /// somewhere to go.
    pub(crate) fn take_signals<B: Backend>(&mut self, backend: &B, wake: &WakeShared) {
        loop {
            match self.reading_blocked() {
                None => {}
                // The backend reports again by itself (kqueue's recheck follows every
                // instance taken; a signalfd stays readable).
                Some(Blocked::Holding) => return,
                // This report may be the only one: remember it.
                Some(Blocked::Orphan) => {
                    self.signals.missed = true;
                    return;
                }
            }
            match backend.take_signal() {
                Ok(Some(info)) => self.on_signal(info, backend, wake),
                Ok(None) => {
                    self.signals.missed = false;
                    return;
                }
                Err(e) => {
                    self.fault(e);
                    self.suspend_signals(backend);
                    return;
                }
            }
        }
    }

    /// A take failed. The kernel goes on saying instances are pending (a signalfd stays
    /// readable, kqueue's backend looks again), so a take that keeps failing would turn the
    /// loop into a busy one: disarm every signal, and let the retry before a later wait
    /// (every 10 ms while it fails) arm them again. The instances wait in the kernel.
    fn suspend_signals<B: Backend>(&mut self, backend: &B) {
        self.signals.suspended = Suspension::Fresh;
        self.flush_signals(backend);
    }

    /// Before a wait: keep suspended signals disarmed through one wait (returning its bound),
    /// then arm them again before the next.
    pub(super) fn resume_signals<B: Backend>(&mut self, backend: &B) -> Option<Duration> {
        match self.signals.suspended {
            Suspension::None => None,
            Suspension::Fresh => {
                self.signals.suspended = Suspension::Waited;
                Some(super::RETRY)
            }
            Suspension::Waited => {
                self.signals.suspended = Suspension::None;
                self.flush_signals(backend);
                None
            }
        }
    }

    /// Before a wait: take the instances reported while reading was blocked, if it no longer
    /// is (see [`SignalTables::missed`]).
    pub(crate) fn take_missed_signals<B: Backend>(&mut self, backend: &B, wake: &WakeShared) {
        if self.signals.missed && self.reading_blocked().is_none() {
            self.take_signals(backend, wake);
        }
    }

    /// Tell the backend the signals to report: those whose watchers are ready, plus `SIGCHLD`
    /// while children are watched the fallback way.
    pub(super) fn flush_signals<B: Backend>(&mut self, backend: &B) {
        let mut want = self.signals.ready;
        if !self.fallback_children.is_empty() {
            want.add(Signal::CHLD);
        }
        if self.signals.suspended != Suspension::None {
            // After a failed take, nothing is armed until the retry (see `suspend_signals`).
            want = SignalSet::new();
        }
        if want == self.signals.armed && !self.signals.dirty {
            return;
        }
        match backend.arm_signals(want) {
            Ok(()) => {
                self.signals.armed = want;
                self.signals.dirty = false;
            }
            Err(e) => {
                self.fault(e);
                self.signals.dirty = true;
                // The backend may have taken part of the change (kqueue changes one signal
                // at a time): count every signal of either set as possibly armed, so that
                // `reading_blocked` looks at all of them until a retry succeeds.
                for sig in want.iter() {
                    self.signals.armed.add(sig);
                }
            }
        }
    }

    /// One instance taken from the kernel: hand it to its watcher.
    pub(crate) fn on_signal<B: Backend>(&mut self, info: SigInfo, backend: &B, wake: &WakeShared) {
        // A SIGCHLD taken for fallback children with no watcher of its own: the poll after
        // every wait handles those children.
        let Some(index) = self.signals.owner(info.signal()) else {
            return;
        };
        let Some(Watch {
            detail: Detail::Signal(sw),
            ..
        }) = self.slots.at_mut(index)
        else {
            return;
        };
        if !sw.pending {
            sw.pending = true;
            self.signals.set_info(info);
        }
        // Otherwise a SIGCHLD taken for fallback children while its watcher held one: it
        // coalesces into the one held.
        self.maybe_queue(index, 0, wake);
        self.sync_signal(index, backend);
    }

    /// The end of a signal registration.
    pub(super) fn release_signal<B: Backend>(&mut self, signal: Signal, backend: &B) {
        self.signals.set_owner(signal, NONE);
        self.signals.ready.remove(signal);
        self.flush_signals(backend);
    }
}

/// Where signals stand after a failed take.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub(super) enum Suspension {
    /// Armed as their watchers say.
    None,
    /// Disarmed; the next wait has not happened yet.
    Fresh,
    /// Disarmed through one wait; armed again before the next.
    Waited,
}

/// Why an instance may not be read now.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Blocked {
    /// An armed signal's watcher holds an instance.
    Holding,
    /// A signal is armed with no watcher.
    Orphan,
}
