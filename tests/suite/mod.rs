//! The behavioural suite: written once, run against every backend (see `tests/behaviour.rs`).
//!
//! Each scenario is a generic function over a [`Fixture`]. On simulated backends time is
//! virtual and every timer count is checked exactly at every sample point; on the real kernel
//! counts are checked against the elapsed time measured just before and just after each poll
//! (never early, never more than that time allows).

#![allow(dead_code)]

pub mod fixture;
pub mod portable;
#[macro_use]
pub mod procs;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dasynq::{
    BidiOptions, BuildError, Clock, Cx, Deadline, Error, Event, EventLoop, FdOptions, Half,
    Handler, Interest, Pool, Priority, Rearm, Removed, Single, Threaded, UsageError, WatchId,
    WatchKind,
};
#[allow(unused_imports)]
pub use fixture::{
    EpollSimFx, Fixture, KqueueFreeBsdFx, KqueueMacOsFx, KqueueOpenBsdFx, Real, SimFx,
};

type ProbeFn = dyn FnMut(&Cx<'_, Probe>, Event<'_>) -> Rearm + Send;

/// A test handler: a boxed closure plus a counter of `on_removed` calls (and the fd it got).
pub struct Probe {
    f: Box<ProbeFn>,
    removed: Arc<AtomicUsize>,
    got_fd: Arc<Mutex<Option<OwnedFd>>>,
}

impl Probe {
    pub fn new(f: impl FnMut(&Cx<'_, Probe>, Event<'_>) -> Rearm + Send + 'static) -> Self {
        Probe {
            f: Box::new(f),
            removed: Arc::default(),
            got_fd: Arc::default(),
        }
    }
    pub fn counting(
        removed: &Arc<AtomicUsize>,
        f: impl FnMut(&Cx<'_, Probe>, Event<'_>) -> Rearm + Send + 'static,
    ) -> Self {
        Probe {
            f: Box::new(f),
            removed: removed.clone(),
            got_fd: Arc::default(),
        }
    }
}

impl Handler for Probe {
    type Data = ();
    fn on_event(&mut self, cx: &Cx<'_, Self>, _: &mut (), event: Event<'_>) -> Rearm {
        (self.f)(cx, event)
    }
    fn on_removed(self, _cx: &Cx<'_, Self>, removed: Removed) {
        self.removed.fetch_add(1, Ordering::SeqCst);
        *self.got_fd.lock().unwrap() = removed.into_fd();
    }
}

type Lp<X> = EventLoop<Probe, <X as Fixture>::B, Single>;
type Tlp<X> = EventLoop<Probe, <X as Fixture>::B, Threaded>;

#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, s: impl Into<String>) {
        self.0.lock().unwrap().push(s.into());
    }
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
    pub fn get(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

fn lp<X: Fixture>(fx: &X) -> Lp<X> {
    fixture::build::<X, Probe, Single>(fx)
}

/// A handler that logs `name`, drains fd events, and answers `rearm`.
fn logger<X: Fixture>(fx: &X, log: &Log, name: &'static str, rearm: Rearm) -> Probe {
    let (fx, log) = (fx.clone(), log.clone());
    Probe::new(move |_, ev| {
        if let Event::Fd { fd, .. } | Event::Read { fd, .. } = ev {
            fx.drain(fd);
        }
        log.push(name);
        rearm
    })
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

// ---------------------------------------------------------------- fd watchers

pub fn fd_remove_handles_only_first<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let log = Log::default();
    let (r1, w1) = fx.pipe();
    let (r2, w2) = fx.pipe();
    lp.add_fd(
        r1,
        Interest::READ,
        FdOptions::new(),
        logger(&fx, &log, "1", Rearm::Remove),
    )
    .unwrap();
    lp.add_fd(
        r2,
        Interest::READ,
        FdOptions::new(),
        logger(&fx, &log, "2", Rearm::Remove),
    )
    .unwrap();
    fx.write(w1.as_fd(), 1);
    assert_eq!(lp.run(), 1);
    assert_eq!(log.take(), s(&["1"]));
    fx.write(w1.as_fd(), 1);
    fx.write(w2.as_fd(), 1);
    assert_eq!(lp.run(), 1);
    assert_eq!(log.take(), s(&["2"]));
    assert_eq!(lp.usage().watchers, 0);
}

pub fn fd_rearm_fires_again_disarm_fires_once<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let log = Log::default();
    let (r1, w1) = fx.pipe();
    let (r2, w2) = fx.pipe();
    lp.add_fd(
        r1,
        Interest::READ,
        FdOptions::new(),
        logger(&fx, &log, "rearm", Rearm::Rearm),
    )
    .unwrap();
    lp.add_fd(
        r2,
        Interest::READ,
        FdOptions::new(),
        logger(&fx, &log, "disarm", Rearm::Disarm),
    )
    .unwrap();
    fx.write(w1.as_fd(), 1);
    fx.write(w2.as_fd(), 1);
    assert_eq!(lp.run(), 2);
    fx.write(w1.as_fd(), 1);
    fx.write(w2.as_fd(), 1);
    assert_eq!(lp.run(), 1);
    assert_eq!(lp.poll(), 0);
    assert_eq!(log.take(), s(&["rearm", "disarm", "rearm"]));
}

pub fn fd_enable_in_handler_then_disarm_stays_disabled<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let n = Arc::new(AtomicUsize::new(0));
    let (r, w) = fx.pipe();
    let (f, n2) = (fx.clone(), n.clone());
    lp.add_fd(
        r,
        Interest::READ,
        FdOptions::new(),
        Probe::new(move |cx, ev| {
            if let Event::Fd { fd, .. } = ev {
                f.drain(fd);
            }
            n2.fetch_add(1, Ordering::SeqCst);
            cx.enable(cx.id()).unwrap();
            Rearm::Disarm
        }),
    )
    .unwrap();
    fx.write(w.as_fd(), 1);
    assert_eq!(lp.run(), 1);
    fx.write(w.as_fd(), 1);
    assert_eq!(lp.poll(), 0);
    assert_eq!(n.load(Ordering::SeqCst), 1);
}

pub fn fd_noop_keeps_what_the_handler_chose<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let log = Log::default();
    let (r1, w1) = fx.pipe();
    let (r2, w2) = fx.pipe();
    lp.add_fd(
        r1,
        Interest::READ,
        FdOptions::new(),
        logger(&fx, &log, "noop", Rearm::Noop),
    )
    .unwrap();
    let (f, l) = (fx.clone(), log.clone());
    lp.add_fd(
        r2,
        Interest::READ,
        FdOptions::new(),
        Probe::new(move |cx, ev| {
            if let Event::Fd { fd, .. } = ev {
                f.drain(fd);
            }
            l.push("self-enabled");
            cx.enable(cx.id()).unwrap();
            Rearm::Noop
        }),
    )
    .unwrap();
    fx.write(w1.as_fd(), 1);
    fx.write(w2.as_fd(), 1);
    assert_eq!(lp.run(), 2);
    fx.write(w1.as_fd(), 1);
    fx.write(w2.as_fd(), 1);
    assert_eq!(lp.run(), 1);
    assert_eq!(log.take(), s(&["noop", "self-enabled", "self-enabled"]));
}

pub fn fd_requeue_runs_again_next_batch_with_the_same_readiness<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (r, w) = fx.pipe();
    let (f, sn) = (fx.clone(), seen.clone());
    lp.add_fd(
        r,
        Interest::READ,
        FdOptions::new(),
        Probe::new(move |_, ev| {
            let Event::Fd { fd, ready } = ev else {
                panic!("fd event expected")
            };
            f.drain(fd);
            let mut v = sn.lock().unwrap();
            v.push(ready);
            if v.len() == 1 {
                Rearm::Requeue
            } else {
                Rearm::Disarm
            }
        }),
    )
    .unwrap();
    fx.write(w.as_fd(), 1);
    assert_eq!(lp.poll(), 1, "a requeued handler waits for the next batch");
    assert_eq!(lp.poll(), 1);
    assert_eq!(lp.poll(), 0);
    let v = seen.lock().unwrap().clone();
    assert_eq!(v.len(), 2);
    assert!(v[0].is_readable());
    assert_eq!(v[0], v[1]);
}

/// Abort the test binary if a blocking run call never returns (an event was lost).
fn watchdog(what: &'static str) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if rx.recv_timeout(std::time::Duration::from_secs(30))
            == Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        {
            eprintln!("{what}: a blocking run call never returned (an event was lost)");
            std::process::abort();
        }
    });
    tx
}

/// The loop's address, for handlers that reach the loop itself (a nested `run`, `lp.now()`):
/// each scenario that uses it keeps the loop on its own stack for the whole test and runs it
/// on that thread only, which is what the handlers' dereference relies on.
fn loop_address<X: Fixture>(lp: &Lp<X>) -> Arc<std::sync::atomic::AtomicPtr<Lp<X>>> {
    Arc::new(std::sync::atomic::AtomicPtr::new(
        lp as *const Lp<X> as *mut Lp<X>,
    ))
}

