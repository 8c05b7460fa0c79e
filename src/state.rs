//! The loop's state behind its lock, and every transition of the watcher state machine:
//! registration, enable/disable, timer arming, kernel events, dispatch bookkeeping, removal.
//!
//! Nothing here runs user code: methods return what the caller must do outside the lock
//! (run a handler, call `on_removed`). Kernel calls are made here, under the lock, so the
//! kernel's view and the slot's record of it change together.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::backend::{Backend, FdMode, KernelError, Registration, Token};
use crate::control::{KernelFaults, Usage};
use crate::error::{Errno, Error, Pool as PoolKind, UsageError, WatchKind};
use crate::id::WatchId;
use crate::interest::{Interest, Readiness};
use crate::pool::Pool;
use crate::queue::PendingQueue;
use crate::timer::{Clock, TimerHeap, catch_up};
use crate::waker::WakeShared;
use crate::watch::{Detail, FdWatch, Half, TimerWatch, WakeWatch, Watch};

/// How often a kernel change that failed is retried while one is outstanding.
const RETRY: Duration = Duration::from_millis(10);

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
}

/// A half claimed for dispatch.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Dispatch {
    pub(crate) id: WatchId,
    pub(crate) half: usize,
    pub(crate) delivery: Delivery,
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
}

pub(crate) struct State {
    slots: Pool<Watch>,
    queue: PendingQueue,
    timers: [TimerHeap; 2],
    /// The deadline each clock is armed for in the backend.
    armed: [Option<u64>; 2],
    clock_dirty: [bool; 2],
    timers_used: usize,
    timers_cap: usize,
    wake_free: Vec<u32>,
    wake_gen: Box<[u32]>,
    wake_slot: Box<[u32]>,
    wakers_cap: usize,
    /// Slots whose kernel registration must be retried.
    dirty: Vec<u32>,
    pub(crate) batch_depth: u32,
    pub(crate) stop: bool,
    pub(crate) waiting: bool,
    interrupted: bool,
    faults: KernelFaults,
    oneshot: bool,
    threaded: bool,
    tag: u32,
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

impl State {
    pub(crate) fn new(cap: &Capacities, oneshot: bool, threaded: bool, tag: u32) -> Option<Self> {
        let slots = Pool::with_capacity(cap.watchers)?;
        let queue = PendingQueue::with_nodes(cap.watchers * 2)?;
        let timers = [
            TimerHeap::new(cap.watchers, cap.timers)?,
            TimerHeap::new(cap.watchers, cap.timers)?,
        ];
        let mut wake_free = Vec::new();
        wake_free.try_reserve_exact(cap.wakers).ok()?;
        wake_free.extend((0..cap.wakers as u32).rev());
        let mut wake_gen = Vec::new();
        wake_gen.try_reserve_exact(cap.wakers).ok()?;
        wake_gen.resize(cap.wakers, 0u32);
        let mut wake_slot = Vec::new();
        wake_slot.try_reserve_exact(cap.wakers).ok()?;
        wake_slot.resize(cap.wakers, u32::MAX);
        let mut dirty = Vec::new();
        dirty.try_reserve_exact(cap.watchers).ok()?;
        Some(State {
            slots,
            queue,
            timers,
            armed: [None, None],
            clock_dirty: [false, false],
            timers_used: 0,
            timers_cap: cap.timers,
            wake_free,
            wake_gen: wake_gen.into_boxed_slice(),
            wake_slot: wake_slot.into_boxed_slice(),
            wakers_cap: cap.wakers,
            dirty,
            batch_depth: 0,
            stop: false,
            waiting: false,
            interrupted: false,
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
        }
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
            Some(w) if !w.remove_pending && !matches!(w.detail, Detail::Zombie(_)) => Ok(id.index),
            _ => Err(UsageError::Stale),
        }
    }

    pub(crate) fn contains(&self, id: WatchId) -> bool {
        self.lookup(id).is_ok()
    }

