//! Simulated files: pipes, stream sockets and regular files, each behind a real placeholder
//! fd, with buffered byte counts, shutdowns, errors and the readiness a poll would report.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::{Objects, SimWorld};
use crate::error::Errno;
use crate::interest::Readiness;

/// Bytes a simulated pipe or socket buffers before writes would block.
pub(crate) const PIPE_CAPACITY: u64 = 65536;

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    PipeRead,
    PipeWrite,
    Socket,
    File,
}

#[derive(Copy, Clone, Debug)]
pub(crate) struct Object {
    pub(crate) kind: Kind,
    peer: RawFd,
    pub(crate) open: bool,
    /// Bytes readable at this end.
    rx: u64,
    /// This end will send no more (shutdown(SHUT_WR) or close).
    shut_wr: bool,
    error: bool,
    /// Bumped on every change that can make this end newly ready (edge-triggered reports).
    pub(crate) changed: u64,
    /// Which object this is: a registration made on an fd number belongs to the object that
    /// had the number then, not to a later one given the same number.
    pub(crate) serial: u64,
}

/// A real pipe whose fds stand for simulated objects (close-on-exec, so spawned processes do
/// not inherit them).
fn placeholder_pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    // `pipe2(O_CLOEXEC)` where it exists (also what Miri supports); macOS has only `pipe`.
    #[cfg(not(target_vendor = "apple"))]
    {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(Errno::from_rustix)
    }
    #[cfg(target_vendor = "apple")]
    {
        let (r, w) = rustix::pipe::pipe().map_err(Errno::from_rustix)?;
        for fd in [&r, &w] {
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)
                .map_err(Errno::from_rustix)?;
        }
        Ok((r, w))
    }
}

impl Objects {
    pub(crate) fn get(&self, fd: RawFd) -> Option<&Object> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.table.get(i))
            .and_then(|o| o.as_ref())
    }

    fn get_mut(&mut self, fd: RawFd) -> Option<&mut Object> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.table.get_mut(i))
            .and_then(|o| o.as_mut())
    }

    fn put(&mut self, fd: RawFd, obj: Object) {
        let Ok(i) = usize::try_from(fd) else { return };
        if self.table.len() <= i {
            self.table.resize(i + 1, None);
        }
        // The number is free again, so whatever had it was closed (its `OwnedFd` dropped
        // without `close`): its peer loses it as on a real close.
        self.sever(fd);
        self.table[i] = Some(obj);
    }

    /// The object at `fd` is gone: a peer linked to it is linked to nothing.
    fn sever(&mut self, fd: RawFd) {
        let Some(obj) = self.get_mut(fd) else { return };
        obj.open = false;
        obj.shut_wr = true;
        let peer = core::mem::replace(&mut obj.peer, -1);
        // The link goes with the file: a new object that later gets this fd number is not
        // the old peer's peer (a pipe's ends are objects, not numbers).
        if let Some(p) = self.get_mut(peer).filter(|p| p.peer == fd) {
            p.peer = -1;
        }
        self.touch(fd);
        self.touch(peer);
    }

    /// The identity of the open object at `fd` (see [`Object::serial`]).
    pub(crate) fn serial(&self, fd: RawFd) -> Option<u64> {
        self.get(fd).filter(|o| o.open).map(|o| o.serial)
    }

    fn touch(&mut self, fd: RawFd) {
        let s = self.next_seq();
        if let Some(o) = self.get_mut(fd) {
            o.changed = s;
        }
    }

    /// Whether `fd` is a simulated object that is still open.
    pub(crate) fn is_open(&self, fd: RawFd) -> bool {
        self.get(fd).is_some_and(|o| o.open)
    }

    /// The readiness of `fd` as a poll would report it, or `None` if it is not an open
    /// simulated object.
    pub(crate) fn readiness(&self, fd: RawFd) -> Option<Readiness> {
        let o = self.get(fd).filter(|o| o.open)?;
        let peer = self.get(o.peer);
        let peer_open = peer.is_some_and(|p| p.open);
        let mut r = Readiness::EMPTY;
        match o.kind {
            Kind::File => r = Readiness::READABLE | Readiness::WRITABLE,
            Kind::PipeRead => {
                // pipe(7)/pipe_poll: readable while data is buffered; hang-up once no writer
                // is left (an empty pipe with no writer reports only the hang-up).
                if o.rx > 0 {
                    r |= Readiness::READABLE;
                }
                if !peer_open {
                    r |= Readiness::HANGUP;
                }
            }
            Kind::PipeWrite => {
                // Writable while there is room; error once no reader is left.
                let room = peer.is_some_and(|p| p.rx < PIPE_CAPACITY);
                if room || !peer_open {
                    r |= Readiness::WRITABLE;
                }
                if !peer_open {
                    r |= Readiness::ERROR;
                }
            }
            Kind::Socket => {
                // unix(7) stream sockets: readable with data or after the peer's shutdown,
                // read-closed after the peer's shutdown, hang-up once the peer is gone.
                let peer_shut = !peer_open || peer.is_some_and(|p| p.shut_wr);
                if o.rx > 0 || peer_shut {
                    r |= Readiness::READABLE;
                }
                if peer_shut {
                    r |= Readiness::READ_CLOSED;
                }
                if !peer_open {
                    r |= Readiness::HANGUP;
                }
                if !peer_open || peer.is_some_and(|p| p.rx < PIPE_CAPACITY) {
                    r |= Readiness::WRITABLE;
                }
            }
        }
        if o.error {
            r |= Readiness::ERROR;
        }
        Some(r)
    }
}