/// A handler that runs the loop again (a nested blocking `run`) leaves no stale event behind:
/// the outermost call dispatches straight from its events buffer, which the nested call may
/// have made stale (here it runs the other watcher, which drains its pipe).
pub fn fd_nested_run_leaves_no_stale_event<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    // The handlers reach the loop through its address: it outlives every call below, and
    // only this thread runs it.
    let at = loop_address::<X>(&lp);
    let log = Log::default();
    let nested_ran = Arc::new(AtomicUsize::new(usize::MAX));
    let mut pipes = Vec::new();
    for name in ["a", "b"] {
        let (r, w) = fx.pipe();
        let (f, log, at, nested_ran) = (fx.clone(), log.clone(), at.clone(), nested_ran.clone());
        lp.add_fd(
            r,
            Interest::READ,
            FdOptions::new(),
            Probe::new(move |_, ev| {
                let fd = ev.fd().expect("fd event");
                log.push(format!("{name} {}", f.drain(fd)));
                if nested_ran.load(Ordering::SeqCst) == usize::MAX {
                    nested_ran.store(0, Ordering::SeqCst);
                    // SAFETY: `at` is the address of the loop, alive on this thread's stack
                    // for the whole test; a single-threaded loop's run calls may nest.
                    let lp = unsafe { &*at.load(Ordering::SeqCst) };
                    nested_ran.store(lp.run(), Ordering::SeqCst);
                }
                Rearm::Rearm
            }),
        )
        .unwrap();
        pipes.push(w);
    }
    for w in &pipes {
        fx.write(w.as_fd(), 1);
    }
    let done = watchdog("fd_nested_run_leaves_no_stale_event");
    let outer = lp.poll();
    drop(done);
    assert_eq!(
        nested_ran.load(Ordering::SeqCst),
        1,
        "the nested run ran the other"
    );
    let mut got = log.take();
    got.sort();
    assert_eq!(got, ["a 1", "b 1"], "each ran once, with a byte to read");
    assert_eq!(outer, 1, "the outer call counts only its own handler");
    assert_eq!(lp.poll(), 0);
}

/// A handler that panics leaves nothing the same wait reported untaken: a wake (whose
/// notifier reports once) reaches its handler on the next blocking `run`.
pub fn fd_panicking_handler_loses_no_event_of_its_wait<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let log = Log::default();
    let (r, w) = fx.pipe();
    let f = fx.clone();
    lp.add_fd(
        r,
        Interest::READ,
        FdOptions::new(),
        Probe::new(move |_, ev| {
            f.drain(ev.fd().expect("fd event"));
            panic!("this handler panics (on purpose)")
        }),
    )
    .unwrap();
    let l = log.clone();
    let (_id, waker) = lp
        .add_wake(
            Priority::DEFAULT,
            Probe::new(move |_, _| {
                l.push("woke");
                Rearm::Rearm
            }),
        )
        .unwrap();
    fx.write(w.as_fd(), 1);
    waker.wake();
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lp.poll()));
    std::panic::set_hook(quiet);
    assert!(r.is_err(), "the fd handler ran and panicked");
    let done = watchdog("fd_panicking_handler_loses_no_event_of_its_wait");
    // The wake may have run in the same call, before the panicking handler.
    if log.get().is_empty() {
        assert_eq!(lp.run(), 1, "the wake runs");
    }
    drop(done);
    assert_eq!(log.take(), ["woke"]);
}

pub fn fd_both_directions_in_one_call<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let (a, b) = fx.socketpair();
    fx.write(b.as_fd(), 3);
    let seen = Arc::new(Mutex::new(None));
    let (f, sn) = (fx.clone(), seen.clone());
    lp.add_fd(
        a,
        Interest::BOTH,
        FdOptions::new(),
        Probe::new(move |_, ev| {
            let Event::Fd { fd, ready } = ev else {
                panic!()
            };
            f.drain(fd);
            *sn.lock().unwrap() = Some(ready);
            Rearm::Disarm
        }),
    )
    .unwrap();
    assert_eq!(lp.run(), 1);
    let r = seen.lock().unwrap().unwrap();
    assert!(r.is_readable() && r.is_writable(), "{r:?}");
}

pub fn fd_set_interest_changes_directions<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let (a, b) = fx.socketpair();
    let log = Log::default();
    let (f, l) = (fx.clone(), log.clone());
    let id = lp
        .add_fd(
            a,
            Interest::WRITE,
            FdOptions::new(),
            Probe::new(move |_, ev| {
                let Event::Fd { fd, ready } = ev else {
                    panic!()
                };
                f.drain(fd);
                l.push(format!("{ready:?}"));
                Rearm::Rearm
            }),
        )
        .unwrap();
    assert_eq!(lp.poll(), 1);
    assert_eq!(log.take(), s(&["WRITABLE"]));
    lp.set_interest(id, Interest::READ).unwrap();
    assert_eq!(lp.poll(), 0, "nothing to read yet");
    fx.write(b.as_fd(), 1);
    assert_eq!(lp.poll(), 1);
    assert_eq!(log.take(), s(&["READABLE"]));
    assert_eq!(
        lp.set_interest(id, Interest::NONE),
        Err(UsageError::InvalidArgument("interest must not be empty"))
    );
}

pub fn fd_error_condition_is_reported<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let (r, w) = fx.pipe();
    let seen = Arc::new(Mutex::new(None));
    let sn = seen.clone();
    lp.add_fd(
        w,
        Interest::WRITE,
        FdOptions::new(),
        Probe::new(move |_, ev| {
            let Event::Fd { ready, .. } = ev else {
                panic!()
            };
            *sn.lock().unwrap() = Some(ready);
            Rearm::Remove
        }),
    )
    .unwrap();
    fx.hang_up(r);
    assert_eq!(lp.run(), 1);
    assert!(seen.lock().unwrap().unwrap().is_error());
}

pub fn fd_handed_back_open_by_on_removed<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let (r, w) = fx.pipe();
    let probe = Probe::new(|_, _| Rearm::Rearm);
    let got = probe.got_fd.clone();
    let removed = probe.removed.clone();
    let id = lp
        .add_fd(w, Interest::WRITE, FdOptions::new().disabled(), probe)
        .unwrap();
    lp.remove(id).unwrap();
    assert_eq!(removed.load(Ordering::SeqCst), 1);
    let w = got.lock().unwrap().take().expect("fd handed back");
    fx.write(w.as_fd(), 2);
    assert_eq!(fx.drain(r.as_fd()), 2);
}

pub fn disabled_fd_with_hung_up_peer<X: Fixture>() {
    for sock in [false, true] {
        let fx = X::new();
        let lp = lp(&fx);
        let (r, w) = if sock { fx.socketpair() } else { fx.pipe() };
        let (other_r, _other_w) = fx.pipe();
        let log = Log::default();
        let (f, l) = (fx.clone(), log.clone());
        let id = lp
            .add_fd(
                r,
                Interest::READ,
                FdOptions::new().disabled(),
                Probe::new(move |_, ev| {
                    let Event::Fd { fd, ready } = ev else {
                        panic!()
                    };
                    f.drain(fd);
                    l.push(format!("{ready:?}"));
                    Rearm::Disarm
                }),
            )
            .unwrap();
        lp.add_fd(
            other_r,
            Interest::READ,
            FdOptions::new(),
            logger(&fx, &log, "other", Rearm::Rearm),
        )
        .unwrap();
        fx.hang_up(w);
        assert_eq!(
            lp.poll(),
            0,
            "a disabled watcher is not called, nothing is misrouted"
        );
        assert_eq!(lp.poll(), 0);
        assert!(log.get().is_empty());
        lp.enable(id).unwrap();
        assert_eq!(lp.poll(), 1);
        let got = log.take();
        assert_eq!(got.len(), 1);
        // epoll says HANGUP; kqueue's read filter says READ_CLOSED (its EV_EOF).
        assert!(
            got[0].contains("HANGUP") || got[0].contains("READ_CLOSED"),
            "the hang-up reaches the watcher once enabled: {got:?}"
        );
    }
}

// ---------------------------------------------------------------- bidi

fn bidi_logger<X: Fixture>(fx: &X, log: &Log, read: Rearm, write: Rearm) -> Probe {
    let (fx, log) = (fx.clone(), log.clone());
    Probe::new(move |_, ev| match ev {
        Event::Read { fd, ready } => {
            assert!(!ready.is_writable(), "write readiness on the read half");
            fx.drain(fd);
            log.push("read");
            read
        }
        Event::Write { ready, .. } => {
            assert!(
                !ready.is_readable() && !ready.is_read_closed(),
                "read readiness on the write half"
            );
            log.push("write");
            write
        }
        _ => panic!("bidi events only"),
    })
}

pub fn bidi_both_halves_remove<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let (a, b) = fx.socketpair();
    fx.write(b.as_fd(), 1);
    let log = Log::default();
    let removed = Arc::new(AtomicUsize::new(0));
    let mut p = bidi_logger(&fx, &log, Rearm::Remove, Rearm::Remove);
    p.removed = removed.clone();
    lp.add_bidi(a, BidiOptions::new(), p).unwrap();
    assert_eq!(lp.run(), 2);
    let mut got = log.take();
    got.sort();
    assert_eq!(got, s(&["read", "write"]));
    assert_eq!(removed.load(Ordering::SeqCst), 1);
    assert_eq!(lp.usage().watchers, 0);
}

pub fn bidi_read_removed_write_rearmed<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let (a, b) = fx.socketpair();
    fx.write(b.as_fd(), 1);
    let log = Log::default();
    let removed = Arc::new(AtomicUsize::new(0));
    let mut p = bidi_logger(&fx, &log, Rearm::Remove, Rearm::Rearm);
    p.removed = removed.clone();
    let id = lp.add_bidi(a, BidiOptions::new(), p).unwrap();
    assert_eq!(lp.run(), 2);
    log.take();
    fx.write(b.as_fd(), 1);
    assert_eq!(lp.run(), 1);
    assert_eq!(log.take(), s(&["write"]), "the read half is gone");
    assert_eq!(removed.load(Ordering::SeqCst), 0);
    lp.remove(id).unwrap();
    assert_eq!(removed.load(Ordering::SeqCst), 1);
}

