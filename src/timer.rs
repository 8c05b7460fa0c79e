//! Clocks, time arithmetic and the timer heap.
//!
//! Internally a time is a `u64` count of nanoseconds on one clock's scale (the kernel's
//! `CLOCK_MONOTONIC` or `CLOCK_REALTIME` for the real backends, virtual time for simulated
//! ones). The public API speaks `std::time`: [`Instant`] for the monotonic clock,
//! [`SystemTime`] for the system clock, [`Duration`] for intervals. Every conversion and sum
//! saturates: a deadline too far to represent becomes "never" (year 2554 on the system clock,
//! 584 years of uptime on the monotonic one), a time before the clock's origin becomes "already
//! due"; nothing overflows or panics.

use std::time::{Duration, Instant, SystemTime};

use crate::heap::{HeapEntry, IndexedHeap, Side};

/// The clock a timer runs on (fixed at registration).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum Clock {
    /// Time since boot; never jumps. Deadlines are [`Instant`]s.
    Monotonic,
    /// Wall-clock time; follows `settimeofday`/NTP steps. Deadlines are [`SystemTime`]s. A
    /// timer armed for an absolute wall-clock time fires when the wall clock reaches it, even
    /// if the clock was stepped meanwhile; a relative arm is converted to an absolute time
    /// when it is made, so a step after arming moves it.
    System,
}

impl Clock {
    pub(crate) const ALL: [Clock; 2] = [Clock::Monotonic, Clock::System];

    pub(crate) fn index(self) -> usize {
        match self {
            Clock::Monotonic => 0,
            Clock::System => 1,
        }
    }
}

/// When a timer first expires.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Deadline {
    /// After this long from now, on the timer's own clock. `Duration::ZERO` expires at once.
    After(Duration),
    /// After this long from the loop's time: inside a run call of a single-threaded loop,
    /// the timer's clock as the loop read it since its latest wait began (it reads each
    /// clock with a timer pending once after every wait; if it has not, the arm reads it and
    /// later arms of the same pass reuse that); otherwise, and always on a `ThreadedLoop`
    /// (whose runners have no one pass: one may sleep in a wait while another thread arms),
    /// now, as [`After`](Self::After). Re-arming an idle timer on every event then
    /// costs a clock read per pass instead of one per event (libev's `ev_now`). The deadline
    /// is early by at most how long the handlers of this pass have run so far: for timeouts
    /// measured in seconds, not for precise intervals (use [`After`](Self::After)).
    ///
    /// ```
    /// # use dasynq::{Clock, Deadline, EventLoop, FnHandler, Priority, Rearm};
    /// # use std::time::Duration;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lp = EventLoop::<FnHandler>::builder().build()?;
    /// let idle = lp.add_timer(Clock::Monotonic, Priority::DEFAULT,
    ///     FnHandler::new(|_, _| Rearm::Remove))?;
    /// // In a connection's handler, on every read: push its idle timeout back.
    /// lp.arm_timer(idle, Deadline::AfterLoopTime(Duration::from_secs(60)), None)?;
    /// # Ok(())
    /// # }
    /// ```
    AfterLoopTime(Duration),
    /// At this instant (monotonic timers only). A past instant expires at once.
    At(Instant),
    /// At this wall-clock time (system-clock timers only). A past time expires at once.
    AtSystem(SystemTime),
}

/// Saturating conversion of a duration to nanoseconds.
pub(crate) fn duration_ns(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

/// Nanoseconds since the Unix epoch; times before it saturate to 0.
pub(crate) fn system_ns(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, duration_ns)
}

/// The `SystemTime` for nanoseconds since the Unix epoch.
pub(crate) fn system_time(ns: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_nanos(ns))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Ties `Instant` (opaque) to the backend's monotonic nanosecond scale.
#[derive(Copy, Clone, Debug)]
pub(crate) struct MonoAnchor {
    pub(crate) instant: Instant,
    pub(crate) ns: u64,
}

impl MonoAnchor {
    /// Nanoseconds on the backend's scale for `t`; saturates at both ends.
    #[inline]
    pub(crate) fn to_ns(self, t: Instant) -> u64 {
        match t.checked_duration_since(self.instant) {
            Some(after) => self.ns.saturating_add(duration_ns(after)),
            None => self
                .ns
                .saturating_sub(duration_ns(self.instant.saturating_duration_since(t))),
        }
    }

    /// The `Instant` for nanoseconds on the backend's scale (clamped to what `Instant` can
    /// represent).
    pub(crate) fn to_instant(self, ns: u64) -> Instant {
        if ns >= self.ns {
            self.instant
                .checked_add(Duration::from_nanos(ns - self.ns))
                .unwrap_or(self.instant)
        } else {
            self.instant
                .checked_sub(Duration::from_nanos(self.ns - ns))
                .unwrap_or(self.instant)
        }
    }
}

