//! The kqueue translation itself, against the simulated kqueue kernel of each platform
//! profile: how registration errors inside a batched `kevent` are attributed, that an fd
//! number reused after a removal registers cleanly, that disabling never loses a pending EOF,
//! the wake channel's fallback, and system-clock timers (absolute or re-checked).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dasynq::backend::Kqueue;
use dasynq::sim::{Fault, Faulty, KqueuePlatform, KqueueSim, SimCall};
use dasynq::{
    Clock, Cx, Deadline, Errno, Error, Event, EventLoop, FdOptions, Flavor, Handler, Interest,
    Priority, Readiness, Rearm, Removed, SigInfo, Signal, Single, Threaded, WatchId,
};

const PLATFORMS: [KqueuePlatform; 5] = [
    KqueuePlatform::FreeBsd,
    KqueuePlatform::NetBsd,
    KqueuePlatform::DragonFly,
    KqueuePlatform::OpenBsd,
    KqueuePlatform::MacOs,
];

/// Records what it saw; drains fds it is told about.
#[derive(Clone)]
struct Rec {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    sim: KqueueSim,
    rearm: Rearm,
    removed: Arc<AtomicUsize>,
    /// A watcher this handler disables when it runs.
    disable: Arc<Mutex<Option<WatchId>>>,
}

impl Handler for Rec {
    type Data = ();
    fn on_event(&mut self, cx: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
        if let Some(t) = *self.disable.lock().unwrap() {
            cx.disable(t).unwrap();
        }
        let line = match ev {
            Event::Fd { fd, ready } => {
                let _ = self.sim.read(&fd.as_raw_fd(), u64::MAX);
                format!("{}:{ready:?}", self.name)
            }
            Event::Timer { .. } => format!("{}:timer", self.name),
            Event::Signal(info) if info.value_int() != 0 => {
                format!("{}:value {}", self.name, info.value_int())
            }
            _ => format!("{}:other", self.name),
        };
        self.log.lock().unwrap().push(line);
        self.rearm
    }
    fn on_removed(self, _cx: &Cx<'_, Self>, _removed: Removed) {
        self.removed.fetch_add(1, Ordering::SeqCst);
    }
}

struct Setup<F: Flavor> {
    sim: KqueueSim,
    faults: Faulty<KqueueSim>,
    lp: EventLoop<Rec, Kqueue<Faulty<KqueueSim>>, F>,
    log: Arc<Mutex<Vec<String>>>,
    removed: Arc<AtomicUsize>,
}

fn setup<F: Flavor>(platform: KqueuePlatform) -> Setup<F> {
    setup_with_room(platform, 32)
}

/// `setup` with room for `room` signal instances beyond one per watcher.
fn setup_with_room<F: Flavor>(platform: KqueuePlatform, room: usize) -> Setup<F> {
    let sim = KqueueSim::for_platform(platform);
    let faults = Faulty::new(sim.clone());
    let lp = EventLoop::<Rec, Kqueue<Faulty<KqueueSim>>, F>::builder()
        .watchers(8)
        .timers(2)
        .signal_instances(room)
        .build_with(Kqueue::with_kernel(faults.clone()).unwrap())
        .unwrap();
    Setup {
        sim,
        faults,
        lp,
        log: Arc::default(),
        removed: Arc::default(),
    }
}

impl<F: Flavor> Setup<F> {
    fn rec(&self, name: &'static str, rearm: Rearm) -> Rec {
        Rec {
            name,
            log: self.log.clone(),
            sim: self.sim.clone(),
            rearm,
            removed: self.removed.clone(),
            disable: Arc::default(),
        }
    }
    /// Watch `fd` for reading with default options.
    fn watch(&self, fd: OwnedFd, name: &'static str, rearm: Rearm) -> WatchId {
        self.lp
            .add_fd(fd, Interest::READ, FdOptions::new(), self.rec(name, rearm))
            .unwrap()
    }
    /// Block `sig` in the simulated process and watch it.
    fn watch_signal(&self, sig: Signal, name: &'static str) -> WatchId {
        self.sim.block_signal(sig);
        self.lp
            .add_signal(sig, Priority::DEFAULT, self.rec(name, Rearm::Rearm))
            .unwrap()
    }
    fn take(&self) -> Vec<String> {
        core::mem::take(&mut *self.log.lock().unwrap())
    }
    /// Knotes besides the wake channel's (an `EVFILT_USER` knote, or the wake pipe's read
    /// knote) after the simulation dropped those of closed fds.
    fn knotes(&self) -> usize {
        self.lp.poll();
        self.sim.knotes_total() - 1
    }
}