pub fn bidi_halves_enable_independently<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let (a, b) = fx.socketpair();
    let log = Log::default();
    let id = lp
        .add_bidi(
            a,
            BidiOptions::new(),
            bidi_logger(&fx, &log, Rearm::Noop, Rearm::Noop),
        )
        .unwrap();
    assert_eq!(lp.run(), 1);
    assert_eq!(
        log.take(),
        s(&["write"]),
        "no data: only the write half fires"
    );
    lp.set_half_enabled(id, Half::Read, true).unwrap();
    lp.set_half_enabled(id, Half::Write, true).unwrap();
    fx.write(b.as_fd(), 1);
    assert_eq!(lp.run(), 2);
    let mut got = log.take();
    got.sort();
    assert_eq!(got, s(&["read", "write"]));
    lp.set_half_enabled(id, Half::Read, true).unwrap();
    fx.write(b.as_fd(), 1);
    assert_eq!(lp.run(), 1);
    assert_eq!(log.take(), s(&["read"]));
    assert_eq!(
        lp.set_interest(id, Interest::READ),
        Err(UsageError::WrongKind {
            op: "set_interest",
            kind: WatchKind::Bidi
        })
    );
}

pub fn bidi_hangup_never_crosses_halves<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let (a, b) = fx.socketpair();
    let log = Log::default();
    lp.add_bidi(
        a,
        BidiOptions::new().enabled(true, false),
        bidi_logger(&fx, &log, Rearm::Disarm, Rearm::Disarm),
    )
    .unwrap();
    fx.hang_up(b);
    assert_eq!(lp.run(), 1);
    assert_eq!(log.take(), s(&["read"]));
}

pub fn bidi_halves_have_their_own_priorities<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let (a, b) = fx.socketpair();
    fx.write(b.as_fd(), 1);
    let log = Log::default();
    let opts = BidiOptions::new().priorities(Priority(10), Priority(-10));
    lp.add_bidi(
        a,
        opts,
        bidi_logger(&fx, &log, Rearm::Disarm, Rearm::Disarm),
    )
    .unwrap();
    assert_eq!(lp.run(), 2);
    assert_eq!(log.take(), s(&["write", "read"]));
}

// ---------------------------------------------------------------- emulation

pub fn emulated_fd_fires_every_batch_until_noop<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    lp.add_fd(
        fx.regular_file(),
        Interest::READ,
        FdOptions::new(),
        Probe::new(move |_, ev| {
            let Event::Fd { ready, .. } = ev else {
                panic!()
            };
            assert!(ready.is_readable());
            if n2.fetch_add(1, Ordering::SeqCst) + 1 < 10 {
                Rearm::Rearm
            } else {
                Rearm::Noop
            }
        }),
    )
    .unwrap();
    for i in 1..=10 {
        assert_eq!(lp.poll(), 1, "batch {i}");
        assert_eq!(n.load(Ordering::SeqCst), i);
    }
    assert_eq!(lp.poll(), 0);
}

pub fn emulated_fd_added_disabled_then_enabled<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let id = lp
        .add_fd(
            fx.regular_file(),
            Interest::WRITE,
            FdOptions::new().disabled(),
            Probe::new(move |_, _| {
                n2.fetch_add(1, Ordering::SeqCst);
                Rearm::Rearm
            }),
        )
        .unwrap();
    assert_eq!(lp.poll(), 0);
    lp.enable(id).unwrap();
    for _ in 0..10 {
        assert_eq!(lp.poll(), 1);
    }
    assert_eq!(n.load(Ordering::SeqCst), 10);
    lp.disable(id).unwrap();
    assert_eq!(lp.poll(), 0);
}

pub fn emulation_refused_is_a_clear_error<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let before = lp.usage();
    let err = lp
        .add_fd(
            fx.regular_file(),
            Interest::READ,
            FdOptions::new().no_emulation(),
            Probe::new(|_, _| Rearm::Rearm),
        )
        .unwrap_err();
    assert_eq!(err.error(), Error::NotPollable);
    assert!(err.fd().is_some(), "the fd comes back");
    assert!(err.to_string().contains("emulation"));
    assert_eq!(lp.usage(), before);
}

pub fn emulated_bidi_halves<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let (r, w) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r2, w2) = (r.clone(), w.clone());
    let id = lp
        .add_bidi(
            fx.regular_file(),
            BidiOptions::new(),
            Probe::new(move |_, ev| {
                let c = match ev {
                    Event::Read { .. } => &r2,
                    Event::Write { .. } => &w2,
                    _ => panic!(),
                };
                if (c.fetch_add(1, Ordering::SeqCst) + 1) % 10 == 0 {
                    Rearm::Noop
                } else {
                    Rearm::Rearm
                }
            }),
        )
        .unwrap();
    while lp.poll() > 0 {}
    assert_eq!(
        (r.load(Ordering::SeqCst), w.load(Ordering::SeqCst)),
        (10, 10)
    );
    lp.set_half_enabled(id, Half::Write, true).unwrap();
    while lp.poll() > 0 {}
    assert_eq!(
        (r.load(Ordering::SeqCst), w.load(Ordering::SeqCst)),
        (10, 20)
    );
}

// ---------------------------------------------------------------- ordering and limits

pub fn priorities_then_arrival_order<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let log = Log::default();
    let mut writers = vec![];
    for (name, prio) in [("p5", 5), ("p-5", -5), ("p0", 0)] {
        let (r, w) = fx.pipe();
        let opts = FdOptions::new().priority(Priority(prio));
        lp.add_fd(
            r,
            Interest::READ,
            opts,
            logger(&fx, &log, name, Rearm::Rearm),
        )
        .unwrap();
        writers.push(w);
    }
    for w in &writers {
        fx.write(w.as_fd(), 1);
    }
    assert_eq!(lp.run(), 3);
    assert_eq!(log.take(), s(&["p-5", "p0", "p5"]));

    let mut equal = vec![];
    for name in ["a", "b", "c"] {
        let (r, w) = fx.pipe();
        lp.add_fd(
            r,
            Interest::READ,
            FdOptions::new().priority(Priority(7)),
            logger(&fx, &log, name, Rearm::Rearm),
        )
        .unwrap();
        equal.push(w);
    }
    for i in [2, 0, 1] {
        fx.write(equal[i].as_fd(), 1);
    }
    assert_eq!(lp.run(), 3);
    assert_eq!(
        log.take(),
        s(&["c", "a", "b"]),
        "equal priorities run in arrival order"
    );
}

pub fn run_limit_counts_exactly<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let n = Arc::new(AtomicUsize::new(0));
    let mut writers = vec![];
    for _ in 0..4 {
        let (r, w) = fx.pipe();
        let (f, n2) = (fx.clone(), n.clone());
        lp.add_fd(
            r,
            Interest::READ,
            FdOptions::new(),
            Probe::new(move |_, ev| {
                if let Event::Fd { fd, .. } = ev {
                    f.drain(fd);
                }
                n2.fetch_add(1, Ordering::SeqCst);
                Rearm::Rearm
            }),
        )
        .unwrap();
        fx.write(w.as_fd(), 1);
        writers.push(w);
    }
    assert_eq!(lp.run_limit(2), 2);
    assert_eq!(n.load(Ordering::SeqCst), 2);
    assert_eq!(lp.run_limit(1), 1);
    assert_eq!(n.load(Ordering::SeqCst), 3);
    assert_eq!(lp.run_limit(1), 1);
    assert_eq!(n.load(Ordering::SeqCst), 4);
    assert_eq!(lp.run_limit(0), 0);
    assert_eq!(lp.poll_limit(0), 0);
    fx.write(writers[1].as_fd(), 1);
    assert_eq!(lp.run(), 1, "the loop is usable after run_limit(0)");
    assert_eq!(n.load(Ordering::SeqCst), 5);
}

pub fn stop_ends_run_and_is_sticky_until_consumed<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let log = Log::default();
    let mut ws = vec![];
    for name in ["first", "second"] {
        let (r, w) = fx.pipe();
        let (f, l) = (fx.clone(), log.clone());
        lp.add_fd(
            r,
            Interest::READ,
            FdOptions::new(),
            Probe::new(move |cx, ev| {
                if let Event::Fd { fd, .. } = ev {
                    f.drain(fd);
                }
                l.push(name);
                cx.stop();
                Rearm::Rearm
            }),
        )
        .unwrap();
        ws.push(w);
    }
    for w in &ws {
        fx.write(w.as_fd(), 1);
    }
    assert_eq!(lp.run(), 1, "stop ends the batch after the current handler");
    assert_eq!(lp.run(), 1);
    assert_eq!(log.take(), s(&["first", "second"]));
    lp.stop();
    assert_eq!(
        lp.run(),
        0,
        "a stop requested between runs ends the next one at once"
    );
}

// ---------------------------------------------------------------- timers

fn counter_timer<X: Fixture>(
    lp: &Lp<X>,
    clock: Clock,
    total: &Arc<AtomicU64>,
    rearm: Rearm,
) -> WatchId {
    let t = total.clone();
    lp.add_timer(
        clock,
        Priority::DEFAULT,
        Probe::new(move |_, ev| {
            let Event::Timer { expirations } = ev else {
                panic!()
            };
            t.fetch_add(expirations, Ordering::SeqCst);
            rearm
        }),
    )
    .unwrap()
}

/// Check a count against what the elapsed time allows: exact on simulations, between the
/// values at the times read just before and after the poll on the real kernel.
fn check_count<X: Fixture>(
    what: &str,
    got: u64,
    expect: impl Fn(Duration) -> u64,
    before: Duration,
    after: Duration,
) {
    if X::EXACT_TIME {
        assert_eq!(got, expect(before), "{what} at {before:?}");
    } else {
        let (lo, hi) = (expect(before), expect(after));
        assert!(
            got >= lo && got <= hi,
            "{what}: {got} not in [{lo}, {hi}] ({before:?}..{after:?})"
        );
    }
}

