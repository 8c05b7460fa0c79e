//! Timers at scale: insert (first arm), re-arm (deadline moved later, as an idle timer on
//! activity), cancel (`stop_timer`) and expiry, at 1k, 10k, 100k and 1M timers, and the memory
//! the loop reserves per timer.
//!
//! Each operation is timed over every timer of the set, on a loop on the real kernel; the
//! rounds are interleaved over the sizes, and each figure is the median of its rounds. The
//! floor beside it is the same number of `BinaryHeap` pushes (what any timer heap must at
//! least do), so a ratio reads as "timer operations per heap push", measured side by side.
//! `insert@` and `rearm@` repeat insert and re-arm with `Deadline::At` from one clock reading
//! per phase (no clock read per arm, as libev's cached loop time).
//!
//! Run: `cargo bench --bench timers` (options: `--rounds N`, `--max N` for the largest set).

mod common;
#[path = "common/timer_phases.rs"]
mod timer_phases;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use dasynq::EventLoop;

use common::{arg, median, median_ratio};
use timer_phases::{Phases, T, phases};

/// Counts the bytes allocated, to report what `build` reserves per timer.
struct Counting;
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counter is an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The floor: `n` pushes onto a `BinaryHeap` of deadlines (allocated beforehand).
fn floor(n: usize) -> f64 {
    let mut h = BinaryHeap::with_capacity(n);
    let t = Instant::now();
    for i in 0..n {
        h.push(black_box(std::cmp::Reverse(
            (i as u64 * 7919) % 3_600_000_000,
        )));
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    black_box(h.len());
    ns
}

/// Bytes `build` reserves per timer: for its timer slot alone, and with its watcher slot
/// (which holds the handler, here zero-sized).
fn bytes_per_timer(n: usize) -> (f64, f64) {
    let size = |timers: usize| {
        let before = BYTES.load(Ordering::Relaxed);
        let lp = EventLoop::<T>::builder()
            .watchers(n)
            .timers(timers)
            .wakers(0)
            .build()
            .expect("build");
        let b = BYTES.load(Ordering::Relaxed) - before;
        drop(lp);
        b
    };
    let with = size(n);
    ((with - size(0)) as f64 / n as f64, with as f64 / n as f64)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = arg(&args, "--rounds", 5).max(1) as usize;
    let max = arg(&args, "--max", 1_000_000) as usize;
    let sizes: Vec<usize> = [1_000, 10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|&n| n <= max)
        .collect();
    println!(
        "timers: {rounds} rounds, interleaved over {sizes:?} timers (ns per operation, median)"
    );
    let mut results: Vec<Vec<(Phases, f64)>> = sizes.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (k, &n) in sizes.iter().enumerate() {
            results[k].push((phases(n), floor(n)));
        }
    }
    println!(
        "{:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>14} {:>10} {:>12}",
        "timers",
        "insert",
        "insert@",
        "rearm",
        "rearm@",
        "cancel",
        "expiry",
        "heap push",
        "rearm / push",
        "B/timer",
        "B/timer+slot"
    );
    for (k, &n) in sizes.iter().enumerate() {
        let col = |f: &dyn Fn(&(Phases, f64)) -> f64| {
            let mut v: Vec<f64> = results[k].iter().map(f).collect();
            median(&mut v)
        };
        let (timer_bytes, with_slot) = bytes_per_timer(n);
        println!(
            "{:>9} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>10.1} {:>14.2} {:>10.0} {:>12.0}",
            n,
            col(&|r| r.0.insert),
            col(&|r| r.0.insert_at),
            col(&|r| r.0.rearm),
            col(&|r| r.0.rearm_at),
            col(&|r| r.0.cancel),
            col(&|r| r.0.expire),
            col(&|r| r.1),
            median_ratio(
                &results[k].iter().map(|r| r.0.rearm).collect::<Vec<_>>(),
                &results[k].iter().map(|r| r.1).collect::<Vec<_>>()
            ),
            timer_bytes,
            with_slot,
        );
    }
}
