//! A simulated kqueue(2) over the simulated world, with the differences between FreeBSD,
//! NetBSD, OpenBSD, DragonFly and macOS that matter to the backend selectable as a
//! [`KqueuePlatform`].
//!
//! Modelled rules (kqueue(2) / kevent(2), section "DESCRIPTION" unless noted):
//! - A knote is identified by `(ident, filter)`. `EV_ADD` adds it, or modifies an existing one
//!   without duplicating it, and enables it unless `EV_DISABLE` is also given; `EV_DELETE`,
//!   `EV_ENABLE` and `EV_DISABLE` on a missing knote fail with `ENOENT`.
//! - An error in the change list is returned as an event with `EV_ERROR` set and the errno in
//!   `data` if there is room in the event list, else `kevent` fails with that errno (section
//!   "RETURN VALUES"). `EV_RECEIPT` makes every change return such an entry (`data` 0 on
//!   success) and drains no pending events.
//! - `EV_ONESHOT` deletes the knote after its first report, `EV_DISPATCH` disables it; `EV_CLEAR`
//!   resets its state after each report.
//! - `EVFILT_READ`/`EVFILT_WRITE` on pipes and sockets: ready while data can be read (written);
//!   `EV_EOF` once the other end is closed or shut down (section "EVFILT_READ"). A knote on a
//!   closed file leaves the queue when the file does.
//! - `EVFILT_TIMER`: fires once `data` (milliseconds, or nanoseconds with `NOTE_NSECONDS`) has
//!   elapsed on the monotonic clock; with `NOTE_ABSTIME` (FreeBSD, NetBSD profiles), `data`
//!   is a time on the system clock, converted to a period when the timer is added.
//! - `EVFILT_SIGNAL`: records delivery attempts made after it was added (blocked or not) and
//!   returns their number in `data`; it behaves as if `EV_CLEAR` were set. Attempts made before
//!   it was added are not reported.
//! - `EVFILT_PROC` with `NOTE_EXIT`: fires when the process exits; adding it for a process that
//!   has already exited fails with `ESRCH`.
//! - `EVFILT_USER`: fires after a change with `NOTE_TRIGGER`.
//! - macOS: `EV_ENABLE`/`EV_DISABLE` replace the knote's `udata` with the change's.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::Command;
use std::time::Duration;

use super::world::{Objects, ProcState, SimCall, SimWorld, reserved};
use crate::backend::kqueue::{
    Features, Filter, Kev, KevFlags, KqueueKernel, NOTE_ABSTIME, NOTE_NSECONDS, NOTE_TRIGGER,
};
use crate::child::{ChildStatus, SpawnedProcess};
use crate::error::Errno;
use crate::signal::{SigInfo, Signal, SignalSet};
use crate::timer::Clock;

const KQ_BASE: RawFd = 0x2000_0000;
/// Knotes per simulated kqueue.
const MAX_KNOTES: usize = 8192;

/// Which system's kqueue to simulate.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum KqueuePlatform {
    /// FreeBSD: `EVFILT_USER`, `EV_RECEIPT`, `EV_DISPATCH`, nanosecond timers, `sigtimedwait`.
    FreeBsd,
    /// NetBSD: as FreeBSD.
    NetBsd,
    /// DragonFly: as FreeBSD, but millisecond timers.
    DragonFly,
    /// OpenBSD (conservatively, the oldest supported releases): no `EVFILT_USER` (a pipe wakes
    /// the loop), no `EV_RECEIPT` (one change per call), millisecond timers, no `sigtimedwait`.
    OpenBsd,
    /// macOS: `EV_ENABLE`/`EV_DISABLE` replace `udata`; no `sigtimedwait`.
    MacOs,
}

impl KqueuePlatform {
    /// Every platform, for running a suite against each.
    pub const ALL: [KqueuePlatform; 5] = [
        KqueuePlatform::FreeBsd,
        KqueuePlatform::NetBsd,
        KqueuePlatform::DragonFly,
        KqueuePlatform::OpenBsd,
        KqueuePlatform::MacOs,
    ];

