//! Two indexed 4-ary min-heaps sharing one buffer: the structure under the timers (one heap
//! per clock).
//!
//! Entries (`HeapEntry`) carry a small id (`u32`, below a bound fixed at construction) and their
//! key inline, so the four children a sift compares are next to each other (a timer's entry is
//! 16 bytes, two words: deadline, then arm sequence and id); the position of every id is
//! tracked, so changing or removing any entry is O(log n) and leaves nothing behind. A full
//! node's smallest child is found by one unrolled scan (three comparisons, the smallest entry
//! carried in registers, one bounds check for the four). Changing a key sifts in whichever
//! direction it must, over every child, the last one included (the original library's heap
//! skipped the last child when a key grew and so delayed other timers).
//!
//! The two heaps ([`Side`]) share one buffer of `capacity` entries and one position array:
//! an id is in at most one of them (a timer's clock is fixed), so `capacity` bounds their
//! entries together, and a loop reserves one entry per timer instead of one per timer and
//! clock. Heap `A` grows from the buffer's front (logical index `j` at `j`), heap `B` from its
//! back (`j` at `capacity - 1 - j`), so neither moves when the other grows. Storage is
//! allocated once; nothing grows.

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

/// Which of the two heaps.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub(crate) enum Side {
    /// The heap at the buffer's front.
    A,
    /// The heap at the buffer's back.
    B,
}

/// Two fixed-capacity min-heaps of entries with ids `0..ids`, sharing storage.
#[derive(Debug)]
pub(crate) struct IndexedHeap<E> {
    /// Heap `A`'s entries from the front, heap `B`'s from the back; between them, fillers.
    buf: Box<[E]>,
    len: [usize; 2],
    /// Each id's logical index in its heap, or `NONE`.
    pos: Box<[u32]>,
}

impl<E: HeapEntry> IndexedHeap<E> {
    /// Heaps for ids `0..ids` holding at most `capacity` of them at once, together; `filler`
    /// fills the buffer's free part (never read as an entry). `None` if memory is short.
    pub(crate) fn new(ids: usize, capacity: usize, filler: E) -> Option<Self> {
        let mut buf = Vec::new();
        buf.try_reserve_exact(capacity).ok()?;
        buf.resize(capacity, filler);
        let mut pos = Vec::new();
        pos.try_reserve_exact(ids).ok()?;
        pos.resize(ids, NONE);
        Some(IndexedHeap {
            buf: buf.into_boxed_slice(),
            len: [0, 0],
            pos: pos.into_boxed_slice(),
        })
    }

