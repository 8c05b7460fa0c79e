//! Several threads inside one `ThreadedLoop`: cross-thread wake-ups of a runner blocked in
//! plain `run()`, `poll()` beside a blocked runner, per-call deadlines, `stop()` with several
//! runners. Every blocking call runs under a watchdog: a lost wake-up fails the test (after
//! a few seconds) instead of hanging it.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use dasynq::{Cx, Event, FdOptions, Handler, Interest, Rearm, Removed, ThreadedLoop};

/// How long a step may take before the test calls it a lost wake-up.
const WATCHDOG: Duration = Duration::from_secs(5);

/// Run `f` on its own thread; fail if it has not returned within `WATCHDOG`.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(WATCHDOG) {
        Ok(v) => v,
        Err(_) => panic!("{what}: still blocked after {WATCHDOG:?} (a lost wake-up)"),
    }
}

/// A handler that reports each call on a channel and answers `Noop`: it stays disabled
/// unless it was enabled meanwhile (an enable made while it runs is kept; `Disarm` would
/// undo it, as documented).
struct Report {
    tx: mpsc::Sender<usize>,
    tag: usize,
}

impl Handler for Report {
    type Data = ();
    fn on_event(&mut self, _cx: &Cx<'_, Self>, _: &mut (), _ev: Event<'_>) -> Rearm {
        let _ = self.tx.send(self.tag);
        Rearm::Noop
    }
    fn on_removed(self, _cx: &Cx<'_, Self>, _removed: Removed) {}
}

fn regular_file() -> OwnedFd {
    std::fs::File::open("/proc/self/stat")
        .or_else(|_| std::fs::File::open("Cargo.toml"))
        .unwrap()
        .into()
}

/// Defect 1: the loop noted "already interrupted" after the first cross-thread enqueue and
/// never cleared it, so later enables never woke a runner blocked in plain `run()`.
#[test]
fn every_enable_from_another_thread_wakes_a_runner_blocked_in_run() {
    let lp = Arc::new(ThreadedLoop::<Report>::builder().build().unwrap());
    let (tx, rx) = mpsc::channel();
    // A regular file is emulated as always ready: enabling it queues it in user space.
    let id = lp
        .add_fd(
            regular_file(),
            Interest::READ,
            FdOptions::new().disabled(),
            Report { tx, tag: 0 },
        )
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let runner = {
        let (lp, done) = (lp.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                lp.run();
            }
        })
    };
    for round in 0..1000 {
        // Give the runner time to block, now and then, so both orders are exercised.
        if round % 100 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        lp.set_enabled(id, true).unwrap();
        rx.recv_timeout(WATCHDOG)
            .unwrap_or_else(|_| panic!("round {round}: the blocked runner was never woken"));
    }
    done.store(true, Ordering::SeqCst);
    lp.stop();
    within("the runner's last run()", move || runner.join().unwrap());
}

/// Defect 2: `poll()` waited for the events buffer that a thread blocked in `run()` held.
#[test]
fn poll_never_blocks_while_another_thread_is_in_run() {
    let lp = Arc::new(ThreadedLoop::<Report>::builder().build().unwrap());
    let runner = {
        let lp = lp.clone();
        std::thread::spawn(move || lp.run())
    };
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..100 {
        let lp = lp.clone();
        assert_eq!(
            within("poll() beside a blocked run()", move || lp.poll()),
            0
        );
    }
    lp.stop();
    within("the runner after stop()", move || runner.join().unwrap());
}

/// Defect 3a: a second thread's `run_timeout` waited for the first runner to be woken.
#[test]
fn run_timeout_on_a_second_thread_keeps_its_own_deadline() {
    let lp = Arc::new(ThreadedLoop::<Report>::builder().build().unwrap());
    let runner = {
        let lp = lp.clone();
        std::thread::spawn(move || lp.run())
    };
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let lp2 = lp.clone();
    let n = within("run_timeout(10 ms) beside a blocked run()", move || {
        lp2.run_timeout(Duration::from_millis(10))
    });
    let took = started.elapsed();
    assert_eq!(n, 0);
    // Generous for a loaded machine: the defect took as long as the other runner slept.
    assert!(
        took < Duration::from_secs(2),
        "run_timeout(10 ms) took {took:?}"
    );
    lp.stop();
    within("the runner after stop()", move || runner.join().unwrap());
}

/// Defect 3b: another thread's `poll()` cleared the one "a runner is waiting" flag, so a
/// later `stop()` did not wake the runner.
#[test]
fn stop_after_another_threads_poll_still_ends_a_blocked_run() {
    let lp = Arc::new(ThreadedLoop::<Report>::builder().build().unwrap());
    let runner = {
        let lp = lp.clone();
        std::thread::spawn(move || lp.run())
    };
    std::thread::sleep(Duration::from_millis(50));
    let lp2 = lp.clone();
    assert_eq!(
        within("poll() beside a blocked run()", move || lp2.poll()),
        0
    );
    lp.stop();
    assert_eq!(
        within("run() after poll() and stop()", move || runner
            .join()
            .unwrap()),
        0
    );
}