    /// What the backend can use on this platform.
    pub fn features(self) -> Features {
        let bsd = Features {
            user_filter: true,
            receipt: true,
            dispatch: true,
            timer_ns: true,
            abs_timer: true,
            sigtimedwait: true,
            udata_replaced_on_enable: false,
        };
        match self {
            KqueuePlatform::FreeBsd | KqueuePlatform::NetBsd => bsd,
            KqueuePlatform::DragonFly => Features {
                timer_ns: false,
                abs_timer: false,
                ..bsd
            },
            KqueuePlatform::OpenBsd => Features {
                user_filter: false,
                receipt: false,
                timer_ns: false,
                abs_timer: false,
                sigtimedwait: false,
                ..bsd
            },
            KqueuePlatform::MacOs => Features {
                abs_timer: false,
                sigtimedwait: false,
                udata_replaced_on_enable: true,
                ..bsd
            },
        }
    }
}

#[derive(Copy, Clone, Debug)]
struct Knote {
    ident: u64,
    filter: Filter,
    enabled: bool,
    flags: KevFlags,
    udata: u64,
    /// Timers: when it fires (monotonic ns).
    deadline: u64,
    /// Signals: delivery attempts seen so far.
    seen: u64,
    /// User events: triggered and not yet reported.
    triggered: bool,
    /// The order knotes became ready in.
    order: u64,
    /// Read and write filters: the object the fd number named when the knote was added
    /// (kqueue(2), DESCRIPTION: closing a descriptor removes the kevents that name it, so a
    /// later fd given the same number starts with none).
    serial: u64,
}

#[derive(Debug)]
struct Instance {
    open: bool,
    knotes: Vec<Knote>,
    scratch: Vec<(u64, usize)>,
}

/// The kqueue tables of a [`KqueueSim`].
#[derive(Debug)]
pub struct KqueueTables {
    platform: KqueuePlatform,
    instances: Vec<Instance>,
}

/// A simulated kqueue kernel: `Kqueue<KqueueSim>` runs the real kqueue backend against it.
/// Create it for a platform with [`KqueueSim::for_platform`]; drive it like any
/// [`SimWorld`].
pub type KqueueSim = SimWorld<KqueueTables>;

/// A kernel object of a [`KqueueSim`]: a kqueue (simulated only) or a pipe end (a simulated
/// pipe, backed like all of them by a real placeholder fd).
pub struct KqSimFd {
    world: KqueueSim,
    fd: RawFd,
    placeholder: Option<OwnedFd>,
}

impl AsRawFd for KqSimFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl Drop for KqSimFd {
    fn drop(&mut self) {
        let fd = self.fd;
        if self.placeholder.is_some() {
            self.world.close(&fd);
        } else {
            self.world.change(|_, x| {
                if let Some(i) = x.instance_mut(fd) {
                    i.open = false;
                    i.knotes.clear();
                }
            });
        }
    }
}

/// The events buffer of a simulated `kevent` wait.
pub type KqSimBuffer = Vec<Kev>;

impl KqueueTables {
    fn instance_mut(&mut self, fd: RawFd) -> Option<&mut Instance> {
        let i = usize::try_from(fd.checked_sub(KQ_BASE)?).ok()?;
        self.instances.get_mut(i).filter(|i| i.open)
    }
}

/// Whether a knote is ready, with the flags, fflags and data it reports.
fn poll(o: &Objects, k: &Knote) -> Option<(KevFlags, u32, i64)> {
    match k.filter {
        Filter::Read | Filter::Write => {
            let fd = RawFd::try_from(k.ident).ok()?;
            let r = o.readiness(fd)?;
            let eof = if k.filter == Filter::Read {
                r.is_read_closed() || r.is_hangup()
            } else {
                r.is_hangup() || r.is_error()
            };
            let ready = match k.filter {
                Filter::Read => r.is_readable() || eof,
                _ => r.is_writable() || eof,
            };
            let fflags = if r.is_error() {
                Errno::IO.raw() as u32
            } else {
                0
            };
            let flags = if eof || r.is_error() {
                KevFlags::EOF
            } else {
                KevFlags(0)
            };
            ready.then_some((flags, if eof || r.is_error() { fflags } else { 0 }, 0))
        }
        Filter::Timer => (o.now(Clock::Monotonic) >= k.deadline).then_some((KevFlags(0), 0, 1)),
        Filter::Signal => {
            let n = o.signal_attempts(Signal::from_raw(k.ident as i32));
            (n > k.seen).then(|| (KevFlags(0), 0, (n - k.seen) as i64))
        }
        Filter::Proc => {
            let p = o.proc(k.ident as u32)?;
            (p.state != ProcState::Running).then_some((
                KevFlags::EOF,
                crate::backend::kqueue::NOTE_EXIT,
                0,
            ))
        }
        Filter::User => k.triggered.then_some((KevFlags(0), 0, 0)),
    }
}

