//! Several runners on one `ThreadedLoop`, on the real kernel: handlers overlap in time across
//! runners but one handler (and the two halves of a bidirectional watcher) never runs on two
//! threads at once; removal of a watcher running elsewhere never blocks; a panicking handler
//! leaves the loop usable; more callers than reserved runners; `stop` with no runner; and a
//! stress run of 1–4 runners beside 3 mutating threads doing every operation, checked byte for
//! byte (every registration ends with exactly one `on_removed`, every slot comes back).
//!
//! Every runner blocks in plain `run()`; every blocking step runs under a watchdog, so a lost
//! wake-up fails the test instead of hanging it.

#[path = "suite/portable.rs"]
mod portable;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use dasynq::{
    BidiOptions, Clock, Cx, Deadline, Event, FdOptions, Handler, Interest, Priority, Rearm,
    Removed, ThreadedLoop, WatchId,
};

const WATCHDOG: Duration = Duration::from_secs(10);

/// Stop until every runner has returned (see `portable::stop_until_joined`).
fn stop_and_join<T>(lp: &ThreadedLoop<T>, threads: Vec<JoinHandle<()>>)
where
    T: Handler + Send,
{
    portable::stop_until_joined(|| lp.stop(), threads, WATCHDOG);
}

/// Runner threads, each looping in plain `run()` until `done`.
fn runners<T: Handler<Data = ()> + Send + 'static>(
    lp: &Arc<ThreadedLoop<T>>,
    n: usize,
    done: &Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let (lp, done) = (lp.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    lp.run();
                }
            })
        })
        .collect()
}