/// Defect 3c: one `stop()` ended only one of two runners. Now it ends every call in
/// progress, and none after them.
#[test]
fn one_stop_ends_every_runner() {
    for runners in [2, 3, 4] {
        let lp = Arc::new(
            ThreadedLoop::<Report>::builder()
                .runners(runners)
                .build()
                .unwrap(),
        );
        let entered = Arc::new(Barrier::new(runners + 1));
        let returned = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..runners)
            .map(|_| {
                let (lp, entered, returned) = (lp.clone(), entered.clone(), returned.clone());
                std::thread::spawn(move || {
                    entered.wait();
                    let n = lp.run();
                    returned.fetch_add(1, Ordering::SeqCst);
                    n
                })
            })
            .collect();
        entered.wait();
        std::thread::sleep(Duration::from_millis(50));
        lp.stop();
        for t in threads {
            assert_eq!(
                within("a runner after stop()", move || t.join().unwrap()),
                0
            );
        }
        assert_eq!(returned.load(Ordering::SeqCst), runners);
    }
}

/// "A kernel event wakes one waiter, not all": with the backend's sources shared
/// ([`Backend::share_waits`], as a loop built for several runners does), one poke of the
/// notifier is reported to exactly one of two threads waiting at once. (Level-triggered, the
/// second waiter would see the same poke, since the first has not drained it yet.)
#[cfg(dasynq_epoll)]
#[test]
fn a_shared_notifier_poke_reaches_one_waiter() {
    use dasynq::backend::{Backend, BackendEvent, Epoll};
    let be = Arc::new(Epoll::new().unwrap());
    be.share_waits().unwrap();
    let notifier = be.notifier();
    for _ in 0..3 {
        let got = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (be, got) = (be.clone(), got.clone());
                std::thread::spawn(move || {
                    let mut buf = be.new_events(8).unwrap();
                    be.wait(&mut buf, Some(Duration::from_millis(300))).unwrap();
                    let mut woke = false;
                    // Not drained until both waits are over: the second wait sees the poke
                    // only if the registration is level-triggered.
                    std::thread::sleep(Duration::from_millis(350));
                    be.for_each_event(&buf, |ev| woke |= matches!(ev, BackendEvent::Wake));
                    if woke {
                        got.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        notifier.notify();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(got.load(Ordering::SeqCst), 1, "one poke, one waiter woken");
    }
}

/// Whether thread `tid` of this process is blocked in an epoll wait (its current system call,
/// from `/proc/self/task/TID/syscall`, numbers from `libc`).
#[cfg(dasynq_epoll)]
fn in_epoll_wait(tid: i32) -> bool {
    let Ok(line) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
        return false;
    };
    let Some(Ok(nr)) = line
        .split_whitespace()
        .next()
        .map(str::parse::<libc::c_long>)
    else {
        return false;
    };
    #[cfg(target_arch = "x86_64")]
    let waits = [
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
    ];
    #[cfg(not(target_arch = "x86_64"))]
    let waits = [libc::SYS_epoll_pwait, libc::SYS_epoll_pwait2];
    waits.contains(&nr)
}

/// A call that starts after a `stop()` may take the stop's poke (here a `poll()` right after
/// it): the runner that was asleep when `stop()` came must still be ended. The runner is
/// seen blocked in the kernel's wait before each stop (so the stop is for it, not for "the
/// next call").
#[cfg(dasynq_epoll)]
#[test]
fn a_stop_reaches_the_sleeper_even_when_a_later_call_takes_its_poke() {
    let lp = Arc::new(
        ThreadedLoop::<Report>::builder()
            .runners(2)
            .build()
            .unwrap(),
    );
    for round in 0..200 {
        let (tx, rx) = mpsc::channel();
        let runner = {
            let lp = lp.clone();
            std::thread::spawn(move || {
                let _ = tx.send(rustix::thread::gettid().as_raw_nonzero().get());
                lp.run()
            })
        };
        let tid = rx.recv_timeout(WATCHDOG).unwrap();
        let t = Instant::now();
        while !in_epoll_wait(tid) {
            assert!(
                t.elapsed() < WATCHDOG,
                "round {round}: the runner never blocked"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        lp.stop();
        lp.poll();
        let t = Instant::now();
        while !runner.is_finished() {
            assert!(
                t.elapsed() < WATCHDOG,
                "round {round}: the sleeping runner was never ended by stop()"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(runner.join().unwrap(), 0);
    }
}

/// `Deadline::AfterLoopTime` from a thread that is not running the loop, while a runner is
/// blocked in plain `run()` (so no wait begins and no call ends): each arm counts from no
/// older a reading than the latest wait's start, not from an earlier arm's.
#[test]
fn after_loop_time_from_another_thread_beside_a_blocked_runner_counts_from_now() {
    use dasynq::{Clock, Deadline, Priority};
    let lp = Arc::new(ThreadedLoop::<Report>::builder().build().unwrap());
    let (tx, rx) = mpsc::channel();
    let far = lp
        .add_timer(
            Clock::Monotonic,
            Priority::DEFAULT,
            Report {
                tx: tx.clone(),
                tag: 1,
            },
        )
        .unwrap();
    let near = lp
        .add_timer(Clock::Monotonic, Priority::DEFAULT, Report { tx, tag: 2 })
        .unwrap();
    let runner = {
        let lp = lp.clone();
        std::thread::spawn(move || while lp.run() > 0 {})
    };
    std::thread::sleep(Duration::from_millis(50));
    lp.arm_timer(
        far,
        Deadline::AfterLoopTime(Duration::from_secs(3600)),
        None,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let armed = Instant::now();
    lp.arm_timer(
        near,
        Deadline::AfterLoopTime(Duration::from_millis(200)),
        None,
    )
    .unwrap();
    assert_eq!(rx.recv_timeout(WATCHDOG), Ok(2), "the near timer fires");
    let after = armed.elapsed();
    assert!(
        after >= Duration::from_millis(190),
        "fired {after:?} after its arm: counted from the earlier arm's clock reading"
    );
    lp.stop();
    within("the runner after stop()", move || runner.join().unwrap());
}
