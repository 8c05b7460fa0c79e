//! Fault injection as a wrapper: [`Faulty<K>`] around any kernel (the real ones included) or
//! any backend, failing the calls a [`FaultPlan`] names with the errno it gives, and able to
//! make a wait report an event that names nothing registered.
//!
//! The wrapped kernel knows nothing of it: the same fault tests run against the simulated
//! kernels and against the running Linux kernel (`Epoll<Faulty<LinuxEpoll>>`), and the
//! simulations model only what the kernels do. A failed call does nothing (the wrapper does
//! not call through); a failed wait leaves its buffer reporting nothing, as the real kernels'
//! wrappers do.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::epoll::{CtlOp, EpollKernel};
use crate::backend::kqueue::{Features, Kev, KevFlags, KqueueKernel};
use crate::backend::{
    Backend, BackendEvent, ChildHandle, FdMode, KernelError, Registration, Token,
};
use crate::child::{ChildStatus, SpawnedProcess};
use crate::error::Errno;
use crate::signal::{SigInfo, Signal, SignalSet};
use crate::timer::Clock;
use crate::waker::Notify;

/// A kernel call that a fault can be injected into.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum SimCall {
    /// `epoll_create1`.
    EpollCreate,
    /// `epoll_ctl(EPOLL_CTL_ADD)`.
    EpollCtlAdd,
    /// `epoll_ctl(EPOLL_CTL_MOD)`.
    EpollCtlMod,
    /// `epoll_ctl(EPOLL_CTL_DEL)`.
    EpollCtlDel,
    /// `epoll_wait`.
    EpollWait,
    /// `timerfd_create`.
    TimerfdCreate,
    /// `timerfd_settime`.
    TimerfdSettime,
    /// `eventfd`.
    EventfdCreate,
    /// `read` on an eventfd.
    EventfdRead,
    /// `write` on an eventfd (a wake's notification).
    EventfdWrite,
    /// A backend's fd registration (`Faulty` around a [`Backend`]).
    SimAddFd,
    /// A backend's registration change.
    SimModifyFd,
    /// A backend's deregistration.
    SimRemoveFd,
    /// A backend's deadline change.
    SimSetDeadline,
    /// A backend's wait.
    SimWait,
    /// `signalfd` (create or change the mask), or a backend's `arm_signals`.
    Signalfd,
    /// Taking one signal instance (`read` on a signalfd, `sigtimedwait`...).
    SignalfdRead,
    /// `pidfd_open` (a backend's watch then falls back to `SIGCHLD`).
    PidfdOpen,
    /// `waitid` / `waitpid`.
    Waitid,
    /// Sending a signal to a child (`pidfd_send_signal` or `kill`).
    SignalChild,
    /// Starting a process.
    Spawn,
    /// `kqueue`.
    Kqueue,
    /// `kevent` with a change list.
    KeventChange,
    /// One `EV_ADD` inside a `kevent` change list: fails that change alone (its receipt, or
    /// the call where there is no room for one), as a kernel out of knote memory would.
    KnoteAdd,
    /// `kevent` waiting for events.
    KeventWait,
    /// `fstat`.
    Fstat,
}

/// A fault to inject: fail a call with `errno`, after letting `skip` calls through, `times`
/// times in a row.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct Fault {
    /// The error the call returns.
    pub errno: Errno,
    /// Calls that succeed before the first failure.
    pub skip: u32,
    /// Failures before the fault is spent (`u32::MAX`: never spent).
    pub times: u32,
}

impl Fault {
    /// Fail the next call once.
    pub fn once(errno: Errno) -> Fault {
        Fault {
            errno,
            skip: 0,
            times: 1,
        }
    }
    /// Fail every call from now on.
    pub fn always(errno: Errno) -> Fault {
        Fault {
            errno,
            skip: 0,
            times: u32::MAX,
        }
    }
    /// Fail the `n`th call from now (0 is the next one), once.
    pub fn nth(n: u32, errno: Errno) -> Fault {
        Fault {
            errno,
            skip: n,
            times: 1,
        }
    }
}

const MAX_FAULTS: usize = 16;

#[derive(Default)]
struct Plan {
    faults: heapless::Vec<(SimCall, Fault), MAX_FAULTS>,
    /// Waits that report one more event naming nothing registered.
    garbled: u32,
}

