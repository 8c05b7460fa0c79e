//! The real kqueue kernels (FreeBSD, NetBSD, OpenBSD, DragonFly, macOS) for the kqueue backend.
//!
//! The kqueue is created through rustix; `kevent` goes through `libc` directly: rustix's
//! kqueue `Event` picks the timer unit itself (no `NOTE_ABSTIME`, no chosen `NOTE_NSECONDS`),
//! has no `EVFILT_USER` on NetBSD, and panics on filters it does not know. Everything else
//! uses rustix where it has the call (`libc` for `sigtimedwait`, `sigwait`, `waitid`,
//! `waitpid` with its status macros, and `kill` with real-time signals).

// libc's field and constant types differ between the BSDs (`flags` is u16 on FreeBSD, u32 on
// NetBSD...): a cast needed on one target is a no-op on another.
#![allow(clippy::unnecessary_cast)]

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::process::Command;
use std::time::Duration;

use crate::backend::kqueue::{
    Features, Filter, Kev, KevFlags, KqueueKernel, NOTE_ABSTIME, NOTE_EXIT, NOTE_NSECONDS,
    NOTE_TRIGGER,
};
use crate::child::{ChildStatus, SpawnedProcess};
use crate::error::Errno;
use crate::signal::{SigInfo, Signal, SignalSet};
use crate::timer::Clock;

/// The running kernel's kqueue.
#[derive(Copy, Clone, Debug, Default)]
pub struct BsdKqueue;

/// The events buffer of a real `kevent` wait.
pub struct KqueueBuffer(Vec<libc::kevent>);

// SAFETY: `libc::kevent` is `!Send` only because `udata` is a raw pointer on some systems;
// this crate stores nothing but integer tokens in it, so moving the buffer moves integers.
unsafe impl Send for KqueueBuffer {}

