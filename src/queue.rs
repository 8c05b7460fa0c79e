//! The pending-event queue: a stable 4-ary min-heap on (priority, arrival sequence), plus a
//! FIFO of events deferred to the next batch.
//!
//! While every queued event has the same priority (the common case: most programs never set
//! one) the heap is bypassed: events sit in an intrusive FIFO, where arrival order is the
//! heap's order anyway, so queueing and taking cost a few stores instead of a sift. The first
//! event of another priority moves the FIFO into the heap (keeping each event's sequence
//! number, so the order is unchanged); once the heap is empty the FIFO takes over again.
//!
//! The heap holds node ids only (4 bytes a place); a node's key and its heap position live in
//! its `NodeInfo`, which the FIFO needs anyway, so a sift compares through it. The heap is the
//! rare path (it is only used while priorities differ), and keeping keys inline, as the timer
//! heaps do, would cost 16 bytes a node more, reserved for every watcher half.
//!
//! Queue nodes are watcher halves (`index * 2 + half`); each node is queued at most once, so the
//! queue, sized for every node at build time, can never overflow. A node's position is tracked
//! so that disabling or removing a watcher dequeues it in O(log n). Events queued while a batch
//! runs (requeues, re-armed emulated fds, watchers enabled by handlers) go to the deferred FIFO
//! and join the heap when the next batch starts, so a batch only runs what was pending when it
//! began and a watcher that keeps requeueing itself cannot starve the backend.

/// Where a node is (`NodeInfo::pos`): one of these markers, or below `FIFO` its place in
/// the heap.
const NONE: u32 = u32::MAX;
const DEFERRED: u32 = u32::MAX - 1;
const FIFO: u32 = u32::MAX - 2;

/// The heap's arity.
const ARITY: usize = 4;

/// Per-node bookkeeping: where the node is (a list marker or its heap position), its key,
/// and its list links.
#[derive(Copy, Clone, Debug)]
struct NodeInfo {
    pos: u32,
    prev: u32,
    next: u32,
    priority: i32,
    seq: u64,
}

/// An intrusive FIFO threaded through `NodeInfo::prev/next`.
#[derive(Copy, Clone, Debug)]
struct List {
    head: u32,
    tail: u32,
    len: usize,
}

impl List {
    const EMPTY: List = List {
        head: NONE,
        tail: NONE,
        len: 0,
    };
}

/// Index of the ready FIFO in `lists` (and its position marker).
const READY_LIST: usize = 0;
/// Index of the deferred FIFO in `lists`.
const DEFERRED_LIST: usize = 1;
const LIST_MARKER: [u32; 2] = [FIFO, DEFERRED];

/// A fixed-capacity stable priority queue of node ids.
#[derive(Debug)]
pub(crate) struct PendingQueue {
    /// The heap's node ids (room for every node), the first `heap_len` in use, ordered by
    /// their `NodeInfo` keys.
    heap: Box<[u32]>,
    heap_len: usize,
    nodes: Box<[NodeInfo]>,
    /// `lists[READY_LIST]` holds ready events while they all share `fifo_priority` (it is never
    /// non-empty together with `heap`); `lists[DEFERRED_LIST]` holds events for the next batch.
    lists: [List; 2],
    fifo_priority: i32,
    next_seq: u64,
}

impl PendingQueue {
    /// A queue for node ids `0..nodes`. Returns `None` if memory is short (or `nodes` reaches
    /// the position markers, past any pool a machine can hold).
    pub(crate) fn with_nodes(nodes: usize) -> Option<Self> {
        if nodes >= FIFO as usize {
            return None;
        }
        let mut heap = Vec::new();
        heap.try_reserve_exact(nodes).ok()?;
        heap.resize(nodes, NONE);
        let mut info = Vec::new();
        info.try_reserve_exact(nodes).ok()?;
        info.resize(
            nodes,
            NodeInfo {
                pos: NONE,
                prev: NONE,
                next: NONE,
                priority: 0,
                seq: 0,
            },
        );
        Some(PendingQueue {
            heap: heap.into_boxed_slice(),
            heap_len: 0,
            nodes: info.into_boxed_slice(),
            lists: [List::EMPTY, List::EMPTY],
            fifo_priority: 0,
            next_seq: 0,
        })
    }

