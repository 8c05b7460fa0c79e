//! Signals and children through the loop, beside their floors, in one process.
//!
//! Signals, a burst: 100,000 real-time signals sent to this process with `sigqueue` (in
//! batches of 1,000, within the pending-signal limit, all queued before the loop runs), each
//! taken by the loop and handed to its own handler call, through `EventLoop` and through a
//! `ThreadedLoop` with one runner. The floors: a non-blocking `signalfd` in epoll, one
//! `epoll_wait` and one one-record read per instance (what a loop that takes one instance per
//! wait must do at least), and a blocking `signalfd` read, one record per read and 64 per read.
//!
//! Signals, one in flight: send one instance, run until its handler has seen it, 20,000
//! times; the floor sends one and takes it with `epoll_wait` + read on a `signalfd`.
//!
//! Every signal variant includes the `sigqueue` that sends the signal.
//!
//! Children: 300 spawn + exit + reap cycles of `/bin/true`, one after another, through the
//! loop: `spawn_child` with the default clean signal state (a `pre_exec` reset, so `Command`
//! forks), `spawn_exec` (`posix_spawn` with the clean state in its attributes), and
//! `spawn_child` with `inherit_signals` (no hook: `Command` uses `posix_spawn`); beside
//! `Command::spawn` + `Child::wait` (`posix_spawn`, waitpid), which gives the child the
//! blocked mask.
//!
//! Variants run interleaved over rounds (order rotating); figures are medians, ratios the
//! median of per-round ratios. Run: `cargo bench --bench signals_children` (options:
//! `--rounds N`, `--signals N`, `--single N` (one-in-flight count), `--children N`).

#[cfg(dasynq_epoll)]
mod common;

#[cfg(dasynq_epoll)]
mod imp {

    use std::cell::Cell;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    use std::process::Command;
    use std::rc::Rc;
    use std::time::Instant;

    use dasynq::{
        Cx, Event, EventLoop, Exec, Handler, Priority, Rearm, Signal, SignalSet, SpawnOptions,
    };

    const BATCH: u64 = 1000;

    fn rt() -> Signal {
        Signal::rt(0).expect("real-time signal")
    }

    fn send(n: u64) {
        let pid = std::process::id() as libc::pid_t;
        for i in 0..n {
            let val = libc::sigval {
                sival_ptr: i as usize as *mut libc::c_void,
            };
            // SAFETY: sigqueue to our own pid with a blocked signal and a plain value.
            let r = unsafe { libc::sigqueue(pid, rt().raw(), val) };
            assert_eq!(r, 0, "sigqueue");
        }
    }

    enum W {
        Count(Rc<Cell<u64>>),
        Child,
    }

    impl Handler for W {
        type Data = ();
        fn on_event(&mut self, _cx: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
            match (self, ev) {
                (W::Count(n), Event::Signal(_)) => {
                    n.set(n.get() + 1);
                    Rearm::Rearm
                }
                (W::Child, Event::Child { status, .. }) => {
                    assert!(status.success());
                    Rearm::Remove
                }
                _ => Rearm::Rearm,
            }
        }
    }

    /// A burst through a loop of flavour `F`: per batch, queue 1,000 and run until the
    /// handler has counted them.
    /// A loop of flavour `F` (one runner) watching the signal, and its handler's count.
    fn signal_loop<F: dasynq::Flavor>() -> (EventLoop<W, dasynq::DefaultBackend, F>, Rc<Cell<u64>>)
    {
        let lp = EventLoop::<W, dasynq::DefaultBackend, F>::builder()
            .watchers(4)
            .runners(1)
            .build()
            .expect("build");
        let count = Rc::new(Cell::new(0));
        lp.add_signal(rt(), Priority::DEFAULT, W::Count(count.clone()))
            .expect("watch");
        (lp, count)
    }