/// When the object a knote watches last changed (0 for objects without a history).
fn changed(o: &Objects, k: &Knote) -> u64 {
    match k.filter {
        Filter::Read | Filter::Write => RawFd::try_from(k.ident)
            .ok()
            .and_then(|fd| o.get(fd))
            .map_or(0, |obj| obj.changed),
        Filter::Proc => o.proc(k.ident as u32).map_or(0, |p| p.changed),
        _ => 0,
    }
}

/// Whether the object a knote watches still exists.
fn alive(o: &Objects, k: &Knote) -> bool {
    match k.filter {
        Filter::Read | Filter::Write => {
            RawFd::try_from(k.ident).is_ok_and(|fd| o.serial(fd) == Some(k.serial))
        }
        Filter::Proc => o.proc(k.ident as u32).is_some(),
        _ => true,
    }
}

impl KqueueSim {
    /// A simulated kqueue kernel behaving like `platform`'s.
    pub fn for_platform(platform: KqueuePlatform) -> Self {
        SimWorld::with_tables(KqueueTables {
            platform,
            instances: Vec::new(),
        })
    }

    /// Knotes in the simulated kqueue `kq` (for checking that nothing leaked).
    pub fn knotes(&self, kq: &impl AsRawFd) -> usize {
        let mut g = self.lock();
        g.1.instance_mut(kq.as_raw_fd())
            .map_or(0, |i| i.knotes.len())
    }

    /// Knotes in every open simulated kqueue.
    pub fn knotes_total(&self) -> usize {
        let g = self.lock();
        g.1.instances
            .iter()
            .filter(|i| i.open)
            .map(|i| i.knotes.len())
            .sum()
    }

    /// Enabled knotes watching `fd` (either filter) in every open simulated kqueue: what
    /// the kernel would report for it once ready.
    pub fn enabled_fd_knotes(&self, fd: &impl AsRawFd) -> usize {
        let ident = fd.as_raw_fd() as u64;
        let g = self.lock();
        g.1.instances
            .iter()
            .filter(|i| i.open)
            .flat_map(|i| i.knotes.iter())
            .filter(|k| {
                k.ident == ident && k.enabled && matches!(k.filter, Filter::Read | Filter::Write)
            })
            .count()
    }

    /// The platform simulated.
    pub fn platform(&self) -> KqueuePlatform {
        self.lock().1.platform
    }
}