    /// Events ready to run in this batch.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.heap_len + self.lists[READY_LIST].len
    }

    /// Events waiting for the next batch.
    pub(crate) fn deferred_len(&self) -> usize {
        self.lists[DEFERRED_LIST].len
    }

    /// Whether the node is queued (ready or deferred).
    #[cfg(test)]
    pub(crate) fn contains(&self, node: u32) -> bool {
        self.nodes.get(node as usize).is_some_and(|n| n.pos != NONE)
    }

    #[inline(always)]
    fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        s
    }

    /// Whether `node` is in range and not queued.
    #[inline(always)]
    fn is_free(&self, node: u32) -> bool {
        self.nodes.get(node as usize).is_some_and(|n| n.pos == NONE)
    }

    /// Queue `node` to run in this batch. Returns false (and does nothing) if it is already
    /// queued or out of range.
    #[inline(always)]
    pub(crate) fn push(&mut self, node: u32, priority: i32) -> bool {
        if !self.is_free(node) {
            return false;
        }
        let seq = self.take_seq();
        self.insert(node, priority, seq);
        true
    }

    /// Put a node where it belongs: the FIFO while priorities agree, else the heap.
    #[inline(always)]
    fn insert(&mut self, node: u32, priority: i32, seq: u64) {
        let fifo = &self.lists[READY_LIST];
        if self.heap_len == 0 && (fifo.len == 0 || self.fifo_priority == priority) {
            self.fifo_priority = priority;
            self.link_tail(READY_LIST, node, priority, seq);
        } else {
            self.insert_heap(node, priority, seq);
        }
    }

    #[cold]
    fn insert_heap(&mut self, node: u32, priority: i32, seq: u64) {
        if self.lists[READY_LIST].len > 0 {
            // A second priority: move the FIFO into the heap in order, then insert.
            let mut cur = self.lists[READY_LIST].head;
            self.lists[READY_LIST] = List::EMPTY;
            while cur != NONE {
                let n = self.nodes[cur as usize];
                self.heap_insert(cur, n.priority, n.seq);
                cur = n.next;
            }
        }
        self.heap_insert(node, priority, seq);
    }

    fn heap_insert(&mut self, node: u32, priority: i32, seq: u64) {
        let i = self.heap_len;
        // Room for every node, each in at most once (callers checked `node` is in range and
        // free): `i` is in range.
        if i >= self.heap.len() || node as usize >= self.nodes.len() {
            return;
        }
        self.nodes[node as usize] = NodeInfo {
            pos: i as u32,
            prev: NONE,
            next: NONE,
            priority,
            seq,
        };
        self.heap_len += 1;
        self.sift_up(i, node);
    }

    // The heap's sifts move a hole: the node being placed is held aside, each node passed
    // over moves one level (`place`: its position updated), and the node lands once. Heap
    // indices stay below `heap_len` (at most the node count), and every id in the heap was
    // range-checked before it went in, so the indexing here cannot fail.

    /// The order key of `node`.
    #[inline(always)]
    fn key(&self, node: u32) -> (i32, u64) {
        let n = &self.nodes[node as usize];
        (n.priority, n.seq)
    }

    /// Put `node` at heap index `i` and record its position.
    #[inline(always)]
    fn place(&mut self, node: u32, i: usize) {
        self.heap[i] = node;
        self.nodes[node as usize].pos = i as u32;
    }

    /// Move `node` (whose place is the hole at `i`) up to where it belongs. Returns where.
    fn sift_up(&mut self, mut i: usize, node: u32) -> usize {
        let k = self.key(node);
        while i > 0 {
            let parent = (i - 1) / ARITY;
            let p = self.heap[parent];
            if k >= self.key(p) {
                break;
            }
            self.place(p, i);
            i = parent;
        }
        self.place(node, i);
        i
    }

    /// The child of heap index `i` with the smallest key, and that key; `None` for a leaf.
    #[inline(always)]
    fn smallest_child(&self, i: usize) -> Option<(usize, (i32, u64))> {
        let first = i * ARITY + 1;
        let kids = self.heap.get(first..self.heap_len)?;
        let mut kids = kids.iter().take(ARITY);
        let mut best = (first, self.key(*kids.next()?));
        for (c, &n) in (first + 1..).zip(kids) {
            let k = self.key(n);
            if k < best.1 {
                best = (c, k);
            }
        }
        Some(best)
    }

    /// Move `node` (whose place is the hole at `i`) down to where it belongs.
    fn sift_down(&mut self, mut i: usize, node: u32) {
        let k = self.key(node);
        while let Some((best, best_key)) = self.smallest_child(i) {
            if best_key >= k {
                break;
            }
            self.place(self.heap[best], i);
            i = best;
        }
        self.place(node, i);
    }

    /// Place `node` in the hole at the root, bottom-up (Floyd's): the hole descends along the
    /// smallest children to a leaf without comparing them with `node`, which then rises from
    /// there. After a pop `node` is the last leaf, which belongs near the bottom, so this saves
    /// a comparison per level for a step or two back up.
    fn sift_down_from_root(&mut self, node: u32) {
        let mut i = 0;
        while let Some((best, _)) = self.smallest_child(i) {
            self.place(self.heap[best], i);
            i = best;
        }
        self.sift_up(i, node);
    }

    /// Take the node at heap index `i` out, marking it unqueued; the last node fills the hole
    /// and moves up or down to its place. (Never inlined: callers' hot
    /// paths, such as a timer's re-arm dequeueing its old expiry, seldom come here.)
    #[inline(never)]
    fn heap_remove_at(&mut self, i: usize) {
        let Some(last) = self.heap_len.checked_sub(1) else {
            return;
        };
        let Some(&removed) = self.heap.get(i).filter(|_| i <= last) else {
            return;
        };
        if let Some(n) = self.nodes.get_mut(removed as usize) {
            n.pos = NONE;
        }
        self.heap_len = last;
        if i < last {
            let moved = self.heap[last];
            if i == 0 {
                self.sift_down_from_root(moved);
            } else if self.sift_up(i, moved) == i {
                self.sift_down(i, moved);
            }
        }
    }

    #[inline(always)]
    fn link_tail(&mut self, list: usize, node: u32, priority: i32, seq: u64) {
        let tail = self.lists[list].tail;
        if let Some(n) = self.nodes.get_mut(node as usize) {
            *n = NodeInfo {
                pos: LIST_MARKER[list],
                prev: tail,
                next: NONE,
                priority,
                seq,
            };
        }
        match self.nodes.get_mut(tail as usize) {
            Some(t) => t.next = node,
            None => self.lists[list].head = node,
        }
        self.lists[list].tail = node;
        self.lists[list].len += 1;
    }

    #[inline(always)]
    fn unlink(&mut self, list: usize, node: u32) {
        let Some(info) = self.nodes.get_mut(node as usize) else {
            return;
        };
        let (prev, next) = (info.prev, info.next);
        info.pos = NONE;
        match self.nodes.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => self.lists[list].head = next,
        }
        match self.nodes.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => self.lists[list].tail = prev,
        }
        self.lists[list].len -= 1;
    }

    /// Queue `node` for the next batch. Returns false if it is already queued or out of range.
    pub(crate) fn defer(&mut self, node: u32, priority: i32) -> bool {
        if !self.is_free(node) {
            return false;
        }
        let seq = self.take_seq();
        self.link_tail(DEFERRED_LIST, node, priority, seq);
        true
    }

    /// Move every deferred node into the ready queue by arrival order: a deferred event arrived
    /// before anything queued to run after it was deferred (say, a watcher enabled between two
    /// runs), so in the FIFO it goes before those, as it would in the heap.
    #[inline(always)]
    pub(crate) fn merge_deferred(&mut self) {
        // Nothing deferred (the usual case): checked inline, before any call.
        if self.lists[DEFERRED_LIST].len == 0 {
            return;
        }
        self.merge_deferred_slow();
    }

    fn merge_deferred_slow(&mut self) {
        let mut cur = self.lists[DEFERRED_LIST].head;
        self.lists[DEFERRED_LIST] = List::EMPTY;
        // Where the next deferred node goes in the FIFO: both lists are in sequence order, so
        // this only moves forward (a linear merge).
        let mut at = self.lists[READY_LIST].head;
        while cur != NONE {
            let n = self.nodes[cur as usize];
            self.nodes[cur as usize].pos = NONE;
            let fifo_mode = self.heap_len == 0
                && (self.lists[READY_LIST].len == 0 || self.fifo_priority == n.priority);
            if fifo_mode {
                while at != NONE && self.nodes[at as usize].seq < n.seq {
                    at = self.nodes[at as usize].next;
                }
                self.fifo_priority = n.priority;
                self.link_before(READY_LIST, cur, at, n.priority, n.seq);
            } else {
                self.insert_heap(cur, n.priority, n.seq);
            }
            cur = n.next;
        }
    }

    /// Link `node` into `list` before `before` (at the tail if `before` is `NONE`).
    fn link_before(&mut self, list: usize, node: u32, before: u32, priority: i32, seq: u64) {
        let Some(b) = self.nodes.get(before as usize).copied() else {
            self.link_tail(list, node, priority, seq);
            return;
        };
        if let Some(n) = self.nodes.get_mut(node as usize) {
            *n = NodeInfo {
                pos: LIST_MARKER[list],
                prev: b.prev,
                next: before,
                priority,
                seq,
            };
        }
        match self.nodes.get_mut(b.prev as usize) {
            Some(p) => p.next = node,
            None => self.lists[list].head = node,
        }
        self.nodes[before as usize].prev = node;
        self.lists[list].len += 1;
    }

    /// The sequence number the next queued node will get: a batch that starts now takes
    /// only nodes numbered below it ([`pop_before`](Self::pop_before)).
    #[inline]
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Take the highest-priority, earliest node if it was queued before sequence `bound`;
    /// `None` if the queue is empty or its first node came later. (Several runners share
    /// the ready queue, each batch bounded by where it started; nothing is deferred.)
    #[inline(always)]
    pub(crate) fn pop_before(&mut self, bound: u64) -> Option<u32> {
        let top_seq = if self.lists[READY_LIST].len > 0 {
            let head = self.lists[READY_LIST].head;
            self.nodes.get(head as usize)?.seq
        } else {
            let top = *self.heap.get(..self.heap_len)?.first()?;
            self.nodes.get(top as usize)?.seq
        };
        if top_seq >= bound {
            return None;
        }
        self.pop()
    }

    /// Take the highest-priority, earliest node.
    #[inline(always)]
    pub(crate) fn pop(&mut self) -> Option<u32> {
        if self.lists[READY_LIST].len > 0 {
            let head = self.lists[READY_LIST].head;
            self.unlink(READY_LIST, head);
            return Some(head);
        }
        // The end of every batch finds the queue empty: answer that without a call.
        if self.heap_len == 0 {
            return None;
        }
        self.pop_heap()
    }

    fn pop_heap(&mut self) -> Option<u32> {
        let top = *self.heap.first()?;
        self.heap_remove_at(0);
        Some(top)
    }

    /// Dequeue `node` wherever it is. Returns whether it was queued.
    pub(crate) fn remove(&mut self, node: u32) -> bool {
        let Some(info) = self.nodes.get(node as usize).copied() else {
            return false;
        };
        match info.pos {
            NONE => false,
            DEFERRED => {
                self.unlink(DEFERRED_LIST, node);
                true
            }
            FIFO => {
                self.unlink(READY_LIST, node);
                true
            }
            i => {
                self.heap_remove_at(i as usize);
                true
            }
        }
    }

    #[cfg(test)]
    fn check(&self) {
        for (i, &node) in self.heap[..self.heap_len].iter().enumerate() {
            assert_eq!(self.nodes[node as usize].pos as usize, i);
            if i > 0 {
                let parent = self.heap[(i - 1) / ARITY];
                assert!(self.key(node) > self.key(parent));
            }
        }
        let in_heap = self.nodes.iter().filter(|n| n.pos < FIFO).count();
        assert_eq!(in_heap, self.heap_len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the queue property: a node deferred before another was pushed ran after it
    /// when the queue was in FIFO mode (the heap ordered them by arrival).
    #[test]
    fn a_deferred_node_keeps_its_arrival_order_against_later_pushes() {
        let mut q = PendingQueue::with_nodes(12).unwrap();
        assert!(q.defer(10, 0));
        assert!(q.push(3, 0));
        assert!(q.push(4, 0));
        assert!(q.defer(5, 0));
        q.merge_deferred();
        assert_eq!(
            std::iter::from_fn(|| q.pop()).collect::<Vec<_>>(),
            vec![10, 3, 4, 5]
        );
    }

    #[test]
    fn priority_then_arrival_order() {
        let mut q = PendingQueue::with_nodes(10).unwrap();
        for (node, prio) in [(0, 5), (1, 1), (2, 5), (3, 1), (4, 0), (5, 5)] {
            assert!(q.push(node, prio));
            q.check();
        }
        let order: Vec<u32> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec![4, 1, 3, 0, 2, 5]);
    }

    #[test]
    fn a_node_is_queued_at_most_once() {
        let mut q = PendingQueue::with_nodes(2).unwrap();
        assert!(q.push(1, 0));
        assert!(q.contains(1) && !q.contains(0));
        assert!(!q.push(1, 0));
        assert!(!q.defer(1, 0));
        assert!(!q.push(2, 0), "out of range");
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn removal_from_anywhere_keeps_order() {
        let mut q = PendingQueue::with_nodes(64).unwrap();
        for n in 0..64u32 {
            q.push(n, (n % 7) as i32);
        }
        for n in (0..64u32).step_by(3) {
            assert!(q.remove(n));
            q.check();
        }
        assert!(!q.remove(0));
        let mut last = (i32::MIN, 0u32);
        while let Some(n) = q.pop() {
            let key = ((n % 7) as i32, n);
            assert!(key > last, "{key:?} after {last:?}");
            assert!(n % 3 != 0);
            last = key;
        }
    }

    #[test]
    fn deferred_nodes_wait_for_merge_and_keep_arrival_order() {
        let mut q = PendingQueue::with_nodes(8).unwrap();
        q.push(0, 1);
        q.defer(1, 0);
        q.defer(2, 0);
        q.defer(3, 0);
        assert!(q.remove(2));
        assert_eq!(q.deferred_len(), 2);
        assert_eq!(q.pop(), Some(0));
        assert_eq!(q.pop(), None);
        q.merge_deferred();
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.pop(), Some(3));
        assert_eq!(q.pop(), None);
        // Lists are reusable after a merge.
        q.defer(2, 0);
        q.merge_deferred();
        assert_eq!(q.pop(), Some(2));
    }

    #[test]
    fn fifo_mode_switches_to_the_heap_and_back_without_reordering() {
        let mut q = PendingQueue::with_nodes(16).unwrap();
        q.push(0, 3);
        q.push(1, 3);
        q.push(2, 3);
        assert!(q.remove(1));
        q.push(3, 1); // second priority: FIFO moves into the heap
        q.check();
        q.push(4, 3);
        assert_eq!(q.len(), 4);
        assert_eq!(q.pop(), Some(3));
        assert_eq!(q.pop(), Some(0));
        q.push(5, 3);
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(4));
        assert_eq!(q.pop(), Some(5));
        assert_eq!(q.pop(), None);
        // Empty again: back to the FIFO.
        q.push(6, 9);
        q.push(7, 9);
        assert!(q.remove(6));
        assert_eq!(q.pop(), Some(7));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn removing_the_only_deferred_node_resets_the_list() {
        let mut q = PendingQueue::with_nodes(4).unwrap();
        q.defer(1, 0);
        assert!(q.remove(1));
        q.defer(2, 0);
        q.merge_deferred();
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), None);
    }
}

