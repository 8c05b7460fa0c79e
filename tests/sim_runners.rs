//! Several runners on the `Sim` backend: virtual time advances only when every runner that
//! holds an events buffer is blocked, so a handler running on one runner sees the clock
//! stand still while another runner waits, and what happens is the same whichever thread
//! takes which event.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dasynq::backend::Backend;
use dasynq::sim::Sim;
use dasynq::{
    Clock, Cx, Deadline, Event, EventLoop, FdOptions, Handler, Interest, Priority, Rearm,
};
use dasynq::{Removed, Threaded};

enum H {
    /// Reads, notes the virtual time, sleeps for real, notes it again.
    Slow {
        sim: Sim,
        seen: Arc<Mutex<Vec<(u64, u64)>>>,
    },
    /// Notes when it fired.
    Timer {
        sim: Sim,
        fired: Arc<Mutex<Vec<u64>>>,
    },
}

impl Handler for H {
    type Data = ();
    fn on_event(&mut self, _cx: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
        match self {
            H::Slow { sim, seen } => {
                if let Event::Fd { fd, .. } = ev {
                    let _ = sim.read(&fd, u64::MAX);
                }
                let before = sim.now(Clock::Monotonic);
                std::thread::sleep(Duration::from_millis(100));
                seen.lock()
                    .unwrap()
                    .push((before, sim.now(Clock::Monotonic)));
                Rearm::Disarm
            }
            H::Timer { sim, fired } => {
                fired.lock().unwrap().push(sim.now(Clock::Monotonic));
                Rearm::Disarm
            }
        }
    }
    fn on_removed(self, _cx: &Cx<'_, Self>, _r: Removed) {}
}

#[test]
fn virtual_time_stands_still_while_a_runner_runs_a_handler() {
    for _ in 0..3 {
        let sim = Sim::new();
        let lp = Arc::new(
            EventLoop::<H, Sim, Threaded>::builder()
                .runners(2)
                .build_with(sim.clone())
                .unwrap(),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fired = Arc::new(Mutex::new(Vec::new()));
        let start = sim.now(Clock::Monotonic);
        let (r, w) = sim.pipe().unwrap();
        lp.add_fd(
            r,
            Interest::READ,
            FdOptions::new(),
            H::Slow {
                sim: sim.clone(),
                seen: seen.clone(),
            },
        )
        .unwrap();
        let t = lp
            .add_timer(
                Clock::Monotonic,
                Priority::DEFAULT,
                H::Timer {
                    sim: sim.clone(),
                    fired: fired.clone(),
                },
            )
            .unwrap();
        lp.arm_timer(t, Deadline::After(Duration::from_millis(50)), None)
            .unwrap();
        // Ready before any runner starts: one of them takes it at virtual time 0.
        sim.write(&w, 1).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let runners: Vec<_> = (0..2)
            .map(|_| {
                let (lp, done) = (lp.clone(), done.clone());
                std::thread::spawn(move || {
                    while !done.load(Ordering::SeqCst) {
                        lp.run();
                    }
                })
            })
            .collect();
        let t0 = Instant::now();
        while fired.lock().unwrap().is_empty() || seen.lock().unwrap().is_empty() {
            assert!(t0.elapsed() < Duration::from_secs(10), "nothing ran");
            std::thread::sleep(Duration::from_millis(1));
        }
        done.store(true, Ordering::SeqCst);
        for r in runners {
            while !r.is_finished() {
                lp.stop();
                std::thread::sleep(Duration::from_millis(1));
            }
            r.join().unwrap();
        }
        let (before, after) = seen.lock().unwrap()[0];
        assert_eq!(
            (before - start, after - start),
            (0, 0),
            "virtual time moved while a handler ran on the other runner"
        );
        assert_eq!(
            fired.lock().unwrap().as_slice(),
            &[start + 50_000_000],
            "the timer fired once, at its deadline"
        );
    }
}

/// A runner's own `run_timeout` ends in virtual time, also beside a runner that waits with
/// no limit.
#[test]
fn run_timeout_beside_a_blocked_runner_ends_in_virtual_time() {
    let sim = Sim::new();
    let lp = Arc::new(
        EventLoop::<H, Sim, Threaded>::builder()
            .runners(2)
            .build_with(sim.clone())
            .unwrap(),
    );
    let blocked = {
        let lp = lp.clone();
        std::thread::spawn(move || lp.run())
    };
    std::thread::sleep(Duration::from_millis(20));
    let start = sim.now(Clock::Monotonic);
    let t0 = Instant::now();
    assert_eq!(lp.run_timeout(Duration::from_secs(3600)), 0);
    assert!(t0.elapsed() < Duration::from_secs(5), "waited in real time");
    assert_eq!(sim.now(Clock::Monotonic) - start, 3_600_000_000_000);
    let t0 = Instant::now();
    while !blocked.is_finished() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the other runner never ended"
        );
        lp.stop();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(blocked.join().unwrap(), 0);
}
