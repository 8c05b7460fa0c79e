//! Kernel errors inside operations that cannot fail: the loop absorbs them, keeps every
//! watcher's state exact, counts them in `kernel_faults()`, and retries the kernel change
//! before later waits. Driven by fault injection into the simulated epoll kernel (and the
//! `Sim` backend); a healthy kernel never fails these calls.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use dasynq::backend::Epoll;
use dasynq::sim::{EpollSim, Fault, Sim, SimCall};
use dasynq::{
    Clock, Control, Cx, Deadline, Errno, Error, Event, EventLoop, FdOptions, Handler, Interest,
    Priority, Rearm, Removed,
};

struct H {
    calls: Arc<AtomicUsize>,
    removed: Arc<Mutex<Vec<Option<OwnedFd>>>>,
    rearm: Rearm,
    drain: Option<EpollSim>,
}

impl Handler for H {
    fn on_event(&mut self, _cx: &Cx<'_, Self>, ev: Event<'_>) -> Rearm {
        if let (Some(w), Event::Fd { fd, .. }) = (&self.drain, ev) {
            let _ = w.read(&fd, u64::MAX);
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.rearm
    }
    fn on_removed(self, _cx: &Cx<'_, Self>, removed: Removed) {
        self.removed.lock().unwrap().push(removed.into_fd());
    }
}

struct Setup {
    k: EpollSim,
    lp: EventLoop<H, Epoll<EpollSim>>,
    calls: Arc<AtomicUsize>,
    removed: Arc<Mutex<Vec<Option<OwnedFd>>>>,
}

fn setup() -> Setup {
    let k = EpollSim::new();
    let lp = EventLoop::<H, Epoll<EpollSim>>::builder()
        .watchers(8)
        .build_with(Epoll::with_kernel(k.clone()).unwrap())
        .unwrap();
    Setup {
        k,
        lp,
        calls: Arc::default(),
        removed: Arc::default(),
    }
}

impl Setup {
    fn h(&self, rearm: Rearm) -> H {
        H {
            calls: self.calls.clone(),
            removed: self.removed.clone(),
            rearm,
            drain: Some(self.k.clone()),
        }
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[test]
fn disable_survives_a_failed_epoll_ctl_mod() {
    let s = setup();
    let (r, w) = s.k.pipe().unwrap();
    let id =
        s.lp.add_fd(r, Interest::READ, FdOptions::new(), s.h(Rearm::Rearm))
            .unwrap();
    s.k.write(&w, 1).unwrap();
    assert_eq!(s.lp.poll(), 1);
    s.k.inject(SimCall::EpollCtlMod, Fault::once(Errno::NOMEM));
    s.lp.disable(id).unwrap();
    let faults = s.lp.kernel_faults();
    assert_eq!(faults.count, 1);
    assert_eq!(faults.last.unwrap().call, "epoll_ctl(MOD)");
    s.k.write(&w, 1).unwrap();
    assert_eq!(
        s.lp.poll(),
        0,
        "disabled means disabled, whatever the kernel still reports"
    );
    assert_eq!(s.lp.poll(), 0);
    s.lp.enable(id).unwrap();
    assert_eq!(s.lp.poll(), 1);
    assert_eq!(s.calls(), 2);
}

/// Found by the `epoll_backend` fuzz target: an interrupted wait (EINTR, which the loop treats
/// as "nothing happened") left the previous wait's events in the simulated buffer, and the
/// loop handled them again: a readable report for a pipe its handler had drained.
#[test]
fn an_interrupted_wait_never_replays_the_last_waits_events() {
    let s = setup();
    let (r, w) = s.k.pipe().unwrap();
    s.lp.add_fd(r, Interest::READ, FdOptions::new(), s.h(Rearm::Rearm))
        .unwrap();
    s.k.write(&w, 1).unwrap();
    assert_eq!(s.lp.poll(), 1, "the handler drains the pipe");
    s.k.inject(SimCall::EpollWait, Fault::once(Errno::INTR));
    assert_eq!(s.lp.poll(), 0, "nothing new happened");
    assert_eq!(s.calls(), 1);
}

/// Found by the `epoll_backend` fuzz target: a failed wait skipped the wake list, so a wake
/// made before the run, for a watcher whose earlier wake was already queued, was taken in only
/// after that watcher ran: two calls for wakes that should have coalesced.
#[test]
fn a_wake_before_a_failed_wait_coalesces_with_the_queued_one() {
    let s = setup();
    let (r, w) = s.k.pipe().unwrap();
    s.lp.add_fd(r, Interest::READ, FdOptions::new(), s.h(Rearm::Rearm))
        .unwrap();
    let wakes = Arc::new(AtomicUsize::new(0));
    let h = H {
        calls: wakes.clone(),
        removed: Arc::default(),
        rearm: Rearm::Rearm,
        drain: None,
    };
    let (_, waker) = s.lp.add_wake(Priority(5), h).unwrap();
    waker.wake();
    s.k.write(&w, 1).unwrap();
    assert_eq!(s.lp.poll_limit(1), 1, "the fd runs; the wake stays queued");
    waker.wake();
    s.k.inject(SimCall::EpollWait, Fault::once(Errno::NOMEM));
    assert_eq!(
        s.lp.poll(),
        1,
        "the queued wake runs despite the failed wait"
    );
    assert_eq!(s.lp.poll(), 0, "the second wake coalesced into it");
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
}

#[test]
fn enable_is_retried_until_the_kernel_accepts_it() {
    let s = setup();
    let (r, w) = s.k.pipe().unwrap();
    let id =
        s.lp.add_fd(
            r,
            Interest::READ,
            FdOptions::new().disabled(),
            s.h(Rearm::Rearm),
        )
        .unwrap();
    s.k.inject(SimCall::EpollCtlMod, Fault::always(Errno::NOMEM));
    s.lp.enable(id).unwrap();
    s.k.write(&w, 1).unwrap();
    assert_eq!(s.lp.poll(), 0, "the kernel never got the enable");
    assert!(s.lp.kernel_faults().count >= 2, "retried before the wait");
    s.k.clear_faults();
    assert_eq!(s.lp.poll(), 1, "the retry before the next wait succeeds");
}

#[test]
fn failed_deregistration_keeps_the_fd_until_a_retry_succeeds() {
    let s = setup();
    let (r, _w) = s.k.pipe().unwrap();
    let id =
        s.lp.add_fd(r, Interest::READ, FdOptions::new(), s.h(Rearm::Rearm))
            .unwrap();
    s.k.inject(SimCall::EpollCtlDel, Fault::once(Errno::NOMEM));
    s.lp.remove(id).unwrap();
    {
        let removed = s.removed.lock().unwrap();
        assert_eq!(removed.len(), 1, "on_removed ran once");
        assert!(
            removed[0].is_none(),
            "the fd stays with the loop while still registered"
        );
    }
    assert!(!s.lp.contains(id));
    assert_eq!(
        s.lp.usage().watchers,
        1,
        "the slot is held by the pending deregistration"
    );
    assert_eq!(s.lp.remove(id), Err(dasynq::UsageError::Stale));
    assert_eq!(s.lp.poll(), 0);
    assert_eq!(
        s.lp.usage().watchers,
        0,
        "retried before the wait and released"
    );
    assert_eq!(s.removed.lock().unwrap().len(), 1);
}

#[test]
fn timers_fire_on_time_while_the_timer_fd_refuses_to_arm() {
    let s = setup();
    let t =
        s.lp.add_timer(Clock::Monotonic, Priority::DEFAULT, s.h(Rearm::Remove))
            .unwrap();
    s.k.inject(SimCall::TimerfdSettime, Fault::always(Errno::NOMEM));
    let start = s.k.now_ns(Clock::Monotonic);
    s.lp.arm_timer(t, Deadline::After(Duration::from_millis(250)), None)
        .unwrap();
    assert_eq!(s.lp.run(), 1);
    let waited = s.k.now_ns(Clock::Monotonic) - start;
    assert!(waited >= 250_000_000, "never early: {waited} ns");
    assert!(
        waited < 270_000_000,
        "late by at most a retry period: {waited} ns"
    );
    assert!(s.lp.kernel_faults().count > 0);
}

#[test]
fn a_failing_wait_ends_the_run_early_and_is_counted() {
    let s = setup();
    s.k.inject(SimCall::EpollWait, Fault::once(Errno::BADF));
    assert_eq!(s.lp.run(), 0);
    assert_eq!(s.lp.kernel_faults().last.unwrap().call, "epoll_wait");
    let (r, w) = s.k.pipe().unwrap();
    s.lp.add_fd(r, Interest::READ, FdOptions::new(), s.h(Rearm::Rearm))
        .unwrap();
    s.k.write(&w, 1).unwrap();
    assert_eq!(s.lp.run(), 1, "the next run works");
}

#[test]
fn a_lost_wake_notification_is_still_delivered() {
    let s = setup();
    let (_id, waker) = s.lp.add_wake(Priority::DEFAULT, s.h(Rearm::Rearm)).unwrap();
    s.k.inject(SimCall::EventfdWrite, Fault::once(Errno::AGAIN));
    waker.wake();
    assert_eq!(s.lp.poll(), 1, "the wake list is checked after every wait");
}

#[test]
fn registration_errors_are_typed_and_leak_nothing() {
    let s = setup();
    for (errno, want) in [
        (
            Errno::NOMEM,
            Error::Kernel {
                call: "epoll_ctl(ADD)",
                errno: Errno::NOMEM,
            },
        ),
        (
            Errno::NOSPC,
            Error::Kernel {
                call: "epoll_ctl(ADD)",
                errno: Errno::NOSPC,
            },
        ),
        (Errno::EXIST, Error::AlreadyRegistered),
    ] {
        let (r, _w) = s.k.pipe().unwrap();
        s.k.inject(SimCall::EpollCtlAdd, Fault::once(errno));
        let e =
            s.lp.add_fd(r, Interest::READ, FdOptions::new(), s.h(Rearm::Rearm))
                .unwrap_err();
        assert_eq!(e.error, want);
        assert!(e.fd.is_some());
        assert_eq!(s.lp.usage().watchers, 0);
        assert!(!e.to_string().is_empty());
    }
    assert!(
        s.removed.lock().unwrap().is_empty(),
        "on_removed is only for registrations"
    );
}

#[test]
fn construction_failures_are_typed() {
    for call in [
        SimCall::EpollCreate,
        SimCall::TimerfdCreate,
        SimCall::EventfdCreate,
        SimCall::EpollCtlAdd,
    ] {
        let k = EpollSim::new();
        k.inject(call, Fault::once(Errno::MFILE));
        let e = Epoll::with_kernel(k.clone())
            .err()
            .expect("construction fails");
        assert_eq!(e.errno, Errno::MFILE, "{call:?}");
        assert!(Epoll::with_kernel(k).is_ok(), "a later attempt works");
    }
}

#[test]
fn sim_backend_absorbs_faults_the_same_way() {
    let sim = Sim::new();
    let lp = EventLoop::<H, Sim>::builder()
        .watchers(4)
        .build_with(sim.clone())
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let h = H {
        calls: calls.clone(),
        removed: Arc::default(),
        rearm: Rearm::Rearm,
        drain: None,
    };
    let (r, w) = sim.pipe().unwrap();
    let id = lp.add_fd(r, Interest::READ, FdOptions::new(), h).unwrap();
    sim.inject(SimCall::SimModifyFd, Fault::once(Errno::NOMEM));
    lp.disable(id).unwrap();
    sim.write(&w, 1).unwrap();
    assert_eq!(lp.poll(), 0);
    assert_eq!(lp.kernel_faults().count, 1);
    lp.enable(id).unwrap();
    assert_eq!(lp.poll(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let _ = w.as_fd();
}

// Platform difference: the wall clock of the machine cannot be stepped by a test, so the
// system-clock behaviour under steps is checked on the simulations only.
#[test]
fn system_clock_timers_follow_wall_clock_steps() {
    let sim = Sim::new();
    let lp = EventLoop::<H, Sim>::builder()
        .watchers(4)
        .build_with(sim.clone())
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let mk = || H {
        calls: calls.clone(),
        removed: Arc::default(),
        rearm: Rearm::Rearm,
        drain: None,
    };
    let t = lp
        .add_timer(Clock::System, Priority::DEFAULT, mk())
        .unwrap();
    let hour = Duration::from_secs(3600);
    let sys0 = lp.system_now();
    lp.arm_timer(t, Deadline::AtSystem(sys0 + hour), None)
        .unwrap();
    sim.set_system_time(sys0 - 24 * hour);
    sim.advance(hour + Duration::from_secs(1));
    assert_eq!(
        lp.poll(),
        0,
        "stepped back: the wall clock has not reached the deadline"
    );
    sim.set_system_time(sys0 + 2 * hour);
    assert_eq!(
        lp.poll(),
        1,
        "stepped forward past the deadline: fires at once"
    );
    // A relative arm is converted to wall-clock time when made: a later step moves it.
    let mono = lp
        .add_timer(Clock::Monotonic, Priority::DEFAULT, mk())
        .unwrap();
    lp.arm_timer(mono, Deadline::After(hour), None).unwrap();
    lp.arm_timer(t, Deadline::After(hour), None).unwrap();
    sim.set_system_time(lp.system_now() + 2 * hour);
    assert_eq!(lp.poll(), 1, "only the system-clock timer moved");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let _ = SystemTime::UNIX_EPOCH;
}

#[test]
fn epoll_sim_models_a_wall_clock_step_too() {
    let k = EpollSim::new();
    let lp = EventLoop::<H, Epoll<EpollSim>>::builder()
        .watchers(4)
        .build_with(Epoll::with_kernel(k.clone()).unwrap())
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let h = H {
        calls: calls.clone(),
        removed: Arc::default(),
        rearm: Rearm::Rearm,
        drain: None,
    };
    let t = lp.add_timer(Clock::System, Priority::DEFAULT, h).unwrap();
    let sys0 = lp.system_now();
    lp.arm_timer(
        t,
        Deadline::AtSystem(sys0 + Duration::from_secs(3600)),
        None,
    )
    .unwrap();
    assert_eq!(lp.poll(), 0);
    k.set_system_time(sys0 + Duration::from_secs(7200));
    assert_eq!(lp.poll(), 1);
}

#[test]
fn a_late_event_under_an_old_token_never_reaches_the_slots_next_occupant() {
    let s = setup();
    let (r1, w1) = s.k.pipe().unwrap();
    let old =
        s.lp.add_fd(r1, Interest::READ, FdOptions::new(), s.h(Rearm::Rearm))
            .unwrap();
    // The kernel answers EBADF ("already gone") but keeps the registration, as a kernel with a
    // duplicate of the fd elsewhere would: the loop frees the slot.
    s.k.inject(SimCall::EpollCtlDel, Fault::once(Errno::BADF));
    s.lp.remove(old).unwrap();
    let (r2, _w2) = s.k.pipe().unwrap();
    let other = Arc::new(AtomicUsize::new(0));
    let h = H {
        calls: other.clone(),
        removed: Arc::default(),
        rearm: Rearm::Rearm,
        drain: None,
    };
    let new =
        s.lp.add_fd(r2, Interest::READ, FdOptions::new(), h)
            .unwrap();
    assert_eq!(new.index(), old.index(), "the slot was reused");
    s.k.write(&w1, 1).unwrap();
    assert_eq!(s.lp.poll(), 0, "the old registration's event is dropped");
    assert_eq!(
        other.load(Ordering::SeqCst),
        0,
        "and never misrouted to the new watcher"
    );
}

#[test]
fn a_reserved_child_watch_falls_back_when_no_pidfd_can_be_had() {
    let s = setup();
    s.k.block_signal(dasynq::Signal::CHLD);
    let id =
        s.lp.reserve_child(Priority::DEFAULT, s.h(Rearm::Remove))
            .unwrap();
    let pid = s.k.spawn_child().unwrap();
    s.k.inject(SimCall::PidfdOpen, Fault::once(Errno::MFILE));
    s.lp.watch_child(id, pid)
        .expect("a reserved watch cannot fail for resources");
    assert_eq!(s.lp.usage().fallback_children, 1);
    s.k.exit_child(pid, dasynq::ChildStatus::Exited(9)).unwrap();
    assert_eq!(s.lp.run(), 1);
    assert_eq!(s.calls(), 1);
    assert_eq!(s.lp.usage().fallback_children, 0);
    assert_eq!(s.lp.usage().watchers, 0);
}

#[test]
fn a_failed_signal_mask_change_is_retried_and_loses_nothing() {
    let s = setup();
    let rt = dasynq::Signal::rt(0).unwrap();
    s.k.block_signal(rt);
    s.k.inject(SimCall::Signalfd, Fault::once(Errno::NOMEM));
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    s.lp.add_signal(
        rt,
        Priority::DEFAULT,
        H {
            calls: c,
            removed: Arc::default(),
            rearm: Rearm::Rearm,
            drain: None,
        },
    )
    .unwrap();
    assert_eq!(s.lp.kernel_faults().count, 1, "arming failed once");
    for v in 0..3 {
        s.k.raise(dasynq::SigInfo::new(rt).with_value(v)).unwrap();
    }
    for _ in 0..5 {
        s.lp.poll();
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "retried before the next wait; every instance delivered"
    );
}
