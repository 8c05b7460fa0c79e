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
        let kind = self.kind_of(index);
        match self.slots.at(index).map(|w| &w.detail) {
            Some(Detail::Child(cw)) => {
                if cw.watching.is_some() || cw.status.is_some() || cw.delivered.is_some() {
                    return Err(UsageError::Busy);
                }
            }
            Some(_) => {
                return Err(UsageError::WrongKind {
                    op: "watch_child",
                    kind,
                });
            }
            None => return Err(UsageError::Stale),
        }
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
                ChildHandle {
                    pid,
                    handle: 0,
                    token: token(index, self.slots.generation(index).unwrap_or(0)),
                    fallback: true,
                }
            }
        };
        if let Some(Watch {
            detail: Detail::Child(cw),
            ..
        }) = self.slots.at_mut(index)
        {
            cw.watching = Some(handle);
            cw.pid = pid;
        }
        // Room for every slot, each listed once: no reallocation.
        self.watched_children.push(index);
        if handle.fallback {
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
        let Some(h) = cw.watching else { return };
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
            let handle = match self.slots.at(index).map(|w| &w.detail) {
                Some(Detail::Child(ChildWatch {
                    watching: Some(h), ..
                })) => *h,
                _ => {
                    // Unreachable: entries leave the list with their watch.
                    self.fallback_children.swap_remove(i);
                    continue;
                }
            };
            match backend.reap_child(handle) {
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
        if h.fallback {
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
        let handle = match self.slots.at(index).map(|w| &w.detail) {
            Some(Detail::Child(cw)) => cw.watching,
            Some(_) => {
                return Err(UsageError::WrongKind {
                    op: "signal_child",
                    kind,
                }
                .into());
            }
            None => return Err(UsageError::Stale.into()),
        };
        let Some(h) = handle else {
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

    /// Close every pidfd the loop still holds (when the loop is dropped).
    pub(crate) fn release_children<B: Backend>(&mut self, backend: &B) {
        for i in 0..self.slots.capacity() as u32 {
            if let Some(Watch {
                detail: Detail::Child(cw),
                ..
            }) = self.slots.at_mut(i)
            {
                if let Some(h) = cw.watching.take() {
                    if !h.fallback {
                        backend.unwatch_child(h);
                    }
                }
            }
        }
    }
}