fn last_errno() -> Errno {
    Errno(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

fn filter_raw(f: Filter) -> libc::c_int {
    (match f {
        Filter::Read => libc::EVFILT_READ,
        Filter::Write => libc::EVFILT_WRITE,
        Filter::Timer => libc::EVFILT_TIMER,
        Filter::Signal => libc::EVFILT_SIGNAL,
        Filter::Proc => libc::EVFILT_PROC,
        Filter::User => libc::EVFILT_USER,
    }) as libc::c_int
}

fn filter_from(raw: libc::c_int) -> Option<Filter> {
    let f = [
        Filter::Read,
        Filter::Write,
        Filter::Timer,
        Filter::Signal,
        Filter::Proc,
        Filter::User,
    ];
    f.into_iter().find(|x| filter_raw(*x) == raw)
}

const FLAG_MAP: [(KevFlags, u32); 10] = [
    (KevFlags::ADD, libc::EV_ADD as u32),
    (KevFlags::DELETE, libc::EV_DELETE as u32),
    (KevFlags::ENABLE, libc::EV_ENABLE as u32),
    (KevFlags::DISABLE, libc::EV_DISABLE as u32),
    (KevFlags::ONESHOT, libc::EV_ONESHOT as u32),
    (KevFlags::CLEAR, libc::EV_CLEAR as u32),
    (KevFlags::RECEIPT, libc::EV_RECEIPT as u32),
    (KevFlags::DISPATCH, libc::EV_DISPATCH as u32),
    (KevFlags::EOF, libc::EV_EOF as u32),
    (KevFlags::ERROR, libc::EV_ERROR as u32),
];

fn flags_raw(f: KevFlags) -> u32 {
    FLAG_MAP
        .iter()
        .filter(|(k, _)| f.contains(*k))
        .fold(0, |acc, (_, r)| acc | r)
}

fn flags_from(raw: u32) -> KevFlags {
    FLAG_MAP
        .iter()
        .filter(|(_, r)| raw & r == *r)
        .fold(KevFlags(0), |acc, (k, _)| acc | *k)
}

#[cfg(any(target_os = "freebsd", target_os = "netbsd", target_vendor = "apple"))]
const RAW_NSECONDS: u32 = libc::NOTE_NSECONDS as u32;
#[cfg(not(any(target_os = "freebsd", target_os = "netbsd", target_vendor = "apple")))]
const RAW_NSECONDS: u32 = 0;

#[cfg(any(target_os = "freebsd", target_os = "netbsd"))]
const RAW_ABSTIME: u32 = libc::NOTE_ABSTIME as u32;
#[cfg(not(any(target_os = "freebsd", target_os = "netbsd")))]
const RAW_ABSTIME: u32 = 0;

fn fflags_raw(ev: &Kev) -> u32 {
    let mut r = 0;
    if ev.fflags & NOTE_EXIT != 0 {
        r |= libc::NOTE_EXIT as u32;
    }
    if ev.fflags & NOTE_TRIGGER != 0 {
        r |= libc::NOTE_TRIGGER as u32;
    }
    if ev.fflags & NOTE_NSECONDS != 0 {
        r |= RAW_NSECONDS;
    }
    if ev.fflags & NOTE_ABSTIME != 0 {
        r |= RAW_ABSTIME;
    }
    r
}

fn to_raw(ev: &Kev) -> libc::kevent {
    // SAFETY: `struct kevent` is plain old data (integers, and `udata` as an integer or a
    // pointer that is never dereferenced); all zeroes is a valid value.
    let mut k: libc::kevent = unsafe { core::mem::zeroed() };
    k.ident = ev.ident as _;
    k.filter = filter_raw(ev.filter) as _;
    k.flags = flags_raw(ev.flags) as _;
    k.fflags = fflags_raw(ev);
    k.data = ev.data as _;
    k.udata = ev.udata as usize as _;
    k
}

fn from_raw(k: &libc::kevent) -> Option<Kev> {
    Some(Kev {
        ident: k.ident as u64,
        filter: filter_from(k.filter as libc::c_int)?,
        flags: flags_from(k.flags as u32),
        // Only EV_EOF's socket error is read back from `fflags`; any bit means "error".
        fflags: k.fflags,
        data: k.data as i64,
        udata: k.udata as usize as u64,
    })
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as _,
        tv_nsec: d.subsec_nanos() as _,
    }
}

fn kevent(
    kq: RawFd,
    changes: &[libc::kevent],
    events: &mut [libc::kevent],
    timeout: Option<Duration>,
) -> Result<usize, Errno> {
    let ts = timeout.map(timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(core::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: the change list is read for `changes.len()` entries and the event list written for
    // at most `events.len()` entries, both valid for those lengths; `ts_ptr` is null or points
    // to a live timespec. The fds named in the changes are owned by the loop or the backend.
    let n = unsafe {
        libc::kevent(
            kq,
            changes.as_ptr(),
            changes.len() as _,
            events.as_mut_ptr(),
            events.len() as _,
            ts_ptr,
        )
    };
    if n < 0 {
        return Err(last_errno());
    }
    Ok(n as usize)
}

fn status_from_wait(raw: libc::c_int) -> Option<ChildStatus> {
    if libc::WIFEXITED(raw) {
        Some(ChildStatus::Exited(libc::WEXITSTATUS(raw)))
    } else if libc::WIFSIGNALED(raw) {
        Some(ChildStatus::Signaled {
            signal: Signal::from_raw(libc::WTERMSIG(raw)),
            core_dumped: libc::WCOREDUMP(raw),
        })
    } else {
        None
    }
}

impl KqueueKernel for BsdKqueue {
    type Fd = OwnedFd;
    type Buffer = KqueueBuffer;

    fn features(&self) -> Features {
        Features {
            // Probed at creation where it may be missing (NetBSD < 10, OpenBSD < 7.3).
            user_filter: true,
            // Without EV_RECEIPT a change call would drain pending events: only where every
            // supported release has it.
            receipt: !cfg!(target_os = "openbsd"),
            dispatch: true,
            timer_ns: cfg!(any(
                target_os = "freebsd",
                target_os = "netbsd",
                target_vendor = "apple"
            )),
            // FreeBSD 12 and NetBSD 10 (the oldest releases supported; NetBSD 9 also lacks
            // NOTE_NSECONDS).
            abs_timer: cfg!(any(target_os = "freebsd", target_os = "netbsd")),
            sigtimedwait: cfg!(any(
                target_os = "freebsd",
                target_os = "dragonfly",
                target_os = "netbsd"
            )),
            udata_replaced_on_enable: cfg!(target_vendor = "apple"),
        }
    }

    fn kqueue(&self) -> Result<OwnedFd, Errno> {
        let fd = rustix::event::kqueue::kqueue().map_err(|e| Errno(e.raw_os_error()))?;
        // Not inherited by fork(2) children anyway; this keeps it from an exec without fork.
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)
            .map_err(|e| Errno(e.raw_os_error()))?;
        Ok(fd)
    }

    fn kevent_change(
        &self,
        kq: &OwnedFd,
        changes: &[Kev],
        receipts: &mut [Kev],
    ) -> Result<usize, Errno> {
        let mut raw_changes = [to_raw(&Kev::new(0, Filter::Read, KevFlags(0), 0)); 4];
        // SAFETY: zeroed `struct kevent`s are valid (see `to_raw`).
        let mut raw_out: [libc::kevent; 4] = unsafe { core::mem::zeroed() };
        let mut done = 0;
        let mut returned = 0;
        while done < changes.len() {
            let n = (changes.len() - done).min(4);
            for (r, c) in raw_changes.iter_mut().zip(&changes[done..done + n]) {
                *r = to_raw(c);
            }
            let room = (receipts.len() - returned).min(4);
            let got = kevent(
                kq.as_raw_fd(),
                &raw_changes[..n],
                &mut raw_out[..room],
                Some(Duration::ZERO),
            )?;
            for k in &raw_out[..got] {
                if let Some(ev) = from_raw(k) {
                    if let Some(slot) = receipts.get_mut(returned) {
                        *slot = ev;
                        returned += 1;
                    }
                }
            }
            done += n;
        }
        Ok(returned)
    }

    fn buffer(&self, capacity: usize) -> Result<KqueueBuffer, Errno> {
        let mut v = Vec::new();
        v.try_reserve_exact(capacity.max(1))
            .map_err(|_| Errno::NOMEM)?;
        Ok(KqueueBuffer(v))
    }

    fn kevent_wait(
        &self,
        kq: &OwnedFd,
        buf: &mut KqueueBuffer,
        timeout: Option<Duration>,
    ) -> Result<(), Errno> {
        let v = &mut buf.0;
        v.clear();
        let cap = v.capacity();
        let spare = v.spare_capacity_mut();
        let ts = timeout.map(timespec);
        let ts_ptr = ts
            .as_ref()
            .map_or(core::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: the kernel writes at most `cap` entries into the vector's spare capacity;
        // `ts_ptr` is null or points to a live timespec.
        let n = unsafe {
            libc::kevent(
                kq.as_raw_fd(),
                core::ptr::null(),
                0,
                spare.as_mut_ptr().cast(),
                cap as _,
                ts_ptr,
            )
        };
        if n < 0 {
            return Err(last_errno());
        }
        // SAFETY: the kernel initialised the first `n` (at most `cap`) entries.
        unsafe { v.set_len((n as usize).min(cap)) };
        Ok(())
    }

    fn buffer_events(buf: &KqueueBuffer) -> impl Iterator<Item = Kev> + '_ {
        buf.0.iter().filter_map(from_raw)
    }

    fn is_regular_file(&self, fd: RawFd) -> Result<bool, Errno> {
        // SAFETY: only passed to fstat, which checks it; the borrow ends with this call.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let st = rustix::fs::fstat(fd).map_err(|e| Errno(e.raw_os_error()))?;
        Ok(rustix::fs::FileType::from_raw_mode(st.st_mode as _)
            == rustix::fs::FileType::RegularFile)
    }

    fn clock_now(&self, clock: Clock) -> u64 {
        let id = match clock {
            Clock::Monotonic => rustix::time::ClockId::Monotonic,
            Clock::System => rustix::time::ClockId::Realtime,
        };
        let ts = rustix::time::clock_gettime(id);
        u64::try_from(ts.tv_sec)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
    }

    fn pipe(&self) -> Result<(OwnedFd, OwnedFd), Errno> {
        let (r, w) = rustix::pipe::pipe().map_err(|e| Errno(e.raw_os_error()))?;
        for fd in [&r, &w] {
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)
                .map_err(|e| Errno(e.raw_os_error()))?;
            rustix::fs::fcntl_setfl(fd, rustix::fs::OFlags::NONBLOCK)
                .map_err(|e| Errno(e.raw_os_error()))?;
        }
        Ok((r, w))
    }

    fn pipe_poke(&self, fd: &OwnedFd) {
        let _ = rustix::io::write(fd, &[1]);
    }

    fn pipe_drain(&self, fd: &OwnedFd) {
        let mut b = [0u8; 64];
        while let Ok(n) = rustix::io::read(fd, &mut b) {
            if n == 0 {
                break;
            }
        }
    }

    fn signal_blocked(&self, signal: Signal) -> bool {
        super::posix::blocked_signals().contains(signal)
    }

    fn signal_take(&self, set: SignalSet) -> Result<Option<SigInfo>, Errno> {
        take_signal(set)
    }

    fn probe_child(&self, pid: u32) -> Result<(), Errno> {
        probe_child(pid)
    }

    fn waitpid(&self, pid: u32) -> Result<Option<ChildStatus>, Errno> {
        let pid = i32::try_from(pid).map_err(|_| Errno::CHILD)?;
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer for the call.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        match r {
            0 => Ok(None),
            r if r < 0 => Err(last_errno()),
            _ => Ok(Some(
                status_from_wait(status).unwrap_or(ChildStatus::Unknown),
            )),
        }
    }

    fn kill(&self, pid: u32, signal: Signal) -> Result<(), Errno> {
        let pid = i32::try_from(pid).map_err(|_| Errno::SRCH)?;
        // SAFETY: plain system call; the loop guarantees `pid` is its unreaped child.
        if unsafe { libc::kill(pid, signal.raw()) } < 0 {
            return Err(last_errno());
        }
        Ok(())
    }

    fn spawn(&self, cmd: &mut Command, reset: Option<SignalSet>) -> Result<SpawnedProcess, Errno> {
        if let Some(set) = reset {
            super::posix::reset_signals_in_child(cmd, set);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EINVAL)))?;
        Ok(SpawnedProcess {
            pid: child.id(),
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
        })
    }
}