pub fn timers_one_shot_and_periodic_counts<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let u = fx.unit();
    let (one, per) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let t1 = counter_timer::<X>(&lp, Clock::Monotonic, &one, Rearm::Rearm);
    let t2 = counter_timer::<X>(&lp, Clock::Monotonic, &per, Rearm::Rearm);
    let t0 = lp.now();
    lp.arm_timer(t1, Deadline::At(t0 + 3 * u), None).unwrap();
    lp.arm_timer(t2, Deadline::At(t0 + 4 * u), Some(u)).unwrap();
    let f_one = |t: Duration| u64::from(t >= 3 * u);
    let f_per = |t: Duration| {
        if t >= 4 * u {
            ((t - 4 * u).as_nanos() / u.as_nanos()) as u64 + 1
        } else {
            0
        }
    };
    for sample in [0.0, 1.0, 3.0, 4.5, 5.5, 6.0] {
        fx.wait_until(&lp, t0 + u.mul_f64(sample));
        let before = lp.now() - t0;
        lp.poll();
        let after = lp.now() - t0;
        check_count::<X>("one-shot", one.load(Ordering::SeqCst), f_one, before, after);
        check_count::<X>("periodic", per.load(Ordering::SeqCst), f_per, before, after);
    }
}

pub fn timers_disabled_periodic_keeps_counting<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let u = fx.unit();
    let total = Arc::new(AtomicU64::new(0));
    let t = counter_timer::<X>(&lp, Clock::Monotonic, &total, Rearm::Disarm);
    let t0 = lp.now();
    lp.arm_timer(t, Deadline::At(t0 + u), Some(u)).unwrap();
    let f = |e: Duration| {
        if e >= u {
            (e.as_nanos() / u.as_nanos()) as u64
        } else {
            0
        }
    };
    let step = |at: f64, enable: bool| {
        fx.wait_until(&lp, t0 + u.mul_f64(at));
        if enable {
            lp.enable(t).unwrap();
        }
        let before = lp.now() - t0;
        lp.poll();
        (before, lp.now() - t0)
    };
    let (b, a) = step(1.0, false);
    check_count::<X>("at 1", total.load(Ordering::SeqCst), f, b, a);
    let first = total.load(Ordering::SeqCst);
    step(5.0, false);
    assert_eq!(
        total.load(Ordering::SeqCst),
        first,
        "disabled: nothing reported"
    );
    let (b, a) = step(5.0, true);
    check_count::<X>("enabled at 5", total.load(Ordering::SeqCst), f, b, a);
    let at5 = total.load(Ordering::SeqCst);
    step(7.0, false);
    assert_eq!(total.load(Ordering::SeqCst), at5);
    lp.enable(t).unwrap();
    lp.disable(t).unwrap();
    step(9.0, false);
    assert_eq!(total.load(Ordering::SeqCst), at5);
    let (b, a) = step(9.0, true);
    check_count::<X>("enabled at 9", total.load(Ordering::SeqCst), f, b, a);
}

pub fn timers_hundred_fire_in_order_then_in_reverse<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let (u, tick) = (fx.unit(), fx.tick());
    let order = Arc::new(Mutex::new(Vec::new()));
    let ids: Vec<WatchId> = (0..100)
        .map(|i| {
            let o = order.clone();
            lp.add_timer(
                Clock::Monotonic,
                Priority::DEFAULT,
                Probe::new(move |_, _| {
                    o.lock().unwrap().push(i);
                    Rearm::Rearm
                }),
            )
            .unwrap()
        })
        .collect();
    for reverse in [false, true] {
        order.lock().unwrap().clear();
        let t0 = lp.now();
        for (i, id) in ids.iter().enumerate() {
            let slot = if reverse { 99 - i } else { i } as u32;
            lp.arm_timer(*id, Deadline::At(t0 + u + tick * slot), None)
                .unwrap();
        }
        let due = |e: Duration| -> usize {
            if e < u {
                0
            } else {
                (((e - u).as_nanos() / tick.as_nanos()) as usize + 1).min(100)
            }
        };
        for step in 0..100u32 {
            fx.wait_until(&lp, t0 + u + tick * step);
            let before = lp.now() - t0;
            lp.poll();
            let after = lp.now() - t0;
            let n = order.lock().unwrap().len();
            if X::EXACT_TIME {
                assert_eq!(n, step as usize + 1, "one timer per step");
            } else {
                assert!(
                    n >= due(before) && n <= due(after),
                    "step {step}: {n} fired"
                );
            }
        }
        while order.lock().unwrap().len() < 100 {
            lp.run();
        }
        let got = order.lock().unwrap().clone();
        let want: Vec<usize> = if reverse {
            (0..100).rev().collect()
        } else {
            (0..100).collect()
        };
        assert_eq!(got, want);
    }
}

pub fn timers_rearm_later_and_earlier<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let u = fx.unit();
    let total = Arc::new(AtomicU64::new(0));
    let t = counter_timer::<X>(&lp, Clock::Monotonic, &total, Rearm::Rearm);
    let t0 = lp.now();
    lp.arm_timer(t, Deadline::At(t0 + u), None).unwrap();
    lp.arm_timer(t, Deadline::At(t0 + 2 * u), None).unwrap();
    fx.wait_until(&lp, t0 + u);
    lp.poll();
    if X::EXACT_TIME || lp.now() - t0 < 2 * u {
        assert_eq!(
            total.load(Ordering::SeqCst),
            0,
            "moved later: not fired at 1"
        );
    }
    fx.wait_until(&lp, t0 + 2 * u);
    lp.poll();
    assert_eq!(total.load(Ordering::SeqCst), 1);
    let t1 = lp.now();
    lp.arm_timer(t, Deadline::At(t1 + 4 * u), None).unwrap();
    lp.arm_timer(t, Deadline::At(t1 + 3 * u), None).unwrap();
    fx.wait_until(&lp, t1 + 3 * u);
    lp.poll();
    assert_eq!(total.load(Ordering::SeqCst), 2, "moved earlier: fired at 3");
}

/// `AfterLoopTime` counts from the pass's clock reading, not from the arm: a handler that
/// runs late arms it earlier than `After`; outside run calls it counts from now (a reading
/// from an earlier pass is not reused).
pub fn timers_after_loop_time_counts_from_the_pass<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let u = fx.unit();
    let (far, fa, fb) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    // A far timer keeps one pending, so every wait's end reads the clock.
    let keep = counter_timer::<X>(&lp, Clock::Monotonic, &far, Rearm::Rearm);
    lp.arm_timer(keep, Deadline::At(lp.now() + 1000 * u), None)
        .unwrap();
    let a = counter_timer::<X>(&lp, Clock::Monotonic, &fa, Rearm::Disarm);
    let b = counter_timer::<X>(&lp, Clock::Monotonic, &fb, Rearm::Disarm);
    // The handler reaches the loop through its address (alive on this thread's stack for
    // the whole test; only this thread runs it).
    let at = loop_address::<X>(&lp);
    let (r, w) = fx.pipe();
    let f = fx.clone();
    lp.add_fd(
        r,
        Interest::READ,
        FdOptions::new(),
        Probe::new(move |cx, ev| {
            f.drain(ev.fd().expect("fd event"));
            // SAFETY: as above.
            let lp = unsafe { &*at.load(Ordering::SeqCst) };
            // This handler takes a whole unit to run.
            f.wait_until(lp, lp.now() + u);
            cx.arm_timer(a, Deadline::AfterLoopTime(2 * u), None)
                .unwrap();
            cx.arm_timer(b, Deadline::After(2 * u), None).unwrap();
            Rearm::Rearm
        }),
    )
    .unwrap();
    fx.write(w.as_fd(), 1);
    let before = lp.now();
    assert_eq!(lp.poll(), 1);
    let after = lp.now();
    // `a` is due at the pass's time + 2 units (by `after + u`), `b` a unit later.
    fx.wait_until(&lp, after + u);
    lp.poll();
    assert_eq!(fa.load(Ordering::SeqCst), 1, "counted from the pass");
    if X::EXACT_TIME || lp.now() < before + 3 * u {
        assert_eq!(fb.load(Ordering::SeqCst), 0, "After counts from the arm");
    }
    fx.wait_until(&lp, after + 3 * u);
    lp.poll();
    assert_eq!(fb.load(Ordering::SeqCst), 1);
    // Ten units after `fx.wait_until` began, an arm of `timer` from outside any run call
    // counts from now: not due on a poll at once, due two units later.
    let from_now = |timer, fired: &AtomicU64, why: &str| {
        fx.wait_until(&lp, lp.now() + 10 * u);
        let (t, before) = (lp.now(), fired.load(Ordering::SeqCst));
        lp.arm_timer(timer, Deadline::AfterLoopTime(2 * u), None)
            .unwrap();
        lp.poll();
        if X::EXACT_TIME || lp.now() < t + 2 * u {
            assert_eq!(fired.load(Ordering::SeqCst), before, "{why}");
        }
        fx.wait_until(&lp, lp.now() + 3 * u);
        lp.poll();
        assert_eq!(fired.load(Ordering::SeqCst), before + 1);
    };
    // Long after the last run call (its pass's reading is gone with it).
    from_now(a, &fa, "not counted from an earlier pass");
    // Long after another arm from outside (which kept no reading).
    lp.arm_timer(a, Deadline::AfterLoopTime(100 * u), None)
        .unwrap();
    from_now(b, &fb, "read afresh outside run calls");
    assert_eq!(fb.load(Ordering::SeqCst), 2);
    assert_eq!(far.load(Ordering::SeqCst), 0);
}

