//! One program on `Sim`, `Epoll<EpollSim>` and `Kqueue<KqueueSim>` (no faults): the same
//! trace of handler calls on all three.
#![no_main]

use dasynq_fuzz::program::differential;
use dasynq_fuzz::{Counting, CountingCounter};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = differential(data, &CountingCounter) {
        panic!("differential: {e}");
    }
});