    /// Whether both heaps are empty.
    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len[0] | self.len[1] == 0
    }

    pub(crate) fn len(&self, side: Side) -> usize {
        self.len[side as usize]
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, id: u32) -> bool {
        self.pos.get(id as usize).is_some_and(|p| *p != NONE)
    }

    /// The smallest entry of a heap.
    #[inline(always)]
    pub(crate) fn peek(&self, side: Side) -> Option<E> {
        match side {
            Side::A if self.len[0] > 0 => self.buf.first().copied(),
            Side::B if self.len[1] > 0 => self.buf.last().copied(),
            _ => None,
        }
    }

    /// The two heaps' regions: `A`'s entries, the free middle, `B`'s entries.
    #[inline(always)]
    fn regions(&mut self) -> (&mut [E], &mut [E], &mut [u32]) {
        let [a, b] = self.len;
        let (front, back) = self.buf.split_at_mut(a.min(self.buf.len()));
        let start = back.len().saturating_sub(b);
        (front, &mut back[start..], &mut self.pos[..])
    }

    /// Insert `e` into `side`, or move its id's entry there to `e` if present. Returns false
    /// if the id is out of range, the buffer is full, or the id is held by the other side.
    ///
    /// The caller keeps an id on one side (a timer's clock is fixed). The position index does
    /// not say which side holds an id, so a set on the wrong side finds another id's entry
    /// (or none) at that position in this side's heap, and is refused: it never overwrites
    /// the other heap's entry.
    #[inline]
    pub(crate) fn set(&mut self, side: Side, e: E) -> bool {
        let Some(&p) = self.pos.get(e.id() as usize) else {
            return false;
        };
        if p == NONE {
            if self.len[0] + self.len[1] >= self.buf.len() {
                return false;
            }
            self.len[side as usize] += 1;
            let (a, b, pos) = self.regions();
            match side {
                Side::A => push(&mut Fwd(a), pos, e),
                Side::B => push(&mut Rev(b), pos, e),
            }
        } else {
            let (a, b, pos) = self.regions();
            match side {
                Side::A => change(&mut Fwd(a), pos, p as usize, e),
                Side::B => change(&mut Rev(b), pos, p as usize, e),
            }
        }
    }

    /// Take the smallest entry of a heap out (tests; the timer heaps take entries out by id).
    #[cfg(test)]
    pub(crate) fn pop(&mut self, side: Side) -> Option<E> {
        let top = self.peek(side)?;
        self.remove(side, top.id());
        Some(top)
    }

    /// Take `id` out of `side`'s heap. Returns whether it was there.
    pub(crate) fn remove(&mut self, side: Side, id: u32) -> bool {
        let i = match self.pos.get(id as usize) {
            Some(&p) if p != NONE && (p as usize) < self.len[side as usize] => p as usize,
            _ => return false,
        };
        let (a, b, pos) = self.regions();
        let found = match side {
            Side::A => take_out(Fwd(a), pos, i, id),
            Side::B => take_out(Rev(b), pos, i, id),
        };
        if found {
            self.len[side as usize] -= 1;
        }
        found
    }

    /// Order every entry of a heap by key and hand each its rank (`f(key, rank)`), keeping
    /// the order: a sorted array is a heap, so nothing moves after. (For a caller whose
    /// tie-breaking sequence numbers are about to wrap.) Allocates nothing.
    pub(crate) fn renumber(&mut self, side: Side, mut f: impl FnMut(&mut E, u32)) {
        let order = |a: &E, b: &E| {
            if a.before(b) {
                core::cmp::Ordering::Less
            } else if b.before(a) {
                core::cmp::Ordering::Greater
            } else {
                core::cmp::Ordering::Equal
            }
        };
        let (a, b, pos) = self.regions();
        let heap = match side {
            Side::A => {
                a.sort_unstable_by(order);
                a
            }
            Side::B => {
                // Logical order runs from the back: sort the region descending.
                b.sort_unstable_by(|x, y| order(y, x));
                b
            }
        };
        let n = heap.len();
        for (k, e) in heap.iter_mut().enumerate() {
            // Logical index: `k` at the front, `n - 1 - k` at the back.
            let j = if side == Side::A { k } else { n - 1 - k };
            f(e, j as u32);
            if let Some(p) = pos.get_mut(e.id() as usize) {
                *p = j as u32;
            }
        }
    }

    /// Check both heaps' order and the position index (tests).
    #[cfg(test)]
    pub(crate) fn check(&mut self) {
        let mut indexed = 0;
        let (a, b, pos) = self.regions();
        fn one<E: HeapEntry, V: View<E>>(v: &V, pos: &[u32]) -> usize {
            for j in 0..v.len() {
                let e = v.get(j).unwrap();
                assert_eq!(pos[e.id() as usize] as usize, j);
                if j > 0 {
                    assert!(!e.before(&v.get((j - 1) / ARITY).unwrap()));
                }
            }
            v.len()
        }
        indexed += one(&Fwd(a), pos);
        indexed += one(&Rev(b), pos);
        assert_eq!(pos.iter().filter(|p| **p != NONE).count(), indexed);
    }
}

/// One heap's entries, by logical index (the root at 0, children of `j` at `4j+1..=4j+4`).
/// Every index a sift uses comes from the view's length (a parent of an index in range, a
/// child found by `smallest_child`); an index out of range reads `None` and writes nothing.
trait View<E: HeapEntry> {
    fn len(&self) -> usize;
    fn get(&self, j: usize) -> Option<E>;
    fn put(&mut self, j: usize, e: E);
    /// The smallest child of `i` and its entry, every child (the last one included) a
    /// candidate; `None` for a leaf.
    fn smallest_child(&self, i: usize) -> Option<(usize, E)>;
    /// The same heap without its last place (`None` if empty).
    fn without_last(self) -> Option<Self>
    where
        Self: Sized;
}