    pub(crate) fn kind(&self, index: u32) -> Option<WatchKind> {
        self.slots.at(index).map(Watch::kind)
    }

    #[inline]
    fn interrupt(&mut self, wake: &WakeShared) {
        if self.threaded && self.waiting && !self.interrupted {
            self.interrupted = true;
            wake.notify();
        }
    }

    /// Queue half `h`: it becomes disabled while queued. Events queued while a batch runs
    /// wait for the next batch.
    #[inline]
    fn queue_half(&mut self, index: u32, h: usize, wake: &WakeShared) {
        let in_batch = self.batch_depth > 0;
        let Some(w) = self.slots.at_mut(index) else {
            return;
        };
        if enqueue(&mut self.queue, in_batch, &mut w.halves[h], node(index, h)) {
            self.interrupt(wake);
        }
    }

    /// Queue half `h` if it is enabled, idle and has something to deliver.
    #[inline]
    fn maybe_queue(&mut self, index: u32, h: usize, wake: &WakeShared) {
        let Some(w) = self.slots.at(index) else {
            return;
        };
        let half = &w.halves[h];
        if half.enabled && !half.queued && !half.running && !half.removed && w.has_pending(h) {
            self.queue_half(index, h, wake);
        }
    }

    fn dequeue_half(&mut self, index: u32, h: usize) {
        let Some(w) = self.slots.at_mut(index) else {
            return;
        };
        let half = &mut w.halves[h];
        if half.queued {
            half.queued = false;
            self.queue.remove(node(index, h));
        }
    }

    #[cold]
    fn mark_dirty(&mut self, index: u32) {
        if let Some(w) = self.slots.at_mut(index) {
            if !w.dirty {
                w.dirty = true;
                // Capacity is one entry per slot and a slot is listed once: no reallocation.
                self.dirty.push(index);
            }
        }
    }

    /// Bring the kernel registration of an fd watcher in line with its halves.
    fn sync_kernel<B: Backend>(&mut self, index: u32, backend: &B) {
        let oneshot = self.oneshot;
        let generation = self.slots.generation(index).unwrap_or(0);
        let Some(w) = self.slots.at_mut(index) else {
            return;
        };
        if !matches!(&w.detail, Detail::Fd(f) if !f.emulated) {
            return;
        }
        let want = Registration {
            interest: w.desired_interest(oneshot),
            oneshot,
        };
        let Detail::Fd(f) = &mut w.detail else { return };
        let needed = if want.interest.is_empty() {
            // Disabled: the kernel may keep reporting only errors, once.
            !f.fired && !f.kernel.interest.is_empty()
        } else {
            f.fired || f.kernel != want
        };
        if !needed {
            return;
        }
        let Some(fd) = f.fd.as_ref() else { return };
        match backend.modify_fd(fd.as_fd(), token(index, generation), f.kernel, want) {
            Ok(()) => {
                f.kernel = want;
                f.fired = false;
            }
            Err(e) => {
                self.fault(e);
                self.mark_dirty(index);
            }
        }
    }

