//! Accepting at the open-file limit without spinning: [`SpareFd`].

use std::fs::File;
use std::io;

/// A spare file descriptor, held so that a listener can still refuse connections cleanly
/// when the process has reached its open-file limit.
///
/// At the limit, `accept` fails with `EMFILE` (or `ENFILE` for the system's limit) and leaves
/// the connection in the listen backlog, so the listener stays readable: a handler that just
/// re-arms it is called again at once, forever, while the clients wait in the backlog unserved
/// (a level-triggered loop spins; libev documents the trap, libuv works around it inside the
/// library). With a `SpareFd` the handler gives the spare back, accepts the waiting
/// connections one at a time and closes each at once (the client sees the connection closed,
/// not a hang), then takes the spare again: the backlog empties, the listener stops being
/// readable, and the loop sleeps until the next connection or a free fd.
///
/// If another thread takes the freed fd first, the spare cannot be taken again
/// ([`is_held`](Self::is_held) is false): then disable the listener and re-enable it from a
/// timer (and call [`retake`](Self::retake) there), which is also the answer for `ENOBUFS`
/// and `ENOMEM`.
///
/// ```
/// use dasynq::SpareFd;
/// use std::net::TcpListener;
///
/// let mut spare = SpareFd::new()?;
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// listener.set_nonblocking(true)?;
/// // In the listener's handler:
/// match listener.accept() {
///     Ok((conn, _)) => { /* register it */ drop(conn) }
///     Err(e) if SpareFd::is_fd_limit(&e) => {
///         let refused = spare.refuse_pending(|| listener.accept());
///         eprintln!("at the open-file limit: refused {refused} connections");
///     }
///     Err(_) => {} // WouldBlock: nothing waiting
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct SpareFd(Option<File>);

impl SpareFd {
    /// Take a spare fd (`/dev/null`, opened read-only and close-on-exec). Fails only as
    /// `open` does (at the limit already, for instance): take it at startup.
    pub fn new() -> io::Result<SpareFd> {
        Ok(SpareFd(Some(File::open("/dev/null")?)))
    }

    /// Whether the spare is held (it is, except after a [`refuse_pending`](Self::refuse_pending)
    /// that could not take it back).
    pub fn is_held(&self) -> bool {
        self.0.is_some()
    }

    /// Take the spare again if it is not held; returns whether it is held now.
    pub fn retake(&mut self) -> bool {
        if self.0.is_none() {
            self.0 = File::open("/dev/null").ok();
        }
        self.0.is_some()
    }

    /// Whether `e` is the open-file limit (`EMFILE`, the process's; `ENFILE`, the system's).
    pub fn is_fd_limit(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
    }

    /// After `accept` failed at the open-file limit: refuse the connections waiting in the
    /// backlog. Releases the spare, then repeatedly calls `accept` and drops what it returns
    /// (closing the connection), until `accept` reports nothing waiting or fails otherwise;
    /// then takes the spare back. Returns how many connections were refused. Each refusal
    /// closes the fd it used before the next `accept`, so one free fd is enough.
    ///
    /// `accept` must not block: call it on a non-blocking listener.
    pub fn refuse_pending<T>(&mut self, mut accept: impl FnMut() -> io::Result<T>) -> usize {
        if self.0.take().is_none() {
            // No spare to give back: the first accept can only fail again.
            self.retake();
            if self.0.take().is_none() {
                return 0;
            }
        }
        let mut refused = 0;
        loop {
            match accept() {
                Ok(conn) => {
                    drop(conn);
                    refused += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(_) => break,
            }
        }
        self.retake();
        refused
    }
}