/// For a periodic timer due at `due` with `interval > 0`, at `now >= due`: how many
/// expirations have happened and when the next one is. The phase is kept: the next deadline is
/// `due + k * interval`, never `now + interval`.
pub(crate) fn catch_up(due: u64, interval: u64, now: u64) -> (u64, u64) {
    debug_assert!(interval > 0 && now >= due);
    let k = (now - due) / interval + 1;
    (k, due.saturating_add(k.saturating_mul(interval)))
}

/// The timers of both clocks, each clock's earliest first: two [`IndexedHeap`]s sharing one
/// buffer of a place per timer (a timer's clock is fixed, so it is in one heap at most), keyed
/// by (deadline, arm sequence), so timers due at the same time fire in the order they were
/// armed. Re-arming and cancelling are O(log n) and leave no dead entries (calloop's cancel
/// leak is the bug to avoid).
#[derive(Debug)]
pub(crate) struct TimerHeaps {
    heap: IndexedHeap<TimerEntry>,
    next_seq: [u32; 2],
}

#[inline(always)]
fn side(clock: Clock) -> Side {
    match clock {
        Clock::Monotonic => Side::A,
        Clock::System => Side::B,
    }
}

/// A timer's place in its heap: ordered by deadline, then arm sequence (ties fire in arm
/// order). Two words: the deadline, and the sequence above the id (`seq << 32 | id`), so a
/// comparison is the deadline's and, on a tie, one more word's (the id never decides it,
/// sequences being distinct), and a move is two words. 16 bytes, four to a cache line: the
/// deadlines a sift compares sit side by side.
#[derive(Copy, Clone, Debug)]
struct TimerEntry {
    deadline: u64,
    seq_id: u64,
}

impl TimerEntry {
    #[inline(always)]
    fn new(deadline: u64, seq: u32, id: u32) -> Self {
        TimerEntry {
            deadline,
            seq_id: (u64::from(seq) << 32) | u64::from(id),
        }
    }
}

impl HeapEntry for TimerEntry {
    #[inline(always)]
    fn id(&self) -> u32 {
        // The low 32 bits (truncation is the point).
        self.seq_id as u32
    }
    #[inline(always)]
    fn before(&self, other: &Self) -> bool {
        self.deadline < other.deadline
            || (self.deadline == other.deadline && self.seq_id < other.seq_id)
    }
}

const _: () = assert!(core::mem::size_of::<TimerEntry>() == 16);

impl TimerHeaps {
    /// Heaps for ids `0..ids` holding at most `capacity` of them at once, on both clocks
    /// together.
    pub(crate) fn new(ids: usize, capacity: usize) -> Option<Self> {
        Some(TimerHeaps {
            heap: IndexedHeap::new(ids, capacity, TimerEntry::new(0, 0, 0))?,
            next_seq: [0, 0],
        })
    }

    /// Whether no timer is armed on either clock.
    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// How many timers of `clock` are armed.
    pub(crate) fn len(&self, clock: Clock) -> usize {
        self.heap.len(side(clock))
    }

    /// The earliest deadline on `clock` and its id.
    pub(crate) fn peek(&self, clock: Clock) -> Option<(u32, u64)> {
        self.heap.peek(side(clock)).map(|e| (e.id(), e.deadline))
    }

    /// Insert `id` on `clock` or move it to `deadline`. Returns false if the id is out of
    /// range or the heaps are full (the loop reserves a place per timer at registration, so
    /// they never are). An id stays on one clock while it is armed.
    #[inline]
    pub(crate) fn set(&mut self, clock: Clock, id: u32, deadline: u64) -> bool {
        let c = clock.index();
        let Some(&next) = self.next_seq.get(c) else {
            return false;
        };
        let seq = if next == u32::MAX {
            // The sequence would wrap (after 4 billion arms): number the clock's armed
            // timers again from 0, in their order, once.
            self.heap.renumber(side(clock), |k, rank| {
                *k = TimerEntry::new(k.deadline, rank, k.id())
            });
            self.heap.len(side(clock)) as u32
        } else {
            next
        };
        if let Some(n) = self.next_seq.get_mut(c) {
            *n = seq + 1;
        }
        self.heap
            .set(side(clock), TimerEntry::new(deadline, seq, id))
    }

    /// Tests: start `clock`'s arm sequence at `seq`.
    #[cfg(test)]
    fn with_seq(mut self, clock: Clock, seq: u32) -> Self {
        self.next_seq[clock.index()] = seq;
        self
    }