    /// Register an fd watcher. On failure the fd comes back with the error.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_fd<B: Backend>(
        &mut self,
        fd: OwnedFd,
        interest: Interest,
        bidi: bool,
        priorities: [i32; 2],
        enabled: [bool; 2],
        allow_emulation: bool,
        backend: &B,
        wake: &WakeShared,
    ) -> Result<u32, (Error, OwnedFd)> {
        let halves = if bidi {
            [
                Half::new(priorities[0], enabled[0]),
                Half::new(priorities[1], enabled[1]),
            ]
        } else {
            [Half::new(priorities[0], enabled[0]), Half::absent()]
        };
        let w = Watch::new(
            halves,
            Detail::Fd(FdWatch {
                fd: None,
                interest,
                bidi,
                emulated: false,
                kernel: Registration {
                    interest: Interest::NONE,
                    oneshot: self.oneshot,
                },
                fired: false,
            }),
        );
        let reg = Registration {
            interest: w.desired_interest(self.oneshot),
            oneshot: self.oneshot,
        };
        let Ok((index, generation)) = self.slots.insert(w) else {
            return Err((Error::Capacity(PoolKind::Watchers), fd));
        };
        let refused = match backend.add_fd(fd.as_fd(), token(index, generation), reg) {
            Ok(FdMode::Emulated) if !allow_emulation => Some(Error::NotPollable),
            Ok(mode) => {
                if let Some(Watch {
                    detail: Detail::Fd(f),
                    ..
                }) = self.slots.at_mut(index)
                {
                    f.emulated = mode == FdMode::Emulated;
                    f.kernel = reg;
                }
                None
            }
            Err(KernelError {
                errno: Errno::EXIST,
                ..
            }) => Some(Error::AlreadyRegistered),
            Err(KernelError { call, errno }) => Some(Error::Kernel { call, errno }),
        };
        if let Some(e) = refused {
            // Nothing was registered: release the slot (its generation moves on, harmlessly).
            self.slots.remove(index, generation);
            return Err((e, fd));
        }
        if let Some(Watch {
            detail: Detail::Fd(f),
            ..
        }) = self.slots.at_mut(index)
        {
            f.fd = Some(fd);
        }
        for h in 0..2 {
            self.maybe_queue(index, h, wake);
        }
        Ok(index)
    }

    pub(crate) fn add_timer(&mut self, clock: Clock, priority: i32) -> Result<u32, Error> {
        if self.timers_used >= self.timers_cap {
            return Err(Error::Capacity(PoolKind::Timers));
        }
        let w = Watch::new(
            [Half::new(priority, true), Half::absent()],
            Detail::Timer(TimerWatch {
                clock,
                deadline: 0,
                interval: 0,
                expirations: 0,
            }),
        );
        let (index, _) = self
            .slots
            .insert(w)
            .map_err(|_| Error::Capacity(PoolKind::Watchers))?;
        self.timers_used += 1;
        Ok(index)
    }

    /// Register a wake watcher; returns the slot, the wake cell and its generation.
    pub(crate) fn add_wake(
        &mut self,
        priority: i32,
        wake: &WakeShared,
    ) -> Result<(u32, u32, u32), Error> {
        if self.slots.peek_free().is_none() {
            return Err(Error::Capacity(PoolKind::Watchers));
        }
        let Some(cell) = self.wake_free.pop() else {
            return Err(Error::Capacity(PoolKind::Wakers));
        };
        let w = Watch::new(
            [Half::new(priority, true), Half::absent()],
            Detail::Wake(WakeWatch {
                cell,
                pending: false,
            }),
        );
        let Ok((index, _)) = self.slots.insert(w) else {
            self.wake_free.push(cell);
            return Err(Error::Capacity(PoolKind::Watchers));
        };
        let generation = self.wake_gen[cell as usize];
        self.wake_slot[cell as usize] = index;
        wake.reset(cell, generation);
        Ok((index, cell, generation))
    }