/// Apply one change; the errno if it fails.
fn apply(o: &Objects, x: &mut KqueueTables, kq: RawFd, c: &Kev) -> Result<(), Errno> {
    let macos = x.platform.features().udata_replaced_on_enable;
    let abs_timer = x.platform.features().abs_timer;
    let now = o.now(Clock::Monotonic);
    let inst = x.instance_mut(kq).ok_or(Errno::BADF)?;
    // Knotes of closed fds are gone before any change looks for one.
    inst.knotes.retain(|k| alive(o, k));
    let pos = inst
        .knotes
        .iter()
        .position(|k| k.ident == c.ident && k.filter == c.filter);
    if c.flags.contains(KevFlags::ADD) {
        match c.filter {
            Filter::Read | Filter::Write => {
                let fd = RawFd::try_from(c.ident).map_err(|_| Errno::BADF)?;
                if !o.is_open(fd) {
                    return Err(Errno::BADF);
                }
            }
            Filter::Proc => match o.proc(c.ident as u32) {
                Some(p) if p.state == ProcState::Running => {}
                _ => return Err(Errno::SRCH),
            },
            Filter::Signal if !(1..=127).contains(&c.ident) => return Err(Errno::INVAL),
            _ => {}
        }
        let deadline = if c.filter == Filter::Timer && c.fflags & NOTE_ABSTIME != 0 {
            // FreeBSD kqueue(2), EVFILT_TIMER, NOTE_ABSTIME: `data` is an absolute time on
            // the system clock. Like the kernel, convert it when added: a later clock step
            // does not move it.
            if !abs_timer {
                return Err(Errno::INVAL);
            }
            let abs = c.data.max(0) as u64;
            now.saturating_add(abs.saturating_sub(o.now(Clock::System)))
        } else if c.filter == Filter::Timer {
            let unit = if c.fflags & NOTE_NSECONDS != 0 {
                1
            } else {
                1_000_000
            };
            now.saturating_add((c.data.max(0) as u64).saturating_mul(unit))
        } else {
            0
        };
        let seen = if c.filter == Filter::Signal {
            o.signal_attempts(Signal::from_raw(c.ident as i32))
        } else {
            0
        };
        let keep = KevFlags::ONESHOT.0 | KevFlags::CLEAR.0 | KevFlags::DISPATCH.0;
        let fresh = Knote {
            ident: c.ident,
            filter: c.filter,
            enabled: !c.flags.contains(KevFlags::DISABLE),
            flags: KevFlags(c.flags.0 & keep),
            udata: c.udata,
            deadline,
            seen,
            triggered: false,
            order: o.seq(),
            serial: RawFd::try_from(c.ident)
                .ok()
                .and_then(|fd| o.serial(fd))
                .unwrap_or(0),
        };
        match pos {
            Some(i) => {
                // Modify without duplicating: a signal keeps the attempts it already saw, a
                // user event its trigger.
                let old = inst.knotes[i];
                inst.knotes[i] = Knote {
                    seen: old.seen,
                    triggered: old.triggered,
                    ..fresh
                };
            }
            None => {
                if inst.knotes.len() == inst.knotes.capacity() {
                    return Err(Errno::NOMEM);
                }
                inst.knotes.push(fresh);
            }
        }
        if c.filter == Filter::User && c.fflags & NOTE_TRIGGER != 0 {
            if let Some(k) = inst
                .knotes
                .iter_mut()
                .find(|k| k.ident == c.ident && k.filter == c.filter)
            {
                k.triggered = true;
            }
        }
        return Ok(());
    }
    let i = pos.ok_or(Errno::NOENT)?;
    if c.flags.contains(KevFlags::DELETE) {
        inst.knotes.swap_remove(i);
        return Ok(());
    }
    let k = &mut inst.knotes[i];
    if c.flags.contains(KevFlags::ENABLE) {
        k.enabled = true;
        k.order = o.seq();
    }
    if c.flags.contains(KevFlags::DISABLE) {
        k.enabled = false;
    }
    if macos && (c.flags.contains(KevFlags::ENABLE) || c.flags.contains(KevFlags::DISABLE)) {
        k.udata = c.udata;
    }
    if c.filter == Filter::User && c.fflags & NOTE_TRIGGER != 0 {
        k.triggered = true;
    }
    Ok(())
}