/// The faults pending for a [`Faulty`] wrapper, shared by its clones (keep one to inject
/// while the loop owns the wrapped kernel).
#[derive(Clone, Default)]
pub struct FaultPlan(Arc<Mutex<Plan>>);

impl core::fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FaultPlan")
    }
}

impl FaultPlan {
    fn lock(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inject a fault into `call`. At most 16 faults are pending at once; more are ignored.
    pub fn inject(&self, call: SimCall, fault: Fault) {
        let _ = self.lock().faults.push((call, fault));
    }

    /// Make each of the next `n` successful waits also report an event that names nothing
    /// the backend registered (a token in the reserved range it does not use, or a kqueue
    /// filter it never adds), as a faulty kernel could.
    pub fn garble_waits(&self, n: u32) {
        self.lock().garbled = n;
    }

    /// Remove every pending fault.
    pub fn clear(&self) {
        let mut p = self.lock();
        p.faults.clear();
        p.garbled = 0;
    }

    /// Whether a fault for `call` is pending.
    fn has(&self, call: SimCall) -> bool {
        self.lock().faults.iter().any(|(c, _)| *c == call)
    }

    /// Consume one call of `call` against the plan.
    pub(crate) fn check(&self, call: SimCall) -> Result<(), Errno> {
        let mut p = self.lock();
        let mut result = Ok(());
        let mut spent = None;
        for (i, (c, f)) in p.faults.iter_mut().enumerate() {
            if *c != call {
                continue;
            }
            if f.skip > 0 {
                f.skip -= 1;
                continue;
            }
            result = Err(f.errno);
            if f.times != u32::MAX {
                f.times -= 1;
                if f.times == 0 {
                    spent = Some(i);
                }
            }
            break;
        }
        if let Some(i) = spent {
            p.faults.remove(i);
        }
        result
    }

    /// A wait through the plan: a failed one leaves `buf` reporting nothing; a successful one
    /// may report a garbled event too.
    fn wait<T, E>(
        &self,
        call: SimCall,
        buf: &mut FaultyBuffer<T>,
        inner: impl FnOnce(&mut T) -> Result<(), E>,
        fault: impl Fn(Errno) -> E,
    ) -> Result<(), E> {
        buf.failed = false;
        buf.garbled = false;
        if let Err(e) = self.check(call) {
            buf.failed = true;
            return Err(fault(e));
        }
        inner(&mut buf.inner)?;
        buf.garbled = self.take_garbled();
        Ok(())
    }

    fn take_garbled(&self) -> bool {
        let mut p = self.lock();
        if p.garbled > 0 {
            p.garbled -= 1;
            true
        } else {
            false
        }
    }
}

/// A kernel (or backend) `K` whose calls fail as a [`FaultPlan`] says. Cloning shares the
/// plan.
#[derive(Clone, Debug)]
pub struct Faulty<K> {
    inner: K,
    plan: FaultPlan,
}

impl<K> Faulty<K> {
    /// Wrap `inner` with an empty plan.
    pub fn new(inner: K) -> Self {
        Faulty {
            inner,
            plan: FaultPlan::default(),
        }
    }

    /// Wrap `inner` with an existing plan (shared with whoever else holds it).
    pub fn with_plan(inner: K, plan: FaultPlan) -> Self {
        Faulty { inner, plan }
    }

    /// The wrapped kernel.
    pub fn inner(&self) -> &K {
        &self.inner
    }

    /// The plan (a handle shared with every clone of this wrapper).
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// Inject a fault into `call` (see [`FaultPlan::inject`]).
    pub fn inject(&self, call: SimCall, fault: Fault) {
        self.plan.inject(call, fault);
    }

