//! Signal and child-process scenarios on the real kernel. A harness-less binary: `main`
//! blocks the signals before any thread exists (the masking rule), then runs the scenarios of
//! `suite/procs.rs` one after another. Child scenarios run twice: with pidfds, and with the
//! `SIGCHLD` + `waitid(P_PID)` fallback.
//!
//! `cargo test --test signals_real -- NAME` runs the scenarios whose name contains NAME.

#[macro_use]
#[allow(unused_macros)]
mod suite;

use std::panic::{AssertUnwindSafe, catch_unwind};

fn main() {
    // First thing, before any thread: block every signal the scenarios watch.
    let set = dasynq::SignalSet::of(&suite::procs::used_signals());
    dasynq::block_signals(set).expect("block signals");

    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests = suite::procs::all::<suite::Real>();
    let (mut passed, mut failed) = (0, Vec::new());
    for (name, test) in &tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = std::time::Instant::now();
        match catch_unwind(AssertUnwindSafe(test)) {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:?})", started.elapsed());
            }
            Err(_) => {
                failed.push(name.clone());
                println!("test {name} ... FAILED");
            }
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len()
    );
    if !failed.is_empty() {
        for f in &failed {
            println!("    {f}");
        }
        std::process::exit(1);
    }
}
