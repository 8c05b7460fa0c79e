//! The one place that names platforms. It picks the backend (`dasynq_epoll` on Linux,
//! `dasynq_kqueue` on the BSDs and Apple's systems), says which kqueue platform profile the
//! target is (`dasynq_kqueue_platform = "freebsd"`...), and emits one cfg per capability the
//! code has to select at compile time, because a call or constant does not exist elsewhere.
//! Everything else in the crate asks for these cfgs, never for an OS name.
//!
//! Numbers come from the `libc` crate for the target wherever it has them. The signal ranges
//! below are the exception: `libc` has no `SIGRTMIN`/`SIGRTMAX` or `NSIG` for the BSDs and
//! macOS, so they are stated here, once, with the header they come from.

use std::env;

/// Capabilities, each with the systems that have it (`target_os` values; "apple" stands for
/// every Apple system).
const CAPABILITIES: &[(&str, &[&str], &str)] = &[
    (
        "dasynq_sigtimedwait",
        &["linux", "freebsd", "netbsd", "dragonfly"],
        "sigtimedwait(2): take one pending instance with its siginfo, without blocking",
    ),
    (
        "dasynq_waitid_nowait",
        &["linux", "freebsd", "netbsd", "dragonfly", "apple"],
        "waitid(2) with WNOWAIT: check a child is ours without reaping it",
    ),
    (
        "dasynq_timer_ns",
        &["freebsd", "netbsd", "apple"],
        "EVFILT_TIMER with NOTE_NSECONDS",
    ),
    (
        "dasynq_timer_abs",
        &["freebsd", "netbsd"],
        "EVFILT_TIMER with NOTE_ABSTIME on the system clock",
    ),
    (
        "dasynq_pipe2",
        &["linux", "freebsd", "netbsd", "openbsd", "dragonfly"],
        "pipe2(2) and accept4(2) with O_CLOEXEC/O_NONBLOCK in the call",
    ),
    (
        "dasynq_sigqueue",
        &["linux", "freebsd", "netbsd", "dragonfly"],
        "sigqueue(2): send a signal with a value",
    ),
    (
        "dasynq_posix_spawn_errors",
        &["linux", "freebsd", "netbsd", "dragonfly", "apple"],
        "posix_spawn(3) reports a failed exec as its error (OpenBSD's child exits 127 instead)",
    ),
    (
        "dasynq_rt_signals",
        &["linux", "freebsd", "netbsd"],
        "real-time signals (queued, each with its own value)",
    ),
];

/// Kqueue platforms and the profile each one is (`KqueuePlatform` in the simulated kqueue).
const KQUEUE: &[(&str, &str)] = &[
    ("freebsd", "freebsd"),
    ("netbsd", "netbsd"),
    ("openbsd", "openbsd"),
    ("dragonfly", "dragonfly"),
    ("apple", "macos"),
];

/// Signal numbers `libc` does not give for these systems: (system, largest signal number
/// usable, first and last real-time signal (0 and 0: none), first number reserved for the C
/// library up to the first real-time signal (0: none)). Linux takes the range from `libc` at
/// run time (glibc reserves the kernel's first real-time signals for its threads).
/// - FreeBSD sys/sys/signal.h: `SIGRTMIN 65`, `SIGRTMAX 126`; 32 and 33 are `SIGTHR` and
///   `SIGLIBRT` (the C library's), 34 to 64 are unused.
/// - NetBSD sys/sys/signal.h: `NSIG 64`, `SIGRTMIN 33`, `SIGRTMAX 63`.
/// - OpenBSD sys/sys/signal.h: `NSIG 33`, signal 32 is `SIGTHR` (the thread library's): 31.
/// - DragonFly sys/sys/signal.h: no real-time signals usable through this crate: 31.
/// - Apple sys/signal.h: `NSIG 32`: 31.
const SIGNALS: &[(&str, i32, i32, i32, i32)] = &[
    ("freebsd", 126, 65, 126, 32),
    ("netbsd", 63, 33, 63, 0),
    ("openbsd", 31, 0, 0, 0),
    ("dragonfly", 31, 0, 0, 0),
    ("apple", 31, 0, 0, 0),
    ("linux", 0, 0, 0, 32),
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(dasynq_epoll)");
    println!("cargo::rustc-check-cfg=cfg(dasynq_kqueue)");
    let profiles: Vec<String> = KQUEUE.iter().map(|(_, p)| format!("\"{p}\"")).collect();
    println!(
        "cargo::rustc-check-cfg=cfg(dasynq_kqueue_platform, values({}))",
        profiles.join(", ")
    );
    for (cap, _, _) in CAPABILITIES {
        println!("cargo::rustc-check-cfg=cfg({cap})");
    }

    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let vendor = env::var("CARGO_CFG_TARGET_VENDOR").unwrap_or_default();
    // Apple's systems share one kernel interface.
    let system = if vendor == "apple" {
        "apple"
    } else {
        os.as_str()
    };

    if system == "linux" {
        println!("cargo::rustc-cfg=dasynq_epoll");
    }
    if let Some((_, profile)) = KQUEUE.iter().find(|(s, _)| *s == system) {
        println!("cargo::rustc-cfg=dasynq_kqueue");
        println!("cargo::rustc-cfg=dasynq_kqueue_platform=\"{profile}\"");
    }
    for (cap, systems, _) in CAPABILITIES {
        if systems.contains(&system) {
            println!("cargo::rustc-cfg={cap}");
        }
    }
    let (max, rtmin, rtmax, reserved) = SIGNALS
        .iter()
        .find(|(s, ..)| *s == system)
        .map_or((31, 0, 0, 0), |&(_, m, a, b, r)| (m, a, b, r));
    println!("cargo::rustc-env=DASYNQ_SIGNAL_MAX={max}");
    println!("cargo::rustc-env=DASYNQ_SIGNAL_RTMIN={rtmin}");
    println!("cargo::rustc-env=DASYNQ_SIGNAL_RTMAX={rtmax}");
    println!("cargo::rustc-env=DASYNQ_SIGNAL_RESERVED={reserved}");
}
