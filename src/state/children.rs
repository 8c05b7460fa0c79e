//! Child watchers. A child watcher is a reservation: registered (which can fail, for
//! capacity) before any child exists, then pointed at a child with `watch_child`, which cannot
//! fail except for caller mistakes. When the child exits it is reaped at once, its status kept
//! until the handler is called, and the watcher becomes idle again, ready for another child.
//! Children are watched through pidfds, or (fallback) polled with `waitid(P_PID)` after every
//! wait, woken by `SIGCHLD`.

use super::{State, token};
use crate::backend::{Backend, ChildHandle, KernelError};
use crate::child::ChildStatus;
use crate::error::{Errno, Error, Pool as PoolKind, SignalChildError, UsageError};
use crate::signal::Signal;
use crate::waker::WakeShared;
use crate::watch::{ChildWatch, Detail, Half, Watch};

impl State {
    /// Register an idle child watcher.
    pub(crate) fn reserve_child(&mut self, priority: i32) -> Result<u32, Error> {
        let w = Watch::new(
            [Half::new(priority, true), Half::absent()],
            Detail::Child(ChildWatch {
                watching: None,
                spawning: false,
                pid: 0,
                status: None,
                delivered: None,
            }),
        );
        let (index, _) = self
            .slots
            .insert(w)
            .map_err(|_| Error::Capacity(PoolKind::Watchers))?;
        Ok(index)
    }

    /// Point an idle child watcher at `pid`.
    pub(crate) fn watch_child<B: Backend>(
        &mut self,
        index: u32,
        pid: u32,
        backend: &B,
    ) -> Result<(), UsageError> {
        let generation = self.slots.generation(index).unwrap_or(0);
        self.idle_child(index, "watch_child")?;
        if pid == 0 || pid > i32::MAX as u32 {
            return Err(UsageError::NotAChild);
        }
        // Two watchers of one child would race to reap it: the loser would report
        // `ChildStatus::Unknown`.
        let watched = self.watched_children.iter().any(|&i| {
            matches!(
                self.slots.at(i).map(|w| &w.detail),
                Some(Detail::Child(cw)) if cw.pid == pid && cw.watching.is_some()
            )
        });
        if watched {
            return Err(UsageError::AlreadyWatched);
        }
        let handle = match backend.watch_child(pid, token(index, generation), self.use_pidfd) {
            Ok(h) => h,
            Err(KernelError {
                errno: Errno::CHILD | Errno::SRCH,
                ..
            }) => {
                return Err(UsageError::NotAChild);
            }
            Err(e) => {
                // The kernel could not even say whether it is our child: watch it the slow way;
                // if it is not ours, polling reports it as reaped elsewhere.
                self.fault(e);
                ChildHandle::fallback(pid, token(index, generation))
            }
        };
        let fallback = handle.is_fallback();
        if let Some(Watch {
            detail: Detail::Child(cw),
            ..
        }) = self.slots.at_mut(index)
        {
            cw.watching = Some(handle);
            cw.pid = pid;
            // Watched from the handler reporting the previous child's exit: that exit is
            // consumed (a `Requeue` then delivers nothing again).
            cw.delivered = None;
        }
        // Room for every slot, each listed once: no reallocation.
        self.watched_children.push(index);
        if fallback {
            // Room for every slot, each listed once: no reallocation.
            self.fallback_children.push(index);
            self.flush_signals(backend);
        }
        Ok(())
    }

    /// A watched child's pidfd is readable: it has exited.
    pub(super) fn child_ready<B: Backend>(&mut self, index: u32, backend: &B, wake: &WakeShared) {
        let Some(Watch {
            detail: Detail::Child(cw),
            ..
        }) = self.slots.at(index)
        else {
            return;
        };
        let Some(h) = &cw.watching else { return };
        match backend.reap_child(h) {
            Ok(Some(status)) => self.child_exited(index, status, backend, wake),
            Ok(None) => {}
            Err(e) => self.fault(e),
        }
    }

    /// Reap whichever fallback children have exited.
    pub(crate) fn poll_fallback_children<B: Backend>(&mut self, backend: &B, wake: &WakeShared) {
        let mut i = 0;
        while i < self.fallback_children.len() {
            let index = self.fallback_children[i];
            let reaped = match self.slots.at(index).map(|w| &w.detail) {
                Some(Detail::Child(ChildWatch {
                    watching: Some(h), ..
                })) => backend.reap_child(h),
                _ => {
                    // Unreachable: entries leave the list with their watch.
                    self.fallback_children.swap_remove(i);
                    continue;
                }
            };
            match reaped {
                // `child_exited` takes entry `i` out of the list; the next one moves into `i`.
                Ok(Some(status)) => self.child_exited(index, status, backend, wake),
                Ok(None) => i += 1,
                Err(e) => {
                    self.fault(e);
                    i += 1;
                }
            }
        }
    }

