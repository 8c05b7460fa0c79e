//! `Model`: the smallest backend that lets the model checker (shuttle) drive the real loop
//! core with several runners. Its state sits behind shuttle's mutex and condition variable,
//! so every wait, every readiness change and every poke of the notifier is a point where the
//! checker may switch threads, and a wait that nothing will ever end is a deadlock the
//! checker reports (a lost wake-up).
//!
//! What it models, and only that: fd readiness set and cleared by the test
//! ([`Model::set_ready`]), registrations one-shot or level-triggered as asked (one-shot: one
//! report, then disarmed until the next `modify_fd`, as epoll's `EPOLLONESHOT`); fds the test
//! marks [`emulated`](Model::emulate) (the loop's user-space path); a notifier that is
//! level-triggered until a wait reports it, to one waiter. There is no time (a wait with a
//! timeout returns at once when nothing is ready: the model checks blocking waits), no
//! signals and no children. Only usable inside `shuttle::check_*`.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use shuttle::sync::{Condvar, Mutex, MutexGuard};

use super::{Backend, BackendEvent, ChildHandle, FdMode, KernelError, Registration, Token};
use crate::child::{ChildStatus, SpawnedProcess};
use crate::error::Errno;
use crate::interest::Readiness;
use crate::signal::{SigInfo, Signal, SignalSet};
use crate::timer::Clock;
use crate::waker::Notify;

#[derive(Debug)]
struct Reg {
    fd: RawFd,
    token: Token,
    reg: Registration,
    /// Disarmed after a one-shot report, until the next change.
    fired: bool,
}

#[derive(Debug, Default)]
struct World {
    regs: Vec<Reg>,
    /// `(fd, readiness)` set by the test.
    ready: Vec<(RawFd, Readiness)>,
    emulated: Vec<RawFd>,
    notified: bool,
}

#[derive(Debug, Default)]
struct Shared {
    world: Mutex<World>,
    changed: Condvar,
}

/// The model checker's backend (see the module docs). Cloning gives another handle.
#[derive(Clone, Debug, Default)]
pub struct Model(Arc<Shared>);

struct ModelNotifier(Model);

impl Notify for ModelNotifier {
    fn notify(&self) {
        self.0.change(|w| w.notified = true);
    }
}

impl Model {
    /// A model with no fds.
    pub fn new() -> Self {
        Model::default()
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        self.0.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn change<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        let r = f(&mut self.lock());
        self.0.changed.notify_all();
        r
    }

    /// Make fd number `fd` report `ready` from now on (an empty set: nothing), waking
    /// waiters. (By number: the loop owns a registered fd; take the number before handing
    /// the `OwnedFd` over.)
    pub fn set_ready(&self, fd: RawFd, ready: Readiness) {
        self.change(|w| {
            w.ready.retain(|&(f, _)| f != fd);
            if !ready.is_empty() {
                w.ready.push((fd, ready));
            }
        });
    }

    /// Make the next `add_fd` of `fd` report it as one the kernel cannot poll (the loop then
    /// treats it as always ready, in user space).
    pub fn emulate(&self, fd: RawFd) {
        self.change(|w| w.emulated.push(fd));
    }

    /// Registrations held.
    pub fn registered(&self) -> usize {
        self.lock().regs.len()
    }
}

fn unsupported(call: &'static str) -> KernelError {
    KernelError {
        call,
        errno: Errno::NOSYS,
    }
}

impl Backend for Model {
    type Events = Vec<BackendEvent>;

    fn new_events(&self, capacity: usize) -> Result<Vec<BackendEvent>, KernelError> {
        Ok(Vec::with_capacity(capacity.max(1)))
    }

    fn notifier(&self) -> Arc<dyn Notify> {
        Arc::new(ModelNotifier(self.clone()))
    }

    fn add_fd(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        reg: Registration,
    ) -> Result<FdMode, KernelError> {
        let fd = fd.as_raw_fd();
        self.change(|w| {
            if let Some(at) = w.emulated.iter().position(|&f| f == fd) {
                w.emulated.swap_remove(at);
                return Ok(FdMode::Emulated);
            }
            if w.regs.iter().any(|r| r.fd == fd) {
                return Err(KernelError {
                    call: "model_add_fd",
                    errno: Errno::EXIST,
                });
            }
            w.regs.push(Reg {
                fd,
                token,
                reg,
                fired: false,
            });
            Ok(FdMode::Native)
        })
    }

