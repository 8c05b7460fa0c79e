//! dasynq's timers beside libev's (the system's libev 4.33, built by `build.rs`): insert,
//! re-arm, cancel and expiry at 1k, 10k, 100k and 1M timers, with the same deadlines in the
//! same order (`benches/common/timer_phases.rs` for dasynq, `c/libev_timers.c` for libev).
//! The two alternate within each round, over the sizes; each ratio is the median of the
//! per-round ratios dasynq / libev, so machine noise hits both alike.
//!
//! libev re-arms with `ev_timer_again` (its idle-timer idiom) from its cached loop time,
//! while dasynq's `Deadline::After` reads the clock on every arm (a deadline taken from the
//! time the last wait returned would fire early by however long handlers have run since).
//! The `insert@` and `rearm@` rows insert and re-arm a second time on both sides, after the
//! expiry phase (libev's heap array grown, dasynq's reserved heap touched), dasynq with
//! `Deadline::At` from one clock reading per phase: the same work as libev's.
//!
//! Run: `ci/peers` (installs libev-dev), or `cargo bench --bench timers_libev` in `peers/`
//! (options: `--rounds N`, `--max N` for the largest set; `--only libev` runs libev's
//! phases alone, for callgrind).

#[path = "../../benches/common/mod.rs"]
mod common;
#[path = "../../benches/common/timer_phases.rs"]
mod timer_phases;

use common::{arg, median, median_ratio};
use timer_phases::{Phases, phases};

#[repr(C)]
#[derive(Clone, Copy)]
struct CPhases {
    insert: f64,
    rearm: f64,
    cancel: f64,
    expire: f64,
    insert2: f64,
    rearm2: f64,
    ok: i32,
}

unsafe extern "C" {
    fn peers_libev_timer_phases(n: usize) -> CPhases;
    fn peers_libev_timer_size() -> usize;
}

fn libev(n: usize) -> Phases {
    // SAFETY: the C function takes a count and returns a plain struct (repr(C) above, the
    // same fields in the same order as `struct peers_phases`); it frees what it allocates.
    let r = unsafe { peers_libev_timer_phases(n) };
    assert!(
        r.ok == 1,
        "libev: a loop could not be made, or a timer did not expire once"
    );
    Phases {
        insert: r.insert,
        rearm: r.rearm,
        // Its second insert and re-arm, into the grown heap, beside dasynq's `At` phases (which
        // come after the expiry phase too).
        insert_at: r.insert2,
        rearm_at: r.rearm2,
        cancel: r.cancel,
        expire: r.expire,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = arg(&args, "--rounds", 5).max(1) as usize;
    let max = arg(&args, "--max", 1_000_000) as usize;
    // `--only libev`: libev's phases once per size, untimed output (for callgrind).
    if args.iter().any(|a| a == "--only") {
        for n in [1_000, 10_000, 100_000, 1_000_000]
            .into_iter()
            .filter(|&n| n <= max)
        {
            let _ = libev(n);
        }
        return;
    }
    let sizes: Vec<usize> = [1_000, 10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|&n| n <= max)
        .collect();
    println!("timers, dasynq beside libev: {rounds} rounds over {sizes:?} (ns per operation)");
    let mut ours: Vec<Vec<Phases>> = sizes.iter().map(|_| Vec::new()).collect();
    let mut theirs: Vec<Vec<Phases>> = sizes.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (k, &n) in sizes.iter().enumerate() {
            // Alternate which goes first.
            if round % 2 == 0 {
                ours[k].push(phases(n));
                theirs[k].push(libev(n));
            } else {
                theirs[k].push(libev(n));
                ours[k].push(phases(n));
            }
        }
    }
    type Pick = fn(&Phases) -> f64;
    let cols: [(&str, Pick); 6] = [
        ("insert", |p| p.insert),
        ("insert@", |p| p.insert_at),
        ("rearm", |p| p.rearm),
        ("rearm@", |p| p.rearm_at),
        ("cancel", |p| p.cancel),
        ("expiry", |p| p.expire),
    ];
    println!(
        "{:>9} {:>8} {:>10} {:>10} {:>8}",
        "timers", "phase", "dasynq", "libev", "ratio"
    );
    for (k, &n) in sizes.iter().enumerate() {
        for (name, pick) in cols {
            let a: Vec<f64> = ours[k].iter().map(pick).collect();
            let b: Vec<f64> = theirs[k].iter().map(pick).collect();
            println!(
                "{:>9} {:>8} {:>10.1} {:>10.1} {:>8.3}",
                n,
                name,
                median(&mut a.clone()),
                median(&mut b.clone()),
                median_ratio(&a, &b)
            );
        }
    }
    println!(
        "insert@ / rearm@: both insert and re-arm a second time, after the expiry phase (libev's \
         heap grown, dasynq's touched), dasynq with Deadline::At from one clock reading per \
         phase as libev counts from its cached loop time; insert / rearm: the first phases, \
         dasynq with Deadline::After, one clock read per arm"
    );
    // SAFETY: returns a constant (`sizeof(ev_timer)`).
    let watcher = unsafe { peers_libev_timer_size() };
    println!(
        "libev's timer watcher: {watcher} B (its heap entry, 16 B with the cached deadline, is internal); \
         dasynq's reservation per timer: `cargo bench --bench timers`"
    );
}