#[test]
fn a_failing_add_in_a_batch_is_reported_to_its_watcher_and_leaves_the_others() {
    for platform in PLATFORMS {
        // The failing change first, then second, in the read+write batch of one registration.
        for nth in [0, 1] {
            let s = setup::<Single>(platform);
            let (r1, w1) = s.sim.pipe().unwrap();
            let a = s.watch(r1, "a", Rearm::Rearm);
            let (sock, peer) = s.sim.socketpair().unwrap();
            let sock_raw = sock.as_raw_fd();
            s.faults
                .inject(SimCall::KnoteAdd, Fault::nth(nth, Errno::NOMEM));
            let err =
                s.lp.add_fd(
                    sock,
                    Interest::BOTH,
                    FdOptions::new(),
                    s.rec("b", Rearm::Rearm),
                )
                .unwrap_err();
            assert!(
                matches!(err.error(), Error::Kernel { errno, .. } if errno == Errno::NOMEM),
                "{platform:?}/{nth}: the failing change's errno reaches the registration: {:?}",
                err.error()
            );
            let back = err.into_fd().expect("the fd is handed back");
            assert_eq!(back.as_raw_fd(), sock_raw);
            assert_eq!(s.lp.usage().watchers, 1, "{platform:?}: nothing leaked");
            assert_eq!(
                s.knotes(),
                1,
                "{platform:?}/{nth}: the half that got in was taken out again; a's stays"
            );
            // The refused fd's readiness reaches nobody; the other watcher still works.
            s.sim.write(&peer, 1).unwrap();
            s.sim.write(&w1, 1).unwrap();
            assert_eq!(s.lp.poll(), 1);
            assert_eq!(s.take(), vec!["a:READABLE"], "{platform:?}/{nth}");
            // The same fd registers once the kernel has memory again.
            let b =
                s.lp.add_fd(
                    back,
                    Interest::BOTH,
                    FdOptions::new(),
                    s.rec("b", Rearm::Rearm),
                )
                .unwrap();
            assert_eq!(s.knotes(), 3, "{platform:?}: a's read, b's read and write");
            assert!(s.lp.contains(a) && s.lp.contains(b));
        }
    }
}

#[test]
fn a_failing_enable_is_absorbed_and_retried_for_that_watcher_only() {
    for platform in PLATFORMS {
        let s = setup::<Single>(platform);
        let (r1, w1) = s.sim.pipe().unwrap();
        let (r2, w2) = s.sim.pipe().unwrap();
        let opts = FdOptions::new().disabled();
        s.watch(r1, "a", Rearm::Rearm);
        let b =
            s.lp.add_fd(r2, Interest::READ, opts, s.rec("b", Rearm::Rearm))
                .unwrap();
        s.faults
            .inject(SimCall::KnoteAdd, Fault::once(Errno::NOMEM));
        s.lp.enable(b).unwrap();
        assert_eq!(s.lp.kernel_faults().count, 1, "{platform:?}");
        s.sim.write(&w1, 1).unwrap();
        s.sim.write(&w2, 1).unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            s.lp.poll();
            got.extend(s.take());
        }
        got.sort();
        assert_eq!(
            got,
            vec!["a:READABLE", "b:READABLE"],
            "{platform:?}: the enable was retried; nothing misrouted"
        );
    }
}

