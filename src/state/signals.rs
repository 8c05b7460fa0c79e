//! Signal watchers: one per signal per loop. Each watcher holds the instances taken from the
//! kernel for it and not yet delivered, oldest first: the first in the per-signal table, the
//! rest in a spill pool shared by all signals and reserved at build
//! (`Builder::signal_instances`). An instance stays held while its handler runs (`Requeue`
//! delivers it again) and is dropped when the handler returns; the next becomes the oldest.
//! So each handler call gets its own `SigInfo`, in the kernel's order, and none is lost or
//! duplicated while the watcher is queued, running or disabled.
//!
//! Instances are read only while each has somewhere to go, whatever its signal: as many at a
//! time as there are free spill entries, plus one when no armed signal's watcher holds an
//! instance (`room`); a backend may read them in one system call (`Backend::take_signals`).
//! The one exception is `SIGCHLD` armed for children watched the fallback way: it is read
//! regardless (those children are polled), and an instance with no room coalesces into the
//! ones its watcher holds, as POSIX lets the kernel do for standard signals. A disabled
//! watcher's signal is disarmed, so its instances wait in the kernel. Otherwise a signal stays
//! armed while its watcher is enabled, queued or running, in both flavours (so neither
//! rewrites the mask per instance). Single-threaded, a watcher holding more after its handler
//! re-arms runs again in the same batch. Threaded, reading blocked for room would let another
//! runner's wait report the signals again and again while the holders run, so the holders are
//! stalled (disarmed) until they hold none; the last delivery arms them again and takes what
//! the kernel kept meanwhile: two mask changes per room-full of instances.

use std::time::Duration;

use super::{State, enqueue, node};
use crate::backend::Backend;
use crate::error::{Error, Pool as PoolKind};
use crate::signal::{MAX_SIGNAL, SigInfo, Signal, SignalSet};
use crate::waker::WakeShared;
use crate::watch::{Detail, Half, SignalWatch, Watch};

const NONE: u32 = u32::MAX;

