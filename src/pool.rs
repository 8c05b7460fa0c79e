//! A fixed-capacity slot pool with generations.
//!
//! Every watcher lives in one slot. The pool is allocated once, at build time, and never grows:
//! allocation past capacity hands the value back instead. Each slot carries a generation that
//! changes whenever the slot is freed, so an `(index, generation)` pair kept after a free is
//! recognised as stale and can never reach the slot's next occupant.

/// A slot: its generation and either a value or the next free slot.
#[derive(Debug)]
enum Entry<T> {
    Occupied(T),
    Vacant(u32),
}

const NIL: u32 = u32::MAX;

/// A fixed-capacity pool of `T` addressed by `(index, generation)`.
#[derive(Debug)]
pub(crate) struct Pool<T> {
    entries: Box<[(u32, Entry<T>)]>,
    free_head: u32,
    len: usize,
}

impl<T> Pool<T> {
    /// The largest capacity a pool accepts (indices must fit in 31 bits, leaving room for the
    /// half bit of queue nodes and for the backends' reserved tokens).
    pub(crate) const MAX_CAPACITY: usize = 1 << 28;

    /// Allocate a pool of exactly `capacity` slots. Fails instead of aborting when memory is
    /// short.
    pub(crate) fn with_capacity(capacity: usize) -> Option<Self> {
        if capacity > Self::MAX_CAPACITY {
            return None;
        }
        let mut v: Vec<(u32, Entry<T>)> = Vec::new();
        v.try_reserve_exact(capacity).ok()?;
        for i in 0..capacity {
            let next = if i + 1 < capacity {
                (i + 1) as u32
            } else {
                NIL
            };
            v.push((0, Entry::Vacant(next)));
        }
        Some(Pool {
            entries: v.into_boxed_slice(),
            free_head: if capacity > 0 { 0 } else { NIL },
            len: 0,
        })
    }