#[test]
fn a_removed_fds_reused_number_registers_cleanly() {
    for platform in PLATFORMS {
        // Other tests in this process open fds too: try until the number is reused here.
        let mut reused = false;
        for _ in 0..20 {
            let s = setup::<Single>(platform);
            let (r1, w1) = s.sim.pipe().unwrap();
            let n = r1.as_raw_fd();
            let old = s.watch(r1, "old", Rearm::Rearm);
            s.lp.remove(old).unwrap();
            assert_eq!(s.removed.load(Ordering::SeqCst), 1);
            // The handler dropped the fd it was handed back: the number is free again.
            drop(w1);
            let (r2, w2) = s.sim.pipe().unwrap();
            if r2.as_raw_fd() != n {
                continue;
            }
            reused = true;
            let new =
                s.lp.add_fd(
                    r2,
                    Interest::READ,
                    FdOptions::new(),
                    s.rec("new", Rearm::Rearm),
                )
                .expect("no 'already exists' for a reused number");
            assert_eq!(s.knotes(), 1, "{platform:?}: one knote, not two");
            s.sim.write(&w2, 1).unwrap();
            assert_eq!(s.lp.poll(), 1);
            assert_eq!(s.take(), vec!["new:READABLE"]);
            assert!(s.lp.contains(new) && !s.lp.contains(old));
            break;
        }
        assert!(reused, "{platform:?}: the fd number was never reused");
    }
}

#[test]
fn a_reused_number_of_an_fd_closed_behind_the_loops_back_is_not_a_duplicate() {
    // The kernel dropped the knotes when the file was closed (kqueue(2): "closing a file
    // descriptor removes its knotes"); the loop's EV_DELETE then finds nothing (ENOENT), which
    // is the state wanted, not a fault.
    for platform in PLATFORMS {
        let s = setup::<Single>(platform);
        let (r1, _w1) = s.sim.pipe().unwrap();
        let raw = r1.as_raw_fd();
        let old = s.watch(r1, "old", Rearm::Rearm);
        s.sim.close(&raw);
        s.lp.remove(old).unwrap();
        assert_eq!(
            s.lp.kernel_faults().count,
            0,
            "{platform:?}: ENOENT on delete is fine"
        );
        assert_eq!(s.knotes(), 0);
    }
}

#[test]
fn disabling_never_loses_a_pending_eof() {
    fn run<F: Flavor>(platform: KqueuePlatform, rearm: Rearm) {
        let s = setup::<F>(platform);
        let (r, w) = s.sim.pipe().unwrap();
        let id =
            s.lp.add_fd(r, Interest::READ, FdOptions::new(), s.rec("r", rearm))
                .unwrap();
        // 1. EOF while the watcher is disabled, before any wait saw it.
        s.lp.disable(id).unwrap();
        s.sim.write(&w, 1).unwrap();
        s.sim.close(&w);
        drop(w);
        for _ in 0..3 {
            assert_eq!(s.lp.poll(), 0, "{platform:?}: disabled");
        }
        s.lp.enable(id).unwrap();
        assert_eq!(s.lp.poll(), 1, "{platform:?}");
        let got = s.take();
        assert!(
            got[0].contains("READ_CLOSED") || got[0].contains("HANGUP"),
            "{platform:?}: {got:?}"
        );
        // 2. With the EOF still there (it is a state, not an edge): disable after it was
        // delivered, enable, and it is reported again.
        s.lp.enable(id).unwrap();
        s.lp.disable(id).unwrap();
        assert_eq!(s.lp.poll(), 0);
        s.lp.enable(id).unwrap();
        assert_eq!(s.lp.poll(), 1, "{platform:?}: the EOF is still reported");
        let _ = s.take();
    }
    for platform in PLATFORMS {
        run::<Single>(platform, Rearm::Disarm);
        run::<Threaded>(platform, Rearm::Disarm);
    }
}

#[test]
fn an_eof_taken_from_the_kernel_then_disabled_before_it_runs_is_delivered_on_enable() {
    // Both events come out of one kevent; the first handler disables the second watcher
    // before it runs. The loop keeps the collected EOF and delivers it on enable.
    fn run<F: Flavor>(platform: KqueuePlatform) {
        let s = setup::<F>(platform);
        let (r1, w1) = s.sim.pipe().unwrap();
        let (r2, w2) = s.sim.pipe().unwrap();
        let first = s.rec("first", Rearm::Rearm);
        let target = first.disable.clone();
        let hi = FdOptions::new().priority(Priority(-10));
        s.lp.add_fd(r1, Interest::READ, hi, first).unwrap();
        let second = s.watch(r2, "second", Rearm::Rearm);
        *target.lock().unwrap() = Some(second);
        s.sim.write(&w1, 1).unwrap();
        s.sim.close(&w2);
        drop(w2);
        assert_eq!(s.lp.poll(), 1, "{platform:?}: only the first ran");
        *target.lock().unwrap() = None;
        for _ in 0..3 {
            s.lp.poll();
        }
        assert_eq!(s.take(), vec!["first:READABLE"]);
        s.lp.enable(second).unwrap();
        assert_eq!(s.lp.poll(), 1, "{platform:?}");
        let got = s.take();
        assert!(got[0].starts_with("second:"), "{got:?}");
        assert!(got[0].contains("READ_CLOSED"), "{platform:?}: {got:?}");
        drop(w1);
    }
    for platform in PLATFORMS {
        run::<Single>(platform);
        run::<Threaded>(platform);
    }
}