/// The loop's time is read again after every wait, even when no timer is pending on that
/// clock to make the pass read it: a handler arms `AfterLoopTime` on the monotonic clock (the
/// pass keeps that reading), stops the timer, and runs a nested `run()` whose wait only a
/// system-clock timer ends, two units later; that timer's handler arms `AfterLoopTime(3 units)`
/// on the monotonic clock, which counts from after the nested wait, not from the outer pass.
pub fn timers_after_loop_time_is_read_again_after_a_wait_with_no_timer_pending<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let u = fx.unit();
    let fa = Arc::new(AtomicU64::new(0));
    let a = counter_timer::<X>(&lp, Clock::Monotonic, &fa, Rearm::Disarm);
    // When the system-clock timer's handler armed `a` (monotonic time).
    let armed_at = Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
    // The handlers reach the loop through its address (alive on this thread's stack for the
    // whole test; only this thread runs them).
    let at = loop_address::<X>(&lp);
    let (at2, armed) = (at.clone(), armed_at.clone());
    let x = lp
        .add_timer(
            Clock::System,
            Priority::DEFAULT,
            Probe::new(move |cx, _| {
                // SAFETY: as above.
                let lp = unsafe { &*at2.load(Ordering::SeqCst) };
                *armed.lock().unwrap() = Some(lp.now());
                cx.arm_timer(a, Deadline::AfterLoopTime(3 * u), None)
                    .unwrap();
                Rearm::Disarm
            }),
        )
        .unwrap();
    let (r, w) = fx.pipe();
    let f = fx.clone();
    let nested = Arc::new(AtomicU64::new(0));
    let n = nested.clone();
    lp.add_fd(
        r,
        Interest::READ,
        FdOptions::new(),
        Probe::new(move |cx, ev| {
            f.drain(ev.fd().expect("fd event"));
            // SAFETY: as above.
            let lp = unsafe { &*at.load(Ordering::SeqCst) };
            // This pass's monotonic reading is kept by the arm; then no monotonic timer is
            // pending.
            cx.arm_timer(a, Deadline::AfterLoopTime(100 * u), None)
                .unwrap();
            cx.stop_timer(a).unwrap();
            cx.arm_timer(x, Deadline::After(2 * u), None).unwrap();
            // Only `x` ends this wait.
            n.store(lp.run() as u64, Ordering::SeqCst);
            Rearm::Disarm
        }),
    )
    .unwrap();
    fx.write(w.as_fd(), 1);
    let outer = lp.now();
    assert_eq!(lp.run(), 1);
    assert_eq!(nested.load(Ordering::SeqCst), 1, "the nested run ran x");
    let t_x = armed_at.lock().unwrap().expect("x ran");
    assert!(t_x >= outer + 2 * u, "x ran after its two units");
    // Counted from the outer pass, `a` would be due a unit after `x` ran; it is due three
    // units after.
    fx.wait_until(&lp, t_x + 2 * u);
    lp.poll();
    if X::EXACT_TIME || lp.now() < t_x + 3 * u {
        assert_eq!(
            fa.load(Ordering::SeqCst),
            0,
            "counted from after the nested wait, not from the outer pass"
        );
    }
    fx.wait_until(&lp, t_x + 4 * u);
    lp.poll();
    assert_eq!(fa.load(Ordering::SeqCst), 1);
}

pub fn timers_moving_the_head_later_delays_nothing_else<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let u = fx.unit();
    let log = Log::default();
    let mk = |name: &'static str| {
        let l = log.clone();
        lp.add_timer(
            Clock::Monotonic,
            Priority::DEFAULT,
            Probe::new(move |_, _| {
                l.push(name);
                Rearm::Rearm
            }),
        )
        .unwrap()
    };
    let (a, b, c) = (mk("A"), mk("B"), mk("C"));
    let t0 = lp.now();
    lp.arm_timer(a, Deadline::At(t0 + u), None).unwrap();
    lp.arm_timer(b, Deadline::At(t0 + 5 * u), None).unwrap();
    lp.arm_timer(c, Deadline::At(t0 + 3 * u), None).unwrap();
    lp.arm_timer(a, Deadline::At(t0 + 10 * u), None).unwrap();
    fx.wait_until(&lp, t0 + 3 * u);
    lp.poll();
    if X::EXACT_TIME || lp.now() - t0 < 5 * u {
        assert_eq!(log.take(), s(&["C"]));
    }
    fx.wait_until(&lp, t0 + 10 * u);
    lp.poll();
    let mut rest = log.take();
    rest.retain(|x| x != "C");
    assert_eq!(rest, s(&["B", "A"]));
}

pub fn timers_edge_deadlines<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let u = fx.unit();
    let (past, never, zero) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let tp = counter_timer::<X>(&lp, Clock::Monotonic, &past, Rearm::Rearm);
    let tn = counter_timer::<X>(&lp, Clock::Monotonic, &never, Rearm::Rearm);
    let tz = counter_timer::<X>(&lp, Clock::Monotonic, &zero, Rearm::Rearm);
    let now = lp.now();
    let long_ago = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
    lp.arm_timer(tp, Deadline::At(long_ago), None).unwrap();
    lp.arm_timer(tn, Deadline::After(Duration::MAX), Some(Duration::MAX))
        .unwrap();
    lp.arm_timer(tz, Deadline::After(Duration::ZERO), Some(Duration::ZERO))
        .unwrap();
    assert_eq!(lp.run(), 2, "past and zero deadlines expire at once");
    assert_eq!(past.load(Ordering::SeqCst), 1);
    assert_eq!(zero.load(Ordering::SeqCst), 1);
    fx.wait_until(&lp, now + 3 * u);
    assert_eq!(
        lp.poll(),
        0,
        "a zero interval means one-shot; Duration::MAX saturates to never"
    );
    assert_eq!(never.load(Ordering::SeqCst), 0);
}

/// A deadline already due when it is set ends the next wait at once, on every backend, as a
/// timerfd set to a past time does: the timer is counted with the clock where it was. (kqueue's
/// shortest kernel timer, 1 ns or, where timers count milliseconds, 1 ms, would end the wait
/// later, and a periodic timer would count the expirations of that time too.)
pub fn timers_due_deadline_ends_the_wait_at_once<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let tick = fx.tick();
    let count = Arc::new(AtomicU64::new(0));
    let t = counter_timer::<X>(&lp, Clock::Monotonic, &count, Rearm::Disarm);
    for round in 0..3 {
        let t0 = lp.now();
        lp.arm_timer(t, Deadline::At(t0), Some(tick)).unwrap();
        assert_eq!(lp.run(), 1, "round {round}: the due timer ran");
        let got = count.swap(0, Ordering::SeqCst);
        if X::EXACT_TIME {
            assert_eq!(
                lp.now(),
                t0,
                "round {round}: the wait blocked for a due deadline"
            );
            assert_eq!(
                got, 1,
                "round {round}: counted past the deadline's own expiration"
            );
        } else {
            assert!(got >= 1, "round {round}: {got} expirations");
        }
    }
}

pub fn timers_stop_drops_a_queued_expiry<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let u = fx.unit();
    let fired = Arc::new(AtomicU64::new(0));
    let target = counter_timer::<X>(&lp, Clock::Monotonic, &fired, Rearm::Rearm);
    let stopper = lp
        .add_timer(
            Clock::Monotonic,
            Priority::HIGH,
            Probe::new(move |cx, _| {
                cx.stop_timer(target).unwrap();
                Rearm::Rearm
            }),
        )
        .unwrap();
    let t0 = lp.now();
    lp.arm_timer(target, Deadline::At(t0 + u), None).unwrap();
    lp.arm_timer(stopper, Deadline::At(t0 + u), None).unwrap();
    fx.wait_until(&lp, t0 + 2 * u);
    assert_eq!(lp.poll(), 1, "only the stopper runs");
    assert_eq!(fired.load(Ordering::SeqCst), 0);
    assert_eq!(lp.poll(), 0);
}

/// Re-arming a timer whose expiry is already queued drops that expiry: the timer fires at
/// its new deadline, once.
pub fn timers_rearm_drops_a_queued_expiry<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let u = fx.unit();
    let fired = Arc::new(AtomicU64::new(0));
    let target = counter_timer::<X>(&lp, Clock::Monotonic, &fired, Rearm::Rearm);
    let t0 = lp.now();
    let rearmer = lp
        .add_timer(
            Clock::Monotonic,
            Priority::HIGH,
            Probe::new(move |cx, _| {
                cx.arm_timer(target, Deadline::At(t0 + 4 * u), None)
                    .unwrap();
                Rearm::Rearm
            }),
        )
        .unwrap();
    lp.arm_timer(target, Deadline::At(t0 + u), None).unwrap();
    lp.arm_timer(rearmer, Deadline::At(t0 + u), None).unwrap();
    fx.wait_until(&lp, t0 + 2 * u);
    assert_eq!(lp.poll(), 1, "only the re-armer runs");
    assert_eq!(lp.poll(), 0, "the old expiry is gone");
    assert_eq!(fired.load(Ordering::SeqCst), 0);
    fx.wait_until(&lp, t0 + 4 * u);
    lp.poll();
    assert_eq!(
        fired.load(Ordering::SeqCst),
        1,
        "fired at the new deadline, once"
    );
}

pub fn timers_system_clock_absolute<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let u = fx.unit();
    let n = Arc::new(AtomicU64::new(0));
    let t = counter_timer::<X>(&lp, Clock::System, &n, Rearm::Rearm);
    let t0 = lp.now();
    lp.arm_timer(t, Deadline::AtSystem(lp.system_now() + u), None)
        .unwrap();
    assert_eq!(lp.poll(), 0);
    fx.wait_until(&lp, t0 + 2 * u);
    lp.poll();
    assert_eq!(n.load(Ordering::SeqCst), 1);
    assert_eq!(
        lp.arm_timer(t, Deadline::At(lp.now()), None),
        Err(UsageError::ClockMismatch)
    );
}

