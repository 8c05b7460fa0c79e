//! The supervisor demonstration's logic (`examples/supervisor/supervisor.rs`) on the `Sim`
//! backend, in virtual time: the backoff schedule, giving up, a run that lasted resetting
//! the backoff, TERM -> grace -> KILL escalation for a service that ignores `SIGTERM`, the
//! control commands, and what the simulated children were started as.

#[allow(dead_code)]
#[path = "../examples/supervisor/supervisor.rs"]
mod supervisor;

use std::time::{Duration, Instant};

use dasynq::sim::{Sim, SimDisposition};
use dasynq::{ChildStatus, EventLoop, Signal};
use supervisor::{Config, Spec, State, Supervisor, W};

fn setup(specs: Vec<Spec>, cfg: Config) -> (Sim, EventLoop<W, Sim>, Supervisor) {
    let sim = Sim::new();
    for sig in [Signal::TERM, Signal::INT, Signal::HUP] {
        sim.block_signal(sig);
    }
    let lp = EventLoop::<W, Sim>::builder()
        .watchers(32)
        .timers(16)
        .build_with(sim.clone())
        .expect("build");
    supervisor::watch_signals(&lp).expect("signals");
    let sup = Supervisor::new(&lp, specs, cfg).expect("supervisor");
    (sim, lp, sup)
}

/// Run the loop for `d` of virtual time.
fn run_for(lp: &EventLoop<W, Sim>, sup: &mut Supervisor, d: Duration) {
    let end = lp.now() + d;
    while lp.now() < end {
        lp.run_timeout_with(end - lp.now(), sup);
    }
}

fn offsets(starts: &[Instant]) -> Vec<Duration> {
    starts.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn backoff_doubles_from_100ms_up_to_the_cap_then_gives_up() {
    let cfg = Config {
        backoff_cap: Duration::from_millis(800),
        give_up_after: 6,
        ..Config::default()
    };
    let (sim, lp, mut sup) = setup(vec![Spec::shell("flaky", "exit 3")], cfg);
    // Each start fails at once, in virtual time.
    for _ in 0..80 {
        if let Some(pid) = sup.services[0].pid {
            sim.exit_child(pid, ChildStatus::Exited(3)).unwrap();
        }
        run_for(&lp, &mut sup, Duration::from_millis(50));
    }
    let s = &sup.services[0];
    assert_eq!(s.state, State::GaveUp);
    assert_eq!(s.starts.len(), 6, "given up after the sixth quick failure");
    let ms = |n| Duration::from_millis(n);
    // Each delay is the backoff plus at most the 50 ms step in which the failure was seen.
    let got = offsets(&s.starts);
    let want = [ms(100), ms(200), ms(400), ms(800), ms(800)];
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(
            *g >= w && *g <= w + ms(50),
            "delays {got:?}, want {want:?} (+<=50 ms)"
        );
    }
    assert_eq!(s.last_exit, Some(ChildStatus::Exited(3)));
    // Given up: nothing restarts it.
    run_for(&lp, &mut sup, Duration::from_secs(10));
    assert_eq!(sup.services[0].starts.len(), 6);
    // `start` brings it back with a fresh backoff.
    let reply = sup.command(&lp, "start flaky");
    assert_eq!(sup.services[0].state, State::Running, "{reply:?}");
    assert_eq!(sup.services[0].quick_failures, 0);
}

#[test]
fn a_run_that_lasted_resets_the_backoff() {
    let (sim, lp, mut sup) = setup(vec![Spec::shell("svc", "run")], Config::default());
    let fail = |sup: &mut Supervisor| {
        let pid = sup.services[0].pid.expect("running");
        sim.exit_child(pid, ChildStatus::Exited(1)).unwrap();
    };
    // Three quick failures: the backoff grows to 800 ms.
    for _ in 0..3 {
        fail(&mut sup);
        run_for(&lp, &mut sup, Duration::from_secs(1));
    }
    assert_eq!(sup.services[0].quick_failures, 3);
    assert_eq!(sup.services[0].backoff, Duration::from_millis(800));
    // Now it runs for 3 s (longer than `stable_after`) before failing: restarted after 100 ms.
    run_for(&lp, &mut sup, Duration::from_secs(3));
    fail(&mut sup);
    let before = sup.services[0].starts.len();
    run_for(&lp, &mut sup, Duration::from_millis(99));
    assert_eq!(sup.services[0].starts.len(), before, "not before 100 ms");
    run_for(&lp, &mut sup, Duration::from_millis(2));
    assert_eq!(sup.services[0].starts.len(), before + 1, "at 100 ms");
    assert_eq!(sup.services[0].quick_failures, 1);
}

