//! Instruction counts of the hot paths, under callgrind (through gungraun): deterministic on
//! a noisy machine, so `ci/check` holds each to its committed budget (`budgets.txt`, checked
//! by `ci/instructions`).
//!
//! Each benchmark's setup (not counted) builds the loop and its watchers; the counted part
//! is the work named, and the per-operation figure is the count divided by the operations
//! made (printed by `ci/instructions`). Run: `ci/instructions` (it builds with
//! `--cfg rustix_use_libc`: rustix's vDSO parsing does not run under valgrind).

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod imp {
    use std::cell::Cell;
    use std::hint::black_box;
    use std::os::fd::{BorrowedFd, OwnedFd};
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use dasynq::{
        Clock, Cx, Deadline, DefaultBackend, Event, EventLoop, FdOptions, Flavor, Handler,
        Interest, Priority, Rearm, Signal, SignalSet, Single, Threaded, Waker, WatchId,
    };
    use gungraun::{library_benchmark, library_benchmark_group};

    /// Operations each benchmark counts (divide its instructions by these).
    pub const PIPE_EVENTS: u64 = 10_000 + 100;
    pub const PASSES: u64 = 1_000;
    pub const REARMS_1K: u64 = 1_000;
    pub const REARMS_1M: u64 = 1_000_000;
    pub const EXPIRIES: u64 = 1_000;
    pub const SIGNALS: u64 = 1_000;
    pub const WAKES: u64 = 1_000;

    fn pipe() -> (OwnedFd, OwnedFd) {
        rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::NONBLOCK | rustix::pipe::PipeFlags::CLOEXEC,
        )
        .expect("pipe")
    }

    // ------------------------------------------------------------------ pipe chain

    pub struct Chain {
        w: Vec<OwnedFd>,
        left: Cell<u64>,
        count: Cell<u64>,
        fired: Cell<u64>,
    }

    impl Chain {
        /// 1000 pipes (libevent's bench.c), their read ends handed back; 10,000 writes to
        /// come after the first 100 (`start`).
        fn new() -> (Vec<OwnedFd>, Rc<Chain>) {
            let (mut rs, mut ws) = (Vec::new(), Vec::new());
            for _ in 0..1000 {
                let (r, w) = pipe();
                rs.push(r);
                ws.push(w);
            }
            let chain = Rc::new(Chain {
                w: ws,
                left: Cell::new(10_000),
                count: Cell::new(0),
                fired: Cell::new(0),
            });
            (rs, chain)
        }

        /// The first 100 bytes in flight, spread over the pipes.
        fn start(&self) {
            for i in 0..100 {
                let _ = rustix::io::write(&self.w[i * 10], b"e");
                self.fired.set(self.fired.get() + 1);
            }
        }

        /// An event on pipe `idx`: read its byte, and pass one on while writes remain.
        #[inline(always)]
        fn take(&self, fd: BorrowedFd<'_>, idx: usize) {
            let mut b = [0u8; 1];
            if let Ok(1) = rustix::io::read(fd, &mut b) {
                self.count.set(self.count.get() + 1);
                if self.left.get() > 0 {
                    let next = (idx + 1) % self.w.len();
                    let _ = rustix::io::write(&self.w[next], b"e");
                    self.left.set(self.left.get() - 1);
                    self.fired.set(self.fired.get() + 1);
                }
            }
        }

        /// Run the loop until every byte written was read.
        fn drain<H: Handler<Data = ()>, F: Flavor>(&self, lp: &EventLoop<H, DefaultBackend, F>) {
            while self.count.get() < self.fired.get() {
                lp.run();
            }
            assert_eq!(self.count.get(), PIPE_EVENTS);
        }
    }

    pub struct Reader {
        idx: usize,
        chain: Rc<Chain>,
    }

    impl Handler for Reader {
        type Data = ();
        fn on_event(&mut self, _: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
            if let Some(fd) = ev.fd() {
                self.chain.take(fd, self.idx);
            }
            Rearm::Rearm
        }
    }

    /// The pipe chain's reader with an idle timer, re-armed by every event it handles (a
    /// type of its own, so the plain chain's count is not changed by the timer's code).
    pub struct IdleReader {
        idx: usize,
        chain: Rc<Chain>,
        timer: Option<WatchId>,
        /// How the idle timer is re-armed.
        idle: Deadline,
    }

    impl Handler for IdleReader {
        type Data = ();
        fn on_event(&mut self, cx: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
            if let Some(fd) = ev.fd() {
                self.chain.take(fd, self.idx);
                if let Some(t) = self.timer {
                    cx.arm_timer(t, self.idle, None).expect("re-arm");
                }
            }
            Rearm::Rearm
        }
    }

    /// The idle timeout of `pipe_chain_idle` (never reached).
    const IDLE: Duration = Duration::from_secs(60);

    /// libevent's bench.c: 1000 pipes, 100 bytes in flight, 10,000 more writes.
    pub fn chain_setup() -> (EventLoop<Reader>, Rc<Chain>) {
        chain_setup_in::<Single>(|_| Priority::DEFAULT)
    }

    /// The same with the pipes in three priorities (in turn), so every batch of mixed
    /// events is ordered by the pending queue's heap instead of its FIFO.
    pub fn chain_priorities_setup() -> (EventLoop<Reader>, Rc<Chain>) {
        chain_setup_in::<Single>(|idx| Priority(idx as i32 % 3))
    }

    /// The same on a threaded loop run by one thread (one-shot registrations, re-armed by
    /// the dispatching thread after each handler).
    pub fn chain_threaded_setup() -> (ThreadedChainLoop, Rc<Chain>) {
        chain_setup_in::<Threaded>(|_| Priority::DEFAULT)
    }

    pub type ThreadedChainLoop = EventLoop<Reader, DefaultBackend, Threaded>;

    fn chain_setup_in<F: Flavor>(
        priority: impl Fn(usize) -> Priority,
    ) -> (EventLoop<Reader, DefaultBackend, F>, Rc<Chain>) {
        let (rs, chain) = Chain::new();
        let lp = EventLoop::<Reader, DefaultBackend, F>::builder()
            .watchers(1000)
            .timers(0)
            .wakers(0)
            .runners(1)
            .build()
            .expect("build");
        for (idx, r) in rs.into_iter().enumerate() {
            let h = Reader {
                idx,
                chain: chain.clone(),
            };
            let options = FdOptions::new().priority(priority(idx));
            lp.add_fd(r, Interest::READ, options, h).expect("add");
        }
        chain.start();
        (lp, chain)
    }

    /// The same, with an idle timer per pipe, re-armed by each event (from a clock read).
    pub fn chain_idle_setup() -> (EventLoop<IdleReader>, Rc<Chain>) {
        idle_setup(Deadline::After(IDLE))
    }

    /// The same, re-armed from the loop's time (`Deadline::AfterLoopTime`).
    pub fn chain_idle_loop_time_setup() -> (EventLoop<IdleReader>, Rc<Chain>) {
        idle_setup(Deadline::AfterLoopTime(IDLE))
    }

    fn idle_setup(idle: Deadline) -> (EventLoop<IdleReader>, Rc<Chain>) {
        let (rs, chain) = Chain::new();
        let lp = EventLoop::<IdleReader>::builder()
            .watchers(2000)
            .timers(1000)
            .wakers(0)
            .build()
            .expect("build");
        for (idx, r) in rs.into_iter().enumerate() {
            let reader = |timer| IdleReader {
                idx,
                chain: chain.clone(),
                timer,
                idle,
            };
            let t = lp
                .add_timer(Clock::Monotonic, Priority::DEFAULT, reader(None))
                .expect("add timer");
            lp.arm_timer(t, Deadline::After(IDLE), None).expect("arm");
            lp.add_fd(r, Interest::READ, FdOptions::new(), reader(Some(t)))
                .expect("add");
        }
        chain.start();
        (lp, chain)
    }

    #[library_benchmark]
    #[bench::events(setup = chain_setup)]
    #[bench::priorities(setup = chain_priorities_setup)]
    pub fn pipe_chain(s: (EventLoop<Reader>, Rc<Chain>)) -> (EventLoop<Reader>, Rc<Chain>) {
        s.1.drain(&s.0);
        s
    }

    #[library_benchmark]
    #[bench::events(setup = chain_threaded_setup)]
    pub fn pipe_chain_threaded(
        s: (ThreadedChainLoop, Rc<Chain>),
    ) -> (ThreadedChainLoop, Rc<Chain>) {
        s.1.drain(&s.0);
        s
    }

    // The pipe chain, each event also re-arming its pipe's idle timer (`cx.arm_timer`): from
    // a clock read per re-arm (`events`), and from the loop's time (`loop_time`:
    // `Deadline::AfterLoopTime`, as libev's `ev_timer_again` from `ev_now`, a clock read per
    // pass).
    #[library_benchmark]
    #[bench::events(setup = chain_idle_setup)]
    #[bench::loop_time(setup = chain_idle_loop_time_setup)]
    pub fn pipe_chain_idle(
        s: (EventLoop<IdleReader>, Rc<Chain>),
    ) -> (EventLoop<IdleReader>, Rc<Chain>) {
        s.1.drain(&s.0);
        s
    }

    // ------------------------------------------------------------------ one event per pass

    pub struct Once;

    impl Handler for Once {
        type Data = ();
        fn on_event(&mut self, _: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
            if let Some(fd) = ev.fd() {
                let mut b = [0u8; 1];
                let _ = rustix::io::read(fd, &mut b);
            }
            Rearm::Rearm
        }
    }

    pub fn once_setup() -> (EventLoop<Once>, OwnedFd) {
        let (r, w) = pipe();
        let lp = EventLoop::<Once>::builder()
            .watchers(4)
            .build()
            .expect("build");
        lp.add_fd(r, Interest::READ, FdOptions::new(), Once)
            .expect("add");
        (lp, w)
    }

    // One write, one pass with one event (`run` of one handler), a thousand times.
    #[library_benchmark]
    #[bench::passes(setup = once_setup)]
    pub fn one_event_pass(s: (EventLoop<Once>, OwnedFd)) -> (EventLoop<Once>, OwnedFd) {
        let (lp, w) = s;
        for _ in 0..PASSES {
            let _ = rustix::io::write(&w, b"e");
            black_box(lp.run());
        }
        (lp, w)
    }

    // ------------------------------------------------------------------ timer re-arm

    pub struct Tick;

    impl Handler for Tick {
        type Data = ();
        fn on_event(&mut self, _: &Cx<'_, Self>, _: &mut (), _: Event<'_>) -> Rearm {
            Rearm::Rearm
        }
    }

    fn deadline(i: u64, shift: u64) -> Deadline {
        Deadline::After(
            Duration::from_secs(3600 + shift) + Duration::from_micros((i * 7919) % 3_600_000_000),
        )
    }

    pub fn timers_setup(n: u64) -> (EventLoop<Tick>, Vec<WatchId>) {
        let lp = EventLoop::<Tick>::builder()
            .watchers(n as usize)
            .timers(n as usize)
            .wakers(0)
            .build()
            .expect("build");
        let ids: Vec<WatchId> = (0..n)
            .map(|i| {
                let t = lp
                    .add_timer(Clock::Monotonic, Priority::DEFAULT, Tick)
                    .expect("add");
                lp.arm_timer(t, deadline(i, 0), None).expect("arm");
                t
            })
            .collect();
        (lp, ids)
    }

    // Every timer pushed back a minute (an idle timer on activity), once each.
    #[library_benchmark]
    #[bench::timers_1k(args = (REARMS_1K), setup = timers_setup)]
    #[bench::timers_1m(args = (REARMS_1M), setup = timers_setup)]
    pub fn timer_rearm(s: (EventLoop<Tick>, Vec<WatchId>)) -> (EventLoop<Tick>, Vec<WatchId>) {
        let (lp, ids) = s;
        for (i, &id) in ids.iter().enumerate() {
            lp.arm_timer(id, deadline(i as u64, 60), None)
                .expect("re-arm");
        }
        (lp, ids)
    }

    // The same re-arm with `Deadline::At` from one clock reading (no clock read per arm: the
    // work libev's `ev_timer_again` does from its cached loop time).
    #[library_benchmark]
    #[bench::timers_1k(args = (REARMS_1K), setup = timers_setup)]
    pub fn timer_rearm_at(s: (EventLoop<Tick>, Vec<WatchId>)) -> (EventLoop<Tick>, Vec<WatchId>) {
        let (lp, ids) = s;
        let base = Instant::now();
        for (i, &id) in ids.iter().enumerate() {
            let d = Duration::from_secs(3600 + 60)
                + Duration::from_micros((i as u64 * 7919) % 3_600_000_000);
            lp.arm_timer(id, Deadline::At(base + d), None)
                .expect("re-arm");
        }
        (lp, ids)
    }

    // ------------------------------------------------------------------ timer expiry

    pub struct Expired;

    impl Handler for Expired {
        type Data = u64;
        fn on_event(&mut self, _: &Cx<'_, Self>, n: &mut u64, _: Event<'_>) -> Rearm {
            *n += 1;
            Rearm::Rearm
        }
    }

    /// A thousand timers, all due now (their expiry waits for the first poll).
    pub fn expiry_setup() -> EventLoop<Expired> {
        let lp = EventLoop::<Expired>::builder()
            .watchers(EXPIRIES as usize)
            .timers(EXPIRIES as usize)
            .wakers(0)
            .build()
            .expect("build");
        for _ in 0..EXPIRIES {
            let t = lp
                .add_timer(Clock::Monotonic, Priority::DEFAULT, Expired)
                .expect("add");
            lp.arm_timer(t, Deadline::After(Duration::ZERO), None)
                .expect("arm");
        }
        lp
    }

    // Every timer expires and its handler runs once: heap pops, queueing, dispatch.
    #[library_benchmark]
    #[bench::timers_1k(setup = expiry_setup)]
    pub fn timer_expiry(lp: EventLoop<Expired>) -> EventLoop<Expired> {
        let mut n = 0u64;
        while n < EXPIRIES {
            lp.poll_with(&mut n);
        }
        assert_eq!(n, EXPIRIES);
        lp
    }

    // ------------------------------------------------------------------ signal burst

    pub struct Sig;

    impl Handler for Sig {
        type Data = u64;
        fn on_event(&mut self, _: &Cx<'_, Self>, n: &mut u64, _: Event<'_>) -> Rearm {
            *n += 1;
            Rearm::Rearm
        }
    }

    fn burst_signal() -> Signal {
        Signal::rt(1).expect("a real-time signal")
    }

    /// A thousand instances of a real-time signal queued to this process before the loop
    /// runs (the benchmark process is single-threaded, with the signal blocked).
    pub fn burst_setup() -> EventLoop<Sig> {
        let sig = burst_signal();
        dasynq::block_signals(SignalSet::of(&[sig])).expect("block");
        let lp = EventLoop::<Sig>::builder()
            .watchers(4)
            .build()
            .expect("build");
        lp.add_signal(sig, Priority::DEFAULT, Sig).expect("signal");
        let pid = std::process::id() as libc::pid_t;
        for i in 0..SIGNALS {
            let v = libc::sigval {
                sival_ptr: i as usize as *mut libc::c_void,
            };
            // SAFETY: sigqueue to this process, with a plain integer value.
            let r = unsafe { libc::sigqueue(pid, sig.raw(), v) };
            assert_eq!(r, 0, "sigqueue (RLIMIT_SIGPENDING?)");
        }
        lp
    }

    // Drain the burst: a thousand handler calls.
    #[library_benchmark]
    #[bench::instances(setup = burst_setup)]
    pub fn signal_burst(lp: EventLoop<Sig>) -> EventLoop<Sig> {
        let mut n = 0u64;
        while n < SIGNALS {
            lp.run_with(&mut n);
        }
        lp
    }

    // ------------------------------------------------------------------ wake

    pub struct Woken;

    impl Handler for Woken {
        type Data = ();
        fn on_event(&mut self, _: &Cx<'_, Self>, _: &mut (), _: Event<'_>) -> Rearm {
            Rearm::Rearm
        }
    }

    pub fn wake_setup() -> (EventLoop<Woken>, Waker) {
        let lp = EventLoop::<Woken>::builder()
            .watchers(4)
            .build()
            .expect("build");
        let (_id, waker) = lp.add_wake(Priority::DEFAULT, Woken).expect("wake");
        (lp, waker)
    }

    // A wake and the pass that handles it, a thousand times (on one thread: the wake path
    // and the loop's side of it; the cross-thread round trip is `benches/threads.rs`).
    #[library_benchmark]
    #[bench::wakes(setup = wake_setup)]
    pub fn wake(s: (EventLoop<Woken>, Waker)) -> (EventLoop<Woken>, Waker) {
        let (lp, waker) = s;
        for _ in 0..WAKES {
            waker.wake();
            black_box(lp.run());
        }
        (lp, waker)
    }

    library_benchmark_group!(
        name = hot_paths;
        benchmarks = pipe_chain, pipe_chain_threaded, pipe_chain_idle, one_event_pass, timer_rearm, timer_rearm_at, timer_expiry, signal_burst, wake
    );
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
use imp::hot_paths;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
gungraun::main!(library_benchmark_groups = hot_paths);

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn main() {
    eprintln!("instructions: callgrind counts are taken on x86_64 Linux only");
}
