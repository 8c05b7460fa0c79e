//! The pipe-chain benchmark of libevent's `test/bench.c`, for dasynq beside raw epoll and mio.
//!
//! N pipes, A of them active: A bytes are in flight, and each read handler reads its byte
//! and, while writes remain, writes one byte to the next pipe, for 100,000 writes. Timing
//! starts after the first A writes, as in bench.c. Scenarios: 1000 pipes with 100 active
//! (bench.c's), 100 and 9000 pipes with 100 active (how the cost grows with registered
//! fds), 1000 pipes with 1 active (one event per wait), and 1000 Unix stream socket pairs
//! with 100 active. Variants run interleaved over several rounds in one process (the order
//! rotates each round), and the ratios are taken per round, so machine noise hits every
//! variant alike. Every variant does the same work, checked and printed: one read per event
//! (also under edge triggering), the same number of events and the same number of waits.
//! The one-shot raw epoll variant re-arms each fd with `EPOLL_CTL_MOD` after its read: the
//! floor of the threaded flavour, which must do the same.
//!
//! Run: `cargo bench --bench pipe_chain` (options: `--rounds N`; `--pipes N`, `--active N`,
//! `--unix` for one scenario of your own; `--writes N`; `--only I` to run variant I alone,
//! for profiling).

#[cfg(dasynq_epoll)]
mod common;

#[cfg(dasynq_epoll)]
mod imp {

