//! dasynq's timer phases over `n` timers, shared by `benches/timers.rs` and
//! `peers/benches/timers_libev.rs` (which times libev's same phases beside them).

use std::time::{Duration, Instant};

use dasynq::{Clock, Cx, Deadline, Event, EventLoop, Handler, Priority, Rearm, WatchId};

pub struct T;

impl Handler for T {
    type Data = u64;
    fn on_event(&mut self, _: &Cx<'_, Self>, fired: &mut u64, _: Event<'_>) -> Rearm {
        *fired += 1;
        Rearm::Rearm
    }
}

/// Nanoseconds per operation for each phase over `n` timers.
pub struct Phases {
    pub insert: f64,
    pub rearm: f64,
    /// Insert and re-arm again with the same delays, as `Deadline::At` from one clock reading
    /// taken before the phase: no clock read per arm, the work libev does from its cached
    /// loop time.
    pub insert_at: f64,
    pub rearm_at: f64,
    pub cancel: f64,
    pub expire: f64,
}

/// Insert (first arm), re-arm (deadline moved a minute later, as an idle timer on
/// activity), cancel (`stop_timer`) and expiry, each over every timer of the set; then
/// insert and re-arm once more with absolute deadlines (`insert_at`, `rearm_at`).
pub fn phases(n: usize) -> Phases {
    let lp = EventLoop::<T>::builder()
        .watchers(n)
        .timers(n)
        .wakers(0)
        .build()
        .expect("build");
    let ids: Vec<WatchId> = (0..n)
        .map(|_| {
            lp.add_timer(Clock::Monotonic, Priority::DEFAULT, T)
                .expect("add")
        })
        .collect();
    // Deadlines spread over an hour, in a scattered order (not sorted: that would make every
    // insert a leaf push).
    let delay = |i: usize, shift: u64| {
        Duration::from_secs(3600 + shift) + Duration::from_micros((i as u64 * 7919) % 3_600_000_000)
    };
    let at = |i: usize, shift: u64| Deadline::After(delay(i, shift));
    let t = Instant::now();
    for (i, &id) in ids.iter().enumerate() {
        lp.arm_timer(id, at(i, 0), None).expect("arm");
    }
    let insert = t.elapsed().as_nanos() as f64 / n as f64;
    let t = Instant::now();
    for (i, &id) in ids.iter().enumerate() {
        lp.arm_timer(id, at(i, 60), None).expect("re-arm");
    }
    let rearm = t.elapsed().as_nanos() as f64 / n as f64;
    let t = Instant::now();
    for &id in &ids {
        lp.stop_timer(id).expect("stop");
    }
    let cancel = t.elapsed().as_nanos() as f64 / n as f64;
    // Expiry: every timer due now, handled by `poll` (its handler counts).
    for &id in &ids {
        lp.arm_timer(id, Deadline::After(Duration::ZERO), None)
            .expect("arm");
    }
    let mut fired = 0u64;
    let t = Instant::now();
    while (fired as usize) < n {
        lp.poll_with(&mut fired);
    }
    let expire = t.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(fired as usize, n, "every timer expired once");
    // The same insert and re-arm from one clock reading per phase (every timer is idle
    // again: each expired once, and a fired one-shot timer is disarmed).
    let base = Instant::now();
    let t = Instant::now();
    for (i, &id) in ids.iter().enumerate() {
        lp.arm_timer(id, Deadline::At(base + delay(i, 0)), None)
            .expect("arm");
    }
    let insert_at = t.elapsed().as_nanos() as f64 / n as f64;
    let base = Instant::now();
    let t = Instant::now();
    for (i, &id) in ids.iter().enumerate() {
        lp.arm_timer(id, Deadline::At(base + delay(i, 60)), None)
            .expect("re-arm");
    }
    let rearm_at = t.elapsed().as_nanos() as f64 / n as f64;
    Phases {
        insert,
        rearm,
        insert_at,
        rearm_at,
        cancel,
        expire,
    }
}