/// Heap `A`: logical index `j` at `j`.
struct Fwd<'a, E>(&'a mut [E]);

/// Heap `B`: logical index `j` at `len - 1 - j` of its region (the buffer's back).
struct Rev<'a, E>(&'a mut [E]);

impl<E: HeapEntry> View<E> for Fwd<'_, E> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len()
    }
    #[inline(always)]
    fn without_last(self) -> Option<Self> {
        self.0.split_last_mut().map(|(_, rest)| Fwd(rest))
    }
    #[inline(always)]
    fn get(&self, j: usize) -> Option<E> {
        self.0.get(j).copied()
    }
    #[inline(always)]
    fn put(&mut self, j: usize, e: E) {
        if let Some(x) = self.0.get_mut(j) {
            *x = e;
        }
    }
    #[inline(always)]
    fn smallest_child(&self, i: usize) -> Option<(usize, E)> {
        let first = i * ARITY + 1;
        let rest = self.0.get(first..)?;
        if let Some(c) = rest.first_chunk::<ARITY>() {
            // One bounds check for the four, then a scan carrying the smallest so far.
            let (k, m) = min_of(c);
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
}

impl<E: HeapEntry> View<E> for Rev<'_, E> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len()
    }
    #[inline(always)]
    fn without_last(self) -> Option<Self> {
        // The last logical place is the region's first.
        self.0.split_first_mut().map(|(_, rest)| Rev(rest))
    }
    #[inline(always)]
    fn get(&self, j: usize) -> Option<E> {
        let at = self.0.len().checked_sub(j + 1)?;
        self.0.get(at).copied()
    }
    #[inline(always)]
    fn put(&mut self, j: usize, e: E) {
        if let Some(at) = self.0.len().checked_sub(j + 1) {
            if let Some(x) = self.0.get_mut(at) {
                *x = e;
            }
        }
    }
    #[inline(always)]
    fn smallest_child(&self, i: usize) -> Option<(usize, E)> {
        let first = i * ARITY + 1;
        // Logical `first` sits at `end - 1`; its siblings below it.
        let end = self.0.len().checked_sub(first).filter(|e| *e > 0)?;
        let below = self.0.get(..end)?;
        if let Some(c) = below.last_chunk::<ARITY>() {
            // `c[3]` is logical `first`, `c[0]` is `first + 3`.
            let (k, m) = min_of(c);
            return Some((first + (ARITY - 1 - k), m));
        }
        // Fewer than four children: logical `first + k` at `end - 1 - k`.
        let (mut best, mut key) = (first, *below.last()?);
        for (k, c) in below.iter().rev().enumerate().skip(1) {
            if c.before(&key) {
                (best, key) = (first + k, *c);
            }
        }
        Some((best, key))
    }
}

/// The smallest of four entries and its offset: three comparisons, unrolled.
#[inline(always)]
fn min_of<E: HeapEntry>(c: &[E; ARITY]) -> (usize, E) {
    let (mut k, mut m) = (0, c[0]);
    for (j, x) in c.iter().enumerate().skip(1) {
        if x.before(&m) {
            (k, m) = (j, *x);
        }
    }
    (k, m)
}

// The sifts move a hole: the entry being placed is held aside, each entry passed over moves
// one level (`place`: its position updated), and the entry lands once. They share
// `smallest_child` and `rise`. An id out of `pos`'s range (which `set` refuses) would only
// leave a position unset.

/// Put `e` at `i` and record its position.
#[inline(always)]
fn place<E: HeapEntry, V: View<E>>(v: &mut V, pos: &mut [u32], e: E, i: usize) {
    v.put(i, e);
    if let Some(slot) = pos.get_mut(e.id() as usize) {
        *slot = i as u32;
    }
}

