//! The loop's state behind its lock, and every transition of the watcher state machine. This
//! module holds what all kinds share (the slot pool, the pending queue, enable/disable,
//! dispatch bookkeeping, removal, retrying failed kernel changes); each kind's own transitions
//! live in a submodule.
//!
//! Nothing here runs user code: methods return what the caller must do outside the lock
//! (run a handler, call `on_removed`). Kernel calls are made here, under the lock, so the
//! kernel's view and the slot's record of it change together; the one exception is the
//! one-shot re-arm after a threaded handler, which its dispatching thread makes without the
//! lock while it still owns the watcher ([`Rearming`]), and records here afterwards.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::backend::{Backend, KernelError, Registration, Token};
use crate::child::ChildStatus;
use crate::control::{KernelFaults, Usage};
use crate::error::{Errno, UsageError, WatchKind};
use crate::id::WatchId;
use crate::interest::{Interest, Readiness};
use crate::pool::Pool;
use crate::queue::PendingQueue;
use crate::signal::SigInfo;
use crate::timer::{Clock, TimerHeaps};
use crate::waker::WakeShared;
use crate::watch::{Detail, Half, WakeWatch, Watch};

mod children;
mod fd;
mod runners;
mod signals;
mod timers;
mod wakes;

pub(crate) use runners::Enter;
use runners::Runners;

use signals::SignalTables;

/// How often a kernel change that failed is retried while one is outstanding.
const RETRY: Duration = Duration::from_millis(10);
/// How often children watched the fallback way are polled even without `SIGCHLD` (which a
/// thread that does not block it would lose).
const CHILD_POLL: Duration = Duration::from_millis(100);

/// What a dispatch delivers, captured under the lock.
#[derive(Copy, Clone, Debug)]
pub(crate) enum Delivery {
    Fd {
        fd: RawFd,
        ready: Readiness,
        half: Option<usize>,
    },
    Timer(u64),
    Wake,
    /// The instance itself is written to the claiming call's own `SigInfo` (see `claim`):
    /// kept out of `Dispatch`, whose every copy would otherwise move its 80 bytes.
    Signal,
    Child {
        pid: u32,
        status: ChildStatus,
    },
}

/// A half claimed for dispatch.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Dispatch {
    pub(crate) id: WatchId,
    pub(crate) half: usize,
    pub(crate) delivery: Delivery,
}

impl Dispatch {
    /// What `finish_dispatch` needs: the slot and the half (what a call keeps while the
    /// handler runs, instead of the whole record).
    #[inline(always)]
    pub(crate) fn claimed(&self) -> (u32, usize) {
        (self.id.index, self.half)
    }
}

/// The kernel change that re-arms a one-shot fd registration after its handler: made by the
/// thread that ran the handler, after the handler and before taking the lock again. The
/// watcher is still marked running, so no other thread touches its registration meanwhile
/// (`sync_kernel` leaves running watchers to their dispatching thread), and its slot, which
/// owns the fd, cannot be freed.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Rearming {
    pub(crate) fd: RawFd,
    pub(crate) token: Token,
    pub(crate) from: Registration,
    pub(crate) to: Registration,
}

/// A registration that has ended: the caller takes the handler out of its cell (still under
/// the lock) and calls `on_removed` after unlocking.
#[derive(Debug)]
pub(crate) struct Removal {
    pub(crate) id: WatchId,
    pub(crate) fd: Option<OwnedFd>,
}

pub(crate) struct Capacities {
    pub(crate) watchers: usize,
    pub(crate) timers: usize,
    pub(crate) wakers: usize,
    /// Signal instances held beyond the first of each signal watcher.
    pub(crate) signal_spill: usize,
    /// Watch children through pidfds (else always the fallback).
    pub(crate) use_pidfd: bool,
    /// Kill and reap the children still watched when the loop is dropped.
    pub(crate) kill_children_on_drop: bool,
    /// Events buffers: how many run calls may wait in the backend at once.
    pub(crate) runners: usize,
}

