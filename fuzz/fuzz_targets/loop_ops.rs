//! Loop programs on the `Sim` backend, checked against the model (no faults).
#![no_main]

use dasynq::sim::Sim;
use dasynq_fuzz::program::{Options, run};
use dasynq_fuzz::{Counting, CountingCounter, assert_clean};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let sim = Sim::new();
    let out = run(
        sim.clone(),
        sim,
        data,
        Options {
            faults: None,
            distinct_priorities: false,
        },
        &CountingCounter,
    );
    assert_clean("loop_ops", &out.failures);
});