/// Move the hole at `i` up while `e` comes before the parent (no higher than `top`); each
/// parent passed over moves down into the hole. Returns where `e` belongs.
#[inline(always)]
fn rise<E: HeapEntry, V: View<E>>(
    v: &mut V,
    pos: &mut [u32],
    e: E,
    mut i: usize,
    top: usize,
) -> usize {
    while i > top {
        let parent = (i - 1) / ARITY;
        let Some(p) = v.get(parent) else {
            break;
        };
        if !e.before(&p) {
            break;
        }
        place(v, pos, p, i);
        i = parent;
    }
    i
}

/// Append `e` (the view already spans its place, the last) and sift it up.
#[inline(always)]
fn push<E: HeapEntry, V: View<E>>(v: &mut V, pos: &mut [u32], e: E) -> bool {
    let Some(i) = v.len().checked_sub(1) else {
        return false;
    };
    let i = rise(v, pos, e, i, 0);
    place(v, pos, e, i);
    true
}

/// Replace the entry at `i` by `e` (same id) and sift it the one way it must go: a smaller
/// key can only rise, a larger one only sink (the common re-arm of an idle timer moves its
/// deadline later: a sift down).
#[inline(always)]
fn change<E: HeapEntry, V: View<E>>(v: &mut V, pos: &mut [u32], i: usize, e: E) -> bool {
    let Some(old) = v.get(i) else {
        return false;
    };
    if old.id() != e.id() {
        // The id is armed on the other side: `pos` does not say which, so refuse rather
        // than overwrite the other heap's entry.
        return false;
    }
    if e.before(&old) {
        let i = rise(v, pos, e, i, 0);
        place(v, pos, e, i);
    } else if old.before(&e) {
        sift_down(v, pos, i, e);
    } else {
        v.put(i, e);
    }
    true
}

/// Place `e`, which belongs at `i` or below (the hole at `i`: whatever is there is
/// overwritten), sinking it past every smaller child.
#[inline(always)]
fn sift_down<E: HeapEntry, V: View<E>>(v: &mut V, pos: &mut [u32], mut i: usize, e: E) {
    while let Some((best, b)) = v.smallest_child(i) {
        if !b.before(&e) {
            break;
        }
        place(v, pos, b, i);
        i = best;
    }
    place(v, pos, e, i);
}

/// Take the entry at `i` out if it is `id`'s: unindex it, move the last entry into its place,
/// and sift that one in the heap shrunk by its last place (the caller then shortens the
/// heap). The moved entry may belong above or below its new place; at the root (every pop)
/// it can only sink. Returns whether `id` was there.
#[inline(always)]
fn take_out<E: HeapEntry, V: View<E>>(v: V, pos: &mut [u32], i: usize, id: u32) -> bool {
    let (Some(last), Some(at)) = (v.len().checked_sub(1), v.get(i)) else {
        return false;
    };
    if at.id() != id {
        return false;
    }
    if let Some(p) = pos.get_mut(id as usize) {
        *p = NONE;
    }
    let Some(moved) = v.get(last) else {
        return true;
    };
    let Some(mut v) = v.without_last() else {
        return true;
    };
    if i == last {
        return true;
    }
    if i > 0 {
        let j = rise(&mut v, pos, moved, i, 0);
        if j != i {
            place(&mut v, pos, moved, j);
            return true;
        }
    }
    if i == 0 {
        sift_down_from_root(&mut v, pos, moved);
    } else {
        sift_down(&mut v, pos, i, moved);
    }
    true
}