    fn dasynq_signals<F: dasynq::Flavor>(n: u64) -> (f64, u64) {
        let (lp, count) = signal_loop::<F>();
        let t = Instant::now();
        for b in 1..=n / BATCH {
            send(BATCH);
            while count.get() < b * BATCH {
                lp.run();
            }
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        assert_eq!(count.get(), n, "every instance handled once");
        (ns, count.get())
    }

    /// One instance in flight at a time through a single-threaded loop.
    fn dasynq_one_in_flight(n: u64) -> (f64, u64) {
        let (lp, count) = signal_loop::<dasynq::Single>();
        let t = Instant::now();
        for i in 1..=n {
            send(1);
            while count.get() < i {
                lp.run();
            }
        }
        (t.elapsed().as_nanos() as f64 / n as f64, count.get())
    }

    fn signalfd(flags: libc::c_int) -> OwnedFd {
        let mask = {
            let mut m = core::mem::MaybeUninit::<libc::sigset_t>::uninit();
            // SAFETY: sigemptyset/sigaddset initialise and fill the set before it is read.
            unsafe {
                libc::sigemptyset(m.as_mut_ptr());
                libc::sigaddset(m.as_mut_ptr(), rt().raw());
                m.assume_init()
            }
        };
        // SAFETY: `mask` is initialised; -1 asks for a new fd.
        let fd = unsafe { libc::signalfd(-1, &mask, flags | libc::SFD_CLOEXEC) };
        assert!(fd >= 0, "signalfd");
        // SAFETY: `signalfd` just returned this fd, which nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    const SIZE: usize = core::mem::size_of::<libc::signalfd_siginfo>();

    /// The floor of a loop that takes one instance per wait: `epoll_wait` + a one-record read
    /// per instance, on a non-blocking signalfd.
    fn raw_epoll_signalfd(n: u64, per_batch: u64) -> (f64, u64) {
        use rustix::event::epoll;
        let fd = signalfd(libc::SFD_NONBLOCK);
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll");
        epoll::add(
            &ep,
            &fd,
            epoll::EventData::new_u64(1),
            epoll::EventFlags::IN,
        )
        .expect("add");
        let mut events = Vec::with_capacity(8);
        let mut buf = [0u8; SIZE];
        let mut handled = 0;
        let t = Instant::now();
        for _ in 0..n / per_batch {
            send(per_batch);
            let mut got = 0;
            while got < per_batch {
                events.clear();
                epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), None).expect("wait");
                if let Ok(SIZE) = rustix::io::read(&fd, &mut buf) {
                    got += 1;
                }
            }
            handled += got;
        }
        (t.elapsed().as_nanos() as f64 / n as f64, handled)
    }

    fn raw_signalfd(n: u64, per_read: usize) -> (f64, u64) {
        let fd = signalfd(0);
        let mut buf = vec![0u8; SIZE * per_read];
        let mut handled = 0;
        let t = Instant::now();
        for _ in 0..n / BATCH {
            send(BATCH);
            let mut got = 0;
            while got < BATCH {
                let r = rustix::io::read(fd.as_fd(), &mut buf).expect("read");
                got += (r / SIZE) as u64;
            }
            handled += got;
        }
        (t.elapsed().as_nanos() as f64 / n as f64, handled)
    }

    fn dasynq_children(n: u32, options: SpawnOptions) -> (f64, u64) {
        let lp = EventLoop::<W>::builder()
            .watchers(4)
            .build()
            .expect("build");
        let mut reaped = 0;
        let t = Instant::now();
        for _ in 0..n {
            lp.spawn_child(Command::new("/bin/true"), options, W::Child)
                .expect("spawn");
            while lp.usage().watchers > 0 {
                lp.run();
            }
            // Its watcher is gone: the child's exit was delivered and it was reaped.
            reaped += 1;
        }
        (
            t.elapsed().as_nanos() as f64 / 1000.0 / f64::from(n),
            reaped,
        )
    }

    fn dasynq_exec_children(n: u32) -> (f64, u64) {
        let lp = EventLoop::<W>::builder()
            .watchers(4)
            .build()
            .expect("build");
        let mut reaped = 0;
        let t = Instant::now();
        for _ in 0..n {
            lp.spawn_exec(Exec::new("/bin/true"), SpawnOptions::new(), W::Child)
                .expect("spawn");
            while lp.usage().watchers > 0 {
                lp.run();
            }
            // Its watcher is gone: the child's exit was delivered and it was reaped.
            reaped += 1;
        }
        (
            t.elapsed().as_nanos() as f64 / 1000.0 / f64::from(n),
            reaped,
        )
    }

    fn raw_children(n: u32) -> (f64, u64) {
        let mut reaped = 0;
        let t = Instant::now();
        for _ in 0..n {
            let st = Command::new("/bin/true")
                .spawn()
                .expect("spawn")
                .wait()
                .expect("wait");
            assert!(st.success());
            reaped += 1;
        }
        (
            t.elapsed().as_nanos() as f64 / 1000.0 / f64::from(n),
            reaped,
        )
    }

    use super::common::{arg, median, median_ratio};