#[test]
fn sigterm_stops_every_service_and_kills_the_one_that_ignores_it() {
    let cfg = Config {
        grace: Duration::from_millis(500),
        ..Config::default()
    };
    let specs = vec![
        Spec::shell("polite", "exec sleep 1000"),
        Spec::shell("stubborn", "trap '' TERM; sleep 1000"),
    ];
    let (sim, lp, mut sup) = setup(specs, cfg);
    let polite = sup.services[0].pid.unwrap();
    let stubborn = sup.services[1].pid.unwrap();
    // What was started, as the simulated kernel saw it: the command, a group of its own,
    // a clean signal state.
    let cmd = sim.child_command(stubborn).unwrap();
    assert_eq!(cmd.program, "/bin/sh");
    assert_eq!(cmd.args, ["-c", "trap '' TERM; sleep 1000"]);
    assert!(cmd.new_group && cmd.clean_signals);
    assert_eq!(sim.process_group(stubborn), Ok(stubborn));
    // A process the stubborn service started, in its group.
    let grandchild = sim.spawn_in_group(stubborn).unwrap();
    sim.set_disposition(stubborn, Signal::TERM, SimDisposition::Ignore)
        .unwrap();
    sim.set_disposition(grandchild, Signal::TERM, SimDisposition::Ignore)
        .unwrap();
    run_for(&lp, &mut sup, Duration::from_secs(1));

    // The init system's SIGTERM, to the supervisor.
    sim.raise(dasynq::SigInfo::new(Signal::TERM)).unwrap();
    let t0 = lp.now();
    sup.run(&lp); // returns once every service has exited
    let took = lp.now() - t0;
    assert!(sup.shutting_down);
    assert_eq!(
        sup.services[0].last_exit.and_then(|e| e.signal()),
        Some(Signal::TERM)
    );
    assert_eq!(
        sup.services[1].last_exit.and_then(|e| e.signal()),
        Some(Signal::KILL)
    );
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(600),
        "KILL when the grace ended: {took:?}"
    );
    assert_eq!(sim.signals_received(polite), [Signal::TERM]);
    assert_eq!(sim.signals_received(stubborn), [Signal::TERM, Signal::KILL]);
    assert_eq!(
        sim.signals_received(grandchild),
        [Signal::TERM, Signal::KILL],
        "the group signal reached what the service started"
    );
    assert!(!sim.is_running(grandchild));
    assert_eq!((sup.terms_sent, sup.kills_sent), (2, 1));
    assert!(sup.services.iter().all(|s| s.state == State::Stopped));
    // Reaped by the loop: nothing left for the program.
    for pid in [polite, stubborn] {
        assert!(!sim.is_zombie(pid));
        assert!(sim.reap(pid).is_err());
    }
}

#[test]
fn control_commands_stop_start_and_restart() {
    let (sim, lp, mut sup) = setup(
        vec![Spec::shell("a", "exec a"), Spec::shell("b", "exec b")],
        Config::default(),
    );
    let first = sup.services[0].pid.unwrap();
    let status = sup.command(&lp, "status");
    assert_eq!(status.len(), 2, "one line per service: {status:?}");
    assert!(status[0].starts_with(&format!("a Running pid={first} restarts=0")));
    // stop: TERM, Stopping until the exit comes, then Stopped (no restart).
    sup.command(&lp, "stop a");
    assert_eq!(sup.services[0].state, State::Stopping);
    run_for(&lp, &mut sup, Duration::from_millis(10));
    assert_eq!(sup.services[0].state, State::Stopped);
    assert_eq!(
        sup.services[0].last_exit,
        Some(ChildStatus::Signaled {
            signal: Signal::TERM,
            core_dumped: false
        })
    );
    run_for(&lp, &mut sup, Duration::from_secs(5));
    assert_eq!(
        sup.services[0].starts.len(),
        1,
        "a stopped service stays stopped"
    );
    // start, then restart: a new process each time, in the same reservation.
    sup.command(&lp, "start a");
    let second = sup.services[0].pid.unwrap();
    sup.command(&lp, "restart a");
    run_for(&lp, &mut sup, Duration::from_millis(10));
    let third = sup.services[0].pid.unwrap();
    assert!(first != second && second != third && first != third);
    assert!(!sim.is_running(second));
    assert_eq!(sup.services[0].restarts, 2);
    assert_eq!(
        lp.usage().watchers,
        2 * 3 + 3,
        "no slot taken by any restart"
    );
    // Bad input: one error line.
    for bad in ["stop", "stop nosuch", "frobnicate a", ""] {
        let r = sup.command(&lp, bad);
        assert!(r.len() == 1 && r[0].starts_with("error:"), "{bad:?}: {r:?}");
    }
}

#[test]
fn a_service_whose_program_cannot_start_backs_off_like_a_failure() {
    let (sim, lp, sup) = setup(vec![], Config::default());
    drop(sup);
    sim.fail_spawns_of("/bin/sh", dasynq::Errno::NOENT).unwrap();
    let cfg = Config {
        give_up_after: 3,
        ..Config::default()
    };
    let lp2 = lp;
    let mut sup = Supervisor::new(&lp2, vec![Spec::shell("missing", "x")], cfg).unwrap();
    assert_eq!(sup.services[0].state, State::Backoff);
    run_for(&lp2, &mut sup, Duration::from_secs(2));
    assert_eq!(sup.services[0].state, State::GaveUp);
    assert_eq!(sup.spawn_failures, 3);
    assert_eq!(sup.services[0].pids.len(), 0);
}
