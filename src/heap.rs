//! An indexed 4-ary min-heap: the structure under the timer heaps.
//!
//! Entries (`HeapEntry`) carry a small id (`u32`, below a bound fixed at construction) and their
//! key inline, so the four children a sift compares are next to each other (a timer's entry is
//! 16 bytes, two words: deadline, then arm sequence and id); the position of every id is
//! tracked, so changing or removing any entry is O(log n) and leaves nothing behind. A full
//! node's smallest child is found by one unrolled scan (three comparisons, the smallest entry
//! carried in registers, one bounds check for the four). Changing a key sifts in whichever
//! direction it must, over every child, the last one included (the original library's heap
//! skipped the last child when a key grew and so delayed other timers). Storage is allocated
//! once; the heap never grows.

const NONE: u32 = u32::MAX;
const ARITY: usize = 4;

/// An entry of an [`IndexedHeap`]: its id and its order. Entries carry their key inline (the
/// timer heap's are 16 bytes: deadline, sequence, id), so the children a sift compares sit
/// side by side in memory.
pub(crate) trait HeapEntry: Copy {
    /// The id (below the heap's bound).
    fn id(&self) -> u32;
    /// Whether `self` comes strictly before `other` (ties are the caller's to break, by a
    /// sequence number in the entry).
    fn before(&self, other: &Self) -> bool;
}

/// A fixed-capacity min-heap of entries with ids `0..ids`.
#[derive(Debug)]
pub(crate) struct IndexedHeap<E> {
    heap: Vec<E>,
    pos: Box<[u32]>,
}