    pub fn main() {
        // Before any thread: the signal is blocked, as the masking rule requires.
        dasynq::block_signals(SignalSet::of(&[rt(), Signal::CHLD])).expect("block");
        let args: Vec<String> = std::env::args().collect();
        let rounds = arg(&args, "--rounds", 5).max(3) as usize;
        let signals = (arg(&args, "--signals", 100_000) / BATCH).max(1) * BATCH;
        let single = arg(&args, "--single", 20_000).max(1);
        let children = arg(&args, "--children", 300) as u32;
        println!(
            "signals: a burst of {signals} real-time signals and {single} one at a time per round; children: {children} per round; {rounds} rounds"
        );

        // Each variant returns its time per unit and the units it handled (signal instances,
        // children reaped), checked against what was asked of it.
        type V = (&'static str, Box<dyn Fn() -> (f64, u64)>);
        let variants: Vec<V> = vec![
            (
                "burst: dasynq EventLoop (ns/signal)",
                Box::new(move || dasynq_signals::<dasynq::Single>(signals)),
            ),
            (
                "burst: dasynq ThreadedLoop, 1 runner",
                Box::new(move || dasynq_signals::<dasynq::Threaded>(signals)),
            ),
            (
                "burst: epoll_wait + read per instance",
                Box::new(move || raw_epoll_signalfd(signals, BATCH)),
            ),
            (
                "burst: blocking read, 1 per read",
                Box::new(move || raw_signalfd(signals, 1)),
            ),
            (
                "burst: blocking read, 64 per read",
                Box::new(move || raw_signalfd(signals, 64)),
            ),
            (
                "one in flight: dasynq EventLoop",
                Box::new(move || dasynq_one_in_flight(single)),
            ),
            (
                "one in flight: epoll_wait + read",
                Box::new(move || raw_epoll_signalfd(single, 1)),
            ),
            (
                "dasynq spawn_child (us/child)",
                Box::new(move || dasynq_children(children, SpawnOptions::new())),
            ),
            (
                "dasynq spawn_exec (us/child)",
                Box::new(move || dasynq_exec_children(children)),
            ),
            (
                "dasynq spawn_child, inherit (us/child)",
                Box::new(move || dasynq_children(children, SpawnOptions::new().inherit_signals())),
            ),
            (
                "Command::spawn + wait (us/child)",
                Box::new(move || raw_children(children)),
            ),
        ];
        // Warm-up, and the work check: every variant handled what was asked of it.
        let asked = |name: &str| {
            if name.starts_with("burst") {
                signals
            } else if name.starts_with("one in flight") {
                single
            } else {
                u64::from(children)
            }
        };
        println!("work per variant (signal instances handled, or children reaped):");
        for (name, f) in &variants {
            let (_, handled) = f();
            println!("  {name:<40} {handled:>8}");
            assert_eq!(
                handled,
                asked(name),
                "{name} did a different amount of work"
            );
        }
        let mut res: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        for round in 0..rounds {
            for k in 0..variants.len() {
                let i = (k + round) % variants.len();
                let (ns, handled) = (variants[i].1)();
                assert_eq!(handled, asked(variants[i].0), "{}: work", variants[i].0);
                res[i].push(ns);
            }
        }
        for (i, (name, _)) in variants.iter().enumerate() {
            let mut v = res[i].clone();
            println!("{name:<40} median {:>9.1}", median(&mut v));
        }
        let ratio = |a: usize, b: usize| median_ratio(&res[a], &res[b]);
        let ratios = [
            ("burst: EventLoop / epoll_wait + read per instance", 0, 2),
            ("burst: EventLoop / blocking read, 1 per read", 0, 3),
            ("burst: EventLoop / blocking read, 64 per read", 0, 4),
            ("burst: ThreadedLoop / epoll_wait + read per instance", 1, 2),
            ("burst: ThreadedLoop / EventLoop", 1, 0),
            ("one in flight: EventLoop / epoll_wait + read", 5, 6),
            ("dasynq spawn_child / spawn + wait", 7, 10),
            ("dasynq spawn_exec / spawn + wait", 8, 10),
            ("dasynq spawn_child, inherit / spawn + wait", 9, 10),
        ];
        for (name, a, b) in ratios {
            println!("median ratio {name:<54} {:.3}", ratio(a, b));
        }
    }
}

#[cfg(dasynq_epoll)]
fn main() {
    imp::main()
}

/// The baselines are Linux's (raw signalfd and sigqueue): elsewhere there is nothing to compare against.
#[cfg(not(dasynq_epoll))]
fn main() {
    eprintln!(
        "signals_children: this benchmark compares dasynq with raw signalfd and sigqueue and runs on Linux only"
    );
}
