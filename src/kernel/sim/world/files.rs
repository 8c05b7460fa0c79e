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
    /// A Unix stream socket.
    Socket,
    /// A TCP connection (on loopback: what travels does so at once).
    Tcp,
    File,
}

#[derive(Copy, Clone, Debug)]
pub(crate) struct Object {
    pub(crate) kind: Kind,
    peer: RawFd,
    pub(crate) open: bool,
    /// Bytes readable at this end.
    rx: u64,
    /// A Unix socket: the sizes of the writes those bytes came in (one buffer each).
    chunks: Chunks,
    /// This end will send no more (shutdown(SHUT_WR) or close).
    shut_wr: bool,
    /// A pending socket error (`SO_ERROR`); reading or writing reports it once.
    error: bool,
    /// TCP: the connection was reset (the peer closed with data unread, or answered data
    /// sent after it closed), and the error it left (`ECONNRESET`, or `EPIPE` after a FIN).
    reset: bool,
    reset_errno: Errno,
    /// TCP: the peer's FIN came in (it shut down writing, or closed with nothing unread).
    fin_in: bool,
    /// A pipe's write end: bytes left in the pipe when its reader went away (it stays full).
    stranded: u64,
    /// Bumped on every change that can make this end newly ready (the order kqueue reports
    /// in).
    pub(crate) changed: u64,
    /// The last wake-up that concerned readers, writers, or everyone (a state change): a
    /// kernel's wake-up carries such a key, and an edge-triggered epoll entry is queued again
    /// only by one that matches what it waits for (ep_poll_callback).
    ch_in: u64,
    ch_out: u64,
    ch_all: u64,
    /// Which object this is: a registration made on an fd number belongs to the object that
    /// had the number then, not to a later one given the same number.
    pub(crate) serial: u64,
}

impl Object {
    /// A new open file of `kind`, linked to `peer` (-1: none), made at sequence `s`.
    fn new(kind: Kind, peer: RawFd, s: u64) -> Object {
        Object {
            kind,
            peer,
            open: true,
            rx: 0,
            chunks: Chunks::EMPTY,
            shut_wr: false,
            error: false,
            reset: false,
            reset_errno: Errno::CONNRESET,
            fin_in: false,
            stranded: 0,
            changed: s,
            ch_in: s,
            ch_out: s,
            ch_all: s,
            serial: s,
        }
    }
}

/// The buffers queued at a Unix socket, one per write (unix_stream_sendmsg): reading frees
/// a buffer only once all of it is read, and only then wakes the writer (sock_wfree). Up to
/// eight are told apart; later writes join the last one.
#[derive(Copy, Clone, Debug)]
struct Chunks {
    sizes: [u64; 8],
    len: usize,
}

impl Chunks {
    const EMPTY: Chunks = Chunks {
        sizes: [0; 8],
        len: 0,
    };

    fn push(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        if self.len < self.sizes.len() {
            self.sizes[self.len] = n;
            self.len += 1;
        } else if let Some(last) = self.sizes.last_mut() {
            *last += n;
        }
    }

    /// Take `n` bytes from the front; whether a buffer was used up.
    fn take(&mut self, mut n: u64) -> bool {
        let mut freed = false;
        while n > 0 && self.len > 0 {
            let first = &mut self.sizes[0];
            let t = n.min(*first);
            *first -= t;
            n -= t;
            if *first == 0 {
                self.sizes.copy_within(1..self.len, 0);
                self.len -= 1;
                freed = true;
            }
        }
        freed
    }
}

/// The key of a wake-up: who it concerns.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Wake {
    /// Data arrived (`EPOLLIN`).
    In,
    /// Room appeared (`EPOLLOUT`).
    Out,
    /// The state changed (a hang-up, an error, a shutdown): everyone.
    All,
}

