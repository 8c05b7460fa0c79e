//! The simulated epoll checked against the real one. The same programs of file operations
//! and epoll calls (pipes, Unix stream sockets, TCP on loopback, regular files; level,
//! edge-triggered, one-shot and disabled registrations; hang-ups on either side, shutdown of
//! one direction, closing the peer, filling a pipe; `EEXIST`, `ENOENT`, `EBADF`, `EPERM`,
//! `EINVAL`) run against `LinuxEpoll` and `EpollSim`, and every answer is compared: each call's
//! result and, after each wait, the set of reported `(registration, events)`. The loop-level
//! comparison (what handlers see, through `Epoll<LinuxEpoll>`, `Epoll<EpollSim>` and `Sim`)
//! follows at the end.
//!
//! This is what makes "proven on a simulated kernel" mean something: a rule the simulation
//! gets wrong shows up here as a difference with the kernel that defines the rule.

#![cfg(dasynq_epoll)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use dasynq::Errno;
use dasynq::backend::epoll::LinuxEpoll;
use dasynq::backend::epoll::{
    CtlOp, EPOLLET, EPOLLIN, EPOLLONESHOT, EPOLLOUT, EPOLLRDHUP, EpollKernel,
};
use dasynq::sim::EpollSim;

#[path = "differential/files.rs"]
mod files;
use files::{Files, Kind, Real, Simulated};

/// The epoll kernel of a world of files.
trait World: Files {
    type K: EpollKernel;
    fn kernel(&self) -> &Self::K;
}

impl World for Real {
    type K = LinuxEpoll;
    fn kernel(&self) -> &LinuxEpoll {
        &LinuxEpoll
    }
}

impl World for Simulated<dasynq::sim::EpollTables> {
    type K = EpollSim;
    fn kernel(&self) -> &EpollSim {
        &self.0
    }
}

/// One step of a program. Files are named by their index in creation order (fd numbers
/// differ between the worlds).
#[derive(Copy, Clone, Debug)]
enum Op {
    Pipe,
    UnixPair,
    TcpPair,
    File,
    Write(usize, usize),
    Read(usize, usize),
    ShutdownWrite(usize),
    Close(usize),
    Ctl(CtlOp, usize, u32),
    /// `epoll_ctl` on an fd number no file has.
    CtlBadFd(CtlOp),
    /// `epoll_ctl` on the epoll fd itself.
    CtlSelf,
    Wait,
}

/// What a step answered, comparable between worlds.
#[derive(Clone, PartialEq, Eq, Debug)]
enum Answer {
    None,
    Io(Result<usize, Errno>),
    Ctl(Result<(), Errno>),
    /// Reported `(file index, events)`, sorted by index (the kernels order them differently:
    /// both are "ready order").
    Events(Vec<(u64, u32)>),
}

struct Run<W: World> {
    w: W,
    ep: <W::K as EpollKernel>::Fd,
    buf: <W::K as EpollKernel>::Buffer,
    files: Vec<Option<(Kind, OwnedFd)>>,
}

impl<W: World> Run<W> {
    fn new(w: W) -> Self {
        let ep = w.kernel().epoll_create().expect("epoll_create");
        let buf = w.kernel().buffer(64).unwrap();
        Run {
            w,
            ep,
            buf,
            files: Vec::new(),
        }
    }

    fn file(&self, i: usize) -> Option<&(Kind, OwnedFd)> {
        self.files.get(i).and_then(|f| f.as_ref())
    }

    fn step(&mut self, op: Op) -> Answer {
        let k = self.w.kernel();
        match op {
            Op::Pipe => {
                let (r, w) = self.w.pipe();
                self.files.push(Some((Kind::PipeRead, r)));
                self.files.push(Some((Kind::PipeWrite, w)));
                Answer::None
            }
            Op::UnixPair => {
                let (a, b) = self.w.unix_pair();
                self.files.push(Some((Kind::Unix, a)));
                self.files.push(Some((Kind::Unix, b)));
                Answer::None
            }
            Op::TcpPair => {
                let (a, b) = self.w.tcp_pair();
                self.files.push(Some((Kind::Tcp, a)));
                self.files.push(Some((Kind::Tcp, b)));
                self.w.settle();
                Answer::None
            }
            Op::File => {
                let f = self.w.file();
                self.files.push(Some((Kind::File, f)));
                Answer::None
            }
            Op::Write(i, n) => match self.file(i) {
                Some((_, fd)) => {
                    let r = self.w.write(files::b(fd), n);
                    self.w.settle();
                    Answer::Io(r)
                }
                None => Answer::None,
            },
            Op::Read(i, n) => match self.file(i) {
                Some((_, fd)) => {
                    let r = self.w.read(files::b(fd), n);
                    self.w.settle();
                    Answer::Io(r)
                }
                None => Answer::None,
            },
            Op::ShutdownWrite(i) => {
                if let Some((_, fd)) = self.file(i) {
                    self.w.shutdown_write(files::b(fd));
                    self.w.settle();
                }
                Answer::None
            }
            Op::Close(i) => {
                if let Some((_, fd)) = self.files.get_mut(i).and_then(|f| f.take()) {
                    self.w.close(fd);
                    self.w.settle();
                }
                Answer::None
            }
            Op::Ctl(op, i, events) => match self.file(i) {
                Some((_, fd)) => {
                    Answer::Ctl(k.epoll_ctl(&self.ep, op, fd.as_raw_fd(), events, i as u64))
                }
                None => Answer::None,
            },
            Op::CtlBadFd(op) => Answer::Ctl(k.epoll_ctl(&self.ep, op, 999_999, EPOLLIN, 0)),
            Op::CtlSelf => {
                Answer::Ctl(k.epoll_ctl(&self.ep, CtlOp::Add, self.ep.as_raw_fd(), EPOLLIN, 0))
            }
            Op::Wait => {
                k.epoll_wait(&self.ep, &mut self.buf, Some(Duration::ZERO))
                    .expect("epoll_wait");
                let mut v: Vec<(u64, u32)> = W::K::buffer_events(&self.buf)
                    .map(|(ev, data)| (data, ev))
                    .collect();
                v.sort_unstable();
                Answer::Events(v)
            }
        }
    }
}

