//! Several threads in one `ThreadedLoop`, beside the floors it is measured against.
//!
//! Throughput: the pipe chain of `pipe_chain.rs` (1000 pipes, 100 bytes in flight; each read
//! handler reads its byte, spins for the handler work, and, while writes remain, writes one
//! byte to another pipe), with handler work of 0, 2 and 20 µs (a spin of `black_box`
//! iterations, calibrated against `Instant` once at start: real CPU work, no clock reads), for:
//! `EventLoop` (`Single` flavour) on 1 thread; `ThreadedLoop` with 1 and 2 runners (and more,
//! up to `--threads`, default the available parallelism); the floor, one raw epoll fd shared
//! by as many threads, every pipe `EPOLLIN | EPOLLONESHOT`, each thread in its own
//! `epoll_wait` loop re-arming with `EPOLL_CTL_MOD` after each event; and sharded mio, one
//! `Poll` per thread with the pipes split evenly (contiguous shards). mio is edge-triggered,
//! so it re-registers each fd after its event: every variant reads exactly once per event
//! (none reads until `EAGAIN`). Two loads: uniform (the next pipe is the following one, as in
//! `pipe_chain.rs`) and an 80/20 skew (80% of the writes go to the first tenth of the pipes,
//! all in mio's first shard; the rest to the other pipes; chosen by a hash of the write's
//! number). Every variant does the same work: the reads, writes and dispatched events of
//! every run are counted (and every pipe is checked empty afterwards); a run that differs
//! panics. Timing starts after the first 100 writes, as in `pipe_chain.rs`, and ends at the
//! last read. Variants run interleaved over rounds (the order rotates each round); ratios are
//! taken per round, and figures are medians.
//!
//! Queueing delay: the chain with 10% of the pipes' handlers spinning 200 µs and the rest
//! none, and 2 bytes in flight, each circling its own half of the pipes (so that neither
//! catches up with the other and waits behind it on one pipe; as many bytes as runners: with
//! 1 runner a short event waits behind the other byte's handler, with 2 it should wait only
//! for its dispatch); per event, the delay from the write that made it ready to the start of
//! its handler (the writer stamps a per-pipe slot, in ns since a start `Instant`); the p99
//! over the short events, with 1 and 2 runners (and the raw floor for reference, whose
//! threads may take both events in one wait and run them one after the other).
//!
//! Context switches: 4 runners and sparse events (one byte at a time, round-robin over 4
//! pipes, written every 100 µs of spinning by a forked child, whose own switches are not
//! counted, so the runners sleep between events); `getrusage(RUSAGE_SELF)` `ru_nvcsw +
//! ru_nivcsw` before and after, per event (the main thread only sleeps meanwhile).
//!
//! Speed targets are printed beside the measured values, never asserted; equal work is.
//!
//! Run: `cargo bench --bench threads` (under a minute on 2 cores; options: `--rounds N` (default
//! 7), `--writes N` (writes at 0 µs, default 60,000; fewer at 2 and 20 µs, for about the same
//! time), `--pipes N`, `--active N`, `--threads N` (default the available parallelism),
//! `--queue-active N` (bytes in flight in the queueing scenario), `--quick` (fewer rounds and
//! writes: 3 rounds of 10,000, a few seconds), and `--only I` to run variant I alone (in the
//! order printed), for profiling).

#[cfg(dasynq_epoll)]
mod common;

#[cfg(dasynq_epoll)]
mod imp {