    use std::cell::Cell;
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};
    use std::rc::Rc;
    use std::time::Instant;

    use dasynq::{
        Cx, Event, EventLoop, FdOptions, Flavor, Handler, Interest, Rearm, Single, Threaded,
    };
    use rustix::event::epoll;

    #[derive(Clone, Copy)]
    struct Params {
        pipes: usize,
        active: usize,
        writes: u64,
        /// Unix stream socket pairs instead of pipes.
        unix: bool,
    }

    struct Pipes {
        r: Vec<OwnedFd>,
        w: Vec<OwnedFd>,
    }

    fn make_pipes(p: Params) -> Pipes {
        let n = p.pipes;
        let (mut r, mut w) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let (a, b) = if p.unix {
                use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
                socketpair(
                    AddressFamily::UNIX,
                    SocketType::STREAM,
                    SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                    None,
                )
                .expect("socketpair")
            } else {
                rustix::pipe::pipe_with(
                    rustix::pipe::PipeFlags::NONBLOCK | rustix::pipe::PipeFlags::CLOEXEC,
                )
                .expect("pipe")
            };
            r.push(a);
            w.push(b);
        }
        Pipes { r, w }
    }

    /// The shared counters of bench.c.
    struct Chain {
        w: Vec<OwnedFd>,
        writes: Cell<u64>,
        count: Cell<u64>,
        fired: Cell<u64>,
    }

    impl Chain {
        fn new(w: Vec<OwnedFd>, writes: u64) -> Self {
            Chain {
                w,
                writes: Cell::new(writes),
                count: Cell::new(0),
                fired: Cell::new(0),
            }
        }
        fn start(&self, p: Params) {
            let space = p.pipes / p.active;
            for i in 0..p.active {
                let _ = rustix::io::write(&self.w[i * space], b"e");
                self.fired.set(self.fired.get() + 1);
            }
        }
        /// One byte was read from pipe `idx`: pass it on.
        #[inline]
        fn forward(&self, idx: usize) {
            self.count.set(self.count.get() + 1);
            let left = self.writes.get();
            if left > 0 {
                let next = if idx + 1 == self.w.len() { 0 } else { idx + 1 };
                let _ = rustix::io::write(&self.w[next], b"e");
                self.writes.set(left - 1);
                self.fired.set(self.fired.get() + 1);
            }
        }
        fn done(&self) -> bool {
            self.count.get() == self.fired.get()
        }
    }

    const EVENTS: usize = 256;

    struct Reader {
        idx: usize,
        chain: Rc<Chain>,
    }

    impl Handler for Reader {
        type Data = ();
        #[inline]
        fn on_event(&mut self, _cx: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
            if let Event::Fd { fd, .. } = ev {
                let mut b = [0u8; 1];
                if let Ok(1) = rustix::io::read(fd, &mut b) {
                    self.chain.forward(self.idx);
                }
            }
            Rearm::Rearm
        }
    }

    fn run_dasynq<F: Flavor>(p: Params) -> Outcome {
        let pipes = make_pipes(p);
        let chain = Rc::new(Chain::new(pipes.w, p.writes));
        let lp = EventLoop::<Reader, dasynq::DefaultBackend, F>::builder()
            .watchers(p.pipes)
            .timers(0)
            .wakers(0)
            .events(EVENTS)
            .runners(1)
            .build()
            .expect("build");
        for (idx, r) in pipes.r.into_iter().enumerate() {
            lp.add_fd(
                r,
                Interest::READ,
                FdOptions::new(),
                Reader {
                    idx,
                    chain: chain.clone(),
                },
            )
            .expect("register");
        }
        chain.start(p);
        let t = Instant::now();
        let mut runs = 0u64;
        while !chain.done() {
            // Each `run` is one wait and the batch it returned (as each raw variant's loop
            // turn is one `epoll_wait` and its events).
            if lp.run_timeout(LOST) == 0 {
                panic!("dasynq: an event was lost (nothing for {LOST:?})");
            }
            runs += 1;
        }
        Outcome {
            ns: t.elapsed().as_nanos() as f64,
            events: chain.count.get(),
            waits: runs,
        }
    }

    /// What one variant did: the time, the read events handled, and the waits it made.
    pub struct Outcome {
        pub ns: f64,
        pub events: u64,
        pub waits: u64,
    }

    /// A wait that sees nothing for this long means an event was lost: the run fails rather
    /// than hang.
    const LOST: std::time::Duration = std::time::Duration::from_secs(5);

    #[derive(Clone, Copy, PartialEq)]
    enum Trigger {
        Level,
        Edge,
        /// `EPOLLONESHOT`, re-armed with `EPOLL_CTL_MOD` after each read.
        OneShot,
    }

    fn run_raw_epoll(p: Params, trigger: Trigger) -> Outcome {
        let pipes = make_pipes(p);
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll");
        let flags = match trigger {
            Trigger::Level => epoll::EventFlags::IN,
            Trigger::Edge => epoll::EventFlags::IN | epoll::EventFlags::ET,
            Trigger::OneShot => epoll::EventFlags::IN | epoll::EventFlags::ONESHOT,
        };
        for (i, r) in pipes.r.iter().enumerate() {
            epoll::add(&ep, r, epoll::EventData::new_u64(i as u64), flags).expect("add");
        }
        let chain = Chain::new(pipes.w, p.writes);
        let mut events: Vec<epoll::Event> = Vec::with_capacity(EVENTS);
        chain.start(p);
        let t = Instant::now();
        let timeout = rustix::event::Timespec {
            tv_sec: LOST.as_secs() as _,
            tv_nsec: 0,
        };
        let mut waits = 0;
        while !chain.done() {
            events.clear();
            epoll::wait(
                &ep,
                rustix::buffer::spare_capacity(&mut events),
                Some(&timeout),
            )
            .expect("wait");
            assert!(!events.is_empty(), "raw epoll: an event was lost");
            waits += 1;
            for e in &events {
                let idx = e.data.u64() as usize;
                let mut b = [0u8; 1];
                // One read per event in every variant, as dasynq's handler makes (the
                // edge-triggered ones too: each write to a pipe is a new edge, and the count
                // check below catches a lost one). Reading until EAGAIN would add a failing
                // read per event to these variants alone.
                if let Ok(1) = rustix::io::read(&pipes.r[idx], &mut b) {
                    chain.forward(idx);
                }
                if trigger == Trigger::OneShot {
                    epoll::modify(&ep, &pipes.r[idx], e.data, flags).expect("re-arm");
                }
            }
        }
        Outcome {
            ns: t.elapsed().as_nanos() as f64,
            events: chain.count.get(),
            waits,
        }
    }

    fn run_mio(p: Params) -> Outcome {
        use mio::unix::SourceFd;
        use mio::{Events, Poll, Token};
        let pipes = make_pipes(p);
        let mut poll = Poll::new().expect("mio poll");
        for (i, r) in pipes.r.iter().enumerate() {
            poll.registry()
                .register(
                    &mut SourceFd(&r.as_raw_fd()),
                    Token(i),
                    mio::Interest::READABLE,
                )
                .expect("register");
        }
        let chain = Chain::new(pipes.w, p.writes);
        let mut events = Events::with_capacity(EVENTS);
        chain.start(p);
        let t = Instant::now();
        let mut waits = 0;
        while !chain.done() {
            poll.poll(&mut events, Some(LOST)).expect("poll");
            assert!(!events.is_empty(), "mio: an event was lost");
            waits += 1;
            for e in events.iter() {
                let idx = e.token().0;
                let mut b = [0u8; 1];
                // One read per event, as in every variant (see `run_raw_epoll`).
                if let Ok(1) = rustix::io::read(pipes.r[idx].as_fd(), &mut b) {
                    chain.forward(idx);
                }
            }
        }
        Outcome {
            ns: t.elapsed().as_nanos() as f64,
            events: chain.count.get(),
            waits,
        }
    }

    use super::common::{arg, median, median_ratio};

    type Variant = (&'static str, fn(Params) -> Outcome);
    const VARIANTS: [Variant; 6] = [
        ("dasynq (single-threaded)", run_dasynq::<Single>),
        ("raw epoll, level-triggered", |p| {
            run_raw_epoll(p, Trigger::Level)
        }),
        ("raw epoll, edge-triggered", |p| {
            run_raw_epoll(p, Trigger::Edge)
        }),
        ("mio", run_mio),
        ("dasynq (threaded, 1 runner)", run_dasynq::<Threaded>),
        ("raw epoll, one-shot + re-arm", |p| {
            run_raw_epoll(p, Trigger::OneShot)
        }),
    ];

    /// One scenario: check that every variant does the same work, then time them
    /// interleaved, and print the figures and ratios.
    fn scenario(p: Params, rounds: usize) {
        println!(
            "\n== {} {}, {} active, {} writes, {} rounds",
            p.pipes,
            if p.unix { "unix socket pairs" } else { "pipes" },
            p.active,
            p.writes,
            rounds
        );
        // Warm up every variant once (page cache, allocator, CPU frequency), and check that
        // they all did the same work: the same read events, in the same number of waits.
        let mut work = Vec::new();
        for (name, f) in &VARIANTS {
            let o = f(p);
            work.push((name, o.events, o.waits));
        }
        println!("work per variant (read events handled, waits made):");
        for (name, events, waits) in &work {
            println!("  {name:<30} {events:>8} events {waits:>8} waits");
        }
        let want = p.writes + p.active as u64;
        for (name, events, waits) in &work {
            assert_eq!(*events, want, "{name} handled a different number of events");
            assert_eq!(*waits, work[0].2, "{name} made a different number of waits");
        }
        let mut ns: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
        for round in 0..rounds {
            for k in 0..VARIANTS.len() {
                let i = (k + round) % VARIANTS.len();
                let o = (VARIANTS[i].1)(p);
                assert_eq!(o.events, want, "{}: events", VARIANTS[i].0);
                ns[i].push(o.ns / o.events as f64);
            }
        }
        for (i, (name, _)) in VARIANTS.iter().enumerate() {
            let mut v = ns[i].clone();
            let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
            println!(
                "{name:<30} median {:>7.1} ns/event   (min {:>7.1})",
                median(&mut v),
                min
            );
        }
        let ratio = |a: usize, b: usize| median_ratio(&ns[a], &ns[b]);
        for (name, a, b) in [
            ("dasynq / raw level-triggered epoll", 0, 1),
            ("dasynq / raw edge-triggered epoll", 0, 2),
            ("dasynq / mio", 0, 3),
            ("threaded / raw one-shot + re-arm", 4, 5),
            ("threaded / single-threaded", 4, 0),
        ] {
            println!("median ratio {name:<36} {:.3}", ratio(a, b));
        }
    }

    pub fn main() {
        let args: Vec<String> = std::env::args().collect();
        let rounds = arg(&args, "--rounds", 7).max(3) as usize;
        let writes = arg(&args, "--writes", 100_000);
        let unix = args.iter().any(|a| a == "--unix");
        let given = args.iter().any(|a| a == "--pipes" || a == "--active");
        let own = Params {
            pipes: arg(&args, "--pipes", 1000) as usize,
            active: arg(&args, "--active", 100) as usize,
            writes,
            unix,
        };
        // `--only N` runs one variant (for profiling).
        let only = args
            .iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok());
        if let Some(i) = only {
            let (name, f) = VARIANTS[i.min(VARIANTS.len() - 1)];
            let o = f(own);
            println!(
                "{name}: {:.1} ns/event ({} events, {} waits)",
                o.ns / o.events as f64,
                o.events,
                o.waits
            );
            return;
        }
        let scenarios = if given || unix {
            vec![own]
        } else {
            let s = |pipes, active, unix| Params {
                pipes,
                active,
                writes,
                unix,
            };
            vec![
                s(1000, 100, false),
                s(100, 100, false),
                s(9000, 100, false),
                s(1000, 1, false),
                s(1000, 100, true),
            ]
        };
        println!(
            "pipe chain (libevent bench.c), {} scenarios",
            scenarios.len()
        );
        for p in scenarios {
            scenario(p, rounds);
        }
    }
}

#[cfg(dasynq_epoll)]
fn main() {
    imp::main()
}

/// The baselines are Linux's (raw epoll): elsewhere there is nothing to compare against.
#[cfg(not(dasynq_epoll))]
fn main() {
    eprintln!("pipe_chain: this benchmark compares dasynq with raw epoll and runs on Linux only");
}
