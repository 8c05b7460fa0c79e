//! Typed, borrowed views of a registered fd: the std type a handler registered (a
//! `TcpListener`, a `TcpStream`, a `File`...), usable for the length of one handler call,
//! without `unsafe` and without taking the fd from the loop.
//!
//! This is the pattern of `io-lifetimes`' `as_socketlike_view` / `as_filelike_view`: the
//! value is built around the borrowed fd and never dropped (so never closes it), and only a
//! shared reference to it is handed out, through which std's types cannot close or replace
//! their fd. Which types may be viewed is an `unsafe` marker trait, [`FdView`], implemented
//! here for std's fd types; `io-lifetimes` itself is not a dependency: it has been in
//! maintenance since std took over its owned and borrowed fd types (Rust 1.63), and the
//! part needed here is these few lines.

use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Types that can be viewed around a borrowed fd ([`View`]).
///
/// # Safety
///
/// `From<OwnedFd>` must store the fd in the value and nowhere else (no copy of the number
/// kept, no second owner); nothing reachable from a shared reference to the value may close
/// the fd, replace it, or move it out; and not running the value's `Drop` must be harmless
/// (the view never drops it). std's fd types meet this: their `From<OwnedFd>` wraps the fd,
/// and their `&self` methods read, write, accept, set options, or duplicate (`try_clone`
/// makes a new fd).
pub unsafe trait FdView: From<OwnedFd> + AsFd {}

// Each impl below: a std wrapper of one `OwnedFd`, whose `From<OwnedFd>` wraps it, whose
// `&self` methods never close or replace it, and whose `Drop` only closes the fd (which the
// view must not do, and does not run).
// SAFETY: `File` is such a wrapper (see above).
unsafe impl FdView for std::fs::File {}
// SAFETY: as above.
unsafe impl FdView for std::net::TcpStream {}
// SAFETY: as above.
unsafe impl FdView for std::net::TcpListener {}
// SAFETY: as above.
unsafe impl FdView for std::net::UdpSocket {}
// SAFETY: as above.
unsafe impl FdView for std::os::unix::net::UnixStream {}
// SAFETY: as above.
unsafe impl FdView for std::os::unix::net::UnixListener {}
// SAFETY: as above.
unsafe impl FdView for std::os::unix::net::UnixDatagram {}
// SAFETY: as above.
unsafe impl FdView for std::process::ChildStdin {}
// SAFETY: as above.
unsafe impl FdView for std::process::ChildStdout {}
// SAFETY: as above.
unsafe impl FdView for std::process::ChildStderr {}

/// A `T` around an fd borrowed for `'a`: derefs to `&T`, and reads and writes as `T` does.
/// Dropping it leaves the fd open (the loop owns it).
///
/// Get one from the event ([`Event::view`](crate::Event::view)) or from any borrowed fd
/// ([`View::new`]). It cannot outlive the borrow, so it cannot be kept past the handler call:
///
/// ```compile_fail
/// use dasynq::{Cx, Event, Handler, Rearm, View};
/// use std::net::TcpStream;
/// struct Conn(Option<View<'static, TcpStream>>);
/// impl Handler for Conn {
///     type Data = ();
///     fn on_event(&mut self, _: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
///         self.0 = ev.view::<TcpStream>(); // error: lifetime may not live long enough
///         Rearm::Rearm
///     }
/// }
/// ```
///
/// and it gives no way to take the value (or its fd) out of the view:
///
/// ```compile_fail
/// use dasynq::View;
/// use std::os::fd::{AsFd, OwnedFd};
/// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
/// let v = View::<std::os::unix::net::UnixStream>::new(a.as_fd());
/// let owned: OwnedFd = (*v).into(); // error: cannot move out of a shared reference
/// ```
///
/// Viewing an fd as the wrong type is not unsound, only useless: the calls fail as the
/// kernel says (a pipe viewed as a `TcpStream` answers `ENOTSOCK`).
pub struct View<'a, T: FdView> {
    value: ManuallyDrop<T>,
    _fd: PhantomData<BorrowedFd<'a>>,
}

impl<'a, T: FdView> View<'a, T> {
    /// View `fd` as a `T` for as long as the borrow lasts.
    pub fn new(fd: BorrowedFd<'a>) -> Self {
        // `FdView` promises `T` stores the fd and nothing else; the value sits in a
        // `ManuallyDrop` that is never dropped, and only `&T` is handed out, through which
        // (`FdView` again) the fd cannot be closed or taken.
        // SAFETY: `fd` is open for `'a` (it is borrowed) and this `OwnedFd` is never dropped
        // (above), so the fd stays owned by its lender and is used only while the borrow lasts.
        let owned = unsafe { OwnedFd::from_raw_fd(fd.as_raw_fd()) };
        View {
            value: ManuallyDrop::new(T::from(owned)),
            _fd: PhantomData,
        }
    }
}

impl<T: FdView> Deref for View<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: FdView> AsFd for View<'_, T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.value.as_fd()
    }
}

impl<T: FdView> std::io::Read for View<'_, T>
where
    for<'b> &'b T: std::io::Read,
{
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self.value).read(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [std::io::IoSliceMut<'_>]) -> std::io::Result<usize> {
        (&*self.value).read_vectored(bufs)
    }
}

impl<T: FdView> std::io::Write for View<'_, T>
where
    for<'b> &'b T: std::io::Write,
{
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.value).write(buf)
    }
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        (&*self.value).write_vectored(bufs)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.value).flush()
    }
}

impl<T: FdView + core::fmt::Debug> core::fmt::Debug for View<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("View").field(&*self.value).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_view_reads_and_writes_and_leaves_the_fd_open() {
        let (a, b) = UnixStream::pair().unwrap();
        {
            let mut v = View::<UnixStream>::new(a.as_fd());
            v.write_all(b"ping").unwrap();
        }
        let mut got = [0; 4];
        (&b).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        // The view was dropped; `a` is still open and usable.
        (&a).write_all(b"pong").unwrap();
        (&b).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");
    }

    #[test]
    fn a_view_of_the_wrong_type_fails_as_the_kernel_says() {
        let (r, _w) = rustix::pipe::pipe().unwrap();
        {
            let v = View::<std::net::TcpStream>::new(r.as_fd());
            let e = v.peer_addr().unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOTSOCK));
        }
        // Still open: fcntl on it works.
        assert!(rustix::io::fcntl_getfd(&r).is_ok());
    }
}
