//! Signal and child-process scenarios on the real kernel. A harness-less binary: `main`
//! blocks the signals before any thread exists (the masking rule), then runs the scenarios of
//! `suite/procs.rs` one after another. Child scenarios run twice: with pidfds, and with the
//! `SIGCHLD` + `waitid(P_PID)` fallback.
//!
//! `cargo test --test signals_real -- NAME` runs the scenarios whose name contains NAME.

#[macro_use]
#[allow(unused_macros)]
mod suite;

use std::os::fd::AsFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;

use dasynq::backend::Backend;
use dasynq::{Event, EventLoop, FnHandler, Priority, Rearm, SpawnOptions};
use rustix::process::{Resource, Rlimit};

/// Real kernel only: with the fd limit reached, `pidfd_open` fails with EMFILE; a watch made
/// with a reservation must still succeed, through the fallback, and report the exit.
fn reserved_watch_falls_back_when_the_fd_limit_is_reached() {
    let lp = EventLoop::<FnHandler>::builder().build().unwrap();
    let seen = std::rc::Rc::new(std::cell::Cell::new(None));
    let s2 = seen.clone();
    let id = lp
        .reserve_child(
            Priority::DEFAULT,
            FnHandler::new(move |_, ev| {
                if let Event::Child { status, .. } = ev {
                    s2.set(Some(status));
                }
                Rearm::Remove
            }),
        )
        .unwrap();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg("sleep 0.2; exit 6");
    let pid = lp
        .backend()
        .spawn(
            dasynq::backend::ChildCommand::Command(&mut cmd),
            Default::default(),
        )
        .expect("spawn")
        .pid;
    let old = rustix::process::getrlimit(Resource::Nofile);
    // The lowest free fd number: with the soft limit there, the next fd cannot be allocated.
    let probe = std::io::stdin().as_fd().try_clone_to_owned().expect("dup");
    let lowest = std::os::fd::AsRawFd::as_raw_fd(&probe) as u64;
    drop(probe);
    rustix::process::setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(lowest),
            maximum: old.maximum,
        },
    )
    .expect("setrlimit");
    let watched = lp.watch_child(id, pid);
    let fallback = lp.usage().fallback_children;
    rustix::process::setrlimit(Resource::Nofile, old).expect("restore rlimit");
    watched.expect("a reserved watch cannot fail for lack of fds");
    assert_eq!(fallback, 1, "watched through the fallback");
    while seen.get().is_none() {
        lp.run();
    }
    assert_eq!(seen.get(), Some(dasynq::ChildStatus::Exited(6)));
}

