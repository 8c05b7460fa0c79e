//! Loop programs through the epoll backend over `EpollSim`, with faults injected into any
//! kernel call.
#![no_main]

use dasynq::backend::Epoll;
use dasynq::sim::{EpollSim, Faulty};
use dasynq_fuzz::program::{Options, run};
use dasynq_fuzz::{Counting, CountingCounter, assert_clean};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let k = EpollSim::new();
    let f = Faulty::new(k.clone());
    let Ok(backend) = Epoll::with_kernel(f.clone()) else {
        return;
    };
    let out = run(
        k,
        backend,
        data,
        Options {
            faults: Some(f.plan().clone()),
            distinct_priorities: false,
        },
        &CountingCounter,
    );
    assert_clean("epoll_backend", &out.failures);
});