pub(crate) struct State {
    slots: Pool<Watch>,
    queue: PendingQueue,
    timers: TimerHeaps,
    /// The deadline each clock is armed for in the backend.
    armed: [Option<u64>; 2],
    clock_dirty: [bool; 2],
    /// Each clock as read since the latest wait began (`process_timers`, or an arm for
    /// `Deadline::AfterLoopTime`), cleared as each wait begins (`wait_timeout`) and as each
    /// run call ends (`CallGuard`); arms use it in single-threaded loops only.
    pub(crate) loop_time: [Option<u64>; 2],
    timers_used: usize,
    timers_cap: usize,
    wake_free: Vec<u32>,
    wake_gen: Box<[u32]>,
    wake_slot: Box<[u32]>,
    wakers_cap: usize,
    /// Slots whose kernel registration must be retried.
    dirty: VecDeque<u32>,
    pub(crate) batch_depth: u32,
    /// Threaded loops: a signal watcher `finish_dispatch` left queued off the queue for the
    /// same runner to claim again in the same lock section (see `claim_rerun`).
    rerun: Option<u32>,
    /// The loop's fd was lent out (`AsFd`) for another event loop to wait on: a run call that
    /// ends with work queued in user space pokes the notifier, so that fd stays readable.
    pub(crate) embedded: bool,
    pub(crate) runners: Runners,
    /// Inside `retry_kernel` (see `retry_soon`).
    retrying: bool,
    faults: KernelFaults,
    oneshot: bool,
    threaded: bool,
    tag: u32,
    signals: SignalTables,
    /// Child watchers watching the fallback way (polled after every wait).
    fallback_children: Vec<u32>,
    /// Child watchers watching a child (either way): what `watch_child` checks a pid against.
    watched_children: Vec<u32>,
    use_pidfd: bool,
    kill_children_on_drop: bool,
}

fn token(index: u32, generation: u32) -> Token {
    Token((u64::from(generation) << 32) | u64::from(index))
}

fn node(index: u32, half: usize) -> u32 {
    index * 2 + half as u32
}

/// Mark a half queued (and so disabled) and put its node in the ready queue, or in the
/// deferred FIFO while a batch runs. Returns whether it was queued now.
#[inline]
fn enqueue(queue: &mut PendingQueue, in_batch: bool, half: &mut Half, node: u32) -> bool {
    if half.queued || half.removed {
        return false;
    }
    half.queued = true;
    half.enabled = false;
    if in_batch {
        queue.defer(node, half.priority);
    } else {
        queue.push(node, half.priority);
    }
    true
}

/// Take a queued half off the queue (a parked half is queued but off it: nothing to remove
/// there).
#[inline]
fn unqueue(queue: &mut PendingQueue, half: &mut Half, node: u32) {
    if half.queued {
        half.queued = false;
        half.parked = false;
        queue.remove(node);
    }
}

/// Queue half `h` of watcher `w` (slot `index`) if it is enabled, idle, present and has
/// something to deliver. Returns whether it was queued.
#[inline(always)]
fn queue_if_pending(
    queue: &mut PendingQueue,
    in_batch: bool,
    w: &mut Watch,
    index: u32,
    h: usize,
) -> bool {
    let half = &w.halves[h];
    if !half.enabled || half.queued || half.running || half.removed || !w.has_pending(h) {
        return false;
    }
    enqueue(queue, in_batch, &mut w.halves[h], node(index, h))
}

/// Whether a slot's watcher is live for its id's holder: not being removed, not a zombie.
#[inline]
fn is_live(w: &Watch) -> bool {
    !w.remove_pending && !matches!(w.detail, Detail::Zombie(_))
}

/// [`State::lookup`], handing back the watcher itself (one slot lookup), from the slots
/// alone so the rest of the state stays free to use.
#[inline]
fn live_mut(slots: &mut Pool<Watch>, tag: u32, id: WatchId) -> Result<&mut Watch, UsageError> {
    if id.loop_tag != tag {
        return Err(UsageError::Stale);
    }
    match slots.get_mut(id.index, id.generation) {
        Some(w) if is_live(w) => Ok(w),
        _ => Err(UsageError::Stale),
    }
}

