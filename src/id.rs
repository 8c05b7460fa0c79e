//! Watcher identity and priority: the two small values every registration returns or takes.
//!
//! A [`WatchId`] names one registration in one loop. It carries a generation so that an id kept
//! after its watcher was removed can never reach the watcher that later reuses the same slot, and
//! a loop tag so that an id from another loop is recognised as foreign.

use core::fmt;

/// The identity of one registration in one event loop.
///
/// Returned by every `add_*` call and passed to every operation on a watcher. An id stays valid
/// until the watcher is removed; after that every operation with it reports
/// [`UsageError::Stale`](crate::UsageError::Stale) and touches nothing, even when the slot has
/// been reused by a new registration (the generation differs) or when the id came from a
/// different loop (the loop tag differs).
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
    pub(crate) loop_tag: u32,
}

impl WatchId {
    /// The slot index inside the loop's watcher pool (for logging and diagnostics).
    pub fn index(self) -> u32 {
        self.index
    }

    /// How many times the slot had been reused when this id was issued.
    pub fn generation(self) -> u32 {
        self.generation
    }
}

impl fmt::Debug for WatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WatchId({}#{}@{})",
            self.index, self.generation, self.loop_tag
        )
    }
}

/// Dispatch priority of a watcher (or of one half of a bidirectional fd watcher).
///
/// A **lower** value runs **first**; watchers of equal priority run in the order their events
/// arrived. Priority orders the events that are pending together; it does not pre-empt a
/// handler that is already running.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Priority(pub i32);

impl Priority {
    /// The priority used when none is given: `Priority(0)`.
    pub const DEFAULT: Priority = Priority(0);
    /// A convenient "runs before the default" value: `Priority(-100)`.
    pub const HIGH: Priority = Priority(-100);
    /// A convenient "runs after the default" value: `Priority(100)`.
    pub const LOW: Priority = Priority(100);
}
