//! The kqueue platforms: what each one offers ([`Features`]) and the numbers its `kevent`
//! speaks ([`KqueueAbi`]): flags, filters, notes and errnos. One translation,
//! [`KqueueAbi::encode`] and [`KqueueAbi::decode`], turns the backend's [`Kev`]s into a
//! platform's `struct kevent` values and back, and [`KqueueAbi::sigtimedwait`] reads what
//! `sigtimedwait` answered.
//!
//! The real kernel ([`BsdKqueue`](crate::kernel::BsdKqueue)) uses the target's table, made of
//! `libc` constants; the simulated kqueue uses the table of the platform it simulates and runs
//! every change, event, errno and signal take through the same translation, so the numbers a
//! platform really uses are in the path of every simulated test. The simulated tables are
//! written out here (no `libc` on Linux has them), and each is checked at compile time
//! against `libc` whenever the crate is built for that platform: a simulation can never agree
//! with the backend on a number its kernel does not use.

use crate::backend::kqueue::{
    Features, Filter, Kev, KevFlags, NOTE_ABSTIME, NOTE_EXIT, NOTE_NSECONDS, NOTE_TRIGGER,
};
use crate::error::Errno;

/// Which system's kqueue: selects the simulated kernel's behaviour, and on the real kernel
/// the target's own profile (chosen in `build.rs`).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
// On a kqueue target without the simulation, only the target's own profile is used.
#[cfg_attr(not(any(test, feature = "sim")), allow(dead_code))]
pub enum KqueuePlatform {
    /// FreeBSD 12 and later.
    FreeBsd,
    /// NetBSD 10 and later.
    NetBsd,
    /// DragonFly BSD.
    DragonFly,
    /// OpenBSD.
    OpenBsd,
    /// macOS (and Apple's other systems).
    MacOs,
}

impl KqueuePlatform {
    /// Every platform, for running a suite against each.
    #[cfg_attr(not(any(test, feature = "sim")), allow(dead_code))]
    pub const ALL: [KqueuePlatform; 5] = [
        KqueuePlatform::FreeBsd,
        KqueuePlatform::NetBsd,
        KqueuePlatform::DragonFly,
        KqueuePlatform::OpenBsd,
        KqueuePlatform::MacOs,
    ];

    /// What the backend can use on this platform. The real backend takes the target's
    /// profile from here too; `build.rs`'s capability cfgs are checked against it.
    ///
    /// Sources: each system's kqueue(2) (`EVFILT_TIMER`) and sys/event.h for the timer notes;
    /// sigtimedwait(2)/sigwaitinfo(2) exist on FreeBSD, NetBSD and DragonFly, not on OpenBSD or
    /// macOS (xnu's syscalls.master has no such call). OpenBSD's kernel has had
    /// `NOTE_NSECONDS` and `NOTE_ABSTIME` since 2023-era sources, but `libc` has neither for
    /// OpenBSD, so the backend uses milliseconds there; macOS's absolute timer is a different
    /// note (`NOTE_ABSOLUTE`), not used.
    pub const fn features(self) -> Features {
        match self {
            KqueuePlatform::FreeBsd | KqueuePlatform::NetBsd => Features {
                timer_ns: true,
                abs_timer: true,
                sigtimedwait: true,
            },
            KqueuePlatform::DragonFly => Features {
                timer_ns: false,
                abs_timer: false,
                sigtimedwait: true,
            },
            KqueuePlatform::OpenBsd => Features {
                timer_ns: false,
                abs_timer: false,
                sigtimedwait: false,
            },
            KqueuePlatform::MacOs => Features {
                timer_ns: true,
                abs_timer: false,
                sigtimedwait: false,
            },
        }
    }

