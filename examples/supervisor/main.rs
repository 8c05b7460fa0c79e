//! A small service supervisor: the kind of program dasynq exists for.
//!
//! With no arguments it is a self-contained demonstration: it supervises three services (one
//! healthy, one that fails at once, one that ignores `SIGTERM`), drives itself through its
//! control socket (status, stop, start, restart), then sends itself `SIGTERM` as an init
//! system would, stops every service (`SIGTERM` to each service's process group, `SIGKILL`
//! when the grace period ends), checks in `/proc` that every child was reaped and none is
//! left a zombie, prints a report and exits 0 only if all of that held.
//!
//! ```text
//! cargo run --example supervisor                      # the demonstration
//! cargo run --example supervisor -- --service web='python3 -m http.server' \
//!     --service log='tail -f /var/log/syslog' --control /tmp/sup.sock
//! echo status | socat - UNIX-CONNECT:/tmp/sup.sock   # one line per service
//! kill -HUP <pid>                                     # the status table on stdout
//! kill -TERM <pid>                                    # stop everything, exit 0
//! ```
//!
//! What it shows: every watcher reserved at startup (a child reservation and two timers per
//! service), so a restart never fails for capacity (`spawn_into`); restart with exponential
//! backoff (100 ms doubling, capped), reset by a run that lasted, and giving up after five
//! quick failures in a row; services in their own process groups, stopped by group signal
//! (`signal_child_group`), which cannot hit a recycled pid; `SIGTERM`/`SIGINT`/`SIGHUP`
//! through signal watchers, blocked before any thread starts; no `SIGCHLD` handler (children
//! are watched through pidfds); the control socket's connections as fd watchers reading
//! through typed views. The logic lives in `supervisor.rs`, generic over the backend, and is
//! tested in virtual time on `dasynq::sim::Sim` (`tests/supervisor_sim.rs`).

mod supervisor;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use dasynq::{EventLoop, Signal, SignalSet};
use supervisor::{Config, Spec, State, Supervisor, W};

fn main() -> ExitCode {
    // The masking rule: block the signals the loop watches before any thread exists, so that
    // every thread inherits the mask and they wait for the loop's signalfd. Children start
    // with a clean mask (spawn_into's default), so the SIGTERM sent to them is not blocked.
    let watched = SignalSet::of(&[Signal::TERM, Signal::INT, Signal::HUP]);
    if let Err(e) = dasynq::block_signals(watched) {
        eprintln!("supervisor: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.is_empty() {
        demonstration()
    } else {
        serve(&args)
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("supervisor: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn usage() -> String {
    "usage: supervisor [--service NAME='COMMAND LINE']... [--control SOCKET_PATH]\n\
     (no arguments: the self-contained demonstration)"
        .to_string()
}

/// Supervise the services named on the command line until SIGTERM or SIGINT.
fn serve(args: &[String]) -> Res<ExitCode> {
    let mut specs = Vec::new();
    let mut control = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--service" => {
                let v = it.next().ok_or_else(usage)?;
                let (name, line) = v.split_once('=').ok_or_else(usage)?;
                specs.push(Spec::shell(name, line));
            }
            "--control" => control = Some(PathBuf::from(it.next().ok_or_else(usage)?)),
            _ => return Err(usage().into()),
        }
    }
    if specs.is_empty() {
        return Err(usage().into());
    }
    let lp = build(specs.len())?;
    supervisor::watch_signals(&lp)?;
    if let Some(path) = &control {
        supervisor::listen(&lp, path)?;
        println!("control socket: {}", path.display());
    }
    let mut sup = Supervisor::new(&lp, specs, Config::default())?;
    println!("supervisor pid {}", std::process::id());
    sup.run(&lp);
    for line in &sup.log {
        println!("{line}");
    }
    if let Some(path) = &control {
        let _ = std::fs::remove_file(path);
    }
    Ok(ExitCode::SUCCESS)
}

/// A loop with room for `services` services (three watchers each), the signal watchers and
/// a few control connections; nothing is reserved later.
fn build(services: usize) -> Res<EventLoop<W>> {
    Ok(EventLoop::<W>::builder()
        .watchers(3 * services + 3 + 1 + 8)
        .timers(2 * services)
        .wakers(0)
        // If the supervisor fails and drops its loop, its services die with it (reaped,
        // not left as orphans or zombies).
        .kill_children_on_drop(true)
        .build()?)
}

/// One command over the control socket: the reply's lines.
fn ask(path: &Path, command: &str) -> Res<Vec<String>> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    writeln!(s, "{command}")?;
    let mut lines = Vec::new();
    for line in BufReader::new(s).lines() {
        let line = line?;
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    Ok(lines)
}

/// The children of this process that `/proc` still lists (zombies included).
fn children_in_proc() -> Vec<(u32, char)> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = &s[s.rfind(')')? + 2..];
            let mut f = rest.split(' ');
            let state = f.next()?.chars().next()?;
            let ppid: u32 = f.next()?.parse().ok()?;
            (ppid == me).then_some((pid, state))
        })
        .collect()
}