/// Place `e` at the root's hole bottom-up (Floyd's): the hole descends along the smaller
/// children to a leaf without comparing them with `e`, which then rises from there to its
/// place. After a pop the root gets the last leaf, which belongs near the bottom, so this
/// saves the per-level comparison with it for a step or two back up.
#[inline(always)]
fn sift_down_from_root<E: HeapEntry, V: View<E>>(v: &mut V, pos: &mut [u32], e: E) {
    let mut i = 0;
    while let Some((best, b)) = v.smallest_child(i) {
        place(v, pos, b, i);
        i = best;
    }
    let i = rise(v, pos, e, i, 0);
    place(v, pos, e, i);
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

    const FILLER: T = T(u32::MAX, 0);

    fn drain(h: &mut IndexedHeap<T>, side: Side) -> Vec<(u32, u64)> {
        std::iter::from_fn(|| h.pop(side).map(|e| (e.0, e.1))).collect()
    }

    #[test]
    fn growing_the_root_key_checks_the_last_child() {
        for side in [Side::A, Side::B] {
            // Root with exactly four children; the smallest child is the last one.
            let mut h = IndexedHeap::new(8, 8, FILLER).unwrap();
            for (id, k) in [(0, 1), (1, 50), (2, 40), (3, 30), (4, 20)] {
                h.set(side, T(id, k));
            }
            h.set(side, T(0, 100));
            h.check();
            assert_eq!(h.peek(side).map(|e| (e.0, e.1)), Some((4, 20)));
        }
    }

    #[test]
    fn removal_from_anywhere_keeps_order() {
        for side in [Side::A, Side::B] {
            let mut h = IndexedHeap::new(64, 64, FILLER).unwrap();
            for id in 0..64u32 {
                h.set(side, T(id, u64::from((id * 37) % 64)));
            }
            for id in (0..64u32).step_by(3) {
                assert!(h.remove(side, id));
                h.check();
            }
            assert!(!h.remove(side, 0));
            let keys: Vec<u64> = drain(&mut h, side).into_iter().map(|e| e.1).collect();
            assert!(keys.windows(2).all(|w| w[0] <= w[1]));
            assert_eq!(keys.len(), 64 - 22);
        }
    }

    #[test]
    fn the_two_heaps_share_the_buffer_and_keep_apart() {
        // Six places: four on one side, two on the other, then full.
        let mut h = IndexedHeap::new(8, 6, FILLER).unwrap();
        for id in 0..4 {
            assert!(h.set(Side::A, T(id, u64::from(10 - id))));
        }
        assert!(h.set(Side::B, T(4, 7)));
        assert!(h.set(Side::B, T(5, 3)));
        assert!(!h.set(Side::A, T(6, 1)), "the buffer is full");
        assert!(!h.set(Side::B, T(6, 1)), "the buffer is full");
        assert!(h.set(Side::A, T(0, 1)), "a move needs no room");
        h.check();
        assert!(!h.remove(Side::B, 0), "id 0 is on the other side");
        for (id, key) in [(0, 9), (1, 0), (4, 0)] {
            let side = if id < 4 { Side::B } else { Side::A };
            assert!(!h.set(side, T(id, key)), "id {id} is on the other side");
            h.check();
        }
        assert_eq!(h.peek(Side::B).map(|e| (e.0, e.1)), Some((5, 3)));
        assert_eq!((h.len(Side::A), h.len(Side::B)), (4, 2));
        assert_eq!(h.peek(Side::A).map(|e| e.0), Some(0));
        assert_eq!(h.peek(Side::B).map(|e| e.0), Some(5));
        assert_eq!(drain(&mut h, Side::B), vec![(5, 3), (4, 7)]);
        assert!(h.set(Side::A, T(6, 2)), "room again");
        h.check();
        assert_eq!(
            drain(&mut h, Side::A),
            vec![(0, 1), (6, 2), (3, 7), (2, 8), (1, 9)]
        );
    }

    #[test]
    fn renumbering_keeps_each_side_in_order() {
        for side in [Side::A, Side::B] {
            // Sixteen on the side renumbered, five on the other (ids 16..21), which must
            // keep their keys and places.
            let other = if side == Side::A { Side::B } else { Side::A };
            let mut h = IndexedHeap::new(21, 21, FILLER).unwrap();
            for id in 0..16u32 {
                h.set(side, T(id, u64::from((id * 7) % 16) * 10));
            }
            for id in 16..21u32 {
                h.set(other, T(id, u64::from(id * 3)));
            }
            let mut ranks = Vec::new();
            h.renumber(side, |e, rank| {
                ranks.push((e.1, rank));
                e.1 = u64::from(rank);
            });
            h.check();
            ranks.sort_unstable();
            assert!(ranks.iter().enumerate().all(|(i, r)| r.1 as usize == i));
            let keys: Vec<u64> = drain(&mut h, side).into_iter().map(|e| e.1).collect();
            assert_eq!(keys, (0..16).collect::<Vec<u64>>());
            let rest: Vec<(u32, u64)> = drain(&mut h, other);
            assert_eq!(
                rest,
                (16..21)
                    .map(|id| (id, u64::from(id * 3)))
                    .collect::<Vec<_>>()
            );
        }
    }

    quickcheck::quickcheck! {
        /// Any sequence of sets (inserts and key changes both ways) and removals on both
        /// heaps keeps each ordered and holding exactly what a map of id to key holds (ids
        /// 0..16 on one side, 16..32 on the other, as a timer keeps its clock).
        fn sets_and_removals_match_a_map(ops: Vec<(u8, u16, bool)>) -> bool {
            let mut h = IndexedHeap::new(32, 24, FILLER).unwrap();
            let mut model = [std::collections::BTreeMap::new(), std::collections::BTreeMap::new()];
            for (id, key, remove) in ops {
                let id = u32::from(id % 32);
                let (side, m) = if id < 16 { (Side::A, 0) } else { (Side::B, 1) };
                if remove {
                    assert_eq!(h.remove(side, id), model[m].remove(&id).is_some());
                } else {
                    let room = model[0].len() + model[1].len() < 24 || model[m].contains_key(&id);
                    assert_eq!(h.set(side, T(id, u64::from(key))), room);
                    if room {
                        model[m].insert(id, u64::from(key));
                    }
                }
                h.check();
            }
            [(Side::A, 0), (Side::B, 1)].into_iter().all(|(side, m)| {
                let mut want: Vec<u64> = model[m].values().copied().collect();
                want.sort_unstable();
                let got: Vec<u64> = drain(&mut h, side).into_iter().map(|e| e.1).collect();
                got == want
            })
        }

        /// Pops (the root refilled from the last leaf and sifted bottom-up) interleaved with
        /// sets always take a smallest key and keep the heaps and their index exact.
        fn pops_between_sets_take_the_smallest(ops: Vec<(u8, u16, bool)>) -> bool {
            let mut h: IndexedHeap<T> = IndexedHeap::new(32, 32, FILLER).unwrap();
            let mut model = [std::collections::BTreeMap::new(), std::collections::BTreeMap::new()];
            for (id, key, pop) in ops {
                let id = u32::from(id % 32);
                let (side, m) = if id < 16 { (Side::A, 0) } else { (Side::B, 1) };
                if pop {
                    let min = model[m].values().copied().min();
                    let got = h.pop(side);
                    assert_eq!(got.map(|e| e.1), min);
                    if let Some(e) = got {
                        model[m].remove(&e.0);
                    }
                } else {
                    h.set(side, T(id, u64::from(key)));
                    model[m].insert(id, u64::from(key));
                }
                h.check();
            }
            h.len(Side::A) == model[0].len() && h.len(Side::B) == model[1].len()
        }
    }

    #[test]
    fn full_heap_refuses_and_out_of_range_ids_are_ignored() {
        let mut h = IndexedHeap::new(4, 2, FILLER).unwrap();
        assert!(h.set(Side::A, T(0, 1)));
        assert!(h.set(Side::B, T(1, 2)));
        assert!(!h.set(Side::A, T(2, 3)));
        assert!(
            h.set(Side::A, T(0, 5)),
            "moving an id already in the heap needs no room"
        );
        assert!(!h.set(Side::A, T(9, 1)));
        assert!(!h.remove(Side::A, 9));
        assert!(!h.remove(Side::A, 3));
        assert!(h.contains(0) && !h.contains(2) && !h.contains(9));
        assert_eq!(h.len(Side::A) + h.len(Side::B), 2);
    }
}
