//! How the behavioural suite reaches a backend: fds, data, hang-ups and time, for the real
//! kernel and for the simulations.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use dasynq::DefaultBackend;
use dasynq::backend::{Backend, Epoll, Kqueue};
use dasynq::sim::{EpollSim, FaultPlan, Faulty, KqueuePlatform, KqueueSim, Sim, SimWorld};
use dasynq::{ChildStatus, Control, Errno, EventLoop, Flavor, Handler, SigInfo, Signal};

/// A backend under test plus the means to drive it.
pub trait Fixture: Clone + Send + Sync + 'static {
    type B: Backend;
    /// Whether time is virtual: timer counts are then exact at every sample point.
    const EXACT_TIME: bool;
    fn new() -> Self;
    fn backend(&self) -> Self::B;
    fn pipe(&self) -> (OwnedFd, OwnedFd);
    fn socketpair(&self) -> (OwnedFd, OwnedFd);
    fn regular_file(&self) -> OwnedFd;
    /// An fd the backend refuses with EBADF (a closed one).
    fn bad_fd(&self) -> OwnedFd;
    /// Dispose of what `bad_fd` made, once the loop handed it back.
    fn dispose_bad_fd(&self, fd: OwnedFd);
    fn write(&self, fd: BorrowedFd<'_>, n: usize);
    /// Read everything buffered; returns the byte count (0 at end-of-file or when empty).
    fn drain(&self, fd: BorrowedFd<'_>) -> usize;
    /// Close an fd the test owns (its peer sees a hang-up).
    fn hang_up(&self, fd: OwnedFd);
    /// The suite's unit of time ("one second" of the original tests).
    fn unit(&self) -> Duration;
    /// The smallest step for ordering tests ("one nanosecond").
    fn tick(&self) -> Duration;
    /// Let time pass until the loop's clock reads at least `target`.
    fn wait_until<H: Handler, F: Flavor>(&self, lp: &EventLoop<H, Self::B, F>, target: Instant);

    // Signals and processes.

    /// Block `sig` for the loop (the real harness-less binaries block theirs in `main`).
    fn block(&self, sig: Signal);
    /// Whether the platform has real-time signals and `sigqueue` (Linux, FreeBSD, NetBSD).
    /// Elsewhere (macOS, OpenBSD) signals are sent with `kill`: standard signals, no value;
    /// the loop still reports the sender and the rest of the `siginfo`.
    fn queued_signals(&self) -> bool {
        true
    }
    /// A signal that is not blocked here (registration must refuse it).
    fn unblocked_signal(&self) -> Signal;
    /// Whether the kernel is simulated (its signal mask is the simulated process's).
    fn simulated(&self) -> bool {
        true
    }
    /// Send `sig` to this process, with a `sigqueue` value if given.
    fn send(&self, sig: Signal, value: Option<i32>);
    /// A command whose process exits with `code` (real), or any command (simulated).
    fn exit_command(&self, code: i32) -> Command;
    /// A command whose process runs until killed.
    fn sleeper_command(&self) -> Command;
    /// Make a spawned child finish with `code` (the simulation's children exit only when told;
    /// real ones run the command and exit by themselves).
    fn finish(&self, pid: u32, code: i32);
    /// A process that exists but is not a child of this one.
    fn foreign_pid(&self) -> u32;
    /// Start a child the loop is not told about; it exits at once.
    fn start_unwatched(&self) -> u32;
    /// Reap a child the way the program would (`waitpid`), waiting for its exit.
    fn program_reap(&self, pid: u32) -> Result<ChildStatus, Errno>;
    /// Arrange for the next spawn to fail as a missing program does, and give that command.
    fn missing_program(&self) -> Command;
    /// A command whose process starts one more process (in its own process group, whatever
    /// that is) and runs until killed; [`add_group_member`](Self::add_group_member) makes the
    /// member on simulations.
    fn group_leader_command(&self) -> Command;
    /// Simulations: start a process in group `pgid` (the leader's member); real: nothing (the
    /// leader's command starts it).
    fn add_group_member(&self, pgid: u32);
    /// The processes of group `pgid` that are alive (not zombies).
    fn group_members_alive(&self, pgid: u32) -> usize;
    /// Whether process `pid` is alive (running or stopped, not a zombie, not gone).
    fn alive(&self, pid: u32) -> bool;
    /// Whether `pid` is a zombie (exited, not reaped).
    fn zombie(&self, pid: u32) -> bool;
    /// `kill(pid, signal)`, as another process would.
    fn kill_pid(&self, pid: u32, signal: Signal);
}

/// The state letter of `/proc/PID/stat` (`None`: no such process) and its process group.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid pgrp ...": comm may hold spaces and parentheses; the last ')' ends it.
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split(' ');
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, pgrp))
}

