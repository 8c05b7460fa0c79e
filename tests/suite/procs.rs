//! Signal and child-process scenarios, written once over the fixture. The simulations run them
//! in `tests/behaviour.rs`; the real kernel runs them in `tests/signals_real.rs`, a
//! harness-less binary that blocks the signals in `main` before any thread exists.
//!
//! Child scenarios take `fallback`: watch children through `SIGCHLD` and `waitid(P_PID)`
//! instead of pidfds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dasynq::backend::Backend;
use dasynq::{
    ChildStatus, Clock, Deadline, Error, Event, EventLoop, Flavor, Priority, Rearm, Signal,
    SignalChildError, Single, SpawnOptions, Threaded, UsageError,
};

use super::{Fixture, Log, Probe};

type Lp<X> = EventLoop<Probe, <X as Fixture>::B, Single>;

fn lp<X: Fixture>(fx: &X, fallback: bool) -> Lp<X> {
    EventLoop::<Probe, X::B, Single>::builder()
        .watchers(512)
        .timers(8)
        .child_watch_fallback(fallback)
        .build_with(fx.backend())
        .expect("build")
}

fn rt(n: u32) -> Signal {
    Signal::rt(n).expect("real-time signal")
}

/// The signals these scenarios use; the real binary blocks them in `main`.
pub fn used_signals() -> Vec<Signal> {
    // TERM and HUP as a supervisor blocks them (the masking rule), for its children's sake.
    let mut v = vec![
        Signal::USR1,
        Signal::USR2,
        Signal::CHLD,
        Signal::TERM,
        Signal::HUP,
    ];
    // Real-time signals where the platform has them (not macOS or OpenBSD).
    v.extend((0..3).filter_map(Signal::rt));
    v
}

fn lp_flavored<X: Fixture, F: Flavor>(fx: &X) -> EventLoop<Probe, X::B, F> {
    EventLoop::<Probe, X::B, F>::builder()
        .watchers(64)
        .build_with(fx.backend())
        .expect("build")
}

/// Run until `done` holds, for at most 20 s of real time (a broken loop fails the test
/// instead of hanging it; on simulations each timed run passes in virtual time).
fn run_until<B: Backend, F: Flavor>(lp: &EventLoop<Probe, B, F>, done: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !done() && start.elapsed() < Duration::from_secs(20) {
        lp.run_timeout(Duration::from_millis(200));
    }
    assert!(done(), "condition not reached in 20 s");
}

fn signal_logger(log: &Log, name: &'static str, rearm: Rearm) -> Probe {
    let log = log.clone();
    Probe::new(move |_, ev| {
        let Event::Signal(info) = ev else {
            panic!("signal event expected")
        };
        log.push(format!("{name}:{}", info.value_int()));
        rearm
    })
}

// ---------------------------------------------------------------- signals

pub fn signals_remove_handles_only_the_first<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx, false);
    for s in used_signals() {
        fx.block(s);
    }
    let log = Log::default();
    lp.add_signal(
        Signal::USR1,
        Priority::DEFAULT,
        signal_logger(&log, "usr1", Rearm::Remove),
    )
    .unwrap();
    lp.add_signal(
        Signal::USR2,
        Priority::DEFAULT,
        signal_logger(&log, "usr2", Rearm::Remove),
    )
    .unwrap();
    fx.send(Signal::USR1, None);
    assert_eq!(lp.run(), 1);
    assert_eq!(log.take(), vec!["usr1:0"]);
    fx.send(Signal::USR1, None);
    fx.send(Signal::USR2, None);
    assert_eq!(lp.run(), 1);
    assert_eq!(log.take(), vec!["usr2:0"]);
    assert_eq!(lp.usage().watchers, 0);
    // The USR1 sent after its watcher left stays pending in the kernel (nobody took it);
    // a new watcher gets it.
    lp.add_signal(
        Signal::USR1,
        Priority::DEFAULT,
        signal_logger(&log, "again", Rearm::Remove),
    )
    .unwrap();
    assert_eq!(lp.run(), 1);
    assert_eq!(log.take(), vec!["again:0"]);
}

pub fn signals_rearm_receives_again<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx, false);
    fx.block(Signal::USR1);
    let log = Log::default();
    lp.add_signal(
        Signal::USR1,
        Priority::DEFAULT,
        signal_logger(&log, "usr1", Rearm::Rearm),
    )
    .unwrap();
    for round in 1..=2 {
        fx.send(Signal::USR1, None);
        assert_eq!(lp.run(), 1, "round {round}");
    }
    assert_eq!(log.take().len(), 2);
}

pub fn signals_pending_signal_before_a_timer<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx, false);
    fx.block(Signal::USR1);
    let log = Log::default();
    lp.add_signal(
        Signal::USR1,
        Priority::DEFAULT,
        signal_logger(&log, "signal", Rearm::Remove),
    )
    .unwrap();
    let l = log.clone();
    let t = lp
        .add_timer(
            Clock::Monotonic,
            Priority::DEFAULT,
            Probe::new(move |_, _| {
                l.push("timer");
                Rearm::Remove
            }),
        )
        .unwrap();
    lp.arm_timer(t, Deadline::After(fx.unit() * 2), None)
        .unwrap();
    fx.send(Signal::USR1, None);
    assert_eq!(lp.run(), 1);
    assert_eq!(
        log.take(),
        vec!["signal:0"],
        "the pending signal first, not the timer"
    );
    assert_eq!(lp.run(), 1);
    assert_eq!(log.take(), vec!["timer"]);
}

pub fn signals_each_realtime_instance_has_its_own_data<X: Fixture>() {
    realtime_instances::<X, Single>();
    realtime_instances::<X, Threaded>();
}

fn realtime_instances<X: Fixture, F: Flavor>() {
    let fx = X::new();
    if !fx.queued_signals() {
        return number_only_instances::<X, F>(&fx);
    }
    let lp = lp_flavored::<X, F>(&fx);
    fx.block(rt(0));
    let log = Log::default();
    lp.add_signal(
        rt(0),
        Priority::DEFAULT,
        signal_logger(&log, "rt", Rearm::Rearm),
    )
    .unwrap();
    for v in 1..=3 {
        fx.send(rt(0), Some(v));
    }
    run_until(&lp, || log.get().len() >= 3);
    assert_eq!(log.take(), vec!["rt:1", "rt:2", "rt:3"]);
    assert_eq!(lp.poll(), 0, "nothing duplicated");
}