    use std::cell::Cell;
    use std::hint::black_box;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
    use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier, Condvar, Mutex};
    use std::time::{Duration, Instant};

    use dasynq::{
        Cx, DefaultBackend, Event, EventLoop, FdOptions, Flavor, Handler, Interest, Rearm, Single,
        ThreadedLoop,
    };
    use rustix::event::epoll;

    use super::common::{arg, median, median_ratio};

    /// Kernel events fetched per wait, in every variant.
    const EVENTS: usize = 256;
    /// A run still going after this long lost an event: the benchmark says so and exits.
    const WATCHDOG: Duration = Duration::from_secs(60);
    /// Handler work levels, µs.
    const WORK_US: [u64; 3] = [0, 2, 20];
    /// Queueing scenario: the long handlers' work, µs.
    const LONG_US: u64 = 200;

    // ---- Handler work: a calibrated spin ----

    /// `iters` iterations of real work, without reading the clock.
    #[inline(never)]
    fn spin(iters: u64) {
        let mut x = 0u64;
        for i in 0..iters {
            x = black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        black_box(x);
    }

    /// Spin iterations per µs: the best of several timed runs (a preempted run only looks
    /// slower).
    fn calibrate() -> f64 {
        let n = 2_000_000u64;
        spin(n);
        let mut best = f64::INFINITY;
        for _ in 0..7 {
            let t = Instant::now();
            spin(n);
            best = best.min(t.elapsed().as_nanos() as f64);
        }
        n as f64 * 1000.0 / best
    }

    // ---- The workload ----

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Load {
        Uniform,
        Skew,
        /// Each byte in flight circles its own segment of the pipes (the queueing scenario:
        /// in one ring, a byte that meets a long handler is caught up by the others, and the
        /// bytes then travel bunched, one behind the other).
        Rings,
    }

    impl Load {
        fn name(self) -> &'static str {
            match self {
                Load::Uniform => "uniform load",
                Load::Skew => "80/20 skew",
                Load::Rings => "separate rings",
            }
        }
    }

    #[derive(Clone, Copy)]
    struct Params {
        pipes: usize,
        /// Bytes in flight (the first writes, made before timing starts).
        active: usize,
        /// Writes made by handlers.
        writes: u64,
        load: Load,
        /// Spin iterations per handler call.
        work: u64,
        /// Queueing scenario: spin iterations of the long handlers (10% of the pipes), and
        /// delays are measured; 0: neither.
        long: u64,
    }

    /// Pipes that take 80% of the writes under skew: the first tenth.
    fn hot_pipes(pipes: usize) -> usize {
        (pipes / 10).max(1)
    }

    /// splitmix64: the pseudo-random choices (skewed targets, long handlers), deterministic.
    fn mix(x: u64) -> u64 {
        let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn make_pipes(n: usize) -> (Vec<OwnedFd>, Vec<OwnedFd>) {
        let (mut r, mut w) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let (a, b) = rustix::pipe::pipe_with(
                rustix::pipe::PipeFlags::NONBLOCK | rustix::pipe::PipeFlags::CLOEXEC,
            )
            .expect("pipe");
            r.push(a);
            w.push(b);
        }
        (r, w)
    }

    thread_local! {
        /// Reads and writes made by handlers on this thread (tallied when a runner ends).
        static READS: Cell<u64> = const { Cell::new(0) };
        static WRITES: Cell<u64> = const { Cell::new(0) };
    }

    /// The chain's shared state, the same for every variant.
    struct Chain {
        p: Params,
        what: String,
        w: Vec<OwnedFd>,
        /// Writes left. Every read takes one off; a read that finds it above 0 writes, and
        /// the read that finds `1 - active` is the last one.
        left: AtomicI64,
        /// Queueing scenario: whether a pipe's handler is long.
        long: Vec<bool>,
        /// Queueing scenario, per pipe: when its pending byte was written (ns since `epoch`;
        /// 0: none noted). A second byte written before the first is read goes unmeasured.
        slots: Vec<AtomicU64>,
        /// Queueing scenario: the short events' delays, ns.
        delays: Vec<AtomicU64>,
        ndelays: AtomicUsize,
        epoch: Instant,
        t_start: AtomicU64,
        t_end: AtomicU64,
        done: AtomicBool,
        finished: Mutex<bool>,
        cv: Condvar,
        // Tallies, for the equal-work check.
        reads: AtomicU64,
        writes: AtomicU64,
        dispatched: AtomicU64,
        empty: AtomicU64,
    }

    impl Chain {
        fn new(p: Params, what: String, w: Vec<OwnedFd>) -> Self {
            let measured = p.long > 0;
            let expected = p.active + p.writes as usize;
            Chain {
                p,
                what,
                w,
                left: AtomicI64::new(p.writes as i64),
                long: (0..p.pipes)
                    .map(|i| measured && mix(i as u64 ^ 0x5eed) % 10 == 0)
                    .collect(),
                slots: (0..if measured { p.pipes } else { 0 })
                    .map(|_| AtomicU64::new(0))
                    .collect(),
                delays: (0..if measured { expected } else { 0 })
                    .map(|_| AtomicU64::new(0))
                    .collect(),
                ndelays: AtomicUsize::new(0),
                epoch: Instant::now(),
                t_start: AtomicU64::new(0),
                t_end: AtomicU64::new(0),
                done: AtomicBool::new(false),
                finished: Mutex::new(false),
                cv: Condvar::new(),
                reads: AtomicU64::new(0),
                writes: AtomicU64::new(0),
                dispatched: AtomicU64::new(0),
                empty: AtomicU64::new(0),
            }
        }

        fn expected(&self) -> u64 {
            self.p.active as u64 + self.p.writes
        }

        /// ns since `epoch`, never 0.
        fn now(&self) -> u64 {
            self.epoch.elapsed().as_nanos() as u64 + 1
        }

        fn done(&self) -> bool {
            self.done.load(Ordering::Acquire)
        }

        /// Write one byte to pipe `idx` (stamping its slot first in the queueing scenario).
        fn write_byte(&self, idx: usize) {
            if self.p.long > 0 {
                let _ = self.slots[idx].compare_exchange(
                    0,
                    self.now(),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
            let r = rustix::io::write(&self.w[idx], b"e");
            assert!(matches!(r, Ok(1)), "write to pipe {idx}: {r:?}");
        }

        /// The first `active` writes, spread as in bench.c; timing starts after them.
        fn start(&self) {
            let space = (self.p.pipes / self.p.active.max(1)).max(1);
            for i in 0..self.p.active {
                self.write_byte((i * space) % self.p.pipes);
            }
            self.t_start.store(self.now(), Ordering::Release);
        }

        /// The pipe that write number `seq` goes to, from pipe `idx`.
        #[inline]
        fn next(&self, idx: usize, seq: u64) -> usize {
            let n = self.p.pipes;
            match self.p.load {
                Load::Uniform => {
                    if idx + 1 == n {
                        0
                    } else {
                        idx + 1
                    }
                }
                Load::Skew => {
                    let hot = hot_pipes(n);
                    let h = mix(seq);
                    let pick = (h >> 32) as usize;
                    if h % 10 < 8 {
                        pick % hot
                    } else {
                        hot + pick % (n - hot)
                    }
                }
                Load::Rings => {
                    let space = (n / self.p.active.max(1)).max(1);
                    if (idx + 1) % space == 0 {
                        idx + 1 - space
                    } else {
                        idx + 1
                    }
                }
            }
        }

        /// Pipe `idx` is ready: read its byte, work, pass a byte on. Returns whether this was
        /// the last read (the caller then ends its runners).
        #[inline]
        fn on_ready(&self, idx: usize, fd: BorrowedFd<'_>) -> bool {
            let measured = self.p.long > 0;
            let began = if measured { self.now() } else { 0 };
            let mut b = [0u8; 1];
            if !matches!(rustix::io::read(fd, &mut b), Ok(1)) {
                self.empty.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            READS.with(|c| c.set(c.get() + 1));
            let long = measured && self.long[idx];
            if measured {
                let written = self.slots[idx].swap(0, Ordering::AcqRel);
                if written != 0 && !long {
                    let k = self.ndelays.fetch_add(1, Ordering::Relaxed);
                    if let Some(d) = self.delays.get(k) {
                        d.store(began.saturating_sub(written), Ordering::Relaxed);
                    }
                }
            }
            let work = if long { self.p.long } else { self.p.work };
            if work > 0 {
                spin(work);
            }
            let prev = self.left.fetch_sub(1, Ordering::AcqRel);
            if prev > 0 {
                self.write_byte(self.next(idx, prev as u64));
                WRITES.with(|c| c.set(c.get() + 1));
            }
            if prev == 1 - self.p.active as i64 {
                self.t_end.store(self.now(), Ordering::Release);
                self.done.store(true, Ordering::Release);
                *self.finished.lock().unwrap() = true;
                self.cv.notify_all();
                return true;
            }
            false
        }

        /// Wait for the last read; a run that never ends lost an event: say so and exit.
        fn wait_done(&self) {
            let g = self.finished.lock().unwrap();
            let (_g, t) = self.cv.wait_timeout_while(g, WATCHDOG, |f| !*f).unwrap();
            if t.timed_out() {
                eprintln!(
                    "{}: not finished after {WATCHDOG:?}: {} of {} reads (an event was lost)",
                    self.what,
                    self.p.writes as i64 - self.left.load(Ordering::Relaxed),
                    self.expected()
                );
                std::process::exit(1);
            }
        }

        /// A runner ends: add its counts (`dispatched`: the events it took).
        fn tally(&self, dispatched: u64) {
            self.reads
                .fetch_add(READS.with(|c| c.replace(0)), Ordering::Relaxed);
            self.writes
                .fetch_add(WRITES.with(|c| c.replace(0)), Ordering::Relaxed);
            self.dispatched.fetch_add(dispatched, Ordering::Relaxed);
        }

        /// Check that the run did exactly the expected work (panics otherwise); its figures.
        fn outcome(&self, probes: &[OwnedFd]) -> Outcome {
            let expected = self.expected();
            let load = |a: &AtomicU64| a.load(Ordering::Acquire);
            let (reads, writes) = (load(&self.reads), load(&self.writes));
            let (dispatched, empty) = (load(&self.dispatched), load(&self.empty));
            let mut unread = 0;
            let mut b = [0u8; 64];
            for fd in probes {
                while let Ok(n @ 1..) = rustix::io::read(fd, &mut b) {
                    unread += n;
                }
            }
            assert!(
                reads == expected
                    && writes == self.p.writes
                    && dispatched == expected + empty
                    && unread == 0
                    && self.left.load(Ordering::Acquire) == -(self.p.active as i64),
                "{}: unequal work: {reads} reads and {writes} writes (expected {expected} and \
                 {}), {dispatched} events dispatched ({empty} found nothing), {unread} bytes \
                 left unread",
                self.what,
                self.p.writes
            );
            let n = self.ndelays.load(Ordering::Acquire).min(self.delays.len());
            let ns = load(&self.t_end).saturating_sub(load(&self.t_start));
            Outcome {
                ns: ns as f64 / expected as f64,
                reads,
                empty,
                delays: self.delays[..n]
                    .iter()
                    .map(|d| d.load(Ordering::Relaxed))
                    .collect(),
            }
        }
    }

    /// What one run measured.
    struct Outcome {
        /// ns per event.
        ns: f64,
        reads: u64,
        /// Events that found nothing to read (counted beside the reads).
        empty: u64,
        /// Queueing scenario: the short events' delays, ns.
        delays: Vec<u64>,
    }

    // ---- The variants ----

    /// A dasynq handler: one pipe's read end.
    struct Reader {
        idx: usize,
        chain: Arc<Chain>,
    }

    impl Handler for Reader {
        type Data = ();
        #[inline]
        fn on_event(&mut self, cx: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
            if let Event::Fd { fd, .. } = ev {
                if self.chain.on_ready(self.idx, fd) {
                    cx.stop();
                }
            }
            Rearm::Rearm
        }
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Kind {
        /// `EventLoop` (`Single` flavour), one thread.
        Single,
        /// `ThreadedLoop` with this many runners.
        Threaded(usize),
        /// One raw one-shot epoll fd shared by this many threads.
        Raw(usize),
        /// One mio `Poll` per thread, pipes sharded.
        Mio(usize),
    }

    fn plural(n: usize) -> &'static str {
        if n == 1 { "" } else { "s" }
    }

    impl Kind {
        fn name(self) -> String {
            match self {
                Kind::Single => "EventLoop (Single), 1 thread".into(),
                Kind::Threaded(n) => format!("ThreadedLoop, {n} runner{}", plural(n)),
                Kind::Raw(n) => format!("raw one-shot epoll, {n} thread{}", plural(n)),
                Kind::Mio(n) => format!("sharded mio, {n} thread{}", plural(n)),
            }
        }

        /// One run: set up, let `drive` start the chain (after every runner is ready) and
        /// wait for its end, check the work.
        fn run(self, p: Params, drive: &dyn Fn(&Chain)) -> Outcome {
            let (r, w) = make_pipes(p.pipes);
            let probes: Vec<OwnedFd> = r.iter().map(|fd| fd.try_clone().expect("dup")).collect();
            let chain = Arc::new(Chain::new(p, self.name(), w));
            match self {
                Kind::Single => run_single(&chain, r, drive),
                Kind::Threaded(n) => run_threaded(&chain, r, n, drive),
                Kind::Raw(n) => run_raw(&chain, r, n, drive),
                Kind::Mio(n) => run_mio(&chain, r, n, drive),
            }
            chain.outcome(&probes)
        }
    }

    /// The throughput scenarios' driver: start the chain, wait for its last read.
    fn chain_drive(c: &Chain) {
        c.start();
        c.wait_done();
    }

    fn register<F: Flavor>(
        lp: &EventLoop<Reader, DefaultBackend, F>,
        r: Vec<OwnedFd>,
        chain: &Arc<Chain>,
    ) {
        for (idx, fd) in r.into_iter().enumerate() {
            let h = Reader {
                idx,
                chain: chain.clone(),
            };
            if lp.add_fd(fd, Interest::READ, FdOptions::new(), h).is_err() {
                panic!("register pipe {idx}");
            }
        }
    }

    fn run_single(chain: &Arc<Chain>, r: Vec<OwnedFd>, drive: &dyn Fn(&Chain)) {
        let barrier = Barrier::new(2);
        std::thread::scope(|s| {
            let barrier = &barrier;
            s.spawn(move || {
                let lp = EventLoop::<Reader, DefaultBackend, Single>::builder()
                    .watchers(chain.p.pipes)
                    .timers(0)
                    .wakers(0)
                    .events(EVENTS)
                    .build()
                    .expect("build");
                register(&lp, r, chain);
                barrier.wait();
                let mut n = 0;
                while !chain.done() {
                    n += lp.run();
                }
                chain.tally(n as u64);
            });
            barrier.wait();
            drive(chain);
        });
    }

    fn run_threaded(chain: &Arc<Chain>, r: Vec<OwnedFd>, runners: usize, drive: &dyn Fn(&Chain)) {
        let lp = ThreadedLoop::<Reader>::builder()
            .watchers(chain.p.pipes)
            .timers(0)
            .wakers(0)
            .events(EVENTS)
            .runners(runners)
            .build()
            .expect("build");
        register(&lp, r, chain);
        let barrier = Barrier::new(runners + 1);
        std::thread::scope(|s| {
            for _ in 0..runners {
                s.spawn(|| {
                    barrier.wait();
                    let mut n = 0;
                    while !chain.done() {
                        n += lp.run();
                    }
                    // A runner that entered `run` after the last handler's stop is ended by
                    // the next one to leave (or returns at once).
                    lp.stop();
                    chain.tally(n as u64);
                });
            }
            barrier.wait();
            drive(chain);
        });
    }

    fn run_raw(chain: &Arc<Chain>, r: Vec<OwnedFd>, threads: usize, drive: &dyn Fn(&Chain)) {
        use epoll::{EventData, EventFlags};
        const STOP: u64 = u64::MAX;
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll");
        let armed = EventFlags::IN | EventFlags::ONESHOT;
        for (i, fd) in r.iter().enumerate() {
            epoll::add(&ep, fd, EventData::new_u64(i as u64), armed).expect("add");
        }
        // Level-triggered and never read: once written, every thread's wait returns.
        let stop = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .expect("eventfd");
        epoll::add(&ep, &stop, EventData::new_u64(STOP), EventFlags::IN).expect("add");
        let barrier = Barrier::new(threads + 1);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    barrier.wait();
                    let mut events: Vec<epoll::Event> = Vec::with_capacity(EVENTS);
                    let mut n = 0u64;
                    while !chain.done() {
                        events.clear();
                        epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), None)
                            .expect("epoll_wait");
                        for e in &events {
                            let data = e.data.u64();
                            if data == STOP {
                                continue;
                            }
                            let idx = data as usize;
                            n += 1;
                            if chain.on_ready(idx, r[idx].as_fd()) {
                                let _ = rustix::io::write(&stop, &1u64.to_ne_bytes());
                            }
                            epoll::modify(&ep, &r[idx], EventData::new_u64(data), armed)
                                .expect("re-arm");
                        }
                    }
                    chain.tally(n);
                });
            }
            barrier.wait();
            drive(chain);
        });
    }

    /// Thread `t`'s shard of `pipes` pipes among `threads`: a contiguous range.
    fn shard(pipes: usize, threads: usize, t: usize) -> std::ops::Range<usize> {
        pipes * t / threads..pipes * (t + 1) / threads
    }

    fn run_mio(chain: &Arc<Chain>, r: Vec<OwnedFd>, threads: usize, drive: &dyn Fn(&Chain)) {
        use mio::unix::SourceFd;
        use mio::{Events, Poll, Token, Waker};
        const STOP: Token = Token(usize::MAX);
        let wakers: Mutex<Vec<Waker>> = Mutex::new(Vec::with_capacity(threads));
        let barrier = Barrier::new(threads + 1);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (wakers, barrier, r) = (&wakers, &barrier, &r);
                s.spawn(move || {
                    let mut poll = Poll::new().expect("mio poll");
                    for i in shard(chain.p.pipes, threads, t) {
                        poll.registry()
                            .register(
                                &mut SourceFd(&r[i].as_raw_fd()),
                                Token(i),
                                mio::Interest::READABLE,
                            )
                            .expect("register");
                    }
                    let waker = Waker::new(poll.registry(), STOP).expect("waker");
                    wakers.lock().unwrap().push(waker);
                    barrier.wait();
                    let mut events = Events::with_capacity(EVENTS);
                    let mut n = 0u64;
                    while !chain.done() {
                        poll.poll(&mut events, None).expect("poll");
                        for e in events.iter() {
                            if e.token() == STOP {
                                continue;
                            }
                            let idx = e.token().0;
                            n += 1;
                            if chain.on_ready(idx, r[idx].as_fd()) {
                                for w in wakers.lock().unwrap().iter() {
                                    let _ = w.wake();
                                }
                            }
                            // mio is edge-triggered: one read per event, as in every variant,
                            // so the fd is re-armed (a byte still in the pipe is reported again).
                            poll.registry()
                                .reregister(
                                    &mut SourceFd(&r[idx].as_raw_fd()),
                                    Token(idx),
                                    mio::Interest::READABLE,
                                )
                                .expect("reregister");
                        }
                    }
                    chain.tally(n);
                });
            }
            barrier.wait();
            drive(chain);
        });
    }

    // ---- Scenarios ----

    /// Run every variant `rounds` times, interleaved (the order rotates each round).
    fn measure(kinds: &[Kind], p: Params, rounds: usize) -> Vec<Vec<Outcome>> {
        let mut out: Vec<Vec<Outcome>> = kinds.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            for k in 0..kinds.len() {
                let i = (k + round) % kinds.len();
                out[i].push(kinds[i].run(p, &chain_drive));
            }
        }
        out
    }

    fn ns_of(out: &[Outcome]) -> Vec<f64> {
        out.iter().map(|o| o.ns).collect()
    }

    /// The p-th percentile (0..=100) of `v` (sorts it); 0 if empty.
    fn percentile(v: &mut [u64], p: f64) -> u64 {
        if v.is_empty() {
            return 0;
        }
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    fn switches(who: libc::c_int) -> u64 {
        // SAFETY: `rusage` is plain integers; all zeroes is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `who` is RUSAGE_SELF or RUSAGE_THREAD and `ru` is a live rusage to fill.
        let r = unsafe { libc::getrusage(who, &mut ru) };
        assert_eq!(r, 0, "getrusage");
        (ru.ru_nvcsw + ru.ru_nivcsw) as u64
    }

    /// Context switches per event (the whole process, and its main thread alone).
    fn context_switches(kind: Kind, events: usize, pause: u64) -> (f64, f64, Outcome) {
        let p = Params {
            pipes: 4,
            active: events,
            writes: 0,
            load: Load::Uniform,
            work: 0,
            long: 0,
        };
        let result = Cell::new((0.0, 0.0));
        let drive = |c: &Chain| {
            // Let every runner go to sleep in its wait.
            std::thread::sleep(Duration::from_millis(20));
            let (s0, m0) = (switches(libc::RUSAGE_SELF), switches(libc::RUSAGE_THREAD));
            // The writer is a child process, so that its own switches (a woken runner often
            // preempts it) are not counted in this process's.
            // SAFETY: the child of this multi-threaded process only writes to pipes, spins,
            // and calls `_exit`: no allocation, no lock, nothing but async-signal-safe calls.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                for i in 0..events {
                    if !matches!(rustix::io::write(&c.w[i % c.p.pipes], b"e"), Ok(1)) {
                        // SAFETY: ends the child without running anything of the parent's.
                        unsafe { libc::_exit(1) };
                    }
                    spin(pause);
                }
                // SAFETY: as above.
                unsafe { libc::_exit(0) };
            }
            assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
            c.wait_done();
            let (s1, m1) = (switches(libc::RUSAGE_SELF), switches(libc::RUSAGE_THREAD));
            let mut status = 0;
            // SAFETY: reaps the child just forked, into a local int.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            assert!(
                r == pid && status == 0,
                "writer child: waitpid {r}, status {status:#x}"
            );
            let n = events as f64;
            result.set(((s1 - s0) as f64 / n, (m1 - m0) as f64 / n));
        };
        let out = kind.run(p, &drive);
        let (all, main) = result.get();
        (all, main, out)
    }

    fn loadavg() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unavailable".into())
    }

    pub fn main() {
        let args: Vec<String> = std::env::args().collect();
        let quick = args.iter().any(|a| a == "--quick");
        let rounds = arg(&args, "--rounds", if quick { 3 } else { 7 }).max(1) as usize;
        let writes = arg(&args, "--writes", if quick { 10_000 } else { 60_000 }).max(1);
        let pipes = arg(&args, "--pipes", 1000).max(2) as usize;
        let active = (arg(&args, "--active", 100) as usize).clamp(1, pipes);
        let qactive = (arg(&args, "--queue-active", 2) as usize).clamp(1, pipes);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let max_threads = (arg(&args, "--threads", cores as u64) as usize).max(2);
        // 2, then doubling, up to the maximum (included).
        let mut counts = vec![2];
        while counts.last().is_some_and(|&n| n * 2 < max_threads) {
            counts.push(counts.last().unwrap() * 2);
        }
        if *counts.last().unwrap() < max_threads {
            counts.push(max_threads);
        }
        let began = Instant::now();
        println!(
            "threads benchmark: {pipes} pipes, {active} active, {rounds} rounds, {cores} cores available"
        );
        println!("load average at start: {}", loadavg());
        let per_us = calibrate();
        let iters = |us: u64| (per_us * us as f64).round() as u64;
        let check = {
            let t = Instant::now();
            for _ in 0..100 {
                spin(iters(20));
            }
            t.elapsed().as_nanos() as f64 / 100.0 / 1000.0
        };
        println!(
            "handler work: {per_us:.0} spin iterations per µs (a 20 µs spin measures {check:.1} µs)"
        );
        if max_threads > 10 {
            println!(
                "note: with more than 10 shards the skew's hot tenth spans several mio shards"
            );
        }

        let mut kinds = vec![Kind::Single, Kind::Threaded(1), Kind::Raw(1)];
        for &n in &counts {
            kinds.extend([Kind::Threaded(n), Kind::Raw(n), Kind::Mio(n)]);
        }
        let at = |k: Kind| kinds.iter().position(|&x| x == k).unwrap();
        // Writes per work level: about the same time per run.
        let writes_at = |us: u64| (writes / (1 + us)).max(active as u64);

        // `--only I`: variant I alone, once per load and work level (for profiling).
        if let Some(i) = args
            .iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
        {
            let k = kinds[i.min(kinds.len() - 1)];
            for load in [Load::Uniform, Load::Skew] {
                for us in WORK_US {
                    let p = Params {
                        pipes,
                        active,
                        writes: writes_at(us),
                        load,
                        work: iters(us),
                        long: 0,
                    };
                    let o = k.run(p, &chain_drive);
                    println!(
                        "{}, {}, {us} µs: {:.1} ns/event ({} events)",
                        k.name(),
                        load.name(),
                        o.ns,
                        o.reads
                    );
                }
            }
            return;
        }

        // Warm up every variant once (page cache, allocator, CPU frequency).
        for &k in &kinds {
            let p = Params {
                pipes,
                active,
                writes: writes / 10,
                load: Load::Uniform,
                work: 0,
                long: 0,
            };
            k.run(p, &chain_drive);
        }

        for load in [Load::Uniform, Load::Skew] {
            println!();
            println!(
                "== {}: writes {} at {} µs of handler work \
                 (median ns/event, median of per-round ratios) ==",
                load.name(),
                WORK_US.map(writes_at).map(|w| w.to_string()).join(" / "),
                WORK_US.map(|u| u.to_string()).join(" / "),
            );
            if load == Load::Skew {
                println!(
                    "   80% of the writes to pipes 0..{} (all in mio's first shard), 20% to the others",
                    hot_pipes(pipes)
                );
            }
            // results[work level][variant][round]
            let mut results = Vec::new();
            for us in WORK_US {
                let p = Params {
                    pipes,
                    active,
                    writes: writes_at(us),
                    load,
                    work: iters(us),
                    long: 0,
                };
                results.push(measure(&kinds, p, rounds));
            }
            println!(
                "   {:<32}{:>12}{:>12}{:>12}   events per run (checked)",
                "variant", "0 µs", "2 µs", "20 µs"
            );
            for (i, k) in kinds.iter().enumerate() {
                let mut line = format!("   {:<32}", k.name());
                let mut events = Vec::new();
                for r in &results {
                    line += &format!("{:>12.1}", median(&mut ns_of(&r[i])));
                    let empty: u64 = r[i].iter().map(|o| o.empty).sum();
                    let reads = r[i][0].reads;
                    events.push(if empty > 0 {
                        format!("{reads} (+{empty} empty)")
                    } else {
                        reads.to_string()
                    });
                }
                println!("{line}   {}", events.join(" / "));
            }
            // Throughput ratio a over b: b's time per event over a's.
            let tput = |w: usize, a: Kind, b: Kind| {
                median_ratio(&ns_of(&results[w][at(b)]), &ns_of(&results[w][at(a)]))
            };
            let (t1, t2) = (Kind::Threaded(1), Kind::Threaded(2));
            println!("   ThreadedLoop 2 runners / 1 runner, throughput:");
            for (w, target) in [(0, "> 1.0"), (1, ">= 1.6"), (2, ">= 1.9")] {
                println!(
                    "      at {:>2} µs: {:>6.2}x   (target {target}{})",
                    WORK_US[w],
                    tput(w, t2, t1),
                    if load == Load::Uniform {
                        ""
                    } else {
                        ", stated for uniform load"
                    }
                );
            }
            for &n in counts.iter().skip(1) {
                let tn = Kind::Threaded(n);
                println!(
                    "   ThreadedLoop {n} runners / 1 runner, throughput: {} (0 / 2 / 20 µs)",
                    (0..3)
                        .map(|w| format!("{:.2}x", tput(w, tn, t1)))
                        .collect::<Vec<_>>()
                        .join(" / ")
                );
            }
            println!(
                "   ThreadedLoop 2 runners / raw shared epoll 2 threads, throughput at 2 µs: \
                 {:.2}x   (target >= 0.9)",
                tput(1, t2, Kind::Raw(2))
            );
            println!(
                "   ThreadedLoop 1 runner / raw one-shot epoll 1 thread, cost per event at 0 µs: \
                 {:.2}x   (target <= 1.15)",
                median_ratio(
                    &ns_of(&results[0][at(t1)]),
                    &ns_of(&results[0][at(Kind::Raw(1))])
                )
            );
            println!(
                "   ThreadedLoop 2 runners / sharded mio 2 threads, throughput: {} (0 / 2 / 20 µs)   \
                 (target >= 1.3 under skew)",
                (0..3)
                    .map(|w| format!("{:.2}x", tput(w, t2, Kind::Mio(2))))
                    .collect::<Vec<_>>()
                    .join(" / ")
            );
            println!(
                "   EventLoop (Single) / ThreadedLoop 1 runner, cost per event: {} (0 / 2 / 20 µs)",
                (0..3)
                    .map(|w| format!(
                        "{:.2}x",
                        median_ratio(
                            &ns_of(&results[w][at(Kind::Single)]),
                            &ns_of(&results[w][at(t1)])
                        )
                    ))
                    .collect::<Vec<_>>()
                    .join(" / ")
            );
            println!("   ({:.1} s so far)", began.elapsed().as_secs_f64());
        }

        // Queueing delay.
        let qwrites = (writes / 8).max(qactive as u64);
        let qkinds = [
            Kind::Threaded(1),
            Kind::Threaded(2),
            Kind::Raw(1),
            Kind::Raw(2),
        ];
        let p = Params {
            pipes,
            active: qactive,
            writes: qwrites,
            load: Load::Rings,
            work: 0,
            long: iters(LONG_US),
        };
        let long_share = (0..pipes)
            .filter(|&i| mix(i as u64 ^ 0x5eed) % 10 == 0)
            .count() as f64
            / pipes as f64;
        println!();
        println!(
            "== queueing delay: {qactive} bytes in flight, each in its own ring of pipes, {qwrites} writes, \
             {:.1}% of the pipes' handlers spin {LONG_US} µs, the rest 0 ==",
            long_share * 100.0
        );
        println!(
            "   delay from the write to the start of the handler, short events (median over rounds)"
        );
        let q = measure(&qkinds, p, rounds);
        let pct = |out: &[Outcome], at: f64| -> Vec<f64> {
            out.iter()
                .map(|o| percentile(&mut o.delays.clone(), at) as f64)
                .collect()
        };
        println!(
            "   {:<32}{:>12}{:>12}{:>12}   events per run (checked), short events measured",
            "variant", "p50 µs", "p99 µs", "ns/event"
        );
        for (i, k) in qkinds.iter().enumerate() {
            println!(
                "   {:<32}{:>12.1}{:>12.1}{:>12.1}   {} ({})",
                k.name(),
                median(&mut pct(&q[i], 50.0)) / 1000.0,
                median(&mut pct(&q[i], 99.0)) / 1000.0,
                median(&mut ns_of(&q[i])),
                q[i][0].reads,
                q[i][0].delays.len()
            );
        }
        println!(
            "   p99 delay, ThreadedLoop 2 runners / 1 runner: {:.2}   (target <= 0.33)",
            median_ratio(&pct(&q[1], 99.0), &pct(&q[0], 99.0))
        );
        println!("   ({:.1} s so far)", began.elapsed().as_secs_f64());

        // Context switches with sparse events.
        let sparse = if quick { 500 } else { 2000 };
        let pause_us = 100;
        println!();
        println!(
            "== context switches: {sparse} sparse events (one byte at a time over 4 pipes, \
             {pause_us} µs apart), median over rounds =="
        );
        for k in [Kind::Threaded(4), Kind::Raw(4)] {
            let (mut all, mut main, mut reads) = (Vec::new(), Vec::new(), 0);
            for _ in 0..rounds {
                let (a, m, out) = context_switches(k, sparse, iters(pause_us));
                all.push(a);
                main.push(m);
                reads = out.reads;
            }
            println!(
                "   {:<32} {:>5.2} per event (RUSAGE_SELF; the main thread's own: {:.2}){}   \
                 events {reads} (checked)",
                k.name(),
                median(&mut all),
                median(&mut main),
                if k == Kind::Threaded(4) {
                    "   (target <= 1.1)"
                } else {
                    ""
                }
            );
        }

        println!();
        println!("load average at end: {}", loadavg());
        println!("total {:.1} s", began.elapsed().as_secs_f64());
    }
}

#[cfg(dasynq_epoll)]
fn main() {
    imp::main()
}

/// The floors are Linux's (raw epoll): elsewhere there is nothing to compare against.
#[cfg(not(dasynq_epoll))]
fn main() {
    eprintln!("threads: this benchmark compares dasynq with raw epoll and runs on Linux only");
}
