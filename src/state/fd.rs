//! Fd and bidirectional fd watchers: registration, interest changes, kernel readiness, and
//! keeping the kernel's registration in line with the halves.

use std::os::fd::{AsFd, OwnedFd};

use super::{State, enqueue, node, token};
use crate::backend::{Backend, FdMode, KernelError, Registration, Token};
use crate::error::{Errno, Error, Pool as PoolKind, UsageError};
use crate::interest::{Interest, Readiness};
use crate::waker::WakeShared;
use crate::watch::{Detail, FdWatch, Half, Watch};

impl State {
    /// Bring the kernel registration of an fd watcher in line with its halves.
    pub(super) fn sync_kernel<B: Backend>(&mut self, index: u32, backend: &B) {
        if matches!(
            self.slots.at(index).map(|w| &w.detail),
            Some(Detail::Signal(_))
        ) {
            return self.sync_signal(index, backend);
        }
        let oneshot = self.oneshot;
        let generation = self.slots.generation(index).unwrap_or(0);
        let Some(w) = self.slots.at_mut(index) else {
            return;
        };
        if !matches!(&w.detail, Detail::Fd(f) if !f.emulated) {
            return;
        }
        if self.threaded && w.running {
            // The dispatching thread owns the registration until its handler returns (it may
            // be re-arming it right now, without the lock); `finish_dispatch` brings it in
            // line then. No other thread changes it meanwhile (the original's defect B1).
            return;
        }
        let want = Registration {
            interest: w.desired_interest(oneshot),
            oneshot,
        };
        let Detail::Fd(f) = &mut w.detail else { return };
        let needed = f.unsure
            || if want.interest.is_empty() {
                // Disabled: the kernel may keep reporting only errors, once.
                !f.fired && !f.kernel.interest.is_empty()
            } else {
                f.fired || f.kernel != want
            };
        if !needed {
            return;
        }
        match backend.modify_fd(f.fd.as_fd(), token(index, generation), f.kernel, want) {
            Ok(()) => {
                f.kernel = want;
                f.fired = false;
                f.unsure = false;
            }
            Err(e) => {
                // The kernel may have taken part of the change (kqueue changes each filter on
                // its own): count every filter of either side as possibly armed, and send the
                // next change whatever it compares to.
                f.kernel = Registration {
                    interest: f.kernel.interest | want.interest,
                    oneshot: f.kernel.oneshot || want.oneshot,
                };
                f.fired = false;
                f.unsure = true;
                self.fault(e);
                self.mark_dirty(index);
            }
        }
    }