impl<X> SimWorld<X> {
    /// A simulated pipe: `(read end, write end)`.
    pub fn pipe(&self) -> Result<(OwnedFd, OwnedFd), Errno> {
        let (r, w) = placeholder_pair()?;
        let (rn, wn) = (r.as_raw_fd(), w.as_raw_fd());
        self.change(|o, _| {
            let s = o.next_seq();
            let mk = |kind, peer| Object {
                kind,
                peer,
                open: true,
                rx: 0,
                shut_wr: false,
                error: false,
                changed: s,
                serial: s,
            };
            o.put(rn, mk(Kind::PipeRead, wn));
            o.put(wn, mk(Kind::PipeWrite, rn));
        });
        Ok((r, w))
    }

    /// A simulated connected stream socket pair.
    pub fn socketpair(&self) -> Result<(OwnedFd, OwnedFd), Errno> {
        let (a, b) = placeholder_pair()?;
        let (an, bn) = (a.as_raw_fd(), b.as_raw_fd());
        self.change(|o, _| {
            let s = o.next_seq();
            let mk = |peer| Object {
                kind: Kind::Socket,
                peer,
                open: true,
                rx: 0,
                shut_wr: false,
                error: false,
                changed: s,
                serial: s,
            };
            o.put(an, mk(bn));
            o.put(bn, mk(an));
        });
        Ok((a, b))
    }

    /// A simulated regular file (always readable and writable; epoll refuses it).
    pub fn regular_file(&self) -> Result<OwnedFd, Errno> {
        let (f, _other) = placeholder_pair()?;
        let n = f.as_raw_fd();
        self.change(|o, _| {
            let s = o.next_seq();
            o.put(
                n,
                Object {
                    kind: Kind::File,
                    peer: -1,
                    open: true,
                    rx: 0,
                    shut_wr: false,
                    error: false,
                    changed: s,
                    serial: s,
                },
            );
        });
        Ok(f)
    }

    /// Write `n` bytes into a pipe's write end or a socket. Returns how many fit (`AGAIN` if
    /// none, `Errno::PIPE` once the reader is gone, `BADF` for a closed or
    /// foreign fd).
    pub fn write(&self, fd: &impl AsRawFd, n: u64) -> Result<u64, Errno> {
        let fd = fd.as_raw_fd();
        self.change(|o, _| {
            let obj = *o.get(fd).filter(|x| x.open).ok_or(Errno::BADF)?;
            if !matches!(obj.kind, Kind::PipeWrite | Kind::Socket) || obj.shut_wr {
                return Err(Errno::BADF);
            }
            let peer = o.get_mut(obj.peer).filter(|p| p.open).ok_or(Errno::PIPE)?;
            let room = PIPE_CAPACITY - peer.rx.min(PIPE_CAPACITY);
            let put = n.min(room);
            if put == 0 && n > 0 {
                return Err(Errno::AGAIN);
            }
            peer.rx += put;
            o.touch(obj.peer);
            Ok(put)
        })
    }

    /// Read up to `max` bytes from a pipe's read end or a socket. `Ok(0)` is end-of-file;
    /// `AGAIN` means nothing is buffered yet.
    pub fn read(&self, fd: &impl AsRawFd, max: u64) -> Result<u64, Errno> {
        let fd = fd.as_raw_fd();
        self.change(|o, _| {
            let obj = *o.get(fd).filter(|x| x.open).ok_or(Errno::BADF)?;
            if !matches!(obj.kind, Kind::PipeRead | Kind::Socket) {
                return Err(Errno::BADF);
            }
            let take = obj.rx.min(max);
            if take == 0 && max > 0 {
                let peer_gone = !o.is_open(obj.peer) || o.get(obj.peer).is_some_and(|p| p.shut_wr);
                return if peer_gone { Ok(0) } else { Err(Errno::AGAIN) };
            }
            if let Some(me) = o.get_mut(fd) {
                me.rx -= take;
            }
            // Room appeared for the writer.
            o.touch(obj.peer);
            Ok(take)
        })
    }