    fn modify_fd(
        &self,
        fd: BorrowedFd<'_>,
        _token: Token,
        _from: Registration,
        to: Registration,
    ) -> Result<(), KernelError> {
        let fd = fd.as_raw_fd();
        self.change(|w| match w.regs.iter_mut().find(|r| r.fd == fd) {
            Some(r) => {
                r.reg = to;
                r.fired = false;
                Ok(())
            }
            None => Err(KernelError {
                call: "model_modify_fd",
                errno: Errno::NOENT,
            }),
        })
    }

    fn remove_fd(
        &self,
        fd: BorrowedFd<'_>,
        _token: Token,
        _current: Registration,
    ) -> Result<(), KernelError> {
        let fd = fd.as_raw_fd();
        self.change(|w| w.regs.retain(|r| r.fd != fd));
        Ok(())
    }

    fn now(&self, _clock: Clock) -> u64 {
        0
    }

    fn set_deadline(&self, _clock: Clock, deadline: Option<u64>) -> Result<(), KernelError> {
        match deadline {
            None => Ok(()),
            Some(_) => Err(unsupported("model_set_deadline (the model has no time)")),
        }
    }

    fn wait(
        &self,
        events: &mut Vec<BackendEvent>,
        timeout: Option<Duration>,
    ) -> Result<(), KernelError> {
        events.clear();
        let mut w = self.lock();
        loop {
            let room = events.capacity();
            if w.notified && events.len() < room {
                // Reported to this waiter only.
                w.notified = false;
                events.push(BackendEvent::Wake);
            }
            let World { regs, ready, .. } = &mut *w;
            for r in regs.iter_mut() {
                if r.fired || events.len() >= room {
                    continue;
                }
                let Some(&(_, bits)) = ready.iter().find(|&&(f, _)| f == r.fd) else {
                    continue;
                };
                let bits = bits & Readiness::mask_for(r.reg.interest);
                if bits.is_empty() {
                    continue;
                }
                events.push(BackendEvent::Fd {
                    token: r.token,
                    ready: bits,
                });
                if r.reg.oneshot || r.reg.interest.is_empty() {
                    r.fired = true;
                }
            }
            if !events.is_empty() || timeout.is_some() {
                return Ok(());
            }
            w = self.0.changed.wait(w).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn for_each_event(&self, events: &Vec<BackendEvent>, mut f: impl FnMut(BackendEvent)) {
        for e in events {
            f(*e);
        }
    }

    fn take_signal(&self) -> Result<Option<SigInfo>, KernelError> {
        Ok(None)
    }

    fn signal_blocked(&self, _signal: Signal) -> bool {
        false
    }

    fn arm_signals(&self, set: SignalSet) -> Result<(), KernelError> {
        if set.is_empty() {
            Ok(())
        } else {
            Err(unsupported("model_arm_signals (the model has no signals)"))
        }
    }

    fn watch_child(
        &self,
        _pid: u32,
        _token: Token,
        _use_pidfd: bool,
    ) -> Result<ChildHandle, KernelError> {
        Err(unsupported("model_watch_child (the model has no children)"))
    }

    fn reap_child(&self, _child: &ChildHandle) -> Result<Option<ChildStatus>, KernelError> {
        Err(unsupported("model_reap_child"))
    }

    fn unwatch_child(&self, _child: ChildHandle) {}

    fn signal_child(&self, _child: &ChildHandle, _signal: Signal) -> Result<(), KernelError> {
        Err(unsupported("model_signal_child"))
    }

    fn signal_child_group(&self, _child: &ChildHandle, _signal: Signal) -> Result<(), KernelError> {
        Err(unsupported("model_signal_child_group"))
    }

    fn leads_group(&self, _child: &ChildHandle) -> Result<bool, KernelError> {
        Err(unsupported("model_leads_group"))
    }

    fn spawn(
        &self,
        _cmd: super::ChildCommand<'_>,
        _how: super::SpawnHow,
    ) -> Result<SpawnedProcess, KernelError> {
        Err(unsupported("model_spawn"))
    }
}