    /// Take `id` out of `clock`'s heap. Returns whether it was there.
    pub(crate) fn remove(&mut self, clock: Clock, id: u32) -> bool {
        self.heap.remove(side(clock), id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Clock = Clock::Monotonic;

    fn drain(h: &mut TimerHeaps, clock: Clock) -> Vec<(u32, u64)> {
        std::iter::from_fn(|| {
            let top = h.peek(clock)?;
            h.remove(clock, top.0);
            Some(top)
        })
        .collect()
    }

    #[test]
    fn later_rearm_of_the_head_does_not_delay_others() {
        // The original's defect B7: A@100, B@500, C@300; moving A to 1000 left C behind B.
        for clock in Clock::ALL {
            let mut h = TimerHeaps::new(8, 8).unwrap();
            h.set(clock, 0, 100);
            h.set(clock, 1, 500);
            h.set(clock, 2, 300);
            h.set(clock, 0, 1000);
            assert_eq!(drain(&mut h, clock), vec![(2, 300), (1, 500), (0, 1000)]);
        }
    }

    #[test]
    fn arm_order_survives_the_sequence_wrapping() {
        // Ids 0..4 armed for 7 just before the sequence wraps, 4..8 after it.
        for clock in Clock::ALL {
            let mut h = TimerHeaps::new(8, 8).unwrap().with_seq(clock, u32::MAX - 2);
            for id in [5, 1, 6, 2, 7, 0, 4, 3] {
                h.set(clock, id, if id % 2 == 0 { 7 } else { 3 });
            }
            assert_eq!(
                drain(&mut h, clock).iter().map(|e| e.0).collect::<Vec<_>>(),
                vec![5, 1, 7, 3, 6, 2, 0, 4]
            );
        }
    }

    #[test]
    fn equal_deadlines_keep_arm_order() {
        let mut h = TimerHeaps::new(8, 8).unwrap();
        for id in [3, 1, 2, 0] {
            h.set(M, id, 7);
        }
        assert_eq!(
            drain(&mut h, M).iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![3, 1, 2, 0]
        );
    }

    #[test]
    fn catch_up_keeps_phase_and_counts_overruns() {
        assert_eq!(catch_up(4, 1, 4), (1, 5));
        assert_eq!(catch_up(4, 1, 6), (3, 7));
        assert_eq!(catch_up(10, 3, 15), (2, 16));
        assert_eq!(catch_up(u64::MAX - 1, 10, u64::MAX), (1, u64::MAX));
    }

    #[test]
    fn conversions_saturate() {
        assert_eq!(duration_ns(Duration::MAX), u64::MAX);
        assert_eq!(duration_ns(Duration::new(1, 5)), 1_000_000_005);
        assert_eq!(
            system_ns(SystemTime::UNIX_EPOCH - Duration::from_secs(5)),
            0
        );
        let a = MonoAnchor {
            instant: Instant::now(),
            ns: 1_000,
        };
        assert_eq!(a.to_ns(a.instant), 1_000);
        assert_eq!(a.to_ns(a.instant + Duration::from_nanos(7)), 1_007);
        assert_eq!(a.to_ns(a.instant - Duration::from_secs(1)), 0);
        assert_eq!(a.to_instant(1_007), a.instant + Duration::from_nanos(7));
        let _ = a.to_instant(u64::MAX);
        let _ = a.to_instant(0);
    }
}

/// Properties: the heap against a `BTreeMap` model, and periodic expiration counts against
/// their closed form.
#[cfg(test)]
mod properties {
    use super::*;
    use quickcheck::{Arbitrary, Gen, QuickCheck};
    use std::collections::BTreeMap;

    /// Enough ids for both heaps to reach a third level (six entries or more) together, and,
    /// with `CAPACITY` below it, for the shared buffer to fill (about once in 40 cases).
    const IDS: u32 = 40;
    const CAPACITY: usize = 20;

    #[derive(Clone, Debug)]
    enum Op {
        /// Arm (or re-arm) a timer at an absolute deadline.
        Arm(u32, u16),
        /// Re-arm an armed timer earlier or later by a delta.
        Move(u32, i16),
        Cancel(u32),
        /// Take every timer due at this time.
        PopDue(u16),
    }

    impl Arbitrary for Op {
        fn arbitrary(g: &mut Gen) -> Op {
            let id = u32::arbitrary(g) % (IDS + 1);
            // Arms outnumber pops so that the heaps grow deep and the buffer fills.
            match u8::arbitrary(g) % 10 {
                0..=4 => Op::Arm(id, u16::arbitrary(g) % 200),
                5..=6 => Op::Move(id, i16::arbitrary(g) % 100),
                7 => Op::Cancel(id),
                8 => Op::PopDue(u16::arbitrary(g) % 60),
                _ => Op::PopDue(u16::arbitrary(g) % 250),
            }
        }
    }

    /// Ids below `IDS / 2` run on the monotonic clock, the rest on the system clock: the two
    /// heaps share one buffer and one position index.
    fn clock_of(id: u32) -> Clock {
        if id < IDS / 2 {
            Clock::Monotonic
        } else {
            Clock::System
        }
    }

    fn other(c: Clock) -> Clock {
        if c == Clock::Monotonic {
            Clock::System
        } else {
            Clock::Monotonic
        }
    }

    type Model = [BTreeMap<(u64, u64), u32>; 2];

    fn heap_matches_model(ops: Vec<Op>) -> bool {
        let mut h = TimerHeaps::new(IDS as usize, CAPACITY).unwrap();
        // Per clock, (deadline, arm sequence) -> id; and id -> its key.
        let mut by_time: Model = [BTreeMap::new(), BTreeMap::new()];
        let mut key: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        let mut seq = 0u64;
        let mut arm = |h: &mut TimerHeaps,
                       by_time: &mut Model,
                       key: &mut BTreeMap<u32, (u64, u64)>,
                       id: u32,
                       at: u64| {
            let c = clock_of(id);
            let armed = key.contains_key(&id);
            if armed {
                assert!(
                    !h.set(other(c), id, at),
                    "an armed id is refused on the other clock"
                );
            }
            let room = key.len() < CAPACITY || armed;
            let ok = h.set(c, id, at);
            assert_eq!(
                ok,
                id < IDS && room,
                "set accepts the ids in range while there is room (a move needs none)"
            );
            if ok {
                if let Some(old) = key.remove(&id) {
                    by_time[c.index()].remove(&old);
                }
                by_time[c.index()].insert((at, seq), id);
                key.insert(id, (at, seq));
            }
            seq += 1;
        };
        for op in ops {
            match op {
                Op::Arm(id, at) => arm(&mut h, &mut by_time, &mut key, id, u64::from(at)),
                Op::Move(id, delta) => {
                    if let Some(&(at, _)) = key.get(&id) {
                        let to = at.saturating_add_signed(i64::from(delta));
                        arm(&mut h, &mut by_time, &mut key, id, to);
                    }
                }
                Op::Cancel(id) => {
                    // The other clock's heap never holds it.
                    assert!(!h.remove(other(clock_of(id)), id));
                    let was = key.remove(&id);
                    if let Some(k) = was {
                        by_time[clock_of(id).index()].remove(&k);
                    }
                    assert_eq!(h.remove(clock_of(id), id), was.is_some());
                }
                Op::PopDue(now) => {
                    let now = u64::from(now);
                    for c in Clock::ALL {
                        let mut got = Vec::new();
                        while let Some((id, at)) = h.peek(c).filter(|&(_, at)| at <= now) {
                            assert!(h.remove(c, id));
                            got.push((id, at));
                        }
                        let mut want = Vec::new();
                        let model = &mut by_time[c.index()];
                        while let Some((&(at, s), &id)) = model.first_key_value() {
                            if at > now {
                                break;
                            }
                            model.remove(&(at, s));
                            key.remove(&id);
                            want.push((id, at));
                        }
                        assert_eq!(got, want, "due timers, earliest (then first armed) first");
                    }
                }
            }
            for c in Clock::ALL {
                let model = &by_time[c.index()];
                assert_eq!(h.len(c), model.len());
                assert_eq!(
                    h.peek(c),
                    model.first_key_value().map(|(&(at, _), &id)| (id, at))
                );
            }
        }
        true
    }

    #[test]
    fn timer_heap_matches_a_btreemap_model() {
        QuickCheck::new()
            .tests(if cfg!(miri) { 10 } else { 3000 })
            .quickcheck(heap_matches_model as fn(Vec<Op>) -> bool);
    }

    /// A periodic timer first due at `first`, every `interval`, sampled at increasing times:
    /// the counts reported by repeated `catch_up` add up to the closed form
    /// `floor((t - first) / interval) + 1` expirations by time `t` (none before `first`), and
    /// the next deadline keeps the phase.
    fn periodic_counts(first: u32, interval: u16, steps: Vec<u16>) -> bool {
        let interval = u64::from(interval.max(1));
        let first = u64::from(first);
        let (mut due, mut total, mut now) = (first, 0u64, 0u64);
        for step in steps {
            now += u64::from(step);
            if now >= due {
                let (k, next) = catch_up(due, interval, now);
                total += k;
                due = next;
            }
            let closed = if now < first {
                0
            } else {
                (now - first) / interval + 1
            };
            assert_eq!(total, closed, "at {now}");
            assert!(due > now, "the next deadline is in the future");
            assert_eq!((due - first) % interval, 0, "phase kept");
        }
        true
    }

    #[test]
    fn periodic_expiration_counts_match_the_closed_form() {
        QuickCheck::new()
            .tests(if cfg!(miri) { 10 } else { 3000 })
            .quickcheck(periodic_counts as fn(u32, u16, Vec<u16>) -> bool);
    }
}