/// Properties: any sequence of operations matches a reference sorted list.
#[cfg(test)]
mod properties {
    use super::*;
    use quickcheck::{Arbitrary, Gen, QuickCheck};

    const NODES: u32 = 12;

    #[derive(Clone, Debug)]
    enum Op {
        Push(u32, i8),
        Defer(u32, i8),
        Merge,
        Pop,
        Remove(u32),
    }

    impl Arbitrary for Op {
        fn arbitrary(g: &mut Gen) -> Op {
            // Few distinct priorities, so equal ones (stability) and the FIFO/heap switch are
            // exercised; node ids a little past the range, so refusals are too.
            let node = u32::arbitrary(g) % (NODES + 2);
            let prio = i8::arbitrary(g) % 3;
            match u8::arbitrary(g) % 10 {
                0..=3 => Op::Push(node, prio),
                4 => Op::Defer(node, prio),
                5 => Op::Merge,
                6..=8 => Op::Pop,
                _ => Op::Remove(node),
            }
        }
    }

    /// The model: `(priority, sequence, node)` entries, ready and deferred.
    #[derive(Default)]
    struct Model {
        ready: Vec<(i32, u64, u32)>,
        deferred: Vec<(i32, u64, u32)>,
        seq: u64,
    }

    impl Model {
        fn queued(&self, node: u32) -> bool {
            self.ready.iter().chain(&self.deferred).any(|e| e.2 == node)
        }
        fn add(&mut self, node: u32, prio: i32, deferred: bool) -> bool {
            if node >= NODES || self.queued(node) {
                return false;
            }
            let e = (prio, self.seq, node);
            self.seq += 1;
            if deferred {
                self.deferred.push(e);
            } else {
                self.ready.push(e);
            }
            true
        }
        fn pop(&mut self) -> Option<u32> {
            let i = (0..self.ready.len()).min_by_key(|&i| (self.ready[i].0, self.ready[i].1))?;
            Some(self.ready.remove(i).2)
        }
        fn remove(&mut self, node: u32) -> bool {
            let before = self.ready.len() + self.deferred.len();
            self.ready.retain(|e| e.2 != node);
            self.deferred.retain(|e| e.2 != node);
            before != self.ready.len() + self.deferred.len()
        }
    }