impl<E: HeapEntry> IndexedHeap<E> {
    /// A heap for ids `0..ids` holding at most `capacity` of them. `None` if memory is short.
    pub(crate) fn new(ids: usize, capacity: usize) -> Option<Self> {
        let mut heap = Vec::new();
        heap.try_reserve_exact(capacity).ok()?;
        let mut pos = Vec::new();
        pos.try_reserve_exact(ids).ok()?;
        pos.resize(ids, NONE);
        Some(IndexedHeap {
            heap,
            pos: pos.into_boxed_slice(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, id: u32) -> bool {
        self.pos.get(id as usize).is_some_and(|p| *p != NONE)
    }

    /// The smallest entry.
    pub(crate) fn peek(&self) -> Option<E> {
        self.heap.first().copied()
    }

    /// Insert `e`, or move its id's entry to `e` if present. Returns false if the id is out
    /// of range or the heap is full.
    #[inline]
    pub(crate) fn set(&mut self, e: E) -> bool {
        let Some(&p) = self.pos.get(e.id() as usize) else {
            return false;
        };
        if p == NONE {
            if self.heap.len() == self.heap.capacity() {
                return false;
            }
            let i = self.heap.len();
            // Capacity was checked: no reallocation.
            self.heap.push(e);
            self.sift_up(i);
        } else {
            let i = p as usize;
            let Some(entry) = self.heap.get_mut(i) else {
                return false;
            };
            let old = core::mem::replace(entry, e);
            // One direction only: a smaller key can only rise, a larger one only sink (the
            // common re-arm of an idle timer moves its deadline later: a sift down).
            if e.before(&old) {
                self.sift_up(i);
            } else if old.before(&e) {
                self.sift_down(i);
            }
        }
        true
    }

    /// Take the smallest entry out (tests; the timer heaps take entries out by id).
    #[cfg(test)]
    pub(crate) fn pop(&mut self) -> Option<E> {
        let top = self.peek()?;
        self.remove_at(0);
        Some(top)
    }

    /// Take `id` out. Returns whether it was there.
    pub(crate) fn remove(&mut self, id: u32) -> bool {
        match self.pos.get(id as usize) {
            Some(&p) if p != NONE => {
                self.remove_at(p as usize);
                true
            }
            _ => false,
        }
    }

    fn remove_at(&mut self, i: usize) {
        let Some(last) = self.heap.len().checked_sub(1) else {
            return;
        };
        let Some(removed) = self.heap.get(i).map(E::id) else {
            return;
        };
        self.heap.swap(i, last);
        self.heap.pop();
        if let Some(p) = self.pos.get_mut(removed as usize) {
            *p = NONE;
        }
        if let Some(moved) = self.heap.get(i).map(E::id) {
            if let Some(p) = self.pos.get_mut(moved as usize) {
                *p = i as u32;
            }
            // The moved entry may belong above or below its new place. At the root (every
            // pop) it can only sink, and it came from the bottom, where it most likely
            // belongs: sift bottom-up there.
            if i == 0 {
                self.sift_down_from_root();
            } else {
                let i = self.sift_up(i);
                self.sift_down(i);
            }
        }
    }

    /// Order every entry by key and hand each its rank (`f(key, rank)`), keeping the order:
    /// a sorted array is a heap, so nothing moves after. (For a caller whose tie-breaking
    /// sequence numbers are about to wrap.) Allocates nothing.
    pub(crate) fn renumber(&mut self, mut f: impl FnMut(&mut E, u32)) {
        self.heap.sort_unstable_by(|a, b| {
            if a.before(b) {
                core::cmp::Ordering::Less
            } else if b.before(a) {
                core::cmp::Ordering::Greater
            } else {
                core::cmp::Ordering::Equal
            }
        });
        for (i, e) in self.heap.iter_mut().enumerate() {
            f(e, i as u32);
            if let Some(p) = self.pos.get_mut(e.id() as usize) {
                *p = i as u32;
            }
        }
    }

    // The sifts move a hole: the entry being placed is held aside, each entry passed over
    // moves one level (`place`: its position updated), and the entry lands once. The three
    // share `smallest_child` and `rise`. They work on the slices: every heap index comes
    // from the slice's length (a parent of an index in range, a child found by `get`), and
    // an id out of `pos`'s range (which `set` refuses) would only leave a position unset.

    fn sift_up(&mut self, i: usize) -> usize {
        let (heap, pos) = (&mut self.heap[..], &mut self.pos[..]);
        let Some(&e) = heap.get(i) else {
            return i;
        };
        let i = rise(heap, pos, e, i, 0);
        place(heap, pos, e, i);
        i
    }

    fn sift_down(&mut self, mut i: usize) {
        let (heap, pos) = (&mut self.heap[..], &mut self.pos[..]);
        let Some(&e) = heap.get(i) else {
            return;
        };
        while let Some((best, b)) = smallest_child(heap, i) {
            if !b.before(&e) {
                break;
            }
            place(heap, pos, b, i);
            i = best;
        }
        place(heap, pos, e, i);
    }

    /// Sift the root down bottom-up (Floyd's): the hole descends along the smaller children
    /// to a leaf without comparing them with the entry, which then rises from there to its
    /// place. After a pop the root holds the last leaf, which belongs near the bottom, so
    /// this saves the per-level comparison with it for a step or two back up.
    fn sift_down_from_root(&mut self) {
        let (heap, pos) = (&mut self.heap[..], &mut self.pos[..]);
        let Some(&e) = heap.first() else {
            return;
        };
        let mut i = 0;
        while let Some((best, b)) = smallest_child(heap, i) {
            place(heap, pos, b, i);
            i = best;
        }
        let i = rise(heap, pos, e, i, 0);
        place(heap, pos, e, i);
    }

    /// Check the heap property and the position index (tests).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        for (i, e) in self.heap.iter().enumerate() {
            assert_eq!(self.pos[e.id() as usize] as usize, i);
            if i > 0 {
                assert!(!e.before(&self.heap[(i - 1) / ARITY]));
            }
        }
        let indexed = self.pos.iter().filter(|p| **p != NONE).count();
        assert_eq!(indexed, self.heap.len());
    }
}

/// Put `e` at `i` and record its position.
#[inline(always)]
fn place<E: HeapEntry>(heap: &mut [E], pos: &mut [u32], e: E, i: usize) {
    heap[i] = e;
    if let Some(slot) = pos.get_mut(e.id() as usize) {
        *slot = i as u32;
    }
}

/// Move the hole at `i` up while `e` comes before the parent (no higher than `top`); each
/// parent passed over moves down into the hole. Returns where `e` belongs.
#[inline(always)]
fn rise<E: HeapEntry>(heap: &mut [E], pos: &mut [u32], e: E, mut i: usize, top: usize) -> usize {
    while i > top {
        let parent = (i - 1) / ARITY;
        let p = heap[parent];
        if !e.before(&p) {
            break;
        }
        place(heap, pos, p, i);
        i = parent;
    }
    i
}

/// The smallest child of node `i` and its entry, every child (the last one included) a
/// candidate; `None` for a leaf. A full node (the common case) takes three comparisons, no
/// loop and no bounds check past the one that finds the four children.
#[inline(always)]
fn smallest_child<E: HeapEntry>(heap: &[E], i: usize) -> Option<(usize, E)> {
    let first = i * ARITY + 1;
    let rest = heap.get(first..)?;
    if let Some(c) = rest.first_chunk::<ARITY>() {
        // A scan that carries the smallest entry so far (three comparisons).
        let (mut k, mut m) = (0, c[0]);
        for (j, x) in c.iter().enumerate().skip(1) {
            if x.before(&m) {
                (k, m) = (j, *x);
            }
        }
        return Some((first + k, m));
    }
    let (mut best, mut key) = (first, *rest.first()?);
    for (k, c) in rest.iter().enumerate().skip(1) {
        if c.before(&key) {
            (best, key) = (first + k, *c);
        }
    }
    Some((best, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test entry: (id, key).
    #[derive(Copy, Clone, Debug)]
    struct T(u32, u64);

    impl HeapEntry for T {
        fn id(&self) -> u32 {
            self.0
        }
        fn before(&self, other: &Self) -> bool {
            self.1 < other.1
        }
    }

    fn drain(h: &mut IndexedHeap<T>) -> Vec<(u32, u64)> {
        std::iter::from_fn(|| h.pop().map(|e| (e.0, e.1))).collect()
    }

    #[test]
    fn growing_the_root_key_checks_the_last_child() {
        // Root with exactly four children; the smallest child is the last one.
        let mut h = IndexedHeap::new(8, 8).unwrap();
        for (id, k) in [(0, 1), (1, 50), (2, 40), (3, 30), (4, 20)] {
            h.set(T(id, k));
        }
        h.set(T(0, 100));
        h.check();
        assert_eq!(h.peek().map(|e| (e.0, e.1)), Some((4, 20)));
    }

    #[test]
    fn removal_from_anywhere_keeps_order() {
        let mut h = IndexedHeap::new(64, 64).unwrap();
        for id in 0..64u32 {
            h.set(T(id, u64::from((id * 37) % 64)));
        }
        for id in (0..64u32).step_by(3) {
            assert!(h.remove(id));
            h.check();
        }
        assert!(!h.remove(0));
        let keys: Vec<u64> = drain(&mut h).into_iter().map(|e| e.1).collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(keys.len(), 64 - 22);
    }

    quickcheck::quickcheck! {
        /// Any sequence of sets (inserts and key changes both ways) and removals keeps the
        /// heap ordered and holding exactly what a map of id to key holds.
        fn sets_and_removals_match_a_map(ops: Vec<(u8, u16, bool)>) -> bool {
            let mut h = IndexedHeap::new(32, 32).unwrap();
            let mut model = std::collections::BTreeMap::new();
            for (id, key, remove) in ops {
                let id = u32::from(id % 32);
                if remove {
                    h.remove(id);
                    model.remove(&id);
                } else {
                    h.set(T(id, u64::from(key)));
                    model.insert(id, u64::from(key));
                }
                h.check();
            }
            let mut want: Vec<u64> = model.values().copied().collect();
            want.sort_unstable();
            let got: Vec<u64> = drain(&mut h).into_iter().map(|e| e.1).collect();
            got == want
        }

        /// Pops (the root refilled from the last leaf and sifted bottom-up) interleaved with
        /// sets always take a smallest key and keep the heap and its index exact.
        fn pops_between_sets_take_the_smallest(ops: Vec<(u8, u16, bool)>) -> bool {
            let mut h: IndexedHeap<T> = IndexedHeap::new(32, 32).unwrap();
            let mut model = std::collections::BTreeMap::new();
            for (id, key, pop) in ops {
                if pop {
                    let min = model.values().copied().min();
                    let got = h.pop();
                    assert_eq!(got.map(|e| e.1), min);
                    if let Some(e) = got {
                        model.remove(&e.0);
                    }
                } else {
                    let id = u32::from(id % 32);
                    h.set(T(id, u64::from(key)));
                    model.insert(id, u64::from(key));
                }
                h.check();
            }
            h.len() == model.len()
        }
    }

    #[test]
    fn full_heap_refuses_and_out_of_range_ids_are_ignored() {
        let mut h = IndexedHeap::new(4, 2).unwrap();
        assert!(h.set(T(0, 1)));
        assert!(h.set(T(1, 2)));
        assert!(!h.set(T(2, 3)));
        assert!(
            h.set(T(0, 5)),
            "moving an id already in the heap needs no room"
        );
        assert!(!h.set(T(9, 1)));
        assert!(!h.remove(9));
        assert!(!h.remove(3));
        assert!(h.contains(0) && !h.contains(2) && !h.contains(9));
        assert_eq!(h.len(), 2);
    }
}
