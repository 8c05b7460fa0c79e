//! The real kqueue kernels (FreeBSD, NetBSD, OpenBSD, DragonFly, macOS) for the kqueue backend.
//!
//! The kqueue is created through rustix; `kevent` goes through `libc` directly: rustix's
//! kqueue `Event` picks the timer unit itself (no `NOTE_ABSTIME`, no chosen `NOTE_NSECONDS`),
//! has no `EVFILT_USER` on NetBSD, and panics on filters it does not know. Everything else
//! uses rustix where it has the call (`libc` for `sigtimedwait`, `waitid`, `waitpid` with its
//! status macros, and `kill` with real-time signals).
//!
//! Numbers are translated by [`KqueueAbi`](super::kqueue_abi::KqueueAbi) with the target's
//! table (made of `libc` constants): the very translation the simulated kqueue runs with
//! each platform's own numbers. What this system offers comes from its profile
//! ([`KqueuePlatform::features`](super::KqueuePlatform::features)), which is checked against
//! `build.rs`'s capabilities at compile time. Signals are taken with `sigtimedwait` where it
//! exists and by [`sigcatch`](super::sigcatch) (a handler and a brief unblock) elsewhere;
//! both give the full `siginfo` and never block.

// libc's field and constant types differ between the BSDs (`flags` is u16 on FreeBSD, u32 on
// NetBSD...): a cast needed on one target is a no-op on another.
#![allow(clippy::unnecessary_cast)]

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use super::kqueue_abi::{RawKev, TARGET, TARGET_ABI};
use crate::backend::kqueue::{Features, Filter, Kev, KevFlags, KqueueKernel};
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

fn last_raw_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn last_errno() -> Errno {
    TARGET_ABI.errno(last_raw_errno())
}

fn to_raw(ev: &Kev) -> Result<libc::kevent, Errno> {
    let r = TARGET_ABI.encode(ev)?;
    // SAFETY: `struct kevent` is plain old data (integers, and `udata` as an integer or a
    // pointer that is never dereferenced); all zeroes is a valid value.
    let mut k: libc::kevent = unsafe { core::mem::zeroed() };
    k.ident = r.ident as _;
    k.filter = r.filter as _;
    k.flags = r.flags as _;
    k.fflags = r.fflags as _;
    k.data = r.data as _;
    // 64-bit targets only (lib.rs refuses 32-bit kqueue targets): the token fits.
    k.udata = r.udata as usize as _;
    Ok(k)
}

fn from_raw(k: &libc::kevent) -> Option<Kev> {
    TARGET_ABI.decode(&RawKev {
        ident: k.ident as u64,
        filter: k.filter as i32,
        flags: k.flags as u32,
        fflags: k.fflags as u32,
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
        TARGET.features()
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
        let mut raw_changes = [to_raw(&Kev::new(0, Filter::Read, KevFlags(0), 0))?; 4];
        // SAFETY: zeroed `struct kevent`s are valid (see `to_raw`).
        let mut raw_out: [libc::kevent; 4] = unsafe { core::mem::zeroed() };
        let mut done = 0;
        let mut returned = 0;
        while done < changes.len() {
            let n = (changes.len() - done).min(4);
            for (r, c) in raw_changes.iter_mut().zip(&changes[done..done + n]) {
                *r = to_raw(c)?;
            }
            let room = (receipts.len() - returned).min(4);
            let got = kevent(
                kq.as_raw_fd(),
                &raw_changes[..n],
                &mut raw_out[..room],
                Some(Duration::ZERO),
            )?;
            for k in raw_out.iter().take(got) {
                // A receipt that does not decode cannot be attributed: an error for the call.
                let ev = from_raw(k).ok_or(Errno::INVAL)?;
                if let Some(slot) = receipts.get_mut(returned) {
                    *slot = ev;
                    returned += 1;
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

    fn buffer_events(buf: &KqueueBuffer) -> impl Iterator<Item = Option<Kev>> + '_ {
        buf.0.iter().map(from_raw)
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

    fn signal_release(&self, set: SignalSet) {
        #[cfg(not(dasynq_sigtimedwait))]
        super::sigcatch::release(set);
        #[cfg(dasynq_sigtimedwait)]
        let _ = set;
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

    fn kill_group(&self, pgid: u32, signal: Signal) -> Result<(), Errno> {
        let pgid = i32::try_from(pgid).map_err(|_| Errno::SRCH)?;
        // SAFETY: plain system call; the loop guarantees `pgid` is its unreaped child's pid,
        // which no other group can have as its id meanwhile.
        if unsafe { libc::killpg(pgid, signal.raw()) } < 0 {
            return Err(last_errno());
        }
        Ok(())
    }

    fn getpgid(&self, pid: u32) -> Result<u32, Errno> {
        let pid = i32::try_from(pid).map_err(|_| Errno::SRCH)?;
        // SAFETY: plain system call.
        let g = unsafe { libc::getpgid(pid) };
        if g < 0 {
            return Err(last_errno());
        }
        Ok(g as u32)
    }

    fn spawn(
        &self,
        cmd: crate::backend::ChildCommand<'_>,
        how: crate::backend::SpawnHow,
    ) -> Result<SpawnedProcess, Errno> {
        super::spawn::spawn(cmd, how)
    }
}

/// `sigtimedwait(set, {0, 0})`: one pending instance with its siginfo.
#[cfg(dasynq_sigtimedwait)]
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
    let errno = if r < 0 { last_raw_errno() } else { 0 };
    let Some(signo) = TARGET_ABI.sigtimedwait(r, errno)? else {
        return Ok(None);
    };
    // SAFETY: zero-initialised, then filled by the successful call.
    let info = unsafe { info.assume_init() };
    Ok(Some(super::posix::siginfo(&info, signo)))
}

/// No `sigtimedwait` here: a catching handler and a brief unblock ([`sigcatch`]).
///
/// [`sigcatch`]: super::sigcatch
#[cfg(not(dasynq_sigtimedwait))]
fn take_signal(set: SignalSet) -> Result<Option<SigInfo>, Errno> {
    super::sigcatch::take(set)
}

/// `waitid(P_PID, pid, WEXITED | WNOHANG | WNOWAIT)`.
#[cfg(dasynq_waitid_nowait)]
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
#[cfg(not(dasynq_waitid_nowait))]
fn probe_child(pid: u32) -> Result<(), Errno> {
    let pid = i32::try_from(pid).map_err(|_| Errno::CHILD)?;
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } < 0 {
        return Err(Errno::CHILD);
    }
    Ok(())
}