impl State {
    pub(crate) fn new(cap: &Capacities, oneshot: bool, threaded: bool, tag: u32) -> Option<Self> {
        let slots = Pool::with_capacity(cap.watchers)?;
        let queue = PendingQueue::with_nodes(cap.watchers * 2)?;
        let timers = TimerHeaps::new(cap.watchers, cap.timers)?;
        let mut wake_free = Vec::new();
        wake_free.try_reserve_exact(cap.wakers).ok()?;
        wake_free.extend((0..cap.wakers as u32).rev());
        let mut wake_gen = Vec::new();
        wake_gen.try_reserve_exact(cap.wakers).ok()?;
        wake_gen.resize(cap.wakers, 0u32);
        let mut wake_slot = Vec::new();
        wake_slot.try_reserve_exact(cap.wakers).ok()?;
        wake_slot.resize(cap.wakers, u32::MAX);
        let mut dirty = VecDeque::new();
        dirty.try_reserve_exact(cap.watchers).ok()?;
        let mut fallback_children = Vec::new();
        fallback_children.try_reserve_exact(cap.watchers).ok()?;
        let mut watched_children = Vec::new();
        watched_children.try_reserve_exact(cap.watchers).ok()?;
        Some(State {
            signals: SignalTables::new(cap.signal_spill)?,
            fallback_children,
            watched_children,
            use_pidfd: cap.use_pidfd,
            kill_children_on_drop: cap.kill_children_on_drop,
            slots,
            queue,
            timers,
            armed: [None, None],
            clock_dirty: [false, false],
            loop_time: [None, None],
            timers_used: 0,
            timers_cap: cap.timers,
            wake_free,
            wake_gen: wake_gen.into_boxed_slice(),
            wake_slot: wake_slot.into_boxed_slice(),
            wakers_cap: cap.wakers,
            dirty,
            batch_depth: 0,
            rerun: None,
            embedded: false,
            runners: Runners::new(cap.runners)?,
            retrying: false,
            faults: KernelFaults::default(),
            oneshot,
            threaded,
            tag,
        })
    }

    pub(crate) fn fault(&mut self, e: KernelError) {
        self.faults.count += 1;
        self.faults.last = Some(e);
    }

    pub(crate) fn faults(&self) -> KernelFaults {
        self.faults
    }

    pub(crate) fn usage(&self) -> Usage {
        Usage {
            watchers: self.slots.len(),
            watchers_capacity: self.slots.capacity(),
            timers: self.timers_used,
            timers_capacity: self.timers_cap,
            wakers: self.wakers_cap - self.wake_free.len(),
            wakers_capacity: self.wakers_cap,
            fallback_children: self.fallback_children.len(),
        }
    }

    /// Whether anything is queued in user space (for this batch or the next).
    pub(crate) fn has_queued(&self) -> bool {
        self.queue.len() + self.queue.deferred_len() > 0
    }