/// Where instances are taken with `sigwait` (macOS, OpenBSD), a watcher learns the signal
/// number and nothing else: every other `siginfo` field reads zero.
/// Without `sigqueue` (macOS, OpenBSD) a signal is sent with `kill`: the instance carries no
/// value, but its `siginfo` still names the sender (taken with its siginfo, not `sigwait`).
fn number_only_instances<X: Fixture, F: Flavor>(fx: &X) {
    let lp = lp_flavored::<X, F>(fx);
    fx.block(Signal::USR1);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    lp.add_signal(
        Signal::USR1,
        Priority::DEFAULT,
        Probe::new(move |_, ev| {
            let Event::Signal(info) = ev else { panic!() };
            s2.lock()
                .unwrap()
                .push((info.signal(), info.value_int(), info.pid(), info.code()));
            Rearm::Rearm
        }),
    )
    .unwrap();
    fx.send(Signal::USR1, Some(7));
    run_until(&lp, || !seen.lock().unwrap().is_empty());
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let (sig, value, pid, _code) = got[0];
    assert_eq!((sig, value), (Signal::USR1, 0));
    assert_eq!(
        pid,
        std::process::id() as i32,
        "the sender, from the siginfo"
    );
    assert_eq!(lp.poll(), 0, "nothing duplicated");
}

pub fn signals_disabled_watcher_loses_nothing<X: Fixture>() {
    disabled_loses_nothing::<X, Single>();
    disabled_loses_nothing::<X, Threaded>();
}

fn disabled_loses_nothing<X: Fixture, F: Flavor>() {
    let fx = X::new();
    let lp = lp_flavored::<X, F>(&fx);
    // Real-time signals where the platform has them (the standard one either way).
    let queued = fx.queued_signals();
    let rt1 = if queued { rt(1) } else { Signal::USR1 };
    fx.block(rt1);
    fx.block(Signal::USR2);
    let log = Log::default();
    let r = lp
        .add_signal(
            rt1,
            Priority::DEFAULT,
            signal_logger(&log, "rt", Rearm::Rearm),
        )
        .unwrap();
    let u = lp
        .add_signal(
            Signal::USR2,
            Priority::DEFAULT,
            signal_logger(&log, "usr2", Rearm::Rearm),
        )
        .unwrap();
    lp.disable(r).unwrap();
    lp.disable(u).unwrap();
    for v in 1..=5 {
        fx.send(rt1, Some(v));
        fx.send(Signal::USR2, Some(v));
    }
    assert_eq!(lp.poll(), 0, "disabled: nothing delivered");
    lp.enable(r).unwrap();
    lp.enable(u).unwrap();
    let expect = if queued { 6 } else { 2 };
    run_until(&lp, || log.get().len() >= expect);
    for _ in 0..3 {
        lp.poll();
    }
    let got = log.take();
    let rt_got: Vec<&String> = got.iter().filter(|s| s.starts_with("rt")).collect();
    if queued {
        assert_eq!(
            rt_got,
            vec!["rt:1", "rt:2", "rt:3", "rt:4", "rt:5"],
            "real-time: all, in order"
        );
    } else {
        assert_eq!(rt_got, vec!["rt:0"], "no real-time signals: USR1 coalesces");
    }
    let std_got = got.iter().filter(|s| s.starts_with("usr2")).count();
    assert_eq!(
        std_got, 1,
        "a standard signal coalesces while pending (POSIX)"
    );
}

pub fn signals_instances_wait_while_queued_or_running<X: Fixture>() {
    wait_while_busy::<X, Single>();
    wait_while_busy::<X, Threaded>();
    standard_waits_while_busy::<X, Single>();
    standard_waits_while_busy::<X, Threaded>();
}