/// Several loops in one process, in several threads, spawning at once: each reports exactly
/// its own children (pidfds: no process-wide SIGCHLD handling to share).
fn several_loops_each_reap_only_their_own_children() {
    let threads: Vec<_> = (0..3)
        .map(|t| {
            std::thread::spawn(move || {
                let lp = EventLoop::<FnHandler>::builder().build().unwrap();
                let mine = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
                let mut spawned = Vec::new();
                for i in 0..20 {
                    let m = mine.clone();
                    let mut cmd = Command::new("/bin/sh");
                    cmd.arg("-c").arg(format!("exit {}", t * 20 + i));
                    let sp = lp
                        .spawn_child(
                            cmd,
                            SpawnOptions::new(),
                            FnHandler::new(move |_, ev| {
                                if let Event::Child { pid, status } = ev {
                                    m.borrow_mut().push((pid, status));
                                }
                                Rearm::Remove
                            }),
                        )
                        .unwrap();
                    spawned.push((sp.pid, dasynq::ChildStatus::Exited(t * 20 + i)));
                }
                while mine.borrow().len() < 20 {
                    lp.run();
                }
                let mut got = mine.borrow().clone();
                got.sort_by_key(|e| e.0);
                spawned.sort_by_key(|e| e.0);
                assert_eq!(got, spawned, "loop {t} saw exactly its own children");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("loop thread");
    }
}

/// Several runners on one threaded loop (built for 3, so the backend's signalfd and pidfds
/// are one-shot and re-armed as consumed): 300 queued real-time signal instances, each
/// delivered exactly once with its value, and 20 children, each exit reported once, all
/// with every runner blocked in plain `run()`.
#[cfg(dasynq_sigqueue)]
fn several_runners_take_signals_and_children_exactly_once() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use dasynq::{Cx, Handler, Removed, Signal, ThreadedLoop};

    struct H {
        values: Arc<Mutex<Vec<u64>>>,
        exits: Arc<AtomicUsize>,
    }
    impl Handler for H {
        type Data = ();
        fn on_event(&mut self, _cx: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
            match ev {
                Event::Signal(info) => {
                    self.values.lock().unwrap().push(info.value_int() as u64);
                    Rearm::Rearm
                }
                Event::Child { .. } => {
                    self.exits.fetch_add(1, Ordering::SeqCst);
                    Rearm::Remove
                }
                _ => Rearm::Rearm,
            }
        }
        fn on_removed(self, _cx: &Cx<'_, Self>, _r: Removed) {}
    }
    let Some(rt) = Signal::rt(1) else { return };
    let lp = Arc::new(ThreadedLoop::<H>::builder().runners(3).build().unwrap());
    let values = Arc::new(Mutex::new(Vec::new()));
    let exits = Arc::new(AtomicUsize::new(0));
    let mk = || H {
        values: values.clone(),
        exits: exits.clone(),
    };
    let sig = lp.add_signal(rt, Priority::DEFAULT, mk()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let runners: Vec<_> = (0..3)
        .map(|_| {
            let (lp, done) = (lp.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    lp.run();
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    for v in 0..300 {
        suite::portable::send_to_self(rt, Some(v));
        if v % 50 == 0 {
            // Let the runners drain and block again now and then.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    for i in 0..20 {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(format!("exit {i}"));
        lp.spawn_child(cmd, SpawnOptions::new(), mk()).unwrap();
    }
    let t = Instant::now();
    while values.lock().unwrap().len() < 300 || exits.load(Ordering::SeqCst) < 20 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "lost: {} of 300 signal instances, {} of 20 exits",
            values.lock().unwrap().len(),
            exits.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    done.store(true, Ordering::SeqCst);
    suite::portable::stop_until_joined(|| lp.stop(), runners, Duration::from_secs(10));
    let mut got = values.lock().unwrap().clone();
    got.sort_unstable();
    assert_eq!(
        got,
        (0..300).collect::<Vec<u64>>(),
        "each instance exactly once"
    );
    assert_eq!(exits.load(Ordering::SeqCst), 20);
    lp.remove(sig).unwrap();
    assert_eq!(lp.usage().watchers, 0);
}

/// A signal set from a `/proc/PID/status` line such as `SigBlk:\t0000000000004001`.
#[cfg(dasynq_epoll)]
fn proc_signals(pid: u32, field: &str) -> dasynq::SignalSet {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim();
    let bits = u64::from_str_radix(hex, 16).expect("hex mask");
    let mut set = dasynq::SignalSet::new();
    for n in 1..=64 {
        if bits & (1u64 << (n - 1)) != 0 {
            set.add(dasynq::Signal::from_raw(n));
        }
    }
    set
}

/// Sets the disposition of `sig` for the life of the guard.
#[cfg(dasynq_epoll)]
struct Disposition(dasynq::Signal, libc::sighandler_t);

#[cfg(dasynq_epoll)]
impl Disposition {
    fn ignore(sig: dasynq::Signal) -> Self {
        // SAFETY (test): SIG_IGN for a signal that is blocked in every thread; the old
        // disposition is put back on drop.
        let old = unsafe { libc::signal(sig.raw(), libc::SIG_IGN) };
        Disposition(sig, old)
    }
}

#[cfg(dasynq_epoll)]
impl Drop for Disposition {
    fn drop(&mut self) {
        // SAFETY (test): restores what `ignore` replaced.
        unsafe { libc::signal(self.0.raw(), self.1) };
    }
}

/// Real kernel only (the kernel's own view, in `/proc`): a child started while the program
/// blocks (and even ignores) signals starts with an empty mask and default dispositions; with
/// `inherit_signals` it keeps the mask, and `SIGTERM` then waits in it (so the reset is what
/// makes the difference). Both child paths.
#[cfg(dasynq_epoll)]
fn spawned_children_start_with_a_clean_signal_state(fallback: bool) {
    use dasynq::{ChildStatus, Signal, SignalSet};
    let lp = EventLoop::<FnHandler>::builder()
        .child_watch_fallback(fallback)
        .build()
        .unwrap();
    let blocked = dasynq::blocked_signals();
    assert!(blocked.contains(Signal::TERM) && blocked.contains(Signal::HUP));
    let _hup = Disposition::ignore(Signal::HUP);
    let seen = std::rc::Rc::new(std::cell::Cell::new(None));
    let spawn = |options: SpawnOptions| {
        let s = seen.clone();
        let mut cmd = Command::new("/bin/sleep");
        cmd.arg("30");
        lp.spawn_child(
            cmd,
            options,
            FnHandler::new(move |_, ev| {
                if let Event::Child { status, .. } = ev {
                    s.set(Some(status));
                }
                Rearm::Remove
            }),
        )
        .expect("spawn")
    };
    let wait_exit = |what: &str| {
        let start = std::time::Instant::now();
        while seen.get().is_none() && start.elapsed() < std::time::Duration::from_secs(20) {
            lp.run_timeout(std::time::Duration::from_millis(100));
        }
        seen.take()
            .unwrap_or_else(|| panic!("{what}: the child did not exit"))
    };

    let clean = spawn(SpawnOptions::new());
    assert_eq!(lp.usage().fallback_children, usize::from(fallback));
    assert_eq!(
        proc_signals(clean.pid, "SigBlk"),
        SignalSet::new(),
        "empty mask"
    );
    assert!(
        !proc_signals(clean.pid, "SigIgn").contains(Signal::HUP),
        "a blocked signal the program ignores is back to its default"
    );
    lp.signal_child(clean.id, Signal::TERM).unwrap();
    assert_eq!(
        wait_exit("TERM to a clean child"),
        ChildStatus::Signaled {
            signal: Signal::TERM,
            core_dumped: false
        }
    );

    let inherited = spawn(SpawnOptions::new().inherit_signals());
    let mask = proc_signals(inherited.pid, "SigBlk");
    assert!(
        mask.contains(Signal::TERM) && mask.contains(Signal::HUP),
        "{mask:?}"
    );
    assert!(proc_signals(inherited.pid, "SigIgn").contains(Signal::HUP));
    lp.signal_child(inherited.id, Signal::TERM).unwrap();
    assert_eq!(lp.run_timeout(std::time::Duration::from_millis(300)), 0);
    assert!(
        proc_signals(inherited.pid, "ShdPnd").contains(Signal::TERM),
        "TERM waits in the inherited mask"
    );
    lp.signal_child(inherited.id, Signal::KILL).unwrap();
    assert_eq!(
        wait_exit("KILL"),
        ChildStatus::Signaled {
            signal: Signal::KILL,
            core_dumped: false
        }
    );
}

/// `spawn_exec`: everything an `Exec` says reaches the child (real kernel, `/proc`), and the
/// signal state is clean without a fork. Both child paths.
#[cfg(dasynq_epoll)]
fn spawn_exec_gives_the_child_what_it_asks_for(fallback: bool) {
    use dasynq::{ChildStatus, Errno, Error, Exec, ExecStdio, Signal, SignalSet};
    use std::io::Read;
    let lp = EventLoop::<FnHandler>::builder()
        .child_watch_fallback(fallback)
        .build()
        .unwrap();
    let seen = std::rc::Rc::new(std::cell::Cell::new(None));
    let handler = || {
        let s = seen.clone();
        FnHandler::new(move |_, ev| {
            if let Event::Child { status, .. } = ev {
                s.set(Some(status));
            }
            Rearm::Remove
        })
    };
    let wait_exit = || {
        let start = std::time::Instant::now();
        while seen.get().is_none() && start.elapsed() < std::time::Duration::from_secs(20) {
            lp.run_timeout(std::time::Duration::from_millis(100));
        }
        seen.take().expect("the child exited")
    };
    let _hup = Disposition::ignore(Signal::HUP);

    // Signal state: clean, with TERM blocked and HUP ignored here.
    let mut e = Exec::new("/bin/sleep");
    e.arg("30");
    let sp = lp.spawn_exec(e, SpawnOptions::new(), handler()).unwrap();
    assert_eq!(proc_signals(sp.pid, "SigBlk"), SignalSet::new());
    let ign = proc_signals(sp.pid, "SigIgn");
    assert!(
        !ign.contains(Signal::HUP) && !ign.contains(Signal::PIPE),
        "{ign:?}"
    );
    lp.signal_child(sp.id, Signal::TERM).unwrap();
    assert_eq!(
        wait_exit(),
        ChildStatus::Signaled {
            signal: Signal::TERM,
            core_dumped: false
        }
    );
    // Inherited when asked.
    let mut e = Exec::new("/bin/sleep");
    e.arg("30");
    let sp = lp
        .spawn_exec(e, SpawnOptions::new().inherit_signals(), handler())
        .unwrap();
    assert!(proc_signals(sp.pid, "SigBlk").contains(Signal::TERM));
    assert!(
        !proc_signals(sp.pid, "SigIgn").contains(Signal::PIPE),
        "SIGPIPE's default comes back either way, as with Command"
    );
    lp.signal_child(sp.id, Signal::KILL).unwrap();
    wait_exit();

    // Arguments, environment, working directory, piped stdout, /dev/null stdin.
    let dir = std::env::temp_dir().canonicalize().unwrap();
    let mut e = Exec::new("sh");
    e.arg("-c")
        .arg("echo \"$A,${B-unset},$PWD\"; cat; echo done")
        .env("A", "one")
        .env("B", "two")
        .env_remove("B")
        .current_dir(&dir)
        .stdin(ExecStdio::Null)
        .stdout(ExecStdio::Piped);
    let sp = lp.spawn_exec(e, SpawnOptions::new(), handler()).unwrap();
    let mut out = String::new();
    sp.stdout
        .expect("piped stdout")
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, format!("one,unset,{}\ndone\n", dir.display()));
    assert_eq!(wait_exit(), ChildStatus::Exited(0));

    // A cleared environment; stdout into a file given as an fd.
    let path = dir.join(format!("dasynq-exec-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    let mut e = Exec::new("/bin/sh");
    e.arg("-c")
        .arg("echo \"${HOME-none}\"")
        .env_clear()
        .stdout(ExecStdio::Fd(file.into()));
    lp.spawn_exec(e, SpawnOptions::new(), handler()).unwrap();
    assert_eq!(wait_exit(), ChildStatus::Exited(0));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "none\n");
    let _ = std::fs::remove_file(&path);

    // Its own process group.
    let mut e = Exec::new("/bin/sleep");
    e.arg("30").process_group(0);
    let sp = lp.spawn_exec(e, SpawnOptions::new(), handler()).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", sp.pid)).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let pgrp: u32 = after.split(' ').nth(2).unwrap().parse().unwrap();
    assert_eq!(pgrp, sp.pid, "the leader of a group of its own");
    lp.signal_child(sp.id, Signal::KILL).unwrap();
    wait_exit();

    // Errors come back typed, with the handler, and take no slot.
    let before = lp.usage().watchers;
    let e = lp
        .spawn_exec(
            Exec::new("/nonexistent/dasynq-no-such-program"),
            SpawnOptions::new(),
            handler(),
        )
        .unwrap_err();
    assert_eq!(
        e.error(),
        Error::Spawn {
            errno: Errno::NOENT
        }
    );
    let mut bad = Exec::new("/bin/true");
    bad.arg("nul\0inside");
    let e = lp
        .spawn_exec(bad, SpawnOptions::new(), handler())
        .unwrap_err();
    assert_eq!(
        e.error(),
        Error::Spawn {
            errno: Errno::INVAL
        }
    );
    assert_eq!(lp.usage().watchers, before);
}

fn main() {
    // First thing, before any thread: block every signal the scenarios watch.
    let set = dasynq::SignalSet::of(&suite::procs::used_signals());
    dasynq::block_signals(set).expect("block signals");

    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut tests = suite::procs::all::<suite::Real>();
    tests.push((
        "several_loops_each_reap_only_their_own_children".to_string(),
        Box::new(several_loops_each_reap_only_their_own_children),
    ));
    tests.push((
        "reserved_watch_falls_back_when_the_fd_limit_is_reached".to_string(),
        Box::new(reserved_watch_falls_back_when_the_fd_limit_is_reached),
    ));
    #[cfg(dasynq_sigqueue)]
    tests.push((
        "several_runners_take_signals_and_children_exactly_once".to_string(),
        Box::new(several_runners_take_signals_and_children_exactly_once),
    ));
    #[cfg(dasynq_epoll)]
    for fallback in [false, true] {
        let path = if fallback { "fallback" } else { "pidfd" };
        tests.push((
            format!("spawned_children_start_with_a_clean_signal_state::{path}"),
            Box::new(move || spawned_children_start_with_a_clean_signal_state(fallback)),
        ));
        tests.push((
            format!("spawn_exec_gives_the_child_what_it_asks_for::{path}"),
            Box::new(move || spawn_exec_gives_the_child_what_it_asks_for(fallback)),
        ));
    }
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