impl KqueueTables {
    fn collect(&mut self, o: &Objects, kq: RawFd, out: &mut Vec<Kev>) {
        out.clear();
        let Some(inst) = self.instance_mut(kq) else {
            return;
        };
        inst.knotes.retain(|k| alive(o, k));
        inst.scratch.clear();
        for (i, k) in inst.knotes.iter().enumerate() {
            if k.enabled && poll(o, k).is_some() {
                // A knote joins the kernel's active queue when its object changes or when it
                // is (re-)enabled, whichever came last: report in that order.
                inst.scratch.push((k.order.max(changed(o, k)), i));
            }
        }
        inst.scratch.sort_unstable();
        let room = out.capacity();
        let mut dead = 0usize;
        for &(_, i) in inst.scratch.iter().take(room) {
            let k = &mut inst.knotes[i];
            let Some((flags, fflags, data)) = poll(o, k) else {
                continue;
            };
            out.push(Kev {
                ident: k.ident,
                filter: k.filter,
                flags,
                fflags,
                data,
                udata: k.udata,
            });
            if k.filter == Filter::Signal {
                k.seen = o.signal_attempts(Signal::from_raw(k.ident as i32));
            }
            if k.flags.contains(KevFlags::CLEAR) && k.filter == Filter::User {
                k.triggered = false;
            }
            if k.flags.contains(KevFlags::DISPATCH) {
                k.enabled = false;
            }
            if k.flags.contains(KevFlags::ONESHOT) {
                // Deleted after this report (marked now, removed below to keep indices).
                k.enabled = false;
                k.ident = u64::MAX;
                dead += 1;
            }
        }
        if dead > 0 {
            inst.knotes.retain(|k| k.ident != u64::MAX);
        }
    }

    fn next_deadline(&mut self, kq: RawFd) -> Option<u64> {
        let inst = self.instance_mut(kq)?;
        inst.knotes
            .iter()
            .filter(|k| k.enabled && k.filter == Filter::Timer)
            .map(|k| k.deadline)
            .min()
    }
}

impl KqueueKernel for KqueueSim {
    type Fd = KqSimFd;
    type Buffer = KqSimBuffer;

    fn features(&self) -> Features {
        self.lock().1.platform.features()
    }

    fn kqueue(&self) -> Result<KqSimFd, Errno> {
        let fd = self.change(|o, x| {
            o.check(SimCall::Kqueue)?;
            x.instances.push(Instance {
                open: true,
                knotes: reserved(MAX_KNOTES)?,
                scratch: reserved(MAX_KNOTES)?,
            });
            Ok(KQ_BASE + (x.instances.len() - 1) as RawFd)
        })?;
        Ok(KqSimFd {
            world: self.clone(),
            fd,
            placeholder: None,
        })
    }

    fn kevent_change(
        &self,
        kq: &KqSimFd,
        changes: &[Kev],
        receipts: &mut [Kev],
    ) -> Result<usize, Errno> {
        self.change(|o, x| {
            o.check(SimCall::KeventChange)?;
            let mut n = 0;
            for c in changes {
                let r = if c.flags.contains(KevFlags::ADD) {
                    o.check(SimCall::KnoteAdd)
                        .and_then(|()| apply(o, x, kq.fd, c))
                } else {
                    apply(o, x, kq.fd, c)
                };
                let receipt = c.flags.contains(KevFlags::RECEIPT);
                if receipt && !x.platform.features().receipt {
                    return Err(Errno::INVAL);
                }
                match r {
                    Err(e) if n >= receipts.len() => return Err(e),
                    Err(e) => {
                        receipts[n] = Kev {
                            flags: KevFlags::ERROR,
                            data: i64::from(e.raw()),
                            ..*c
                        };
                        n += 1;
                    }
                    Ok(()) if receipt && n < receipts.len() => {
                        receipts[n] = Kev {
                            flags: KevFlags::ERROR,
                            data: 0,
                            ..*c
                        };
                        n += 1;
                    }
                    Ok(()) => {}
                }
            }
            Ok(n)
        })
    }

    fn buffer(&self, capacity: usize) -> Result<KqSimBuffer, Errno> {
        let mut v = Vec::new();
        v.try_reserve_exact(capacity.max(1))
            .map_err(|_| Errno::NOMEM)?;
        Ok(v)
    }

    fn kevent_wait(
        &self,
        kq: &KqSimFd,
        buf: &mut KqSimBuffer,
        timeout: Option<Duration>,
    ) -> Result<(), Errno> {
        // This wait's events only, none on error (as the real wrapper).
        buf.clear();
        {
            let mut g = self.lock();
            g.0.check(SimCall::KeventWait)?;
            if g.1.instance_mut(kq.fd).is_none() {
                return Err(Errno::BADF);
            }
        }
        self.wait_with(timeout, |o, x, timed_out| {
            x.collect(o, kq.fd, buf);
            if !buf.is_empty() || timed_out || timeout == Some(Duration::ZERO) {
                return Ok(());
            }
            Err(x.next_deadline(kq.fd))
        });
        Ok(())
    }