#[test]
fn the_wake_channel_falls_back_to_a_pipe_where_evfilt_user_is_refused() {
    let sim = KqueueSim::for_platform(KqueuePlatform::NetBsd);
    let faults = Faulty::new(sim.clone());
    // The first EV_ADD is the wake channel's EVFILT_USER: a kernel without the filter
    // refuses it with EINVAL.
    faults.inject(SimCall::KnoteAdd, Fault::once(Errno::INVAL));
    let backend = Kqueue::with_kernel(faults.clone()).expect("falls back instead of failing");
    let lp = EventLoop::<Rec, Kqueue<Faulty<KqueueSim>>>::builder()
        .wakers(1)
        .build_with(backend)
        .unwrap();
    let s = Setup {
        sim: sim.clone(),
        faults,
        lp,
        log: Arc::default(),
        removed: Arc::default(),
    };
    let (_, waker) =
        s.lp.add_wake(Priority::DEFAULT, s.rec("w", Rearm::Rearm))
            .unwrap();
    assert_eq!(s.sim.knotes_total(), 1, "the wake pipe's read knote");
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        waker.wake();
    });
    // Virtual time does not pass by itself: this wait ends only through the pipe.
    assert_eq!(s.lp.run(), 1);
    t.join().unwrap();
    assert_eq!(s.take(), vec!["w:other"]);
}

#[test]
fn system_clock_timers_follow_wall_clock_steps_on_every_profile() {
    for platform in PLATFORMS {
        let s = setup::<Single>(platform);
        let t =
            s.lp.add_timer(Clock::System, Priority::DEFAULT, s.rec("t", Rearm::Rearm))
                .unwrap();
        let hour = Duration::from_secs(3600);
        let sys0 = s.lp.system_now();
        s.lp.arm_timer(t, Deadline::AtSystem(sys0 + hour), None)
            .unwrap();
        // Stepped back a day: an hour of monotonic time later, the wall clock is still short.
        s.sim.set_system_time(sys0 - 24 * hour);
        s.sim.advance(hour + Duration::from_secs(1));
        assert_eq!(s.lp.poll(), 0, "{platform:?}");
        // Stepped forward past the deadline: noticed within the one-second re-check.
        s.sim.set_system_time(sys0 + 2 * hour);
        let before = s.lp.now();
        assert_eq!(s.lp.run(), 1, "{platform:?}");
        assert!(
            s.lp.now() - before <= Duration::from_secs(1),
            "{platform:?}: within a second of monotonic time"
        );
        // A deadline within the last second: handed over as it is where the kernel takes
        // absolute timers, and exact everywhere.
        let now = s.lp.system_now();
        s.lp.arm_timer(
            t,
            Deadline::AtSystem(now + Duration::from_millis(250)),
            None,
        )
        .unwrap();
        let start = s.lp.now();
        assert_eq!(s.lp.run(), 1);
        let took = s.lp.now() - start;
        assert!(
            took >= Duration::from_millis(250) && took <= Duration::from_millis(251),
            "{platform:?}: {took:?}"
        );
        assert_eq!(s.take(), vec!["t:timer", "t:timer"]);
    }
}

#[test]
fn regular_files_are_emulated_as_always_ready_on_every_profile() {
    for platform in PLATFORMS {
        let s = setup::<Single>(platform);
        let f: OwnedFd = s.sim.regular_file().unwrap();
        let id = s.watch(f, "f", Rearm::Noop);
        assert_eq!(
            s.sim.knotes_total(),
            1,
            "{platform:?}: only the wake channel's knote"
        );
        assert_eq!(s.lp.poll(), 1);
        assert_eq!(s.take(), vec![format!("f:{:?}", Readiness::READABLE)]);
        assert_eq!(s.lp.poll(), 0, "Noop leaves it disabled");
        s.lp.enable(id).unwrap();
        assert_eq!(s.lp.poll(), 1);
    }
}