pub fn timer_operations_on_other_kinds_are_caller_mistakes<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let (r, _w) = fx.pipe();
    let id = lp
        .add_fd(
            r,
            Interest::READ,
            FdOptions::new(),
            Probe::new(|_, _| Rearm::Rearm),
        )
        .unwrap();
    assert_eq!(
        lp.arm_timer(id, Deadline::After(Duration::ZERO), None),
        Err(UsageError::WrongKind {
            op: "arm_timer",
            kind: WatchKind::Fd
        })
    );
    assert!(lp.waker(id).is_err());
    assert!(matches!(
        lp.set_half_enabled(id, Half::Read, true),
        Err(UsageError::WrongKind { .. })
    ));
}

/// Arming a timer that was removed, or whose removal is pending (its handler removed it and
/// then tried to re-arm it), is refused as stale and arms nothing; a slot reused by a new
/// timer is not reached through the old id.
pub fn timers_arming_a_removed_timer_is_stale<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let n = Arc::new(AtomicU64::new(0));
    let t = counter_timer::<X>(&lp, Clock::Monotonic, &n, Rearm::Rearm);
    lp.remove(t).unwrap();
    assert_eq!(
        lp.arm_timer(t, Deadline::After(Duration::ZERO), None),
        Err(UsageError::Stale)
    );
    // Another timer (which may take the freed slot): the old id still reaches nothing.
    let t2 = counter_timer::<X>(&lp, Clock::Monotonic, &n, Rearm::Rearm);
    assert_eq!(
        lp.arm_timer(t, Deadline::After(Duration::ZERO), None),
        Err(UsageError::Stale)
    );
    assert_eq!(lp.poll(), 0, "nothing was armed through the stale id");
    lp.arm_timer(t2, Deadline::After(Duration::ZERO), None)
        .unwrap();
    assert_eq!(lp.poll(), 1);
    assert_eq!(n.load(Ordering::SeqCst), 1);

    let refused = Arc::new(AtomicUsize::new(0));
    let r2 = refused.clone();
    let t3 = lp
        .add_timer(
            Clock::Monotonic,
            Priority::DEFAULT,
            Probe::new(move |cx, _| {
                cx.remove(cx.id()).unwrap();
                if cx.arm_timer(cx.id(), Deadline::After(Duration::ZERO), None)
                    == Err(UsageError::Stale)
                {
                    r2.fetch_add(1, Ordering::SeqCst);
                }
                Rearm::Rearm
            }),
        )
        .unwrap();
    lp.arm_timer(t3, Deadline::After(Duration::ZERO), None)
        .unwrap();
    assert_eq!(lp.poll(), 1);
    assert_eq!(
        refused.load(Ordering::SeqCst),
        1,
        "a removing timer is stale"
    );
    assert!(!lp.contains(t3));
    assert_eq!(lp.poll(), 0, "the refused re-arm left nothing armed");
}

// ---------------------------------------------------------------- self-removal

#[derive(Clone, Copy, Debug)]
enum Kind {
    Fd,
    BidiRead,
    BidiWrite,
    Emulated,
    Timer,
    Wake,
}

pub fn self_removal_every_kind_every_code<X: Fixture>() {
    let codes = [
        Rearm::Rearm,
        Rearm::Disarm,
        Rearm::Noop,
        Rearm::Remove,
        Rearm::Requeue,
    ];
    let kinds = [
        Kind::Fd,
        Kind::BidiRead,
        Kind::BidiWrite,
        Kind::Emulated,
        Kind::Timer,
        Kind::Wake,
    ];
    for kind in kinds {
        for code in codes {
            let fx = X::new();
            let lp = lp(&fx);
            let calls = Arc::new(AtomicUsize::new(0));
            let removed = Arc::new(AtomicUsize::new(0));
            let c2 = calls.clone();
            let probe = Probe::counting(&removed, move |cx, _| {
                c2.fetch_add(1, Ordering::SeqCst);
                cx.remove(cx.id()).expect("self-removal");
                assert!(!cx.contains(cx.id()));
                assert_eq!(
                    cx.remove(cx.id()),
                    Err(UsageError::Stale),
                    "removal is once"
                );
                code
            });
            let mut keep = vec![];
            let id = match kind {
                Kind::Fd => {
                    let (r, w) = fx.pipe();
                    fx.write(w.as_fd(), 1);
                    keep.push(w);
                    lp.add_fd(r, Interest::READ, FdOptions::new(), probe)
                        .unwrap()
                }
                Kind::BidiRead | Kind::BidiWrite => {
                    let (a, b) = fx.socketpair();
                    fx.write(b.as_fd(), 1);
                    keep.push(b);
                    let opts = if matches!(kind, Kind::BidiRead) {
                        BidiOptions::new().priorities(Priority(-1), Priority(1))
                    } else {
                        BidiOptions::new().priorities(Priority(1), Priority(-1))
                    };
                    lp.add_bidi(a, opts, probe).unwrap()
                }
                Kind::Emulated => lp
                    .add_fd(fx.regular_file(), Interest::READ, FdOptions::new(), probe)
                    .unwrap(),
                Kind::Timer => {
                    let t = lp
                        .add_timer(Clock::Monotonic, Priority::DEFAULT, probe)
                        .unwrap();
                    lp.arm_timer(t, Deadline::After(Duration::ZERO), Some(fx.tick()))
                        .unwrap();
                    t
                }
                Kind::Wake => {
                    let (w, waker) = lp.add_wake(Priority::DEFAULT, probe).unwrap();
                    waker.wake();
                    w
                }
            };
            assert_eq!(
                lp.run(),
                1,
                "{kind:?}/{code:?}: one call, the other bidi half dropped"
            );
            for _ in 0..3 {
                assert_eq!(lp.poll(), 0, "{kind:?}/{code:?}");
            }
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{kind:?}/{code:?}");
            assert_eq!(
                removed.load(Ordering::SeqCst),
                1,
                "{kind:?}/{code:?}: on_removed once"
            );
            assert_eq!(lp.usage().watchers, 0, "{kind:?}/{code:?}: slot released");
            assert_eq!(lp.usage().timers, 0);
            assert_eq!(lp.usage().wakers, 0);
            assert!(!lp.contains(id));
            assert_eq!(lp.remove(id), Err(UsageError::Stale));
        }
    }
}

pub fn removing_another_watcher_from_a_handler<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let (r1, w1) = fx.pipe();
    let (r2, w2) = fx.pipe();
    let removed = Arc::new(AtomicUsize::new(0));
    let victim = lp
        .add_fd(
            r2,
            Interest::READ,
            FdOptions::new().priority(Priority(5)),
            Probe::counting(&removed, |_, _| panic!("a removed watcher must not run")),
        )
        .unwrap();
    lp.add_fd(
        r1,
        Interest::READ,
        FdOptions::new().priority(Priority(-5)),
        Probe::new(move |cx, _| {
            cx.remove(victim).unwrap();
            Rearm::Remove
        }),
    )
    .unwrap();
    fx.write(w1.as_fd(), 1);
    fx.write(w2.as_fd(), 1);
    assert_eq!(lp.run(), 1);
    assert_eq!(removed.load(Ordering::SeqCst), 1);
    assert_eq!(lp.poll(), 0);
    assert_eq!(lp.usage().watchers, 0);
}

// ---------------------------------------------------------------- ids, capacity, bad input

pub fn stale_id_after_remove_and_slot_reuse<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let (r1, _w1) = fx.pipe();
    let old = lp
        .add_fd(
            r1,
            Interest::READ,
            FdOptions::new(),
            Probe::new(|_, _| Rearm::Rearm),
        )
        .unwrap();
    lp.remove(old).unwrap();
    let (r2, w2) = fx.pipe();
    let log = Log::default();
    let removed = Arc::new(AtomicUsize::new(0));
    let mut p = logger(&fx, &log, "new", Rearm::Rearm);
    p.removed = removed.clone();
    let new = lp.add_fd(r2, Interest::READ, FdOptions::new(), p).unwrap();
    assert_eq!(old.index(), new.index(), "the slot was reused");
    assert_ne!(old, new);
    assert_eq!(lp.disable(old), Err(UsageError::Stale));
    assert_eq!(lp.remove(old), Err(UsageError::Stale));
    assert_eq!(
        lp.set_interest(old, Interest::WRITE),
        Err(UsageError::Stale)
    );
    assert_eq!(
        lp.arm_timer(old, Deadline::After(Duration::ZERO), None),
        Err(UsageError::Stale)
    );
    assert!(!lp.contains(old));
    fx.write(w2.as_fd(), 1);
    assert_eq!(lp.run(), 1, "the new watcher is untouched");
    assert_eq!(log.take(), s(&["new"]));
    assert_eq!(removed.load(Ordering::SeqCst), 0);
}

pub fn foreign_id_is_stale<X: Fixture>() {
    let fx = X::new();
    let a = lp(&fx);
    let b = lp(&fx);
    let ta = a
        .add_timer(
            Clock::Monotonic,
            Priority::DEFAULT,
            Probe::new(|_, _| Rearm::Rearm),
        )
        .unwrap();
    let tb = b
        .add_timer(
            Clock::Monotonic,
            Priority::DEFAULT,
            Probe::new(|_, _| Rearm::Rearm),
        )
        .unwrap();
    assert_eq!((ta.index(), ta.generation()), (tb.index(), tb.generation()));
    assert_eq!(b.remove(ta), Err(UsageError::Stale));
    assert!(b.contains(tb));
    assert!(!b.contains(ta));
}

