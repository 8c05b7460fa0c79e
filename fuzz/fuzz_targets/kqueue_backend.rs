//! Loop programs through the kqueue backend over `KqueueSim` (the first input byte picks
//! the platform profile), with faults injected into any kernel call.
#![no_main]

use dasynq::backend::Kqueue;
use dasynq::sim::{Faulty, KqueuePlatform, KqueueSim};
use dasynq_fuzz::program::{Options, run};
use dasynq_fuzz::{Counting, CountingCounter, assert_clean};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let Some((&which, program)) = data.split_first() else {
        return;
    };
    // Profiles with sigtimedwait: the model checks every signal instance's value.
    let platform = match which % 3 {
        0 => KqueuePlatform::FreeBsd,
        1 => KqueuePlatform::NetBsd,
        _ => KqueuePlatform::DragonFly,
    };
    let k = KqueueSim::for_platform(platform);
    let f = Faulty::new(k.clone());
    let Ok(backend) = Kqueue::with_kernel(f.clone()) else {
        return;
    };
    let out = run(
        k,
        backend,
        program,
        Options {
            faults: Some(f.plan().clone()),
            distinct_priorities: false,
        },
        &CountingCounter,
    );
    assert_clean("kqueue_backend", &out.failures);
});