#[test]
fn a_pipe_hung_up_before_a_disabled_registration_reports_on_enable() {
    for platform in PLATFORMS {
        let s = setup::<Single>(platform);
        let (r, w) = s.sim.pipe().unwrap();
        s.sim.close(&w);
        drop(w);
        let id =
            s.lp.add_fd(
                r,
                Interest::READ,
                FdOptions::new().disabled(),
                s.rec("r", Rearm::Disarm),
            )
            .unwrap();
        assert_eq!(s.lp.poll(), 0);
        s.lp.disable(id).unwrap();
        s.lp.enable(id).unwrap();
        assert_eq!(s.lp.poll(), 1, "{platform:?}");
    }
}

/// Found by the `kqueue_backend` fuzz target: one signal-set change that added a signal (refused)
/// and deleted another (done) left the backend believing the deleted one still armed, so it was
/// never added again and an instance sent meanwhile stayed in the kernel for good.
#[test]
fn a_signal_deletion_that_went_through_beside_a_refused_add_is_not_forgotten() {
    for platform in PLATFORMS {
        let s = setup::<Single>(platform);
        let a = s.watch_signal(Signal::USR1, "a");
        assert_eq!(s.lp.poll(), 0, "{platform:?}: nothing pending yet");
        s.faults
            .inject(SimCall::KnoteAdd, Fault::always(Errno::AGAIN));
        // b's EVFILT_SIGNAL is refused: the change is kept for a retry.
        let b = s.watch_signal(Signal::USR2, "b");
        // One change: add USR2 (refused again) and delete USR1 (done).
        s.lp.disable(a).unwrap();
        s.sim.raise(SigInfo::new(Signal::USR1)).unwrap();
        s.lp.enable(a).unwrap();
        // Only USR1 is wanted now; the kernel must be asked to add it back.
        s.lp.remove(b).unwrap();
        s.faults.clear_faults();
        assert_eq!(
            s.lp.poll(),
            1,
            "{platform:?}: the USR1 sent while a was disabled"
        );
        assert_eq!(s.take(), vec!["a:other"], "{platform:?}");
        assert_eq!(
            s.sim.pending_signals(),
            0,
            "{platform:?}: taken from the kernel"
        );
    }
}

/// Found by the `kqueue_backend` fuzz target: while a signal-set change kept failing part-way,
/// the loop believed no signal armed, so it read every queued instance of the one the kernel
/// had taken; all but the first found their watcher holding one already and were dropped.
/// With room for one instance per watcher (as when it was found), each poll delivers one;
/// with room for more, the first poll delivers all three.
#[test]
fn instances_read_while_a_signal_change_half_failed_are_never_dropped() {
    for (platform, room) in [
        (KqueuePlatform::FreeBsd, 0),
        (KqueuePlatform::NetBsd, 0),
        (KqueuePlatform::DragonFly, 0),
        (KqueuePlatform::FreeBsd, 32),
        (KqueuePlatform::NetBsd, 1),
    ] {
        let (rt0, rt1) = (Signal::rt(0).unwrap(), Signal::rt(1).unwrap());
        let s = setup_with_room::<Single>(platform, room);
        assert_eq!(s.lp.poll(), 0);
        s.faults
            .inject(SimCall::KnoteAdd, Fault::always(Errno::AGAIN));
        s.watch_signal(rt0, "a");
        for v in 1..=3 {
            s.sim.raise(SigInfo::new(rt0).with_value(v)).unwrap();
        }
        s.watch_signal(rt1, "b");
        // From the retry before the next wait on, rt0's EVFILT_SIGNAL gets in, rt1's never.
        s.faults.clear_faults();
        s.faults.inject(
            SimCall::KnoteAdd,
            Fault {
                errno: Errno::AGAIN,
                skip: 1,
                times: u32::MAX,
            },
        );
        let first = s.lp.poll();
        assert_eq!(
            first,
            (room + 1).min(3),
            "{platform:?}: as many as it holds"
        );
        s.faults.clear_faults();
        let mut ran = first;
        for _ in 0..10 {
            ran += s.lp.poll();
        }
        assert_eq!(ran, 3, "{platform:?}: one call per instance");
        assert_eq!(
            s.take(),
            vec!["a:value 1", "a:value 2", "a:value 3"],
            "{platform:?}"
        );
        assert_eq!(s.sim.pending_signals(), 0, "{platform:?}");
    }
}