pub fn build<X: Fixture, H: Handler, F: Flavor>(fx: &X) -> EventLoop<H, X::B, F> {
    EventLoop::<H, X::B, F>::builder()
        .watchers(256)
        .timers(128)
        .wakers(8)
        .events(64)
        .build_with(fx.backend())
        .expect("build")
}

/// A threaded loop reserved for `runners` concurrent run calls.
pub fn build_runners<X: Fixture, H: Handler>(
    fx: &X,
    runners: usize,
) -> EventLoop<H, X::B, dasynq::Threaded> {
    EventLoop::<H, X::B, dasynq::Threaded>::builder()
        .watchers(256)
        .timers(128)
        .wakers(8)
        .events(64)
        .runners(runners)
        .build_with(fx.backend())
        .expect("build")
}

/// The running kernel (epoll on Linux, kqueue on the BSDs and macOS).
#[derive(Clone, Copy)]
pub struct Real;

impl Fixture for Real {
    type B = DefaultBackend;
    const EXACT_TIME: bool = false;
    fn new() -> Self {
        Real
    }
    fn backend(&self) -> Self::B {
        DefaultBackend::new().expect("kernel backend")
    }
    fn pipe(&self) -> (OwnedFd, OwnedFd) {
        super::portable::pipe()
    }
    fn socketpair(&self) -> (OwnedFd, OwnedFd) {
        super::portable::socketpair()
    }
    fn regular_file(&self) -> OwnedFd {
        let dir = std::env::temp_dir();
        let f = tempfile_in(&dir);
        f.into()
    }
    fn bad_fd(&self) -> OwnedFd {
        // SAFETY (test): 1_000_000 is above the open-file limit, so it names no open fd of
        // this process; the loop hands it back and `dispose_bad_fd` forgets it unclosed.
        unsafe { OwnedFd::from_raw_fd(1_000_000) }
    }
    fn dispose_bad_fd(&self, fd: OwnedFd) {
        std::mem::forget(fd);
    }
    fn write(&self, fd: BorrowedFd<'_>, n: usize) {
        let buf = vec![b'x'; n];
        match rustix::io::write(fd, &buf) {
            Ok(w) => assert_eq!(w, n),
            // The reader is gone (the loop closed it on removal): nothing to deliver.
            Err(rustix::io::Errno::PIPE) => {}
            Err(e) => panic!("write: {e}"),
        }
    }
    fn drain(&self, fd: BorrowedFd<'_>) -> usize {
        let mut total = 0;
        let mut buf = [0u8; 4096];
        loop {
            match rustix::io::read(fd, &mut buf) {
                Ok(0) => return total,
                Ok(k) => total += k,
                Err(_) => return total,
            }
        }
    }
    fn hang_up(&self, fd: OwnedFd) {
        drop(fd);
    }
    fn unit(&self) -> Duration {
        Duration::from_millis(80)
    }
    fn tick(&self) -> Duration {
        Duration::from_millis(3)
    }
    fn wait_until<H: Handler, F: Flavor>(&self, lp: &EventLoop<H, Self::B, F>, target: Instant) {
        let now = Control::now(lp);
        if target > now {
            std::thread::sleep(target - now);
        }
        while Control::now(lp) < target {
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    fn block(&self, sig: Signal) {
        dasynq::block_signals(dasynq::SignalSet::of(&[sig])).expect("block");
    }
    fn queued_signals(&self) -> bool {
        cfg!(all(dasynq_rt_signals, dasynq_sigqueue))
    }
    fn simulated(&self) -> bool {
        false
    }
    fn unblocked_signal(&self) -> Signal {
        // SIGURG's default action is to ignore it: safe to leave unblocked.
        dasynq::unblock_signals(dasynq::SignalSet::of(&[Signal::URG])).expect("unblock");
        Signal::URG
    }
    fn send(&self, sig: Signal, value: Option<i32>) {
        super::portable::send_to_self(sig, value)
    }
    fn exit_command(&self, code: i32) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(format!("exit {code}"));
        c
    }
    fn sleeper_command(&self) -> Command {
        let mut c = Command::new("/bin/sleep");
        c.arg("30");
        c
    }
    fn finish(&self, _pid: u32, _code: i32) {}
    fn foreign_pid(&self) -> u32 {
        1
    }
    fn start_unwatched(&self) -> u32 {
        Command::new("/bin/true").spawn().expect("spawn").id()
    }
    fn program_reap(&self, pid: u32) -> Result<ChildStatus, Errno> {
        let pid = rustix::process::Pid::from_raw(pid as i32).ok_or(Errno::CHILD)?;
        match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, st))) => Ok(match (st.exit_status(), st.terminating_signal()) {
                (Some(c), _) => ChildStatus::Exited(c),
                (None, Some(s)) => ChildStatus::Signaled {
                    signal: Signal::from_raw(s),
                    core_dumped: false,
                },
                _ => ChildStatus::Unknown,
            }),
            Ok(None) => Err(Errno::AGAIN),
            Err(e) => Err(Errno(e.raw_os_error())),
        }
    }
    fn missing_program(&self) -> Command {
        Command::new("/nonexistent/dasynq-no-such-program")
    }
    fn group_leader_command(&self) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg("/bin/sleep 30 & wait");
        c
    }
    fn add_group_member(&self, _pgid: u32) {}
    fn group_members_alive(&self, pgid: u32) -> usize {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0;
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(proc_stat)
            .filter(|&(st, g)| g == pgid && st != 'Z' && st != 'X')
            .count()
    }
    fn alive(&self, pid: u32) -> bool {
        proc_stat(pid).is_some_and(|(st, _)| st != 'Z' && st != 'X')
    }
    fn zombie(&self, pid: u32) -> bool {
        proc_stat(pid).is_some_and(|(st, _)| st == 'Z')
    }
    fn kill_pid(&self, pid: u32, signal: Signal) {
        // SAFETY: a plain system call on a child of this test that it has not reaped.
        let r = unsafe { libc::kill(pid as i32, signal.raw()) };
        assert_eq!(r, 0, "kill");
    }
}