    /// Close the simulated object behind `fd` (the real placeholder stays open until dropped):
    /// its peer sees a hang-up and every simulated kernel drops registrations of it, as the
    /// real ones do when the last reference to a file closes.
    pub fn close(&self, fd: &impl AsRawFd) {
        let fd = fd.as_raw_fd();
        self.change(|o, _| o.sever(fd));
    }

    /// `shutdown(fd, SHUT_WR)` on a socket: the peer reads end-of-file.
    pub fn shutdown_write(&self, fd: &impl AsRawFd) {
        let fd = fd.as_raw_fd();
        self.change(|o, _| {
            let Some(obj) = o.get_mut(fd) else { return };
            obj.shut_wr = true;
            let peer = obj.peer;
            o.touch(peer);
        });
    }

    /// Put (or clear) a pending error on `fd`, as `SO_ERROR` would.
    pub fn set_error(&self, fd: &impl AsRawFd, error: bool) {
        let fd = fd.as_raw_fd();
        self.change(|o, _| {
            if let Some(obj) = o.get_mut(fd) {
                obj.error = error;
            }
            o.touch(fd);
        });
    }

    /// Bytes buffered for reading at `fd`.
    pub fn buffered(&self, fd: &impl AsRawFd) -> u64 {
        let g = self.lock();
        g.0.get(fd.as_raw_fd()).map_or(0, |o| o.rx)
    }

    /// Tests: make regular files until one gets the (freed) number `n`; they are returned, the
    /// last one holding `n`, so the caller keeps them open.
    #[cfg(test)]
    pub(crate) fn files_until_number(&self, n: RawFd) -> Vec<OwnedFd> {
        let mut keep = Vec::new();
        for _ in 0..64 {
            let f = self.regular_file().unwrap();
            let hit = f.as_raw_fd() == n;
            keep.push(f);
            if hit {
                return keep;
            }
        }
        panic!("fd number {n} was not reused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> SimWorld<()> {
        SimWorld::with_tables(())
    }

    /// Found by the differential fuzz target: a pipe's read end looked for its writer by fd
    /// number, so a new object given the closed writer's number revived the hang-up's peer.
    #[test]
    fn a_closed_peers_reused_number_is_not_the_peer() {
        let w: SimWorld<()> = SimWorld::with_tables(());
        let (r, wr) = w.pipe().unwrap();
        let n = wr.as_raw_fd();
        w.close(&wr);
        drop(wr);
        let _keep = w.files_until_number(n);
        let g = w.lock();
        assert!(g.0.readiness(r.as_raw_fd()).unwrap().is_hangup());
    }

    #[test]
    fn pipe_readiness_follows_data_and_hangup() {
        let w = world();
        let (r, wr) = w.pipe().unwrap();
        let g = |fd: &OwnedFd| w.lock().0.readiness(fd.as_raw_fd()).unwrap();
        assert_eq!(g(&r), Readiness::EMPTY);
        assert_eq!(g(&wr), Readiness::WRITABLE);
        assert_eq!(w.write(&wr, 3), Ok(3));
        assert_eq!(g(&r), Readiness::READABLE);
        assert_eq!(w.read(&r, 10), Ok(3));
        assert_eq!(w.read(&r, 10), Err(Errno::AGAIN));
        w.close(&wr);
        assert_eq!(g(&r), Readiness::HANGUP);
        assert_eq!(w.read(&r, 10), Ok(0));
        assert!(w.lock().0.readiness(wr.as_raw_fd()).is_none());
    }

    #[test]
    fn broken_pipe_reports_error_to_the_writer() {
        let w = world();
        let (r, wr) = w.pipe().unwrap();
        w.close(&r);
        assert_eq!(
            w.lock().0.readiness(wr.as_raw_fd()),
            Some(Readiness::WRITABLE | Readiness::ERROR)
        );
        assert_eq!(w.write(&wr, 1), Err(Errno::PIPE));
    }

    #[test]
    fn full_pipe_blocks_the_writer() {
        let w = world();
        let (_r, wr) = w.pipe().unwrap();
        assert_eq!(w.write(&wr, PIPE_CAPACITY + 5), Ok(PIPE_CAPACITY));
        assert_eq!(w.write(&wr, 1), Err(Errno::AGAIN));
        assert_eq!(w.lock().0.readiness(wr.as_raw_fd()), Some(Readiness::EMPTY));
    }

    #[test]
    fn socket_shutdown_and_close() {
        let w = world();
        let (a, b) = w.socketpair().unwrap();
        w.shutdown_write(&b);
        let ra = w.lock().0.readiness(a.as_raw_fd()).unwrap();
        assert!(ra.is_readable() && ra.is_read_closed() && !ra.is_hangup());
        w.close(&b);
        let ra = w.lock().0.readiness(a.as_raw_fd()).unwrap();
        assert!(ra.is_hangup() && ra.is_writable());
    }
}
