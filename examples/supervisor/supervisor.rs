//! The supervisor's logic, generic over the loop's backend, so that `tests/supervisor_sim.rs`
//! runs it on `dasynq::sim::Sim` in virtual time (backoff schedule, giving up, TERM -> KILL
//! escalation) and `main.rs` on the real kernel.
//!
//! Each service owns three watchers, all registered at startup so nothing it does later can
//! fail for capacity: a child reservation (every start and restart spawns into it), a restart
//! timer (the backoff) and a grace timer (`SIGTERM`, then `SIGKILL` when the grace ends).
//! Every service is started as the leader of its own process group, and stopped by
//! signalling the group, so what a service started dies with it.

use std::ffi::OsString;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dasynq::backend::Backend;
use dasynq::{
    ChildStatus, Clock, Control, Cx, Deadline, Event, EventLoop, FdOptions, Handler, Interest,
    Priority, Rearm, Signal, SignalChildError, SpawnError, SpawnOptions, WatchId,
};

/// The timing rules.
#[derive(Copy, Clone, Debug)]
pub struct Config {
    /// The first restart's delay; each quick failure doubles it.
    pub backoff_start: Duration,
    /// The longest delay.
    pub backoff_cap: Duration,
    /// A run at least this long was healthy: the next restart is quick again.
    pub stable_after: Duration,
    /// Quick failures in a row after which the service is given up.
    pub give_up_after: u32,
    /// How long a stopping service has between `SIGTERM` and `SIGKILL`.
    pub grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backoff_start: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(5),
            stable_after: Duration::from_secs(2),
            give_up_after: 5,
            grace: Duration::from_secs(1),
        }
    }
}

/// A service: a name and the program to run.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Its name (in commands and the status table).
    pub name: String,
    /// The program.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
}

impl Spec {
    /// A service that runs `line` through `/bin/sh -c`.
    pub fn shell(name: &str, line: &str) -> Spec {
        Spec {
            name: name.to_string(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), line.into()],
        }
    }
}

/// Where a service is.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum State {
    /// Its process runs.
    Running,
    /// It failed; the restart timer will start it again.
    Backoff,
    /// `SIGTERM` sent; `SIGKILL` follows when the grace ends.
    Stopping,
    /// Stopped on purpose (a command, or shutdown).
    Stopped,
    /// Failed too often in a row; only `start` brings it back.
    GaveUp,
}

/// One service's state and history.
#[derive(Debug)]
pub struct Service {
    /// What it runs.
    pub spec: Spec,
    /// Where it is.
    pub state: State,
    /// Its process while it has one.
    pub pid: Option<u32>,
    /// Every pid it ran as (the demonstration checks each was reaped).
    pub pids: Vec<u32>,
    /// The delay before the next restart after a quick failure.
    pub backoff: Duration,
    /// Quick failures in a row.
    pub quick_failures: u32,
    /// Starts after the first.
    pub restarts: u32,
    /// How its last process ended.
    pub last_exit: Option<ChildStatus>,
    /// When each start happened (the loop's clock).
    pub starts: Vec<Instant>,
    /// When its current process started.
    started_at: Option<Instant>,
    /// Start again once the process being stopped has exited (`restart`).
    restart_after_stop: bool,
    child: WatchId,
    restart_timer: WatchId,
    grace_timer: WatchId,
}

/// The supervisor: every service, the rules, and what happened.
#[derive(Debug)]
pub struct Supervisor {
    /// The services, in the order given.
    pub services: Vec<Service>,
    /// The timing rules.
    pub cfg: Config,
    /// SIGTERM or SIGINT came: stop everything, then stop the loop.
    pub shutting_down: bool,
    /// `SIGTERM`s sent (to a service's process group).
    pub terms_sent: u32,
    /// `SIGKILL`s sent (to a service's process group).
    pub kills_sent: u32,
    /// Spawns that failed (a missing program, say): counted as quick failures.
    pub spawn_failures: u32,
    /// What happened, one line each, for the report.
    pub log: Vec<String>,
}

/// Every handler of the supervisor's loop.
pub enum W {
    /// Service `i`'s child reservation.
    Child(usize),
    /// Service `i`'s restart (backoff) timer.
    Restart(usize),
    /// Service `i`'s grace timer.
    Grace(usize),
    /// `SIGTERM`, `SIGINT`, `SIGHUP`.
    Signal,
    /// The control socket.
    Listener,
    /// A control connection, with the part of a line not yet complete.
    Conn(Vec<u8>),
}

