//! Timer watchers: registration, arming, and counting expirations against the clocks.

use super::{State, live_mut, node, queue_if_pending, unqueue};
use crate::backend::Backend;
use crate::error::{Error, Pool as PoolKind, UsageError};
use crate::id::WatchId;
use crate::timer::{Clock, catch_up};
use crate::waker::WakeShared;
use crate::watch::{Detail, Half, TimerWatch, Watch};

impl State {
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

    /// Arm live timer `id` for the deadline `at` gives on its clock (ns on that clock's
    /// scale), repeating every `interval` ns (0: one-shot). One slot lookup: this is the
    /// re-arm of an idle timer on every event.
    #[inline]
    pub(crate) fn arm_timer<B: Backend>(
        &mut self,
        id: WatchId,
        at: impl FnOnce(Clock, &mut Option<u64>) -> Result<u64, UsageError>,
        interval: u64,
        backend: &B,
    ) -> Result<(), UsageError> {
        let index = id.index;
        let w = live_mut(&mut self.slots, self.tag, id)?;
        let Detail::Timer(t) = &mut w.detail else {
            return Err(UsageError::WrongKind {
                op: "arm_timer",
                kind: w.kind(),
            });
        };
        let clock = t.clock;
        // Single-threaded, inside a run call, the loop's time is kept for the rest of the
        // pass; outside one, it is read for this arm alone. A threaded loop has no one pass
        // (a runner may sleep in a wait while another thread arms, its reading growing old):
        // every arm reads the clock.
        let mut fresh = None;
        let loop_time = if self.runners.active > 0 && !self.threaded {
            &mut self.loop_time[clock.index()]
        } else {
            &mut fresh
        };
        let deadline = at(clock, loop_time)?;
        t.deadline = deadline;
        t.interval = interval;
        t.expirations = 0;
        let half = &mut w.halves[0];
        half.enabled = true;
        // A queued expiry of the old arming is dropped.
        unqueue(&mut self.queue, half, node(index, 0));
        let c = clock.index();
        self.timers.set(clock, index, deadline);
        // The backend is armed no later than every timer (`sync_clock`): a deadline at or
        // after its armed one changes nothing there (a timer moved later, or another timer
        // now first, is no earlier than what was armed). The idle-timer re-arm ends here.
        if matches!(self.armed[c], Some(a) if a <= deadline) && !self.clock_dirty[c] {
            return Ok(());
        }
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
        self.timers.remove(clock, index);
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
    pub(super) fn sync_clock<B: Backend>(&mut self, clock: Clock, fired: bool, backend: &B) {
        let c = clock.index();
        let head = self.timers.peek(clock).map(|(_, d)| d);
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
                self.retry_soon();
            }
        }
    }

    /// Count the expirations of every due timer, queue those enabled, and re-arm the clocks.
    #[inline(always)]
    pub(crate) fn process_timers<B: Backend>(
        &mut self,
        fired: [bool; 2],
        backend: &B,
        wake: &WakeShared,
    ) {
        // No timer pending, no clock fired, no clock change outstanding: nothing to count and
        // nothing `sync_clock` would change (its head is `None`, so it only acts when fired
        // or dirty). The common case of a loop without timers, checked inline.
        if self.timers.is_empty()
            && !(fired[0] | fired[1] | self.clock_dirty[0] | self.clock_dirty[1])
        {
            return;
        }
        self.process_timers_slow(fired, backend, wake);
    }

    fn process_timers_slow<B: Backend>(
        &mut self,
        fired: [bool; 2],
        backend: &B,
        wake: &WakeShared,
    ) {
        let in_batch = self.deferring();
        let mut queued = false;
        for clock in Clock::ALL {
            let c = clock.index();
            if self.timers.len(clock) > 0 {
                let now = backend.now(clock);
                self.loop_time[c] = Some(now);
                while let Some((index, due)) = self.timers.peek(clock) {
                    if due > now {
                        break;
                    }
                    let Some(w) = self.slots.at_mut(index) else {
                        // Unreachable: timers leave the heap when removed.
                        self.timers.remove(clock, index);
                        continue;
                    };
                    let Detail::Timer(t) = &mut w.detail else {
                        self.timers.remove(clock, index);
                        continue;
                    };
                    if t.interval > 0 {
                        let (k, next) = catch_up(due, t.interval, now);
                        t.expirations = t.expirations.saturating_add(k);
                        t.deadline = next;
                        self.timers.set(clock, index, next);
                    } else {
                        t.expirations = t.expirations.saturating_add(1);
                        self.timers.remove(clock, index);
                    }
                    // With the slot in hand (`maybe_queue` would look it up again).
                    queued |= queue_if_pending(&mut self.queue, in_batch, w, index, 0);
                }
            }
            self.sync_clock(clock, fired[c], backend);
        }
        if queued {
            self.interrupt(wake);
        }
    }
}
