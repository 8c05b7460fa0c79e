//! The real Linux kernel for the epoll backend: `epoll`, `timerfd`, `eventfd`, pidfds and
//! `waitid` through `rustix`; `signalfd` through `libc` (rustix has none).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions, WaitIdStatus};

use crate::child::{ChildStatus, SpawnedProcess};
use crate::signal::{SigInfo, Signal, SignalSet};

use rustix::event::{EventfdFlags, epoll};
use rustix::time::{
    ClockId, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec,
};

use crate::backend::epoll::{CtlOp, EpollKernel};
use crate::error::Errno;
use crate::timer::Clock;
use crate::waker::Notify;

/// The running Linux kernel.
#[derive(Copy, Clone, Debug, Default)]
pub struct LinuxEpoll;

/// A real eventfd; writing to it wakes the loop.
#[derive(Debug)]
pub struct LinuxEventFd(OwnedFd);

impl AsRawFd for LinuxEventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Notify for LinuxEventFd {
    fn notify(&self) {
        // Adding 1 can only fail (EAGAIN) if the counter is near 2^64, which needs 2^64 wakes
        // without the loop reading; the fd is readable then anyway.
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }
}

/// The events buffer of a real `epoll_wait`.
pub struct EpollBuffer(Vec<epoll::Event>);

// SAFETY: `epoll::Event` is `!Send` only because its data union can hold a raw pointer; this
// crate stores and reads nothing but `u64` tokens in it, so moving the buffer between threads
// moves plain integers.
unsafe impl Send for EpollBuffer {}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_rustix(e)
}

fn last_errno() -> Errno {
    Errno(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

fn pid(pid: u32) -> Result<Pid, Errno> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or(Errno::CHILD)
}

fn child_status(s: &WaitIdStatus) -> Option<ChildStatus> {
    if s.exited() {
        return s.exit_status().map(ChildStatus::Exited);
    }
    if s.killed() || s.dumped() {
        return s.terminating_signal().map(|sig| ChildStatus::Signaled {
            signal: Signal::from_raw(sig),
            core_dumped: s.dumped(),
        });
    }
    None
}

fn waitid(id: WaitId<'_>, extra: WaitIdOptions) -> Result<Option<ChildStatus>, Errno> {
    let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | extra;
    match rustix::process::waitid(id, opts) {
        Ok(Some(s)) => Ok(child_status(&s)),
        Ok(None) => Ok(None),
        Err(e) => Err(errno(e)),
    }
}

/// A signal as rustix wants it, for the numbers the loop lets through.
fn rustix_signal(signal: Signal) -> Result<rustix::process::Signal, Errno> {
    let n = signal.raw();
    if n < 1 || n > libc::SIGRTMAX() {
        return Err(Errno::INVAL);
    }
    // SAFETY: `n` is a signal number this kernel knows (1..=SIGRTMAX, checked just above).
    Ok(unsafe { rustix::process::Signal::from_raw_unchecked(n) })
}

fn clock_id(clock: Clock) -> ClockId {
    match clock {
        Clock::Monotonic => ClockId::Monotonic,
        Clock::System => ClockId::Realtime,
    }
}

fn timespec_ns(ts: Timespec) -> u64 {
    // CLOCK_MONOTONIC and CLOCK_REALTIME (after 1970) are never negative.
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

fn ns_timespec(ns: u64) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX),
        tv_nsec: (ns % 1_000_000_000) as _,
    }
}

impl EpollKernel for LinuxEpoll {
    type Fd = OwnedFd;
    type EventFd = LinuxEventFd;
    type Buffer = EpollBuffer;

    fn epoll_create(&self) -> Result<OwnedFd, Errno> {
        epoll::create(epoll::CreateFlags::CLOEXEC).map_err(errno)
    }

    fn epoll_ctl(
        &self,
        ep: &OwnedFd,
        op: CtlOp,
        fd: RawFd,
        events: u32,
        data: u64,
    ) -> Result<(), Errno> {
        // SAFETY: the fd number is only passed to epoll_ctl, which checks it; the borrow does
        // not outlive this call. The core owns every user fd it registers (so it is open), and
        // the backend's own objects are owned by the backend.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let flags = epoll::EventFlags::from_bits_retain(events);
        let data = epoll::EventData::new_u64(data);
        match op {
            CtlOp::Add => epoll::add(ep, fd, data, flags),
            CtlOp::Mod => epoll::modify(ep, fd, data, flags),
            CtlOp::Del => epoll::delete(ep, fd),
        }
        .map_err(errno)
    }

