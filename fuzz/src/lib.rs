//! The fuzzing harness for dasynq (see `program`), and the counting allocator the targets
//! install.

// The harness lives with the tests (so the packaged crate has it); the fuzz crate borrows it.
#[path = "../../tests/programs/program.rs"]
pub mod program;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting allocations made on a thread while it asked for counting.
pub struct Counting;

// SAFETY: every call is forwarded to `System` unchanged; the counters are thread-local cells
// with const initialisers, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note();
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

fn note() {
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let _ = COUNT.try_with(|n| n.set(n.get() + 1));
        }
    });
}

/// The [`program::AllocCounter`] for [`Counting`].
pub struct CountingCounter;

impl program::AllocCounter for CountingCounter {
    fn set(&self, on: bool) {
        COUNTING.with(|c| c.set(on));
    }
    fn count(&self) -> u64 {
        COUNT.with(|n| n.get())
    }
}

/// Panic with the failures, if any (the fuzzer records the input as a crash).
pub fn assert_clean(what: &str, failures: &[String]) {
    if !failures.is_empty() {
        panic!("{what}: {}", failures.join("\n"));
    }
}
