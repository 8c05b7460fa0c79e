//! Wake watchers: registration and delivery of what the lock-free wake list collected.

use super::State;
use crate::error::{Error, Pool as PoolKind, UsageError};
use crate::waker::WakeShared;
use crate::watch::{Detail, Half, WakeWatch, Watch};

impl State {
    /// Register a wake watcher; returns the slot, the wake cell and its generation.
    pub(crate) fn add_wake(
        &mut self,
        priority: i32,
        wake: &WakeShared,
    ) -> Result<(u32, u32, u32), Error> {
        if self.slots.peek_free().is_none() {
            return Err(Error::Capacity(PoolKind::Watchers));
        }
        let Some(cell) = self.wake_free.pop() else {
            return Err(Error::Capacity(PoolKind::Wakers));
        };
        let w = Watch::new(
            [Half::new(priority, true), Half::absent()],
            Detail::Wake(WakeWatch {
                cell,
                pending: false,
            }),
        );
        let Ok((index, _)) = self.slots.insert(w) else {
            self.wake_free.push(cell);
            return Err(Error::Capacity(PoolKind::Watchers));
        };
        let generation = self.wake_gen[cell as usize];
        self.wake_slot[cell as usize] = index;
        wake.reset(cell, generation);
        Ok((index, cell, generation))
    }

    pub(crate) fn wake_handle(&self, index: u32) -> Result<(u32, u32), UsageError> {
        match self.slots.at(index).map(|w| &w.detail) {
            Some(Detail::Wake(k)) => Ok((k.cell, self.wake_gen[k.cell as usize])),
            Some(_) => Err(UsageError::WrongKind {
                op: "waker",
                kind: self.kind_of(index),
            }),
            None => Err(UsageError::Stale),
        }
    }

    /// Deliver the wakes the lock-free list collected.
    pub(crate) fn process_wakes(&mut self, wake: &WakeShared) {
        wake.take(|cell, generation| {
            if self.wake_gen.get(cell as usize) != Some(&generation) {
                return;
            }
            let index = self.wake_slot[cell as usize];
            if let Some(Watch {
                detail: Detail::Wake(k),
                ..
            }) = self.slots.at_mut(index)
            {
                k.pending = true;
            }
            self.maybe_queue(index, 0, wake);
        });
    }
}