    /// Remove every pending fault.
    pub fn clear_faults(&self) {
        self.plan.clear();
    }
}

/// The buffer of a wrapped wait: the inner one, plus whether this wait failed (it then
/// reports nothing) and whether it reports a garbled event too.
#[derive(Debug)]
pub struct FaultyBuffer<T> {
    inner: T,
    failed: bool,
    garbled: bool,
}

impl<T> FaultyBuffer<T> {
    fn new(inner: T) -> Self {
        FaultyBuffer {
            inner,
            failed: false,
            garbled: false,
        }
    }
}

/// A wrapped eventfd: a wake's write can be made to fail (`SimCall::EventfdWrite`).
pub struct FaultyEventFd<E> {
    inner: E,
    plan: FaultPlan,
}

impl<E: AsRawFd> AsRawFd for FaultyEventFd<E> {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl<E: Notify> Notify for FaultyEventFd<E> {
    fn notify(&self) {
        if self.plan.check(SimCall::EventfdWrite).is_ok() {
            self.inner.notify();
        }
    }
}

/// A reserved token no backend uses (`Token::RESERVED` plus a large offset).
const GARBLED_TOKEN: u64 = Token::RESERVED + 0x7fff_0000;

impl<K: EpollKernel> EpollKernel for Faulty<K> {
    type Fd = K::Fd;
    type EventFd = FaultyEventFd<K::EventFd>;
    type Buffer = FaultyBuffer<K::Buffer>;

    fn epoll_create(&self) -> Result<K::Fd, Errno> {
        self.plan.check(SimCall::EpollCreate)?;
        self.inner.epoll_create()
    }
    fn epoll_ctl(
        &self,
        ep: &K::Fd,
        op: CtlOp,
        fd: RawFd,
        events: u32,
        data: u64,
    ) -> Result<(), Errno> {
        let call = match op {
            CtlOp::Add => SimCall::EpollCtlAdd,
            CtlOp::Mod => SimCall::EpollCtlMod,
            CtlOp::Del => SimCall::EpollCtlDel,
        };
        self.plan.check(call)?;
        self.inner.epoll_ctl(ep, op, fd, events, data)
    }
    fn buffer(&self, capacity: usize) -> Result<Self::Buffer, Errno> {
        self.inner.buffer(capacity).map(FaultyBuffer::new)
    }
    fn epoll_wait(
        &self,
        ep: &K::Fd,
        buf: &mut Self::Buffer,
        timeout: Option<Duration>,
    ) -> Result<(), Errno> {
        let inner = &self.inner;
        self.plan.wait(
            SimCall::EpollWait,
            buf,
            |b| inner.epoll_wait(ep, b, timeout),
            |e| e,
        )
    }
    fn buffer_events(buf: &Self::Buffer) -> impl Iterator<Item = (u32, u64)> + '_ {
        let events = (!buf.failed).then(|| K::buffer_events(&buf.inner));
        events.into_iter().flatten().chain(
            (buf.garbled && !buf.failed).then_some((crate::backend::epoll::EPOLLIN, GARBLED_TOKEN)),
        )
    }
    fn timerfd_create(&self, clock: Clock) -> Result<K::Fd, Errno> {
        self.plan.check(SimCall::TimerfdCreate)?;
        self.inner.timerfd_create(clock)
    }
    fn timerfd_settime(&self, fd: &K::Fd, deadline: Option<u64>) -> Result<(), Errno> {
        self.plan.check(SimCall::TimerfdSettime)?;
        self.inner.timerfd_settime(fd, deadline)
    }
    fn clock_now(&self, clock: Clock) -> u64 {
        self.inner.clock_now(clock)
    }
    fn eventfd_create(&self) -> Result<Self::EventFd, Errno> {
        self.plan.check(SimCall::EventfdCreate)?;
        Ok(FaultyEventFd {
            inner: self.inner.eventfd_create()?,
            plan: self.plan.clone(),
        })
    }
    fn eventfd_read(&self, fd: &Self::EventFd) -> Result<u64, Errno> {
        self.plan.check(SimCall::EventfdRead)?;
        self.inner.eventfd_read(&fd.inner)
    }
    fn signalfd_create(&self) -> Result<K::Fd, Errno> {
        self.plan.check(SimCall::Signalfd)?;
        self.inner.signalfd_create()
    }
    fn signalfd_set_mask(&self, fd: &K::Fd, set: SignalSet) -> Result<(), Errno> {
        self.plan.check(SimCall::Signalfd)?;
        self.inner.signalfd_set_mask(fd, set)
    }
    fn signalfd_read(&self, fd: &K::Fd) -> Result<Option<SigInfo>, Errno> {
        self.plan.check(SimCall::SignalfdRead)?;
        self.inner.signalfd_read(fd)
    }
    fn signalfd_read_many(
        &self,
        fd: &K::Fd,
        max: usize,
        f: &mut dyn FnMut(SigInfo),
    ) -> Result<usize, Errno> {
        self.plan.check(SimCall::SignalfdRead)?;
        self.inner.signalfd_read_many(fd, max, f)
    }
    fn signal_blocked(&self, signal: Signal) -> bool {
        self.inner.signal_blocked(signal)
    }