/// Run `program` on both kernels; the first step where they answer differently, if any.
fn compare(program: &[Op]) -> Result<(), String> {
    let mut real = Run::new(Real);
    let mut sim = Run::new(Simulated(EpollSim::new()));
    for (n, op) in program.iter().enumerate() {
        let a = real.step(*op);
        let b = sim.step(*op);
        if a != b {
            let shown: Vec<String> = program[..=n].iter().map(|o| format!("{o:?}")).collect();
            return Err(format!(
                "step {n} ({op:?}): real kernel {a:?}, simulation {b:?}\n  program: {}",
                shown.join(", ")
            ));
        }
    }
    Ok(())
}

fn check(name: &str, program: &[Op]) {
    if let Err(e) = compare(program) {
        panic!("{name}: {e}");
    }
}

use Op::*;

const IN: u32 = EPOLLIN;
const OUT: u32 = EPOLLOUT;
const RDHUP: u32 = EPOLLRDHUP;

#[test]
fn pipes_level_edge_oneshot_and_hangups() {
    // Files 0 (read end) and 1 (write end).
    check(
        "level",
        &[
            Pipe,
            Ctl(CtlOp::Add, 0, IN | RDHUP),
            Ctl(CtlOp::Add, 1, OUT),
            Wait,
            Write(1, 5),
            Wait,
            Wait,
            Read(0, 3),
            Wait,
            Read(0, 10),
            Wait,
            Read(0, 10),
        ],
    );
    check(
        "edge",
        &[
            Pipe,
            Ctl(CtlOp::Add, 0, IN | EPOLLET),
            Wait,
            Write(1, 1),
            Wait,
            Wait,
            Write(1, 1),
            Wait,
            Read(0, 10),
            Wait,
        ],
    );
    check(
        "one-shot",
        &[
            Pipe,
            Ctl(CtlOp::Add, 0, IN | EPOLLONESHOT),
            Write(1, 1),
            Wait,
            Wait,
            Write(1, 1),
            Wait,
            Ctl(CtlOp::Mod, 0, IN | EPOLLONESHOT),
            Wait,
            Wait,
        ],
    );
    check(
        "disabled: hang-up and error reported once",
        &[
            Pipe,
            Ctl(CtlOp::Add, 0, EPOLLONESHOT),
            Ctl(CtlOp::Add, 1, EPOLLONESHOT),
            Wait,
            Write(1, 4),
            Wait,
            Close(1),
            Wait,
            Wait,
        ],
    );
    check(
        "writer gone: hang-up, data first",
        &[
            Pipe,
            Ctl(CtlOp::Add, 0, IN | RDHUP),
            Write(1, 3),
            Close(1),
            Wait,
            Read(0, 10),
            Wait,
            Read(0, 10),
        ],
    );
    check(
        "reader gone: error to the writer",
        &[Pipe, Ctl(CtlOp::Add, 1, OUT), Close(0), Wait, Write(1, 1)],
    );
    check(
        "a full pipe, then its reader gone",
        &[
            Pipe,
            Ctl(CtlOp::Add, 1, OUT),
            Write(1, 70_000),
            Wait,
            Write(1, 1),
            Close(0),
            Wait,
        ],
    );
    check(
        "a closed file leaves the set",
        &[
            Pipe,
            Ctl(CtlOp::Add, 0, IN),
            Write(1, 1),
            Close(0),
            Wait,
            Pipe,
            Ctl(CtlOp::Mod, 2, IN),
        ],
    );
}