/// A real fd to stand for a simulated file: the read end of a real pipe (close-on-exec, so
/// spawned processes do not inherit it) whose write end the world keeps as a witness. When the
/// program drops its fd, the witness reports an error or hang-up to `poll`: that is how the
/// world sees a simulated file closed by a drop, as the kernel closes a file whose last fd
/// went, with one `poll` for all of them.
fn placeholder() -> Result<(OwnedFd, OwnedFd), Errno> {
    crate::kernel::cloexec_pipe()
}

/// Finds the witnesses whose placeholder was dropped: a real epoll instance that holds every
/// witness (a pipe's write end reports `EPOLLERR` once its read end is closed, pipe(7),
/// epoll_ctl(2): `EPOLLERR` is always reported), or, where there is no epoll or it could not
/// be had, a `poll(2)` over all of them (`POLLERR`).
pub(crate) struct Reaper {
    #[cfg(dasynq_epoll)]
    ep: Option<OwnedFd>,
    /// The `poll` list, kept between sweeps (a sweep never allocates).
    polls: Vec<libc::pollfd>,
}

impl Reaper {
    pub(crate) fn new() -> Self {
        Reaper {
            #[cfg(dasynq_epoll)]
            ep: rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC).ok(),
            polls: Vec::new(),
        }
    }

    /// Watch `witness`, the witness of the file at index `i`.
    fn watch(&mut self, witness: &OwnedFd, i: usize) {
        #[cfg(dasynq_epoll)]
        if let Some(ep) = &self.ep {
            use rustix::event::epoll;
            let data = epoll::EventData::new_u64(i as u64);
            if epoll::add(ep, witness, data, epoll::EventFlags::empty()).is_err() {
                // Without every witness in it the epoll would miss drops: poll from now on.
                self.ep = None;
            }
        }
        let _ = (witness, i);
    }

    /// `witness` is about to be closed by the world.
    fn forget(&mut self, witness: &OwnedFd) {
        // An explicit delete: a copy of the witness in a child between fork and exec would
        // otherwise keep its entry, and report a drop that did not happen.
        #[cfg(dasynq_epoll)]
        if let Some(ep) = &self.ep {
            let _ = rustix::event::epoll::delete(ep, witness);
        }
        let _ = witness;
    }

    /// Room to poll `live` witnesses.
    fn reserve(&mut self, live: usize) {
        self.polls.reserve(live.saturating_sub(self.polls.len()));
    }

    /// Up to `out.len()` indices whose witness reports its read end closed, into `out`:
    /// `(how many, whether there may be more)`.
    fn dropped(&mut self, witnesses: &[Option<OwnedFd>], out: &mut [usize]) -> (usize, bool) {
        #[cfg(dasynq_epoll)]
        if let Some(ep) = &self.ep {
            use core::mem::MaybeUninit;
            use rustix::event::epoll;
            let mut evs = [MaybeUninit::<epoll::Event>::uninit(); 32];
            let cap = evs.len().min(out.len());
            let zero = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let Ok((got, _)) = epoll::wait(ep, &mut evs[..cap], Some(&zero)) else {
                return (0, false);
            };
            let mut n = 0;
            for e in got.iter() {
                let i = e.data.u64();
                let Ok(i) = usize::try_from(i) else { continue };
                if witnesses.get(i).is_some_and(|w| w.is_some()) {
                    out[n] = i;
                    n += 1;
                }
            }
            return (n, got.len() == cap);
        }
        self.polls.clear();
        for w in witnesses.iter().flatten() {
            if self.polls.len() == self.polls.capacity() {
                break;
            }
            self.polls.push(libc::pollfd {
                fd: w.as_raw_fd(),
                events: 0,
                revents: 0,
            });
        }
        if self.polls.is_empty() {
            return (0, false);
        }
        // SAFETY: `polls` holds `len` initialised entries naming open fds (the witnesses,
        // owned by the caller's `witnesses` for the whole call); a zero timeout never blocks.
        let r = unsafe { libc::poll(self.polls.as_mut_ptr(), self.polls.len() as _, 0) };
        if r <= 0 {
            return (0, false);
        }
        let mut n = 0;
        let mut more = false;
        for p in &self.polls {
            if p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) == 0 {
                continue;
            }
            let Some(i) = witnesses
                .iter()
                .position(|w| w.as_ref().is_some_and(|w| w.as_raw_fd() == p.fd))
            else {
                continue;
            };
            if n == out.len() {
                more = true;
                break;
            }
            out[n] = i;
            n += 1;
        }
        (n, more)
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

    fn put(&mut self, fd: RawFd, obj: Object, witness: OwnedFd) {
        let Ok(i) = usize::try_from(fd) else { return };
        if self.table.len() <= i {
            self.table.resize(i + 1, None);
            self.witnesses.resize_with(i + 1, || None);
        }
        // The number is free again, so whatever had it was closed (its `OwnedFd` dropped
        // without `close`): its peer loses it as on a real close.
        self.sever(fd);
        self.table[i] = Some(obj);
        self.reaper.watch(&witness, i);
        self.witnesses[i] = Some(witness);
        let live = self.witnesses.iter().filter(|w| w.is_some()).count();
        self.reaper.reserve(live);
    }

    /// Close the simulated files whose placeholder the program dropped, as the kernel closes
    /// a file when its last fd goes (see [`placeholder`]). Called whenever the world is
    /// locked, so every operation sees the drop; with nothing dropped it costs one
    /// `epoll_wait` that finds nothing, however many files there are.
    pub(crate) fn reap_dropped(&mut self) {
        if cfg!(miri) {
            // Miri cannot poll pipes: close simulated files with `SimWorld::close` there.
            return;
        }
        let mut dropped = [usize::MAX; 32];
        loop {
            let (n, more) = self.reaper.dropped(&self.witnesses, &mut dropped);
            for &i in &dropped[..n] {
                if let Ok(fd) = RawFd::try_from(i) {
                    self.sever(fd);
                }
            }
            if !more {
                break;
            }
        }
    }

    /// The object at `fd` is gone: a peer linked to it is linked to nothing.
    fn sever(&mut self, fd: RawFd) {
        if let Some(w) = usize::try_from(fd)
            .ok()
            .and_then(|i| self.witnesses.get_mut(i))
        {
            if let Some(w) = w.take() {
                self.reaper.forget(&w);
            }
        }
        let Some(obj) = self.get_mut(fd) else { return };
        let (kind, rx, was_shut) = (obj.kind, obj.rx, obj.shut_wr);
        obj.open = false;
        obj.shut_wr = true;
        let peer = core::mem::replace(&mut obj.peer, -1);
        // Whether the peer hears of it: a TCP close sends nothing once this end's FIN went
        // out, unless data was left unread (a reset) and the peer is not closed already.
        let mut tell_peer = true;
        if let Some(p) = self.get_mut(peer).filter(|p| p.peer == fd) {
            match kind {
                // tcp(7): closing with unread data sends a reset instead of a FIN (RFC 2525,
                // 2.17); the peer's unread data goes with the connection.
                // unix(7): so does a Unix stream socket, in its own way: the peer gets
                // `ECONNRESET` once, and keeps what it had received.
                Kind::Socket if rx > 0 => {
                    p.error = true;
                    p.reset_errno = Errno::CONNRESET;
                }
                // tcp_reset: a connection already closed both ways (TIME_WAIT, CLOSE) is
                // not touched by a reset.
                Kind::Tcp if rx > 0 && !(p.shut_wr && p.fin_in) && !p.reset => {
                    p.reset = true;
                    p.reset_errno = if p.fin_in {
                        Errno::PIPE
                    } else {
                        Errno::CONNRESET
                    };
                    p.error = true;
                }
                Kind::Tcp if rx == 0 && !was_shut => p.fin_in = true,
                Kind::Tcp => tell_peer = false,
                // pipe(7): what the reader left stays in the pipe, which may stay full.
                Kind::PipeRead => p.stranded = rx,
                _ => {}
            }
        }
        // The link goes with the file: a new object that later gets this fd number is not
        // the old peer's peer (a pipe's ends are objects, not numbers).
        if let Some(p) = self.get_mut(peer).filter(|p| p.peer == fd) {
            p.peer = -1;
        }
        self.touch(fd, Wake::All);
        if tell_peer {
            self.touch(peer, Wake::All);
        }
    }

    /// The identity of the open object at `fd` (see [`Object::serial`]).
    pub(crate) fn serial(&self, fd: RawFd) -> Option<u64> {
        self.get(fd).filter(|o| o.open).map(|o| o.serial)
    }

    /// A wake-up of `fd`'s waiters, with its key.
    fn touch(&mut self, fd: RawFd, wake: Wake) {
        let s = self.next_seq();
        if let Some(o) = self.get_mut(fd) {
            o.changed = s;
            match wake {
                Wake::In => o.ch_in = s,
                Wake::Out => o.ch_out = s,
                Wake::All => o.ch_all = s,
            }
        }
    }

    /// The last wake-up of `fd` that an entry waiting for input (`input`) and/or output
    /// (`output`) would be queued by; state changes (hang-ups, errors, shutdowns) concern all.
    pub(crate) fn changed_for(&self, fd: RawFd, input: bool, output: bool) -> u64 {
        self.get(fd).map_or(0, |o| {
            let mut c = o.ch_all;
            if input {
                c = c.max(o.ch_in);
            }
            if output {
                c = c.max(o.ch_out);
            }
            c
        })
    }

    /// Put up to `n` bytes into `to`'s receive buffer (as one buffer: see [`Chunks`]);
    /// `EAGAIN` if there is no room at all.
    fn deliver(&mut self, to: RawFd, n: u64) -> Result<u64, Errno> {
        let Some(peer) = self.get_mut(to) else {
            return Err(Errno::PIPE);
        };
        let room = PIPE_CAPACITY - peer.rx.min(PIPE_CAPACITY);
        let put = n.min(room);
        if put == 0 && n > 0 {
            return Err(Errno::AGAIN);
        }
        peer.rx += put;
        peer.chunks.push(put);
        self.touch(to, Wake::In);
        Ok(put)
    }

    /// `write` on a TCP connection (see [`SimWorld::tcp_pair`]).
    fn tcp_write(&mut self, fd: RawFd, obj: Object, n: u64) -> Result<u64, Errno> {
        if obj.error {
            // The reset's error, reported once.
            if let Some(me) = self.get_mut(fd) {
                me.error = false;
            }
            return Err(obj.reset_errno);
        }
        if obj.shut_wr || obj.reset {
            return Err(Errno::PIPE);
        }
        match self.get(obj.peer).filter(|p| p.open) {
            Some(_) => self.deliver(obj.peer, n),
            None => {
                // The peer is closed: the data is sent and answered with a reset (after the
                // peer's FIN the error is EPIPE, tcp_reset in CLOSE_WAIT).
                if let Some(me) = self.get_mut(fd) {
                    me.reset = true;
                    me.error = true;
                    me.reset_errno = if me.fin_in {
                        Errno::PIPE
                    } else {
                        Errno::CONNRESET
                    };
                }
                self.touch(fd, Wake::All);
                Ok(n)
            }
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
                // pipe_poll: writable while there is room (a reader that went away leaves
                // its unread bytes); error once no reader is left.
                let buffered = peer.map_or(o.stranded, |p| p.rx);
                if buffered < PIPE_CAPACITY {
                    r |= Readiness::WRITABLE;
                }
                if !peer_open {
                    r |= Readiness::ERROR;
                }
            }
            Kind::Tcp => {
                // tcp_poll: readable with data or once a FIN or reset came in (read-closed
                // too); hang-up when both directions are shut or the connection was reset;
                // writable while the peer has room, and always once this end shut down
                // writing or was reset; an error while a reset's error is unread.
                let fin_in = o.fin_in;
                if o.rx > 0 || fin_in || o.reset {
                    r |= Readiness::READABLE;
                }
                if fin_in || o.reset {
                    r |= Readiness::READ_CLOSED;
                }
                if (o.shut_wr && fin_in) || o.reset {
                    r |= Readiness::HANGUP;
                }
                if o.shut_wr || o.reset || !peer_open || peer.is_some_and(|p| p.rx < PIPE_CAPACITY)
                {
                    r |= Readiness::WRITABLE;
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
                // unix_poll: hang-up once both directions are shut (a closed peer shuts both).
                if !peer_open || (o.shut_wr && peer.is_some_and(|p| p.shut_wr)) {
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
        self.pair(Kind::PipeRead, Kind::PipeWrite)
    }

    /// Two linked simulated files, each behind its own placeholder.
    fn pair(&self, a_kind: Kind, b_kind: Kind) -> Result<(OwnedFd, OwnedFd), Errno> {
        let (a, wa) = placeholder()?;
        let (b, wb) = placeholder()?;
        let (an, bn) = (a.as_raw_fd(), b.as_raw_fd());
        self.change(|o, _| {
            let s = o.next_seq();
            o.put(an, Object::new(a_kind, bn, s), wa);
            o.put(bn, Object::new(b_kind, an, s), wb);
        });
        Ok((a, b))
    }

    /// A simulated connected Unix stream socket pair.
    pub fn socketpair(&self) -> Result<(OwnedFd, OwnedFd), Errno> {
        self.connected(Kind::Socket)
    }

    /// A simulated TCP connection on loopback: `(connecting end, accepted end)`. It differs
    /// from a Unix socket pair where tcp(7) does: a closed peer is a FIN (read-closed, no
    /// hang-up until this end shuts down too), closing with unread data resets the
    /// connection, and data sent to a closed peer is answered with a reset.
    pub fn tcp_pair(&self) -> Result<(OwnedFd, OwnedFd), Errno> {
        self.connected(Kind::Tcp)
    }

    fn connected(&self, kind: Kind) -> Result<(OwnedFd, OwnedFd), Errno> {
        self.pair(kind, kind)
    }

    /// A simulated regular file (always readable and writable; epoll refuses it).
    pub fn regular_file(&self) -> Result<OwnedFd, Errno> {
        let (f, witness) = placeholder()?;
        let n = f.as_raw_fd();
        self.change(|o, _| {
            let s = o.next_seq();
            o.put(n, Object::new(Kind::File, -1, s), witness);
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
            if obj.kind == Kind::Tcp {
                return o.tcp_write(fd, obj, n);
            }
            if !matches!(obj.kind, Kind::PipeWrite | Kind::Socket) {
                return Err(Errno::BADF);
            }
            if obj.shut_wr {
                return Err(Errno::PIPE);
            }
            if !o.is_open(obj.peer) {
                return Err(Errno::PIPE);
            }
            o.deliver(obj.peer, n)
        })
    }

    /// Read up to `max` bytes from a pipe's read end or a socket. `Ok(0)` is end-of-file;
    /// `AGAIN` means nothing is buffered yet.
    pub fn read(&self, fd: &impl AsRawFd, max: u64) -> Result<u64, Errno> {
        let fd = fd.as_raw_fd();
        self.change(|o, _| {
            let obj = *o.get(fd).filter(|x| x.open).ok_or(Errno::BADF)?;
            if obj.kind == Kind::File {
                // A large file opened for reading (the tests' regular file): always data.
                return Ok(max);
            }
            let fin_first = obj.kind == Kind::Tcp && obj.fin_in;
            if matches!(obj.kind, Kind::Tcp | Kind::Socket)
                && obj.rx == 0
                && !fin_first
                && obj.error
            {
                // tcp(7), unix(7): a reset is reported once, by the next read or write (after
                // a FIN, a TCP read reports the end of the stream instead).
                if let Some(me) = o.get_mut(fd) {
                    me.error = false;
                }
                return Err(obj.reset_errno);
            }
            if obj.kind == Kind::Tcp && obj.rx == 0 && (obj.fin_in || obj.reset) {
                return Ok(0);
            }
            if !matches!(obj.kind, Kind::PipeRead | Kind::Socket | Kind::Tcp) {
                return Err(Errno::BADF);
            }
            let take = obj.rx.min(max);
            if take == 0 && max > 0 {
                let peer_gone = !o.is_open(obj.peer) || o.get(obj.peer).is_some_and(|p| p.shut_wr);
                return if peer_gone { Ok(0) } else { Err(Errno::AGAIN) };
            }
            let mut freed = false;
            if let Some(me) = o.get_mut(fd) {
                me.rx -= take;
                freed = me.chunks.take(take);
            }
            // Room for the writer: a Unix socket wakes its writers when a read frees a
            // buffer (sock_wfree); a pipe (pipe_read) and TCP only when they were full.
            let wake = match obj.kind {
                Kind::Socket => freed,
                _ => obj.rx >= PIPE_CAPACITY,
            };
            if wake {
                o.touch(obj.peer, Wake::Out);
            }
            Ok(take)
        })
    }

    /// Close the simulated object behind `fd` (its real placeholder stays open until dropped):
    /// its peer sees a hang-up and every simulated kernel drops registrations of it, as the
    /// real ones do when the last reference to a file closes. Dropping the `OwnedFd` does the
    /// same, noticed by the world's next operation (a wait already asleep on a world with
    /// nothing to do is not woken by a drop: `close` wakes it).
    pub fn close(&self, fd: &impl AsRawFd) {
        let fd = fd.as_raw_fd();
        self.change(|o, _| o.sever(fd));
    }

    /// `shutdown(fd, SHUT_WR)` on a socket: the peer reads end-of-file.
    pub fn shutdown_write(&self, fd: &impl AsRawFd) {
        let fd = fd.as_raw_fd();
        self.change(|o, _| {
            // shutdown(2) on anything but a socket is ENOTSOCK: nothing changes.
            let Some(obj) = o
                .get_mut(fd)
                .filter(|x| matches!(x.kind, Kind::Socket | Kind::Tcp))
            else {
                return;
            };
            // A TCP FIN goes out once; a Unix socket tells its peer every time (unix_shutdown).
            let tell_peer = obj.kind == Kind::Socket || !obj.shut_wr;
            obj.shut_wr = true;
            let peer = obj.peer;
            if let Some(p) = o.get_mut(peer) {
                p.fin_in = true;
            }
            if tell_peer {
                o.touch(peer, Wake::All);
            }
            o.touch(fd, Wake::All);
        });
    }

    /// Put (or clear) a pending error on `fd`, as `SO_ERROR` would.
    pub fn set_error(&self, fd: &impl AsRawFd, error: bool) {
        let fd = fd.as_raw_fd();
        self.change(|o, _| {
            if let Some(obj) = o.get_mut(fd) {
                obj.error = error;
            }
            o.touch(fd, Wake::All);
        });
    }

    /// Bytes buffered for reading at `fd`.
    pub fn buffered(&self, fd: &impl AsRawFd) -> u64 {
        let g = self.lock();
        g.0.get(fd.as_raw_fd()).map_or(0, |o| o.rx)
    }

    /// Tests: a placeholder and its witness, the placeholder with the (freed) number `n`.
    /// Other tests in the process open and close fds meanwhile, so the number is taken with
    /// `F_DUPFD_CLOEXEC` (the lowest free number from `n`: `n` itself exactly when it is
    /// free, never another fd's), and asked again while another thread holds it a moment.
    #[cfg(test)]
    fn placeholder_at(n: RawFd) -> (OwnedFd, OwnedFd) {
        for _ in 0..2000 {
            let (f, mut witness) = placeholder().unwrap();
            if witness.as_raw_fd() == n {
                // The pipe's other end took the number (a lower one was free): move it.
                witness = rustix::io::fcntl_dupfd_cloexec(&witness, n + 1).unwrap();
            }
            let f = if f.as_raw_fd() == n {
                f
            } else {
                rustix::io::fcntl_dupfd_cloexec(&f, n).unwrap()
            };
            if f.as_raw_fd() == n {
                return (f, witness);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("fd number {n} stayed taken by another thread for 2 s");
    }

    /// Tests: a regular file with the (freed) number `n` (see [`Self::placeholder_at`]).
    #[cfg(test)]
    pub(crate) fn file_at_number(&self, n: RawFd) -> OwnedFd {
        let (f, witness) = Self::placeholder_at(n);
        self.change(|o, _| {
            let s = o.next_seq();
            o.put(n, Object::new(Kind::File, -1, s), witness);
        });
        f
    }

    /// Tests: what a regular file closed with number `n` leaves in the table (a closed object),
    /// without any fd: as if `n` had been a simulated file's before another fd took it.
    #[cfg(test)]
    pub(crate) fn closed_file_at_number(&self, n: RawFd) {
        self.change(|o, _| {
            let Ok(i) = usize::try_from(n) else { return };
            if o.table.len() <= i {
                o.table.resize(i + 1, None);
                o.witnesses.resize_with(i + 1, || None);
            }
            let s = o.next_seq();
            let mut obj = Object::new(Kind::File, -1, s);
            obj.open = false;
            o.table[i] = Some(obj);
        });
    }

    /// Tests: a Unix socket pair whose first end has the (freed) number `n`.
    #[cfg(test)]
    pub(crate) fn socketpair_at_number(&self, n: RawFd) -> (OwnedFd, OwnedFd) {
        let (a, wa) = Self::placeholder_at(n);
        let (b, wb) = placeholder().unwrap();
        let bn = b.as_raw_fd();
        self.change(|o, _| {
            let s = o.next_seq();
            o.put(n, Object::new(Kind::Socket, bn, s), wa);
            o.put(bn, Object::new(Kind::Socket, n, s), wb);
        });
        (a, b)
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
        let _keep = w.file_at_number(n);
        let g = w.lock();
        assert!(g.0.readiness(r.as_raw_fd()).unwrap().is_hangup());
    }

    /// Drops 40 write ends at once (more than one sweep's batch of 32) among 100 live pipes:
    /// each of those readers, and only those, sees the hang-up, with no `close` called.
    fn dropped_placeholders_close_their_files(w: &SimWorld<()>) {
        let mut pipes: Vec<_> = (0..100).map(|_| w.pipe().unwrap()).collect();
        let kept: Vec<_> = pipes.split_off(40);
        let readers: Vec<_> = pipes.into_iter().map(|(r, _wr)| r).collect();
        let g = w.lock();
        for r in &readers {
            assert!(g.0.readiness(r.as_raw_fd()).unwrap().is_hangup());
        }
        for (r, _) in &kept {
            assert_eq!(g.0.readiness(r.as_raw_fd()), Some(Readiness::EMPTY));
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot poll pipes")]
    fn dropped_placeholders_close_their_files_through_epoll() {
        dropped_placeholders_close_their_files(&world());
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot poll pipes")]
    fn dropped_placeholders_close_their_files_through_poll() {
        let w = world();
        #[cfg(dasynq_epoll)]
        {
            w.lock().0.reaper.ep = None;
        }
        dropped_placeholders_close_their_files(&w);
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