    fn not_blocked_error(&self, signal: Signal) -> crate::Error {
        self.inner.not_blocked_error(signal)
    }
    fn probe_child(&self, pid: u32) -> Result<(), Errno> {
        self.plan.check(SimCall::Waitid)?;
        self.inner.probe_child(pid)
    }
    fn pidfd_open(&self, pid: u32) -> Result<OwnedFd, Errno> {
        self.plan.check(SimCall::PidfdOpen)?;
        self.inner.pidfd_open(pid)
    }
    fn close_pidfd(&self, fd: OwnedFd) {
        self.inner.close_pidfd(fd)
    }
    fn waitid_pidfd(&self, fd: BorrowedFd<'_>) -> Result<Option<ChildStatus>, Errno> {
        self.plan.check(SimCall::Waitid)?;
        self.inner.waitid_pidfd(fd)
    }
    fn waitid_pid(&self, pid: u32) -> Result<Option<ChildStatus>, Errno> {
        self.plan.check(SimCall::Waitid)?;
        self.inner.waitid_pid(pid)
    }
    fn pidfd_send_signal(&self, fd: BorrowedFd<'_>, signal: Signal) -> Result<(), Errno> {
        self.plan.check(SimCall::SignalChild)?;
        self.inner.pidfd_send_signal(fd, signal)
    }
    fn kill(&self, pid: u32, signal: Signal) -> Result<(), Errno> {
        self.plan.check(SimCall::SignalChild)?;
        self.inner.kill(pid, signal)
    }
    fn kill_group(&self, pgid: u32, signal: Signal) -> Result<(), Errno> {
        self.plan.check(SimCall::SignalChild)?;
        self.inner.kill_group(pgid, signal)
    }
    fn getpgid(&self, pid: u32) -> Result<u32, Errno> {
        self.inner.getpgid(pid)
    }
    fn spawn(
        &self,
        cmd: crate::backend::ChildCommand<'_>,
        how: crate::backend::SpawnHow,
    ) -> Result<SpawnedProcess, Errno> {
        self.plan.check(SimCall::Spawn)?;
        self.inner.spawn(cmd, how)
    }
}

impl<K: KqueueKernel> KqueueKernel for Faulty<K> {
    type Fd = K::Fd;
    type Buffer = FaultyBuffer<K::Buffer>;