/// Found by the `kqueue_backend` fuzz target: enabling both halves of a bidirectional watcher
/// got the read filter in and failed on the write filter; the loop kept believing neither was
/// enabled, so disabling both again sent nothing, and a hang-up then made the enabled read
/// filter report forever (`run_timeout` spun on the simulation).
#[test]
fn a_half_failed_fd_change_is_never_taken_as_done() {
    for platform in PLATFORMS {
        let s = setup::<Single>(platform);
        let (sock, peer) = s.sim.socketpair().unwrap();
        let raw = sock.as_raw_fd();
        let id =
            s.lp.add_bidi(
                sock,
                dasynq::BidiOptions::new().enabled(false, false),
                s.rec("b", Rearm::Rearm),
            )
            .unwrap();
        assert_eq!(s.sim.enabled_fd_knotes(&raw), 0, "{platform:?}");
        // Enable both halves: the read filter's change goes in, the write filter's fails.
        s.faults
            .inject(SimCall::KnoteAdd, Fault::nth(1, Errno::NOMEM));
        s.lp.enable(id).unwrap();
        assert!(
            s.lp.kernel_faults().count > 0,
            "{platform:?}: the change failed"
        );
        s.lp.disable(id).unwrap();
        assert_eq!(
            s.sim.enabled_fd_knotes(&raw),
            0,
            "{platform:?}: disabling took back the half that got in"
        );
        s.sim.close(&peer);
        s.lp.run_timeout(Duration::from_millis(5));
        assert!(
            s.take().is_empty(),
            "{platform:?}: nothing for a disabled watcher"
        );
        s.lp.enable(id).unwrap();
        assert_eq!(
            s.lp.poll(),
            2,
            "{platform:?}: both halves see the hang-up on enable"
        );
    }
}

/// Found by the `kqueue_backend` fuzz target: a registration whose write filter was refused
/// took its read filter back with a delete the kernel also refused, and still reported the
/// registration as refused; the read filter stayed in the kernel, reporting forever under the
/// token of a slot already freed. Now the registration stands and is completed by a retry.
#[test]
fn a_registration_that_cannot_be_taken_back_stands_and_is_completed() {
    for platform in PLATFORMS {
        if platform == KqueuePlatform::OpenBsd {
            // No EV_RECEIPT there: one kevent call per change, so the fault plan differs; the
            // other profiles cover the path.
            continue;
        }
        let s = setup::<Single>(platform);
        let (sock, peer) = s.sim.socketpair().unwrap();
        let raw = sock.as_raw_fd();
        // The batch (call 0) gets the read filter in and has the write filter refused; the
        // delete that would take the read filter back (call 1) is refused too.
        s.faults
            .inject(SimCall::KnoteAdd, Fault::nth(1, Errno::NOMEM));
        s.faults
            .inject(SimCall::KeventChange, Fault::nth(1, Errno::INTR));
        let id =
            s.lp.add_fd(
                sock,
                Interest::BOTH,
                FdOptions::new(),
                s.rec("b", Rearm::Rearm),
            )
            .expect("the registration stands");
        assert!(s.lp.kernel_faults().count > 0, "{platform:?}: counted");
        s.sim.write(&peer, 1).unwrap();
        assert!(s.lp.poll() >= 1, "{platform:?}: the watcher runs");
        assert_eq!(
            s.sim.enabled_fd_knotes(&raw),
            2,
            "{platform:?}: the retry completed the registration"
        );
        let seen = s.take().join(" ");
        assert!(seen.contains("WRITABLE"), "{platform:?}: {seen}");
        s.lp.remove(id).unwrap();
        assert_eq!(s.sim.enabled_fd_knotes(&raw), 0, "{platform:?}");
    }
}

