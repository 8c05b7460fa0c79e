//! Kernel errors inside operations that cannot fail: the loop absorbs them, keeps every
//! watcher's state exact, counts them in `kernel_faults()`, and retries the kernel change
//! before later waits. Faults come from the `Faulty` wrapper around a kernel, so the epoll
//! tests run twice: on the running Linux kernel (`Epoll<Faulty<LinuxEpoll>>`) and on the
//! simulated one (`Epoll<Faulty<EpollSim>>`); a few need virtual time or simulated processes
//! and run on the simulations only. A healthy kernel never fails these calls.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use dasynq::backend::Backend;
use dasynq::backend::epoll::EpollKernel;
use dasynq::backend::{Epoll, Kqueue};
use dasynq::sim::{EpollSim, Fault, FaultPlan, Faulty, KqueuePlatform, KqueueSim, Sim, SimCall};
use dasynq::{
    Clock, Cx, Deadline, Errno, Error, Event, EventLoop, FdOptions, Handler, Interest, Priority,
    Rearm, Removed, Signal,
};

#[path = "suite/portable.rs"]
mod portable;

/// A kernel under the epoll backend, and how the tests make fds and data on it.
trait Kernel: Clone + Send + Sync + 'static {
    type K: EpollKernel + Clone;
    fn new() -> Self;
    fn kernel(&self) -> Self::K;
    fn pipe(&self) -> (OwnedFd, OwnedFd);
    fn write(&self, fd: &OwnedFd);
    fn drain(&self, fd: BorrowedFd<'_>);
    /// How late a timer may fire here: virtual time is exact, a real machine is not.
    fn timer_slack(&self) -> Duration;
    /// The loop's monotonic time, in nanoseconds.
    fn now_ns(&self) -> u64;
}

#[cfg(dasynq_epoll)]
#[derive(Clone)]
struct RealKernel;

#[cfg(dasynq_epoll)]
impl Kernel for RealKernel {
    type K = dasynq::backend::epoll::LinuxEpoll;
    fn new() -> Self {
        RealKernel
    }
    fn kernel(&self) -> Self::K {
        dasynq::backend::epoll::LinuxEpoll
    }
    fn pipe(&self) -> (OwnedFd, OwnedFd) {
        portable::pipe()
    }
    fn write(&self, fd: &OwnedFd) {
        rustix::io::write(fd, b"x").expect("write");
    }
    fn drain(&self, fd: BorrowedFd<'_>) {
        let mut b = [0u8; 256];
        while matches!(rustix::io::read(fd, &mut b), Ok(n) if n > 0) {}
    }
    fn timer_slack(&self) -> Duration {
        // Generous: a loaded machine. What is checked is "never early, and not lost".
        Duration::from_secs(2)
    }
    fn now_ns(&self) -> u64 {
        self.kernel().clock_now(Clock::Monotonic)
    }
}

#[derive(Clone)]
struct SimKernel(EpollSim);

impl Kernel for SimKernel {
    type K = EpollSim;
    fn new() -> Self {
        SimKernel(EpollSim::new())
    }
    fn kernel(&self) -> EpollSim {
        self.0.clone()
    }
    fn pipe(&self) -> (OwnedFd, OwnedFd) {
        self.0.pipe().unwrap()
    }
    fn write(&self, fd: &OwnedFd) {
        self.0.write(fd, 1).unwrap();
    }
    fn drain(&self, fd: BorrowedFd<'_>) {
        let _ = self.0.read(&fd, u64::MAX);
    }
    fn timer_slack(&self) -> Duration {
        // One retry period (10 ms) and a little.
        Duration::from_millis(20)
    }
    fn now_ns(&self) -> u64 {
        self.0.now_ns(Clock::Monotonic)
    }
}