impl Handler for W {
    type Data = Supervisor;
    fn on_event(&mut self, cx: &Cx<'_, W>, sup: &mut Supervisor, ev: Event<'_>) -> Rearm {
        match (self, ev) {
            (W::Child(i), Event::Child { status, .. }) => sup.exited(cx, *i, status),
            (W::Restart(i), Event::Timer { .. })
                if sup.services[*i].state == State::Backoff && !sup.shutting_down =>
            {
                sup.start(cx, *i)
            }
            (W::Grace(i), Event::Timer { .. }) => sup.grace_over(cx, *i),
            (W::Signal, Event::Signal(info)) => match info.signal() {
                Signal::HUP => {
                    for line in sup.status_lines() {
                        println!("[HUP] {line}");
                    }
                }
                _ => sup.shutdown(cx),
            },
            (W::Listener, ev) => {
                if let Some(l) = ev.view::<UnixListener>() {
                    while let Ok((conn, _)) = l.accept() {
                        let _ = conn.set_nonblocking(true);
                        if cx
                            .add_fd(
                                conn.into(),
                                Interest::READ,
                                FdOptions::new(),
                                W::Conn(vec![]),
                            )
                            .is_err()
                        {
                            // No slot: the connection is dropped (closed); the client retries.
                        }
                    }
                }
            }
            (W::Conn(pending), ev) => return sup.serve(cx, pending, ev),
            _ => {}
        }
        Rearm::Rearm
    }
}

