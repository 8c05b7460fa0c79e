//! An indexed 4-ary min-heap: the structure under the pending queue and the timer heaps.
//!
//! Entries are small ids (`u32`, below a bound fixed at construction) with a key; the position
//! of every id is tracked, so changing or removing any entry is O(log n) and leaves nothing
//! behind. Changing a key sifts in whichever direction it must, over every child, the last one
//! included (the original library's heap skipped the last child when a key grew and so
//! delayed other timers). Storage is allocated once; the heap never grows.

const NONE: u32 = u32::MAX;
const ARITY: usize = 4;

/// A fixed-capacity min-heap of ids `0..ids`, ordered by `K` (ties are the caller's to break,
/// by putting a sequence number in the key).
#[derive(Debug)]
pub(crate) struct IndexedHeap<K> {
    heap: Vec<(K, u32)>,
    pos: Box<[u32]>,
}

impl<K: Ord + Copy> IndexedHeap<K> {
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

    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, id: u32) -> bool {
        self.pos.get(id as usize).is_some_and(|p| *p != NONE)
    }

    /// The smallest entry.
    pub(crate) fn peek(&self) -> Option<(u32, K)> {
        self.heap.first().map(|&(k, id)| (id, k))
    }

    /// Insert `id` with `key`, or move it to `key` if present. Returns false if the id is out
    /// of range or the heap is full.
    pub(crate) fn set(&mut self, id: u32, key: K) -> bool {
        let Some(&p) = self.pos.get(id as usize) else {
            return false;
        };
        if p == NONE {
            if self.heap.len() == self.heap.capacity() {
                return false;
            }
            let i = self.heap.len();
            // Capacity was checked: no reallocation.
            self.heap.push((key, id));
            self.pos[id as usize] = i as u32;
            self.sift_up(i);
        } else {
            let i = p as usize;
            let old = self.heap[i].0;
            self.heap[i].0 = key;
            // One direction only: a smaller key can only rise, a larger one only sink (the
            // common re-arm of an idle timer moves its deadline later: a sift down).
            if key < old {
                self.sift_up(i);
            } else if key > old {
                self.sift_down(i);
            }
        }
        true
    }

    /// Take the smallest entry out.
    pub(crate) fn pop(&mut self) -> Option<(u32, K)> {
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
        let last = self.heap.len() - 1;
        let removed = self.heap[i].1;
        self.heap.swap(i, last);
        self.heap.pop();
        self.pos[removed as usize] = NONE;
        if i < self.heap.len() {
            self.pos[self.heap[i].1 as usize] = i as u32;
            // The moved entry may belong above or below its new place.
            let i = self.sift_up(i);
            self.sift_down(i);
        }
    }

    fn place(&mut self, i: usize, e: (K, u32)) {
        self.heap[i] = e;
        self.pos[e.1 as usize] = i as u32;
    }

    fn sift_up(&mut self, mut i: usize) -> usize {
        let e = self.heap[i];
        while i > 0 {
            let parent = (i - 1) / ARITY;
            if self.heap[parent].0 <= e.0 {
                break;
            }
            let p = self.heap[parent];
            self.place(i, p);
            i = parent;
        }
        self.place(i, e);
        i
    }

    fn sift_down(&mut self, mut i: usize) {
        let len = self.heap.len();
        let e = self.heap[i];
        loop {
            let first = i * ARITY + 1;
            if first >= len {
                break;
            }
            // Every child, the last one included, is a candidate.
            let end = (first + ARITY).min(len);
            let mut best = first;
            for c in first + 1..end {
                if self.heap[c].0 < self.heap[best].0 {
                    best = c;
                }
            }
            if self.heap[best].0 >= e.0 {
                break;
            }
            let b = self.heap[best];
            self.place(i, b);
            i = best;
        }
        self.place(i, e);
    }

    /// Check the heap property and the position index (tests).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        for (i, &(k, id)) in self.heap.iter().enumerate() {
            assert_eq!(self.pos[id as usize] as usize, i);
            if i > 0 {
                assert!(self.heap[(i - 1) / ARITY].0 <= k);
            }
        }
        let indexed = self.pos.iter().filter(|p| **p != NONE).count();
        assert_eq!(indexed, self.heap.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(h: &mut IndexedHeap<u64>) -> Vec<(u32, u64)> {
        std::iter::from_fn(|| h.pop()).collect()
    }

    #[test]
    fn growing_the_root_key_checks_the_last_child() {
        // Root with exactly four children; the smallest child is the last one.
        let mut h = IndexedHeap::new(8, 8).unwrap();
        for (id, k) in [(0, 1), (1, 50), (2, 40), (3, 30), (4, 20)] {
            h.set(id, k);
        }
        h.set(0, 100);
        h.check();
        assert_eq!(h.peek(), Some((4, 20)));
    }

    #[test]
    fn removal_from_anywhere_keeps_order() {
        let mut h = IndexedHeap::new(64, 64).unwrap();
        for id in 0..64u32 {
            h.set(id, u64::from((id * 37) % 64));
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
                    h.set(id, u64::from(key));
                    model.insert(id, u64::from(key));
                }
                h.check();
            }
            let mut want: Vec<u64> = model.values().copied().collect();
            want.sort_unstable();
            let got: Vec<u64> = drain(&mut h).into_iter().map(|e| e.1).collect();
            got == want
        }
    }

    #[test]
    fn full_heap_refuses_and_out_of_range_ids_are_ignored() {
        let mut h = IndexedHeap::new(4, 2).unwrap();
        assert!(h.set(0, 1));
        assert!(h.set(1, 2));
        assert!(!h.set(2, 3));
        assert!(
            h.set(0, 5),
            "moving an id already in the heap needs no room"
        );
        assert!(!h.set(9, 1));
        assert!(!h.remove(9));
        assert!(!h.remove(3));
        assert!(h.contains(0) && !h.contains(2) && !h.contains(9));
        assert_eq!(h.len(), 2);
    }
}