/// Per-signal tables, indexed by signal number, and the spill pool of instances held beyond
/// the first of each watcher.
pub(crate) struct SignalTables {
    /// The slot of the watcher of each signal.
    owner: Box<[u32]>,
    /// The oldest instance each watcher holds (taken, not yet delivered or being delivered).
    info: Box<[SigInfo]>,
    /// How many instances each watcher holds (the oldest in `info`, the rest spilled).
    held: Box<[u32]>,
    /// Each signal's spilled instances, oldest first: a list through `spill_next`.
    spill_head: Box<[u32]>,
    spill_tail: Box<[u32]>,
    /// The spill pool (reserved at build, [`Builder::signal_instances`](crate::Builder)).
    spill: Box<[SigInfo]>,
    spill_next: Box<[u32]>,
    /// Free spill entries: a list through `spill_next`.
    spill_free: u32,
    spill_free_len: usize,
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

/// The most instances one take reads from the kernel at once.
const TAKE_BATCH: usize = 16;

impl SignalTables {
    /// Tables for every signal number, with `spill` instances of room beyond the first each
    /// watcher holds. `None` if memory is short.
    pub(crate) fn new(spill: usize) -> Option<Self> {
        let n = MAX_SIGNAL as usize + 1;
        let spill_u32 = u32::try_from(spill).ok().filter(|s| *s < NONE)?;
        Some(SignalTables {
            owner: filled(n, NONE)?,
            info: filled(n, SigInfo::new(Signal::from_raw(0)))?,
            held: filled(n, 0)?,
            spill_head: filled(n, NONE)?,
            spill_tail: filled(n, NONE)?,
            spill: filled(spill, SigInfo::new(Signal::from_raw(0)))?,
            // Entry i links to i + 1: the whole pool starts free.
            spill_next: {
                let mut v = filled(spill, NONE)?;
                for (i, next) in v.iter_mut().enumerate() {
                    *next = if i + 1 < spill { i as u32 + 1 } else { NONE };
                }
                v
            },
            spill_free: if spill_u32 > 0 { 0 } else { NONE },
            spill_free_len: spill,
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

    /// How many instances the watcher of `sig` holds.
    pub(super) fn held(&self, sig: Signal) -> u32 {
        usize::try_from(sig.raw())
            .ok()
            .and_then(|i| self.held.get(i).copied())
            .unwrap_or(0)
    }

    /// The oldest instance the watcher of `sig` holds.
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

    /// Hold `info` for its watcher, after the ones it already holds. Returns false (and holds
    /// nothing) if the watcher holds one already and the spill pool is full.
    #[inline]
    fn push(&mut self, info: SigInfo) -> bool {
        // (A negative number becomes an index out of range.)
        let i = info.signal().raw() as usize;
        let Some(held) = self.held.get_mut(i) else {
            return false;
        };
        if *held == 0 {
            *held = 1;
            if let Some(slot) = self.info.get_mut(i) {
                *slot = info;
            }
            return true;
        }
        let e = self.spill_free;
        let (Some(next), Some(slot)) = (
            self.spill_next.get(e as usize).copied(),
            self.spill.get_mut(e as usize),
        ) else {
            return false;
        };
        *held += 1;
        *slot = info;
        self.spill_free = next;
        self.spill_free_len -= 1;
        self.spill_next[e as usize] = NONE;
        let tail = core::mem::replace(&mut self.spill_tail[i], e);
        match self.spill_next.get_mut(tail as usize) {
            Some(t) => *t = e,
            None => self.spill_head[i] = e,
        }
        true
    }

    /// Drop the oldest instance the watcher of `sig` holds (it was delivered); the next, if
    /// any, becomes the oldest.
    #[inline]
    fn pop(&mut self, sig: Signal) {
        let i = sig.raw() as usize;
        let Some(held) = self.held.get_mut(i).filter(|h| **h > 0) else {
            return;
        };
        *held -= 1;
        if *held == 0 {
            return;
        }
        // The oldest spilled one moves into the watcher's own place.
        let e = self.spill_head[i];
        let (Some(next), Some(spilled)) = (
            self.spill_next.get(e as usize).copied(),
            self.spill.get(e as usize).copied(),
        ) else {
            return;
        };
        self.info[i] = spilled;
        self.spill_head[i] = next;
        if next == NONE {
            self.spill_tail[i] = NONE;
        }
        self.spill_next[e as usize] = self.spill_free;
        self.spill_free = e;
        self.spill_free_len += 1;
    }

    /// Drop every instance the watcher of `sig` holds (it was removed).
    fn clear(&mut self, sig: Signal) {
        while self.held(sig) > 0 {
            self.pop(sig);
        }
    }
}

/// A boxed slice of `n` copies of `v`, or `None` if memory is short.
fn filled<T: Copy>(n: usize, v: T) -> Option<Box<[T]>> {
    let mut b = Vec::new();
    b.try_reserve_exact(n).ok()?;
    b.resize(n, v);
    Some(b.into_boxed_slice())
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
                stalled: false,
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

    /// Arm or disarm the watcher's signal according to its state: armed while enabled,
    /// queued or running (so a handler that re-arms costs no system call), except a threaded
    /// loop's watcher stalled for room (see `take_signals`).
    pub(super) fn sync_signal<B: Backend>(&mut self, index: u32, backend: &B) {
        let Some(w) = self.slots.at(index) else {
            return;
        };
        let Detail::Signal(sw) = w.detail else { return };
        let h = &w.halves[0];
        let armed =
            !h.removed && !w.remove_pending && !sw.stalled && (h.enabled || h.queued || h.running);
        if armed {
            self.signals.ready.add(sw.signal);
        } else {
            self.signals.ready.remove(sw.signal);
        }
        self.flush_signals(backend);
    }

    /// How many instances may be read now, each sure of a place whatever its signal: the
    /// free spill entries, plus one if no armed signal's watcher holds an instance (the
    /// first of any signal then goes to its watcher's own place). `Err` when none may: an
    /// armed signal's watcher holds one and the spill pool is full, or an armed signal has
    /// no watcher (its disarming failed and waits for a retry).
    fn room(&self) -> Result<usize, Blocked> {
        let chld_coalesces = !self.fallback_children.is_empty();
        let mut holder = false;
        for sig in self.signals.armed.iter() {
            if sig == Signal::CHLD && chld_coalesces {
                // An instance read for fallback children with nowhere to go coalesces into
                // the one its watcher holds.
                continue;
            }
            if self.signals.owner(sig).is_none() {
                // Armed with no watcher: the kernel refused to disarm it (the change is
                // retried). An instance read now would have nowhere to go: leave them all in
                // the kernel until the mask is right.
                return Err(Blocked::Orphan);
            }
            holder |= self.signals.held(sig) > 0;
        }
        match self.signals.spill_free_len + usize::from(!holder) {
            0 => Err(Blocked::Holding),
            n => Ok(n),
        }
    }

    /// The backend says instances are pending: take them, as many at a time as have
    /// somewhere to go.
    pub(crate) fn take_signals<B: Backend>(&mut self, backend: &B, wake: &WakeShared) {
        loop {
            let room = match self.room() {
                Ok(n) => n,
                Err(Blocked::Holding) => {
                    // Single-threaded: the holders are queued (or running, on this thread),
                    // so the next wait does not block, and the backend reports again by
                    // itself (a signalfd stays readable; kqueue's recheck follows every
                    // instance taken). Threaded: another runner could spin on that report
                    // while the holders run: disarm them until they hold nothing, then look
                    // for the rest.
                    if self.oneshot && self.stall_holders(backend) {
                        continue;
                    }
                    return;
                }
                // This report may be the only one: remember it.
                Err(Blocked::Orphan) => {
                    self.signals.missed = true;
                    return;
                }
            };
            let want = room.min(TAKE_BATCH);
            // (`room` guarantees each a place; were a backend to hand over more than `want`,
            // the extra ones would coalesce, not overflow.)
            let r = backend.take_signals(want, |info| self.on_signal(info, wake));
            match r {
                Ok(got) if got >= want => {}
                Ok(_) => {
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

    /// Threaded loops, reading blocked by watchers holding instances: stall them (disarmed
    /// until they hold none). Returns whether any was newly stalled: a holder stalled already
    /// whose disarming the kernel refused stays counted as armed (until the retry), and
    /// stalling it again would change nothing, so the caller must not look again.
    fn stall_holders<B: Backend>(&mut self, backend: &B) -> bool {
        let mut any = false;
        for sig in self.signals.armed.iter() {
            let Some(index) = self.signals.owner(sig) else {
                continue;
            };
            if self.signals.held(sig) == 0 {
                continue;
            }
            if let Some(Watch {
                detail: Detail::Signal(sw),
                ..
            }) = self.slots.at_mut(index)
            {
                if !sw.stalled {
                    sw.stalled = true;
                    self.signals.ready.remove(sig);
                    any = true;
                }
            }
        }
        if any {
            self.flush_signals(backend);
        }
        any
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
        if self.signals.missed && self.room().is_ok() {
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
                // `room` looks at all of them until a retry succeeds.
                for sig in want.iter() {
                    self.signals.armed.add(sig);
                }
            }
        }
    }

    /// One instance taken from the kernel: hand it to its watcher.
    fn on_signal(&mut self, info: SigInfo, wake: &WakeShared) {
        // A SIGCHLD taken for fallback children with no watcher of its own: the poll after
        // every wait handles those children.
        let Some(index) = self.signals.owner(info.signal()) else {
            return;
        };
        // A SIGCHLD taken for fallback children while its watcher holds one and the spill
        // pool is full coalesces into the ones held.
        self.signals.push(info);
        let in_batch = self.deferring();
        let Some(w) = self.slots.at_mut(index) else {
            return;
        };
        let Detail::Signal(sw) = &mut w.detail else {
            return;
        };
        sw.pending = true;
        let half = &mut w.halves[0];
        if half.enabled && !half.running && enqueue(&mut self.queue, in_batch, half, node(index, 0))
        {
            self.interrupt(wake);
        }
    }

    /// The handler of a signal watcher returned (not `Requeue`): the instance it got is
    /// gone. Returns whether the watcher holds more.
    pub(super) fn signal_delivered(&mut self, index: u32) -> bool {
        let Some(Watch {
            detail: Detail::Signal(sw),
            ..
        }) = self.slots.at_mut(index)
        else {
            return false;
        };
        self.signals.pop(sw.signal);
        let more = self.signals.held(sw.signal) > 0;
        sw.pending = more;
        more
    }

    /// After `finish_dispatch` applied a handler's answer: a threaded loop's watcher stalled
    /// for room that holds nothing now is armed again (as its state says), and the instances
    /// the kernel kept meanwhile are taken at once.
    pub(super) fn signal_unstall<B: Backend>(
        &mut self,
        index: u32,
        backend: &B,
        wake: &WakeShared,
    ) {
        let Some(Watch {
            detail: Detail::Signal(sw),
            ..
        }) = self.slots.at_mut(index)
        else {
            return;
        };
        if !sw.stalled || sw.pending {
            return;
        }
        sw.stalled = false;
        self.sync_signal(index, backend);
        self.take_signals(backend, wake);
    }

    /// The end of a signal registration: instances it held and did not deliver go with it.
    pub(super) fn release_signal<B: Backend>(&mut self, signal: Signal, backend: &B) {
        self.signals.clear(signal);
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