    /// The numbers this platform's `kevent`, `sigtimedwait` and errnos use.
    pub(crate) const fn abi(self) -> &'static KqueueAbi {
        match self {
            KqueuePlatform::FreeBsd => &FREEBSD,
            KqueuePlatform::NetBsd => &NETBSD,
            KqueuePlatform::DragonFly => &DRAGONFLY,
            KqueuePlatform::OpenBsd => &OPENBSD,
            KqueuePlatform::MacOs => &MACOS,
        }
    }
}

/// The errnos the crate names, in the order of [`KqueueAbi::errnos`].
const NAMED: [Errno; 17] = [
    Errno::PERM,
    Errno::NOENT,
    Errno::SRCH,
    Errno::INTR,
    Errno::IO,
    Errno::BADF,
    Errno::CHILD,
    Errno::AGAIN,
    Errno::NOMEM,
    Errno::EXIST,
    Errno::INVAL,
    Errno::NFILE,
    Errno::MFILE,
    Errno::NOSPC,
    Errno::PIPE,
    Errno::NOSYS,
    Errno::NOTSUP,
];

/// One platform's numbers. Values a platform lacks are 0 (a note) or absent from the
/// platform's [`Features`].
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub(crate) struct KqueueAbi {
    /// `EV_ADD`, `EV_DELETE`, `EV_ENABLE`, `EV_DISABLE`, `EV_ONESHOT`, `EV_CLEAR`,
    /// `EV_RECEIPT`, `EV_DISPATCH`, `EV_EOF`, `EV_ERROR`.
    pub(crate) flags: [u32; 10],
    /// `EVFILT_READ`, `EVFILT_WRITE`, `EVFILT_TIMER`, `EVFILT_SIGNAL`, `EVFILT_PROC`,
    /// `EVFILT_USER`.
    pub(crate) filters: [i32; 6],
    /// `NOTE_EXIT`, `NOTE_TRIGGER`.
    pub(crate) note_exit: u32,
    pub(crate) note_trigger: u32,
    /// `NOTE_NSECONDS` (0: milliseconds only) and the mask of the timer-unit field it sits in
    /// (NetBSD numbers the units 0 to 3, the others give each a bit).
    pub(crate) note_nseconds: u32,
    pub(crate) note_unit_mask: u32,
    /// `NOTE_ABSTIME` (0: none).
    pub(crate) note_abstime: u32,
    /// The errnos of [`NAMED`], in order.
    pub(crate) errnos: [i32; 17],
}

const FLAGS: [KevFlags; 10] = [
    KevFlags::ADD,
    KevFlags::DELETE,
    KevFlags::ENABLE,
    KevFlags::DISABLE,
    KevFlags::ONESHOT,
    KevFlags::CLEAR,
    KevFlags::RECEIPT,
    KevFlags::DISPATCH,
    KevFlags::EOF,
    KevFlags::ERROR,
];

const FILTERS: [Filter; 6] = [
    Filter::Read,
    Filter::Write,
    Filter::Timer,
    Filter::Signal,
    Filter::Proc,
    Filter::User,
];

/// The `EV_*` values FreeBSD, NetBSD, OpenBSD, DragonFly and Apple share (sys/event.h).
const EV: [u32; 10] = [0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80, 0x8000, 0x4000];
/// `EVFILT_*` as FreeBSD, OpenBSD, DragonFly and Apple number them, but for `EVFILT_USER`.
const fn evfilt(user: i32) -> [i32; 6] {
    [-1, -2, -7, -6, -5, user]
}
/// errnos of 4.4BSD's numbering (FreeBSD, NetBSD, OpenBSD, DragonFly, Apple), but for
/// `ENOTSUP`.
const fn bsd_errnos(notsup: i32) -> [i32; 17] {
    [
        1, 2, 3, 4, 5, 9, 10, 35, 12, 17, 22, 23, 24, 28, 32, 78, notsup,
    ]
}

/// FreeBSD: sys/sys/event.h, sys/sys/errno.h.
const FREEBSD: KqueueAbi = KqueueAbi {
    flags: EV,
    filters: evfilt(-11),
    note_exit: 0x8000_0000,
    note_trigger: 0x0100_0000,
    note_nseconds: 0x8,
    note_unit_mask: 0xf,
    note_abstime: 0x10,
    errnos: bsd_errnos(45),
};