    /// Register an fd watcher. On failure the fd comes back with the error.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_fd<B: Backend>(
        &mut self,
        fd: OwnedFd,
        interest: Interest,
        bidi: bool,
        priorities: [i32; 2],
        enabled: [bool; 2],
        allow_emulation: bool,
        backend: &B,
        wake: &WakeShared,
    ) -> Result<u32, (Error, OwnedFd)> {
        let halves = if bidi {
            [
                Half::new(priorities[0], enabled[0]),
                Half::new(priorities[1], enabled[1]),
            ]
        } else {
            [Half::new(priorities[0], enabled[0]), Half::absent()]
        };
        let w = Watch::new(
            halves,
            Detail::Fd(FdWatch {
                fd,
                interest,
                bidi,
                emulated: false,
                kernel: Registration {
                    interest: Interest::NONE,
                    oneshot: self.oneshot,
                },
                fired: false,
                late: false,
                unsure: false,
            }),
        );
        let reg = Registration {
            interest: w.desired_interest(self.oneshot),
            oneshot: self.oneshot,
        };
        let (index, generation) = match self.slots.insert(w) {
            Ok(at) => at,
            Err(w) => {
                let Detail::Fd(f) = w.detail else {
                    // Unreachable: `w` was built as an fd watch just above.
                    std::process::abort();
                };
                return Err((Error::Capacity(PoolKind::Watchers), f.fd));
            }
        };
        let added = match self.slots.at(index).map(|w| &w.detail) {
            Some(Detail::Fd(f)) => backend.add_fd(f.fd.as_fd(), token(index, generation), reg),
            // Unreachable: inserted just above.
            _ => std::process::abort(),
        };
        let refused = match added {
            Ok(FdMode::Emulated) if !allow_emulation => Some(Error::NotPollable),
            Ok(mode) => {
                if let Some(Watch {
                    detail: Detail::Fd(f),
                    ..
                }) = self.slots.at_mut(index)
                {
                    f.emulated = mode == FdMode::Emulated;
                    f.kernel = reg;
                    // Partly in: resend the whole registration before the next wait.
                    f.unsure = matches!(mode, FdMode::Partial(_));
                }
                if let FdMode::Partial(e) = mode {
                    self.fault(e);
                    self.mark_dirty(index);
                }
                None
            }
            Err(KernelError {
                errno: Errno::EXIST,
                ..
            }) => Some(Error::AlreadyRegistered),
            Err(KernelError { call, errno }) => Some(Error::Kernel { call, errno }),
        };
        if let Some(e) = refused {
            // Nothing was registered: release the slot (its generation moves on, harmlessly)
            // and hand the fd back.
            return match self.slots.remove(index, generation) {
                Some(Watch {
                    detail: Detail::Fd(f),
                    ..
                }) => Err((e, f.fd)),
                // Unreachable: inserted just above.
                _ => std::process::abort(),
            };
        }
        for h in 0..2 {
            self.maybe_queue(index, h, wake);
        }
        Ok(index)
    }

    pub(crate) fn set_interest<B: Backend>(
        &mut self,
        index: u32,
        interest: Interest,
        backend: &B,
    ) -> Result<(), UsageError> {
        if interest.is_empty() {
            return Err(UsageError::InvalidArgument("interest must not be empty"));
        }
        let kind = self.kind_of(index);
        let Some(w) = self.slots.at_mut(index) else {
            return Err(UsageError::Stale);
        };
        match &mut w.detail {
            Detail::Fd(f) if !f.bidi => {
                f.interest = interest;
                w.halves[0].ready = w.halves[0].ready & Readiness::mask_for(interest);
            }
            _ => {
                return Err(UsageError::WrongKind {
                    op: "set_interest",
                    kind,
                });
            }
        }
        self.sync_kernel(index, backend);
        Ok(())
    }

    /// A kernel fd event: merge it into the watcher's halves, queue what is enabled.
    #[inline(always)]
    pub(crate) fn on_fd_event<B: Backend>(
        &mut self,
        tok: Token,
        ready: Readiness,
        backend: &B,
        wake: &WakeShared,
    ) {
        let index = (tok.0 & 0xffff_ffff) as u32;
        let generation = (tok.0 >> 32) as u32;
        let in_batch = self.deferring();
        let Some(w) = self.slots.get_mut(index, generation) else {
            // An event that outlived its watcher (removed, slot maybe reused): dropped.
            return;
        };
        let Detail::Fd(f) = &mut w.detail else {
            // A watched child's pidfd: the child has exited.
            if matches!(w.detail, Detail::Child(_)) {
                self.child_ready(index, backend, wake);
            }
            return;
        };
        // Fast path, the single-threaded steady state: a plain fd, level-triggered and armed,
        // enabled and idle. Queue it; the registration stays as it is.
        if !f.bidi && !f.kernel.oneshot && !f.kernel.interest.is_empty() && !f.fired {
            let bits = ready & Readiness::mask_for(f.interest);
            let half = &mut w.halves[0];
            if half.enabled && !half.queued && !half.running && !bits.is_empty() {
                half.ready |= bits;
                half.queued = true;
                half.enabled = false;
                if in_batch {
                    self.queue.defer(node(index, 0), half.priority);
                } else {
                    self.queue.push(node(index, 0), half.priority);
                }
                self.interrupt(wake);
                return;
            }
        }
        // The threaded steady state: a plain fd, one-shot, enabled and idle. The report
        // disarmed the registration (on kqueue, the reported filter; the other one of a
        // two-direction watcher stays armed, and its report merges into the queued half), and
        // nothing is to be armed while the half is queued (what `sync_kernel` would want);
        // queue it.
        if !f.bidi && f.kernel.oneshot && self.oneshot && !f.unsure {
            let bits = ready & Readiness::mask_for(f.interest);
            let half = &mut w.halves[0];
            if half.enabled && !half.queued && !half.running && !bits.is_empty() {
                f.fired = true;
                half.ready |= bits;
                enqueue(&mut self.queue, in_batch, half, node(index, 0));
                self.interrupt(wake);
                return;
            }
        }
        self.on_fd_event_slow(index, ready, in_batch, backend, wake);
    }

    /// The rest of `on_fd_event`: bidirectional, one-shot, disarmed or busy watchers (kept
    /// out of line, so the fast path stays small where it is inlined).
    #[inline(never)]
    fn on_fd_event_slow<B: Backend>(
        &mut self,
        index: u32,
        ready: Readiness,
        in_batch: bool,
        backend: &B,
        wake: &WakeShared,
    ) {
        let Some(w) = self.slots.at_mut(index) else {
            return;
        };
        let Detail::Fd(f) = &mut w.detail else {
            return;
        };
        if f.kernel.oneshot || f.kernel.interest.is_empty() {
            f.fired = true;
            if w.running {
                f.late = true;
            }
        }
        let (fired, bidi, interest, unsure) = (f.fired, f.bidi, f.interest, f.unsure);
        let mut queued = false;
        let halves = if bidi { 2 } else { 1 };
        for (h, half) in w.halves.iter_mut().enumerate().take(halves) {
            let half_interest = match (bidi, h) {
                (false, _) => interest,
                (true, 0) => Interest::READ,
                (true, _) => Interest::WRITE,
            };
            let bits = ready & Readiness::mask_for(half_interest);
            if half.removed || bits.is_empty() {
                continue;
            }
            if half.queued || half.running {
                half.ready |= bits;
            } else if half.enabled {
                half.ready |= bits;
                queued |= enqueue(&mut self.queue, in_batch, half, node(index, h));
            } else {
                half.ready |= bits & Readiness::STICKY;
            }
        }
        // One-shot, a plain fd whose half is now queued, running or disabled: the kernel's
        // registration is to stay disarmed, as it is (`sync_kernel` arms only a half waiting
        // for an event), so there is nothing to change: the threaded steady state.
        let stays_disarmed = self.oneshot && !bidi && !unsure && {
            let half = &w.halves[0];
            !half.enabled || half.queued || half.running
        };
        if queued {
            self.interrupt(wake);
        }
        // A level-triggered registration stays armed while a half is queued: nothing to
        // change unless the kernel disarmed it (one-shot) or the loop is one-shot.
        if (self.oneshot || fired) && !stays_disarmed {
            self.sync_kernel(index, backend);
        }
    }
}
