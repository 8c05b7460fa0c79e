//! Cross-thread wakeups: the [`Waker`] handle and the lock-free list behind it.
//!
//! All wake storage is allocated when the loop is built: one cell per wake slot, each with a
//! state word (the registration's generation and a pending bit) and a link for an intrusive
//! lock-free list of cells that have been woken. Waking sets the pending bit; the thread that
//! flips it pushes the cell and, if the list was empty, pokes the backend's notifier (an
//! eventfd write on Linux). The loop takes the whole list at once after each wait. Waking
//! never allocates, never blocks and cannot fail; several wakes before the handler runs
//! coalesce into one call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// How a backend is poked out of its wait from another thread.
pub trait Notify: Send + Sync + 'static {
    /// Make the backend's current or next wait return. Must not block or allocate. A failure
    /// to notify (impossible for the real kernels' eventfd and pipe) only delays wakes until
    /// the loop next wakes for another reason.
    fn notify(&self);
}

const NIL: u32 = u32::MAX;

struct WakeCell {
    /// `generation << 1 | pending`.
    state: AtomicU64,
    next: AtomicU32,
    in_list: AtomicBool,
}

pub(crate) struct WakeShared {
    notifier: Arc<dyn Notify>,
    cells: Box<[WakeCell]>,
    head: AtomicU32,
}

impl WakeShared {
    pub(crate) fn new(notifier: Arc<dyn Notify>, capacity: usize) -> Option<Self> {
        let mut cells = Vec::new();
        cells.try_reserve_exact(capacity).ok()?;
        for _ in 0..capacity {
            cells.push(WakeCell {
                state: AtomicU64::new(0),
                next: AtomicU32::new(NIL),
                in_list: AtomicBool::new(false),
            });
        }
        Some(WakeShared {
            notifier,
            cells: cells.into_boxed_slice(),
            head: AtomicU32::new(NIL),
        })
    }

    pub(crate) fn notify(&self) {
        self.notifier.notify();
    }

    /// Start (or end) a registration generation on a cell: pending is cleared and handles of
    /// every other generation stop working.
    pub(crate) fn reset(&self, cell: u32, generation: u32) {
        if let Some(c) = self.cells.get(cell as usize) {
            c.state.store(u64::from(generation) << 1, Ordering::Release);
        }
    }

    fn wake(&self, cell: u32, generation: u32) {
        let Some(c) = self.cells.get(cell as usize) else {
            return;
        };
        let want = u64::from(generation) << 1;
        let mut s = c.state.load(Ordering::Acquire);
        loop {
            if s != want {
                // Stale handle (other generation) or already pending (coalesced).
                return;
            }
            match c
                .state
                .compare_exchange_weak(s, s | 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        if c.in_list.swap(true, Ordering::AcqRel) {
            // Still linked from an earlier wake the loop has not finished taking; it will see
            // the pending bit.
            return;
        }
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            c.next.store(head, Ordering::Relaxed);
            match self
                .head
                .compare_exchange_weak(head, cell, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
        if head == NIL {
            // The list was empty, so nobody has poked the loop for what is on it now.
            self.notifier.notify();
        }
    }

    /// Whether any cell may be waiting to be taken.
    pub(crate) fn has_pending(&self) -> bool {
        self.head.load(Ordering::Acquire) != NIL
    }

    /// Take every woken cell; `f` gets each cell whose pending bit was set, with the
    /// generation that set it. Called by the loop after reading the notifier.
    pub(crate) fn take(&self, mut f: impl FnMut(u32, u32)) {
        let mut cur = self.head.swap(NIL, Ordering::AcqRel);
        while cur != NIL {
            let Some(c) = self.cells.get(cur as usize) else {
                return;
            };
            let next = c.next.load(Ordering::Relaxed);
            // Unlink before clearing pending: a wake between the two sees pending still set
            // and coalesces into this delivery; a wake after both re-links the cell.
            c.in_list.store(false, Ordering::Release);
            let s = c.state.fetch_and(!1, Ordering::AcqRel);
            if s & 1 == 1 {
                f(cur, (s >> 1) as u32);
            }
            cur = next;
        }
    }
}

/// A handle that makes a wake watcher's handler run in the loop, from any thread.
///
/// Cloning is cheap (a reference count), waking never allocates, blocks or fails. Wakes
/// coalesce: however many happen before the handler runs, it runs once. A waker whose watcher
/// was removed, or whose loop was dropped, does nothing.
#[derive(Clone)]
pub struct Waker {
    shared: Arc<WakeShared>,
    cell: u32,
    generation: u32,
}

impl Waker {
    pub(crate) fn new(shared: Arc<WakeShared>, cell: u32, generation: u32) -> Self {
        Waker {
            shared,
            cell,
            generation,
        }
    }

    /// Make the handler run (once, however many wakes happen before it does).
    pub fn wake(&self) {
        self.shared.wake(self.cell, self.generation);
    }
}

impl core::fmt::Debug for Waker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Waker")
            .field("cell", &self.cell)
            .field("generation", &self.generation)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Notify for Count {
        fn notify(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn setup(n: usize) -> (Arc<Count>, Arc<WakeShared>) {
        let c = Arc::new(Count::default());
        let s = Arc::new(WakeShared::new(c.clone(), n).unwrap());
        (c, s)
    }

    #[test]
    fn wakes_coalesce_and_notify_once_per_batch() {
        let (count, shared) = setup(4);
        shared.reset(1, 7);
        shared.reset(2, 3);
        let a = Waker::new(shared.clone(), 1, 7);
        let b = Waker::new(shared.clone(), 2, 3);
        a.wake();
        a.wake();
        b.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        let mut got = vec![];
        shared.take(|c, g| got.push((c, g)));
        got.sort();
        assert_eq!(got, vec![(1, 7), (2, 3)]);
        shared.take(|_, _| panic!("list must be empty"));
        a.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn stale_generations_do_nothing() {
        let (count, shared) = setup(1);
        shared.reset(0, 1);
        let old = Waker::new(shared.clone(), 0, 1);
        shared.reset(0, 2);
        old.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        assert!(!shared.has_pending());
        let out_of_range = Waker::new(shared.clone(), 9, 0);
        out_of_range.wake();
    }

    #[test]
    fn reset_while_linked_does_not_deliver_to_the_next_generation() {
        let (_count, shared) = setup(1);
        shared.reset(0, 1);
        Waker::new(shared.clone(), 0, 1).wake();
        shared.reset(0, 2); // removed and re-registered before the loop took the list
        let mut got = vec![];
        shared.take(|c, g| got.push((c, g)));
        assert!(got.is_empty());
        Waker::new(shared.clone(), 0, 2).wake();
        shared.take(|c, g| got.push((c, g)));
        assert_eq!(got, vec![(0, 2)]);
    }

    #[test]
    fn concurrent_wakes_are_never_lost() {
        let (_count, shared) = setup(8);
        for i in 0..8 {
            shared.reset(i, 0);
        }
        let mut seen = [0usize; 8];
        for _round in 0..200 {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let s = shared.clone();
                    std::thread::spawn(move || {
                        for i in 0..8 {
                            if (i + t) % 2 == 0 {
                                Waker::new(s.clone(), i, 0).wake();
                            }
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            let mut round = [false; 8];
            shared.take(|c, _| round[c as usize] = true);
            for (i, r) in round.iter().enumerate() {
                assert!(*r, "cell {i} woken but not delivered");
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 200));
    }
}