fn tempfile_in(dir: &std::path::Path) -> std::fs::File {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!(
        "dasynq-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .expect("temp file");
    let _ = std::fs::remove_file(&path);
    f
}

/// `si_code` of a `sigqueue` instance (Linux's number: the simulations run on Linux).
const SI_QUEUE: i32 = -1;

fn sim_write<X>(w: &SimWorld<X>, fd: BorrowedFd<'_>, n: usize) {
    match w.write(&fd.as_raw_fd(), n as u64) {
        Ok(put) => assert_eq!(put, n as u64),
        Err(dasynq::Errno::PIPE) => {}
        Err(e) => panic!("sim write: {e}"),
    }
}

fn sim_drain<X>(w: &SimWorld<X>, fd: BorrowedFd<'_>) -> usize {
    w.read(&fd.as_raw_fd(), u64::MAX).unwrap_or(0) as usize
}

macro_rules! sim_fixture {
    ($name:ident, $world:ty, $new:path, $backend:ty, $make:path, $queued:literal) => {
        /// The simulated kernel, and the fault plan of the `Faulty` wrapper its backends run
        /// on.
        #[derive(Clone)]
        pub struct $name(pub $world, pub FaultPlan);

        impl Fixture for $name {
            type B = $backend;
            const EXACT_TIME: bool = true;
            fn new() -> Self {
                $name($new(), FaultPlan::default())
            }
            fn backend(&self) -> Self::B {
                $make(Faulty::with_plan(self.0.clone(), self.1.clone()))
            }
            fn pipe(&self) -> (OwnedFd, OwnedFd) {
                self.0.pipe().expect("sim pipe")
            }
            fn socketpair(&self) -> (OwnedFd, OwnedFd) {
                self.0.socketpair().expect("sim socketpair")
            }
            fn regular_file(&self) -> OwnedFd {
                self.0.regular_file().expect("sim file")
            }
            fn bad_fd(&self) -> OwnedFd {
                let (r, _w) = self.0.pipe().expect("sim pipe");
                self.0.close(&r);
                r
            }
            fn dispose_bad_fd(&self, fd: OwnedFd) {
                drop(fd);
            }
            fn write(&self, fd: BorrowedFd<'_>, n: usize) {
                sim_write(&self.0, fd, n)
            }
            fn drain(&self, fd: BorrowedFd<'_>) -> usize {
                sim_drain(&self.0, fd)
            }
            fn hang_up(&self, fd: OwnedFd) {
                self.0.close(&fd);
                drop(fd);
            }
            fn unit(&self) -> Duration {
                Duration::from_secs(1)
            }
            fn tick(&self) -> Duration {
                Duration::from_nanos(1)
            }
            fn wait_until<H: Handler, F: Flavor>(
                &self,
                lp: &EventLoop<H, Self::B, F>,
                target: Instant,
            ) {
                let now = Control::now(lp);
                if target > now {
                    self.0.advance(target - now);
                }
            }

            fn queued_signals(&self) -> bool {
                $queued
            }
            fn block(&self, sig: Signal) {
                self.0.block_signal(sig);
            }
            fn unblocked_signal(&self) -> Signal {
                Signal::URG
            }
            fn send(&self, sig: Signal, value: Option<i32>) {
                let info = match value {
                    // SI_QUEUE, from this process (where there is `sigqueue`).
                    Some(v) if $queued => SigInfo::new(sig)
                        .with_code(SI_QUEUE)
                        .with_value(v as u32 as u64),
                    // `kill`: no value.
                    _ => SigInfo::new(sig),
                };
                self.0
                    .raise(info.with_sender(std::process::id() as i32, 0))
                    .expect("raise");
            }
            fn exit_command(&self, _code: i32) -> Command {
                Command::new("simulated")
            }
            fn sleeper_command(&self) -> Command {
                Command::new("simulated")
            }
            fn finish(&self, pid: u32, code: i32) {
                self.0
                    .exit_child(pid, ChildStatus::Exited(code))
                    .expect("exit");
            }
            fn foreign_pid(&self) -> u32 {
                self.0.spawn_foreign().expect("foreign")
            }
            fn start_unwatched(&self) -> u32 {
                let pid = self.0.spawn_child().expect("spawn");
                self.0
                    .exit_child(pid, ChildStatus::Exited(0))
                    .expect("exit");
                pid
            }
            fn program_reap(&self, pid: u32) -> Result<ChildStatus, Errno> {
                self.0.reap(pid)?.ok_or(Errno::AGAIN)
            }
            fn missing_program(&self) -> Command {
                // Every later spawn of this program fails, as exec fails for a missing one.
                let _ = self
                    .0
                    .fail_spawns_of("/nonexistent/dasynq-no-such-program", Errno::NOENT);
                Command::new("/nonexistent/dasynq-no-such-program")
            }
            fn group_leader_command(&self) -> Command {
                Command::new("simulated")
            }
            fn add_group_member(&self, pgid: u32) {
                self.0.spawn_in_group(pgid).expect("member");
            }
            fn group_members_alive(&self, pgid: u32) -> usize {
                self.0.group_members(pgid).len()
            }
            fn alive(&self, pid: u32) -> bool {
                self.0.is_running(pid)
            }
            fn zombie(&self, pid: u32) -> bool {
                self.0.is_zombie(pid)
            }
            fn kill_pid(&self, pid: u32, signal: Signal) {
                self.0.kill(pid, signal).expect("kill");
            }
        }
    };
}

fn new_sim() -> Sim {
    Sim::new()
}
fn new_epoll_sim() -> EpollSim {
    EpollSim::new()
}
fn kq_freebsd() -> KqueueSim {
    KqueueSim::for_platform(KqueuePlatform::FreeBsd)
}
fn kq_macos() -> KqueueSim {
    KqueueSim::for_platform(KqueuePlatform::MacOs)
}
fn kq_openbsd() -> KqueueSim {
    KqueueSim::for_platform(KqueuePlatform::OpenBsd)
}
fn kq_backend(w: Faulty<KqueueSim>) -> Kqueue<Faulty<KqueueSim>> {
    Kqueue::with_kernel(w).expect("sim kqueue")
}
fn epoll_backend(w: Faulty<EpollSim>) -> Epoll<Faulty<EpollSim>> {
    Epoll::with_kernel(w).expect("sim epoll")
}
fn sim_backend(w: Faulty<Sim>) -> Faulty<Sim> {
    w
}

sim_fixture!(SimFx, Sim, new_sim, Faulty<Sim>, sim_backend, true);
sim_fixture!(
    EpollSimFx,
    EpollSim,
    new_epoll_sim,
    Epoll<Faulty<EpollSim>>,
    epoll_backend,
    true
);
sim_fixture!(
    KqueueFreeBsdFx,
    KqueueSim,
    kq_freebsd,
    Kqueue<Faulty<KqueueSim>>,
    kq_backend,
    true
);
sim_fixture!(
    KqueueMacOsFx,
    KqueueSim,
    kq_macos,
    Kqueue<Faulty<KqueueSim>>,
    kq_backend,
    false
);
sim_fixture!(
    KqueueOpenBsdFx,
    KqueueSim,
    kq_openbsd,
    Kqueue<Faulty<KqueueSim>>,
    kq_backend,
    false
);
