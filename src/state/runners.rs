//! The run calls in progress: how many, how many wait in the backend, the stop epoch, the
//! events buffers, and the hand-off of work queued in user space to a runner that sleeps.
//!
//! The protocol, in one place (every field is read and written under the state lock):
//!
//! - A call **enters** (`enter`): it counts itself `active` and notes the stop `epoch`; a
//!   `stop()` made while no call was active (`stop_next`) makes it return at once instead.
//!   It takes a free events buffer, or waits for one on the lock's condition variable
//!   (`buffer_waiters`); `poll` does not wait, and without a buffer it only runs what is
//!   already queued.
//! - Before blocking in the backend's wait, a call counts itself in `in_wait`, in the same
//!   lock section in which it saw nothing it could claim. So whoever queues work later sees
//!   it there.
//! - Whoever queues work in user space while a runner is counted in `in_wait` pokes the
//!   backend's notifier, unless a poke is already outstanding (`handoff`): at most one
//!   hand-off wake is in flight. The runner that takes the wake in clears `handoff`, claims
//!   work, and passes the rest on the same way: a chain, one runner at a time, so nothing
//!   sits queued while a runner sleeps, and no wake goes to a herd. A runner taking in a
//!   wait's events (`harvesting`) pokes nobody for each one: it takes one itself and hands
//!   off only what is left over.
//! - `stop()` moves the epoch on: every call that started in the old epoch ends after its
//!   current handler, and each one that ends wakes the next sleeper, until none is left.
//! - A call **leaves** (`leave`): it gives its buffer back (waking a call waiting for one)
//!   and, if work is left queued and a runner sleeps, hands it off.
//!
//! Why no wake-up is lost: a runner sleeps in the backend only after a lock section that
//! found nothing claimable and counted it in `in_wait`; any later enqueue happens in a later
//! lock section, sees the count, and either pokes or finds a poke outstanding. A poke is
//! level-triggered (an eventfd, a kqueue user event, a pipe), so it also reaches a runner
//! that is between its lock section and its wait, and `handoff` is only cleared by the
//! runner that took the poke in, in the same lock section in which it looks at the queue.

use super::State;

/// What `enter` found.
pub(crate) enum Enter {
    /// A `stop()` was waiting for the next call: return at once.
    Stopped,
    /// Counted in; the stop epoch the call runs in.
    Running(u64),
}

#[derive(Debug)]
pub(crate) struct Runners {
    /// Run calls in progress (counted between `enter` and `leave`).
    pub(crate) active: u32,
    /// Of those, how many are in (or about to enter) a backend wait that may block.
    pub(crate) in_wait: u32,
    /// A notifier poke for a hand-off is in flight and not yet taken in.
    pub(crate) handoff: bool,
    /// Moved on by every `stop()` made while calls are active.
    pub(crate) epoch: u64,
    /// A `stop()` came while no call was active: the next call returns at once.
    pub(crate) stop_next: bool,
    /// Calls sleeping until a buffer is free.
    pub(crate) buffer_waiters: u32,
    /// Of the calls in `in_wait`, those a `stop()` has ended but that have not woken yet.
    /// While any remain, a call of the new epoch that takes a poke passes it on, and one that
    /// would block steps aside (`aside`) instead of sleeping in the backend, so that the poke
    /// reaches them and not it.
    pub(crate) stale_waiting: u32,
    /// Calls sleeping on the condition variable until `stale_waiting` is 0.
    pub(crate) aside: u32,
    /// A runner is taking in a wait's events: enqueues do not poke (it hands off what it
    /// cannot take once it is done).
    pub(crate) harvesting: bool,
    /// The notifier must be poked once the lock is released.
    pub(crate) notify_due: bool,
    /// Free events buffers (indices), with room for all of them.
    free: Vec<u32>,
    /// How many buffers there are.
    buffers: usize,
}

impl Runners {
    pub(crate) fn new(buffers: usize) -> Option<Self> {
        let mut free = Vec::new();
        free.try_reserve_exact(buffers).ok()?;
        free.extend((0..buffers as u32).rev());
        Some(Runners {
            active: 0,
            in_wait: 0,
            handoff: false,
            epoch: 0,
            stop_next: false,
            buffer_waiters: 0,
            stale_waiting: 0,
            aside: 0,
            harvesting: false,
            notify_due: false,
            free,
            buffers,
        })
    }
}

