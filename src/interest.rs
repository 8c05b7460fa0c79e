//! What an fd watcher asks for ([`Interest`]) and what the kernel reports ([`Readiness`]).
//!
//! Both are small bit sets. Readiness has separate bits for error conditions so that an error or
//! hang-up can never be mistaken for read or write readiness (the original library shared one bit
//! between an error flag and an internal flag, and misrouted events because of it).

use core::fmt;
use core::ops::{BitAnd, BitOr, BitOrAssign};

/// Which directions an fd watcher waits for.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Default)]
pub struct Interest(u8);

impl Interest {
    /// Nothing; not accepted at registration, used internally for "disabled".
    pub const NONE: Interest = Interest(0);
    /// Readable (including end-of-file and peer shutdown).
    pub const READ: Interest = Interest(1);
    /// Writable.
    pub const WRITE: Interest = Interest(2);
    /// Readable or writable.
    pub const BOTH: Interest = Interest(3);

    /// Whether no direction is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Whether reading is asked for.
    pub fn is_read(self) -> bool {
        self.0 & 1 != 0
    }
    /// Whether writing is asked for.
    pub fn is_write(self) -> bool {
        self.0 & 2 != 0
    }
    /// Whether every direction of `other` is also in `self`.
    pub fn contains(self, other: Interest) -> bool {
        self.0 & other.0 == other.0
    }
    /// The directions in `self` but not in `other`.
    pub fn without(self, other: Interest) -> Interest {
        Interest(self.0 & !other.0)
    }
}

impl BitOr for Interest {
    type Output = Interest;
    fn bitor(self, rhs: Interest) -> Interest {
        Interest(self.0 | rhs.0)
    }
}
impl BitOrAssign for Interest {
    fn bitor_assign(&mut self, rhs: Interest) {
        self.0 |= rhs.0;
    }
}
impl BitAnd for Interest {
    type Output = Interest;
    fn bitand(self, rhs: Interest) -> Interest {
        Interest(self.0 & rhs.0)
    }
}

impl fmt::Debug for Interest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.is_read(), self.is_write()) {
            (false, false) => f.write_str("NONE"),
            (true, false) => f.write_str("READ"),
            (false, true) => f.write_str("WRITE"),
            (true, true) => f.write_str("BOTH"),
        }
    }
}

/// One half of a bidirectional fd watcher.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum Half {
    /// The read half: readable, end-of-file, read-side shutdown, hang-up, error.
    Read,
    /// The write half: writable, hang-up, error.
    Write,
}

impl Half {
    pub(crate) fn index(self) -> usize {
        match self {
            Half::Read => 0,
            Half::Write => 1,
        }
    }
}

/// What the kernel reported for an fd.
///
/// `ERROR` and `HANGUP` are reported even when not asked for (the kernel always reports them),
/// and even while a watcher is disabled: the loop then keeps them pending and delivers them when
/// the watcher is enabled again.
///
/// Platforms differ in how a peer's close looks: epoll reports a closed pipe or socket as
/// `HANGUP`; kqueue's read filter cannot tell a full close from the peer shutting down its
/// writing side, so a watcher that asked only to read sees `READABLE | READ_CLOSED`. Code
/// that treats "the peer is gone" should test `is_read_closed() || is_hangup()`.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Default)]
pub struct Readiness(u8);

impl Readiness {
    /// Nothing.
    pub const EMPTY: Readiness = Readiness(0);
    /// Data (or end-of-file) can be read without blocking.
    pub const READABLE: Readiness = Readiness(1);
    /// Data can be written without blocking.
    pub const WRITABLE: Readiness = Readiness(2);
    /// The peer shut down its writing side (`EPOLLRDHUP`, kqueue `EV_EOF` on the read filter):
    /// reads will reach end-of-file once buffered data is consumed.
    pub const READ_CLOSED: Readiness = Readiness(4);
    /// Both directions are closed (`EPOLLHUP`, kqueue `EV_EOF` on the write filter).
    pub const HANGUP: Readiness = Readiness(8);
    /// An error is pending on the fd (`EPOLLERR`, kqueue `EV_ERROR`).
    pub const ERROR: Readiness = Readiness(16);

