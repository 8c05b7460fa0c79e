//! What handlers see, compared between the real kernel and the simulations: the same
//! programs (files made, watched through the loop with every interest and as bidirectional
//! watchers, enabled, disabled, removed; the other end written, read, shut down, closed;
//! `poll` in between) run on `Epoll<LinuxEpoll>`, `Epoll<EpollSim>` and the `Sim` backend,
//! in both flavours, and every handler call of every `poll` must be the same: which watcher,
//! which half, what readiness.
//!
//! The kernel-level comparison is `epoll_differential.rs`; this one holds the loop, the
//! backend and the simulations to the real kernel together.

#![cfg(dasynq_epoll)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use dasynq::backend::epoll::LinuxEpoll;
use dasynq::backend::{Backend, Epoll};
use dasynq::sim::{EpollSim, EpollTables, Sim, SimTables};
use dasynq::{
    BidiOptions, Cx, Event, EventLoop, FdOptions, Flavor, Handler, Interest, Priority, Readiness,
    Rearm, Removed, Single, Threaded, WatchId,
};

#[path = "differential/files.rs"]
mod files;
use files::{Files, Kind, Real, Simulated};

/// A world of files and a backend on the same kernel.
trait World: Files + Clone + Send + Sync + 'static {
    type B: Backend;
    fn backend(&self) -> Self::B;
}

impl World for Real {
    type B = Epoll<LinuxEpoll>;
    fn backend(&self) -> Self::B {
        Epoll::new().unwrap()
    }
}

impl World for Simulated<EpollTables> {
    type B = Epoll<EpollSim>;
    fn backend(&self) -> Self::B {
        Epoll::with_kernel(self.0.clone()).unwrap()
    }
}

impl World for Simulated<SimTables> {
    type B = Sim;
    fn backend(&self) -> Self::B {
        self.0.clone()
    }
}

/// A handler call: (watcher, half, readiness).
type Call = (usize, u8, Readiness);

