//! Test helpers that build on every target: Linux, the BSDs and macOS differ in which
//! flag-taking calls they have (`pipe2`, `accept4`, `SOCK_NONBLOCK`, `sigqueue`).

#![allow(dead_code)]

use std::os::fd::OwnedFd;

use dasynq::Signal;

fn nonblocking_cloexec(pair: (OwnedFd, OwnedFd)) -> (OwnedFd, OwnedFd) {
    for fd in [&pair.0, &pair.1] {
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC).expect("FD_CLOEXEC");
        rustix::fs::fcntl_setfl(fd, rustix::fs::OFlags::NONBLOCK).expect("O_NONBLOCK");
    }
    pair
}

/// A non-blocking, close-on-exec pipe: `(read end, write end)`.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    nonblocking_cloexec(rustix::pipe::pipe().expect("pipe"))
}

/// A non-blocking, close-on-exec Unix stream socket pair.
pub fn socketpair() -> (OwnedFd, OwnedFd) {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    nonblocking_cloexec(
        rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::empty(),
            None,
        )
        .expect("socketpair"),
    )
}

/// A regular file opened for reading (this test's own executable).
pub fn regular_file() -> OwnedFd {
    let exe = std::env::current_exe().expect("current_exe");
    std::fs::File::open(exe).expect("open").into()
}

// sigqueue(2) where the system has it (the `libc` crate does not declare it for every one of
// them, so it is declared here).
#[cfg(dasynq_sigqueue)]
unsafe extern "C" {
    fn sigqueue(pid: libc::pid_t, sig: libc::c_int, value: libc::sigval) -> libc::c_int;
}

/// Send `sig` to this process: with `sigqueue` and `value` where the platform has it, else
/// with `kill` (macOS and OpenBSD: the value is dropped, their siginfo has no room for it).
pub fn send_to_self(sig: Signal, value: Option<i32>) {
    let pid = std::process::id() as libc::pid_t;
    #[cfg(dasynq_sigqueue)]
    let r = match value {
        Some(v) => {
            let val = libc::sigval {
                sival_ptr: v as usize as *mut libc::c_void,
            };
            // SAFETY (test): sigqueue to our own pid with a plain integer value.
            unsafe { sigqueue(pid, sig.raw(), val) }
        }
        // SAFETY (test): kill our own pid with a blocked signal.
        None => unsafe { libc::kill(pid, sig.raw()) },
    };
    #[cfg(not(dasynq_sigqueue))]
    let r = {
        let _ = value;
        // SAFETY (test): kill our own pid with a blocked signal.
        unsafe { libc::kill(pid, sig.raw()) }
    };
    assert_eq!(r, 0, "sending {sig}");
}

/// Shut several runner threads down: call `stop` (the loop's `stop()`) until every thread has
/// returned, and give back what each returned. A runner between two run calls when one
/// `stop()` comes enters its next call afterwards and is not ended by it (as documented), so
/// the pattern is: set the flag its loop checks, then stop until all have returned. Panics if
/// that takes longer than `watchdog` (a stop that never reaches a sleeper).
pub fn stop_until_joined<T>(
    stop: impl Fn(),
    threads: Vec<std::thread::JoinHandle<T>>,
    watchdog: std::time::Duration,
) -> Vec<T> {
    let started = std::time::Instant::now();
    threads
        .into_iter()
        .map(|t| {
            while !t.is_finished() {
                assert!(
                    started.elapsed() < watchdog,
                    "a runner did not return after stop()"
                );
                stop();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            t.join().expect("a runner panicked")
        })
        .collect()
}