/// A standard signal sent twice while its handler runs waits in the kernel, where the two
/// coalesce into one: exactly one more delivery, on every platform.
fn standard_waits_while_busy<X: Fixture, F: Flavor>() {
    let fx = X::new();
    let lp = lp_flavored::<X, F>(&fx);
    fx.block(Signal::USR1);
    let runs = Arc::new(AtomicUsize::new(0));
    let (fx2, r2) = (fx.clone(), runs.clone());
    lp.add_signal(
        Signal::USR1,
        Priority::DEFAULT,
        Probe::new(move |_, ev| {
            let Event::Signal(info) = ev else { panic!() };
            assert_eq!(info.signal(), Signal::USR1);
            if r2.fetch_add(1, Ordering::SeqCst) == 0 {
                fx2.send(Signal::USR1, None);
                fx2.send(Signal::USR1, None);
            }
            Rearm::Rearm
        }),
    )
    .unwrap();
    fx.send(Signal::USR1, None);
    run_until(&lp, || runs.load(Ordering::SeqCst) >= 2);
    for _ in 0..3 {
        lp.poll();
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

fn wait_while_busy<X: Fixture, F: Flavor>() {
    let fx = X::new();
    if !fx.queued_signals() {
        return;
    }
    let lp = lp_flavored::<X, F>(&fx);
    fx.block(rt(2));
    let log = Log::default();
    let fx2 = fx.clone();
    let l = log.clone();
    let mut first = true;
    lp.add_signal(
        rt(2),
        Priority::DEFAULT,
        Probe::new(move |_, ev| {
            let Event::Signal(info) = ev else { panic!() };
            if first {
                // More instances arrive while this handler runs: they must wait in the kernel.
                first = false;
                fx2.send(rt(2), Some(20));
                fx2.send(rt(2), Some(30));
            }
            l.push(format!("{}", info.value_int()));
            Rearm::Rearm
        }),
    )
    .unwrap();
    fx.send(rt(2), Some(10));
    run_until(&lp, || log.get().len() >= 3);
    assert_eq!(log.take(), vec!["10", "20", "30"]);
}

/// A burst of queued instances larger than the loop's room: every one delivered once, in
/// order, with its own data, whatever the room (0: one held at a time; 3: reading stops for
/// room every few instances, and a threaded loop stalls its watcher; the default), in both
/// flavours.
pub fn signals_a_burst_larger_than_the_room_loses_nothing<X: Fixture>() {
    for room in [0, 3, 32] {
        burst_in_order::<X, Single>(room);
        burst_in_order::<X, Threaded>(room);
    }
}

fn burst_in_order<X: Fixture, F: Flavor>(room: usize) {
    let fx = X::new();
    if !fx.queued_signals() {
        return;
    }
    let lp = EventLoop::<Probe, X::B, F>::builder()
        .watchers(8)
        .signal_instances(room)
        .build_with(fx.backend())
        .expect("build");
    fx.block(rt(1));
    let log = Log::default();
    lp.add_signal(
        rt(1),
        Priority::DEFAULT,
        signal_logger(&log, "b", Rearm::Rearm),
    )
    .unwrap();
    for v in 0..100 {
        fx.send(rt(1), Some(v));
    }
    run_until(&lp, || log.get().len() >= 100);
    for _ in 0..3 {
        lp.poll();
    }
    let want: Vec<String> = (0..100).map(|v| format!("b:{v}")).collect();
    assert_eq!(log.take(), want, "room {room}");
}

/// The instances a watcher holds all run in the run call that finds them, as many as the
/// room holds (one read, no wait per instance; threaded, the runner claims the watcher again
/// at once); with no room beyond the first, one per call. A call's limit still holds: the
/// rest wait for the next call, in order.
pub fn signals_held_instances_run_in_one_batch<X: Fixture>() {
    held_in_one_batch::<X, Single>();
    held_in_one_batch::<X, Threaded>();
}

fn held_in_one_batch<X: Fixture, F: Flavor>() {
    let fx = X::new();
    if !fx.queued_signals() {
        return;
    }
    // (room, instances the first run delivers): the room plus the watcher's own place.
    for (room, first) in [(32, 10), (4, 5), (0, 1)] {
        let lp = EventLoop::<Probe, X::B, F>::builder()
            .watchers(8)
            .runners(1)
            .signal_instances(room)
            .build_with(fx.backend())
            .expect("build");
        fx.block(rt(2));
        let log = Log::default();
        let id = lp
            .add_signal(
                rt(2),
                Priority::DEFAULT,
                signal_logger(&log, "s", Rearm::Rearm),
            )
            .unwrap();
        for v in 0..10 {
            fx.send(rt(2), Some(v));
        }
        if room == 32 {
            assert_eq!(lp.run_limit(3), 3, "room {room}: the limit holds");
        }
        assert_eq!(lp.run(), if room == 32 { 7 } else { first }, "room {room}");
        run_until(&lp, || log.get().len() >= 10);
        let want: Vec<String> = (0..10).map(|v| format!("s:{v}")).collect();
        assert_eq!(log.take(), want, "room {room}");
        lp.remove(id).unwrap();
    }
}

/// Threaded, two runners blocked in plain `run()`, a loop with room for 3: a burst sent from
/// another thread reaches the handler whole and in order (the watcher stalled for room is
/// armed again and the rest taken, with no lost wake-up: a watchdog fails the test rather
/// than let it hang).
pub fn signals_threaded_runners_drain_a_burst_in_plain_run<X: Fixture>() {
    let fx = X::new();
    if !fx.queued_signals() {
        return;
    }
    let lp = Arc::new(
        EventLoop::<Probe, X::B, Threaded>::builder()
            .watchers(8)
            .runners(2)
            .signal_instances(3)
            .build_with(fx.backend())
            .expect("build"),
    );
    fx.block(rt(1));
    let log = Log::default();
    lp.add_signal(
        rt(1),
        Priority::DEFAULT,
        signal_logger(&log, "t", Rearm::Rearm),
    )
    .unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let runners: Vec<_> = (0..2)
        .map(|_| {
            let (lp, done) = (lp.clone(), done.clone());
            std::thread::spawn(move || {
                let mut ran = 0;
                while !done.load(Ordering::SeqCst) {
                    ran += lp.run();
                }
                ran
            })
        })
        .collect();
    let fx2 = fx.clone();
    std::thread::spawn(move || {
        for v in 0..200 {
            fx2.send(rt(1), Some(v));
        }
    })
    .join()
    .unwrap();
    let start = std::time::Instant::now();
    while log.get().len() < 200 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} of 200 instances delivered: the rest was lost",
            log.get().len()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    done.store(true, Ordering::SeqCst);
    let ran: usize =
        super::portable::stop_until_joined(|| lp.stop(), runners, Duration::from_secs(30))
            .into_iter()
            .sum();
    assert_eq!(ran, 200);
    let want: Vec<String> = (0..200).map(|v| format!("t:{v}")).collect();
    assert_eq!(log.take(), want);
}

pub fn signals_every_rearm_code<X: Fixture>() {
    let fx = X::new();
    if !fx.queued_signals() {
        return every_rearm_code_standard(&fx);
    }
    let lp = lp(&fx, false);
    fx.block(rt(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let codes = Arc::new(Mutex::new(vec![
        Rearm::Requeue,
        Rearm::Rearm,
        Rearm::Noop,
        Rearm::Disarm,
        Rearm::Remove,
    ]));
    let (s2, c2) = (seen.clone(), codes.clone());
    let removed = Arc::new(AtomicUsize::new(0));
    let id = lp
        .add_signal(
            rt(0),
            Priority::DEFAULT,
            Probe::counting(&removed, move |_, ev| {
                let Event::Signal(info) = ev else { panic!() };
                s2.lock().unwrap().push(info.value_int());
                c2.lock().unwrap().remove(0)
            }),
        )
        .unwrap();
    for v in 1..=4 {
        fx.send(rt(0), Some(v));
    }
    // Requeue: the same instance again, in the next batch.
    assert_eq!(lp.run(), 1);
    assert_eq!(*seen.lock().unwrap(), vec![1]);
    // Rearm: the next instance (in that same batch, when the loop holds both: see
    // `Builder::signal_instances`).
    run_until(&lp, || seen.lock().unwrap().len() >= 3);
    assert_eq!(*seen.lock().unwrap(), vec![1, 1, 2]);
    // Noop leaves it disabled: instance 4 waits.
    for _ in 0..3 {
        lp.poll();
    }
    assert_eq!(seen.lock().unwrap().len(), 3);
    lp.enable(id).unwrap();
    run_until(&lp, || seen.lock().unwrap().len() >= 4);
    // Disarm: disabled again until enabled.
    for _ in 0..3 {
        lp.poll();
    }
    assert_eq!(seen.lock().unwrap().len(), 4);
    lp.enable(id).unwrap();
    run_until(&lp, || seen.lock().unwrap().len() >= 5);
    assert_eq!(*seen.lock().unwrap(), vec![1, 1, 2, 3, 4]);
    // Remove: gone, once.
    assert_eq!(removed.load(Ordering::SeqCst), 1);
    assert!(!lp.contains(id));
    assert_eq!(lp.usage().watchers, 0);
}

/// Every rearm code with a standard signal, one instance at a time (for platforms without
/// real-time signals, where instances carry no value to tell them apart).
fn every_rearm_code_standard<X: Fixture>(fx: &X) {
    let lp = lp(fx, false);
    fx.block(Signal::USR1);
    let runs = Arc::new(AtomicUsize::new(0));
    let codes = Arc::new(Mutex::new(vec![
        Rearm::Requeue,
        Rearm::Rearm,
        Rearm::Noop,
        Rearm::Disarm,
        Rearm::Remove,
    ]));
    let (r2, c2) = (runs.clone(), codes.clone());
    let removed = Arc::new(AtomicUsize::new(0));
    let id = lp
        .add_signal(
            Signal::USR1,
            Priority::DEFAULT,
            Probe::counting(&removed, move |_, _| {
                r2.fetch_add(1, Ordering::SeqCst);
                c2.lock().unwrap().remove(0)
            }),
        )
        .unwrap();
    let runs = || runs.load(Ordering::SeqCst);
    fx.send(Signal::USR1, None);
    // Requeue: the same instance again in the next batch, and no third run from it.
    assert_eq!(lp.run(), 1);
    assert_eq!(lp.run(), 1);
    for _ in 0..3 {
        lp.poll();
    }
    assert_eq!(runs(), 2);
    // Rearm: the next instance is delivered.
    fx.send(Signal::USR1, None);
    run_until(&lp, || runs() >= 3);
    // Noop leaves it disabled: an instance sent now waits until enabled.
    fx.send(Signal::USR1, None);
    for _ in 0..3 {
        lp.poll();
    }
    assert_eq!(runs(), 3);
    lp.enable(id).unwrap();
    run_until(&lp, || runs() >= 4);
    // Disarm: disabled again until enabled.
    fx.send(Signal::USR1, None);
    for _ in 0..3 {
        lp.poll();
    }
    assert_eq!(runs(), 4);
    lp.enable(id).unwrap();
    run_until(&lp, || runs() >= 5);
    // Remove: gone, once.
    assert_eq!(removed.load(Ordering::SeqCst), 1);
    assert!(!lp.contains(id));
    assert_eq!(lp.usage().watchers, 0);
}

pub fn signals_bad_input_is_refused_and_leaks_nothing<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx, false);
    fx.block(Signal::USR1);
    for (sig, what) in [
        (Signal::KILL, "kill"),
        (Signal::STOP, "stop"),
        (Signal::from_raw(0), "zero"),
        (Signal::from_raw(65), "65"),
        (Signal::from_raw(-3), "negative"),
    ] {
        let e = lp
            .add_signal(sig, Priority::DEFAULT, Probe::new(|_, _| Rearm::Rearm))
            .unwrap_err();
        assert!(
            matches!(e.error(), Error::InvalidArgument(_)),
            "{what}: {:?}",
            e.error()
        );
    }
    let unblocked = fx.unblocked_signal();
    let e = lp
        .add_signal(
            unblocked,
            Priority::DEFAULT,
            Probe::new(|_, _| Rearm::Rearm),
        )
        .unwrap_err();
    // The message says how to block it where it must be blocked: the process's mask on a
    // real kernel, the simulated process's on a simulation.
    if fx.simulated() {
        assert_eq!(e.error(), Error::SimSignalNotBlocked(unblocked));
        assert!(e.to_string().contains("sim.block_signal"), "{e}");
    } else {
        assert_eq!(e.error(), Error::SignalNotBlocked(unblocked));
        assert!(e.to_string().contains("dasynq::block_signals"), "{e}");
    }
    lp.add_signal(
        Signal::USR1,
        Priority::DEFAULT,
        Probe::new(|_, _| Rearm::Rearm),
    )
    .unwrap();
    let e = lp
        .add_signal(
            Signal::USR1,
            Priority::DEFAULT,
            Probe::new(|_, _| Rearm::Rearm),
        )
        .unwrap_err();
    assert_eq!(e.error(), Error::SignalAlreadyWatched(Signal::USR1));
    assert_eq!(
        lp.usage().watchers,
        1,
        "only the one good registration holds a slot"
    );
}

pub fn signals_self_removal_with_every_code<X: Fixture>() {
    for code in [
        Rearm::Rearm,
        Rearm::Disarm,
        Rearm::Noop,
        Rearm::Remove,
        Rearm::Requeue,
    ] {
        let fx = X::new();
        let lp = lp(&fx, false);
        fx.block(Signal::USR1);
        let removed = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let c2 = calls.clone();
        lp.add_signal(
            Signal::USR1,
            Priority::DEFAULT,
            Probe::counting(&removed, move |cx, _| {
                c2.fetch_add(1, Ordering::SeqCst);
                cx.remove(cx.id()).unwrap();
                code
            }),
        )
        .unwrap();
        fx.send(Signal::USR1, None);
        assert_eq!(lp.run(), 1);
        assert_eq!(lp.poll(), 0);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{code:?}");
        assert_eq!(removed.load(Ordering::SeqCst), 1, "{code:?}");
        assert_eq!(lp.usage().watchers, 0);
        // The signal can be watched again.
        lp.add_signal(
            Signal::USR1,
            Priority::DEFAULT,
            Probe::new(|_, _| Rearm::Rearm),
        )
        .unwrap();
    }
}

// ---------------------------------------------------------------- children

fn child_logger(log: &Log, rearm: Rearm) -> Probe {
    let log = log.clone();
    Probe::new(move |_, ev| {
        let Event::Child { pid, status } = ev else {
            panic!("child event expected")
        };
        log.push(format!("{pid}:{status:?}"));
        rearm
    })
}

pub fn children_exit_codes_are_reported<X: Fixture>(fallback: bool) {
    let fx = X::new();
    let lp = lp(&fx, fallback);
    fx.block(Signal::CHLD);
    let log = Log::default();
    for code in [0, 3] {
        let sp = lp
            .spawn_child(
                fx.exit_command(code),
                SpawnOptions::new(),
                child_logger(&log, Rearm::Remove),
            )
            .unwrap();
        fx.finish(sp.pid, code);
        run_until(&lp, || !log.get().is_empty());
        assert_eq!(log.take(), vec![format!("{}:Exited({code})", sp.pid)]);
        assert!(!lp.contains(sp.id));
    }
    assert_eq!(lp.usage().watchers, 0);
}

pub fn children_killed_by_a_signal<X: Fixture>(fallback: bool) {
    let fx = X::new();
    let lp = lp(&fx, fallback);
    fx.block(Signal::CHLD);
    let log = Log::default();
    let sp = lp
        .spawn_child(
            fx.sleeper_command(),
            SpawnOptions::new(),
            child_logger(&log, Rearm::Rearm),
        )
        .unwrap();
    assert_eq!(
        lp.usage().fallback_children,
        usize::from(fallback),
        "the path under test is used"
    );
    lp.signal_child(sp.id, Signal::KILL).unwrap();
    run_until(&lp, || !log.get().is_empty());
    assert_eq!(
        log.take(),
        vec![format!(
            "{}:Signaled {{ signal: SIGKILL, core_dumped: false }}",
            sp.pid
        )]
    );
    assert_eq!(
        lp.signal_child(sp.id, Signal::TERM),
        Err(SignalChildError::Gone),
        "reaped: gone"
    );
    assert!(lp.contains(sp.id), "Rearm keeps the (now idle) watcher");
}

/// A supervisor's whole path: it blocks `SIGTERM` (the masking rule), starts a service, and
/// stops it with `signal_child(TERM)`. The child must not inherit the blocked mask, or the
/// `SIGTERM` would wait in it forever (found when a supervisor was written from the docs).
pub fn children_term_from_the_loop_stops_a_child_spawned_with_term_blocked<X: Fixture>(
    fallback: bool,
) {
    let fx = X::new();
    let lp = lp(&fx, fallback);
    for sig in [Signal::CHLD, Signal::TERM, Signal::HUP] {
        fx.block(sig);
    }
    let log = Log::default();
    let sp = lp
        .spawn_child(
            fx.sleeper_command(),
            SpawnOptions::new(),
            child_logger(&log, Rearm::Remove),
        )
        .unwrap();
    assert_eq!(lp.usage().fallback_children, usize::from(fallback));
    lp.signal_child(sp.id, Signal::TERM).unwrap();
    run_until(&lp, || !log.get().is_empty());
    assert_eq!(
        log.take(),
        vec![format!(
            "{}:Signaled {{ signal: SIGTERM, core_dumped: false }}",
            sp.pid
        )]
    );
}

pub fn children_many_exiting_at_once_each_reported_once<X: Fixture>(fallback: bool) {
    let fx = X::new();
    let lp = lp(&fx, fallback);
    fx.block(Signal::CHLD);
    let log = Log::default();
    let mut pids = Vec::new();
    for _ in 0..200 {
        let sp = lp
            .spawn_child(
                fx.exit_command(7),
                SpawnOptions::new(),
                child_logger(&log, Rearm::Remove),
            )
            .unwrap();
        pids.push(sp.pid);
    }
    for &pid in &pids {
        fx.finish(pid, 7);
    }
    run_until(&lp, || log.get().len() >= 200);
    for _ in 0..3 {
        lp.poll();
    }
    let mut got = log.take();
    got.sort();
    let mut want: Vec<String> = pids.iter().map(|p| format!("{p}:Exited(7)")).collect();
    want.sort();
    assert_eq!(got, want, "each child reported exactly once");
    assert_eq!(lp.usage().watchers, 0);
}

pub fn children_unwatched_ones_are_left_to_the_program<X: Fixture>(fallback: bool) {
    let fx = X::new();
    let lp = lp(&fx, fallback);
    fx.block(Signal::CHLD);
    let log = Log::default();
    let unwatched = fx.start_unwatched();
    let sp = lp
        .spawn_child(
            fx.exit_command(0),
            SpawnOptions::new(),
            child_logger(&log, Rearm::Remove),
        )
        .unwrap();
    fx.finish(sp.pid, 0);
    run_until(&lp, || !log.get().is_empty());
    for _ in 0..3 {
        lp.poll();
    }
    assert_eq!(
        fx.program_reap(unwatched),
        Ok(ChildStatus::Exited(0)),
        "not reaped by the loop"
    );
}

pub fn children_reservation_survives_every_rearm_code<X: Fixture>(fallback: bool) {
    let fx = X::new();
    let lp = lp(&fx, fallback);
    fx.block(Signal::CHLD);
    let log = Log::default();
    let codes = Arc::new(Mutex::new(vec![
        Rearm::Rearm,
        Rearm::Disarm,
        Rearm::Noop,
        Rearm::Requeue,
        Rearm::Rearm,
        Rearm::Remove,
    ]));
    let (l, c) = (log.clone(), codes.clone());
    let removed = Arc::new(AtomicUsize::new(0));
    let id = lp
        .reserve_child(
            Priority::DEFAULT,
            Probe::counting(&removed, move |_, ev| {
                let Event::Child { status, .. } = ev else {
                    panic!()
                };
                l.push(format!("{status:?}"));
                c.lock().unwrap().remove(0)
            }),
        )
        .unwrap();
    assert_eq!(lp.usage().watchers, 1, "the reservation holds its slot");
    let cycle = |code: i32| {
        let pid = {
            // Spawn outside the loop, then watch with the reservation (cannot fail).
            let mut cmd = fx.exit_command(code);
            lp.backend()
                .spawn(
                    dasynq::backend::ChildCommand::Command(&mut cmd),
                    dasynq::backend::SpawnHow::default(),
                )
                .expect("spawn")
                .pid
        };
        lp.watch_child(id, pid).unwrap();
        assert_eq!(
            lp.watch_child(id, pid),
            Err(UsageError::Busy),
            "one child at a time"
        );
        fx.finish(pid, code);
        pid
    };
    // Rearm: reported, idle again.
    cycle(1);
    run_until(&lp, || !log.get().is_empty());
    // Disarm: reported, then disabled: the next exit waits for enable.
    cycle(2);
    run_until(&lp, || log.get().len() >= 2);
    cycle(3);
    for _ in 0..20 {
        lp.run_timeout(Duration::from_millis(10));
    }
    assert_eq!(
        log.get().len(),
        2,
        "disabled: the third exit is kept, not reported"
    );
    lp.enable(id).unwrap();
    run_until(&lp, || log.get().len() >= 3);
    // Noop left it disabled; Requeue reports the same exit twice.
    lp.enable(id).unwrap();
    cycle(4);
    run_until(&lp, || log.get().len() >= 5);
    // Rearm, then Remove: the slot comes back once.
    cycle(5);
    run_until(&lp, || log.get().len() >= 6);
    assert_eq!(
        log.take(),
        vec![
            "Exited(1)",
            "Exited(2)",
            "Exited(3)",
            "Exited(4)",
            "Exited(4)",
            "Exited(5)"
        ]
    );
    assert_eq!(removed.load(Ordering::SeqCst), 1);
    assert_eq!(lp.usage().watchers, 0);
    assert_eq!(lp.watch_child(id, 1), Err(UsageError::Stale));
}

/// The original's crash: reserve, let the handler `Disarm`, then deregister; repeated.
pub fn children_disarm_then_remove_cycles_release_once<X: Fixture>(fallback: bool) {
    let fx = X::new();
    let lp = lp(&fx, fallback);
    fx.block(Signal::CHLD);
    let removed = Arc::new(AtomicUsize::new(0));
    for round in 0..20 {
        let log = Log::default();
        let l = log.clone();
        let id = lp
            .reserve_child(
                Priority::DEFAULT,
                Probe::counting(&removed, move |_, _| {
                    l.push("exit");
                    Rearm::Disarm
                }),
            )
            .unwrap();
        let pid = lp
            .backend()
            .spawn(
                dasynq::backend::ChildCommand::Command(&mut fx.exit_command(0)),
                dasynq::backend::SpawnHow::default(),
            )
            .expect("spawn")
            .pid;
        lp.watch_child(id, pid).unwrap();
        fx.finish(pid, 0);
        run_until(&lp, || !log.get().is_empty());
        lp.remove(id).unwrap();
        assert_eq!(removed.load(Ordering::SeqCst), round + 1);
        assert_eq!(lp.remove(id), Err(UsageError::Stale));
        assert_eq!(lp.usage().watchers, 0);
    }
}

pub fn children_bad_input_is_refused_and_leaks_nothing<X: Fixture>(fallback: bool) {
    let fx = X::new();
    let lp = lp(&fx, fallback);
    fx.block(Signal::CHLD);
    let foreign = fx.foreign_pid();
    let e = lp
        .add_child(foreign, Priority::DEFAULT, Probe::new(|_, _| Rearm::Rearm))
        .unwrap_err();
    assert_eq!(e.error(), Error::NotAChild(foreign));
    assert_eq!(lp.usage().watchers, 0);
    let id = lp
        .reserve_child(Priority::DEFAULT, Probe::new(|_, _| Rearm::Rearm))
        .unwrap();
    assert_eq!(lp.watch_child(id, foreign), Err(UsageError::NotAChild));
    assert_eq!(lp.watch_child(id, 0), Err(UsageError::NotAChild));
    assert_eq!(
        lp.signal_child(id, Signal::TERM),
        Err(SignalChildError::Gone),
        "idle: no child"
    );
    // Numbers no signal has here, and the C library's own (glibc's 32 and 33 on Linux,
    // FreeBSD's SIGTHR and SIGLIBRT): refused before anything is sent.
    let mut refused = vec![
        Signal::from_raw(0),
        Signal::from_raw(-1),
        Signal::from_raw(500),
    ];
    if let Some(first_rt) = Signal::rt(0) {
        if first_rt.raw() > 32 {
            refused.push(Signal::from_raw(32));
        }
    }
    for sig in refused {
        assert!(
            matches!(
                lp.signal_child(id, sig),
                Err(SignalChildError::Usage(UsageError::InvalidArgument(_)))
            ),
            "{sig:?}"
        );
    }
    let before = lp.usage();
    let e = lp
        .spawn_child(
            fx.missing_program(),
            SpawnOptions::new(),
            Probe::new(|_, _| Rearm::Rearm),
        )
        .unwrap_err();
    assert!(
        matches!(e.error(), Error::Spawn { errno } if errno == dasynq::Errno::NOENT),
        "{:?}",
        e.error()
    );
    assert!(e.to_string().contains("could not start"));
    assert_eq!(lp.usage(), before, "no slot leaked");
    // A pid that was our child but is already reaped is not one any more.
    let pid = lp
        .backend()
        .spawn(
            dasynq::backend::ChildCommand::Command(&mut fx.exit_command(0)),
            dasynq::backend::SpawnHow::default(),
        )
        .expect("spawn")
        .pid;
    fx.finish(pid, 0);
    fx.program_reap(pid).expect("reap");
    assert_eq!(lp.watch_child(id, pid), Err(UsageError::NotAChild));
    let t = lp
        .add_timer(
            Clock::Monotonic,
            Priority::DEFAULT,
            Probe::new(|_, _| Rearm::Rearm),
        )
        .unwrap();
    assert!(matches!(
        lp.watch_child(t, pid),
        Err(UsageError::WrongKind { .. })
    ));
    assert!(matches!(
        lp.signal_child(t, Signal::TERM),
        Err(SignalChildError::Usage(_))
    ));
}

pub fn children_self_removal_with_every_code<X: Fixture>(fallback: bool) {
    for code in [
        Rearm::Rearm,
        Rearm::Disarm,
        Rearm::Noop,
        Rearm::Remove,
        Rearm::Requeue,
    ] {
        let fx = X::new();
        let lp = lp(&fx, fallback);
        fx.block(Signal::CHLD);
        let removed = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let c2 = calls.clone();
        let sp = lp
            .spawn_child(
                fx.exit_command(0),
                SpawnOptions::new(),
                Probe::counting(&removed, move |cx, _| {
                    c2.fetch_add(1, Ordering::SeqCst);
                    cx.remove(cx.id()).unwrap();
                    code
                }),
            )
            .unwrap();
        fx.finish(sp.pid, 0);
        run_until(&lp, || calls.load(Ordering::SeqCst) > 0);
        for _ in 0..3 {
            lp.poll();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{code:?}");
        assert_eq!(removed.load(Ordering::SeqCst), 1, "{code:?}");
        assert_eq!(lp.usage().watchers, 0);
    }
}

pub fn children_removing_a_watcher_of_a_running_child_leaves_it_alone<X: Fixture>(fallback: bool) {
    let fx = X::new();
    let lp = lp(&fx, fallback);
    fx.block(Signal::CHLD);
    let sp = lp
        .spawn_child(
            fx.exit_command(4),
            SpawnOptions::new(),
            Probe::new(|_, _| panic!("removed")),
        )
        .unwrap();
    lp.remove(sp.id).unwrap();
    fx.finish(sp.pid, 4);
    for _ in 0..5 {
        lp.run_timeout(Duration::from_millis(20));
    }
    assert_eq!(
        fx.program_reap(sp.pid),
        Ok(ChildStatus::Exited(4)),
        "the program reaps it"
    );
}

/// Found by the `loop_ops` fuzz target: a second watcher of one child was accepted, and the
/// two raced to reap it (the loser reported `ChildStatus::Unknown`).
pub fn children_a_child_is_watched_by_one_watcher_only<X: Fixture>(fallback: bool) {
    let fx = X::new();
    let lp = lp(&fx, fallback);
    fx.block(Signal::CHLD);
    let log = Log::default();
    let l = log.clone();
    let sp = lp
        .spawn_child(
            fx.exit_command(6),
            SpawnOptions::new(),
            Probe::new(move |_, ev| {
                if let Event::Child { status, .. } = ev {
                    l.push(format!("{status:?}"));
                }
                Rearm::Rearm
            }),
        )
        .unwrap();
    let removed = Arc::new(AtomicUsize::new(0));
    let other = lp
        .reserve_child(
            Priority::DEFAULT,
            Probe::counting(&removed, |_, _| panic!("the second watcher never runs")),
        )
        .unwrap();
    assert_eq!(
        lp.watch_child(other, sp.pid),
        Err(UsageError::AlreadyWatched)
    );
    let err = lp
        .add_child(sp.pid, Priority::DEFAULT, Probe::new(|_, _| Rearm::Rearm))
        .unwrap_err();
    assert_eq!(err.error(), Error::ChildAlreadyWatched(sp.pid));
    assert!(err.to_string().contains("already watched"));
    assert_eq!(lp.usage().watchers, 2, "nothing leaked");
    fx.finish(sp.pid, 6);
    run_until(&lp, || !log.get().is_empty());
    assert_eq!(log.take(), vec!["Exited(6)"]);
    // Reaped now: no longer anyone's child.
    assert_eq!(lp.watch_child(other, sp.pid), Err(UsageError::NotAChild));
    lp.remove(other).unwrap();
    assert_eq!(removed.load(Ordering::SeqCst), 1);
}

/// One `#[test]` per scenario, for the simulated fixtures.
#[macro_export]
macro_rules! process_suite {
    ($fx:ty) => {
        $crate::process_suite!(@signals $fx;
            signals_remove_handles_only_the_first,
            signals_rearm_receives_again,
            signals_pending_signal_before_a_timer,
            signals_each_realtime_instance_has_its_own_data,
            signals_disabled_watcher_loses_nothing,
            signals_instances_wait_while_queued_or_running,
            signals_every_rearm_code,
            signals_a_burst_larger_than_the_room_loses_nothing,
            signals_held_instances_run_in_one_batch,
            signals_threaded_runners_drain_a_burst_in_plain_run,
            signals_bad_input_is_refused_and_leaks_nothing,
            signals_self_removal_with_every_code,
        );
        $crate::process_suite!(@children $fx;
            children_exit_codes_are_reported,
            children_killed_by_a_signal,
            children_term_from_the_loop_stops_a_child_spawned_with_term_blocked,
            children_many_exiting_at_once_each_reported_once,
            children_unwatched_ones_are_left_to_the_program,
            children_reservation_survives_every_rearm_code,
            children_disarm_then_remove_cycles_release_once,
            children_bad_input_is_refused_and_leaks_nothing,
            children_self_removal_with_every_code,
            children_removing_a_watcher_of_a_running_child_leaves_it_alone,
            children_a_child_is_watched_by_one_watcher_only,
            children_spawn_into_a_reservation_at_full_capacity,
            children_spawn_into_bad_input_is_refused_and_leaks_nothing,
            children_group_signal_reaches_every_member,
            children_drop_policy_leaves_or_kills_and_reaps,
        );
    };
    (@signals $fx:ty; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::suite::procs::$name::<$fx>();
            }
        )*
    };
    (@children $fx:ty; $($name:ident),* $(,)?) => {
        mod pidfd {
            $(
                #[test]
                fn $name() {
                    $crate::suite::procs::$name::<$fx>(false);
                }
            )*
        }
        mod fallback {
            $(
                #[test]
                fn $name() {
                    $crate::suite::procs::$name::<$fx>(true);
                }
            )*
        }
    };
}