    pub(crate) fn capacity(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The `(index, generation)` the next `insert` will use, if a slot is free.
    pub(crate) fn peek_free(&self) -> Option<(u32, u32)> {
        let (generation, entry) = self.entries.get(self.free_head as usize)?;
        matches!(entry, Entry::Vacant(_)).then_some((self.free_head, *generation))
    }

    /// Put `value` in a free slot and return its `(index, generation)`, or give the value
    /// back when every slot is in use.
    pub(crate) fn insert(&mut self, value: T) -> Result<(u32, u32), T> {
        let index = self.free_head;
        let Some((generation, entry)) = self.entries.get_mut(index as usize) else {
            return Err(value);
        };
        let Entry::Vacant(next) = *entry else {
            // The free list only links vacant entries; an occupied head would be a bug.
            return Err(value);
        };
        self.free_head = next;
        *entry = Entry::Occupied(value);
        self.len += 1;
        Ok((index, *generation))
    }

    /// The value at `index` if that slot is occupied by generation `generation`.
    pub(crate) fn get(&self, index: u32, generation: u32) -> Option<&T> {
        match self.entries.get(index as usize) {
            Some((g, Entry::Occupied(v))) if *g == generation => Some(v),
            _ => None,
        }
    }

    /// Mutable access to the value at `index` if occupied by generation `generation`.
    pub(crate) fn get_mut(&mut self, index: u32, generation: u32) -> Option<&mut T> {
        match self.entries.get_mut(index as usize) {
            Some((g, Entry::Occupied(v))) if *g == generation => Some(v),
            _ => None,
        }
    }

    /// Mutable access by index alone, for internal links that are kept exact (queue nodes,
    /// timer heap entries) and so need no generation check.
    pub(crate) fn at_mut(&mut self, index: u32) -> Option<&mut T> {
        match self.entries.get_mut(index as usize) {
            Some((_, Entry::Occupied(v))) => Some(v),
            _ => None,
        }
    }

    /// Mutable access by index alone, with the slot's generation.
    #[inline]
    pub(crate) fn at_mut_gen(&mut self, index: u32) -> Option<(u32, &mut T)> {
        match self.entries.get_mut(index as usize) {
            Some((g, Entry::Occupied(v))) => Some((*g, v)),
            _ => None,
        }
    }

    /// Shared access by index alone.
    pub(crate) fn at(&self, index: u32) -> Option<&T> {
        match self.entries.get(index as usize) {
            Some((_, Entry::Occupied(v))) => Some(v),
            _ => None,
        }
    }

    /// The current generation of slot `index` (whether occupied or not).
    pub(crate) fn generation(&self, index: u32) -> Option<u32> {
        self.entries.get(index as usize).map(|(g, _)| *g)
    }

    /// Free the slot if it holds generation `generation`, returning its value. The slot's
    /// generation changes, so every copy of the old id becomes stale.
    pub(crate) fn remove(&mut self, index: u32, generation: u32) -> Option<T> {
        let (g, entry) = self.entries.get_mut(index as usize)?;
        if *g != generation || matches!(entry, Entry::Vacant(_)) {
            return None;
        }
        let old = core::mem::replace(entry, Entry::Vacant(self.free_head));
        *g = g.wrapping_add(1);
        self.free_head = index;
        self.len -= 1;
        match old {
            Entry::Occupied(v) => Some(v),
            Entry::Vacant(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_exact_and_full_pool_gives_value_back() {
        let mut p = Pool::with_capacity(3).unwrap();
        let a = p.insert('a').unwrap();
        let _b = p.insert('b').unwrap();
        let _c = p.insert('c').unwrap();
        assert_eq!(p.insert('d'), Err('d'));
        assert_eq!(p.len(), 3);
        assert_eq!(p.remove(a.0, a.1), Some('a'));
        assert!(p.insert('e').is_ok());
        assert_eq!(p.insert('f'), Err('f'));
    }

    #[test]
    fn stale_ids_never_reach_the_new_occupant() {
        let mut p = Pool::with_capacity(1).unwrap();
        let old = p.insert(1).unwrap();
        assert_eq!(p.remove(old.0, old.1), Some(1));
        let new = p.insert(2).unwrap();
        assert_eq!(old.0, new.0);
        assert_ne!(old.1, new.1);
        assert_eq!(p.get(old.0, old.1), None);
        assert_eq!(p.get_mut(old.0, old.1), None);
        assert_eq!(p.remove(old.0, old.1), None);
        assert_eq!(p.get(new.0, new.1), Some(&2));
    }

    #[test]
    fn zero_capacity_and_out_of_range() {
        let mut p: Pool<u8> = Pool::with_capacity(0).unwrap();
        assert_eq!(p.insert(1), Err(1));
        assert!(p.get(0, 0).is_none());
        assert!(p.remove(7, 0).is_none());
        assert!(Pool::<u8>::with_capacity(Pool::<u8>::MAX_CAPACITY + 1).is_none());
    }

    #[test]
    fn double_remove_is_refused() {
        let mut p = Pool::with_capacity(2).unwrap();
        let a = p.insert(1).unwrap();
        assert_eq!(p.remove(a.0, a.1), Some(1));
        assert_eq!(p.remove(a.0, a.1), None);
        assert_eq!(p.len(), 0);
        // The free list is intact: both slots can be used again.
        assert!(p.insert(2).is_ok());
        assert!(p.insert(3).is_ok());
        assert!(p.insert(4).is_err());
    }
}

/// Properties: any sequence of operations matches a reference model.
#[cfg(test)]
mod properties {
    use super::*;
    use quickcheck::{Arbitrary, Gen, QuickCheck};
    use std::collections::HashMap;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u16),
        /// Remove the id issued `n`th (modulo the ids issued so far): live or stale.
        Remove(usize),
        /// Look up the id issued `n`th.
        Get(usize),
        /// An id that was never issued with this generation.
        Forged(u32, u32),
    }

    impl Arbitrary for Op {
        fn arbitrary(g: &mut Gen) -> Op {
            match u8::arbitrary(g) % 8 {
                0..=2 => Op::Insert(u16::arbitrary(g)),
                3..=4 => Op::Remove(usize::arbitrary(g)),
                5..=6 => Op::Get(usize::arbitrary(g)),
                _ => Op::Forged(u32::arbitrary(g) % 16, u32::arbitrary(g) % 4),
            }
        }
    }

    fn matches_model(capacity: u8, ops: Vec<Op>) -> bool {
        let capacity = usize::from(capacity % 12);
        let mut pool = Pool::with_capacity(capacity).unwrap();
        // Every id ever issued, and the live ones with their values.
        let mut issued: Vec<(u32, u32)> = Vec::new();
        let mut live: HashMap<(u32, u32), u16> = HashMap::new();
        for op in ops {
            match op {
                Op::Insert(v) => match pool.insert(v) {
                    Ok(id) => {
                        // Capacity is exact: an insert succeeds only below it, and never
                        // hands out an id that is live or was issued before.
                        assert!(live.len() < capacity);
                        assert!(!issued.contains(&id), "id {id:?} issued twice");
                        issued.push(id);
                        live.insert(id, v);
                    }
                    Err(back) => {
                        assert_eq!(back, v);
                        assert_eq!(live.len(), capacity);
                    }
                },
                Op::Remove(n) if !issued.is_empty() => {
                    let id = issued[n % issued.len()];
                    assert_eq!(pool.remove(id.0, id.1), live.remove(&id));
                }
                Op::Get(n) if !issued.is_empty() => {
                    let id = issued[n % issued.len()];
                    assert_eq!(pool.get(id.0, id.1), live.get(&id));
                    assert_eq!(pool.get_mut(id.0, id.1).copied(), live.get(&id).copied());
                }
                Op::Forged(index, generation) => {
                    let id = (index, generation);
                    if !issued.contains(&id) {
                        assert!(pool.get(index, generation).is_none());
                        assert!(pool.remove(index, generation).is_none());
                    }
                }
                _ => {}
            }
            assert_eq!(pool.len(), live.len());
            assert_eq!(pool.capacity(), capacity);
        }
        true
    }

    #[test]
    fn pool_matches_a_reference_model() {
        QuickCheck::new()
            .tests(if cfg!(miri) { 10 } else { 2000 })
            .quickcheck(matches_model as fn(u8, Vec<Op>) -> bool);
    }
}