    /// Conditions that persist once they happen and so are kept for a disabled watcher.
    pub(crate) const STICKY: Readiness = Readiness(4 | 8 | 16);

    /// Whether nothing is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    #[inline]
    #[cfg_attr(not(any(dasynq_epoll, test, feature = "sim")), allow(dead_code))]
    pub(crate) const fn from_bits(bits: u8) -> Readiness {
        Readiness(bits & 31)
    }
    /// Whether every bit of `other` is set in `self`.
    pub fn contains(self, other: Readiness) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether any bit of `other` is set in `self`.
    pub fn intersects(self, other: Readiness) -> bool {
        self.0 & other.0 != 0
    }
    /// [`READABLE`](Self::READABLE) is set.
    pub fn is_readable(self) -> bool {
        self.intersects(Self::READABLE)
    }
    /// [`WRITABLE`](Self::WRITABLE) is set.
    pub fn is_writable(self) -> bool {
        self.intersects(Self::WRITABLE)
    }
    /// [`READ_CLOSED`](Self::READ_CLOSED) is set.
    pub fn is_read_closed(self) -> bool {
        self.intersects(Self::READ_CLOSED)
    }
    /// [`HANGUP`](Self::HANGUP) is set.
    pub fn is_hangup(self) -> bool {
        self.intersects(Self::HANGUP)
    }
    /// [`ERROR`](Self::ERROR) is set.
    pub fn is_error(self) -> bool {
        self.intersects(Self::ERROR)
    }

    /// The readiness bits that belong to a watcher with the given interest: the asked-for
    /// directions plus the conditions always reported.
    #[inline]
    pub(crate) fn mask_for(interest: Interest) -> Readiness {
        const ALWAYS: u8 = 8 | 16;
        const MASKS: [Readiness; 4] = [
            Readiness(ALWAYS),
            Readiness(ALWAYS | 1 | 4),
            Readiness(ALWAYS | 2),
            Readiness(ALWAYS | 1 | 2 | 4),
        ];
        MASKS[(interest.0 & 3) as usize]
    }

    /// What `interest` would see if the fd were always ready (regular-file emulation).
    pub(crate) fn always_ready(interest: Interest) -> Readiness {
        let mut m = Readiness::EMPTY;
        if interest.is_read() {
            m |= Readiness::READABLE;
        }
        if interest.is_write() {
            m |= Readiness::WRITABLE;
        }
        m
    }
}

impl BitOr for Readiness {
    type Output = Readiness;
    fn bitor(self, rhs: Readiness) -> Readiness {
        Readiness(self.0 | rhs.0)
    }
}
impl BitOrAssign for Readiness {
    fn bitor_assign(&mut self, rhs: Readiness) {
        self.0 |= rhs.0;
    }
}
impl BitAnd for Readiness {
    type Output = Readiness;
    fn bitand(self, rhs: Readiness) -> Readiness {
        Readiness(self.0 & rhs.0)
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Self::READABLE, "READABLE"),
            (Self::WRITABLE, "WRITABLE"),
            (Self::READ_CLOSED, "READ_CLOSED"),
            (Self::HANGUP, "HANGUP"),
            (Self::ERROR, "ERROR"),
        ];
        let mut first = true;
        for (bit, name) in names {
            if self.contains(bit) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("EMPTY")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_never_cross_directions() {
        let r = Readiness::mask_for(Interest::READ);
        assert!(r.is_readable() && r.is_read_closed() && r.is_hangup() && r.is_error());
        assert!(!r.is_writable());
        let w = Readiness::mask_for(Interest::WRITE);
        assert!(w.is_writable() && w.is_hangup() && w.is_error());
        assert!(!w.is_readable() && !w.is_read_closed());
    }

    #[test]
    fn debug_names_bits() {
        assert_eq!(
            format!("{:?}", Readiness::READABLE | Readiness::HANGUP),
            "READABLE|HANGUP"
        );
        assert_eq!(format!("{:?}", Readiness::EMPTY), "EMPTY");
        assert_eq!(format!("{:?}", Interest::BOTH), "BOTH");
    }
}