type Drain = Arc<dyn Fn(BorrowedFd<'_>) + Send + Sync>;

struct H {
    calls: Arc<AtomicUsize>,
    removed: Arc<Mutex<Vec<Option<OwnedFd>>>>,
    rearm: Rearm,
    drain: Option<Drain>,
}

impl Handler for H {
    type Data = ();
    fn on_event(&mut self, _cx: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
        if let (Some(d), Event::Fd { fd, .. }) = (&self.drain, ev) {
            d(fd);
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.rearm
    }
    fn on_removed(self, _cx: &Cx<'_, Self>, removed: Removed) {
        self.removed.lock().unwrap().push(removed.into_fd());
    }
}

fn plain(calls: &Arc<AtomicUsize>) -> H {
    H {
        calls: calls.clone(),
        removed: Arc::default(),
        rearm: Rearm::Rearm,
        drain: None,
    }
}

struct Setup<X: Kernel> {
    x: X,
    k: Faulty<X::K>,
    lp: EventLoop<H, Epoll<Faulty<X::K>>>,
    calls: Arc<AtomicUsize>,
    removed: Arc<Mutex<Vec<Option<OwnedFd>>>>,
}

fn setup<X: Kernel>() -> Setup<X> {
    let x = X::new();
    let k = Faulty::new(x.kernel());
    let lp = EventLoop::<H, Epoll<Faulty<X::K>>>::builder()
        .watchers(8)
        .build_with(Epoll::with_kernel(k.clone()).unwrap())
        .unwrap();
    Setup {
        x,
        k,
        lp,
        calls: Arc::default(),
        removed: Arc::default(),
    }
}

impl<X: Kernel> Setup<X> {
    fn h(&self, rearm: Rearm) -> H {
        let x = self.x.clone();
        H {
            calls: self.calls.clone(),
            removed: self.removed.clone(),
            rearm,
            drain: Some(Arc::new(move |fd| x.drain(fd))),
        }
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// Each test of the epoll backend, on the real kernel and on the simulated one.
macro_rules! on_both_kernels {
    ($($name:ident),* $(,)?) => {
        // The running kernel's epoll: Linux only (elsewhere the simulation stands alone).
        #[cfg(dasynq_epoll)]
        mod real_kernel {
            $(#[test] fn $name() { super::$name::<super::RealKernel>() })*
        }
        mod simulated_kernel {
            $(#[test] fn $name() { super::$name::<super::SimKernel>() })*
        }
    };
}

on_both_kernels!(
    disable_survives_a_failed_epoll_ctl_mod,
    an_interrupted_wait_never_replays_the_last_waits_events,
    a_wake_before_a_failed_wait_coalesces_with_the_queued_one,
    enable_is_retried_until_the_kernel_accepts_it,
    failed_deregistration_keeps_the_fd_until_a_retry_succeeds,
    timers_fire_on_time_while_the_timer_fd_refuses_to_arm,
    a_failing_wait_ends_the_run_early_and_is_counted,
    a_lost_wake_notification_is_still_delivered,
    registration_errors_are_typed_and_leak_nothing,
    construction_failures_are_typed,
    a_late_event_under_an_old_token_never_reaches_the_slots_next_occupant,
    an_event_that_names_nothing_registered_is_counted_and_dropped,
    an_unknown_errno_is_a_counted_fault,
    a_failed_rearm_after_a_threaded_handler_is_retried,
    a_failed_enable_from_another_thread_wakes_the_sleeping_runner_to_retry,
);

fn disable_survives_a_failed_epoll_ctl_mod<X: Kernel>() {
    let s = setup::<X>();
    let (r, w) = s.x.pipe();
    let id =
        s.lp.add_fd(r, Interest::READ, FdOptions::new(), s.h(Rearm::Rearm))
            .unwrap();
    s.x.write(&w);
    assert_eq!(s.lp.poll(), 1);
    s.k.inject(SimCall::EpollCtlMod, Fault::once(Errno::NOMEM));
    s.lp.disable(id).unwrap();
    let faults = s.lp.kernel_faults();
    assert_eq!(faults.count, 1);
    assert_eq!(faults.last.unwrap().call, "epoll_ctl(MOD)");
    s.x.write(&w);
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
fn an_interrupted_wait_never_replays_the_last_waits_events<X: Kernel>() {
    let s = setup::<X>();
    let (r, w) = s.x.pipe();
    s.lp.add_fd(r, Interest::READ, FdOptions::new(), s.h(Rearm::Rearm))
        .unwrap();
    s.x.write(&w);
    assert_eq!(s.lp.poll(), 1, "the handler drains the pipe");
    s.k.inject(SimCall::EpollWait, Fault::once(Errno::INTR));
    assert_eq!(s.lp.poll(), 0, "nothing new happened");
    assert_eq!(s.calls(), 1);
}

/// Found by the `epoll_backend` fuzz target: a failed wait skipped the wake list, so a wake
/// made before the run, for a watcher whose earlier wake was already queued, was taken in only
/// after that watcher ran: two calls for wakes that should have coalesced.
fn a_wake_before_a_failed_wait_coalesces_with_the_queued_one<X: Kernel>() {
    let s = setup::<X>();
    let (r, w) = s.x.pipe();
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
    s.x.write(&w);
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

fn enable_is_retried_until_the_kernel_accepts_it<X: Kernel>() {
    let s = setup::<X>();
    let (r, w) = s.x.pipe();
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
    s.x.write(&w);
    assert_eq!(s.lp.poll(), 0, "the kernel never got the enable");
    assert!(s.lp.kernel_faults().count >= 2, "retried before the wait");
    s.k.clear_faults();
    assert_eq!(s.lp.poll(), 1, "the retry before the next wait succeeds");
}

fn failed_deregistration_keeps_the_fd_until_a_retry_succeeds<X: Kernel>() {
    let s = setup::<X>();
    let (r, _w) = s.x.pipe();
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

fn timers_fire_on_time_while_the_timer_fd_refuses_to_arm<X: Kernel>() {
    let s = setup::<X>();
    let t =
        s.lp.add_timer(Clock::Monotonic, Priority::DEFAULT, s.h(Rearm::Remove))
            .unwrap();
    s.k.inject(SimCall::TimerfdSettime, Fault::always(Errno::NOMEM));
    let start = s.x.now_ns();
    s.lp.arm_timer(t, Deadline::After(Duration::from_millis(250)), None)
        .unwrap();
    // A plain blocking `run`: the loop must bound its own wait while the timer fd is out of
    // order, or this never returns.
    assert_eq!(s.lp.run(), 1);
    let waited = s.x.now_ns() - start;
    assert!(waited >= 250_000_000, "never early: {waited} ns");
    let slack = s.x.timer_slack().as_nanos() as u64;
    assert!(
        waited < 250_000_000 + slack,
        "late by at most a retry period (and the machine's noise): {waited} ns"
    );
    assert!(s.lp.kernel_faults().count > 0);
}

fn a_failing_wait_ends_the_run_early_and_is_counted<X: Kernel>() {
    let s = setup::<X>();
    let (r, w) = s.x.pipe();
    // Something registered, so that `run` waits (with nothing, it returns at once).
    s.lp.add_fd(r, Interest::READ, FdOptions::new(), s.h(Rearm::Rearm))
        .unwrap();
    s.k.inject(SimCall::EpollWait, Fault::once(Errno::BADF));
    assert_eq!(s.lp.run(), 0);
    assert_eq!(s.lp.kernel_faults().last.unwrap().call, "epoll_wait");
    s.x.write(&w);
    assert_eq!(s.lp.run(), 1, "the next run works");
}

fn a_lost_wake_notification_is_still_delivered<X: Kernel>() {
    let s = setup::<X>();
    let (_id, waker) = s.lp.add_wake(Priority::DEFAULT, s.h(Rearm::Rearm)).unwrap();
    s.k.inject(SimCall::EventfdWrite, Fault::once(Errno::AGAIN));
    waker.wake();
    assert_eq!(s.lp.poll(), 1, "the wake list is checked after every wait");
}

fn registration_errors_are_typed_and_leak_nothing<X: Kernel>() {
    let s = setup::<X>();
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
        let (r, _w) = s.x.pipe();
        s.k.inject(SimCall::EpollCtlAdd, Fault::once(errno));
        let e =
            s.lp.add_fd(r, Interest::READ, FdOptions::new(), s.h(Rearm::Rearm))
                .unwrap_err();
        assert_eq!(e.error(), want);
        assert!(e.fd().is_some());
        assert_eq!(s.lp.usage().watchers, 0);
        assert!(!e.to_string().is_empty());
    }
    assert!(
        s.removed.lock().unwrap().is_empty(),
        "on_removed is only for registrations"
    );
}

fn construction_failures_are_typed<X: Kernel>() {
    let x = X::new();
    for call in [
        SimCall::EpollCreate,
        SimCall::TimerfdCreate,
        SimCall::EventfdCreate,
        SimCall::EpollCtlAdd,
    ] {
        let k = Faulty::new(x.kernel());
        k.inject(call, Fault::once(Errno::MFILE));
        let e = Epoll::with_kernel(k.clone())
            .err()
            .expect("construction fails");
        assert_eq!(e.errno, Errno::MFILE, "{call:?}");
        assert!(Epoll::with_kernel(k).is_ok(), "a later attempt works");
    }
}

/// Bad input from the kernel: a wait that reports an event under a token the backend never
/// registered is counted as a fault, dropped, and reaches no watcher.
fn an_event_that_names_nothing_registered_is_counted_and_dropped<X: Kernel>() {
    let s = setup::<X>();
    let (r, w) = s.x.pipe();
    s.lp.add_fd(r, Interest::READ, FdOptions::new(), s.h(Rearm::Rearm))
        .unwrap();
    s.k.plan().garble_waits(1);
    s.x.write(&w);
    assert_eq!(s.lp.poll(), 1, "the real event still runs");
    assert_eq!(s.calls(), 1, "nothing misrouted");
    let f = s.lp.kernel_faults();
    assert_eq!(f.count, 1);
    assert_eq!(f.last.unwrap().errno, Errno::INVAL);
    assert_eq!(s.lp.poll(), 0);
}

/// Bad input from the kernel: an errno this crate has no name for, in an operation that
/// cannot fail, is a counted fault like any other, and the operation is retried.
fn an_unknown_errno_is_a_counted_fault<X: Kernel>() {
    let s = setup::<X>();
    let (r, w) = s.x.pipe();
    let id =
        s.lp.add_fd(r, Interest::READ, FdOptions::new(), s.h(Rearm::Rearm))
            .unwrap();
    let strange = Errno(4000);
    s.k.inject(SimCall::EpollCtlMod, Fault::once(strange));
    s.lp.disable(id).unwrap();
    let f = s.lp.kernel_faults();
    assert_eq!((f.count, f.last.unwrap().errno), (1, strange));
    assert!(
        f.last.unwrap().to_string().contains("4000"),
        "{}",
        f.last.unwrap()
    );
    s.x.write(&w);
    assert_eq!(s.lp.poll(), 0, "disabled, whatever the kernel said");
    s.lp.enable(id).unwrap();
    assert_eq!(s.lp.poll(), 1);
}

#[test]
fn sim_backend_absorbs_faults_the_same_way() {
    let sim = Sim::new();
    let faults = Faulty::new(sim.clone());
    let lp = EventLoop::<H, Faulty<Sim>>::builder()
        .watchers(4)
        .build_with(faults.clone())
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let h = plain(&calls);
    let (r, w) = sim.pipe().unwrap();
    let id = lp.add_fd(r, Interest::READ, FdOptions::new(), h).unwrap();
    faults.inject(SimCall::SimModifyFd, Fault::once(Errno::NOMEM));
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

fn a_late_event_under_an_old_token_never_reaches_the_slots_next_occupant<X: Kernel>() {
    let s = setup::<X>();
    let (r1, w1) = s.x.pipe();
    let old =
        s.lp.add_fd(r1, Interest::READ, FdOptions::new(), s.h(Rearm::Rearm))
            .unwrap();
    // The kernel answers EBADF ("already gone") but keeps the registration, as a kernel with a
    // duplicate of the fd elsewhere would: the loop frees the slot.
    s.k.inject(SimCall::EpollCtlDel, Fault::once(Errno::BADF));
    s.lp.remove(old).unwrap();
    let (r2, _w2) = s.x.pipe();
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
    s.x.write(&w1);
    assert_eq!(s.lp.poll(), 0, "the old registration's event is dropped");
    assert_eq!(
        other.load(Ordering::SeqCst),
        0,
        "and never misrouted to the new watcher"
    );
}

#[test]
fn a_reserved_child_watch_falls_back_when_no_pidfd_can_be_had() {
    let s = setup::<SimKernel>();
    s.x.0.block_signal(dasynq::Signal::CHLD);
    let id =
        s.lp.reserve_child(Priority::DEFAULT, s.h(Rearm::Remove))
            .unwrap();
    let pid = s.x.0.spawn_child().unwrap();
    s.k.inject(SimCall::PidfdOpen, Fault::once(Errno::MFILE));
    s.lp.watch_child(id, pid)
        .expect("a reserved watch cannot fail for resources");
    assert_eq!(s.lp.usage().fallback_children, 1);
    s.x.0
        .exit_child(pid, dasynq::ChildStatus::Exited(9))
        .unwrap();
    assert_eq!(s.lp.run(), 1);
    assert_eq!(s.calls(), 1);
    assert_eq!(s.lp.usage().fallback_children, 0);
    assert_eq!(s.lp.usage().watchers, 0);
}

#[test]
fn a_failed_signal_mask_change_is_retried_and_loses_nothing() {
    let s = setup::<SimKernel>();
    let rt = dasynq::Signal::rt(0).unwrap();
    s.x.0.block_signal(rt);
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
        s.x.0.raise(dasynq::SigInfo::new(rt).with_value(v)).unwrap();
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

/// Bad input from the kernel: a signal take that keeps failing with an errno nobody names
/// (the signalfd stays readable, kqueue's backend wants to look again) must not turn the loop
/// into a busy one: it is retried every 10 ms, counted each time, and the instance arrives
/// once the kernel recovers. In virtual time a busy loop would never reach the end of
/// `run_timeout`: the watchdog catches that.
fn a_signal_take_that_keeps_failing_is_retried_not_spun<B: Backend, X: Send + 'static>(
    name: &'static str,
    make: impl FnOnce() -> (dasynq::sim::SimWorld<X>, FaultPlan, B) + Send + 'static,
    signal: Signal,
) {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (world, faults, backend) = make();
        let lp = EventLoop::<H, B>::builder()
            .watchers(4)
            .build_with(backend)
            .unwrap();
        world.block_signal(signal);
        let calls = Arc::new(AtomicUsize::new(0));
        lp.add_signal(signal, Priority::DEFAULT, plain(&calls))
            .unwrap();
        faults.inject(SimCall::SignalfdRead, Fault::always(Errno(4000)));
        world.raise(dasynq::SigInfo::new(signal)).unwrap();
        assert_eq!(lp.run_timeout(Duration::from_secs(1)), 0, "{name}");
        let failed = lp.kernel_faults().count;
        // About one failed take per 10 ms retry (each also re-arms the signals).
        assert!(
            (50..=400).contains(&failed),
            "{name}: {failed} faults in 1 s"
        );
        faults.clear();
        assert_eq!(
            lp.run_timeout(Duration::from_secs(1)),
            1,
            "{name}: delivered"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{name}: the loop spun (virtual time stood still)"));
}

#[test]
fn a_signal_take_that_keeps_failing_is_retried_not_spun_on_every_simulation() {
    let rt = Signal::rt(0).unwrap();
    a_signal_take_that_keeps_failing_is_retried_not_spun(
        "epoll over EpollSim",
        || {
            let k = EpollSim::new();
            let f = Faulty::new(k.clone());
            (k, f.plan().clone(), Epoll::with_kernel(f).unwrap())
        },
        rt,
    );
    a_signal_take_that_keeps_failing_is_retried_not_spun(
        "Sim",
        || {
            let k = Sim::new();
            let f = Faulty::new(k.clone());
            (k, f.plan().clone(), f)
        },
        rt,
    );
    for p in KqueuePlatform::ALL {
        let sig = if matches!(p, KqueuePlatform::MacOs | KqueuePlatform::OpenBsd) {
            Signal::USR1
        } else {
            rt
        };
        a_signal_take_that_keeps_failing_is_retried_not_spun(
            "kqueue over KqueueSim",
            move || {
                let k = KqueueSim::for_platform(p);
                let f = Faulty::new(k.clone());
                (k, f.plan().clone(), Kqueue::with_kernel(f).unwrap())
            },
            sig,
        );
    }
}

/// Threaded loops re-arm a one-shot fd after its handler on the dispatching thread, without
/// the lock. When that `EPOLL_CTL_MOD` fails, the failure is counted, the watcher is listed
/// for a retry, and the retry before the next wait re-arms it: no event is lost.
fn a_failed_rearm_after_a_threaded_handler_is_retried<X: Kernel>() {
    let x = X::new();
    let k = Faulty::new(x.kernel());
    let lp = EventLoop::<H, Epoll<Faulty<X::K>>, dasynq::Threaded>::builder()
        .watchers(8)
        .runners(1)
        .build_with(Epoll::with_kernel(k.clone()).unwrap())
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (r, w) = x.pipe();
    let x2 = x.clone();
    let h = H {
        calls: calls.clone(),
        removed: Arc::default(),
        rearm: Rearm::Rearm,
        drain: Some(Arc::new(move |fd| x2.drain(fd))),
    };
    lp.add_fd(r, Interest::READ, FdOptions::new(), h).unwrap();
    x.write(&w);
    // The re-arm after this handler fails (one-shot: the fd stays disarmed meanwhile).
    k.inject(SimCall::EpollCtlMod, Fault::once(Errno::NOMEM));
    assert_eq!(lp.poll(), 1);
    assert_eq!(lp.kernel_faults().count, 1, "the failed re-arm is counted");
    x.write(&w);
    // The retry before the next wait re-arms it; the new byte is then reported.
    let t = std::time::Instant::now();
    while calls.load(Ordering::SeqCst) < 2 {
        assert!(t.elapsed() < Duration::from_secs(5), "the event was lost");
        lp.poll();
    }
    assert_eq!(lp.kernel_faults().count, 1);
}

/// A change made from another thread fails while the only runner sleeps in plain `run()`
/// with no deadline: the runner is woken to retry it (bounded by the retry interval), rather
/// than sleeping on with the change undone.
fn a_failed_enable_from_another_thread_wakes_the_sleeping_runner_to_retry<X: Kernel>() {
    let x = X::new();
    let k = Faulty::new(x.kernel());
    let lp = std::sync::Arc::new(
        EventLoop::<H, Epoll<Faulty<X::K>>, dasynq::Threaded>::builder()
            .watchers(8)
            .runners(2)
            .build_with(Epoll::with_kernel(k.clone()).unwrap())
            .unwrap(),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let (r, w) = x.pipe();
    let x2 = x.clone();
    let h = H {
        calls: calls.clone(),
        removed: Arc::default(),
        rearm: Rearm::Disarm,
        drain: Some(Arc::new(move |fd| x2.drain(fd))),
    };
    let id = lp
        .add_fd(r, Interest::READ, FdOptions::new().disabled(), h)
        .unwrap();
    x.write(&w);
    let runner = {
        let lp = lp.clone();
        std::thread::spawn(move || lp.run())
    };
    std::thread::sleep(Duration::from_millis(30));
    k.inject(SimCall::EpollCtlMod, Fault::once(Errno::NOMEM));
    lp.enable(id).unwrap();
    let t = std::time::Instant::now();
    while !runner.is_finished() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the runner slept on with the enable undone"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(runner.join().unwrap(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A threaded loop whose reading is blocked for room stalls (disarms) the signal watchers
/// holding instances. If the kernel refuses that mask change, the stalled signals stay counted
/// as armed until the retry: stalling them again changes nothing, and the take must give up
/// rather than look again for ever under the lock (a first version did). Room 0, a mask
/// change that keeps failing, three instances: the loop is not stuck, counts the faults, and
/// delivers all three once the kernel recovers.
#[test]
fn a_refused_stall_of_a_threaded_signal_watcher_is_not_spun_on() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let k = EpollSim::new();
        let f = Faulty::new(k.clone());
        let lp = EventLoop::<H, Epoll<Faulty<EpollSim>>, dasynq::Threaded>::builder()
            .watchers(4)
            .runners(2)
            .signal_instances(0)
            .build_with(Epoll::with_kernel(f.clone()).unwrap())
            .unwrap();
        let rt = Signal::rt(0).unwrap();
        k.block_signal(rt);
        let calls = Arc::new(AtomicUsize::new(0));
        lp.add_signal(rt, Priority::DEFAULT, plain(&calls)).unwrap();
        for v in 0..3 {
            k.raise(dasynq::SigInfo::new(rt).with_value(v)).unwrap();
        }
        f.plan()
            .inject(SimCall::Signalfd, Fault::always(Errno::NOMEM));
        for _ in 0..5 {
            lp.run_timeout(Duration::from_millis(50));
        }
        assert!(
            lp.kernel_faults().count > 0,
            "the refused changes are counted"
        );
        f.plan().clear();
        let start = std::time::Instant::now();
        while calls.load(Ordering::SeqCst) < 3 && start.elapsed() < Duration::from_secs(10) {
            lp.run_timeout(Duration::from_millis(50));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3, "every instance, once");
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(30))
        .expect("the loop spun under its lock (or lost an instance)");
}