pub fn capacity_exhaustion_is_typed_and_recoverable<X: Fixture>() {
    let fx = X::new();
    let lp = EventLoop::<Probe, X::B, Single>::builder()
        .watchers(3)
        .timers(1)
        .wakers(1)
        .build_with(fx.backend())
        .unwrap();
    let t = lp
        .add_timer(
            Clock::Monotonic,
            Priority::DEFAULT,
            Probe::new(|_, _| Rearm::Rearm),
        )
        .unwrap();
    let err = lp
        .add_timer(
            Clock::System,
            Priority::DEFAULT,
            Probe::new(|_, _| Rearm::Rearm),
        )
        .unwrap_err();
    assert_eq!(err.error(), Error::Capacity(Pool::Timers));
    let (wk, _) = lp
        .add_wake(Priority::DEFAULT, Probe::new(|_, _| Rearm::Rearm))
        .unwrap();
    let err = lp
        .add_wake(Priority::DEFAULT, Probe::new(|_, _| Rearm::Rearm))
        .unwrap_err();
    assert_eq!(err.error(), Error::Capacity(Pool::Wakers));
    let (r, _w) = fx.pipe();
    let f = lp
        .add_fd(
            r,
            Interest::READ,
            FdOptions::new(),
            Probe::new(|_, _| Rearm::Rearm),
        )
        .unwrap();
    let (r2, _w2) = fx.pipe();
    let r2n = std::os::fd::AsRawFd::as_raw_fd(&r2);
    let err = lp
        .add_fd(
            r2,
            Interest::READ,
            FdOptions::new(),
            Probe::new(|_, _| Rearm::Rearm),
        )
        .unwrap_err();
    assert_eq!(err.error(), Error::Capacity(Pool::Watchers));
    assert!(err.to_string().contains("watchers"));
    let back = err.into_fd().expect("fd handed back");
    assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&back), r2n);
    assert_eq!(lp.usage().watchers, 3);
    lp.remove(f).unwrap();
    lp.add_fd(
        back,
        Interest::READ,
        FdOptions::new(),
        Probe::new(|_, _| Rearm::Rearm),
    )
    .unwrap();
    lp.remove(t).unwrap();
    lp.remove(wk).unwrap();
    lp.add_timer(
        Clock::System,
        Priority::DEFAULT,
        Probe::new(|_, _| Rearm::Rearm),
    )
    .unwrap();
    lp.add_wake(Priority::DEFAULT, Probe::new(|_, _| Rearm::Rearm))
        .unwrap();
}

pub fn bad_fd_at_registration_leaks_nothing<X: Fixture>() {
    let fx = X::new();
    let lp = EventLoop::<Probe, X::B, Single>::builder()
        .watchers(2)
        .build_with(fx.backend())
        .unwrap();
    for _ in 0..5 {
        let err = lp
            .add_fd(
                fx.bad_fd(),
                Interest::READ,
                FdOptions::new(),
                Probe::new(|_, _| Rearm::Rearm),
            )
            .unwrap_err();
        assert!(
            matches!(err.error(), Error::Kernel { errno, .. } if errno == dasynq::Errno::BADF),
            "{:?}",
            err.error()
        );
        fx.dispose_bad_fd(err.into_fd().expect("fd handed back"));
        assert_eq!(lp.usage().watchers, 0);
    }
    let err = lp
        .add_fd(
            fx.pipe().0,
            Interest::NONE,
            FdOptions::new(),
            Probe::new(|_, _| Rearm::Rearm),
        )
        .unwrap_err();
    assert!(matches!(err.error(), Error::InvalidArgument(_)));
    for _ in 0..2 {
        lp.add_fd(
            fx.pipe().0,
            Interest::READ,
            FdOptions::new(),
            Probe::new(|_, _| Rearm::Rearm),
        )
        .unwrap();
    }
}

pub fn builder_rejects_bad_capacities<X: Fixture>() {
    let fx = X::new();
    let b = || EventLoop::<Probe, X::B, Single>::builder();
    let bad = |r: Result<Lp<X>, BuildError>| matches!(r, Err(BuildError::InvalidCapacity { .. }));
    assert!(bad(b().watchers(0).build_with(fx.backend())));
    assert!(bad(b().watchers(usize::MAX).build_with(fx.backend())));
    assert!(bad(b().watchers(4).timers(5).build_with(fx.backend())));
    assert!(bad(b().watchers(4).wakers(5).build_with(fx.backend())));
    assert!(bad(b().events(0).build_with(fx.backend())));
    assert!(bad(b().events(1 << 20).build_with(fx.backend())));
    assert!(bad(b().signal_instances(1 << 17).build_with(fx.backend())));
    let e = b().watchers(0).build_with(fx.backend()).unwrap_err();
    assert!(e.to_string().contains("watchers"));
    let e = b().signal_instances(usize::MAX).build_with(fx.backend());
    assert!(e.unwrap_err().to_string().contains("signal_instances"));
    assert!(
        b().watchers(1)
            .timers(0)
            .wakers(0)
            .signal_instances(0)
            .build_with(fx.backend())
            .is_ok()
    );
    assert!(
        b().signal_instances(1 << 16)
            .build_with(fx.backend())
            .is_ok()
    );
}

// ---------------------------------------------------------------- wake

pub fn wakes_coalesce_and_respect_enable<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let (id, waker) = lp
        .add_wake(
            Priority::DEFAULT,
            Probe::new(move |_, ev| {
                assert!(matches!(ev, Event::Wake));
                n2.fetch_add(1, Ordering::SeqCst);
                Rearm::Rearm
            }),
        )
        .unwrap();
    waker.wake();
    waker.wake();
    lp.waker(id).unwrap().wake();
    assert_eq!(lp.poll(), 1);
    assert_eq!(lp.poll(), 0);
    lp.disable(id).unwrap();
    waker.wake();
    assert_eq!(lp.poll(), 0);
    lp.enable(id).unwrap();
    assert_eq!(
        lp.poll(),
        1,
        "a wake while disabled is delivered once enabled"
    );
    assert_eq!(n.load(Ordering::SeqCst), 2);
    lp.remove(id).unwrap();
    let (_id2, _w2) = lp
        .add_wake(
            Priority::DEFAULT,
            Probe::new(|_, _| panic!("old waker reached new watcher")),
        )
        .unwrap();
    waker.wake();
    assert_eq!(lp.poll(), 0);
}

pub fn wake_from_another_thread_while_blocked<X: Fixture>() {
    let fx = X::new();
    let lp = lp(&fx);
    let (_id, waker) = lp
        .add_wake(Priority::DEFAULT, Probe::new(|_, _| Rearm::Rearm))
        .unwrap();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        waker.wake();
    });
    let start = Instant::now();
    assert_eq!(lp.run(), 1);
    assert!(
        start.elapsed() >= Duration::from_millis(20),
        "run blocked until the wake"
    );
    t.join().unwrap();
}

// ---------------------------------------------------------------- threaded flavour

fn tlp<X: Fixture>(fx: &X) -> Arc<Tlp<X>> {
    Arc::new(fixture::build::<X, Probe, Threaded>(fx))
}

fn after<T: Send + 'static>(
    ms: u64,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(ms));
        f()
    })
}

pub fn threaded_registration_from_another_thread_wakes_the_loop<X: Fixture>() {
    let fx = X::new();
    let lp = tlp(&fx);
    let (l2, f2) = (lp.clone(), fx.clone());
    let t = after(30, move || {
        l2.add_fd(
            f2.regular_file(),
            Interest::READ,
            FdOptions::new(),
            Probe::new(|_, _| Rearm::Remove),
        )
        .unwrap();
    });
    assert_eq!(lp.run(), 1, "an emulated fd added by another thread runs");
    t.join().unwrap();
}

pub fn threaded_enable_and_arm_from_another_thread<X: Fixture>() {
    let fx = X::new();
    let lp = tlp(&fx);
    let (r, w) = fx.pipe();
    fx.write(w.as_fd(), 1);
    let log = Log::default();
    let id = lp
        .add_fd(
            r,
            Interest::READ,
            FdOptions::new().disabled(),
            logger(&fx, &log, "fd", Rearm::Disarm),
        )
        .unwrap();
    let l2 = lp.clone();
    let t = after(30, move || l2.enable(id).unwrap());
    assert_eq!(lp.run(), 1);
    t.join().unwrap();
    let tm = lp
        .add_timer(
            Clock::Monotonic,
            Priority::DEFAULT,
            logger(&fx, &log, "timer", Rearm::Remove),
        )
        .unwrap();
    let l2 = lp.clone();
    let t = after(30, move || {
        l2.arm_timer(tm, Deadline::After(Duration::from_millis(1)), None)
            .unwrap()
    });
    assert_eq!(lp.run(), 1);
    t.join().unwrap();
    // A deadline already due, set while the runner is blocked: its kernel timer must end that
    // wait (kqueue's due-deadline shortcut only helps a wait that begins after it).
    let tm = lp
        .add_timer(
            Clock::Monotonic,
            Priority::DEFAULT,
            logger(&fx, &log, "due timer", Rearm::Remove),
        )
        .unwrap();
    let l2 = lp.clone();
    let t = after(30, move || {
        l2.arm_timer(tm, Deadline::At(l2.now()), None).unwrap()
    });
    let done = watchdog("threaded_enable_and_arm_from_another_thread (due deadline)");
    assert_eq!(lp.run(), 1);
    drop(done);
    t.join().unwrap();
    assert_eq!(log.take(), s(&["fd", "timer", "due timer"]));
}