    /// Whether any slot is in use (a watcher, or a deregistration still pending).
    #[inline(always)]
    pub(crate) fn has_slots(&self) -> bool {
        self.slots.len() > 0
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn id(&self, index: u32) -> WatchId {
        WatchId {
            index,
            generation: self.slots.generation(index).unwrap_or(0),
            loop_tag: self.tag,
        }
    }

    /// The slot index of a live watcher: right loop, right generation, not being removed.
    pub(crate) fn lookup(&self, id: WatchId) -> Result<u32, UsageError> {
        if id.loop_tag != self.tag {
            return Err(UsageError::Stale);
        }
        match self.slots.get(id.index, id.generation) {
            Some(w) if is_live(w) => Ok(id.index),
            _ => Err(UsageError::Stale),
        }
    }

    pub(crate) fn contains(&self, id: WatchId) -> bool {
        self.lookup(id).is_ok()
    }

    pub(crate) fn kind(&self, index: u32) -> Option<WatchKind> {
        self.slots.at(index).map(Watch::kind)
    }

    /// Work was queued in user space: hand it to a runner sleeping in the backend (threaded
    /// loops; see `runners.rs`).
    #[inline]
    fn interrupt(&mut self, _wake: &WakeShared) {
        if self.threaded && !self.runners.harvesting {
            self.hand_off();
        }
    }

    /// Whether what is queued now waits for the next batch (the deferred FIFO): the
    /// single-threaded flavour, while a batch runs. Threaded loops queue everything at once
    /// and bound each batch by sequence instead (`next_dispatch`), since several runners,
    /// each in its own batch, share the queue.
    #[inline(always)]
    fn deferring(&self) -> bool {
        // (Threaded run calls never count themselves in `batch_depth`.)
        self.batch_depth > 0
    }

    /// Queue half `h` if it is enabled, idle and has something to deliver.
    #[inline]
    fn maybe_queue(&mut self, index: u32, h: usize, wake: &WakeShared) {
        let in_batch = self.deferring();
        let Some(w) = self.slots.at_mut(index) else {
            return;
        };
        if queue_if_pending(&mut self.queue, in_batch, w, index, h) {
            self.interrupt(wake);
        }
    }

    fn dequeue_half(&mut self, index: u32, h: usize) {
        let Some(w) = self.slots.at_mut(index) else {
            return;
        };
        unqueue(&mut self.queue, &mut w.halves[h], node(index, h));
    }

    #[cold]
    fn mark_dirty(&mut self, index: u32) {
        if let Some(w) = self.slots.at_mut(index) {
            if !w.dirty {
                w.dirty = true;
                // Capacity is one entry per slot and a slot is listed once: no reallocation.
                self.dirty.push_back(index);
            }
        }
        self.retry_soon();
    }

    /// A kernel change failed and waits for the retry before a wait: in a threaded loop, a
    /// runner already asleep (with no bound) is poked, so that it looks again with the retry
    /// bound instead of sleeping on with the change undone.
    #[cold]
    fn retry_soon(&mut self) {
        // (Not from the retry itself: the retrying runner bounds its own wait, and the others
        // were poked when the change first failed, so they wait bounded too; poking them on
        // each failed retry would keep them from sleeping while a fault lasts.)
        if self.threaded && !self.runners.harvesting && !self.retrying {
            self.hand_off();
        }
    }

    /// Take a slot about to be freed off the retry list: its next occupant starts clean, and
    /// a stale entry beside the occupant's own would overfill the list.
    #[cold]
    fn unlist_dirty(&mut self, index: u32) {
        if self.slots.at(index).is_some_and(|w| w.dirty) {
            if let Some(at) = self.dirty.iter().position(|&i| i == index) {
                self.dirty.remove(at);
            }
        }
    }

    fn kind_of(&self, index: u32) -> WatchKind {
        self.kind(index).unwrap_or(WatchKind::Fd)
    }

    /// Enable or disable the given halves (`None`: all present halves).
    pub(crate) fn set_enabled<B: Backend>(
        &mut self,
        index: u32,
        only: Option<usize>,
        enabled: bool,
        backend: &B,
        wake: &WakeShared,
    ) {
        for h in 0..2 {
            if only.is_some_and(|o| o != h) {
                continue;
            }
            let Some(w) = self.slots.at_mut(index) else {
                return;
            };
            let is_fd = matches!(w.detail, Detail::Fd(_));
            let half = &mut w.halves[h];
            if half.removed {
                continue;
            }
            if enabled {
                if !half.queued {
                    half.enabled = true;
                    self.maybe_queue(index, h, wake);
                }
            } else {
                half.enabled = false;
                if half.queued {
                    half.queued = false;
                    half.parked = false;
                    if is_fd {
                        // Level conditions will be reported again when re-enabled; keep the
                        // ones that would not be.
                        half.ready = half.ready & Readiness::STICKY;
                    }
                    self.queue.remove(node(index, h));
                }
            }
        }
        self.sync_kernel(index, backend);
    }

    /// Where a threaded batch that starts now ends: it takes only nodes queued before this.
    #[inline]
    pub(crate) fn batch_bound(&self) -> u64 {
        self.queue.next_seq()
    }

    /// Merge deferred events into the heap (start of a batch).
    #[inline(always)]
    pub(crate) fn merge_deferred(&mut self) {
        self.queue.merge_deferred();
    }

    /// Retry failed kernel changes; returns a wait timeout bound if some are still failing.
    #[inline(always)]
    pub(crate) fn retry_kernel<B: Backend>(&mut self, backend: &B) -> Option<Duration> {
        // Nothing outstanding (the healthy steady state): every step below would do nothing
        // and bound nothing. Checked inline, before the call.
        if self.dirty.is_empty()
            && !(self.clock_dirty[0] | self.clock_dirty[1] | self.signals.dirty)
            && matches!(self.signals.suspended, signals::Suspension::None)
            && self.fallback_children.is_empty()
        {
            return None;
        }
        self.retry_kernel_slow(backend)
    }

    fn retry_kernel_slow<B: Backend>(&mut self, backend: &B) -> Option<Duration> {
        self.retrying = true;
        let bound = self.retry_kernel_inner(backend);
        self.retrying = false;
        bound
    }

    #[inline]
    fn retry_kernel_inner<B: Backend>(&mut self, backend: &B) -> Option<Duration> {
        // Each entry is taken off the front before its retry, so a retry that fails again
        // re-lists the watcher at the back without the list ever holding it twice (and never
        // outgrowing its capacity of one entry per slot).
        for _ in 0..self.dirty.len() {
            let Some(index) = self.dirty.pop_front() else {
                break;
            };
            let zombie = match self.slots.at_mut(index) {
                Some(w) => {
                    w.dirty = false;
                    matches!(w.detail, Detail::Zombie(_))
                }
                None => continue,
            };
            if zombie {
                self.retry_zombie(index, backend);
            } else {
                self.sync_kernel(index, backend);
            }
        }
        for clock in Clock::ALL {
            if self.clock_dirty[clock.index()] {
                self.sync_clock(clock, true, backend);
            }
        }
        if self.signals.dirty {
            self.flush_signals(backend);
        }
        let mut bound = self.resume_signals(backend);
        if !self.dirty.is_empty() || self.signals.dirty {
            bound = Some(bound.map_or(RETRY, |b: Duration| b.min(RETRY)));
        }
        if !self.fallback_children.is_empty() {
            bound = Some(bound.map_or(CHILD_POLL, |b: Duration| b.min(CHILD_POLL)));
        }
        for clock in Clock::ALL {
            let c = clock.index();
            if self.clock_dirty[c] {
                // The timer fd is out of order: wake in time for the earliest deadline.
                let until = self
                    .timers
                    .peek(clock)
                    .map(|(_, d)| Duration::from_nanos(d.saturating_sub(backend.now(clock))));
                let b = until.map_or(RETRY, |u| u.min(RETRY));
                bound = Some(bound.map_or(b, |x: Duration| x.min(b)));
            }
        }
        bound
    }

    #[cold]
    fn retry_zombie<B: Backend>(&mut self, index: u32, backend: &B) {
        let generation = self.slots.generation(index).unwrap_or(0);
        let Some(Watch {
            detail: Detail::Zombie(f),
            ..
        }) = self.slots.at(index)
        else {
            return;
        };
        match backend.remove_fd(f.fd.as_fd(), token(index, generation), f.kernel) {
            Ok(())
            | Err(KernelError {
                errno: Errno::NOENT | Errno::BADF,
                ..
            }) => {
                // Dropping the slot closes the fd: no user code runs.
                self.slots.remove(index, generation);
            }
            Err(e) => {
                self.fault(e);
                self.mark_dirty(index);
            }
        }
    }

    /// Take the next queued half and claim it for dispatch.
    #[inline(always)]
    pub(crate) fn next_dispatch(&mut self, info: &mut SigInfo) -> Option<Dispatch> {
        self.claim(PendingQueue::pop, info)
    }

    /// [`next_dispatch`](Self::next_dispatch) for a threaded batch that began at `bound`
    /// ([`batch_bound`](Self::batch_bound)): only what was queued before it.
    #[inline(always)]
    pub(crate) fn next_dispatch_before(
        &mut self,
        bound: u64,
        info: &mut SigInfo,
    ) -> Option<Dispatch> {
        self.claim(|q| q.pop_before(bound), info)
    }

    #[inline(always)]
    fn claim(
        &mut self,
        mut pop: impl FnMut(&mut PendingQueue) -> Option<u32>,
        info: &mut SigInfo,
    ) -> Option<Dispatch> {
        loop {
            let n = pop(&mut self.queue)?;
            let index = n / 2;
            let h = (n % 2) as usize;
            let threaded = self.threaded;
            let Some((generation, w)) = self.slots.at_mut_gen(index) else {
                continue;
            };
            w.halves[h].queued = false;
            if w.running {
                // The other half's handler holds the handler cell. Threaded: it runs on
                // another thread; park this half (still queued, off the queue) until that
                // handler returns, and `finish_dispatch` queues it again: nobody spins on it.
                // Single-threaded: a nested run inside that handler; run it next batch.
                w.halves[h].queued = true;
                if threaded {
                    w.halves[h].parked = true;
                } else {
                    let prio = w.halves[h].priority;
                    self.queue.defer(n, prio);
                }
                continue;
            }
            let delivery = match &mut w.detail {
                Detail::Fd(f) => {
                    let mut ready = core::mem::take(&mut w.halves[h].ready);
                    if f.emulated {
                        let interest = match (f.bidi, h) {
                            (false, _) => f.interest,
                            (true, 0) => Interest::READ,
                            (true, _) => Interest::WRITE,
                        };
                        ready |= Readiness::always_ready(interest);
                    }
                    w.halves[h].last = ready;
                    Delivery::Fd {
                        fd: f.fd.as_raw_fd(),
                        ready,
                        half: f.bidi.then_some(h),
                    }
                }
                Detail::Timer(t) => Delivery::Timer(core::mem::take(&mut t.expirations)),
                Detail::Wake(k) => {
                    k.pending = false;
                    Delivery::Wake
                }
                Detail::Signal(sw) => {
                    // The instance stays held until the handler returns (`Requeue` delivers
                    // it again).
                    sw.pending = false;
                    *info = self.signals.info(sw.signal);
                    Delivery::Signal
                }
                Detail::Child(cw) => {
                    let status = cw.status.take().unwrap_or(ChildStatus::Unknown);
                    cw.delivered = Some(status);
                    Delivery::Child {
                        pid: cw.pid,
                        status,
                    }
                }
                Detail::Zombie(_) => continue,
            };
            w.running = true;
            w.halves[h].running = true;
            let id = WatchId {
                index,
                generation,
                loop_tag: self.tag,
            };
            return Some(Dispatch {
                id,
                half: h,
                delivery,
            });
        }
    }

    /// Threaded loops, right after `finish_dispatch`: claim the signal watcher it left to
    /// run again (it holds more instances), if any.
    #[inline]
    pub(crate) fn claim_rerun(&mut self, info: &mut SigInfo) -> Option<Dispatch> {
        let mut node = Some(self.rerun.take()?);
        self.claim(|_| node.take(), info)
    }

    /// Threaded loops, a run call that ends right after `finish_dispatch`: queue the watcher
    /// it left to run again for another call.
    #[inline]
    pub(crate) fn requeue_rerun(&mut self, wake: &WakeShared) {
        let Some(n) = self.rerun.take() else { return };
        let Some(w) = self.slots.at(n / 2) else {
            return;
        };
        let priority = w.halves[(n % 2) as usize].priority;
        if self.queue.push(n, priority) {
            self.interrupt(wake);
        }
    }

    /// Threaded loops, a plain fd watcher just claimed: the one-shot re-arm its dispatching
    /// thread makes itself, without the lock, if the handler answers `Rearm`.
    pub(crate) fn rearm_plan(&mut self, d: &Dispatch) -> Option<Rearming> {
        let index = d.id.index;
        let (generation, w) = self.slots.at_mut_gen(index)?;
        let dirty = w.dirty;
        let Detail::Fd(f) = &mut w.detail else {
            return None;
        };
        if !self.threaded || !f.fired || f.bidi || f.emulated || f.unsure || dirty {
            return None;
        }
        f.late = false;
        Some(Rearming {
            fd: f.fd.as_raw_fd(),
            token: token(index, generation),
            from: f.kernel,
            to: Registration {
                interest: f.interest,
                oneshot: true,
            },
        })
    }

    /// Apply a handler's answer. Returns a removal if the watcher's registration ended.
    #[inline(always)]
    pub(crate) fn finish_dispatch<B: Backend>(
        &mut self,
        (index, h): (u32, usize),
        rearm: crate::handler::Rearm,
        backend: &B,
        wake: &WakeShared,
    ) -> Option<Removal> {
        use crate::handler::Rearm;
        let in_batch = self.deferring();
        let oneshot = self.oneshot;
        let w = self.slots.at_mut(index)?;
        w.running = false;
        w.halves[h].running = false;
        // Fast path: an fd re-armed with nothing pending whose registration is already what
        // `sync_kernel` would want. Level-triggered, it stayed armed while the handler ran;
        // one-shot (threaded), a plain fd's dispatching thread re-armed it itself
        // (`record_premod`) and no report has disarmed it since. Only the flag changes.
        if rearm == Rearm::Rearm && !w.remove_pending {
            if let Detail::Fd(f) = &w.detail {
                if !f.emulated && !f.fired && w.halves[h].ready.is_empty() {
                    let armed = !oneshot
                        || (!f.bidi
                            && !f.unsure
                            && f.kernel
                                == (Registration {
                                    interest: f.interest,
                                    oneshot: true,
                                }));
                    if armed {
                        w.halves[h].enabled = true;
                        return None;
                    }
                }
            }
        }
        if w.remove_pending {
            return Some(self.detach(index, backend, wake));
        }
        // A signal instance delivered is gone (`Requeue` delivers it again; `Remove` drops
        // every one held). Single-threaded, a watcher re-armed with more held runs again in
        // this batch: they were all taken before it began, so a burst drains without a wait
        // per instance.
        // Threaded, such a watcher is claimed again at once by the same runner, in the same
        // lock section (`claim_rerun`), since a threaded batch takes nothing queued after it
        // began.
        let mut more = false;
        let delivered = matches!(w.detail, Detail::Signal(_))
            && !matches!(rearm, Rearm::Requeue | Rearm::Remove);
        let w = if delivered {
            more = self.signal_delivered(index);
            self.slots.at_mut(index)?
        } else {
            w
        };
        let again = more && !self.threaded;
        let other_present = !w.halves[1 - h].removed;
        let mut queued = false;
        // The reported exit is consumed, unless the handler asks to see it again.
        let mut rearm = rearm;
        if let Detail::Child(cw) = &mut w.detail {
            let delivered = cw.delivered.take();
            if rearm == Rearm::Requeue {
                if delivered.is_some() {
                    cw.status = delivered;
                } else {
                    // The handler watched a new child: the old exit is gone, nothing to
                    // deliver again.
                    rearm = Rearm::Rearm;
                }
            }
        }
        match rearm {
            Rearm::Rearm => w.halves[h].enabled = true,
            Rearm::Disarm => w.halves[h].enabled = false,
            Rearm::Noop => {}
            Rearm::Remove => {
                if !other_present {
                    return Some(self.detach(index, backend, wake));
                }
                let half = &mut w.halves[h];
                half.removed = true;
                half.enabled = false;
                half.ready = Readiness::EMPTY;
                self.sync_kernel(index, backend);
                return None;
            }
            Rearm::Requeue => {
                let half = &mut w.halves[h];
                half.ready |= half.last;
                match &mut w.detail {
                    Detail::Wake(k) => k.pending = true,
                    // The instance is still held (see `signal_delivered`).
                    Detail::Signal(sw) => sw.pending = true,
                    _ => {}
                }
                queued = enqueue(&mut self.queue, in_batch, &mut w.halves[h], node(index, h));
            }
        }
        let pending = w.has_pending(h);
        // What `sync_kernel` would have to look at: fds and signals (timers, wakes and
        // children hold no registration it changes).
        let (plain_fd, signal, kernel) = match &w.detail {
            Detail::Fd(f) => (!f.fired, false, true),
            Detail::Signal(_) => (false, true, true),
            _ => (false, false, false),
        };
        let half = &mut w.halves[h];
        if half.enabled && pending {
            if more && self.threaded && rearm == Rearm::Rearm {
                // Queued, off the queue, until `claim_rerun` (or `requeue_rerun`) in this
                // lock section.
                half.queued = true;
                half.enabled = false;
                self.rerun = Some(node(index, h));
            } else {
                queued |= enqueue(&mut self.queue, in_batch && !again, half, node(index, h));
            }
        }
        // A level-triggered fd still armed (enabled or queued again), as it was while running:
        // the kernel already holds the right registration. Likewise a signal watcher in
        // either flavour (armed while running; a stall or its end was synced already).
        let unchanged =
            !kernel || (((plain_fd && !oneshot) || signal) && (half.enabled || half.queued));
        if queued {
            self.interrupt(wake);
        }
        if !unchanged {
            self.sync_kernel(index, backend);
        }
        if delivered && self.threaded {
            self.signal_unstall(index, backend, wake);
        }
        None
    }

    /// The sibling of half `h` waited (parked) for `h`'s handler, which has returned: queue it.
    /// (Threaded loops, before `finish_dispatch`.)
    #[inline]
    pub(crate) fn unpark_sibling(&mut self, index: u32, h: usize, wake: &WakeShared) {
        let Some(w) = self.slots.at_mut(index) else {
            return;
        };
        let other = &mut w.halves[1 - h];
        if other.parked {
            other.parked = false;
            let prio = other.priority;
            self.queue.push(node(index, 1 - h), prio);
            self.interrupt(wake);
        }
    }

    /// Record what the dispatching thread's own re-arm did to the kernel's registration.
    #[inline]
    pub(crate) fn record_premod(&mut self, index: u32, plan: Rearming, r: Result<(), KernelError>) {
        let Some(Watch {
            detail: Detail::Fd(f),
            ..
        }) = self.slots.at_mut(index)
        else {
            return;
        };
        match r {
            Ok(()) => {
                f.kernel = plan.to;
                // A report since the re-arm disarmed it again.
                f.fired = f.late;
            }
            Err(e) => {
                // As in `sync_kernel`: the kernel may hold any part of either side.
                f.kernel = Registration {
                    interest: f.kernel.interest | plan.to.interest,
                    oneshot: true,
                };
                f.fired = false;
                f.unsure = true;
                self.fault(e);
                self.mark_dirty(index);
            }
        }
        if let Some(Watch {
            detail: Detail::Fd(f),
            ..
        }) = self.slots.at_mut(index)
        {
            f.late = false;
        }
    }

    /// Free a slot registered a moment ago, within the same registration call, before its
    /// handler was stored: it holds no kernel resource and no handler, so nothing else is due.
    pub(crate) fn discard(&mut self, index: u32) {
        let generation = self.slots.generation(index).unwrap_or(0);
        self.slots.remove(index, generation);
    }

    /// Request removal. `Ok(None)`: the handler is running; removal completes when it returns.
    pub(crate) fn remove<B: Backend>(
        &mut self,
        index: u32,
        backend: &B,
        wake: &WakeShared,
    ) -> Option<Removal> {
        let running = self.slots.at(index).is_some_and(|w| w.running);
        if running {
            for h in 0..2 {
                self.dequeue_half(index, h);
            }
            if let Some(w) = self.slots.at_mut(index) {
                w.remove_pending = true;
                for half in &mut w.halves {
                    half.enabled = false;
                }
            }
            self.sync_kernel(index, backend);
            return None;
        }
        Some(self.detach(index, backend, wake))
    }

    /// End a registration: dequeue, deregister from the kernel, release the timer or wake
    /// slot, free the pool slot. Exactly one call per registration reaches the end.
    #[cold]
    fn detach<B: Backend>(&mut self, index: u32, backend: &B, wake: &WakeShared) -> Removal {
        for h in 0..2 {
            self.dequeue_half(index, h);
        }
        let id = self.id(index);
        let generation = id.generation;
        let mut zombie = false;
        match self.slots.at(index).map(|w| &w.detail) {
            Some(Detail::Fd(f)) if !f.emulated => {
                match backend.remove_fd(f.fd.as_fd(), token(index, generation), f.kernel) {
                    Ok(())
                    | Err(KernelError {
                        errno: Errno::NOENT | Errno::BADF,
                        ..
                    }) => {}
                    Err(e) => {
                        self.fault(e);
                        zombie = true;
                    }
                }
            }
            Some(Detail::Timer(t)) => {
                self.timers.remove(t.clock, index);
                self.timers_used -= 1;
            }
            Some(Detail::Wake(k)) => {
                let cell = k.cell;
                let g = &mut self.wake_gen[cell as usize];
                *g = g.wrapping_add(1);
                wake.reset(cell, *g);
                self.wake_slot[cell as usize] = u32::MAX;
                self.wake_free.push(cell);
            }
            Some(Detail::Signal(sw)) => {
                // An instance already taken and not delivered goes with the watcher.
                let sig = sw.signal;
                self.release_signal(sig, backend);
            }
            Some(Detail::Child(_)) => {
                // A child still running stays unreaped: the program's to wait for now.
                let h = match self.slots.at_mut(index).map(|w| &mut w.detail) {
                    Some(Detail::Child(cw)) => cw.watching.take(),
                    _ => None,
                };
                if let Some(h) = h {
                    self.stop_watching(index, h, backend);
                }
            }
            _ => {}
        }
        if zombie {
            if let Some(w) = self.slots.at_mut(index) {
                w.remove_pending = false;
                let old = core::mem::replace(
                    &mut w.detail,
                    Detail::Wake(WakeWatch {
                        cell: u32::MAX,
                        pending: false,
                    }),
                );
                if let Detail::Fd(f) = old {
                    w.detail = Detail::Zombie(f);
                }
            }
            self.mark_dirty(index);
            return Removal { id, fd: None };
        }
        self.unlist_dirty(index);
        let fd = match self.slots.remove(index, generation) {
            Some(Watch {
                detail: Detail::Fd(f),
                ..
            }) => Some(f.fd),
            _ => None,
        };
        Removal { id, fd }
    }
}

// Every claimed event is copied a few times on its way to the handler (claim, the call
// guard, the finish): keep the record small (the signal instance stays out of it).
static_assertions::const_assert!(core::mem::size_of::<Dispatch>() <= 48);