impl State {
    /// Count a run call in (see the module docs).
    pub(crate) fn enter_call(&mut self) -> Enter {
        let r = &mut self.runners;
        if r.stop_next {
            r.stop_next = false;
            return Enter::Stopped;
        }
        r.active += 1;
        Enter::Running(r.epoch)
    }

    /// A free events buffer for the calling run call.
    pub(crate) fn take_buffer(&mut self) -> Option<u32> {
        self.runners.free.pop()
    }

    /// How many events buffers run calls hold now.
    pub(crate) fn holding_buffers(&self) -> u32 {
        let r = &self.runners;
        r.buffers.saturating_sub(r.free.len()) as u32
    }

    /// Whether a call that started in `epoch` must end.
    pub(crate) fn stopped(&self, epoch: u64) -> bool {
        self.runners.epoch != epoch
    }

    /// Count a run call out, giving its buffer back; `stopped`: it ends because of a stop.
    /// Returns whether a call waits for a buffer (the caller wakes it after unlocking).
    #[inline]
    pub(crate) fn leave_call(&mut self, buffer: Option<u32>, stopped: bool) -> bool {
        let r = &mut self.runners;
        r.active = r.active.saturating_sub(1);
        if let Some(b) = buffer {
            // Room for every buffer was reserved, and a buffer is given back once.
            if r.free.len() < r.buffers {
                r.free.push(b);
            }
        }
        // Whatever is left queued goes to a sleeping runner; a stop reaches the next one.
        if self.queue.len() > 0 || stopped {
            self.hand_off();
        }
        buffer.is_some() && self.runners.buffer_waiters > 0
    }

    /// End a run call that started in `epoch`, under the lock: the loop's time is dropped
    /// (outside run calls `Deadline::AfterLoopTime` reads the clock afresh), the call is
    /// counted out and its buffer given back (`leave_call`). Returns (whether a call waits
    /// for a buffer, whether the notifier must be poked after unlocking: the loop's fd is
    /// lent to an embedding loop and work is left queued here). The one ending of a call,
    /// whether it returns normally or unwinds.
    #[inline(always)]
    pub(crate) fn end_call(&mut self, epoch: u64, buffer: Option<u32>) -> (bool, bool) {
        self.loop_time = [None, None];
        let stopped = self.stopped(epoch);
        let waiters = self.leave_call(buffer, stopped);
        (waiters, self.embedded && self.has_queued())
    }

    /// `stop()`: end every call in progress after its current handler, or the next call if
    /// none is in progress. Returns whether calls sleep on the condition variable (to be
    /// woken).
    pub(crate) fn request_stop(&mut self) -> bool {
        let r = &mut self.runners;
        if r.active == 0 {
            r.stop_next = true;
            return false;
        }
        r.epoch = r.epoch.wrapping_add(1);
        // Every call asleep in the backend now started before this stop.
        r.stale_waiting = r.in_wait;
        self.hand_off();
        self.runners.buffer_waiters > 0 || self.runners.aside > 0
    }

    /// A call that was counted in `in_wait` is awake again (its wait returned). Returns
    /// whether calls stepped aside for stale sleepers may go on (to be woken after unlocking).
    pub(crate) fn left_wait(&mut self, epoch: u64) -> bool {
        let stale = self.stopped(epoch);
        let r = &mut self.runners;
        r.in_wait = r.in_wait.saturating_sub(1);
        if stale && r.stale_waiting > 0 {
            r.stale_waiting -= 1;
            return r.stale_waiting == 0 && r.aside > 0;
        }
        false
    }

    /// After taking a wait's events in: while calls a stop ended still sleep, pass the poke on
    /// (this call may have taken the one meant for them).
    pub(crate) fn pass_stop_on(&mut self) {
        if self.runners.stale_waiting > 0 {
            self.hand_off();
        }
    }

    /// Poke a runner sleeping in the backend, unless a poke is already on its way. The poke
    /// itself is made after the lock is released (`notify_due`).
    #[inline]
    pub(crate) fn hand_off(&mut self) {
        let r = &mut self.runners;
        if r.in_wait > 0 && !r.handoff {
            r.handoff = true;
            r.notify_due = true;
        }
    }

    /// A runner took a poke in: the next enqueue may poke again.
    pub(crate) fn took_wake(&mut self) {
        self.runners.handoff = false;
    }

    /// Whether the notifier must be poked now that the lock is released (and forget it).
    #[inline]
    pub(crate) fn take_notify(&mut self) -> bool {
        core::mem::take(&mut self.runners.notify_due)
    }
}