/// NetBSD: sys/sys/event.h (filters numbered from 0, timer units as a field),
/// sys/sys/errno.h.
const NETBSD: KqueueAbi = KqueueAbi {
    flags: EV,
    filters: [0, 1, 6, 5, 4, 8],
    note_exit: 0x8000_0000,
    note_trigger: 0x0100_0000,
    note_nseconds: 0x3,
    note_unit_mask: 0x3,
    note_abstime: 0x10,
    errnos: bsd_errnos(86),
};

/// OpenBSD: sys/sys/event.h, sys/sys/errno.h.
const OPENBSD: KqueueAbi = KqueueAbi {
    flags: EV,
    filters: evfilt(-10),
    note_exit: 0x8000_0000,
    note_trigger: 0x0100_0000,
    note_nseconds: 0,
    note_unit_mask: 0,
    note_abstime: 0,
    errnos: bsd_errnos(91),
};

/// DragonFly: sys/sys/event.h, sys/sys/errno.h.
const DRAGONFLY: KqueueAbi = KqueueAbi {
    flags: EV,
    filters: evfilt(-9),
    note_exit: 0x8000_0000,
    note_trigger: 0x0100_0000,
    note_nseconds: 0,
    note_unit_mask: 0,
    note_abstime: 0,
    errnos: bsd_errnos(45),
};

/// Apple: xnu bsd/sys/event.h, bsd/sys/errno.h (`ENOTSUP` 45, `EOPNOTSUPP` 102).
const MACOS: KqueueAbi = KqueueAbi {
    flags: EV,
    filters: evfilt(-10),
    note_exit: 0x8000_0000,
    note_trigger: 0x0100_0000,
    note_nseconds: 0x4,
    note_unit_mask: 0x7,
    note_abstime: 0,
    errnos: bsd_errnos(45),
};

/// A `struct kevent` in a platform's numbers (the fields wide enough for every platform).
#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
pub(crate) struct RawKev {
    pub(crate) ident: u64,
    pub(crate) filter: i32,
    pub(crate) flags: u32,
    pub(crate) fflags: u32,
    pub(crate) data: i64,
    pub(crate) udata: u64,
}

impl KqueueAbi {
    /// The platform's number for `e` (a number the crate does not name stays as it is).
    pub(crate) fn raw_errno(&self, e: Errno) -> i32 {
        NAMED
            .iter()
            .position(|n| *n == e)
            .map_or(e.raw(), |i| self.errnos[i])
    }

    /// The crate's [`Errno`] for the platform's number `raw`; a number no name has here is
    /// kept as it is (reported as a kernel fault by whoever gets it).
    pub(crate) fn errno(&self, raw: i32) -> Errno {
        self.errnos
            .iter()
            .position(|n| *n == raw)
            .map_or(Errno(raw), |i| NAMED[i])
    }

    fn raw_filter(&self, f: Filter) -> i32 {
        let i = FILTERS.iter().position(|x| *x == f).unwrap_or(0);
        self.filters[i]
    }

