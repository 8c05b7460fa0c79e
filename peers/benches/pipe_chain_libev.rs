//! The pipe chain (libevent's `bench.c`) for dasynq beside libev (the system's libev 4.33,
//! built by `build.rs`): 1000 pipes with 100 active, the same with an idle timer per pipe
//! re-armed by every event (libev's `ev_timer_again`, dasynq's `arm_timer`: once from a clock
//! read per re-arm, `Deadline::After`, and once from the loop's time as libev does,
//! `Deadline::AfterLoopTime`), and 1000 pipes
//! with 1 active (one event per wait). dasynq's variant is `benches/pipe_chain`'s own
//! (`benches/common/pipe_chain_dasynq.rs`), libev's is `c/libev_pipe_chain.c`; both read once
//! per event and make one wait per loop turn, and the bench checks and prints that they
//! handled the same events in the same number of waits (libev: one more, its first turn). The two alternate each round; each
//! ratio is the median of the per-round ratios dasynq / libev.
//!
//! Run: `ci/peers`, or `cargo bench --bench pipe_chain_libev` in `peers/` (options:
//! `--rounds N`, `--writes N`; `--only dasynq|libev` runs one variant once per scenario,
//! untimed, for callgrind; `--scenario K` runs the K-th scenario alone).

#[path = "../../benches/common/pipe_chain_dasynq.rs"]
mod chain;
#[path = "../../benches/common/mod.rs"]
mod common;

use chain::{Outcome, Params, run_dasynq};
use common::{arg, median, median_ratio};
use dasynq::Single;

#[repr(C)]
#[derive(Clone, Copy)]
struct CChain {
    ns: f64,
    events: u64,
    waits: u64,
    ok: i32,
}

unsafe extern "C" {
    fn peers_libev_pipe_chain(pipes: usize, active: usize, writes: u64, idle: i32) -> CChain;
}

fn run_libev(p: Params) -> Outcome {
    // SAFETY: plain integer arguments and a plain struct returned (repr(C), the fields of
    // `struct peers_chain` in order); the C side closes and frees what it made.
    let r = unsafe { peers_libev_pipe_chain(p.pipes, p.active, p.writes, i32::from(p.idle)) };
    assert!(r.ok == 1, "libev: the chain could not be set up");
    Outcome {
        ns: r.ns,
        events: r.events,
        waits: r.waits,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = arg(&args, "--rounds", 7).max(1) as usize;
    let writes = arg(&args, "--writes", 100_000);
    // `--only dasynq` or `--only libev`: run that variant once per scenario and print its
    // work, nothing timed (for instruction counts under callgrind).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    // `--scenario K`: only the K-th scenario (0 to 3).
    let pick = args
        .iter()
        .position(|a| a == "--scenario")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<usize>().ok());
    let s = |pipes, active, idle, loop_time| Params {
        pipes,
        active,
        writes,
        unix: false,
        idle,
        loop_time,
    };
    // The idle-timer chain twice: dasynq re-arming from a clock read per event
    // (`Deadline::After`), and from the loop's time as libev's `ev_timer_again` does from
    // `ev_now` (`Deadline::AfterLoopTime`: the same work as libev's).
    let scenarios = [
        s(1000, 100, false, false),
        s(1000, 100, true, false),
        s(1000, 100, true, true),
        s(1000, 1, false, false),
    ];
    for (k, p) in scenarios.into_iter().enumerate() {
        if pick.is_some_and(|want| want != k) {
            continue;
        }
        println!("\n== {}, {rounds} rounds", p.describe());
        if let Some(which) = &only {
            let o = match which.as_str() {
                "dasynq" => run_dasynq::<Single>(p),
                "libev" => run_libev(p),
                other => panic!("--only dasynq or --only libev, not {other}"),
            };
            println!("  {which} {:>8} events {:>8} waits", o.events, o.waits);
            continue;
        }
        let (a, b) = (run_dasynq::<Single>(p), run_libev(p));
        println!("  dasynq {:>8} events {:>8} waits", a.events, a.waits);
        println!("  libev  {:>8} events {:>8} waits", b.events, b.waits);
        let want = p.writes + p.active as u64;
        assert_eq!(
            a.events, want,
            "dasynq handled a different number of events"
        );
        assert_eq!(b.events, want, "libev handled a different number of events");
        // libev makes one poll more per run than there are batches (strace: 1002
        // `epoll_wait` for 1001 batches, its first turn finding nothing): allowed, no more.
        assert!(
            b.waits.abs_diff(a.waits) <= 1,
            "the two made a different number of waits"
        );
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let (x, y) = if round % 2 == 0 {
                let x = run_dasynq::<Single>(p);
                (x, run_libev(p))
            } else {
                let y = run_libev(p);
                (run_dasynq::<Single>(p), y)
            };
            assert_eq!((x.events, y.events), (want, want));
            ours.push(x.ns / x.events as f64);
            theirs.push(y.ns / y.events as f64);
        }
        println!("dasynq median {:>7.1} ns/event", median(&mut ours.clone()));
        println!(
            "libev  median {:>7.1} ns/event",
            median(&mut theirs.clone())
        );
        println!(
            "median ratio dasynq / libev  {:.3}",
            median_ratio(&ours, &theirs)
        );
    }
}