// ---------------------------------------------------------------- supervisors

fn small_lp<X: Fixture>(fx: &X, watchers: usize, fallback: bool) -> Lp<X> {
    EventLoop::<Probe, X::B, Single>::builder()
        .watchers(watchers)
        .timers(0)
        .wakers(0)
        .child_watch_fallback(fallback)
        .build_with(fx.backend())
        .expect("build")
}

/// A service's restarts reuse its reservation: at full capacity (every slot taken) each
/// restart still succeeds, from outside and from the exit handler itself.
pub fn children_spawn_into_a_reservation_at_full_capacity<X: Fixture>(fallback: bool) {
    let fx = X::new();
    fx.block(Signal::CHLD);
    let lp = small_lp(&fx, 2, fallback);
    let log = Log::default();
    let a = lp
        .reserve_child(Priority::DEFAULT, child_logger(&log, Rearm::Rearm))
        .unwrap();
    // The second slot: a service that restarts itself from its exit handler, three times.
    let restarts = Arc::new(AtomicUsize::new(0));
    let (fx2, log2, r2) = (fx.clone(), log.clone(), restarts.clone());
    let b = lp
        .reserve_child(
            Priority::DEFAULT,
            Probe::new(move |cx, ev| {
                let Event::Child { status, .. } = ev else {
                    panic!("child event expected")
                };
                log2.push(format!("b:{status:?}"));
                if r2.fetch_add(1, Ordering::SeqCst) < 3 {
                    let sp = cx
                        .spawn_into(cx.id(), fx2.exit_command(4), SpawnOptions::new())
                        .expect("a restart into the reservation cannot fail for capacity");
                    fx2.finish(sp.pid, 4);
                }
                Rearm::Rearm
            }),
        )
        .unwrap();
    assert_eq!(lp.usage().watchers, 2);
    let full = lp
        .reserve_child(Priority::DEFAULT, Probe::new(|_, _| Rearm::Rearm))
        .unwrap_err();
    assert!(
        matches!(full.error(), Error::Capacity(_)),
        "the loop is full"
    );
    for code in [0, 7, 9] {
        let sp = lp
            .spawn_into(a, fx.exit_command(code), SpawnOptions::new())
            .expect("restart");
        assert_eq!(sp.id, a, "the reservation's own id");
        assert_eq!(
            lp.spawn_into(a, fx.exit_command(0), SpawnOptions::new())
                .unwrap_err(),
            dasynq::SpawnError::Usage(UsageError::Busy),
            "one child at a time"
        );
        fx.finish(sp.pid, code);
        run_until(&lp, || !log.get().is_empty());
        assert_eq!(log.take(), vec![format!("{}:Exited({code})", sp.pid)]);
        assert_eq!(lp.usage().watchers, 2);
    }
    let sp = lp
        .spawn_into(b, fx.exit_command(4), SpawnOptions::new())
        .unwrap();
    fx.finish(sp.pid, 4);
    run_until(&lp, || log.get().len() == 4);
    assert_eq!(log.take(), vec!["b:Exited(4)".to_string(); 4]);
    assert_eq!(restarts.load(Ordering::SeqCst), 4);
    assert_eq!(lp.usage().watchers, 2, "no slot was taken by any restart");
}