    fn features(&self) -> Features {
        self.inner.features()
    }
    fn kqueue(&self) -> Result<K::Fd, Errno> {
        self.plan.check(SimCall::Kqueue)?;
        self.inner.kqueue()
    }
    fn kevent_change(
        &self,
        kq: &K::Fd,
        changes: &[Kev],
        receipts: &mut [Kev],
    ) -> Result<usize, Errno> {
        self.plan.check(SimCall::KeventChange)?;
        if !self.plan.has(SimCall::KnoteAdd) {
            return self.inner.kevent_change(kq, changes, receipts);
        }
        // One change at a time, so that one `EV_ADD` can fail alone, as in a kernel out of
        // knote memory (kevent(2), RETURN VALUES: its error goes to the event list if there
        // is room, else the call fails with it, the changes before it made).
        let mut n = 0;
        for c in changes {
            if c.flags.contains(KevFlags::ADD) {
                if let Err(e) = self.plan.check(SimCall::KnoteAdd) {
                    let Some(slot) = receipts.get_mut(n) else {
                        return Err(e);
                    };
                    *slot = Kev {
                        flags: KevFlags::ERROR,
                        data: i64::from(e.raw()),
                        ..*c
                    };
                    n += 1;
                    continue;
                }
            }
            let rest = receipts.get_mut(n..).unwrap_or_default();
            n += self
                .inner
                .kevent_change(kq, core::slice::from_ref(c), rest)?;
        }
        Ok(n)
    }
    fn buffer(&self, capacity: usize) -> Result<Self::Buffer, Errno> {
        self.inner.buffer(capacity).map(FaultyBuffer::new)
    }
    fn kevent_wait(
        &self,
        kq: &K::Fd,
        buf: &mut Self::Buffer,
        timeout: Option<Duration>,
    ) -> Result<(), Errno> {
        let inner = &self.inner;
        self.plan.wait(
            SimCall::KeventWait,
            buf,
            |b| inner.kevent_wait(kq, b, timeout),
            |e| e,
        )
    }
    fn buffer_events(buf: &Self::Buffer) -> impl Iterator<Item = Option<Kev>> + '_ {
        let events = (!buf.failed).then(|| K::buffer_events(&buf.inner));
        // A garbled event: one whose filter does not decode.
        events
            .into_iter()
            .flatten()
            .chain((buf.garbled && !buf.failed).then_some(None))
    }
    fn is_regular_file(&self, fd: RawFd) -> Result<bool, Errno> {
        self.plan.check(SimCall::Fstat)?;
        self.inner.is_regular_file(fd)
    }
    fn clock_now(&self, clock: Clock) -> u64 {
        self.inner.clock_now(clock)
    }
    fn pipe(&self) -> Result<(K::Fd, K::Fd), Errno> {
        self.inner.pipe()
    }
    fn pipe_poke(&self, fd: &K::Fd) {
        self.inner.pipe_poke(fd)
    }
    fn pipe_drain(&self, fd: &K::Fd) {
        self.inner.pipe_drain(fd)
    }
    fn signal_blocked(&self, signal: Signal) -> bool {
        self.inner.signal_blocked(signal)
    }

    fn not_blocked_error(&self, signal: Signal) -> crate::Error {
        self.inner.not_blocked_error(signal)
    }
    fn signal_take(&self, set: SignalSet) -> Result<Option<SigInfo>, Errno> {
        self.plan.check(SimCall::SignalfdRead)?;
        self.inner.signal_take(set)
    }
    fn signal_release(&self, set: SignalSet) {
        self.inner.signal_release(set)
    }
    fn probe_child(&self, pid: u32) -> Result<(), Errno> {
        self.plan.check(SimCall::Waitid)?;
        self.inner.probe_child(pid)
    }
    fn waitpid(&self, pid: u32) -> Result<Option<ChildStatus>, Errno> {
        self.plan.check(SimCall::Waitid)?;
        self.inner.waitpid(pid)
    }
    fn kill(&self, pid: u32, signal: Signal) -> Result<(), Errno> {
        self.plan.check(SimCall::SignalChild)?;
        self.inner.kill(pid, signal)
    }
    fn kill_group(&self, pgid: u32, signal: Signal) -> Result<(), Errno> {
        self.plan.check(SimCall::SignalChild)?;
        self.inner.kill_group(pgid, signal)
    }
    fn getpgid(&self, pid: u32) -> Result<u32, Errno> {
        self.inner.getpgid(pid)
    }
    fn spawn(
        &self,
        cmd: crate::backend::ChildCommand<'_>,
        how: crate::backend::SpawnHow,
    ) -> Result<SpawnedProcess, Errno> {
        self.plan.check(SimCall::Spawn)?;
        self.inner.spawn(cmd, how)
    }
}

fn kerr(call: &'static str) -> impl Fn(Errno) -> KernelError {
    move |errno| KernelError { call, errno }
}

impl<B: Backend> Backend for Faulty<B> {
    type Events = FaultyBuffer<B::Events>;