type Reader = Arc<dyn Fn(BorrowedFd<'_>) + Send + Sync>;

struct Rec {
    watcher: usize,
    log: Arc<Mutex<Vec<Call>>>,
    /// Read everything readable when called (else leave it, and see it again).
    drain: Option<Reader>,
    rearm: Rearm,
}

impl Handler for Rec {
    type Data = ();
    fn on_event(&mut self, _cx: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
        let (half, fd, ready) = match ev {
            Event::Fd { fd, ready } => (0, fd, ready),
            Event::Read { fd, ready } => (1, fd, ready),
            Event::Write { fd, ready } => (2, fd, ready),
            _ => return Rearm::Disarm,
        };
        self.log.lock().unwrap().push((self.watcher, half, ready));
        if let (Some(d), true) = (&self.drain, ready.is_readable()) {
            d(fd);
        }
        self.rearm
    }
    fn on_removed(self, _cx: &Cx<'_, Self>, _removed: Removed) {}
}

#[derive(Copy, Clone, Debug)]
enum Op {
    /// Make a pair (or a file) and watch its first end: (kind, interest, bidi, drain,
    /// rearm again, watch the write end of a pipe instead).
    Watch(Kind, Interest, bool, bool, bool),
    Write(usize, usize),
    Read(usize, usize),
    ShutdownWrite(usize),
    Close(usize),
    Enable(usize),
    Disable(usize),
    Remove(usize),
    Poll,
}

struct Run<W: World, F: Flavor> {
    w: W,
    lp: EventLoop<Rec, W::B, F>,
    log: Arc<Mutex<Vec<Call>>>,
    /// Per watcher: its id and the other end of its pair.
    watched: Vec<(Option<WatchId>, Option<OwnedFd>)>,
}

impl<W: World, F: Flavor> Run<W, F> {
    fn new(w: W) -> Self {
        let lp = EventLoop::<Rec, W::B, F>::builder()
            .watchers(64)
            .build_with(w.backend())
            .unwrap();
        Run {
            w,
            lp,
            log: Arc::default(),
            watched: Vec::new(),
        }
    }

    fn other(&self, i: usize) -> Option<BorrowedFd<'_>> {
        self.watched.get(i)?.1.as_ref().map(|f| f.as_fd())
    }

    fn step(&mut self, op: Op) -> String {
        match op {
            Op::Watch(kind, interest, bidi, drain, rearm) => {
                let i = self.watched.len();
                let (mine, other) = match kind {
                    Kind::PipeRead => {
                        let (r, w) = self.w.pipe();
                        (r, Some(w))
                    }
                    Kind::PipeWrite => {
                        let (r, w) = self.w.pipe();
                        (w, Some(r))
                    }
                    Kind::Unix => {
                        let (a, b) = self.w.unix_pair();
                        (a, Some(b))
                    }
                    Kind::Tcp => {
                        let (a, b) = self.w.tcp_pair();
                        self.w.settle();
                        (a, Some(b))
                    }
                    Kind::File => (self.w.file(), None),
                };
                let w = self.w.clone();
                let rec = Rec {
                    watcher: i,
                    log: self.log.clone(),
                    drain: drain.then(|| {
                        // (A bounded drain: a regular file has data without end.)
                        Arc::new(move |fd: BorrowedFd<'_>| {
                            for _ in 0..4 {
                                if !matches!(w.read(fd, 65536), Ok(n) if n > 0) {
                                    break;
                                }
                            }
                        }) as Reader
                    }),
                    rearm: if rearm { Rearm::Rearm } else { Rearm::Disarm },
                };
                // Each watcher its own priority: the loop alone decides the order of a batch.
                let p = Priority(i as i32);
                let id = if bidi {
                    self.lp
                        .add_bidi(mine, BidiOptions::new().priorities(p, p), rec)
                } else {
                    self.lp
                        .add_fd(mine, interest, FdOptions::new().priority(p), rec)
                };
                let r = format!("{:?}", id.as_ref().map(|_| ()).map_err(|e| e.error()));
                self.watched.push((id.ok(), other));
                r
            }
            Op::Write(i, n) => match self.other(i) {
                Some(fd) => {
                    let r = self.w.write(fd, n);
                    self.w.settle();
                    format!("{r:?}")
                }
                None => String::new(),
            },
            Op::Read(i, n) => match self.other(i) {
                Some(fd) => {
                    let r = self.w.read(fd, n);
                    self.w.settle();
                    format!("{r:?}")
                }
                None => String::new(),
            },
            Op::ShutdownWrite(i) => {
                if let Some(fd) = self.other(i) {
                    self.w.shutdown_write(fd);
                    self.w.settle();
                }
                String::new()
            }
            Op::Close(i) => {
                if let Some(fd) = self.watched.get_mut(i).and_then(|w| w.1.take()) {
                    self.w.close(fd);
                    self.w.settle();
                }
                String::new()
            }
            Op::Enable(i) | Op::Disable(i) | Op::Remove(i) => {
                let Some(id) = self.watched.get(i).and_then(|w| w.0) else {
                    return String::new();
                };
                let r = match op {
                    Op::Enable(_) => self.lp.enable(id),
                    Op::Disable(_) => self.lp.disable(id),
                    _ => self.lp.remove(id),
                };
                format!("{r:?}")
            }
            Op::Poll => {
                let ran = self.lp.poll();
                let mut calls = core::mem::take(&mut *self.log.lock().unwrap());
                calls.sort_by_key(|c| (c.0, c.1));
                format!("{ran} {calls:?}")
            }
        }
    }
}

/// Run `program` on the three backends in flavour `F`; the first difference, if any.
fn compare<F: Flavor>(program: &[Op]) -> Result<(), String> {
    let mut real = Run::<Real, F>::new(Real);
    let mut epoll = Run::<Simulated<EpollTables>, F>::new(Simulated(EpollSim::new()));
    let mut sim = Run::<Simulated<SimTables>, F>::new(Simulated(Sim::new()));
    for (n, op) in program.iter().enumerate() {
        let a = real.step(*op);
        let b = epoll.step(*op);
        let c = sim.step(*op);
        if a != b || a != c {
            let shown: Vec<String> = program[..=n].iter().map(|o| format!("{o:?}")).collect();
            return Err(format!(
                "step {n} ({op:?}): real kernel {a}; Epoll<EpollSim> {b}; Sim {c}\n  program: {}",
                shown.join(", ")
            ));
        }
    }
    Ok(())
}

