//! The pipe-chain benchmark of libevent's `test/bench.c`, for dasynq beside raw epoll, mio,
//! polling and calloop.
//!
//! N pipes, A of them active: A bytes are in flight, and each read handler reads its byte
//! and, while writes remain, writes one byte to the next pipe, for 100,000 writes. Timing
//! starts after the first A writes, as in bench.c. Scenarios: 1000 pipes with 100 active
//! (bench.c's), 100 and 9000 pipes with 100 active (how the cost grows with registered
//! fds), 1000 pipes with 1 active (one event per wait), 1000 Unix stream socket pairs
//! with 100 active, and 1000 pipes with 100 active where each pipe has an idle timer
//! re-armed (60 s from now) by every event it handles (libev's timer-per-connection
//! pattern; only the variants with timers run it: dasynq, and raw epoll with a
//! lazy-deletion heap, see `IdleTimers`). Variants run interleaved over several rounds in
//! one process (the order rotates each round), and the ratios are taken per round, so
//! machine noise hits every variant alike. Every variant does the same work, checked and
//! printed: one read per event (also under edge triggering), the same number of events and
//! the same number of waits. The one-shot raw epoll variant re-arms each fd with
//! `EPOLL_CTL_MOD` after its read: the floor of the threaded flavour, which must do the
//! same.
//!
//! Run: `cargo bench --bench pipe_chain` (options: `--rounds N`; `--pipes N`, `--active N`,
//! `--unix`, `--idle` for one scenario of your own; `--writes N`; `--only I` to run
//! variant I alone, for profiling).

#[cfg(dasynq_epoll)]
#[path = "common/pipe_chain_dasynq.rs"]
mod chain;
#[cfg(dasynq_epoll)]
mod common;

#[cfg(dasynq_epoll)]
mod imp {

    use std::os::fd::{AsFd, AsRawFd};
    use std::time::Instant;

    use dasynq::{Single, Threaded};
    use rustix::event::epoll;

    use super::chain::{Chain, EVENTS, IDLE, LOST, Outcome, Params, make_pipes, run_dasynq};

    #[derive(Clone, Copy, PartialEq)]
    enum Trigger {
        Level,
        Edge,
        /// `EPOLLONESHOT`, re-armed with `EPOLL_CTL_MOD` after each read.
        OneShot,
    }

    /// The raw variants' idle timers (idle-timer scenario): a binary heap of (deadline, pipe,
    /// generation) with lazy deletion, the least a hand-written loop does. A re-arm reads the
    /// clock and pushes a new entry (the old one is skipped when it reaches the top); each wait
    /// takes its timeout from the earliest live deadline. Cheaper than a bounded timer store:
    /// its memory grows with every re-arm (reserved up front here, so no reallocation is
    /// timed). Without the scenario, it does nothing and the wait's timeout is `LOST`.
    struct IdleTimers {
        on: bool,
        origin: Instant,
        heap: std::collections::BinaryHeap<std::cmp::Reverse<(u64, u32, u32)>>,
        generation: Vec<u32>,
    }

    impl IdleTimers {
        fn new(p: Params) -> Self {
            let origin = Instant::now();
            let mut heap = std::collections::BinaryHeap::new();
            let mut generation = Vec::new();
            if p.idle {
                heap.reserve(p.pipes + p.writes as usize + p.active);
                generation = vec![0; p.pipes];
                let deadline = IDLE.as_nanos() as u64;
                for i in 0..p.pipes {
                    heap.push(std::cmp::Reverse((deadline, i as u32, 0)));
                }
            }
            IdleTimers {
                on: p.idle,
                origin,
                heap,
                generation,
            }
        }

        #[inline]
        fn now(&self) -> u64 {
            self.origin.elapsed().as_nanos() as u64
        }

        #[inline]
        fn rearm(&mut self, idx: usize) {
            if !self.on {
                return;
            }
            let deadline = self.now() + IDLE.as_nanos() as u64;
            let g = &mut self.generation[idx];
            *g = g.wrapping_add(1);
            self.heap
                .push(std::cmp::Reverse((deadline, idx as u32, *g)));
        }

