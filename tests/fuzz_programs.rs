//! The fuzzing harness in `cargo test`: every committed corpus and regression input of the
//! cargo-fuzz targets (`fuzz/`), plus a few hundred programs from a fixed pseudo-random
//! stream, run through the same model checks on `Sim`, `Epoll<EpollSim>` (with faults) and
//! `Kqueue<KqueueSim>` (with faults), and the differential comparison of the three.

#[path = "programs/program.rs"]
#[allow(dead_code)]
mod program;

use std::path::Path;

use dasynq::backend::{Epoll, Kqueue};
use dasynq::sim::{EpollSim, Faulty, KqueuePlatform, KqueueSim, Sim};
use program::{NoCounter, Options, run};

fn loop_ops(data: &[u8]) -> Vec<String> {
    let sim = Sim::new();
    run(
        sim.clone(),
        sim,
        data,
        Options {
            faults: None,
            distinct_priorities: false,
        },
        &NoCounter,
    )
    .failures
}

fn epoll_backend(data: &[u8]) -> Vec<String> {
    let k = EpollSim::new();
    let f = Faulty::new(k.clone());
    let b = Epoll::with_kernel(f.clone()).unwrap();
    run(
        k,
        b,
        data,
        Options {
            faults: Some(f.plan().clone()),
            distinct_priorities: false,
        },
        &NoCounter,
    )
    .failures
}

fn kqueue_backend(data: &[u8]) -> Vec<String> {
    let Some((&which, program)) = data.split_first() else {
        return Vec::new();
    };
    let platform = match which % 3 {
        0 => KqueuePlatform::FreeBsd,
        1 => KqueuePlatform::NetBsd,
        _ => KqueuePlatform::DragonFly,
    };
    let k = KqueueSim::for_platform(platform);
    let f = Faulty::new(k.clone());
    let b = Kqueue::with_kernel(f.clone()).unwrap();
    run(
        k,
        b,
        program,
        Options {
            faults: Some(f.plan().clone()),
            distinct_priorities: false,
        },
        &NoCounter,
    )
    .failures
}

fn differential(data: &[u8]) -> Vec<String> {
    match program::differential(data, &NoCounter) {
        Ok(()) => Vec::new(),
        Err(e) => vec![e],
    }
}

type Target = fn(&[u8]) -> Vec<String>;
const TARGETS: [(&str, Target); 4] = [
    ("loop_ops", loop_ops),
    ("epoll_backend", epoll_backend),
    ("kqueue_backend", kqueue_backend),
    ("differential", differential),
];

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(String, Vec<u8>)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| {
            let p = e.path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn committed_corpus_and_regressions_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut ran = 0;
    let mut failed = Vec::new();
    for (name, target) in TARGETS {
        let mut files = inputs(&root.join("corpus").join(name));
        files.extend(inputs(&root.join("regressions").join(name)));
        for (path, data) in files {
            ran += 1;
            let f = target(&data);
            if !f.is_empty() {
                failed.push(format!("{path}: {}", f.join("; ")));
            }
        }
    }
    assert!(ran > 0, "no corpus found under {}", root.display());
    assert!(
        failed.is_empty(),
        "{} inputs failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// A fixed stream of programs (xorshift), so the harness and the model are exercised in
/// every `cargo test` run, beside the fuzzer's own exploration.
/// Program `n` of the fixed stream.
fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (n as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let len = 64 + (n % 7) * 64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn pseudo_random_programs_pass_on_every_target() {
    let mut failed = Vec::new();
    for n in 0..300 {
        let data = pseudo_random(n);
        for (name, target) in TARGETS {
            let f = target(&data);
            if !f.is_empty() && failed.len() < 10 {
                failed.push(format!("program {n} on {name}: {}", f.join("; ")));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Replay one input with the operation log on: `DASYNQ_FUZZ_INPUT=path DASYNQ_FUZZ_TARGET=name
/// cargo test --test fuzz_programs replay -- --nocapture` (ignored otherwise).
#[test]
fn replay() {
    let (Ok(path), Ok(name)) = (
        std::env::var("DASYNQ_FUZZ_INPUT"),
        std::env::var("DASYNQ_FUZZ_TARGET"),
    ) else {
        return;
    };
    let data = std::fs::read(path).unwrap();
    program::set_log(true);
    let target = TARGETS.iter().find(|t| t.0 == name).expect("target name").1;
    let f = target(&data);
    assert!(f.is_empty(), "{}", f.join("\n"));
}

/// Write pseudo-random program `n` to a file (for `replay`): `DASYNQ_FUZZ_DUMP=n`.
#[test]
fn dump() {
    let Ok(n) = std::env::var("DASYNQ_FUZZ_DUMP") else {
        return;
    };
    let n: usize = n.parse().unwrap();
    let data = pseudo_random(n);
    std::fs::write(format!("/tmp/program-{n}"), data).unwrap();
}
