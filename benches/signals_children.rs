//! Signals and children through the loop, beside their floors, in one process.
//!
//! Signals: 100,000 real-time signals sent to this process with `sigqueue` (in batches of
//! 1,000, within the pending-signal limit), each taken by the loop and handed to its own
//! handler call; beside the floor, a raw `signalfd` read in a loop (one instance per read, as
//! the loop reads them, and 64 per read). Every variant includes the `sigqueue` that sends
//! the signal.
//!
//! Children: 300 spawn + exit + reap cycles of `/bin/true`, one after another, through the
//! loop: `spawn_child` with the default clean signal state (a `pre_exec` reset, so `Command`
//! forks), `spawn_exec` (`posix_spawn` with the clean state in its attributes), and
//! `spawn_child` with `inherit_signals` (no hook: `Command` uses `posix_spawn`); beside
//! `Command::spawn` + `Child::wait` (`posix_spawn`, waitpid), which gives the child the
//! blocked mask.
//!
//! Variants run interleaved over rounds (order rotating); figures are medians.
//! Run: `cargo bench --bench signals_children` (options: `--rounds N`, `--signals N`,
//! `--children N`).

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

    fn dasynq_signals(n: u64) -> f64 {
        let lp = EventLoop::<W>::builder()
            .watchers(4)
            .build()
            .expect("build");
        let count = Rc::new(Cell::new(0));
        lp.add_signal(rt(), Priority::DEFAULT, W::Count(count.clone()))
            .expect("watch");
        let t = Instant::now();
        for b in 1..=n / BATCH {
            send(BATCH);
            while count.get() < b * BATCH {
                lp.run();
            }
        }
        t.elapsed().as_nanos() as f64 / n as f64
    }

    fn raw_signalfd(n: u64, per_read: usize) -> f64 {
        let mask = {
            let mut m = core::mem::MaybeUninit::<libc::sigset_t>::uninit();
            // SAFETY: sigemptyset/sigaddset initialise and fill the set before it is read.
            unsafe {
                libc::sigemptyset(m.as_mut_ptr());
                libc::sigaddset(m.as_mut_ptr(), rt().raw());
                m.assume_init()
            }
        };
        // SAFETY: `mask` is initialised; -1 asks for a new fd, which we own at once.
        let fd = unsafe { OwnedFd::from_raw_fd(libc::signalfd(-1, &mask, libc::SFD_CLOEXEC)) };
        let size = core::mem::size_of::<libc::signalfd_siginfo>();
        let mut buf = vec![0u8; size * per_read];
        let t = Instant::now();
        for _ in 0..n / BATCH {
            send(BATCH);
            let mut got = 0;
            while got < BATCH {
                let r = rustix::io::read(fd.as_fd(), &mut buf).expect("read");
                got += (r / size) as u64;
            }
        }
        t.elapsed().as_nanos() as f64 / n as f64
    }

    fn dasynq_children(n: u32, options: SpawnOptions) -> f64 {
        let lp = EventLoop::<W>::builder()
            .watchers(4)
            .build()
            .expect("build");
        let t = Instant::now();
        for _ in 0..n {
            lp.spawn_child(Command::new("/bin/true"), options, W::Child)
                .expect("spawn");
            while lp.usage().watchers > 0 {
                lp.run();
            }
        }
        t.elapsed().as_nanos() as f64 / 1000.0 / f64::from(n)
    }

    fn dasynq_exec_children(n: u32) -> f64 {
        let lp = EventLoop::<W>::builder()
            .watchers(4)
            .build()
            .expect("build");
        let t = Instant::now();
        for _ in 0..n {
            lp.spawn_exec(Exec::new("/bin/true"), SpawnOptions::new(), W::Child)
                .expect("spawn");
            while lp.usage().watchers > 0 {
                lp.run();
            }
        }
        t.elapsed().as_nanos() as f64 / 1000.0 / f64::from(n)
    }

    fn raw_children(n: u32) -> f64 {
        let t = Instant::now();
        for _ in 0..n {
            let st = Command::new("/bin/true")
                .spawn()
                .expect("spawn")
                .wait()
                .expect("wait");
            assert!(st.success());
        }
        t.elapsed().as_nanos() as f64 / 1000.0 / f64::from(n)
    }

    use super::common::{arg, median, median_ratio};

    pub fn main() {
        // Before any thread: the signal is blocked, as the masking rule requires.
        dasynq::block_signals(SignalSet::of(&[rt(), Signal::CHLD])).expect("block");
        let args: Vec<String> = std::env::args().collect();
        let rounds = arg(&args, "--rounds", 5).max(3) as usize;
        let signals = (arg(&args, "--signals", 100_000) / BATCH).max(1) * BATCH;
        let children = arg(&args, "--children", 300) as u32;
        println!(
            "signals: {signals} real-time signals per round; children: {children} per round; {rounds} rounds"
        );

        type V = (&'static str, Box<dyn Fn() -> f64>);
        let variants: Vec<V> = vec![
            (
                "dasynq signal watcher (ns/signal)",
                Box::new(move || dasynq_signals(signals)),
            ),
            (
                "raw signalfd, 1 per read (ns/signal)",
                Box::new(move || raw_signalfd(signals, 1)),
            ),
            (
                "raw signalfd, 64 per read (ns/signal)",
                Box::new(move || raw_signalfd(signals, 64)),
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
        for (_, f) in &variants {
            f();
        }
        let mut res: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        for round in 0..rounds {
            for k in 0..variants.len() {
                let i = (k + round) % variants.len();
                res[i].push((variants[i].1)());
            }
        }
        for (i, (name, _)) in variants.iter().enumerate() {
            let mut v = res[i].clone();
            println!("{name:<40} median {:>9.1}", median(&mut v));
        }
        let ratio = |a: usize, b: usize| median_ratio(&res[a], &res[b]);
        println!(
            "median ratio dasynq signals / raw signalfd (1 per read): {:.3}",
            ratio(0, 1)
        );
        println!(
            "median ratio dasynq signals / raw signalfd (64 per read): {:.3}",
            ratio(0, 2)
        );
        println!(
            "median ratio dasynq spawn_child / spawn + wait:          {:.3}",
            ratio(3, 6)
        );
        println!(
            "median ratio dasynq spawn_exec / spawn + wait:           {:.3}",
            ratio(4, 6)
        );
        println!(
            "median ratio dasynq spawn_child, inherit / spawn + wait: {:.3}",
            ratio(5, 6)
        );
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