/// `sigtimedwait(set, {0, 0})`: one pending instance with its siginfo.
#[cfg(any(target_os = "freebsd", target_os = "dragonfly", target_os = "netbsd"))]
fn take_signal(set: SignalSet) -> Result<Option<SigInfo>, Errno> {
    let raw = super::posix::to_sigset(set);
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut info = core::mem::MaybeUninit::<libc::siginfo_t>::zeroed();
    // SAFETY: `raw` and `zero` are initialised and outlive the call; `info` is a valid,
    // zero-initialised out-pointer.
    let r = unsafe { libc::sigtimedwait(&raw, info.as_mut_ptr(), &zero) };
    if r < 0 {
        let e = last_errno();
        return if e == Errno::AGAIN || e == Errno::INTR {
            Ok(None)
        } else {
            Err(e)
        };
    }
    // SAFETY: zero-initialised, then filled by a successful call.
    let info = unsafe { info.assume_init() };
    Ok(Some(siginfo(&info, r)))
}

#[cfg(any(target_os = "freebsd", target_os = "dragonfly", target_os = "netbsd"))]
fn siginfo(i: &libc::siginfo_t, signo: libc::c_int) -> SigInfo {
    // SAFETY: the accessors read fields of a siginfo the kernel filled for this signal.
    let (pid, uid, status, value) = unsafe {
        (
            i.si_pid(),
            i.si_uid(),
            i.si_status(),
            i.si_value().sival_ptr as usize as u64,
        )
    };
    SigInfo::new(Signal::from_raw(signo))
        .with_code(i.si_code)
        .with_errno(i.si_errno)
        .with_sender(pid, uid)
        .with_status(status)
        .with_value(value)
}