    pub(crate) fn has_fallback_children(&self) -> bool {
        !self.fallback_children.is_empty()
    }

    fn child_exited<B: Backend>(
        &mut self,
        index: u32,
        status: ChildStatus,
        backend: &B,
        wake: &WakeShared,
    ) {
        let Some(Watch {
            detail: Detail::Child(cw),
            ..
        }) = self.slots.at_mut(index)
        else {
            return;
        };
        cw.status = Some(status);
        if let Some(h) = cw.watching.take() {
            self.stop_watching(index, h, backend);
        }
        self.maybe_queue(index, 0, wake);
    }

    /// Drop the kernel side of a child watch (the child itself is left alone).
    pub(super) fn stop_watching<B: Backend>(&mut self, index: u32, h: ChildHandle, backend: &B) {
        if let Some(p) = self.watched_children.iter().position(|&x| x == index) {
            self.watched_children.swap_remove(p);
        }
        if h.is_fallback() {
            if let Some(p) = self.fallback_children.iter().position(|&x| x == index) {
                self.fallback_children.swap_remove(p);
            }
            self.flush_signals(backend);
        } else {
            backend.unwatch_child(h);
        }
    }

    /// Send `signal` to the child a watcher watches. Under the state lock, so the child cannot
    /// be reaped (and its pid recycled) meanwhile.
    pub(crate) fn signal_child<B: Backend>(
        &mut self,
        index: u32,
        signal: Signal,
        backend: &B,
    ) -> Result<(), SignalChildError> {
        if let Some(why) = signal.unsendable() {
            return Err(UsageError::InvalidArgument(why).into());
        }
        let kind = self.kind_of(index);
        let h = match self.slots.at(index).map(|w| &w.detail) {
            Some(Detail::Child(cw)) => cw.watching.as_ref(),
            Some(_) => {
                return Err(UsageError::WrongKind {
                    op: "signal_child",
                    kind,
                }
                .into());
            }
            None => return Err(UsageError::Stale.into()),
        };
        let Some(h) = h else {
            return Err(SignalChildError::Gone);
        };
        match backend.signal_child(h, signal) {
            Ok(()) => Ok(()),
            Err(KernelError {
                errno: Errno::SRCH, ..
            }) => Err(SignalChildError::Gone),
            Err(e) => Err(SignalChildError::Kernel(e.errno)),
        }
    }

    /// Send `signal` to the process group the watched child leads. Under the state lock,
    /// where the child is also reaped: while it is unreaped its pid (the group's id) belongs
    /// to it, so no other group can have that id.
    pub(crate) fn signal_child_group<B: Backend>(
        &mut self,
        index: u32,
        signal: Signal,
        backend: &B,
    ) -> Result<(), SignalChildError> {
        if let Some(why) = signal.unsendable() {
            return Err(UsageError::InvalidArgument(why).into());
        }
        let kind = self.kind_of(index);
        let h = match self.slots.at(index).map(|w| &w.detail) {
            Some(Detail::Child(cw)) => cw.watching.as_ref(),
            Some(_) => {
                return Err(UsageError::WrongKind {
                    op: "signal_child_group",
                    kind,
                }
                .into());
            }
            None => return Err(UsageError::Stale.into()),
        };
        let Some(h) = h else {
            return Err(SignalChildError::Gone);
        };
        match backend.leads_group(h) {
            Ok(true) => {}
            Ok(false) => return Err(SignalChildError::NotGroupLeader),
            Err(KernelError {
                errno: Errno::SRCH, ..
            }) => return Err(SignalChildError::Gone),
            Err(e) => return Err(SignalChildError::Kernel(e.errno)),
        }
        match backend.signal_child_group(h, signal) {
            Ok(()) => Ok(()),
            Err(KernelError {
                errno: Errno::SRCH, ..
            }) => Err(SignalChildError::Gone),
            Err(e) => Err(SignalChildError::Kernel(e.errno)),
        }
    }