/// Found by the `kqueue_backend` fuzz target: an EVFILT_SIGNAL report that came while reading
/// was blocked (a removed watcher's signal still armed, its deletion refused) was used up
/// without a take, and kqueue reports a delivery once: once the deletion went through, the
/// instance stayed in the kernel for good.
#[test]
fn a_signal_reported_while_reading_was_blocked_is_taken_once_it_is_not() {
    for platform in PLATFORMS {
        let s = setup::<Single>(platform);
        let a = s.watch_signal(Signal::USR1, "a");
        s.watch_signal(Signal::USR2, "b");
        assert_eq!(s.lp.poll(), 0, "{platform:?}: nothing pending yet");
        // a goes, but the kernel refuses to delete its EVFILT_SIGNAL: USR1 stays armed with no
        // watcher, so no instance may be read until the deletion goes through.
        s.faults
            .inject(SimCall::KeventChange, Fault::always(Errno::AGAIN));
        s.lp.remove(a).unwrap();
        s.sim.raise(SigInfo::new(Signal::USR2)).unwrap();
        assert_eq!(s.lp.poll(), 0, "{platform:?}: reading is blocked");
        s.faults.clear_faults();
        let mut ran = 0;
        for _ in 0..4 {
            ran += s.lp.poll();
        }
        assert_eq!(
            ran, 1,
            "{platform:?}: b gets the USR2 reported while blocked"
        );
        assert_eq!(s.take(), vec!["b:other"], "{platform:?}");
        assert_eq!(s.sim.pending_signals(), 0, "{platform:?}");
    }
}

/// Bad input from a kqueue kernel, on every profile (each speaking its own numbers): an
/// errno no name has (it crosses the translation as it is) is a counted fault and the change
/// is retried; an event whose filter does not decode is counted and dropped, never routed to
/// a watcher.
#[test]
fn bad_kernel_input_is_counted_never_misrouted() {
    for platform in PLATFORMS {
        let s = setup::<Single>(platform);
        let (r, w) = s.sim.pipe().unwrap();
        let id = s.watch(r, "r", Rearm::Rearm);
        let strange = Errno(4000);
        s.faults.inject(SimCall::KeventChange, Fault::once(strange));
        s.lp.disable(id).unwrap();
        let f = s.lp.kernel_faults();
        assert_eq!(
            (f.count, f.last.unwrap().errno),
            (1, strange),
            "{platform:?}"
        );
        s.sim.write(&w, 1).unwrap();
        assert_eq!(
            s.lp.poll(),
            0,
            "{platform:?}: disabled, whatever the kernel holds"
        );
        s.lp.enable(id).unwrap();
        s.faults.plan().garble_waits(1);
        assert_eq!(s.lp.poll(), 1, "{platform:?}: the real event still runs");
        assert_eq!(s.take(), vec!["r:READABLE".to_string()], "{platform:?}");
        let f = s.lp.kernel_faults();
        assert_eq!(f.count, 2, "{platform:?}: the garbled event counted");
        assert_eq!(f.last.unwrap().errno, Errno::INVAL);
    }
}

/// Found by the `kqueue_backend` fuzz target: a take of several instances that failed after
/// the first was read answered "drained" to the loop, which then waited for a report kqueue
/// never makes again (a delivery is reported once), leaving the rest in the kernel for good.
/// A failure now reaches the loop whatever was read before it, and its retry looks again.
#[test]
fn a_take_failing_after_some_instances_leaves_none_behind() {
    for platform in [
        KqueuePlatform::FreeBsd,
        KqueuePlatform::NetBsd,
        KqueuePlatform::DragonFly,
    ] {
        let rt0 = Signal::rt(0).unwrap();
        let s = setup::<Single>(platform);
        s.watch_signal(rt0, "a");
        for v in 1..=3 {
            s.sim.raise(SigInfo::new(rt0).with_value(v)).unwrap();
        }
        // The first take succeeds, the second fails.
        s.faults.inject(
            SimCall::SignalfdRead,
            Fault {
                errno: Errno::INTR,
                skip: 1,
                times: 1,
            },
        );
        let mut ran = 0;
        for _ in 0..10 {
            ran += s.lp.run_timeout(std::time::Duration::from_millis(20));
        }
        assert_eq!(ran, 3, "{platform:?}: every instance");
        assert_eq!(
            s.take(),
            vec!["a:value 1", "a:value 2", "a:value 3"],
            "{platform:?}"
        );
        assert_eq!(s.sim.pending_signals(), 0, "{platform:?}");
        assert!(s.lp.kernel_faults().count > 0, "{platform:?}: counted");
    }
}