/// `sigpending` + `sigwait`: one pending instance, the signal number only (no
/// `sigtimedwait` on this system).
#[cfg(not(any(target_os = "freebsd", target_os = "dragonfly", target_os = "netbsd")))]
fn take_signal(set: SignalSet) -> Result<Option<SigInfo>, Errno> {
    let mut pending = core::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `sigpending` fills the set it is given.
    if unsafe { libc::sigpending(pending.as_mut_ptr()) } < 0 {
        return Err(last_errno());
    }
    // SAFETY: filled by the successful call.
    let pending = unsafe { pending.assume_init() };
    let Some(sig) = set.iter().find(|s| {
        // SAFETY: `pending` is initialised; `sigismember` only reads it.
        unsafe { libc::sigismember(&pending, s.raw()) == 1 }
    }) else {
        return Ok(None);
    };
    let one = super::posix::to_sigset(SignalSet::of(&[sig]));
    let mut got = 0;
    // SAFETY: `one` is initialised; the signal is pending and blocked, so this returns at
    // once, taking one instance.
    let r = unsafe { libc::sigwait(&one, &mut got) };
    if r != 0 {
        return Err(Errno(r));
    }
    Ok(Some(SigInfo::new(Signal::from_raw(got))))
}

/// `waitid(P_PID, pid, WEXITED | WNOHANG | WNOWAIT)`.
#[cfg(not(target_os = "openbsd"))]
fn probe_child(pid: u32) -> Result<(), Errno> {
    let pid = i32::try_from(pid).map_err(|_| Errno::CHILD)?;
    let mut info = core::mem::MaybeUninit::<libc::siginfo_t>::zeroed();
    // SAFETY: `info` is a valid out-pointer; WNOWAIT leaves the child unreaped.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            info.as_mut_ptr(),
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if r < 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// OpenBSD has no `waitid`: only that the process exists can be checked without reaping it; a
/// pid that is not our child is reported as [`ChildStatus::Unknown`] when the loop tries to
/// reap it.
#[cfg(target_os = "openbsd")]
fn probe_child(pid: u32) -> Result<(), Errno> {
    let pid = i32::try_from(pid).map_err(|_| Errno::CHILD)?;
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } < 0 {
        return Err(Errno::CHILD);
    }
    Ok(())
}
