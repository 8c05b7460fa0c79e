//! The pipe chain's shared parts: its parameters, pipes and counters, and dasynq's variant
//! (`benches/pipe_chain.rs`, and `peers/benches/pipe_chain_libev.rs` beside libev's).

use std::cell::Cell;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::time::Instant;

use dasynq::{
    Clock, Cx, Deadline, Event, EventLoop, FdOptions, Flavor, Handler, Interest, Priority, Rearm,
    WatchId,
};

#[derive(Clone, Copy)]
pub struct Params {
    pub pipes: usize,
    pub active: usize,
    pub writes: u64,
    /// Unix stream socket pairs instead of pipes.
    pub unix: bool,
    /// Each pipe has an idle timer, re-armed (`IDLE` from now) on every event it handles.
    pub idle: bool,
    /// The idle timers count from the loop's time (`Deadline::AfterLoopTime`: a clock read
    /// per pass, as libev's `ev_timer_again` counts from `ev_now`), not from a clock read
    /// per re-arm (`Deadline::After`, as the raw epoll variants do).
    pub loop_time: bool,
}

impl Params {
    /// The scenario, for the heading each bench prints.
    pub fn describe(&self) -> String {
        format!(
            "{} {}, {} active{}, {} writes",
            self.pipes,
            if self.unix {
                "unix socket pairs"
            } else {
                "pipes"
            },
            self.active,
            match (self.idle, self.loop_time) {
                (true, false) => ", an idle timer re-armed per event",
                (true, true) => ", an idle timer re-armed per event from the loop's time",
                _ => "",
            },
            self.writes,
        )
    }
}

/// The idle timeout of the idle-timer scenario: long enough never to expire in a run.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(60);

pub struct Pipes {
    pub r: Vec<OwnedFd>,
    pub w: Vec<OwnedFd>,
}

pub fn make_pipes(p: Params) -> Pipes {
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
pub struct Chain {
    pub w: Vec<OwnedFd>,
    pub writes: Cell<u64>,
    pub count: Cell<u64>,
    pub fired: Cell<u64>,
}

impl Chain {
    pub fn new(w: Vec<OwnedFd>, writes: u64) -> Self {
        Chain {
            w,
            writes: Cell::new(writes),
            count: Cell::new(0),
            fired: Cell::new(0),
        }
    }
    pub fn start(&self, p: Params) {
        let space = p.pipes / p.active;
        for i in 0..p.active {
            let _ = rustix::io::write(&self.w[i * space], b"e");
            self.fired.set(self.fired.get() + 1);
        }
    }
    /// One byte was read from pipe `idx`: pass it on.
    #[inline]
    pub fn forward(&self, idx: usize) {
        self.count.set(self.count.get() + 1);
        let left = self.writes.get();
        if left > 0 {
            let next = if idx + 1 == self.w.len() { 0 } else { idx + 1 };
            let _ = rustix::io::write(&self.w[next], b"e");
            self.writes.set(left - 1);
            self.fired.set(self.fired.get() + 1);
        }
    }
    /// An event on pipe `idx`: read its byte and pass it on. One read per event in every
    /// variant, as dasynq's handler makes (the edge-triggered ones too: each write to a pipe
    /// is a new edge, and the count check catches a lost one); reading until EAGAIN would
    /// add a failing read per event to some variants alone.
    #[inline]
    pub fn take(&self, fd: BorrowedFd<'_>, idx: usize) {
        let mut b = [0u8; 1];
        if let Ok(1) = rustix::io::read(fd, &mut b) {
            self.forward(idx);
        }
    }

    pub fn done(&self) -> bool {
        self.count.get() == self.fired.get()
    }
}

pub const EVENTS: usize = 256;

pub struct Reader {
    idx: usize,
    chain: Rc<Chain>,
    /// The pipe's idle timer (idle-timer scenario), re-armed on each event.
    timer: Option<WatchId>,
    /// How it is re-armed (`Params::loop_time`).
    idle: Deadline,
}

impl Handler for Reader {
    type Data = ();
    #[inline]
    fn on_event(&mut self, cx: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
        match ev {
            Event::Fd { fd, .. } => {
                self.chain.take(fd, self.idx);
                if let Some(t) = self.timer {
                    cx.arm_timer(t, self.idle, None)
                        .expect("re-arm the idle timer");
                }
            }
            Event::Timer { .. } => panic!("an idle timer expired: the run took over {IDLE:?}"),
            _ => {}
        }
        Rearm::Rearm
    }
}

pub fn run_dasynq<F: Flavor>(p: Params) -> Outcome {
    let pipes = make_pipes(p);
    let chain = Rc::new(Chain::new(pipes.w, p.writes));
    let timers = if p.idle { p.pipes } else { 0 };
    let lp = EventLoop::<Reader, dasynq::DefaultBackend, F>::builder()
        .watchers(p.pipes + timers)
        .timers(timers)
        .wakers(0)
        .events(EVENTS)
        .runners(1)
        .build()
        .expect("build");
    let idle = if p.loop_time {
        Deadline::AfterLoopTime(IDLE)
    } else {
        Deadline::After(IDLE)
    };
    for (idx, r) in pipes.r.into_iter().enumerate() {
        let timer = if p.idle {
            let reader = Reader {
                idx,
                chain: chain.clone(),
                timer: None,
                idle,
            };
            let t = lp
                .add_timer(Clock::Monotonic, Priority::DEFAULT, reader)
                .expect("add timer");
            lp.arm_timer(t, Deadline::After(IDLE), None).expect("arm");
            Some(t)
        } else {
            None
        };
        lp.add_fd(
            r,
            Interest::READ,
            FdOptions::new(),
            Reader {
                idx,
                chain: chain.clone(),
                timer,
                idle,
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
pub const LOST: std::time::Duration = std::time::Duration::from_secs(5);