    /// A change or event in the platform's numbers. `EINVAL` for what the platform lacks (a
    /// nanosecond or absolute timer where there is none).
    pub(crate) fn encode(&self, ev: &Kev) -> Result<RawKev, Errno> {
        let flags = FLAGS
            .iter()
            .zip(self.flags)
            .filter(|(k, _)| ev.flags.contains(**k))
            .fold(0, |acc, (_, r)| acc | r);
        // What `fflags` means depends on the filter.
        let mut fflags = 0;
        match ev.filter {
            Filter::Proc if ev.fflags & NOTE_EXIT != 0 => fflags = self.note_exit,
            Filter::User if ev.fflags & NOTE_TRIGGER != 0 => fflags = self.note_trigger,
            Filter::Timer => {
                if ev.fflags & NOTE_NSECONDS != 0 {
                    if self.note_nseconds == 0 {
                        return Err(Errno::INVAL);
                    }
                    fflags |= self.note_nseconds;
                }
                if ev.fflags & NOTE_ABSTIME != 0 {
                    if self.note_abstime == 0 {
                        return Err(Errno::INVAL);
                    }
                    fflags |= self.note_abstime;
                }
            }
            // A read or write event's `fflags` holds the socket error with `EV_EOF`.
            Filter::Read | Filter::Write if ev.flags.contains(KevFlags::EOF) && ev.fflags != 0 => {
                fflags = self.raw_errno(Errno(ev.fflags as i32)) as u32;
            }
            _ => {}
        }
        let mut data = ev.data;
        if ev.flags.contains(KevFlags::ERROR) {
            // A receipt's errno.
            data = i64::from(self.raw_errno(Errno(ev.data as i32)));
        }
        Ok(RawKev {
            ident: ev.ident,
            filter: self.raw_filter(ev.filter),
            flags,
            fflags,
            data,
            udata: ev.udata,
        })
    }

    /// A platform `struct kevent` as the backend's [`Kev`]; `None` for a filter the crate
    /// never registers (a kernel that reports one is faulty). Flags the crate does not use
    /// are dropped.
    pub(crate) fn decode(&self, raw: &RawKev) -> Option<Kev> {
        let filter = FILTERS[self.filters.iter().position(|f| *f == raw.filter)?];
        let flags = FLAGS
            .iter()
            .zip(self.flags)
            .filter(|(_, r)| raw.flags & r == *r)
            .fold(KevFlags(0), |acc, (k, _)| acc | *k);
        let mut fflags = 0;
        let mut data = raw.data;
        match filter {
            Filter::Proc if raw.fflags & self.note_exit != 0 => fflags |= NOTE_EXIT,
            Filter::User if raw.fflags & self.note_trigger != 0 => fflags |= NOTE_TRIGGER,
            Filter::Timer => {
                if self.note_nseconds != 0 && raw.fflags & self.note_unit_mask == self.note_nseconds
                {
                    fflags |= NOTE_NSECONDS;
                }
                if self.note_abstime != 0 && raw.fflags & self.note_abstime != 0 {
                    fflags |= NOTE_ABSTIME;
                }
            }
            Filter::Read | Filter::Write if flags.contains(KevFlags::EOF) && raw.fflags != 0 => {
                fflags = self.errno(raw.fflags as i32).raw() as u32;
            }
            _ => {}
        }
        if flags.contains(KevFlags::ERROR) {
            data = i64::from(self.errno(raw.data as i32).raw());
        }
        Some(Kev {
            ident: raw.ident,
            filter,
            flags,
            fflags,
            data,
            udata: raw.udata,
        })
    }

    /// What `sigtimedwait(set, info, {0, 0})` answered: `r` is its return value, `errno` the
    /// error when `r` is -1. `Ok(Some(signo))` for an instance; `Ok(None)` when none is
    /// pending (`EAGAIN`); anything else is an error, `EINTR` included: an interrupted take
    /// may have left an instance pending, which kqueue will not report again, so the caller
    /// must look again (reading it as "none" stranded instances).
    #[cfg_attr(not(any(dasynq_sigtimedwait, test, feature = "sim")), allow(dead_code))]
    pub(crate) fn sigtimedwait(&self, r: i32, errno: i32) -> Result<Option<i32>, Errno> {
        match r {
            r if r > 0 => Ok(Some(r)),
            -1 if errno == self.raw_errno(Errno::AGAIN) => Ok(None),
            -1 => Err(self.errno(errno)),
            // No signal is numbered 0 or below: a kernel answering so is faulty.
            _ => Err(Errno::INVAL),
        }
    }
}