fn check(name: &str, program: &[Op]) {
    for (flavour, r) in [
        ("single", compare::<Single>(program)),
        ("threaded", compare::<Threaded>(program)),
    ] {
        if let Err(e) = r {
            panic!("{name} ({flavour}): {e}");
        }
    }
}

use Op::*;

const R: Interest = Interest::READ;
const W: Interest = Interest::WRITE;
const RW: Interest = Interest::BOTH;

#[test]
fn scripted_programs_agree() {
    check(
        "pipe: data, drained and not, then the writer gone",
        &[
            Watch(Kind::PipeRead, R, false, false, true),
            Watch(Kind::PipeRead, R, false, true, true),
            Write(0, 3),
            Write(1, 3),
            Poll,
            Poll,
            Close(0),
            Close(1),
            Poll,
            Poll,
        ],
    );
    check(
        "pipe write end: room, then the reader gone",
        &[
            Watch(Kind::PipeWrite, W, false, false, false),
            Poll,
            Enable(0),
            Close(0),
            Poll,
            Poll,
        ],
    );
    check(
        "disabled watchers keep hang-ups for later",
        &[
            Watch(Kind::Unix, R, false, true, true),
            Disable(0),
            Close(0),
            Poll,
            Enable(0),
            Poll,
            Poll,
        ],
    );
    check(
        "bidirectional halves on a Unix socket",
        &[
            Watch(Kind::Unix, RW, true, true, true),
            Poll,
            Write(0, 10),
            Poll,
            ShutdownWrite(0),
            Poll,
            Close(0),
            Poll,
        ],
    );
    check(
        "TCP: data, shutdown, close",
        &[
            Watch(Kind::Tcp, RW, false, true, true),
            Poll,
            Write(0, 5),
            Poll,
            ShutdownWrite(0),
            Poll,
            Close(0),
            Poll,
        ],
    );
    check(
        "a regular file is emulated as always ready",
        &[
            Watch(Kind::File, R, false, false, true),
            Poll,
            Poll,
            Disable(0),
            Poll,
            Enable(0),
            Poll,
            Remove(0),
            Poll,
        ],
    );
    check(
        "removal drops what was pending",
        &[
            Watch(Kind::PipeRead, R, false, false, true),
            Write(0, 1),
            Remove(0),
            Poll,
            Write(0, 1),
            Poll,
        ],
    );
}

/// A tiny deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn program(seed: u64) -> Vec<Op> {
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let kinds = [
        Kind::PipeRead,
        Kind::PipeWrite,
        Kind::Unix,
        Kind::Tcp,
        Kind::File,
    ];
    let interests = [R, W, RW];
    let mut ops = Vec::new();
    let mut watchers = 0usize;
    for _ in 0..40 {
        let w = r.below(watchers as u64) as usize;
        let op = match r.below(16) {
            0..=2 if watchers < 8 => {
                watchers += 1;
                let kind = kinds[r.below(5) as usize];
                Watch(
                    kind,
                    interests[r.below(3) as usize],
                    r.below(4) == 0,
                    r.below(2) == 0,
                    r.below(4) != 0,
                )
            }
            0..=2 => Poll,
            3..=5 => Write(w, [1, 7, 300][r.below(3) as usize]),
            6 => Read(w, [1, 100_000][r.below(2) as usize]),
            7 => ShutdownWrite(w),
            8 => Close(w),
            9 => Enable(w),
            10 => Disable(w),
            11 => Remove(w),
            _ => Poll,
        };
        ops.push(op);
    }
    ops.push(Poll);
    ops
}

#[test]
fn random_programs_agree() {
    files::random_programs(60, 25, |seed| {
        let p = program(seed);
        compare::<Single>(&p)
            .map_err(|e| format!("single: {e}"))
            .and_then(|()| compare::<Threaded>(&p).map_err(|e| format!("threaded: {e}")))
    });
}