    fn matches_model(ops: Vec<Op>) -> bool {
        let mut q = PendingQueue::with_nodes(NODES as usize).unwrap();
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::Push(n, p) => {
                    assert_eq!(q.push(n, i32::from(p)), m.add(n, i32::from(p), false))
                }
                Op::Defer(n, p) => {
                    assert_eq!(q.defer(n, i32::from(p)), m.add(n, i32::from(p), true))
                }
                Op::Merge => {
                    q.merge_deferred();
                    let d = core::mem::take(&mut m.deferred);
                    m.ready.extend(d);
                }
                Op::Pop => assert_eq!(q.pop(), m.pop()),
                Op::Remove(n) => assert_eq!(q.remove(n), m.remove(n)),
            }
            q.check();
            assert_eq!(q.len(), m.ready.len());
            assert_eq!(q.deferred_len(), m.deferred.len());
            for n in 0..NODES {
                assert_eq!(q.contains(n), m.queued(n));
            }
        }
        // Draining gives the model's order: by priority, then arrival.
        while let Some(n) = m.pop() {
            assert_eq!(q.pop(), Some(n));
        }
        assert_eq!(q.pop(), None);
        true
    }

    #[test]
    fn queue_matches_a_reference_sorted_list() {
        QuickCheck::new()
            .tests(if cfg!(miri) { 10 } else { 3000 })
            .quickcheck(matches_model as fn(Vec<Op>) -> bool);
    }
}