/// Each mistake of a spawn into a reservation is a typed error that leaves the reservation
/// idle, with its handler and slot; a failed `spawn_child` hands the handler back.
pub fn children_spawn_into_bad_input_is_refused_and_leaks_nothing<X: Fixture>(fallback: bool) {
    let fx = X::new();
    fx.block(Signal::CHLD);
    let lp = lp(&fx, fallback);
    let log = Log::default();
    let id = lp
        .reserve_child(Priority::DEFAULT, child_logger(&log, Rearm::Rearm))
        .unwrap();
    let before = lp.usage();
    // A program that does not exist.
    let e = lp
        .spawn_into(id, fx.missing_program(), SpawnOptions::new())
        .unwrap_err();
    assert_eq!(
        e,
        dasynq::SpawnError::Spawn {
            errno: dasynq::Errno::NOENT
        }
    );
    assert!(e.to_string().contains("still idle"), "{e}");
    assert_eq!(lp.usage(), before, "nothing taken");
    // A `pre_exec` hook that fails (real kernels run it; simulations do not fork).
    if !fx.simulated() {
        use std::os::unix::process::CommandExt;
        let mut cmd = fx.exit_command(0);
        // SAFETY: the hook only returns an error (async-signal-safe: no allocation).
        unsafe { cmd.pre_exec(|| Err(std::io::Error::from_raw_os_error(libc::EPERM))) };
        assert_eq!(
            lp.spawn_into(id, cmd, SpawnOptions::new()).unwrap_err(),
            dasynq::SpawnError::Spawn {
                errno: dasynq::Errno(libc::EPERM)
            }
        );
        let mut cmd = fx.exit_command(0);
        // SAFETY: as above.
        unsafe { cmd.pre_exec(|| Err(std::io::Error::from_raw_os_error(libc::EPERM))) };
        let e = lp
            .spawn_child(cmd, SpawnOptions::new(), Probe::new(|_, _| Rearm::Rearm))
            .unwrap_err();
        assert_eq!(
            e.error(),
            Error::Spawn {
                errno: dasynq::Errno(libc::EPERM)
            }
        );
        let _handler_back = e.into_handler();
        assert_eq!(lp.usage(), before, "no slot leaked");
    }
    // Still idle and usable after the failures.
    let sp = lp
        .spawn_into(id, fx.sleeper_command(), SpawnOptions::new())
        .expect("the reservation is still idle");
    // Busy while its child runs.
    assert_eq!(
        lp.spawn_into(id, fx.exit_command(0), SpawnOptions::new())
            .unwrap_err(),
        dasynq::SpawnError::Usage(UsageError::Busy)
    );
    lp.signal_child(sp.id, Signal::KILL).unwrap();
    run_until(&lp, || !log.get().is_empty());
    log.take();
    // Removed: stale.
    lp.remove(id).unwrap();
    assert_eq!(
        lp.spawn_into(id, fx.exit_command(0), SpawnOptions::new())
            .unwrap_err(),
        dasynq::SpawnError::Usage(UsageError::Stale)
    );
    // Not a child watcher.
    let t = lp
        .add_timer(
            Clock::Monotonic,
            Priority::DEFAULT,
            Probe::new(|_, _| Rearm::Rearm),
        )
        .unwrap();
    assert!(matches!(
        lp.spawn_into(t, fx.exit_command(0), SpawnOptions::new()),
        Err(dasynq::SpawnError::Usage(UsageError::WrongKind { .. }))
    ));
    lp.remove(t).unwrap();
    assert_eq!(lp.usage().watchers, 0);
}