    fn buffer(&self, capacity: usize) -> Result<Self::Buffer, Errno> {
        let mut v = Vec::new();
        v.try_reserve_exact(capacity.max(1))
            .map_err(|_| Errno::NOMEM)?;
        Ok(EpollBuffer(v))
    }

    fn epoll_wait(
        &self,
        ep: &OwnedFd,
        buf: &mut Self::Buffer,
        timeout: Option<Duration>,
    ) -> Result<(), Errno> {
        let buf = &mut buf.0;
        buf.clear();
        let ts = timeout.map(|d| Timespec {
            tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: d.subsec_nanos() as _,
        });
        // `spare_capacity` fills the reserved capacity in place: no allocation.
        epoll::wait(ep.as_fd(), rustix::buffer::spare_capacity(buf), ts.as_ref())
            .map(|_| ())
            .map_err(errno)
    }

    fn buffer_events(buf: &Self::Buffer) -> impl Iterator<Item = (u32, u64)> + '_ {
        buf.0.iter().map(|e| {
            // Copy the packed fields out before use.
            let flags = e.flags;
            let data = e.data;
            (flags.bits(), data.u64())
        })
    }

    fn timerfd_create(&self, clock: Clock) -> Result<OwnedFd, Errno> {
        let id = match clock {
            Clock::Monotonic => TimerfdClockId::Monotonic,
            Clock::System => TimerfdClockId::Realtime,
        };
        rustix::time::timerfd_create(id, TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK)
            .map_err(errno)
    }

    fn timerfd_settime(&self, fd: &OwnedFd, deadline: Option<u64>) -> Result<(), Errno> {
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // An all-zero it_value disarms; deadline 0 (the clock's origin, long past) becomes 1 ns
        // so it still fires at once.
        let value = match deadline {
            None => zero,
            Some(ns) => ns_timespec(ns.max(1)),
        };
        let spec = Itimerspec {
            it_interval: zero,
            it_value: value,
        };
        rustix::time::timerfd_settime(fd, TimerfdTimerFlags::ABSTIME, &spec)
            .map(|_| ())
            .map_err(errno)
    }

    fn clock_now(&self, clock: Clock) -> u64 {
        timespec_ns(rustix::time::clock_gettime(clock_id(clock)))
    }

    fn eventfd_create(&self) -> Result<LinuxEventFd, Errno> {
        rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map(LinuxEventFd)
            .map_err(errno)
    }

    fn eventfd_read(&self, fd: &LinuxEventFd) -> Result<u64, Errno> {
        let mut b = [0u8; 8];
        rustix::io::read(&fd.0, &mut b).map_err(errno)?;
        Ok(u64::from_ne_bytes(b))
    }

    fn signalfd_create(&self) -> Result<OwnedFd, Errno> {
        let mask = super::posix::to_sigset(SignalSet::new());
        // SAFETY: `mask` is an initialised sigset that outlives the call; -1 asks for a new fd.
        let fd = unsafe { libc::signalfd(-1, &mask, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(last_errno());
        }
        // SAFETY: `signalfd` just returned this new fd, which nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn signalfd_set_mask(&self, fd: &OwnedFd, set: SignalSet) -> Result<(), Errno> {
        let mask = super::posix::to_sigset(set);
        // SAFETY: `fd` is an open signalfd we own; `mask` is initialised and outlives the call.
        if unsafe { libc::signalfd(fd.as_raw_fd(), &mask, 0) } < 0 {
            return Err(last_errno());
        }
        Ok(())
    }

    fn signalfd_read(&self, fd: &OwnedFd) -> Result<Option<SigInfo>, Errno> {
        const SIZE: usize = core::mem::size_of::<libc::signalfd_siginfo>();
        let mut buf = [0u8; SIZE];
        match rustix::io::read(fd, &mut buf) {
            Ok(SIZE) => {
                let raw: libc::signalfd_siginfo =
                    // SAFETY: the kernel wrote one whole `signalfd_siginfo`: plain old data
                    // (integers, padding), so any bytes are valid; read_unaligned copies it out.
                    unsafe { core::ptr::read_unaligned(buf.as_ptr().cast()) };
                Ok(Some(SigInfo::from_signalfd(&raw)))
            }
            Ok(_) => Ok(None),
            Err(rustix::io::Errno::AGAIN) => Ok(None),
            Err(e) => Err(errno(e)),
        }
    }

    fn signalfd_read_many(
        &self,
        fd: &OwnedFd,
        max: usize,
        f: &mut dyn FnMut(SigInfo),
    ) -> Result<usize, Errno> {
        // signalfd(2): a read returns as many whole records as fit in the buffer and are
        // pending (at least one, or EAGAIN on a non-blocking fd).
        const SIZE: usize = core::mem::size_of::<libc::signalfd_siginfo>();
        const MOST: usize = 16;
        let mut buf = [core::mem::MaybeUninit::<u8>::uninit(); SIZE * MOST];
        let want = max.min(MOST) * SIZE;
        let Some(room) = buf.get_mut(..want).filter(|r| !r.is_empty()) else {
            return Ok(0);
        };
        let got = match rustix::io::read(fd, room) {
            Ok((filled, _)) => &*filled,
            Err(rustix::io::Errno::AGAIN) => return Ok(0),
            Err(e) => return Err(errno(e)),
        };
        let mut n = 0;
        for rec in got.chunks_exact(SIZE) {
            let raw: libc::signalfd_siginfo =
                // SAFETY: `rec` is SIZE bytes the kernel wrote (the initialised part of the
                // buffer): one whole `signalfd_siginfo`, plain old data (integers, padding),
                // so any bytes are valid; read_unaligned copies it out.
                unsafe { core::ptr::read_unaligned(rec.as_ptr().cast()) };
            f(SigInfo::from_signalfd(&raw));
            n += 1;
        }
        Ok(n)
    }

    fn signal_blocked(&self, signal: Signal) -> bool {
        super::posix::blocked_signals().contains(signal)
    }

    fn probe_child(&self, child: u32) -> Result<(), Errno> {
        waitid(WaitId::Pid(pid(child)?), WaitIdOptions::NOWAIT).map(|_| ())
    }

    fn pidfd_open(&self, child: u32) -> Result<OwnedFd, Errno> {
        rustix::process::pidfd_open(pid(child)?, PidfdFlags::empty()).map_err(errno)
    }

    fn close_pidfd(&self, fd: OwnedFd) {
        drop(fd);
    }

    fn waitid_pidfd(&self, fd: BorrowedFd<'_>) -> Result<Option<ChildStatus>, Errno> {
        waitid(WaitId::PidFd(fd), WaitIdOptions::empty())
    }

    fn waitid_pid(&self, child: u32) -> Result<Option<ChildStatus>, Errno> {
        waitid(WaitId::Pid(pid(child)?), WaitIdOptions::empty())
    }

    fn pidfd_send_signal(&self, fd: BorrowedFd<'_>, signal: Signal) -> Result<(), Errno> {
        rustix::process::pidfd_send_signal(fd, rustix_signal(signal)?).map_err(errno)
    }

    fn kill_group(&self, pgid: u32, signal: Signal) -> Result<(), Errno> {
        rustix::process::kill_process_group(pid(pgid)?, rustix_signal(signal)?).map_err(errno)
    }

    fn getpgid(&self, child: u32) -> Result<u32, Errno> {
        rustix::process::getpgid(Some(pid(child)?))
            .map(|g| g.as_raw_nonzero().get() as u32)
            .map_err(errno)
    }

    fn kill(&self, child: u32, signal: Signal) -> Result<(), Errno> {
        rustix::process::kill_process(pid(child)?, rustix_signal(signal)?).map_err(errno)
    }

    fn spawn(
        &self,
        cmd: crate::backend::ChildCommand<'_>,
        how: crate::backend::SpawnHow,
    ) -> Result<SpawnedProcess, Errno> {
        super::spawn::spawn(cmd, how)
    }
}
