//! Scenarios only the real Linux kernel can show: real time (timers never early, late only by
//! scheduling), files epoll cannot poll, fd hygiene, several loops in one process.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dasynq::{
    Clock, Deadline, Error, Event, EventLoop, FdOptions, FnHandler, Interest, Priority, Rearm,
};

/// Scheduling on a shared machine can delay a wake-up; this bounds "late", never "early".
const SLACK: Duration = Duration::from_millis(250);

#[test]
fn relative_timers_are_never_early() {
    let lp = EventLoop::<FnHandler>::builder().build().unwrap();
    let fired_at = Arc::new(Mutex::new(None));
    let f = fired_at.clone();
    for clock in [Clock::Monotonic, Clock::System] {
        let t = lp
            .add_timer(
                clock,
                Priority::DEFAULT,
                FnHandler::new({
                    let f = f.clone();
                    move |_, _| {
                        *f.lock().unwrap() = Some(Instant::now());
                        Rearm::Remove
                    }
                }),
            )
            .unwrap();
        let start = Instant::now();
        lp.arm_timer(t, Deadline::After(Duration::from_millis(40)), None)
            .unwrap();
        assert_eq!(lp.run(), 1);
        let waited = fired_at.lock().unwrap().unwrap() - start;
        assert!(
            waited >= Duration::from_millis(40),
            "{clock:?} fired early: {waited:?}"
        );
        assert!(
            waited < Duration::from_millis(40) + SLACK,
            "{clock:?} fired late: {waited:?}"
        );
    }
}

#[test]
fn absolute_deadlines_in_the_past_fire_at_once() {
    let lp = EventLoop::<FnHandler>::builder().build().unwrap();
    let t = lp
        .add_timer(
            Clock::Monotonic,
            Priority::DEFAULT,
            FnHandler::new(|_, _| Rearm::Remove),
        )
        .unwrap();
    let now = Instant::now();
    lp.arm_timer(
        t,
        Deadline::At(now.checked_sub(Duration::from_secs(1)).unwrap_or(now)),
        None,
    )
    .unwrap();
    let start = Instant::now();
    assert_eq!(lp.run(), 1);
    assert!(start.elapsed() < SLACK);
}

#[test]
fn periodic_timers_keep_phase_and_count_overruns_in_real_time() {
    let lp = EventLoop::<FnHandler>::builder().build().unwrap();
    let total = Arc::new(AtomicU64::new(0));
    let tt = total.clone();
    let t = lp
        .add_timer(
            Clock::Monotonic,
            Priority::DEFAULT,
            FnHandler::new(move |_, ev| {
                if let Event::Timer { expirations } = ev {
                    tt.fetch_add(expirations, Ordering::SeqCst);
                }
                Rearm::Rearm
            }),
        )
        .unwrap();
    let period = Duration::from_millis(20);
    let t0 = lp.now();
    lp.arm_timer(t, Deadline::At(t0 + period), Some(period))
        .unwrap();
    std::thread::sleep(Duration::from_millis(205));
    let before = lp.now() - t0;
    lp.poll();
    let after = lp.now() - t0;
    let due = |e: Duration| (e.as_nanos() / period.as_nanos()) as u64;
    let got = total.load(Ordering::SeqCst);
    assert!(
        got >= due(before) && got <= due(after),
        "{got} expirations in {before:?}..{after:?}"
    );
    assert!(got >= 10, "overruns are counted, not dropped: {got}");
}