#[test]
fn unix_sockets_shutdown_and_close() {
    check(
        "data both ways",
        &[
            UnixPair,
            Ctl(CtlOp::Add, 0, IN | OUT | RDHUP),
            Ctl(CtlOp::Add, 1, IN | RDHUP),
            Wait,
            Write(0, 10),
            Write(1, 3),
            Wait,
            Read(1, 100),
            Read(0, 100),
            Wait,
        ],
    );
    check(
        "peer shuts down its writing side",
        &[
            UnixPair,
            Ctl(CtlOp::Add, 0, IN | RDHUP),
            Ctl(CtlOp::Add, 1, IN | OUT | RDHUP),
            ShutdownWrite(1),
            Wait,
            Read(0, 10),
            Write(0, 2),
            Wait,
            Read(1, 10),
            Wait,
        ],
    );
    check(
        "own shutdown of writing",
        &[
            UnixPair,
            Ctl(CtlOp::Add, 0, IN | OUT | RDHUP),
            ShutdownWrite(0),
            Wait,
            Write(0, 1),
            Write(1, 1),
            Wait,
        ],
    );
    check(
        "peer closed",
        &[
            UnixPair,
            Ctl(CtlOp::Add, 0, IN | OUT | RDHUP),
            Write(1, 4),
            Close(1),
            Wait,
            Read(0, 10),
            Wait,
            Read(0, 10),
            Write(0, 1),
        ],
    );
    check(
        "disabled, peer closed",
        &[
            UnixPair,
            Ctl(CtlOp::Add, 0, EPOLLONESHOT),
            Close(1),
            Wait,
            Wait,
        ],
    );
}

#[test]
fn tcp_on_loopback() {
    check(
        "data both ways",
        &[
            TcpPair,
            Ctl(CtlOp::Add, 0, IN | OUT | RDHUP),
            Ctl(CtlOp::Add, 1, IN | RDHUP),
            Wait,
            Write(0, 10),
            Wait,
            Read(1, 100),
            Wait,
        ],
    );
    check(
        "peer shuts down its writing side",
        &[
            TcpPair,
            Ctl(CtlOp::Add, 0, IN | OUT | RDHUP),
            ShutdownWrite(1),
            Wait,
            Read(0, 10),
            Write(0, 2),
            Wait,
            ShutdownWrite(0),
            Wait,
        ],
    );
    check(
        "peer closed",
        &[
            TcpPair,
            Ctl(CtlOp::Add, 0, IN | OUT | RDHUP),
            Write(1, 4),
            Close(1),
            Wait,
            Read(0, 10),
            Wait,
            Read(0, 10),
        ],
    );
    check(
        "writing to a closed peer resets the connection",
        &[
            TcpPair,
            Ctl(CtlOp::Add, 0, IN | OUT | RDHUP),
            Close(1),
            Write(0, 1),
            Wait,
            Read(0, 10),
            Wait,
        ],
    );
}

#[test]
fn ctl_errors_and_regular_files() {
    check(
        "EEXIST, ENOENT",
        &[
            Pipe,
            Ctl(CtlOp::Mod, 0, IN),
            Ctl(CtlOp::Del, 0, 0),
            Ctl(CtlOp::Add, 0, IN),
            Ctl(CtlOp::Add, 0, IN),
            Ctl(CtlOp::Del, 0, 0),
            Ctl(CtlOp::Del, 0, 0),
        ],
    );
    check(
        "EBADF",
        &[
            CtlBadFd(CtlOp::Add),
            CtlBadFd(CtlOp::Mod),
            CtlBadFd(CtlOp::Del),
        ],
    );
    check("EINVAL: the epoll fd itself", &[CtlSelf]);
    check(
        "EPERM: a regular file",
        &[
            File,
            Ctl(CtlOp::Add, 0, IN),
            Ctl(CtlOp::Mod, 0, IN),
            Ctl(CtlOp::Del, 0, 0),
        ],
    );
    check("a file's reads", &[File, Read(0, 4)]);
}

/// A tiny deterministic generator (xorshift) for the random programs.
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

/// A random program: files made, written, read, shut down and closed at random, registered
/// and changed with random events, and waits in between.
fn program(seed: u64) -> Vec<Op> {
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut ops = vec![Pipe, UnixPair];
    let mut files = 4usize;
    for _ in 0..60 {
        let f = r.below(files as u64) as usize;
        let events = [IN, OUT, RDHUP, EPOLLET, EPOLLONESHOT]
            .iter()
            .filter(|_| r.below(2) == 0)
            .fold(0, |a, b| a | b);
        let op = match r.below(20) {
            0 => {
                files += 2;
                match r.below(3) {
                    0 => Pipe,
                    1 => UnixPair,
                    _ => TcpPair,
                }
            }
            1..=4 => Write(f, [1, 7, 300][r.below(3) as usize]),
            5..=6 => Read(f, [1, 100, 100_000][r.below(3) as usize]),
            7 => ShutdownWrite(f),
            8 => Close(f),
            9..=11 => Ctl(CtlOp::Add, f, events),
            12..=13 => Ctl(CtlOp::Mod, f, events),
            14 => Ctl(CtlOp::Del, f, 0),
            _ => Wait,
        };
        ops.push(op);
    }
    ops.push(Wait);
    ops
}

#[test]
fn random_programs_agree() {
    files::random_programs(150, 50, |seed| compare(&program(seed)));
}