        /// The next wait's timeout: until the earliest live deadline (at most `LOST`).
        #[inline]
        fn timeout(&mut self) -> rustix::event::Timespec {
            let mut left = LOST.as_nanos() as u64;
            if self.on {
                while let Some(&std::cmp::Reverse((d, i, g))) = self.heap.peek() {
                    if self.generation[i as usize] == g {
                        assert!(
                            d > self.now(),
                            "an idle timer expired: the run took over {IDLE:?}"
                        );
                        left = left.min(d - self.now());
                        break;
                    }
                    self.heap.pop();
                }
            }
            rustix::event::Timespec {
                tv_sec: (left / 1_000_000_000) as _,
                tv_nsec: (left % 1_000_000_000) as _,
            }
        }
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
        let mut idle = IdleTimers::new(p);
        chain.start(p);
        let t = Instant::now();
        let mut waits = 0;
        while !chain.done() {
            events.clear();
            let timeout = idle.timeout();
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
                chain.take(pipes.r[idx].as_fd(), idx);
                idle.rearm(idx);
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
                chain.take(pipes.r[idx].as_fd(), idx);
            }
        }
        Outcome {
            ns: t.elapsed().as_nanos() as f64,
            events: chain.count.get(),
            waits,
        }
    }

    /// polling (3.11, and calloop over it) makes three system calls per wait beyond
    /// `epoll_wait`, timeout or not (strace): `timerfd_settime` and `epoll_ctl` for its
    /// timer, then a read of the timerfd or its notifier. That is their design, and it
    /// dominates the one-active scenario; with 100 events per wait it is amortized.
    fn run_polling(p: Params) -> Outcome {
        use polling::{Event, Events, PollMode, Poller};
        let pipes = make_pipes(p);
        let poller = Poller::new().expect("polling");
        for (i, r) in pipes.r.iter().enumerate() {
            // SAFETY: each fd is deleted from the poller (dropped with it, below) before the
            // pipe it belongs to is closed: `poller` is declared after `pipes`.
            unsafe { poller.add_with_mode(r, Event::readable(i), PollMode::Level) }.expect("add");
        }
        let chain = Chain::new(pipes.w, p.writes);
        let mut events = Events::with_capacity(std::num::NonZeroUsize::new(EVENTS).expect("256"));
        chain.start(p);
        let t = Instant::now();
        let mut waits = 0;
        while !chain.done() {
            events.clear();
            poller.wait(&mut events, Some(LOST)).expect("wait");
            assert!(!events.is_empty(), "polling: an event was lost");
            waits += 1;
            for e in events.iter() {
                let idx = e.key;
                chain.take(pipes.r[idx].as_fd(), idx);
            }
        }
        Outcome {
            ns: t.elapsed().as_nanos() as f64,
            events: chain.count.get(),
            waits,
        }
    }

    fn run_calloop(p: Params) -> Outcome {
        use calloop::generic::Generic;
        use calloop::{Interest, Mode, PostAction};
        let pipes = make_pipes(p);
        let mut el: calloop::EventLoop<'_, Chain> = calloop::EventLoop::try_new().expect("calloop");
        let handle = el.handle();
        for (idx, r) in pipes.r.into_iter().enumerate() {
            handle
                .insert_source(
                    Generic::new(r, Interest::READ, Mode::Level),
                    move |_, fd, chain: &mut Chain| {
                        chain.take(fd.as_fd(), idx);
                        Ok(PostAction::Continue)
                    },
                )
                .expect("insert");
        }
        let mut chain = Chain::new(pipes.w, p.writes);
        chain.start(p);
        let t = Instant::now();
        let mut waits = 0;
        while !chain.done() {
            let before = chain.count.get();
            el.dispatch(Some(LOST), &mut chain).expect("dispatch");
            assert!(chain.count.get() > before, "calloop: an event was lost");
            waits += 1;
        }
        Outcome {
            ns: t.elapsed().as_nanos() as f64,
            events: chain.count.get(),
            waits,
        }
    }

    use super::common::{arg, median, median_ratio};

    type Variant = (&'static str, fn(Params) -> Outcome);
    const SINGLE: &str = "dasynq (single-threaded)";
    const RAW_LT: &str = "raw epoll, level-triggered";
    const THREADED: &str = "dasynq (threaded, 1 runner)";
    const RAW_ONESHOT: &str = "raw epoll, one-shot + re-arm";
    /// The variants that re-arm idle timers: dasynq and the raw ones (with `IdleTimers`); mio
    /// and polling have no timers, and calloop's cannot be re-armed from an fd's callback
    /// (a timer source is re-armed only by its own callback's answer).
    const WITH_TIMERS: [usize; 4] = [0, 1, 4, 5];
    const VARIANTS: [Variant; 8] = [
        (SINGLE, run_dasynq::<Single>),
        (RAW_LT, |p| run_raw_epoll(p, Trigger::Level)),
        ("raw epoll, edge-triggered", |p| {
            run_raw_epoll(p, Trigger::Edge)
        }),
        ("mio", run_mio),
        (THREADED, run_dasynq::<Threaded>),
        (RAW_ONESHOT, |p| run_raw_epoll(p, Trigger::OneShot)),
        ("polling (level-triggered)", run_polling),
        ("calloop (level-triggered)", run_calloop),
    ];

    /// One scenario: check that every variant does the same work, then time them
    /// interleaved, and print the figures and ratios.
    fn scenario(p: Params, rounds: usize) {
        let variants: Vec<Variant> = if p.idle {
            WITH_TIMERS.iter().map(|&i| VARIANTS[i]).collect()
        } else {
            VARIANTS.to_vec()
        };
        println!("\n== {}, {rounds} rounds", p.describe());
        // Warm up every variant once (page cache, allocator, CPU frequency), and check that
        // they all did the same work: the same read events, in the same number of waits.
        let mut work = Vec::new();
        for (name, f) in &variants {
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
        let mut ns: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        for round in 0..rounds {
            for k in 0..variants.len() {
                let i = (k + round) % variants.len();
                let o = (variants[i].1)(p);
                assert_eq!(o.events, want, "{}: events", variants[i].0);
                ns[i].push(o.ns / o.events as f64);
            }
        }
        for (i, (name, _)) in variants.iter().enumerate() {
            let mut v = ns[i].clone();
            let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
            println!(
                "{name:<30} median {:>7.1} ns/event   (min {:>7.1})",
                median(&mut v),
                min
            );
        }
        let at = |name: &str| variants.iter().position(|v| v.0 == name);
        for (label, a, b) in [
            ("dasynq / raw level-triggered epoll", SINGLE, RAW_LT),
            (
                "dasynq / raw edge-triggered epoll",
                SINGLE,
                "raw epoll, edge-triggered",
            ),
            ("dasynq / mio", SINGLE, "mio"),
            ("dasynq / polling", SINGLE, "polling (level-triggered)"),
            ("dasynq / calloop", SINGLE, "calloop (level-triggered)"),
            ("threaded / raw one-shot + re-arm", THREADED, RAW_ONESHOT),
            ("threaded / single-threaded", THREADED, SINGLE),
        ] {
            if let (Some(a), Some(b)) = (at(a), at(b)) {
                println!(
                    "median ratio {label:<36} {:.3}",
                    median_ratio(&ns[a], &ns[b])
                );
            }
        }
    }

    pub fn main() {
        let args: Vec<String> = std::env::args().collect();
        let rounds = arg(&args, "--rounds", 7).max(3) as usize;
        let writes = arg(&args, "--writes", 100_000);
        let unix = args.iter().any(|a| a == "--unix");
        let idle = args.iter().any(|a| a == "--idle");
        let given = args
            .iter()
            .any(|a| a == "--pipes" || a == "--active" || a == "--idle");
        let own = Params {
            pipes: arg(&args, "--pipes", 1000) as usize,
            active: arg(&args, "--active", 100) as usize,
            writes,
            unix,
            idle,
            loop_time: false,
        };
        // `--only N` runs one variant (for profiling).
        let only = args
            .iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok());
        if let Some(i) = only {
            let i = i.min(VARIANTS.len() - 1);
            if idle && !WITH_TIMERS.contains(&i) {
                eprintln!(
                    "pipe_chain: variant {i} has no idle timers (--idle: one of {WITH_TIMERS:?})"
                );
                std::process::exit(2);
            }
            let (name, f) = VARIANTS[i];
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
            let s = |pipes, active, unix, idle| Params {
                pipes,
                active,
                writes,
                unix,
                idle,
                loop_time: false,
            };
            vec![
                s(1000, 100, false, false),
                s(100, 100, false, false),
                s(9000, 100, false, false),
                s(1000, 1, false, false),
                s(1000, 100, true, false),
                s(1000, 100, false, true),
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