fn demonstration() -> Res<ExitCode> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("dasynq-supervisor-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sock = dir.join("control.sock");
    let specs = vec![
        Spec::shell("healthy", "exec sleep 1000"),
        Spec::shell("flaky", "exit 3"),
        // Ignores SIGTERM, and starts a process of its own (in its group) that does too.
        Spec::shell(
            "stubborn",
            "trap '' TERM; sleep 1000 & while :; do sleep 0.2; done",
        ),
    ];
    let cfg = Config {
        give_up_after: 4,
        grace: Duration::from_millis(500),
        ..Config::default()
    };
    let lp = build(specs.len())?;
    supervisor::watch_signals(&lp)?;
    supervisor::listen(&lp, &sock)?;
    let mut sup = Supervisor::new(&lp, specs, cfg)?;

    // The operator: a thread that talks to the control socket, as `socat` would, then asks
    // for a shutdown the way an init system does: SIGTERM to the supervisor.
    let sock2 = sock.clone();
    let operator = std::thread::spawn(move || -> Res<Vec<(String, Vec<String>)>> {
        let mut said = Vec::new();
        let mut step = |cmd: &str| -> Res<()> {
            let reply = ask(&sock2, cmd)?;
            said.push((cmd.to_string(), reply));
            Ok(())
        };
        step("status")?;
        std::thread::sleep(Duration::from_millis(300));
        step("stop healthy")?;
        std::thread::sleep(Duration::from_millis(200));
        step("start healthy")?;
        std::thread::sleep(Duration::from_millis(200));
        step("restart healthy")?;
        step("bogus")?;
        // By now flaky has failed 4 times (after 100 + 200 + 400 ms of backoff): given up.
        std::thread::sleep(Duration::from_millis(1000));
        step("status")?;
        let pid = std::process::id();
        let st = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("kill -TERM {pid}"))
            .status()?;
        if !st.success() {
            return Err("kill -TERM failed".into());
        }
        Ok(said)
    });

    sup.run(&lp);
    let said = operator
        .join()
        .map_err(|_| "the operator thread panicked")??;
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_dir(&dir);
    drop(lp);

    println!("control socket conversation:");
    for (cmd, reply) in &said {
        println!("  > {cmd}");
        for line in reply {
            println!("    {line}");
        }
    }
    println!("what happened:");
    for line in &sup.log {
        println!("  {line}");
    }

    // Every pid any service ran as must be gone from /proc (reaped, so not even a zombie).
    let all_pids: Vec<u32> = sup.services.iter().flat_map(|s| s.pids.clone()).collect();
    let lingering: Vec<u32> = all_pids
        .iter()
        .copied()
        .filter(|p| Path::new(&format!("/proc/{p}")).exists())
        .collect();
    let children = children_in_proc();
    let by = |n: &str| sup.services.iter().find(|s| s.spec.name == n);
    let mut checks = vec![
        (
            "every service stopped",
            sup.services.iter().all(|s| s.pid.is_none()),
        ),
        (
            "flaky was given up after 4 quick failures",
            by("flaky").is_some_and(|s| s.quick_failures == 4 && s.starts.len() == 4),
        ),
        (
            "healthy was stopped by SIGTERM",
            by("healthy").is_some_and(|s| {
                s.last_exit.and_then(|e| e.signal()) == Some(Signal::TERM) && s.restarts >= 2
            }),
        ),
        (
            "stubborn ignored SIGTERM and was killed",
            by("stubborn")
                .is_some_and(|s| s.last_exit.and_then(|e| e.signal()) == Some(Signal::KILL)),
        ),
        ("the control socket answered every command", said.len() == 6),
        ("no spawned pid is left in /proc", lingering.is_empty()),
        (
            "no child of this process in /proc (no zombie)",
            children.is_empty(),
        ),
    ];
    let flaky_gave_up = by("flaky").is_some_and(|s| s.state == State::Stopped);
    checks.push(("flaky stayed down", flaky_gave_up));

    println!("report:");
    for s in &sup.services {
        println!(
            "  {:<9} runs {}  restarts {}  last exit {}",
            s.spec.name,
            s.starts.len(),
            s.restarts,
            s.last_exit.map_or("-".to_string(), |e| format!("{e:?}"))
        );
    }
    println!(
        "  signals sent: {} SIGTERM, {} SIGKILL (to process groups); spawns failed: {}",
        sup.terms_sent, sup.kills_sent, sup.spawn_failures
    );
    println!(
        "  pids started: {}; children left in /proc: {:?}",
        all_pids.len(),
        children
    );
    println!("  elapsed: {:.2?}", started.elapsed());
    let mut ok = true;
    for (what, held) in &checks {
        println!("  [{}] {what}", if *held { "ok" } else { "FAILED" });
        ok &= held;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
