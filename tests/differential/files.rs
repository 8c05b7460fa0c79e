//! Worlds of files for the differential tests: the real kernel's, and a simulated one. The
//! same operation on both must come out the same.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use dasynq::Errno;
use dasynq::sim::SimWorld;

#[path = "../suite/portable.rs"]
mod portable;

/// What a file is, for choosing what to do with it.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Kind {
    PipeRead,
    PipeWrite,
    Unix,
    Tcp,
    File,
}

/// Files on one kernel, the real one or a simulation.
pub trait Files {
    fn pipe(&self) -> (OwnedFd, OwnedFd);
    fn unix_pair(&self) -> (OwnedFd, OwnedFd);
    fn tcp_pair(&self) -> (OwnedFd, OwnedFd);
    fn file(&self) -> OwnedFd;
    fn write(&self, fd: BorrowedFd<'_>, n: usize) -> Result<usize, Errno>;
    fn read(&self, fd: BorrowedFd<'_>, n: usize) -> Result<usize, Errno>;
    fn shutdown_write(&self, fd: BorrowedFd<'_>);
    fn close(&self, fd: OwnedFd);
    /// Let the kernel finish what a call started (TCP's FIN and reset travel through
    /// loopback).
    fn settle(&self) {}
}

/// The running kernel.
#[derive(Clone)]
pub struct Real;

fn errno(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error())
}

impl Files for Real {
    fn pipe(&self) -> (OwnedFd, OwnedFd) {
        portable::pipe()
    }
    fn unix_pair(&self) -> (OwnedFd, OwnedFd) {
        portable::socketpair()
    }
    fn tcp_pair(&self) -> (OwnedFd, OwnedFd) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = TcpStream::connect(l.local_addr().unwrap()).expect("connect");
        let (b, _) = l.accept().expect("accept");
        for s in [&a, &b] {
            s.set_nonblocking(true).unwrap();
            s.set_nodelay(true).unwrap();
        }
        (a.into(), b.into())
    }
    fn file(&self) -> OwnedFd {
        portable::regular_file()
    }
    fn write(&self, fd: BorrowedFd<'_>, n: usize) -> Result<usize, Errno> {
        let buf = vec![b'x'; n];
        // Rust ignores SIGPIPE: a write to a closed pipe or socket is EPIPE.
        rustix::io::write(fd, &buf).map_err(errno)
    }
    fn read(&self, fd: BorrowedFd<'_>, n: usize) -> Result<usize, Errno> {
        let mut buf = vec![0u8; n];
        rustix::io::read(fd, &mut buf).map_err(errno)
    }
    fn shutdown_write(&self, fd: BorrowedFd<'_>) {
        let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Write);
    }
    fn close(&self, fd: OwnedFd) {
        drop(fd);
    }
    fn settle(&self) {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A simulated world (of any simulated kernel or the `Sim` backend).
pub struct Simulated<X>(pub SimWorld<X>);

impl<X> Clone for Simulated<X> {
    fn clone(&self) -> Self {
        Simulated(self.0.clone())
    }
}

/// So that `OwnedFd`s can be passed where a borrow is wanted.
pub fn b(fd: &OwnedFd) -> BorrowedFd<'_> {
    fd.as_fd()
}

impl<X> Files for Simulated<X> {
    fn pipe(&self) -> (OwnedFd, OwnedFd) {
        self.0.pipe().unwrap()
    }
    fn unix_pair(&self) -> (OwnedFd, OwnedFd) {
        self.0.socketpair().unwrap()
    }
    fn tcp_pair(&self) -> (OwnedFd, OwnedFd) {
        self.0.tcp_pair().unwrap()
    }
    fn file(&self) -> OwnedFd {
        self.0.regular_file().unwrap()
    }
    fn write(&self, fd: BorrowedFd<'_>, n: usize) -> Result<usize, Errno> {
        self.0.write(&fd, n as u64).map(|k| k as usize)
    }
    fn read(&self, fd: BorrowedFd<'_>, n: usize) -> Result<usize, Errno> {
        self.0.read(&fd, n as u64).map(|k| k as usize)
    }
    fn shutdown_write(&self, fd: BorrowedFd<'_>) {
        self.0.shutdown_write(&fd);
    }
    fn close(&self, fd: OwnedFd) {
        self.0.close(&fd);
        drop(fd);
    }
}

/// Run the pseudo-random programs `first..first + n` (`DASYNQ_DIFFERENTIAL_FIRST`,
/// `DASYNQ_DIFFERENTIAL_PROGRAMS`, else 0 and `default`) through `compare`, which runs one on
/// every world. TCP's FIN and reset travel through loopback in the kernel's own time: on a
/// loaded machine one may not have arrived within the pause the real world takes after each
/// step, so a program that differs and then agrees when run again (twice at most) counts as
/// timing, and at most one in `per` may; one that differs every time is a difference.
pub fn random_programs(default: u64, per: u64, compare: impl Fn(u64) -> Result<(), String>) {
    let env = |name: &str, or: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(or)
    };
    let n = env("DASYNQ_DIFFERENTIAL_PROGRAMS", default);
    let first = env("DASYNQ_DIFFERENTIAL_FIRST", 0);
    let mut failures = Vec::new();
    let mut timing = Vec::new();
    for seed in first..first + n {
        if let Err(e) = compare(seed) {
            if (0..2).any(|_| compare(seed).is_ok()) {
                timing.push(seed);
            } else {
                failures.push(format!("seed {seed}: {e}"));
            }
        }
    }
    println!("{n} programs; differed once and agreed when rerun (timing): {timing:?}");
    assert!(
        failures.is_empty(),
        "{} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        timing.len() as u64 <= n / per + 1,
        "too many timing differences: {timing:?}"
    );
}
