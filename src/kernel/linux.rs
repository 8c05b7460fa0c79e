//! The real Linux kernel for the epoll backend: `epoll`, `timerfd` and `eventfd` through
//! `rustix`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

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
}