/// The platform this build runs on (from `build.rs`).
#[cfg(dasynq_kqueue_platform = "freebsd")]
pub(crate) const TARGET: KqueuePlatform = KqueuePlatform::FreeBsd;
#[cfg(dasynq_kqueue_platform = "netbsd")]
pub(crate) const TARGET: KqueuePlatform = KqueuePlatform::NetBsd;
#[cfg(dasynq_kqueue_platform = "openbsd")]
pub(crate) const TARGET: KqueuePlatform = KqueuePlatform::OpenBsd;
#[cfg(dasynq_kqueue_platform = "dragonfly")]
pub(crate) const TARGET: KqueuePlatform = KqueuePlatform::DragonFly;
#[cfg(dasynq_kqueue_platform = "macos")]
pub(crate) const TARGET: KqueuePlatform = KqueuePlatform::MacOs;

/// The target's numbers, from `libc`.
#[cfg(dasynq_kqueue)]
#[allow(clippy::unnecessary_cast)] // libc's types differ between the BSDs
pub(crate) const TARGET_ABI: KqueueAbi = KqueueAbi {
    flags: [
        libc::EV_ADD as u32,
        libc::EV_DELETE as u32,
        libc::EV_ENABLE as u32,
        libc::EV_DISABLE as u32,
        libc::EV_ONESHOT as u32,
        libc::EV_CLEAR as u32,
        libc::EV_RECEIPT as u32,
        libc::EV_DISPATCH as u32,
        libc::EV_EOF as u32,
        libc::EV_ERROR as u32,
    ],
    filters: [
        libc::EVFILT_READ as i32,
        libc::EVFILT_WRITE as i32,
        libc::EVFILT_TIMER as i32,
        libc::EVFILT_SIGNAL as i32,
        libc::EVFILT_PROC as i32,
        libc::EVFILT_USER as i32,
    ],
    note_exit: libc::NOTE_EXIT as u32,
    note_trigger: libc::NOTE_TRIGGER as u32,
    #[cfg(dasynq_timer_ns)]
    note_nseconds: libc::NOTE_NSECONDS as u32,
    #[cfg(not(dasynq_timer_ns))]
    note_nseconds: 0,
    note_unit_mask: TARGET.abi().note_unit_mask,
    #[cfg(dasynq_timer_abs)]
    note_abstime: libc::NOTE_ABSTIME as u32,
    #[cfg(not(dasynq_timer_abs))]
    note_abstime: 0,
    errnos: [
        libc::EPERM,
        libc::ENOENT,
        libc::ESRCH,
        libc::EINTR,
        libc::EIO,
        libc::EBADF,
        libc::ECHILD,
        libc::EAGAIN,
        libc::ENOMEM,
        libc::EEXIST,
        libc::EINVAL,
        libc::ENFILE,
        libc::EMFILE,
        libc::ENOSPC,
        libc::EPIPE,
        libc::ENOSYS,
        libc::ENOTSUP,
    ],
};

