//! The runner protocol under a model checker: shuttle (random and PCT schedules, replayable
//! seeds) drives the real loop core (`EventLoop` over the `Modelled` flavour, shuttle's mutex
//! and condition variable) on the `Model` backend, with two runners blocked in plain `run()`,
//! a thread that makes a kernel fd ready, enables an emulated fd (work queued in user space)
//! and removes a watcher that may be queued or running, and a main thread waiting for the
//! results. The checker explores thread interleavings at every lock, condition variable and
//! shuttle atomic; it reports:
//!
//! - a lost wake-up as a deadlock (every thread blocked: runners in the backend's wait, the
//!   others on the progress condition variable);
//! - a handler on two threads at once (its `busy` flag), a handler after its `on_removed`,
//!   `on_removed` twice or never;
//! - a `stop()` that does not end every runner (the shutdown would never finish: shuttle's
//!   step bound fails it).
//!
//! Bounded so it runs in `cargo test` (a few seconds); a longer run:
//! `DASYNQ_MODEL_ITERATIONS=100000 cargo test --release --test model`. Shuttle prints the
//! schedule of a failure, to replay with `shuttle::replay`.
//!
//! Shuttle over loom: the loop core is big (the whole state machine runs under the lock), and
//! loom's exhaustive search over it does not finish; shuttle's randomized and PCT schedulers
//! find ordering bugs of small depth with a probabilistic guarantee, and run the real code
//! unchanged behind one flavour type.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use dasynq::backend::Model;
use dasynq::{Cx, Event, EventLoop, FdOptions, Handler, Interest, Modelled, Readiness};
use dasynq::{Rearm, Removed};
use shuttle::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use shuttle::sync::{Condvar, Mutex};

/// What the threads wait on: handler calls and removals, counted under a mutex.
#[derive(Default)]
struct Progress {
    counts: Mutex<[usize; 3]>,
    changed: Condvar,
}

impl Progress {
    fn bump(&self, what: usize) {
        self.counts.lock().unwrap()[what] += 1;
        self.changed.notify_all();
    }
    fn wait_until(&self, f: impl Fn(&[usize; 3]) -> bool) {
        let mut c = self.counts.lock().unwrap();
        while !f(&c) {
            c = self.changed.wait(c).unwrap();
        }
    }
    fn get(&self) -> [usize; 3] {
        *self.counts.lock().unwrap()
    }
}

const KERNEL_CALLS: usize = 0;
const EMULATED_CALLS: usize = 1;
const REMOVED: usize = 2;

struct H {
    model: Model,
    /// 0: the kernel fd's watcher, 1: the emulated one.
    which: usize,
    busy: AtomicBool,
    gone: Arc<AtomicBool>,
    progress: Arc<Progress>,
}

impl Handler for H {
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
        if let Event::Fd { fd, .. } = ev {
            if self.which == KERNEL_CALLS {
                // "Read" what made it ready.
                self.model.set_ready(fd.as_raw_fd(), Readiness::EMPTY);
            }
        }
        shuttle::thread::yield_now();
        self.busy.store(false, Ordering::SeqCst);
        self.progress.bump(self.which);
        if self.which == KERNEL_CALLS {
            Rearm::Rearm
        } else {
            // Stays disabled unless enabled meanwhile (then it runs again).
            Rearm::Noop
        }
    }
    fn on_removed(self, _cx: &Cx<'_, Self>, _r: Removed) {
        assert!(!self.gone.swap(true, Ordering::SeqCst), "on_removed twice");
        self.progress.bump(REMOVED);
    }
}

fn dev_null() -> OwnedFd {
    std::fs::File::open("/dev/null").unwrap().into()
}

fn scenario() {
    let model = Model::new();
    let lp = Arc::new(
        EventLoop::<H, Model, Modelled>::builder()
            .watchers(4)
            .timers(0)
            .wakers(0)
            .events(4)
            .runners(2)
            .build_with(model.clone())
            .unwrap(),
    );
    let progress = Arc::new(Progress::default());
    let mk = |which| H {
        model: model.clone(),
        which,
        busy: AtomicBool::new(false),
        gone: Arc::new(AtomicBool::new(false)),
        progress: progress.clone(),
    };
    let kfd = dev_null();
    let kraw = kfd.as_raw_fd();
    let kid = lp
        .add_fd(kfd, Interest::READ, FdOptions::new(), mk(KERNEL_CALLS))
        .unwrap();
    let efd = dev_null();
    model.emulate(efd.as_raw_fd());
    let eid = lp
        .add_fd(
            efd,
            Interest::READ,
            FdOptions::new().disabled(),
            mk(EMULATED_CALLS),
        )
        .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let exited = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let (lp, done, exited) = (lp.clone(), done.clone(), exited.clone());
        shuttle::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                lp.run();
            }
            exited.fetch_add(1, Ordering::SeqCst);
        });
    }
    let mutator = {
        let (lp, model, progress) = (lp.clone(), model.clone(), progress.clone());
        shuttle::thread::spawn(move || {
            // A kernel event, and work queued in user space from this thread.
            model.set_ready(kraw, Readiness::READABLE);
            lp.enable(eid).unwrap();
            progress.wait_until(|c| c[EMULATED_CALLS] >= 1);
            // Again, maybe while its handler still runs (kept: it answers Noop).
            lp.enable(eid).unwrap();
            progress.wait_until(|c| c[KERNEL_CALLS] >= 1);
            // Removal of a watcher that may be queued or running on a runner: never blocks.
            model.set_ready(kraw, Readiness::READABLE);
            lp.remove(kid).unwrap();
        })
    };
    progress.wait_until(|c| c[EMULATED_CALLS] >= 2 && c[REMOVED] == 1);
    mutator.join().unwrap();
    // Shut down: every run call in progress ends at each stop; one that starts later sees
    // `done` after the next stop.
    done.store(true, Ordering::SeqCst);
    while exited.load(Ordering::SeqCst) < 2 {
        lp.stop();
        shuttle::thread::yield_now();
    }
    let c = progress.get();
    assert_eq!(c[REMOVED], 1, "on_removed exactly once");
    assert_eq!(lp.usage().watchers, 1);
    assert_eq!(model.registered(), 0, "the removed fd is deregistered");
}

fn iterations(default: usize) -> usize {
    std::env::var("DASYNQ_MODEL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn two_runners_random_schedules() {
    shuttle::check_random(scenario, iterations(2000));
}

#[test]
fn two_runners_pct_schedules() {
    shuttle::check_pct(scenario, iterations(2000), 3);
}
