//! The threaded flavour under load: one thread runs the loop while others register, remove,
//! enable, disable, arm timers and wake it, all at once. Checks the bookkeeping at the end:
//! every registration ended with exactly one `on_removed`, no handler ran after its removal
//! completed, every slot came back.

#[path = "suite/portable.rs"]
mod portable;

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dasynq::{
    Clock, Control, Cx, Deadline, Event, FdOptions, Handler, Interest, Priority, Rearm, Removed,
    ThreadedLoop,
};

struct Tracked {
    /// Set when the registration ended; a handler call after that is a bug.
    gone: Arc<AtomicBool>,
    removed: Arc<AtomicU64>,
    calls: Arc<AtomicU64>,
}

impl Handler for Tracked {
    fn on_event(&mut self, _cx: &Cx<'_, Self>, ev: Event<'_>) -> Rearm {
        assert!(
            !self.gone.load(Ordering::SeqCst),
            "handler ran after removal"
        );
        if let Event::Fd { fd, .. } = ev {
            let mut b = [0u8; 64];
            let _ = rustix::io::read(fd, &mut b);
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        Rearm::Rearm
    }
    fn on_removed(self, _cx: &Cx<'_, Self>, _removed: Removed) {
        assert!(!self.gone.swap(true, Ordering::SeqCst), "on_removed twice");
        self.removed.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn other_threads_hammer_a_running_loop() {
    let lp = Arc::new(
        ThreadedLoop::<Tracked>::builder()
            .watchers(512)
            .timers(256)
            .wakers(64)
            .build()
            .unwrap(),
    );
    let removed = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let registered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let runner = {
        let (lp, stop) = (lp.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                lp.run_timeout(Duration::from_millis(5));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_millis(1500);
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let (lp, removed, calls, registered) = (
                lp.clone(),
                removed.clone(),
                calls.clone(),
                registered.clone(),
            );
            std::thread::spawn(move || {
                let mk = || Tracked {
                    gone: Arc::default(),
                    removed: removed.clone(),
                    calls: calls.clone(),
                };
                let mut keep: Vec<(dasynq::WatchId, Option<OwnedFd>)> = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    i += 1;
                    match (i + w) % 4 {
                        0 => {
                            let (r, wr) = portable::pipe();
                            if let Ok(id) = lp.add_fd(r, Interest::READ, FdOptions::new(), mk()) {
                                registered.fetch_add(1, Ordering::SeqCst);
                                let _ = rustix::io::write(&wr, b"x");
                                keep.push((id, Some(wr)));
                            }
                        }
                        1 => {
                            if let Ok(id) = lp.add_timer(Clock::Monotonic, Priority::DEFAULT, mk())
                            {
                                registered.fetch_add(1, Ordering::SeqCst);
                                let _ = lp.arm_timer(
                                    id,
                                    Deadline::After(Duration::from_micros(100)),
                                    Some(Duration::from_micros(300)),
                                );
                                keep.push((id, None));
                            }
                        }
                        2 => {
                            if let Ok((id, waker)) = lp.add_wake(Priority::DEFAULT, mk()) {
                                registered.fetch_add(1, Ordering::SeqCst);
                                waker.wake();
                                keep.push((id, None));
                            }
                        }
                        _ => {
                            for (id, wr) in keep.iter().rev().take(3) {
                                let _ = lp.disable(*id);
                                let _ = lp.enable(*id);
                                if let Some(wr) = wr {
                                    let _ = rustix::io::write(wr, b"y");
                                }
                            }
                        }
                    }
                    if keep.len() > 40 {
                        for (id, _) in keep.drain(..20) {
                            lp.remove(id).unwrap();
                        }
                    }
                }
                for (id, _) in keep {
                    lp.remove(id).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    lp.stop();
    runner.join().unwrap();
    // Removals requested while a handler ran complete when it returns; let them finish.
    for _ in 0..10 {
        lp.poll();
    }
    let (reg, rem) = (
        registered.load(Ordering::SeqCst),
        removed.load(Ordering::SeqCst),
    );
    println!(
        "registrations {reg}, removals {rem}, handler calls {}",
        calls.load(Ordering::SeqCst)
    );
    assert!(reg > 100);
    assert_eq!(
        rem, reg,
        "every registration ended with exactly one on_removed"
    );
    assert_eq!(lp.usage().watchers, 0);
    assert_eq!(lp.usage().timers, 0);
    assert_eq!(lp.usage().wakers, 0);
    assert!(calls.load(Ordering::SeqCst) > 0);
    let _: Mutex<()> = Mutex::new(());
}