/// The simulated table of the target's platform is the target's own, number for number, and
/// its profile agrees with `build.rs`'s capabilities.
#[cfg(dasynq_kqueue)]
const _: () = {
    const fn same(a: &KqueueAbi, b: &KqueueAbi) -> bool {
        let mut i = 0;
        while i < a.flags.len() {
            if a.flags[i] != b.flags[i] {
                return false;
            }
            i += 1;
        }
        let mut i = 0;
        while i < a.filters.len() {
            if a.filters[i] != b.filters[i] {
                return false;
            }
            i += 1;
        }
        let mut i = 0;
        while i < a.errnos.len() {
            if a.errnos[i] != b.errnos[i] {
                return false;
            }
            i += 1;
        }
        a.note_exit == b.note_exit
            && a.note_trigger == b.note_trigger
            && a.note_nseconds == b.note_nseconds
            && a.note_abstime == b.note_abstime
    }
    assert!(same(TARGET.abi(), &TARGET_ABI));
    let f = TARGET.features();
    assert!(f.sigtimedwait == cfg!(dasynq_sigtimedwait));
    assert!(f.timer_ns == cfg!(dasynq_timer_ns));
    assert!(f.abs_timer == cfg!(dasynq_timer_abs));
};

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kev() -> Vec<Kev> {
        let mut v = Vec::new();
        for &filter in &FILTERS {
            for &flag in &FLAGS {
                let mut k = Kev::new(7, filter, flag | KevFlags::ADD, 0x1234_5678_9abc_def0);
                k.data = 42;
                v.push(k);
            }
        }
        v
    }

    #[test]
    fn every_change_survives_each_platforms_numbers() {
        for p in KqueuePlatform::ALL {
            let abi = p.abi();
            for k in every_kev() {
                let raw = abi.encode(&k).unwrap();
                let mut want = k;
                if k.flags.contains(KevFlags::ERROR) {
                    want.data = abi.errno(abi.raw_errno(Errno(42))).raw().into();
                }
                assert_eq!(abi.decode(&raw), Some(want), "{p:?} {k:?}");
            }
        }
    }

    #[test]
    fn notes_and_receipts_keep_their_meaning() {
        for p in KqueuePlatform::ALL {
            let abi = p.abi();
            let f = p.features();
            let mut t = Kev::new(0, Filter::Timer, KevFlags::ADD | KevFlags::ONESHOT, 1);
            t.fflags = NOTE_NSECONDS;
            assert_eq!(abi.encode(&t).is_ok(), f.timer_ns, "{p:?}");
            t.fflags = NOTE_NSECONDS | NOTE_ABSTIME;
            if f.abs_timer {
                assert_eq!(abi.decode(&abi.encode(&t).unwrap()), Some(t), "{p:?}");
            } else {
                assert_eq!(abi.encode(&t), Err(Errno::INVAL), "{p:?}");
            }
            let mut e = Kev::new(9, Filter::Proc, KevFlags::EOF, 2);
            e.fflags = NOTE_EXIT;
            assert_eq!(abi.decode(&abi.encode(&e).unwrap()), Some(e));
            let mut r = Kev::new(9, Filter::Read, KevFlags::ERROR, 2);
            r.data = i64::from(Errno::NOENT.raw());
            let raw = abi.encode(&r).unwrap();
            assert_eq!(raw.data, i64::from(abi.errnos[1]), "the platform's ENOENT");
            assert_eq!(abi.decode(&raw), Some(r));
        }
    }

    /// The bug that made the loop spin on every BSD: "nothing pending" from `sigtimedwait` is
    /// the platform's `EAGAIN` (35 on the BSDs, not Linux's 11).
    #[test]
    fn sigtimedwait_nothing_pending_is_each_platforms_eagain() {
        for p in KqueuePlatform::ALL {
            let abi = p.abi();
            assert_eq!(abi.errnos[7], 35, "{p:?}: EAGAIN");
            assert_eq!(abi.sigtimedwait(-1, 35), Ok(None), "{p:?}");
            assert_eq!(
                abi.sigtimedwait(-1, 4),
                Err(Errno::INTR),
                "{p:?}: EINTR, look again"
            );
            assert_eq!(
                abi.sigtimedwait(-1, 11),
                Err(abi.errno(11)),
                "{p:?}: EDEADLK"
            );
            assert_eq!(abi.sigtimedwait(30, 0), Ok(Some(30)));
            assert_eq!(abi.sigtimedwait(0, 0), Err(Errno::INVAL));
            assert_eq!(abi.sigtimedwait(-7, 0), Err(Errno::INVAL));
        }
    }

    #[test]
    fn unknown_numbers_never_decode_as_something_else() {
        for p in KqueuePlatform::ALL {
            let abi = p.abi();
            let raw = RawKev {
                filter: 12345,
                ..RawKev::default()
            };
            assert_eq!(abi.decode(&raw), None, "{p:?}: an unknown filter");
            assert_eq!(
                abi.errno(4095),
                Errno(4095),
                "an unknown errno stays itself"
            );
        }
    }
}