    fn new_events(&self, capacity: usize) -> Result<Self::Events, KernelError> {
        self.inner.new_events(capacity).map(FaultyBuffer::new)
    }
    fn notifier(&self) -> Arc<dyn Notify> {
        self.inner.notifier()
    }
    fn share_waits(&self) -> Result<(), KernelError> {
        self.inner.share_waits()
    }
    fn runners_changed(&self, holding: u32) {
        self.inner.runners_changed(holding)
    }
    fn add_fd(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        reg: Registration,
    ) -> Result<FdMode, KernelError> {
        self.plan.check(SimCall::SimAddFd).map_err(kerr("add_fd"))?;
        self.inner.add_fd(fd, token, reg)
    }
    fn modify_fd(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        from: Registration,
        to: Registration,
    ) -> Result<(), KernelError> {
        self.plan
            .check(SimCall::SimModifyFd)
            .map_err(kerr("modify_fd"))?;
        self.inner.modify_fd(fd, token, from, to)
    }
    fn remove_fd(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        current: Registration,
    ) -> Result<(), KernelError> {
        self.plan
            .check(SimCall::SimRemoveFd)
            .map_err(kerr("remove_fd"))?;
        self.inner.remove_fd(fd, token, current)
    }
    fn now(&self, clock: Clock) -> u64 {
        self.inner.now(clock)
    }
    fn set_deadline(&self, clock: Clock, deadline: Option<u64>) -> Result<(), KernelError> {
        self.plan
            .check(SimCall::SimSetDeadline)
            .map_err(kerr("set_deadline"))?;
        self.inner.set_deadline(clock, deadline)
    }
    fn wait(
        &self,
        events: &mut Self::Events,
        timeout: Option<Duration>,
    ) -> Result<(), KernelError> {
        let inner = &self.inner;
        self.plan.wait(
            SimCall::SimWait,
            events,
            |b| inner.wait(b, timeout),
            kerr("wait"),
        )
    }
    fn for_each_event(&self, events: &Self::Events, mut f: impl FnMut(BackendEvent)) {
        if events.failed {
            return;
        }
        self.inner.for_each_event(&events.inner, &mut f);
        if events.garbled {
            f(BackendEvent::Garbled);
        }
    }
    fn take_signal(&self) -> Result<Option<SigInfo>, KernelError> {
        self.plan
            .check(SimCall::SignalfdRead)
            .map_err(kerr("take_signal"))?;
        self.inner.take_signal()
    }
    fn take_signals(&self, max: usize, f: impl FnMut(SigInfo)) -> Result<usize, KernelError> {
        self.plan
            .check(SimCall::SignalfdRead)
            .map_err(kerr("take_signal"))?;
        self.inner.take_signals(max, f)
    }
    fn signal_blocked(&self, signal: Signal) -> bool {
        self.inner.signal_blocked(signal)
    }

    fn not_blocked_error(&self, signal: Signal) -> crate::Error {
        self.inner.not_blocked_error(signal)
    }
    fn arm_signals(&self, set: SignalSet) -> Result<(), KernelError> {
        self.plan
            .check(SimCall::Signalfd)
            .map_err(kerr("arm_signals"))?;
        self.inner.arm_signals(set)
    }
    fn watch_child(
        &self,
        pid: u32,
        token: Token,
        use_pidfd: bool,
    ) -> Result<ChildHandle, KernelError> {
        // A pidfd that cannot be had: the backend watches the child the fallback way.
        let use_pidfd = use_pidfd && self.plan.check(SimCall::PidfdOpen).is_ok();
        self.inner.watch_child(pid, token, use_pidfd)
    }
    fn reap_child(&self, child: &ChildHandle) -> Result<Option<ChildStatus>, KernelError> {
        self.plan.check(SimCall::Waitid).map_err(kerr("waitid"))?;
        self.inner.reap_child(child)
    }
    fn unwatch_child(&self, child: ChildHandle) {
        self.inner.unwatch_child(child)
    }
    fn signal_child(&self, child: &ChildHandle, signal: Signal) -> Result<(), KernelError> {
        self.plan
            .check(SimCall::SignalChild)
            .map_err(kerr("signal_child"))?;
        self.inner.signal_child(child, signal)
    }
    fn signal_child_group(&self, child: &ChildHandle, signal: Signal) -> Result<(), KernelError> {
        self.plan
            .check(SimCall::SignalChild)
            .map_err(kerr("signal_child_group"))?;
        self.inner.signal_child_group(child, signal)
    }
    fn leads_group(&self, child: &ChildHandle) -> Result<bool, KernelError> {
        self.inner.leads_group(child)
    }
    fn spawn(
        &self,
        cmd: crate::backend::ChildCommand<'_>,
        how: crate::backend::SpawnHow,
    ) -> Result<SpawnedProcess, KernelError> {
        self.plan.check(SimCall::Spawn).map_err(kerr("spawn"))?;
        self.inner.spawn(cmd, how)
    }
}
