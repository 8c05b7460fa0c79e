//! Lock flavours: the one type parameter that makes a loop single-threaded or threaded.
//!
//! [`Single`] keeps the loop's state in a plain cell: no atomics, no locks, and the loop is
//! `!Sync`, so the compiler rejects any attempt to share it. [`Threaded`] keeps the state
//! behind a mutex and makes the loop `Sync`. The loop core never holds the state while user
//! code runs (handlers, `on_removed`, handler drops), which is what makes the single-threaded
//! cell sound and keeps the threaded mutex free of user-visible lock-order rules.

use core::cell::{Cell, UnsafeCell};
#[cfg(feature = "model")]
use shuttle::sync::{Condvar as ModelCondvar, Mutex as ModelMutex};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Single {}
    impl Sealed for super::Threaded {}
    #[cfg(feature = "model")]
    impl Sealed for super::Modelled {}
}

/// Exclusive access to a value for the length of a closure.
#[doc(hidden)]
pub trait StateLock<T> {
    /// Wrap a value.
    fn new(value: T) -> Self;
    /// Run `f` with exclusive access. `f` must not run user code.
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R;
    /// Run `f` with exclusive access until it returns `Some`, sleeping on the lock's
    /// condition variable between tries, for at most `timeout` in all (`None`: no limit).
    /// `None` once the time is up. A cell for one thread cannot sleep (nothing else could
    /// change the value): it tries once. `f` must not run user code.
    fn with_wait<R>(
        &self,
        timeout: Option<Duration>,
        f: impl FnMut(&mut T) -> Option<R>,
    ) -> Option<R>;
    /// Wake every thread sleeping in [`with_wait`](Self::with_wait).
    fn notify_all(&self);
}

/// How a loop guards its state: [`Single`] or [`Threaded`].
pub trait Flavor: sealed::Sealed + 'static {
    /// The cell or lock holding the loop's state.
    #[doc(hidden)]
    type Lock<T>: StateLock<T>;
    /// Whether fd registrations must be one-shot so that no two threads see one readiness.
    #[doc(hidden)]
    const ONESHOT: bool;
    /// Whether other threads may touch the loop (and so a waiting thread must be interrupted
    /// when work is queued in user space).
    #[doc(hidden)]
    const THREADED: bool;
}

/// The single-threaded flavour: no atomics or locks on the hot path; the loop is `!Sync`.
///
/// Fd watchers stay registered level-triggered while enabled, so re-arming after a handler
/// costs no system call.
#[derive(Debug)]
pub enum Single {}

/// The threaded flavour: the loop is `Sync`. Any number of threads may run it at once
/// (`run`, `run_limit`, `run_timeout`, `poll`, `poll_limit`), each event dispatched on
/// whichever thread is free, one handler never on two threads at once; any thread may
/// register, remove, enable, disable and arm watchers and wake the loop meanwhile. Fd
/// watchers are registered one-shot. Size the runners with
/// [`Builder::runners`](crate::Builder::runners); the README's "Many threads" section gives
/// the exact guarantees (stop, limits, priorities, the bidirectional rule).
#[derive(Debug)]
pub enum Threaded {}

/// The threaded flavour over the model checker's (shuttle's) mutex and condition variable:
/// the same loop as [`Threaded`], for model-checking the protocol of several runners inside
/// `shuttle::check_*` (with [`backend::Model`](crate::backend::Model)). Only usable there.
#[cfg(feature = "model")]
#[derive(Debug)]
pub enum Modelled {}

#[cfg(feature = "model")]
impl Flavor for Modelled {
    type Lock<T> = ModelCell<T>;
    const ONESHOT: bool = true;
    const THREADED: bool = true;
}

impl Flavor for Single {
    type Lock<T> = SingleCell<T>;
    const ONESHOT: bool = false;
    const THREADED: bool = false;
}

impl Flavor for Threaded {
    type Lock<T> = MutexCell<T>;
    const ONESHOT: bool = true;
    const THREADED: bool = true;
}

/// A cell for one thread. Re-entrant access would alias `&mut`; the loop core never calls user
/// code while holding it, and the busy flag turns any breach of that rule into an abort rather
/// than undefined behaviour.
#[doc(hidden)]
pub struct SingleCell<T> {
    busy: Cell<bool>,
    value: UnsafeCell<T>,
}

impl<T> StateLock<T> for SingleCell<T> {
    fn new(value: T) -> Self {
        SingleCell {
            busy: Cell::new(false),
            value: UnsafeCell::new(value),
        }
    }

    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        if self.busy.replace(true) {
            // Unreachable: the core never re-enters its state (see the module docs).
            std::process::abort();
        }
        // SAFETY: `SingleCell` is `!Sync`, so only this thread can reach it, and the busy flag
        // (set just above, cleared below) proves no other `&mut` to the value is live. `f` is
        // loop-core code that does not call back into the loop.
        let r = f(unsafe { &mut *self.value.get() });
        self.busy.set(false);
        r
    }

    fn with_wait<R>(
        &self,
        _timeout: Option<Duration>,
        mut f: impl FnMut(&mut T) -> Option<R>,
    ) -> Option<R> {
        self.with(|t| f(t))
    }

    fn notify_all(&self) {}
}

/// The mutex cell of the threaded flavours, over a given `sync` module (std's, or shuttle's
/// for the model checker), so both are the same code.
macro_rules! mutex_cell {
    ($(#[$doc:meta])* $name:ident, $mutex:ident, $condvar:ident) => {
        $(#[$doc])*
        #[doc(hidden)]
        pub struct $name<T> {
            value: $mutex<T>,
            changed: $condvar,
        }

        impl<T> StateLock<T> for $name<T> {
            fn new(value: T) -> Self {
                $name {
                    value: $mutex::new(value),
                    changed: $condvar::new(),
                }
            }

            #[inline]
            fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
                let mut guard = self.value.lock().unwrap_or_else(|p| p.into_inner());
                f(&mut guard)
            }

            fn with_wait<R>(
                &self,
                timeout: Option<Duration>,
                mut f: impl FnMut(&mut T) -> Option<R>,
            ) -> Option<R> {
                let end = timeout.and_then(|t| Instant::now().checked_add(t));
                let mut guard = self.value.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if let Some(r) = f(&mut guard) {
                        return Some(r);
                    }
                    guard = match (timeout, end) {
                        (None, _) => self.changed.wait(guard).unwrap_or_else(|p| p.into_inner()),
                        (Some(_), Some(end)) => {
                            let left = end.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                return None;
                            }
                            self.changed
                                .wait_timeout(guard, left)
                                .unwrap_or_else(|p| p.into_inner())
                                .0
                        }
                        // A timeout too long to represent as an instant: no limit.
                        (Some(_), None) => self.changed.wait(guard).unwrap_or_else(|p| p.into_inner()),
                    };
                }
            }

            fn notify_all(&self) {
                self.changed.notify_all();
            }
        }
    };
}

mutex_cell!(
    /// A mutex that shrugs off poisoning (the core never panics while holding it, so a
    /// poisoned lock can only come from a bug, and the state is still the last consistent
    /// one), with a condition variable for the threads that wait for the state to change.
    MutexCell,
    Mutex,
    Condvar
);

#[cfg(feature = "model")]
mutex_cell!(
    /// [`MutexCell`] over shuttle's mutex and condition variable (the model checker's).
    ModelCell,
    ModelMutex,
    ModelCondvar
);