impl Supervisor {
    /// Register every service's watchers (three each) on `lp`, then start them all.
    pub fn new<B: Backend>(
        lp: &EventLoop<W, B>,
        specs: Vec<Spec>,
        cfg: Config,
    ) -> Result<Supervisor, Box<dyn std::error::Error + Send + Sync>> {
        let mut services = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            let child = lp.reserve_child(Priority::DEFAULT, W::Child(i))?;
            let restart_timer = lp.add_timer(Clock::Monotonic, Priority::DEFAULT, W::Restart(i))?;
            let grace_timer = lp.add_timer(Clock::Monotonic, Priority::DEFAULT, W::Grace(i))?;
            services.push(Service {
                spec,
                state: State::Stopped,
                pid: None,
                pids: Vec::new(),
                backoff: cfg.backoff_start,
                quick_failures: 0,
                restarts: 0,
                last_exit: None,
                starts: Vec::new(),
                started_at: None,
                restart_after_stop: false,
                child,
                restart_timer,
                grace_timer,
            });
        }
        let mut sup = Supervisor {
            services,
            cfg,
            shutting_down: false,
            terms_sent: 0,
            kills_sent: 0,
            spawn_failures: 0,
            log: Vec::new(),
        };
        for i in 0..sup.services.len() {
            sup.start(lp, i);
        }
        Ok(sup)
    }

    /// Start service `i`'s process into its reservation.
    fn start(&mut self, cx: &impl Control<W>, i: usize) {
        let s = &mut self.services[i];
        let mut cmd = Command::new(&s.spec.program);
        cmd.args(&s.spec.args).stdin(Stdio::null());
        if !s.starts.is_empty() {
            s.restarts += 1;
        }
        let now = cx.now();
        s.starts.push(now);
        // Its own process group, so that stopping it reaches what it started.
        match cx.spawn_into(s.child, cmd, SpawnOptions::new().new_process_group()) {
            Ok(sp) => {
                s.state = State::Running;
                s.pid = Some(sp.pid);
                s.pids.push(sp.pid);
                s.started_at = Some(now);
                let line = format!("{}: started as pid {}", s.spec.name, sp.pid);
                self.log.push(line);
            }
            Err(SpawnError::Spawn { errno }) => {
                // The program could not run: a quick failure like any other.
                self.spawn_failures += 1;
                self.log
                    .push(format!("{}: could not start: {errno}", s.spec.name));
                self.failed(cx, i);
            }
            Err(e) => self.log.push(format!("{}: {e}", s.spec.name)),
        }
    }

    /// A quick failure (or a spawn that failed): back off, or give up.
    fn failed(&mut self, cx: &impl Control<W>, i: usize) {
        let cfg = self.cfg;
        let s = &mut self.services[i];
        s.quick_failures += 1;
        if s.quick_failures >= cfg.give_up_after {
            s.state = State::GaveUp;
            let line = format!(
                "{}: gave up after {} quick failures in a row",
                s.spec.name, s.quick_failures
            );
            self.log.push(line);
            return;
        }
        s.state = State::Backoff;
        let delay = s.backoff;
        s.backoff = (s.backoff * 2).min(cfg.backoff_cap);
        // Registered at startup: arming cannot fail.
        let _ = cx.arm_timer(s.restart_timer, Deadline::After(delay), None);
        let line = format!("{}: restarting in {delay:?}", s.spec.name);
        self.log.push(line);
    }

    /// Service `i`'s process ended with `status`.
    fn exited(&mut self, cx: &impl Control<W>, i: usize, status: ChildStatus) {
        let now = cx.now();
        let cfg = self.cfg;
        let s = &mut self.services[i];
        s.pid = None;
        s.last_exit = Some(status);
        let ran = s.started_at.take().map_or(Duration::ZERO, |t| now - t);
        self.log.push(format!(
            "{}: exited ({status:?}) after {ran:?}",
            s.spec.name
        ));
        let s = &mut self.services[i];
        let _ = cx.stop_timer(s.grace_timer);
        if s.state == State::Stopping || self.shutting_down {
            s.state = State::Stopped;
            if std::mem::take(&mut s.restart_after_stop) && !self.shutting_down {
                s.quick_failures = 0;
                s.backoff = cfg.backoff_start;
                self.start(cx, i);
            }
        } else if ran >= cfg.stable_after {
            // It ran long enough: healthy, so the next restart is quick again.
            s.quick_failures = 0;
            s.backoff = cfg.backoff_start;
            self.failed(cx, i);
        } else {
            self.failed(cx, i);
        }
        if self.shutting_down && self.services.iter().all(|s| s.pid.is_none()) {
            cx.stop();
        }
    }

    /// Send `signal` to service `i`'s process group (its process if it leads none).
    fn signal(&mut self, cx: &impl Control<W>, i: usize, signal: Signal) {
        let s = &self.services[i];
        let r = match cx.signal_child_group(s.child, signal) {
            Err(SignalChildError::NotGroupLeader) => cx.signal_child(s.child, signal),
            r => r,
        };
        match r {
            Ok(()) => {
                if signal == Signal::KILL {
                    self.kills_sent += 1;
                } else {
                    self.terms_sent += 1;
                }
                self.log.push(format!("{}: sent {signal:?}", s.spec.name));
            }
            // Exited meanwhile: its exit is on its way.
            Err(SignalChildError::Gone) => {}
            Err(e) => self.log.push(format!("{}: {signal:?}: {e}", s.spec.name)),
        }
    }

    /// Stop service `i`: `SIGTERM` now, `SIGKILL` when the grace ends.
    fn stop(&mut self, cx: &impl Control<W>, i: usize) {
        match self.services[i].state {
            State::Running => {
                self.services[i].state = State::Stopping;
                self.signal(cx, i, Signal::TERM);
                let grace = self.cfg.grace;
                let _ = cx.arm_timer(self.services[i].grace_timer, Deadline::After(grace), None);
            }
            State::Backoff | State::GaveUp => {
                let _ = cx.stop_timer(self.services[i].restart_timer);
                self.services[i].state = State::Stopped;
            }
            State::Stopping | State::Stopped => {}
        }
    }

    fn grace_over(&mut self, cx: &impl Control<W>, i: usize) {
        if self.services[i].state == State::Stopping && self.services[i].pid.is_some() {
            self.signal(cx, i, Signal::KILL);
        }
    }

    /// SIGTERM or SIGINT: stop every service; the loop stops once all have exited.
    pub fn shutdown(&mut self, cx: &impl Control<W>) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.log.push("shutting down".to_string());
        for i in 0..self.services.len() {
            self.stop(cx, i);
        }
        if self.services.iter().all(|s| s.pid.is_none()) {
            cx.stop();
        }
    }

    /// Shut down, every service exited: the run loop ends.
    pub fn finished(&self) -> bool {
        self.shutting_down && self.services.iter().all(|s| s.pid.is_none())
    }

    /// Run `lp` until [`finished`](Self::finished) (each run call returns after a batch).
    pub fn run<B: Backend>(&mut self, lp: &EventLoop<W, B>) {
        while !self.finished() {
            lp.run_with(self);
        }
    }

    /// One line per service.
    pub fn status_lines(&self) -> Vec<String> {
        self.services
            .iter()
            .map(|s| {
                let pid = s.pid.map_or("-".to_string(), |p| p.to_string());
                let last = s.last_exit.map_or("-".to_string(), |e| format!("{e:?}"));
                format!(
                    "{} {:?} pid={pid} restarts={} last={last}",
                    s.spec.name, s.state, s.restarts
                )
            })
            .collect()
    }

    /// Carry out one control command (`status`, `stop NAME`, `start NAME`, `restart NAME`):
    /// the reply, one line per service (or one `error:` line).
    pub fn command(&mut self, cx: &impl Control<W>, line: &str) -> Vec<String> {
        let mut words = line.split_whitespace();
        let (verb, name) = (words.next().unwrap_or(""), words.next());
        if verb == "status" {
            return self.status_lines();
        }
        let Some(i) = name.and_then(|n| self.services.iter().position(|s| s.spec.name == n)) else {
            return vec![format!(
                "error: expected status, stop NAME, start NAME or restart NAME with a known \
                 NAME; got {line:?}"
            )];
        };
        if self.shutting_down {
            return vec!["error: shutting down".to_string()];
        }
        match verb {
            "stop" => self.stop(cx, i),
            "start" => {
                if matches!(self.services[i].state, State::Stopped | State::GaveUp) {
                    let s = &mut self.services[i];
                    s.quick_failures = 0;
                    s.backoff = self.cfg.backoff_start;
                    self.start(cx, i);
                }
            }
            "restart" => match self.services[i].state {
                State::Running => {
                    self.services[i].restart_after_stop = true;
                    self.stop(cx, i);
                }
                State::Stopping => self.services[i].restart_after_stop = true,
                _ => {
                    let _ = cx.stop_timer(self.services[i].restart_timer);
                    let s = &mut self.services[i];
                    s.quick_failures = 0;
                    s.backoff = self.cfg.backoff_start;
                    self.start(cx, i);
                }
            },
            _ => return vec![format!("error: unknown command {verb:?}")],
        }
        self.log.push(format!("control: {line}"));
        self.status_lines()
    }

    /// A control connection is readable: answer each complete line; the reply ends with an
    /// empty line.
    fn serve(&mut self, cx: &Cx<'_, W>, pending: &mut Vec<u8>, ev: Event<'_>) -> Rearm {
        let Some(mut conn) = ev.view::<UnixStream>() else {
            return Rearm::Remove;
        };
        let mut buf = [0u8; 512];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => return Rearm::Remove,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Rearm::Remove,
            }
            if pending.len() > 4096 {
                // Not a line-sized command: a misbehaving client.
                return Rearm::Remove;
            }
        }
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line).trim().to_string();
            let mut reply = self.command(cx, &line).join("\n");
            reply.push_str("\n\n");
            // Replies are a few hundred bytes: the socket buffer takes them whole.
            if conn.write_all(reply.as_bytes()).is_err() {
                return Rearm::Remove;
            }
        }
        Rearm::Rearm
    }
}

/// Register the control socket's listener (unix stream, non-blocking) on `lp`.
pub fn listen<B: Backend>(lp: &EventLoop<W, B>, path: &std::path::Path) -> std::io::Result<()> {
    let l = UnixListener::bind(path)?;
    l.set_nonblocking(true)?;
    lp.add_fd(l.into(), Interest::READ, FdOptions::new(), W::Listener)
        .map_err(|e| std::io::Error::other(e.error().to_string()))?;
    Ok(())
}

/// Register the watchers of `SIGTERM`, `SIGINT` and `SIGHUP` (they must be blocked in every
/// thread first: `dasynq::block_signals` at the top of `main`).
pub fn watch_signals<B: Backend>(lp: &EventLoop<W, B>) -> Result<(), dasynq::Error> {
    for sig in [Signal::TERM, Signal::INT, Signal::HUP] {
        lp.add_signal(sig, Priority::HIGH, W::Signal)
            .map_err(|e| e.error())?;
    }
    Ok(())
}