/// A child started as a group leader: `signal_child_group` reaches it and the process it
/// started; a child that leads no group is refused, and so is a group whose leader exited.
pub fn children_group_signal_reaches_every_member<X: Fixture>(fallback: bool) {
    let fx = X::new();
    fx.block(Signal::CHLD);
    let lp = lp(&fx, fallback);
    let log = Log::default();
    let sp = lp
        .spawn_child(
            fx.group_leader_command(),
            SpawnOptions::new().new_process_group(),
            child_logger(&log, Rearm::Rearm),
        )
        .unwrap();
    fx.add_group_member(sp.pid);
    let start = std::time::Instant::now();
    while fx.group_members_alive(sp.pid) < 2 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        fx.group_members_alive(sp.pid),
        2,
        "the leader and its member"
    );
    lp.signal_child_group(sp.id, Signal::TERM).unwrap();
    run_until(&lp, || !log.get().is_empty());
    assert_eq!(
        log.take(),
        vec![format!(
            "{}:Signaled {{ signal: SIGTERM, core_dumped: false }}",
            sp.pid
        )]
    );
    let start = std::time::Instant::now();
    while fx.group_members_alive(sp.pid) > 0 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(fx.group_members_alive(sp.pid), 0, "the member got it too");
    assert_eq!(
        lp.signal_child_group(sp.id, Signal::TERM),
        Err(SignalChildError::Gone),
        "the leader is reaped: the group is not signalled any more"
    );
    // A child in the program's own group leads none.
    let other = lp
        .spawn_child(
            fx.sleeper_command(),
            SpawnOptions::new(),
            child_logger(&log, Rearm::Remove),
        )
        .unwrap();
    assert_eq!(
        lp.signal_child_group(other.id, Signal::TERM),
        Err(SignalChildError::NotGroupLeader)
    );
    assert!(fx.alive(other.pid), "nothing was sent");
    assert!(
        SignalChildError::NotGroupLeader
            .to_string()
            .contains("new_process_group")
    );
    assert!(matches!(
        lp.signal_child_group(other.id, Signal::from_raw(0)),
        Err(SignalChildError::Usage(UsageError::InvalidArgument(_)))
    ));
    lp.signal_child(other.id, Signal::KILL).unwrap();
    run_until(&lp, || !log.get().is_empty());
}