/// Threaded (one-shot registrations, re-armed by the dispatching thread): a handler that
/// changes its own directions and re-arms gets the new ones from the kernel. The dispatching
/// thread's re-arm, planned when the watcher was claimed, still holds the old directions, so
/// the loop must bring the registration in line when the handler returns.
pub fn threaded_handler_changes_its_own_interest<X: Fixture>() {
    let fx = X::new();
    let lp = tlp(&fx);
    let (a, b) = fx.socketpair();
    let log = Log::default();
    let (f, l) = (fx.clone(), log.clone());
    lp.add_fd(
        a,
        Interest::READ,
        FdOptions::new(),
        Probe::new(move |cx, ev| {
            let Event::Fd { fd, ready } = ev else {
                panic!()
            };
            f.drain(fd);
            l.push(format!("{ready:?}"));
            if ready.is_readable() {
                cx.set_interest(cx.id(), Interest::WRITE).unwrap();
            }
            Rearm::Rearm
        }),
    )
    .unwrap();
    fx.write(b.as_fd(), 1);
    assert_eq!(lp.run(), 1);
    assert_eq!(log.take(), s(&["READABLE"]));
    // Blocks until the kernel reports the socket writable (it is at once).
    let done = watchdog("threaded_handler_changes_its_own_interest");
    assert_eq!(lp.run(), 1);
    drop(done);
    assert_eq!(log.take(), s(&["WRITABLE"]));
}

pub fn threaded_removal_from_another_thread<X: Fixture>() {
    let fx = X::new();
    let lp = tlp(&fx);
    let (r, _w) = fx.pipe();
    let removed = Arc::new(AtomicUsize::new(0));
    let id = lp
        .add_fd(
            r,
            Interest::READ,
            FdOptions::new(),
            Probe::counting(&removed, |_, _| Rearm::Rearm),
        )
        .unwrap();
    let (_wid, waker) = lp
        .add_wake(Priority::DEFAULT, Probe::new(|_, _| Rearm::Rearm))
        .unwrap();
    let (l2, rm2) = (lp.clone(), removed.clone());
    let t = after(30, move || {
        l2.remove(id).unwrap();
        assert_eq!(
            rm2.load(Ordering::SeqCst),
            1,
            "on_removed ran on the removing thread"
        );
        waker.wake();
    });
    assert_eq!(lp.run(), 1);
    t.join().unwrap();
    assert_eq!(removed.load(Ordering::SeqCst), 1);
    assert!(!lp.contains(id));
}

pub fn threaded_stop_from_another_thread<X: Fixture>() {
    let fx = X::new();
    let lp = tlp(&fx);
    let l2 = lp.clone();
    let t = after(30, move || l2.stop());
    assert_eq!(lp.run(), 0);
    t.join().unwrap();
}

// ------------------------------------------------ threaded flavour, two runners at once

/// Two runner threads, each in one plain `run()` call, on a loop reserved for two; `act`
/// runs on a third thread 30 ms later. Waits (under a watchdog) until `done()` holds, then
/// stops the loop until both calls have returned, and gives the sum of what they returned.
fn two_runners<X: Fixture>(
    lp: &Arc<Tlp<X>>,
    act: impl FnOnce() + Send + 'static,
    done: impl Fn() -> bool,
) -> usize {
    let runners: Vec<_> = (0..2)
        .map(|_| {
            let lp = lp.clone();
            std::thread::spawn(move || lp.run())
        })
        .collect();
    let t = after(30, act);
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "two runners: the event was never handled (a lost wake-up)"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    t.join().unwrap();
    portable::stop_until_joined(|| lp.stop(), runners, Duration::from_secs(10))
        .into_iter()
        .sum()
}

fn tlp2<X: Fixture>(fx: &X) -> Arc<Tlp<X>> {
    Arc::new(fixture::build_runners::<X, Probe>(fx, 2))
}

pub fn two_runners_registration_from_another_thread<X: Fixture>() {
    let fx = X::new();
    let lp = tlp2(&fx);
    let log = Log::default();
    let (l2, f2, g2) = (lp.clone(), fx.clone(), log.clone());
    let ran = two_runners::<X>(
        &lp,
        move || {
            l2.add_fd(
                f2.regular_file(),
                Interest::READ,
                FdOptions::new(),
                logger(&f2, &g2, "file", Rearm::Remove),
            )
            .unwrap();
        },
        || !log.get().is_empty(),
    );
    assert_eq!(ran, 1, "one of the two runners ran it, once");
    assert_eq!(log.take(), s(&["file"]));
}

pub fn two_runners_enable_and_arm_from_another_thread<X: Fixture>() {
    let fx = X::new();
    let lp = tlp2(&fx);
    let (r, w) = fx.pipe();
    fx.write(w.as_fd(), 1);
    let log = Log::default();
    let id = lp
        .add_fd(
            r,
            Interest::READ,
            FdOptions::new().disabled(),
            logger(&fx, &log, "fd", Rearm::Disarm),
        )
        .unwrap();
    let tm = lp
        .add_timer(
            Clock::Monotonic,
            Priority::DEFAULT,
            logger(&fx, &log, "timer", Rearm::Remove),
        )
        .unwrap();
    let l2 = lp.clone();
    let ran = two_runners::<X>(
        &lp,
        move || {
            l2.enable(id).unwrap();
            l2.arm_timer(tm, Deadline::After(Duration::from_millis(1)), None)
                .unwrap();
        },
        || log.get().len() == 2,
    );
    assert_eq!(ran, 2);
    let mut got = log.take();
    got.sort();
    assert_eq!(got, s(&["fd", "timer"]));
}

pub fn two_runners_removal_from_another_thread<X: Fixture>() {
    let fx = X::new();
    let lp = tlp2(&fx);
    let (r, _w) = fx.pipe();
    let removed = Arc::new(AtomicUsize::new(0));
    let id = lp
        .add_fd(
            r,
            Interest::READ,
            FdOptions::new(),
            Probe::counting(&removed, |_, _| Rearm::Rearm),
        )
        .unwrap();
    let woke = Arc::new(AtomicUsize::new(0));
    let w2 = woke.clone();
    let (_wid, waker) = lp
        .add_wake(
            Priority::DEFAULT,
            Probe::new(move |_, _| {
                w2.fetch_add(1, Ordering::SeqCst);
                Rearm::Rearm
            }),
        )
        .unwrap();
    let (l2, rm2) = (lp.clone(), removed.clone());
    let ran = two_runners::<X>(
        &lp,
        move || {
            l2.remove(id).unwrap();
            assert_eq!(rm2.load(Ordering::SeqCst), 1, "on_removed on the remover");
            waker.wake();
        },
        || woke.load(Ordering::SeqCst) == 1,
    );
    assert_eq!(ran, 1);
    assert_eq!(removed.load(Ordering::SeqCst), 1);
    assert!(!lp.contains(id));
}

pub fn two_runners_one_stop_ends_both<X: Fixture>() {
    let fx = X::new();
    let lp = tlp2(&fx);
    let runners: Vec<_> = (0..2)
        .map(|_| {
            let lp = lp.clone();
            std::thread::spawn(move || lp.run())
        })
        .collect();
    // Both are in their calls by then (blocked with nothing to do); one stop ends both.
    std::thread::sleep(Duration::from_millis(50));
    lp.stop();
    let start = Instant::now();
    for r in runners {
        while !r.is_finished() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "one stop() did not end both runners"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(r.join().unwrap(), 0);
    }
}

/// Instantiate the suite for one fixture: one `#[test]` per scenario.
#[macro_export]
macro_rules! behavioural_suite {
    ($fx:ty) => {
        $crate::behavioural_suite!(@each $fx;
            fd_remove_handles_only_first,
            fd_rearm_fires_again_disarm_fires_once,
            fd_enable_in_handler_then_disarm_stays_disabled,
            fd_noop_keeps_what_the_handler_chose,
            fd_requeue_runs_again_next_batch_with_the_same_readiness,
            fd_nested_run_leaves_no_stale_event,
            fd_panicking_handler_loses_no_event_of_its_wait,
            fd_both_directions_in_one_call,
            fd_set_interest_changes_directions,
            fd_error_condition_is_reported,
            fd_handed_back_open_by_on_removed,
            disabled_fd_with_hung_up_peer,
            bidi_both_halves_remove,
            bidi_read_removed_write_rearmed,
            bidi_halves_enable_independently,
            bidi_hangup_never_crosses_halves,
            bidi_halves_have_their_own_priorities,
            emulated_fd_fires_every_batch_until_noop,
            emulated_fd_added_disabled_then_enabled,
            emulation_refused_is_a_clear_error,
            emulated_bidi_halves,
            priorities_then_arrival_order,
            run_limit_counts_exactly,
            stop_ends_run_and_is_sticky_until_consumed,
            timers_one_shot_and_periodic_counts,
            timers_disabled_periodic_keeps_counting,
            timers_hundred_fire_in_order_then_in_reverse,
            timers_rearm_later_and_earlier,
            timers_after_loop_time_counts_from_the_pass,
            timers_after_loop_time_is_read_again_after_a_wait_with_no_timer_pending,
            timers_moving_the_head_later_delays_nothing_else,
            timers_edge_deadlines,
            timers_due_deadline_ends_the_wait_at_once,
            timers_stop_drops_a_queued_expiry,
            timers_rearm_drops_a_queued_expiry,
            timers_system_clock_absolute,
            timers_arming_a_removed_timer_is_stale,
            timer_operations_on_other_kinds_are_caller_mistakes,
            self_removal_every_kind_every_code,
            removing_another_watcher_from_a_handler,
            stale_id_after_remove_and_slot_reuse,
            foreign_id_is_stale,
            capacity_exhaustion_is_typed_and_recoverable,
            bad_fd_at_registration_leaks_nothing,
            builder_rejects_bad_capacities,
            wakes_coalesce_and_respect_enable,
            wake_from_another_thread_while_blocked,
            threaded_registration_from_another_thread_wakes_the_loop,
            threaded_enable_and_arm_from_another_thread,
            threaded_handler_changes_its_own_interest,
            threaded_removal_from_another_thread,
            threaded_stop_from_another_thread,
            two_runners_registration_from_another_thread,
            two_runners_enable_and_arm_from_another_thread,
            two_runners_removal_from_another_thread,
            two_runners_one_stop_ends_both,
        );
    };
    (@each $fx:ty; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::suite::$name::<$fx>();
            }
        )*
    };
}