    pub(crate) fn wake_handle(&self, index: u32) -> Result<(u32, u32), UsageError> {
        match self.slots.at(index).map(|w| &w.detail) {
            Some(Detail::Wake(k)) => Ok((k.cell, self.wake_gen[k.cell as usize])),
            Some(_) => Err(UsageError::WrongKind {
                op: "waker",
                kind: self.kind_of(index),
            }),
            None => Err(UsageError::Stale),
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

    pub(crate) fn set_interest<B: Backend>(
        &mut self,
        index: u32,
        interest: Interest,
        backend: &B,
    ) -> Result<(), UsageError> {
        if interest.is_empty() {
            return Err(UsageError::InvalidArgument("interest must not be empty"));
        }
        let kind = self.kind_of(index);
        let Some(w) = self.slots.at_mut(index) else {
            return Err(UsageError::Stale);
        };
        match &mut w.detail {
            Detail::Fd(f) if !f.bidi => {
                f.interest = interest;
                w.halves[0].ready = w.halves[0].ready & Readiness::mask_for(interest);
            }
            _ => {
                return Err(UsageError::WrongKind {
                    op: "set_interest",
                    kind,
                });
            }
        }
        self.sync_kernel(index, backend);
        Ok(())
    }

    /// Arm a timer for `deadline` (ns on its clock's scale) repeating every `interval` ns
    /// (0: one-shot).
    pub(crate) fn arm_timer<B: Backend>(
        &mut self,
        index: u32,
        deadline: u64,
        interval: u64,
        backend: &B,
    ) -> Result<(), UsageError> {
        let clock = self.timer_clock(index, "arm_timer")?;
        self.dequeue_half(index, 0);
        let Some(w) = self.slots.at_mut(index) else {
            return Err(UsageError::Stale);
        };
        if let Detail::Timer(t) = &mut w.detail {
            t.deadline = deadline;
            t.interval = interval;
            t.expirations = 0;
        }
        w.halves[0].enabled = true;
        self.timers[clock.index()].set(index, deadline);
        self.sync_clock(clock, false, backend);
        Ok(())
    }

    pub(crate) fn stop_timer<B: Backend>(
        &mut self,
        index: u32,
        backend: &B,
    ) -> Result<(), UsageError> {
        let clock = self.timer_clock(index, "stop_timer")?;
        self.dequeue_half(index, 0);
        if let Some(Watch {
            detail: Detail::Timer(t),
            ..
        }) = self.slots.at_mut(index)
        {
            t.expirations = 0;
        }
        self.timers[clock.index()].remove(index);
        self.sync_clock(clock, false, backend);
        Ok(())
    }

    pub(crate) fn timer_clock(&self, index: u32, op: &'static str) -> Result<Clock, UsageError> {
        match self.slots.at(index).map(|w| &w.detail) {
            Some(Detail::Timer(t)) => Ok(t.clock),
            Some(_) => Err(UsageError::WrongKind {
                op,
                kind: self.kind_of(index),
            }),
            None => Err(UsageError::Stale),
        }
    }

    /// Keep the backend's deadline for `clock` no later than the earliest timer. Moving it
    /// later is left until it fires (`fired`), which saves a system call per re-arm for
    /// timers pushed back on activity (idle timeouts).
    fn sync_clock<B: Backend>(&mut self, clock: Clock, fired: bool, backend: &B) {
        let c = clock.index();
        let head = self.timers[c].peek().map(|(_, d)| d);
        let earlier = match (head, self.armed[c]) {
            (Some(h), Some(a)) => h < a,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !(fired || earlier || self.clock_dirty[c]) || (head == self.armed[c] && !fired) {
            return;
        }
        match backend.set_deadline(clock, head) {
            Ok(()) => {
                self.armed[c] = head;
                self.clock_dirty[c] = false;
            }
            Err(e) => {
                self.fault(e);
                self.clock_dirty[c] = true;
            }
        }
    }

    /// Count the expirations of every due timer, queue those enabled, and re-arm the clocks.
    pub(crate) fn process_timers<B: Backend>(
        &mut self,
        fired: [bool; 2],
        backend: &B,
        wake: &WakeShared,
    ) {
        for clock in Clock::ALL {
            let c = clock.index();
            if self.timers[c].len() > 0 {
                let now = backend.now(clock);
                while let Some((index, due)) = self.timers[c].peek() {
                    if due > now {
                        break;
                    }
                    let Some(Watch {
                        detail: Detail::Timer(t),
                        ..
                    }) = self.slots.at_mut(index)
                    else {
                        // Unreachable: timers leave the heap when removed.
                        self.timers[c].remove(index);
                        continue;
                    };
                    if t.interval > 0 {
                        let (k, next) = catch_up(due, t.interval, now);
                        t.expirations = t.expirations.saturating_add(k);
                        t.deadline = next;
                        self.timers[c].set(index, next);
                    } else {
                        t.expirations = t.expirations.saturating_add(1);
                        self.timers[c].remove(index);
                    }
                    self.maybe_queue(index, 0, wake);
                }
            }
            self.sync_clock(clock, fired[c], backend);
        }
    }

    /// Deliver the wakes the lock-free list collected.
    pub(crate) fn process_wakes(&mut self, wake: &WakeShared) {
        wake.take(|cell, generation| {
            if self.wake_gen.get(cell as usize) != Some(&generation) {
                return;
            }
            let index = self.wake_slot[cell as usize];
            if let Some(Watch {
                detail: Detail::Wake(k),
                ..
            }) = self.slots.at_mut(index)
            {
                k.pending = true;
            }
            self.maybe_queue(index, 0, wake);
        });
    }

    /// A kernel fd event: merge it into the watcher's halves, queue what is enabled.
    #[inline(always)]
    pub(crate) fn on_fd_event<B: Backend>(
        &mut self,
        tok: Token,
        ready: Readiness,
        backend: &B,
        wake: &WakeShared,
    ) {
        let index = (tok.0 & 0xffff_ffff) as u32;
        let generation = (tok.0 >> 32) as u32;
        let in_batch = self.batch_depth > 0;
        let Some(w) = self.slots.get_mut(index, generation) else {
            // An event that outlived its watcher (removed, slot maybe reused): dropped.
            return;
        };
        let Detail::Fd(f) = &mut w.detail else {
            return;
        };
        // Fast path, the single-threaded steady state: a plain fd, level-triggered and armed,
        // enabled and idle. Queue it; the registration stays as it is.
        if !f.bidi && !f.kernel.oneshot && !f.kernel.interest.is_empty() && !f.fired {
            let bits = ready & Readiness::mask_for(f.interest);
            let half = &mut w.halves[0];
            if half.enabled && !half.queued && !half.running && !bits.is_empty() {
                half.ready |= bits;
                half.queued = true;
                half.enabled = false;
                if in_batch {
                    self.queue.defer(node(index, 0), half.priority);
                } else {
                    self.queue.push(node(index, 0), half.priority);
                }
                self.interrupt(wake);
                return;
            }
        }
        if f.kernel.oneshot || f.kernel.interest.is_empty() {
            f.fired = true;
        }
        let (fired, bidi, interest) = (f.fired, f.bidi, f.interest);
        let mut queued = false;
        for h in 0..if bidi { 2 } else { 1 } {
            let half_interest = match (bidi, h) {
                (false, _) => interest,
                (true, 0) => Interest::READ,
                (true, _) => Interest::WRITE,
            };
            let half = &mut w.halves[h];
            let bits = ready & Readiness::mask_for(half_interest);
            if half.removed || bits.is_empty() {
                continue;
            }
            if half.queued || half.running {
                half.ready |= bits;
            } else if half.enabled {
                half.ready |= bits;
                queued |= enqueue(&mut self.queue, in_batch, half, node(index, h));
            } else {
                half.ready |= bits & Readiness::STICKY;
            }
        }
        if queued {
            self.interrupt(wake);
        }
        // A level-triggered registration stays armed while a half is queued: nothing to
        // change unless the kernel disarmed it (one-shot) or the loop is one-shot.
        if self.oneshot || fired {
            self.sync_kernel(index, backend);
        }
    }

    /// Merge deferred events into the heap (start of a batch).
    pub(crate) fn merge_deferred(&mut self) {
        self.queue.merge_deferred();
    }

    /// Retry failed kernel changes; returns a wait timeout bound if some are still failing.
    pub(crate) fn retry_kernel<B: Backend>(&mut self, backend: &B) -> Option<Duration> {
        let n = self.dirty.len();
        for i in 0..n {
            let index = self.dirty[i];
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
        self.dirty.drain(..n);
        for clock in Clock::ALL {
            if self.clock_dirty[clock.index()] {
                self.sync_clock(clock, true, backend);
            }
        }
        let mut bound = None;
        if !self.dirty.is_empty() {
            bound = Some(RETRY);
        }
        for clock in Clock::ALL {
            let c = clock.index();
            if self.clock_dirty[c] {
                // The timer fd is out of order: wake in time for the earliest deadline.
                let until = self.timers[c]
                    .peek()
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
        let Some(fd) = f.fd.as_ref() else { return };
        match backend.remove_fd(fd.as_fd(), token(index, generation), f.kernel) {
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
    pub(crate) fn next_dispatch(&mut self) -> Option<Dispatch> {
        loop {
            let n = self.queue.pop()?;
            let index = n / 2;
            let h = (n % 2) as usize;
            let Some((generation, w)) = self.slots.at_mut_gen(index) else {
                continue;
            };
            w.halves[h].queued = false;
            if w.running {
                // The other half's handler holds the handler cell (another thread): run this
                // one in the next batch.
                let prio = w.halves[h].priority;
                w.halves[h].queued = true;
                self.queue.defer(n, prio);
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
                    let fd = f.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd());
                    Delivery::Fd {
                        fd,
                        ready,
                        half: f.bidi.then_some(h),
                    }
                }
                Detail::Timer(t) => Delivery::Timer(core::mem::take(&mut t.expirations)),
                Detail::Wake(k) => {
                    k.pending = false;
                    Delivery::Wake
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

    /// Apply a handler's answer. Returns a removal if the watcher's registration ended.
    #[inline(always)]
    pub(crate) fn finish_dispatch<B: Backend>(
        &mut self,
        d: &Dispatch,
        rearm: crate::handler::Rearm,
        backend: &B,
        wake: &WakeShared,
    ) -> Option<Removal> {
        use crate::handler::Rearm;
        let index = d.id.index;
        let h = d.half;
        let in_batch = self.batch_depth > 0;
        let oneshot = self.oneshot;
        let w = self.slots.at_mut(index)?;
        w.running = false;
        w.halves[h].running = false;
        // Fast path: a level-triggered fd re-armed with nothing pending. Its registration
        // stayed armed while it ran, so only the flag changes.
        if rearm == Rearm::Rearm && !oneshot && !w.remove_pending {
            if let Detail::Fd(f) = &w.detail {
                if !f.emulated && !f.fired && w.halves[h].ready.is_empty() {
                    w.halves[h].enabled = true;
                    return None;
                }
            }
        }
        if w.remove_pending {
            return Some(self.detach(index, backend, wake));
        }
        let other_present = !w.halves[1 - h].removed;
        let mut queued = false;
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
                if let Detail::Wake(k) = &mut w.detail {
                    k.pending = true;
                }
                queued = enqueue(&mut self.queue, in_batch, &mut w.halves[h], node(index, h));
            }
        }
        let pending = w.has_pending(h);
        let fired = matches!(&w.detail, Detail::Fd(f) if f.fired);
        let half = &mut w.halves[h];
        if half.enabled && pending {
            queued |= enqueue(&mut self.queue, in_batch, half, node(index, h));
        }
        // Level-triggered and still armed (enabled or queued again), as it was while running:
        // the kernel already holds the right registration.
        let unchanged = !oneshot && (half.enabled || half.queued) && !fired;
        if queued {
            self.interrupt(wake);
        }
        if !unchanged {
            self.sync_kernel(index, backend);
        }
        None
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
                if let Some(fd) = f.fd.as_ref() {
                    match backend.remove_fd(fd.as_fd(), token(index, generation), f.kernel) {
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
            }
            Some(Detail::Timer(t)) => {
                let c = t.clock.index();
                self.timers[c].remove(index);
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
        let fd = match self.slots.remove(index, generation) {
            Some(Watch {
                detail: Detail::Fd(f),
                ..
            }) => f.fd,
            _ => None,
        };
        Removal { id, fd }
    }
}