/// What dropping a loop does with a child it still watches: by default the child is left
/// running and is the program's to reap; with `kill_children_on_drop` it is killed and
/// reaped before the drop returns (no zombie, nothing for the program to reap).
pub fn children_drop_policy_leaves_or_kills_and_reaps<X: Fixture>(fallback: bool) {
    let fx = X::new();
    fx.block(Signal::CHLD);
    // Default: left.
    let lp = lp(&fx, fallback);
    let sp = lp
        .spawn_child(
            fx.sleeper_command(),
            SpawnOptions::new(),
            Probe::new(|_, _| Rearm::Rearm),
        )
        .unwrap();
    drop(lp);
    assert!(fx.alive(sp.pid), "left running");
    fx.kill_pid(sp.pid, Signal::KILL);
    assert_eq!(
        fx.program_reap(sp.pid),
        Ok(ChildStatus::Signaled {
            signal: Signal::KILL,
            core_dumped: false
        }),
        "the program's to reap"
    );
    // Killed and reaped, running or already exited (a zombie the loop had not reaped yet),
    // several at once (all are killed before any is reaped).
    for exited_first in [false, true] {
        let lp = EventLoop::<Probe, X::B, Single>::builder()
            .watchers(8)
            .child_watch_fallback(fallback)
            .kill_children_on_drop(true)
            .build_with(fx.backend())
            .expect("build");
        let pids: Vec<u32> = (0..3)
            .map(|_| {
                lp.spawn_child(
                    fx.sleeper_command(),
                    SpawnOptions::new(),
                    Probe::new(|_, _| Rearm::Rearm),
                )
                .unwrap()
                .pid
            })
            .collect();
        if exited_first {
            fx.kill_pid(pids[1], Signal::TERM);
            let start = std::time::Instant::now();
            while !fx.zombie(pids[1]) && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        drop(lp);
        for &pid in &pids {
            assert!(!fx.alive(pid), "killed");
            assert!(!fx.zombie(pid), "reaped: no zombie");
            assert_eq!(
                fx.program_reap(pid),
                Err(dasynq::Errno::CHILD),
                "nothing left to reap"
            );
        }
    }
}

/// The same scenarios as `(name, fn)` pairs, for the harness-less real-kernel runner.
pub fn all<X: Fixture>() -> Vec<(String, Box<dyn Fn()>)> {
    let mut v: Vec<(String, Box<dyn Fn()>)> = Vec::new();
    macro_rules! sig {
        ($($name:ident),*) => {$(
            v.push((stringify!($name).to_string(), Box::new(|| $name::<X>())));
        )*};
    }
    macro_rules! child {
        ($($name:ident),*) => {$(
            v.push((format!("{}::pidfd", stringify!($name)), Box::new(|| $name::<X>(false))));
            v.push((format!("{}::fallback", stringify!($name)), Box::new(|| $name::<X>(true))));
        )*};
    }
    sig!(
        signals_remove_handles_only_the_first,
        signals_rearm_receives_again,
        signals_pending_signal_before_a_timer,
        signals_each_realtime_instance_has_its_own_data,
        signals_disabled_watcher_loses_nothing,
        signals_instances_wait_while_queued_or_running,
        signals_every_rearm_code,
        signals_a_burst_larger_than_the_room_loses_nothing,
        signals_held_instances_run_in_one_batch,
        signals_threaded_runners_drain_a_burst_in_plain_run,
        signals_bad_input_is_refused_and_leaks_nothing,
        signals_self_removal_with_every_code
    );
    child!(
        children_exit_codes_are_reported,
        children_killed_by_a_signal,
        children_term_from_the_loop_stops_a_child_spawned_with_term_blocked,
        children_many_exiting_at_once_each_reported_once,
        children_unwatched_ones_are_left_to_the_program,
        children_reservation_survives_every_rearm_code,
        children_disarm_then_remove_cycles_release_once,
        children_bad_input_is_refused_and_leaks_nothing,
        children_self_removal_with_every_code,
        children_removing_a_watcher_of_a_running_child_leaves_it_alone,
        children_a_child_is_watched_by_one_watcher_only,
        children_spawn_into_a_reservation_at_full_capacity,
        children_spawn_into_bad_input_is_refused_and_leaks_nothing,
        children_group_signal_reaches_every_member,
        children_drop_policy_leaves_or_kills_and_reaps
    );
    v
}