#[test]
fn files_epoll_cannot_poll_are_emulated_or_refused() {
    let lp = EventLoop::<FnHandler>::builder().build().unwrap();
    let files: Vec<OwnedFd> = vec![
        std::fs::File::open("/proc/self/exe").unwrap().into(),
        std::fs::File::open("/dev/null").unwrap().into(),
        std::fs::File::open(std::env::temp_dir()).unwrap().into(),
    ];
    for f in files {
        let refused = lp
            .add_fd(
                f,
                Interest::READ,
                FdOptions::new().no_emulation(),
                FnHandler::new(|_, _| Rearm::Rearm),
            )
            .unwrap_err();
        assert_eq!(refused.error(), Error::NotPollable);
        let f = refused.into_fd().unwrap();
        lp.add_fd(
            f,
            Interest::READ,
            FdOptions::new(),
            FnHandler::new(|_, _| Rearm::Remove),
        )
        .unwrap();
        assert_eq!(lp.poll(), 1, "emulated: always ready");
    }
    assert_eq!(lp.usage().watchers, 0);
}

#[test]
fn a_waker_outliving_its_loop_is_harmless() {
    let lp = EventLoop::<FnHandler>::builder().build().unwrap();
    let (_id, waker) = lp
        .add_wake(Priority::DEFAULT, FnHandler::new(|_, _| Rearm::Rearm))
        .unwrap();
    drop(lp);
    waker.wake();
    waker.wake();
}

#[test]
fn several_loops_run_in_one_process_at_once() {
    let threads: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let lp = EventLoop::<FnHandler>::builder().build().unwrap();
                let n = Arc::new(AtomicU64::new(0));
                let n2 = n.clone();
                let t = lp
                    .add_timer(
                        Clock::Monotonic,
                        Priority::DEFAULT,
                        FnHandler::new(move |cx, _| {
                            if n2.fetch_add(1, Ordering::SeqCst) + 1 == 5 {
                                cx.stop();
                            }
                            Rearm::Rearm
                        }),
                    )
                    .unwrap();
                let ms = Duration::from_millis(2 + i);
                lp.arm_timer(t, Deadline::After(ms), Some(ms)).unwrap();
                while n.load(Ordering::SeqCst) < 5 {
                    lp.run();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// The wake eventfd of a loop with one waiter is edge-triggered and never read: each poke
/// must still end exactly one blocking wait. A single-threaded loop blocked in plain `run()`
/// is woken 1,000 times from another thread, one poke per run, each answered before the next
/// poke; then two pokes in a row give at most two deliveries and the next run blocks again
/// until a new poke. A watchdog fails the test instead of letting a lost poke hang it.
#[test]
fn each_poke_ends_one_blocking_run_with_an_edge_triggered_wake() {
    let (waker_tx, waker_rx) = std::sync::mpsc::channel();
    let (ran_tx, ran_rx) = std::sync::mpsc::channel::<usize>();
    let runner = std::thread::spawn(move || {
        let lp = EventLoop::<FnHandler>::builder()
            .watchers(2)
            .build()
            .expect("build");
        let (_id, waker) = lp
            .add_wake(Priority::DEFAULT, FnHandler::new(|_, _| Rearm::Rearm))
            .expect("wake");
        waker_tx.send(waker).expect("send waker");
        loop {
            let n = lp.run();
            if ran_tx.send(n).is_err() {
                return;
            }
        }
    });
    let waker = waker_rx.recv().expect("waker");
    let within = |what: &str| {
        ran_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{what}: a poke was lost (run still blocked)"))
    };
    for i in 0..1000 {
        waker.wake();
        assert_eq!(within(&format!("poke {i}")), 1);
    }
    // Two pokes in a row: one delivery if both land before the loop takes the first, two if
    // the second lands after (the loop runs on another thread, so either may happen), never
    // more, and then nothing is left to report: the next run blocks until a new poke.
    waker.wake();
    waker.wake();
    assert_eq!(within("two pokes"), 1);
    if let Ok(n) = ran_rx.recv_timeout(Duration::from_millis(200)) {
        assert_eq!(n, 1, "the second of two pokes");
    }
    assert!(
        ran_rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "a run returned with nothing poked"
    );
    waker.wake();
    assert_eq!(within("a poke after the coalesced ones"), 1);
    drop(ran_rx);
    waker.wake();
    let _ = runner.join();
}