fn drain(fd: BorrowedFd<'_>) -> u64 {
    let mut total = 0;
    let mut b = [0u8; 256];
    while let Ok(n) = rustix::io::read(fd, &mut b) {
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    total
}

/// Sleeps in its handler and records when it ran and on which thread.
struct Slow {
    sleep: Duration,
    /// If set, the handler also waits until the test sends on this (or drops its end).
    gate: Option<std::sync::mpsc::Receiver<()>>,
    spans: Arc<Mutex<Vec<(usize, Instant, Instant)>>>,
    tag: usize,
}

impl Handler for Slow {
    type Data = ();
    fn on_event(&mut self, _cx: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
        let start = Instant::now();
        if let Event::Fd { fd, .. } = ev {
            drain(fd);
        }
        std::thread::sleep(self.sleep);
        if let Some(g) = &self.gate {
            let _ = g.recv();
        }
        self.spans
            .lock()
            .unwrap()
            .push((self.tag, start, Instant::now()));
        Rearm::Disarm
    }
    fn on_removed(self, _cx: &Cx<'_, Self>, _r: Removed) {}
}

/// Two handlers of 10 ms each, queued together, overlap in time with two runners.
#[test]
fn two_slow_handlers_overlap_with_two_runners() {
    let lp = Arc::new(ThreadedLoop::<Slow>::builder().runners(2).build().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for tag in 0..2 {
        let (r, w) = portable::pipe();
        let h = Slow {
            gate: None,
            sleep: Duration::from_millis(10),
            spans: spans.clone(),
            tag,
        };
        lp.add_fd(r, Interest::READ, FdOptions::new(), h).unwrap();
        writers.push(w);
    }
    let done = Arc::new(AtomicBool::new(false));
    let threads = runners(&lp, 2, &done);
    std::thread::sleep(Duration::from_millis(20));
    // Both ready in one go: one wait reports both, and the runner that took them in hands
    // the second to the other runner.
    for w in &writers {
        rustix::io::write(w, b"x").unwrap();
    }
    let started = Instant::now();
    while spans.lock().unwrap().len() < 2 {
        assert!(
            started.elapsed() < WATCHDOG,
            "the handlers did not both run"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    done.store(true, Ordering::SeqCst);
    stop_and_join(&lp, threads);
    let s = spans.lock().unwrap();
    let (a, b) = (s[0], s[1]);
    assert_ne!(a.0, b.0);
    assert!(
        a.1 < b.2 && b.1 < a.2,
        "the two 10 ms handlers did not overlap: {:?} and {:?}",
        (a.1 - started, a.2 - started),
        (b.1 - started, b.2 - started)
    );
}

/// Asserts it never runs on two threads at once (its own `busy` flag), counts calls per half.
struct Exclusive {
    busy: AtomicBool,
    calls: Arc<[AtomicU64; 2]>,
    limit: u64,
}

impl Handler for Exclusive {
    type Data = ();
    fn on_event(&mut self, _cx: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
        assert!(
            !self.busy.swap(true, Ordering::SeqCst),
            "a handler ran on two threads at once"
        );
        let half = match ev {
            Event::Read { fd, .. } => {
                drain(fd);
                0
            }
            Event::Write { .. } => 1,
            Event::Fd { fd, .. } => {
                drain(fd);
                0
            }
            _ => 0,
        };
        // Long enough for another runner to try the other half meanwhile.
        std::thread::sleep(Duration::from_micros(200));
        let n = self.calls[half].fetch_add(1, Ordering::SeqCst) + 1;
        self.busy.store(false, Ordering::SeqCst);
        if n >= self.limit {
            Rearm::Disarm
        } else {
            Rearm::Rearm
        }
    }
    fn on_removed(self, _cx: &Cx<'_, Self>, _r: Removed) {}
}

/// The two halves of a bidirectional watcher share one handler: with three runners and both
/// halves ready all the time, they never run at once, and neither half starves (a half whose
/// sibling runs is parked and taken up when it returns).
#[test]
fn bidi_halves_never_run_at_once_across_runners() {
    let lp = Arc::new(
        ThreadedLoop::<Exclusive>::builder()
            .runners(3)
            .build()
            .unwrap(),
    );
    let (a, b) = portable::socketpair();
    let calls: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let h = Exclusive {
        busy: AtomicBool::new(false),
        calls: calls.clone(),
        limit: 200,
    };
    lp.add_bidi(a, BidiOptions::new(), h).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let threads = runners(&lp, 3, &done);
    let started = Instant::now();
    // Keep the read half ready; the write half is always ready.
    while calls[0].load(Ordering::SeqCst) < 200 || calls[1].load(Ordering::SeqCst) < 200 {
        assert!(
            started.elapsed() < WATCHDOG,
            "a half starved: read {} write {}",
            calls[0].load(Ordering::SeqCst),
            calls[1].load(Ordering::SeqCst)
        );
        let _ = rustix::io::write(&b, b"x");
        std::thread::sleep(Duration::from_micros(100));
    }
    done.store(true, Ordering::SeqCst);
    stop_and_join(&lp, threads);
}

/// One handler type for the removal test: `Slow` work, or removing another watcher.
enum Role {
    /// Tells `started`, sleeps, then notes when it returned.
    Victim {
        started: mpsc::Sender<()>,
        returned: Arc<Mutex<Option<(ThreadId, Instant)>>>,
    },
    /// Removes `victim` from its handler, noting how long `remove` took.
    Remover {
        victim: Arc<Mutex<Option<WatchId>>>,
        took: mpsc::Sender<Duration>,
    },
}

struct RemoveCase {
    role: Role,
    removed: Arc<Mutex<Vec<(ThreadId, Instant)>>>,
}

impl Handler for RemoveCase {
    type Data = ();
    fn on_event(&mut self, cx: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
        if let Event::Fd { fd, .. } = ev {
            drain(fd);
        }
        match &self.role {
            Role::Victim { started, returned } => {
                let _ = started.send(());
                std::thread::sleep(Duration::from_millis(100));
                *returned.lock().unwrap() = Some((std::thread::current().id(), Instant::now()));
                Rearm::Rearm
            }
            Role::Remover { victim, took } => {
                let id = victim.lock().unwrap().expect("victim id");
                let t = Instant::now();
                cx.remove(id).expect("remove the running victim");
                let _ = took.send(t.elapsed());
                Rearm::Disarm
            }
        }
    }
    fn on_removed(self, _cx: &Cx<'_, Self>, _r: Removed) {
        self.removed
            .lock()
            .unwrap()
            .push((std::thread::current().id(), Instant::now()));
    }
}

/// `remove` of a watcher whose handler runs on another runner, from a third thread's handler:
/// it returns at once; `on_removed` runs once, on the victim's thread, after its handler.
#[test]
fn remove_of_a_watcher_running_elsewhere_from_another_handler() {
    let lp = Arc::new(
        ThreadedLoop::<RemoveCase>::builder()
            .runners(3)
            .build()
            .unwrap(),
    );
    let removed = Arc::new(Mutex::new(Vec::new()));
    let (started_tx, started_rx) = mpsc::channel();
    let (took_tx, took_rx) = mpsc::channel();
    let returned = Arc::new(Mutex::new(None));
    let victim_id = Arc::new(Mutex::new(None));
    let (vr, vw) = portable::pipe();
    let (rr, rw) = portable::pipe();
    let victim = RemoveCase {
        role: Role::Victim {
            started: started_tx,
            returned: returned.clone(),
        },
        removed: removed.clone(),
    };
    let id = lp
        .add_fd(vr, Interest::READ, FdOptions::new(), victim)
        .unwrap();
    *victim_id.lock().unwrap() = Some(id);
    let remover = RemoveCase {
        role: Role::Remover {
            victim: victim_id,
            took: took_tx,
        },
        removed: removed.clone(),
    };
    lp.add_fd(rr, Interest::READ, FdOptions::new(), remover)
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let threads = runners(&lp, 3, &done);
    rustix::io::write(&vw, b"v").unwrap();
    started_rx.recv_timeout(WATCHDOG).expect("the victim ran");
    rustix::io::write(&rw, b"r").unwrap();
    let took = took_rx.recv_timeout(WATCHDOG).expect("the remover ran");
    assert!(
        took < Duration::from_millis(50),
        "remove waited for the running handler ({took:?})"
    );
    // More events for the victim: its handler must never start again.
    rustix::io::write(&vw, b"v").unwrap();
    let t = Instant::now();
    while removed.lock().unwrap().is_empty() {
        assert!(t.elapsed() < WATCHDOG, "on_removed never ran");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        started_rx.try_recv().is_err(),
        "the victim's handler started after remove returned"
    );
    done.store(true, Ordering::SeqCst);
    stop_and_join(&lp, threads);
    let r = removed.lock().unwrap();
    assert_eq!(r.len(), 1, "on_removed exactly once");
    let (ret_thread, ret_at) = returned.lock().unwrap().expect("the victim returned");
    assert_eq!(
        r[0].0, ret_thread,
        "on_removed runs on the dispatching thread"
    );
    assert!(
        r[0].1 >= ret_at,
        "on_removed runs after the handler returned"
    );
    assert_eq!(lp.usage().watchers, 1);
}

/// Panics on its first call; counts calls.
struct Panicky {
    panic_next: bool,
    calls: Arc<AtomicUsize>,
}

impl Handler for Panicky {
    type Data = ();
    fn on_event(&mut self, _cx: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
        if let Event::Fd { fd, .. } = ev {
            drain(fd);
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        if std::mem::take(&mut self.panic_next) {
            panic!("this handler panics (on purpose)");
        }
        Rearm::Rearm
    }
    fn on_removed(self, _cx: &Cx<'_, Self>, _r: Removed) {}
}

/// A handler that panics on one runner while another runs: the panicking call unwinds, the
/// watcher is left disabled (not stuck as running), the other runner keeps going, and the
/// watcher works again once enabled.
#[test]
fn a_panicking_handler_leaves_the_loop_usable_for_the_other_runners() {
    let lp = Arc::new(
        ThreadedLoop::<Panicky>::builder()
            .runners(2)
            .build()
            .unwrap(),
    );
    let bad_calls = Arc::new(AtomicUsize::new(0));
    let good_calls = Arc::new(AtomicUsize::new(0));
    let (br, bw) = portable::pipe();
    let (gr, gw) = portable::pipe();
    let bad = lp
        .add_fd(
            br,
            Interest::READ,
            FdOptions::new(),
            Panicky {
                panic_next: true,
                calls: bad_calls.clone(),
            },
        )
        .unwrap();
    lp.add_fd(
        gr,
        Interest::READ,
        FdOptions::new(),
        Panicky {
            panic_next: false,
            calls: good_calls.clone(),
        },
    )
    .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let panics = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (lp, done, panics) = (lp.clone(), done.clone(), panics.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    let lp = lp.clone();
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                        lp.run();
                    }));
                    if r.is_err() {
                        panics.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    rustix::io::write(&bw, b"x").unwrap();
    let t = Instant::now();
    while panics.load(Ordering::SeqCst) == 0 {
        assert!(t.elapsed() < WATCHDOG, "the handler never panicked");
        std::thread::sleep(Duration::from_millis(1));
    }
    // The other watcher keeps being served, by either runner.
    for i in 1..=50 {
        rustix::io::write(&gw, b"g").unwrap();
        while good_calls.load(Ordering::SeqCst) < i {
            assert!(t.elapsed() < WATCHDOG, "the other runner stopped serving");
            std::thread::yield_now();
        }
    }
    // The panicked watcher is disabled: more data does not run it ...
    rustix::io::write(&bw, b"x").unwrap();
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(bad_calls.load(Ordering::SeqCst), 1);
    // ... until it is enabled again.
    lp.enable(bad).unwrap();
    while bad_calls.load(Ordering::SeqCst) < 2 {
        assert!(t.elapsed() < WATCHDOG, "the re-enabled watcher did not run");
        std::thread::sleep(Duration::from_millis(1));
    }
    done.store(true, Ordering::SeqCst);
    stop_and_join(&lp, threads);
    assert_eq!(panics.load(Ordering::SeqCst), 1);
    assert_eq!(lp.usage().watchers, 2);
}

/// `stop()` with no runner: the next call returns at once, the one after runs as usual.
#[test]
fn stop_with_no_runner_ends_only_the_next_call() {
    let lp = Arc::new(ThreadedLoop::<Slow>::builder().runners(2).build().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let (r, w) = portable::pipe();
    let h = Slow {
        gate: None,
        sleep: Duration::ZERO,
        spans: spans.clone(),
        tag: 0,
    };
    lp.add_fd(r, Interest::READ, FdOptions::new(), h).unwrap();
    rustix::io::write(&w, b"x").unwrap();
    lp.stop();
    let lp2 = lp.clone();
    let first = std::thread::spawn(move || lp2.run());
    let t = Instant::now();
    while !first.is_finished() {
        assert!(t.elapsed() < WATCHDOG, "run() after stop() blocked");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(first.join().unwrap(), 0);
    assert_eq!(lp.run(), 1);
}

/// One reserved runner, three callers: a blocking call beyond it waits for the buffer (and
/// gives up at its own deadline); `poll` never waits and runs what is queued in user space.
#[test]
fn more_callers_than_reserved_runners() {
    let lp = Arc::new(ThreadedLoop::<Slow>::builder().runners(1).build().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let (r, w) = portable::pipe();
    // The holder's handler runs until the test lets it go: `poll` must finish meanwhile.
    let (release, gate) = std::sync::mpsc::channel();
    let slow = Slow {
        gate: Some(gate),
        sleep: Duration::from_millis(300),
        spans: spans.clone(),
        tag: 0,
    };
    lp.add_fd(r, Interest::READ, FdOptions::new(), slow)
        .unwrap();
    let file = lp
        .add_fd(
            portable::regular_file(),
            Interest::READ,
            FdOptions::new().disabled(),
            Slow {
                gate: None,
                sleep: Duration::ZERO,
                spans: spans.clone(),
                tag: 1,
            },
        )
        .unwrap();
    rustix::io::write(&w, b"x").unwrap();
    let lp2 = lp.clone();
    // This call holds the only buffer for the 300 ms its handler takes.
    let holder = std::thread::spawn(move || lp2.run());
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    assert_eq!(lp.run_timeout(Duration::from_millis(30)), 0);
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "run_timeout past its deadline"
    );
    // An emulated fd enabled now is queued in user space; `poll` runs it without a buffer.
    lp.enable(file).unwrap();
    // The only buffer stays held until `release` below, so a `poll` that waited for it
    // would never return (the test would hang): returning is the check.
    assert_eq!(lp.poll(), 1);
    release.send(()).unwrap();
    // A blocking call waits for the buffer, then runs.
    lp.enable(file).unwrap();
    assert_eq!(lp.run(), 1);
    assert_eq!(holder.join().unwrap(), 1);
    assert_eq!(spans.lock().unwrap().len(), 3);
}

/// The stress handler: exclusive, counts bytes, never runs after `on_removed`.
struct Counted {
    busy: AtomicBool,
    gone: Arc<AtomicBool>,
    read: Arc<AtomicU64>,
    expirations: Arc<AtomicU64>,
    removed: Arc<AtomicU64>,
}

impl Handler for Counted {
    type Data = ();
    fn on_event(&mut self, _cx: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
        assert!(
            !self.busy.swap(true, Ordering::SeqCst),
            "a handler ran on two threads at once"
        );
        assert!(
            !self.gone.load(Ordering::SeqCst),
            "a handler ran after on_removed"
        );
        let rearm = match ev {
            Event::Fd { fd, .. } => {
                // One read per event (the rest is reported again after the re-arm).
                let mut b = [0u8; 16];
                if let Ok(n) = rustix::io::read(fd, &mut b) {
                    self.read.fetch_add(n as u64, Ordering::SeqCst);
                }
                Rearm::Rearm
            }
            Event::Timer { expirations } => {
                self.expirations.fetch_add(expirations, Ordering::SeqCst);
                Rearm::Rearm
            }
            _ => Rearm::Rearm,
        };
        self.busy.store(false, Ordering::SeqCst);
        rearm
    }
    fn on_removed(self, _cx: &Cx<'_, Self>, r: Removed) {
        assert!(!self.gone.swap(true, Ordering::SeqCst), "on_removed twice");
        // Bytes written before `remove` returned and not read by a handler: drained here, so
        // every byte is accounted for exactly once.
        if let Some(fd) = r.into_fd() {
            self.read.fetch_add(drain(fd.as_fd()), Ordering::SeqCst);
        }
        self.removed.fetch_add(1, Ordering::SeqCst);
    }
}

fn stress(runner_count: usize) {
    let lp = Arc::new(
        ThreadedLoop::<Counted>::builder()
            .watchers(512)
            .timers(256)
            .wakers(64)
            .runners(runner_count)
            .build()
            .unwrap(),
    );
    let written = Arc::new(AtomicU64::new(0));
    let read = Arc::new(AtomicU64::new(0));
    let expirations = Arc::new(AtomicU64::new(0));
    let removed = Arc::new(AtomicU64::new(0));
    let registered = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let threads = runners(&lp, runner_count, &done);
    let deadline = Instant::now() + Duration::from_millis(800);
    let mutators: Vec<_> = (0..3u64)
        .map(|m| {
            let lp = lp.clone();
            let (written, read, expirations, removed, registered) = (
                written.clone(),
                read.clone(),
                expirations.clone(),
                removed.clone(),
                registered.clone(),
            );
            std::thread::spawn(move || {
                let mk = || Counted {
                    busy: AtomicBool::new(false),
                    gone: Arc::default(),
                    read: read.clone(),
                    expirations: expirations.clone(),
                    removed: removed.clone(),
                };
                let mut keep: Vec<(WatchId, Option<OwnedFd>)> = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    i += 1;
                    match (i + m) % 5 {
                        0 => {
                            let (r, w) = portable::pipe();
                            if let Ok(id) = lp.add_fd(r, Interest::READ, FdOptions::new(), mk()) {
                                registered.fetch_add(1, Ordering::SeqCst);
                                keep.push((id, Some(w)));
                            }
                        }
                        1 => {
                            if let Ok(id) = lp.add_timer(Clock::Monotonic, Priority::DEFAULT, mk())
                            {
                                registered.fetch_add(1, Ordering::SeqCst);
                                let _ = lp.arm_timer(
                                    id,
                                    Deadline::After(Duration::from_micros(50)),
                                    Some(Duration::from_micros(200)),
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
                        3 => {
                            for (id, w) in keep.iter().rev().take(4) {
                                if let Some(w) = w {
                                    if rustix::io::write(w, b"ab").is_ok_and(|n| n > 0) {
                                        // (A pipe's 2 bytes go in whole or not at all.)
                                        written.fetch_add(2, Ordering::SeqCst);
                                    }
                                } else if i % 2 == 0 {
                                    let _ = lp.disable(*id);
                                    let _ = lp.enable(*id);
                                }
                            }
                        }
                        _ => {
                            if keep.len() > 30 {
                                for (id, _) in keep.drain(..10) {
                                    lp.remove(id).unwrap();
                                }
                            }
                        }
                    }
                }
                for (id, _) in keep {
                    lp.remove(id).unwrap();
                }
            })
        })
        .collect();
    for m in mutators {
        m.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    stop_and_join(&lp, threads);
    // Removals of watchers that were running completed when their handlers returned, before
    // the runners did.
    let (reg, rem) = (
        registered.load(Ordering::SeqCst),
        removed.load(Ordering::SeqCst),
    );
    let (w, r) = (written.load(Ordering::SeqCst), read.load(Ordering::SeqCst));
    println!(
        "{runner_count} runners: registrations {reg}, removals {rem}, bytes written {w}, read {r}, \
         timer expirations {}",
        expirations.load(Ordering::SeqCst)
    );
    assert!(reg > 100, "too little work to mean anything ({reg})");
    assert_eq!(
        rem, reg,
        "every registration ended with exactly one on_removed"
    );
    assert_eq!(r, w, "every byte delivered exactly once");
    assert!(w > 0);
    let u = lp.usage();
    assert_eq!((u.watchers, u.timers, u.wakers), (0, 0, 0));
}

/// One runner in plain `run()` beside the three mutators (what `threaded_stress.rs` did with
/// `run_timeout`, which hid lost wake-ups).
#[test]
fn stress_one_runner_three_mutators() {
    stress(1);
}

#[test]
fn stress_two_runners_three_mutators() {
    stress(2);
}

#[test]
fn stress_three_runners_three_mutators() {
    stress(3);
}

#[test]
fn stress_four_runners_three_mutators() {
    stress(4);
}

/// Each call keeps its own limit: two threads in `run_limit(2)` at once with six events ready
/// run two each, and the last two stay queued for the next call.
#[test]
fn run_limit_counts_per_call_with_two_runners() {
    let lp = Arc::new(ThreadedLoop::<Slow>::builder().runners(2).build().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for tag in 0..6 {
        let (r, w) = portable::pipe();
        let h = Slow {
            gate: None,
            sleep: Duration::from_millis(5),
            spans: spans.clone(),
            tag,
        };
        lp.add_fd(r, Interest::READ, FdOptions::new(), h).unwrap();
        rustix::io::write(&w, b"x").unwrap();
        writers.push(w);
    }
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let lp = lp.clone();
            std::thread::spawn(move || lp.run_limit(2))
        })
        .collect();
    let t = Instant::now();
    let mut ran = Vec::new();
    for c in calls {
        while !c.is_finished() {
            assert!(t.elapsed() < WATCHDOG, "run_limit(2) never returned");
            std::thread::sleep(Duration::from_millis(1));
        }
        ran.push(c.join().unwrap());
    }
    assert_eq!(ran, [2, 2], "each call ran exactly its limit");
    assert_eq!(spans.lock().unwrap().len(), 4);
    assert_eq!(lp.poll(), 2, "the rest stayed queued");
}

/// Requeues itself every time.
struct Again(Arc<AtomicUsize>);

impl Handler for Again {
    type Data = ();
    fn on_event(&mut self, _cx: &Cx<'_, Self>, _: &mut (), _ev: Event<'_>) -> Rearm {
        self.0.fetch_add(1, Ordering::SeqCst);
        Rearm::Requeue
    }
    fn on_removed(self, _cx: &Cx<'_, Self>, _r: Removed) {}
}

/// Batches keep their meaning per call: a handler that requeues itself is not run again by
/// the same call's batch (each call ends after one run of it), while the next call, on any
/// thread, takes it at once.
#[test]
fn a_self_requeuing_handler_runs_once_per_call() {
    let lp = Arc::new(ThreadedLoop::<Again>::builder().runners(2).build().unwrap());
    let n = Arc::new(AtomicUsize::new(0));
    let (r, w) = portable::pipe();
    rustix::io::write(&w, b"x").unwrap();
    lp.add_fd(r, Interest::READ, FdOptions::new(), Again(n.clone()))
        .unwrap();
    for i in 1..=5 {
        assert_eq!(lp.poll(), 1, "one run per call");
        assert_eq!(n.load(Ordering::SeqCst), 2 * i - 1);
        let lp2 = lp.clone();
        assert_eq!(std::thread::spawn(move || lp2.run()).join().unwrap(), 1);
    }
}