    fn buffer_events(buf: &KqSimBuffer) -> impl Iterator<Item = Kev> + '_ {
        buf.iter().copied()
    }

    fn is_regular_file(&self, fd: RawFd) -> Result<bool, Errno> {
        let mut g = self.lock();
        g.0.check(SimCall::Fstat)?;
        let obj = g.0.get(fd).filter(|o| o.open).ok_or(Errno::BADF)?;
        Ok(obj.kind == super::world::Kind::File)
    }

    fn clock_now(&self, clock: Clock) -> u64 {
        self.lock().0.now(clock)
    }

    fn pipe(&self) -> Result<(KqSimFd, KqSimFd), Errno> {
        let (r, w) = SimWorld::pipe(self)?;
        let (rn, wn) = (r.as_raw_fd(), w.as_raw_fd());
        Ok((
            KqSimFd {
                world: self.clone(),
                fd: rn,
                placeholder: Some(r),
            },
            KqSimFd {
                world: self.clone(),
                fd: wn,
                placeholder: Some(w),
            },
        ))
    }

    fn pipe_poke(&self, fd: &KqSimFd) {
        let _ = self.write(&fd.fd, 1);
    }

    fn pipe_drain(&self, fd: &KqSimFd) {
        let _ = self.read(&fd.fd, u64::MAX);
    }

    fn signal_blocked(&self, signal: Signal) -> bool {
        self.lock().0.blocked().contains(signal)
    }

    fn signal_take(&self, set: SignalSet) -> Result<Option<SigInfo>, Errno> {
        self.change(|o, x| {
            o.check(SimCall::SignalfdRead)?;
            let info = o.take_signal(set);
            if x.platform.features().sigtimedwait {
                Ok(info)
            } else {
                // sigwait: the number, nothing else.
                Ok(info.map(|i| SigInfo::new(i.signal())))
            }
        })
    }

    fn probe_child(&self, pid: u32) -> Result<(), Errno> {
        self.change(|o, _| {
            o.check(SimCall::Waitid)?;
            o.wait_process(pid, false).map(|_| ())
        })
    }

    fn waitpid(&self, pid: u32) -> Result<Option<ChildStatus>, Errno> {
        self.change(|o, _| {
            o.check(SimCall::Waitid)?;
            o.wait_process(pid, true)
        })
    }

    fn kill(&self, pid: u32, signal: Signal) -> Result<(), Errno> {
        self.sys_kill(pid, signal)
    }

    fn spawn(
        &self,
        _cmd: &mut Command,
        _reset: Option<SignalSet>,
    ) -> Result<SpawnedProcess, Errno> {
        self.sys_spawn()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(p: KqueuePlatform) -> (KqueueSim, KqSimFd, KqSimBuffer) {
        let k = KqueueSim::for_platform(p);
        let kq = k.kqueue().unwrap();
        let buf = k.buffer(16).unwrap();
        (k, kq, buf)
    }

    fn wait0(k: &KqueueSim, kq: &KqSimFd, buf: &mut KqSimBuffer) -> Vec<Kev> {
        k.kevent_wait(kq, buf, Some(Duration::ZERO)).unwrap();
        buf.clone()
    }

    fn add(ident: u64, filter: Filter, flags: KevFlags, udata: u64) -> Kev {
        Kev::new(ident, filter, KevFlags::ADD | flags, udata)
    }

    /// Found by the `kqueue_backend` fuzz target: knotes were tied to fd numbers, so a socket
    /// dropped without `close` and a regular file given its number revived the socket's write
    /// knote, which then reported forever under a token nobody owned.
    #[test]
    fn a_closed_fds_knotes_do_not_pass_to_the_next_file_with_its_number() {
        let (k, kq, mut buf) = setup(KqueuePlatform::FreeBsd);
        let (a, _b) = k.socketpair().unwrap();
        let n = a.as_raw_fd();
        let w = add(n as u64, Filter::Write, KevFlags(0), 7);
        assert_eq!(k.kevent_change(&kq, &[w], &mut []), Ok(0));
        assert_eq!(wait0(&k, &kq, &mut buf).len(), 1, "the socket is writable");
        drop(a);
        let _keep = k.files_until_number(n);
        assert!(
            wait0(&k, &kq, &mut buf).is_empty(),
            "the knote went with the socket"
        );
        assert_eq!(k.knotes(&kq), 0);
        let del = Kev::new(n as u64, Filter::Write, KevFlags::DELETE, 0);
        assert_eq!(k.kevent_change(&kq, &[del], &mut []), Err(Errno::NOENT));
    }

    #[test]
    fn changes_follow_the_man_page() {
        let (k, kq, _) = setup(KqueuePlatform::FreeBsd);
        let (r, _w) = k.pipe().unwrap();
        let rn = r.as_raw_fd() as u64;
        let mut out = [Kev::new(0, Filter::Read, KevFlags(0), 0); 4];
        let del = Kev::new(rn, Filter::Read, KevFlags::DELETE, 0);
        assert_eq!(k.kevent_change(&kq, &[del], &mut []), Err(Errno::NOENT));
        assert_eq!(
            k.kevent_change(&kq, &[add(rn, Filter::Read, KevFlags(0), 1)], &mut []),
            Ok(0)
        );
        // Re-adding modifies, no duplicate, no EEXIST.
        assert_eq!(
            k.kevent_change(&kq, &[add(rn, Filter::Read, KevFlags(0), 2)], &mut []),
            Ok(0)
        );
        assert_eq!(k.knotes(&kq), 1);
        // An error goes to the event list when there is room.
        let bad = add(999_999, Filter::Read, KevFlags(0), 3);
        assert_eq!(k.kevent_change(&kq, &[bad], &mut out), Ok(1));
        assert!(
            out[0].flags.contains(KevFlags::ERROR) && out[0].data == i64::from(Errno::BADF.raw())
        );
        // With EV_RECEIPT every change answers.
        let good = add(rn, Filter::Read, KevFlags::RECEIPT, 4);
        assert_eq!(
            k.kevent_change(
                &kq,
                &[
                    good,
                    Kev {
                        flags: bad.flags | KevFlags::RECEIPT,
                        ..bad
                    }
                ],
                &mut out
            ),
            Ok(2)
        );
        assert_eq!(
            (out[0].data, out[1].data),
            (0, i64::from(Errno::BADF.raw()))
        );
    }

    #[test]
    fn level_oneshot_dispatch_and_eof() {
        let (k, kq, mut buf) = setup(KqueuePlatform::FreeBsd);
        let (r1, w1) = k.pipe().unwrap();
        let (r2, w2) = k.pipe().unwrap();
        let (r3, w3) = k.pipe().unwrap();
        let ch = [
            add(r1.as_raw_fd() as u64, Filter::Read, KevFlags(0), 1),
            add(r2.as_raw_fd() as u64, Filter::Read, KevFlags::ONESHOT, 2),
            add(r3.as_raw_fd() as u64, Filter::Read, KevFlags::DISPATCH, 3),
        ];
        k.kevent_change(&kq, &ch, &mut []).unwrap();
        for w in [&w1, &w2, &w3] {
            k.write(w, 1).unwrap();
        }
        let ids = |v: Vec<Kev>| v.iter().map(|e| e.udata).collect::<Vec<_>>();
        assert_eq!(ids(wait0(&k, &kq, &mut buf)), vec![1, 2, 3]);
        assert_eq!(
            ids(wait0(&k, &kq, &mut buf)),
            vec![1],
            "one-shot deleted, dispatch disabled"
        );
        assert_eq!(k.knotes(&kq), 2);
        let en = Kev::new(r3.as_raw_fd() as u64, Filter::Read, KevFlags::ENABLE, 3);
        k.kevent_change(&kq, &[en], &mut []).unwrap();
        k.close(&w3);
        let evs = wait0(&k, &kq, &mut buf);
        let e3 = evs.iter().find(|e| e.udata == 3).unwrap();
        assert!(
            e3.flags.contains(KevFlags::EOF),
            "a disabled filter's EOF is reported on enable"
        );
    }

    #[test]
    fn macos_replaces_udata_on_enable() {
        for (p, want) in [(KqueuePlatform::FreeBsd, 1), (KqueuePlatform::MacOs, 9)] {
            let (k, kq, mut buf) = setup(p);
            let (r, w) = k.pipe().unwrap();
            let rn = r.as_raw_fd() as u64;
            k.kevent_change(&kq, &[add(rn, Filter::Read, KevFlags(0), 1)], &mut [])
                .unwrap();
            k.kevent_change(
                &kq,
                &[Kev::new(rn, Filter::Read, KevFlags::ENABLE, 9)],
                &mut [],
            )
            .unwrap();
            k.write(&w, 1).unwrap();
            assert_eq!(wait0(&k, &kq, &mut buf)[0].udata, want, "{p:?}");
        }
    }

    #[test]
    fn signals_record_attempts_after_the_filter_was_added() {
        let (k, kq, mut buf) = setup(KqueuePlatform::FreeBsd);
        k.block_signal(Signal::USR1);
        k.raise(SigInfo::new(Signal::USR1)).unwrap();
        k.kevent_change(
            &kq,
            &[add(
                Signal::USR1.raw() as u64,
                Filter::Signal,
                KevFlags(0),
                5,
            )],
            &mut [],
        )
        .unwrap();
        assert!(
            wait0(&k, &kq, &mut buf).is_empty(),
            "an instance pending before is not reported"
        );
        k.raise(SigInfo::new(Signal::USR1)).unwrap();
        k.raise(SigInfo::new(Signal::USR1)).unwrap();
        let e = wait0(&k, &kq, &mut buf);
        assert_eq!(
            (e.len(), e[0].data),
            (1, 2),
            "two attempts, even though they coalesced"
        );
        assert!(
            wait0(&k, &kq, &mut buf).is_empty(),
            "cleared after the report"
        );
    }

    #[test]
    fn timers_procs_and_user_events() {
        let (k, kq, mut buf) = setup(KqueuePlatform::NetBsd);
        let mut t = add(0, Filter::Timer, KevFlags::ONESHOT, 7);
        t.fflags = NOTE_NSECONDS;
        t.data = 500;
        k.kevent_change(&kq, &[t], &mut []).unwrap();
        let start = k.clock_now(Clock::Monotonic);
        k.kevent_wait(&kq, &mut buf, None).unwrap();
        assert_eq!(buf[0].udata, 7);
        assert_eq!(k.clock_now(Clock::Monotonic) - start, 500);
        let pid = k.spawn_child().unwrap();
        let mut p = add(u64::from(pid), Filter::Proc, KevFlags::ONESHOT, 8);
        p.fflags = crate::backend::kqueue::NOTE_EXIT;
        k.kevent_change(&kq, &[p], &mut []).unwrap();
        assert!(wait0(&k, &kq, &mut buf).is_empty());
        k.exit_child(pid, ChildStatus::Exited(0)).unwrap();
        assert_eq!(wait0(&k, &kq, &mut buf)[0].udata, 8);
        assert_eq!(
            k.kevent_change(&kq, &[p], &mut []),
            Err(Errno::SRCH),
            "already exited"
        );
        k.kevent_change(&kq, &[add(1, Filter::User, KevFlags::CLEAR, 9)], &mut [])
            .unwrap();
        let mut trig = Kev::new(1, Filter::User, KevFlags(0), 9);
        trig.fflags = NOTE_TRIGGER;
        k.kevent_change(&kq, &[trig], &mut []).unwrap();
        assert_eq!(wait0(&k, &kq, &mut buf)[0].udata, 9);
        assert!(wait0(&k, &kq, &mut buf).is_empty());
    }

    #[test]
    fn receipts_are_refused_where_missing() {
        let (k, kq, _) = setup(KqueuePlatform::OpenBsd);
        let (r, _w) = k.pipe().unwrap();
        let c = add(r.as_raw_fd() as u64, Filter::Read, KevFlags::RECEIPT, 1);
        assert_eq!(k.kevent_change(&kq, &[c], &mut [c]), Err(Errno::INVAL));
    }
}
