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