    /// Whether the child watcher at `index` can watch a new child: no child watched, no exit
    /// waiting to be reported, no spawn into it under way (the exit its running handler is
    /// reporting does not count: a handler may start the next child).
    fn idle_child(&self, index: u32, op: &'static str) -> Result<(), UsageError> {
        match self.slots.at(index).map(|w| &w.detail) {
            Some(Detail::Child(cw)) => {
                if cw.watching.is_some() || cw.status.is_some() || cw.spawning {
                    return Err(UsageError::Busy);
                }
                Ok(())
            }
            Some(_) => Err(UsageError::WrongKind {
                op,
                kind: self.kind_of(index),
            }),
            None => Err(UsageError::Stale),
        }
    }

    /// A spawn into the idle reservation at `index` begins: it is busy until `end_spawn`.
    pub(crate) fn begin_spawn(&mut self, index: u32) -> Result<(), UsageError> {
        self.idle_child(index, "spawn_into")?;
        if let Some(Watch {
            detail: Detail::Child(cw),
            ..
        }) = self.slots.at_mut(index)
        {
            cw.spawning = true;
        }
        Ok(())
    }

    /// The spawn `begin_spawn` announced is over: watch the child it started (`Some(pid)`),
    /// or leave the reservation idle.
    pub(crate) fn end_spawn<B: Backend>(
        &mut self,
        index: u32,
        pid: Option<u32>,
        backend: &B,
        wake: &WakeShared,
    ) {
        if let Some(Watch {
            detail: Detail::Child(cw),
            ..
        }) = self.slots.at_mut(index)
        {
            cw.spawning = false;
        }
        if let Some(pid) = pid {
            if self.watch_child(index, pid, backend).is_err() {
                // Reaped already by someone else (a program-wide SIGCHLD handler): report it.
                self.child_lost(index, pid, wake);
            }
        }
    }

    /// Whether a spawn into the child watcher at `index` is under way (it cannot be removed
    /// meanwhile: the child would have no watcher).
    pub(crate) fn spawning(&self, index: u32) -> bool {
        matches!(
            self.slots.at(index).map(|w| &w.detail),
            Some(Detail::Child(ChildWatch { spawning: true, .. }))
        )
    }

    /// A spawned child that could not be watched because someone else already reaped it:
    /// report it as such.
    pub(crate) fn child_lost(&mut self, index: u32, pid: u32, wake: &WakeShared) {
        if let Some(Watch {
            detail: Detail::Child(cw),
            ..
        }) = self.slots.at_mut(index)
        {
            cw.pid = pid;
            cw.status = Some(ChildStatus::Unknown);
        }
        self.maybe_queue(index, 0, wake);
    }

    /// Let go of every child the loop still watches (when the loop is dropped): close the
    /// pidfds; with `kill_children_on_drop`, first `SIGKILL` every child (through its handle,
    /// so never a recycled pid), then reap each, all within one `KILL_REAP_LIMIT` counted from
    /// the last kill (they die together: a drop with many children waits for the slowest, not
    /// for their sum).
    pub(crate) fn release_children<B: Backend>(&mut self, backend: &B) {
        let kill = self.kill_children_on_drop;
        if kill {
            for i in 0..self.slots.capacity() as u32 {
                if let Some(Watch {
                    detail:
                        Detail::Child(ChildWatch {
                            watching: Some(h), ..
                        }),
                    ..
                }) = self.slots.at(i)
                {
                    // A refusal (ESRCH: exited already; EPERM: it changed credentials) leaves
                    // it to be reaped below all the same.
                    let _ = backend.signal_child(h, Signal::KILL);
                }
            }
        }
        let now = std::time::Instant::now();
        let until = now.checked_add(KILL_REAP_LIMIT).unwrap_or(now);
        for i in 0..self.slots.capacity() as u32 {
            if let Some(Watch {
                detail: Detail::Child(cw),
                ..
            }) = self.slots.at_mut(i)
            {
                if let Some(h) = cw.watching.take() {
                    if kill {
                        reap_until(&h, backend, until);
                    }
                    backend.unwatch_child(h);
                }
            }
        }
    }
}

/// How long a dropped loop waits for a child it killed to be reapable before leaving it to
/// the program (a process in uninterruptible sleep dies only when it wakes).
pub(crate) const KILL_REAP_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reap a child that was sent `SIGKILL`, polling with a growing pause until `until`; one
/// still there then (or that the kernel refuses to wait for) is left to the program.
fn reap_until<B: Backend>(h: &ChildHandle, backend: &B, until: std::time::Instant) {
    let mut pause = std::time::Duration::from_micros(50);
    loop {
        match backend.reap_child(h) {
            Ok(Some(_)) => return,
            Ok(None) if std::time::Instant::now() < until => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(10));
            }
            _ => return,
        }
    }
}
