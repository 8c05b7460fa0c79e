//! An echo server on loopback with per-connection idle timers.
//!
//! With no arguments this is a self-contained demonstration: it starts the server on
//! 127.0.0.1 in one thread, then client threads, each running its own dasynq loop, open 1,000
//! connections at once, send a fixed pattern through every one of them, and verify every byte
//! that comes back. A few extra connections stay silent: the server's idle timers must close
//! them. It prints a short report and exits 0 only if everything was verified.
//!
//! ```text
//! cargo run --release --example echo                  # the demonstration
//! cargo run --release --example echo -- --connections 2000 --bytes 131072 --threads 2
//! cargo run --release --example echo -- --runners 4   # the server run by 4 threads at once
//! cargo run --release --example echo -- --listen 127.0.0.1:7000   # a plain server
//! ```
//!
//! What it shows: one handler enum per loop; the loop owning every fd (handlers read, write
//! and accept through typed views of the fd in the event, `ev.view::<TcpStream>()`); program
//! state lent to the handlers by the run call (`Handler::Data`: one `Runner` per run call,
//! with counters, the listener's spare fd and the ids known only after registration); an fd
//! watcher switching between read and write interest; a timer per connection, re-armed on
//! activity and removed with it; a listener that refuses connections cleanly at the open-file
//! limit and backs off instead of spinning; bidirectional watchers on the client side; a wake
//! watcher to stop a loop from another thread; with `--runners N`, the same server handlers on
//! one `ThreadedLoop` that N threads run at once, each with its own `Runner`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use dasynq::{
    BidiOptions, Clock, Cx, Deadline, Event, EventLoop, FdOptions, Flavor, Handler, Interest,
    Priority, Rearm, Removed, Single, SpareFd, Threaded, WatchId,
};

/// Bytes a connection buffers on the server when the client is slow to read.
const BUF: usize = 4096;

/// How long the listener rests after an accept failure it cannot clear by itself.
const BACKOFF: Duration = Duration::from_millis(100);

// ------------------------------------------------------------------------------------ server

/// Counts across every runner (atomics: with `--runners N` the handlers run on N threads).
#[derive(Default)]
pub struct Shared {
    open: AtomicUsize,
    peak: AtomicUsize,
}

/// What each run call lends the server's handlers: its own counters, its own spare fd, and
/// the ids the handlers need that exist only after registration. One per runner thread.
pub struct Runner {
    shared: Arc<Shared>,
    listener: WatchId,
    resume: WatchId,
    spare: SpareFd,
    events: u64,
    idle_closed: usize,
    refused: usize,
    backoffs: usize,
}

// Each slot of the loop's handler table holds a whole connection, buffer included: the
// server allocates nothing per connection.
#[allow(
    clippy::large_enum_variant,
    reason = "fixed per-slot storage is the point"
)]
pub enum Server {
    Listener {
        idle: Duration,
    },
    Conn {
        buf: [u8; BUF],
        start: usize,
        end: usize,
        timer: Option<WatchId>,
        idle: Duration,
    },
    Idle {
        conn: WatchId,
    },
    /// Re-enables the listener after it backed off.
    Resume,
    Shutdown,
}

impl Server {
    /// Accept what is waiting. Returns what the listener's handler answers: re-armed, or
    /// disabled for [`BACKOFF`] when accepting failed in a way only time can clear.
    fn accept_all(
        cx: &Cx<'_, Self>,
        run: &mut Runner,
        listener: &TcpListener,
        idle: Duration,
    ) -> Rearm {
        loop {
            match listener.accept() {
                Ok((conn, _)) => {
                    if conn.set_nonblocking(true).is_err() {
                        continue; // dropped: closed
                    }
                    // Registered for WRITE first: a new socket is writable at once, so its first
                    // call comes straight away; that call, which knows its own id, sets up its
                    // idle timer and switches to READ.
                    let h = Server::Conn {
                        buf: [0; BUF],
                        start: 0,
                        end: 0,
                        timer: None,
                        idle,
                    };
                    match cx.add_fd(conn.into(), Interest::WRITE, FdOptions::new(), h) {
                        Ok(_) => {
                            let open = run.shared.open.fetch_add(1, Ordering::Relaxed) + 1;
                            run.shared.peak.fetch_max(open, Ordering::Relaxed);
                        }
                        // Out of watcher slots: the rejected fd is dropped, closing it.
                        Err(_) => run.refused += 1,
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Rearm::Rearm,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
                Err(e) if SpareFd::is_fd_limit(&e) => {
                    // At the open-file limit: refuse what waits (each client sees its
                    // connection closed), so the listener stops being readable.
                    run.refused += run.spare.refuse_pending(|| listener.accept());
                    if run.spare.is_held() {
                        return Rearm::Rearm;
                    }
                    // Someone else took the freed fd: rest, then try again.
                    return Server::back_off(cx, run);
                }
                Err(_) => return Server::back_off(cx, run), // ENOBUFS, ENOMEM...
            }
        }
    }

    fn back_off(cx: &Cx<'_, Self>, run: &mut Runner) -> Rearm {
        run.backoffs += 1;
        let _ = cx.arm_timer(run.resume, Deadline::After(BACKOFF), None);
        Rearm::Disarm
    }
}

/// Echo what can be echoed. Returns false when the connection is finished.
fn echo(s: &mut impl ReadWrite, buf: &mut [u8; BUF], start: &mut usize, end: &mut usize) -> bool {
    loop {
        // Flush what is buffered first.
        while *start < *end {
            match s.write(&buf[*start..*end]) {
                Ok(n) => *start += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        *start = 0;
        *end = 0;
        match s.read(&mut buf[..]) {
            Ok(0) => return false,
            Ok(n) => *end = n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl Handler for Server {
    type Data = Runner;
    fn on_event(&mut self, cx: &Cx<'_, Self>, run: &mut Runner, event: Event<'_>) -> Rearm {
        run.events += 1;
        match self {
            Server::Listener { idle } => match event.view::<TcpListener>() {
                Some(listener) => Server::accept_all(cx, run, &listener, *idle),
                None => Rearm::Rearm,
            },
            Server::Conn {
                buf,
                start,
                end,
                timer,
                idle,
            } => {
                let (Some(mut stream), Some(ready)) = (event.view::<TcpStream>(), event.ready())
                else {
                    return Rearm::Rearm;
                };
                let me = cx.id();
                let t = match *timer {
                    Some(t) => t,
                    None => match cx.add_timer(
                        Clock::Monotonic,
                        Priority::LOW,
                        Server::Idle { conn: me },
                    ) {
                        Ok(t) => {
                            *timer = Some(t);
                            t
                        }
                        Err(e) => {
                            eprintln!("echo: no idle timer: {e}");
                            run.shared.open.fetch_sub(1, Ordering::Relaxed);
                            return Rearm::Remove;
                        }
                    },
                };
                if ready.is_error() || !echo(&mut stream, buf, start, end) {
                    run.shared.open.fetch_sub(1, Ordering::Relaxed);
                    return Rearm::Remove;
                }
                // Activity: push the idle deadline back (no system call: the loop's timer fd
                // is only moved earlier, never later).
                let _ = cx.arm_timer(t, Deadline::After(*idle), None);
                let want = if start < end {
                    Interest::WRITE
                } else {
                    Interest::READ
                };
                let _ = cx.set_interest(me, want);
                Rearm::Rearm
            }
            Server::Idle { conn } => {
                // Removing the connection removes this timer too (in its on_removed).
                if cx.remove(*conn).is_ok() {
                    run.idle_closed += 1;
                    run.shared.open.fetch_sub(1, Ordering::Relaxed);
                }
                Rearm::Remove
            }
            Server::Resume => {
                run.spare.retake();
                let _ = cx.enable(run.listener);
                Rearm::Disarm
            }
            Server::Shutdown => {
                cx.stop();
                Rearm::Remove
            }
        }
    }

    fn on_removed(self, cx: &Cx<'_, Self>, _removed: Removed) {
        if let Server::Conn { timer: Some(t), .. } = self {
            let _ = cx.remove(t);
        }
        // The fd in `_removed` is dropped here, closing the connection.
    }
}

/// What the server counted, summed over its runners.
#[derive(Default, Debug)]
pub struct ServerReport {
    pub peak: usize,
    pub events: u64,
    pub idle_closed: usize,
    pub refused: usize,
    pub backoffs: usize,
}

impl ServerReport {
    fn add(&mut self, r: &Runner) {
        self.events += r.events;
        self.idle_closed += r.idle_closed;
        self.refused += r.refused;
        self.backoffs += r.backoffs;
    }
}

/// Serve on a single-threaded loop (`runners` 1), or on one `ThreadedLoop` run by `runners`
/// threads at once (the same handler code, each thread with its own `Runner`).
pub fn serve(
    listener: TcpListener,
    capacity: usize,
    idle: Duration,
    ready: Option<mpsc::Sender<(dasynq::Waker, Arc<Shared>)>>,
    runners: usize,
) -> Result<ServerReport, Box<dyn std::error::Error>> {
    // Until the shutdown wake watcher has removed itself.
    if runners <= 1 {
        serve_on::<Single>(listener, capacity, idle, ready, 1, |lp, new_runner| {
            let mut run = new_runner()?;
            while lp.usage().wakers > 0 {
                lp.run_with(&mut run);
            }
            let mut report = ServerReport::default();
            report.add(&run);
            Ok(report)
        })
    } else {
        // Every runner runs the same loop on a thread of its own; this thread, once the
        // shutdown watcher is gone, stops them until all have returned (a runner that was
        // between two calls when the first `stop` came needs a later one).
        serve_on::<Threaded>(
            listener,
            capacity,
            idle,
            ready,
            runners,
            |lp, new_runner| {
                let all = (0..runners)
                    .map(|_| new_runner())
                    .collect::<Result<Vec<_>, _>>()?;
                std::thread::scope(|scope| {
                    let threads: Vec<_> = all
                        .into_iter()
                        .map(|mut run| {
                            scope.spawn(move || {
                                while lp.usage().wakers > 0 {
                                    lp.run_with(&mut run);
                                }
                                run
                            })
                        })
                        .collect();
                    while !threads.iter().all(|t| t.is_finished()) {
                        if lp.usage().wakers == 0 {
                            lp.stop();
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let mut report = ServerReport::default();
                    for t in threads {
                        if let Ok(run) = t.join() {
                            report.add(&run);
                        }
                    }
                    Ok(report)
                })
            },
        )
    }
}

type NewRunner<'a> = &'a dyn Fn() -> std::io::Result<Runner>;

fn serve_on<F: Flavor>(
    listener: TcpListener,
    capacity: usize,
    idle: Duration,
    ready: Option<mpsc::Sender<(dasynq::Waker, Arc<Shared>)>>,
    runners: usize,
    drive: impl FnOnce(
        &EventLoop<Server, dasynq::DefaultBackend, F>,
        NewRunner<'_>,
    ) -> std::io::Result<ServerReport>,
) -> Result<ServerReport, Box<dyn std::error::Error>> {
    listener.set_nonblocking(true)?;
    // std listens with a backlog of 128; a burst of connects overflows that and the dropped
    // SYNs wait a second for retransmission. Listening again raises it (Linux caps it at
    // net.core.somaxconn). (Setup, not handler code: the one use of rustix here.)
    rustix::net::listen(&listener, 4096)?;
    let lp = EventLoop::<Server, dasynq::DefaultBackend, F>::builder()
        .watchers(2 * capacity + 8)
        .timers(capacity + 4)
        .wakers(2)
        .runners(runners)
        .build()?;
    let shared = Arc::new(Shared::default());
    let fd: OwnedFd = listener.into();
    let opts = FdOptions::new().priority(Priority::HIGH);
    let listener = lp.add_fd(fd, Interest::READ, opts, Server::Listener { idle })?;
    let resume = lp.add_timer(Clock::Monotonic, Priority::HIGH, Server::Resume)?;
    let (_id, waker) = lp.add_wake(Priority::HIGH, Server::Shutdown)?;
    if let Some(tx) = ready {
        tx.send((waker, shared.clone()))?;
    }
    let new_runner = || {
        Ok(Runner {
            shared: shared.clone(),
            listener,
            resume,
            spare: SpareFd::new()?,
            events: 0,
            idle_closed: 0,
            refused: 0,
            backoffs: 0,
        })
    };
    let mut report = drive(&lp, &new_runner)?;
    report.peak = shared.peak.load(Ordering::Relaxed);
    Ok(report)
}

// ------------------------------------------------------------------------------------ clients

/// What the run call lends the client handlers: plain counters, no `Rc`, no `Cell`.
#[derive(Default)]
struct ClientStats {
    done: usize,
    verified: u64,
    events: u64,
    mismatches: u64,
    idle_eof: usize,
    expected: usize,
    echo_expected: usize,
    echo_done: usize,
    echo_finished_at: Option<Instant>,
}

enum Client {
    Echo {
        seed: u8,
        sent: usize,
        verified: usize,
        total: usize,
    },
    Silent,
}

fn pattern(seed: u8, i: usize) -> u8 {
    (seed as usize).wrapping_add(i).wrapping_mul(31) as u8 ^ (i >> 8) as u8
}

impl Client {
    fn echo_finished(cx: &Cx<'_, Self>, stats: &mut ClientStats) -> Rearm {
        stats.echo_done += 1;
        if stats.echo_done == stats.echo_expected {
            stats.echo_finished_at = Some(Instant::now());
        }
        Client::finished(cx, stats)
    }

    fn finished(cx: &Cx<'_, Self>, stats: &mut ClientStats) -> Rearm {
        stats.done += 1;
        if stats.done == stats.expected {
            cx.stop();
        }
        let _ = cx.remove(cx.id());
        Rearm::Remove
    }
}

impl Handler for Client {
    type Data = ClientStats;
    fn on_event(&mut self, cx: &Cx<'_, Self>, stats: &mut ClientStats, event: Event<'_>) -> Rearm {
        stats.events += 1;
        let Some(mut stream) = event.view::<TcpStream>() else {
            return Rearm::Rearm;
        };
        match (self, event) {
            (
                Client::Echo {
                    seed, sent, total, ..
                },
                Event::Write { .. },
            ) => {
                let mut chunk = [0u8; 16384];
                while *sent < *total {
                    let n = (*total - *sent).min(chunk.len());
                    for (k, b) in chunk[..n].iter_mut().enumerate() {
                        *b = pattern(*seed, *sent + k);
                    }
                    match stream.write(&chunk[..n]) {
                        Ok(w) => *sent += w,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return Rearm::Rearm,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => return Client::echo_finished(cx, stats),
                    }
                }
                // Everything sent: this half is done.
                Rearm::Remove
            }
            (
                Client::Echo {
                    seed,
                    verified,
                    total,
                    ..
                },
                Event::Read { .. },
            ) => {
                let mut buf = [0u8; 16384];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => return Client::echo_finished(cx, stats),
                        Ok(n) => {
                            let bad = buf[..n]
                                .iter()
                                .enumerate()
                                .filter(|&(k, &b)| b != pattern(*seed, *verified + k))
                                .count();
                            stats.mismatches += bad as u64;
                            *verified += n;
                            stats.verified += n as u64;
                            if *verified >= *total {
                                return Client::echo_finished(cx, stats);
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return Rearm::Rearm,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => return Client::echo_finished(cx, stats),
                    }
                }
            }
            (Client::Silent, _) => {
                let mut b = [0u8; 1];
                match stream.read(&mut b) {
                    Ok(0) => {
                        stats.idle_eof += 1;
                        Client::finished(cx, stats)
                    }
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                        stats.idle_eof += 1;
                        Client::finished(cx, stats)
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => Rearm::Rearm,
                    _ => {
                        stats.mismatches += 1;
                        Client::finished(cx, stats)
                    }
                }
            }
            _ => Rearm::Rearm,
        }
    }
}

struct ClientReport {
    echo_time: Option<Duration>,
    verified: u64,
    events: u64,
    mismatches: u64,
    idle_eof: usize,
    done: usize,
    expected: usize,
}

/// The two points where the clients and main meet: every connect has returned; the server
/// holds every connection.
struct Gates {
    connected: Arc<Barrier>,
    go: Arc<Barrier>,
}

fn client_thread(
    addr: SocketAddr,
    echo_conns: usize,
    silent: usize,
    bytes: usize,
    first_seed: usize,
    gates: Gates,
    deadline: Duration,
) -> Result<ClientReport, String> {
    let lp = EventLoop::<Client>::builder()
        .watchers(echo_conns + silent + 4)
        .timers(0)
        .wakers(0)
        .build()
        .map_err(|e| e.to_string())?;
    let mut stats = ClientStats {
        expected: echo_conns + silent,
        echo_expected: echo_conns,
        ..ClientStats::default()
    };
    let mut streams = Vec::with_capacity(echo_conns + silent);
    for _ in 0..echo_conns + silent {
        let s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        streams.push(s);
    }
    // Every connection is open, and accepted by the server, before any data moves: main
    // waits between the two barriers until the server has accepted them all.
    gates.connected.wait();
    gates.go.wait();
    for (i, s) in streams.into_iter().enumerate() {
        let fd: OwnedFd = s.into();
        let r = if i < echo_conns {
            let h = Client::Echo {
                seed: (first_seed + i) as u8,
                sent: 0,
                verified: 0,
                total: bytes,
            };
            lp.add_bidi(fd, BidiOptions::new(), h).map(|_| ())
        } else {
            lp.add_fd(fd, Interest::READ, FdOptions::new(), Client::Silent)
                .map(|_| ())
        };
        r.map_err(|e| e.to_string())?;
    }
    let t0 = Instant::now();
    while stats.done < stats.expected && t0.elapsed() < deadline {
        lp.run_timeout_with(Duration::from_millis(200), &mut stats);
    }
    Ok(ClientReport {
        echo_time: stats.echo_finished_at.map(|t| t - t0),
        verified: stats.verified,
        events: stats.events,
        mismatches: stats.mismatches,
        idle_eof: stats.idle_eof,
        done: stats.done,
        expected: stats.expected,
    })
}

// ------------------------------------------------------------------------------------ main

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(addr) = arg::<SocketAddr>(&args, "--listen") {
        let listener = TcpListener::bind(addr)?;
        println!(
            "echo: listening on {} (idle connections closed after 60 s)",
            listener.local_addr()?
        );
        serve(
            listener,
            arg(&args, "--capacity").unwrap_or(8192),
            Duration::from_secs(60),
            None,
            arg(&args, "--runners").unwrap_or(1),
        )?;
        return Ok(());
    }

    let conns: usize = arg(&args, "--connections").unwrap_or(1000);
    let bytes: usize = arg(&args, "--bytes").unwrap_or(64 * 1024);
    let threads: usize = arg::<usize>(&args, "--threads").unwrap_or(2).max(1);
    let runners: usize = arg::<usize>(&args, "--runners").unwrap_or(1).max(1);
    let silent_per_thread = 5;
    let idle = Duration::from_secs(1);

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::channel();
    let capacity = conns + silent_per_thread * threads + 8;
    let server = std::thread::spawn(move || {
        serve(listener, capacity, idle, Some(tx), runners).map_err(|e| e.to_string())
    });
    let (shutdown, shared) = rx.recv()?;

    let connected = Arc::new(Barrier::new(threads + 1));
    let go = Arc::new(Barrier::new(threads + 1));
    let t0 = Instant::now();
    let clients: Vec<_> = (0..threads)
        .map(|t| {
            let share = conns / threads + usize::from(t < conns % threads);
            let first_seed = t * (conns / threads + 1);
            let gates = Gates {
                connected: connected.clone(),
                go: go.clone(),
            };
            std::thread::spawn(move || {
                client_thread(
                    addr,
                    share,
                    silent_per_thread,
                    bytes,
                    first_seed,
                    gates,
                    Duration::from_secs(120),
                )
            })
        })
        .collect();
    connected.wait();
    // A connect returns once the kernel has completed the handshake, which may be before the
    // server has accepted it; the clients send nothing (so nothing closes) until the server
    // holds every connection, which is what "all open at once" claims.
    let silent = silent_per_thread * threads;
    let accept_deadline = Instant::now() + Duration::from_secs(30);
    while shared.open.load(Ordering::Relaxed) < conns + silent && Instant::now() < accept_deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    go.wait();
    let connected = t0.elapsed();
    let t1 = Instant::now();
    let mut reports = Vec::new();
    for c in clients {
        reports.push(c.join().map_err(|_| "client thread panicked")??);
    }
    let elapsed = t1.elapsed();
    shutdown.wake();
    let server = server.join().map_err(|_| "server thread panicked")??;

    let verified: u64 = reports.iter().map(|r| r.verified).sum();
    let mismatches: u64 = reports.iter().map(|r| r.mismatches).sum();
    let client_events: u64 = reports.iter().map(|r| r.events).sum();
    let done: usize = reports.iter().map(|r| r.done).sum();
    let expected: usize = reports.iter().map(|r| r.expected).sum();
    let idle_eof: usize = reports.iter().map(|r| r.idle_eof).sum();
    let echo_time = reports
        .iter()
        .filter_map(|r| r.echo_time)
        .max()
        .unwrap_or_default();
    let want = (conns * bytes) as u64;

    let server_desc = if runners > 1 {
        format!("the server on one ThreadedLoop run by {runners} threads")
    } else {
        "the server on a single-threaded loop".to_string()
    };
    println!(
        "dasynq echo demonstration (loopback, {server_desc}, {threads} client threads, each with its own loop)"
    );
    println!(
        "  concurrent connections:  {} echoing + {} silent, all open at once (server peak {})",
        conns, silent, server.peak
    );
    println!(
        "  bytes verified:          {verified} of {want} ({bytes} bytes each way per connection), {mismatches} mismatched"
    );
    println!(
        "  idle connections closed: {} of {} by the server's idle timers ({} ms)",
        server.idle_closed.min(idle_eof),
        silent,
        idle.as_millis()
    );
    println!(
        "  events handled:          {} by the server, {} by the clients",
        server.events, client_events
    );
    println!(
        "  refused at capacity:     {} (the open-file limit or the watcher pool; backed off {} times)",
        server.refused, server.backoffs
    );
    println!(
        "  elapsed:                 {:.3} s to connect, {:.3} s to echo and verify everything, {:.3} s until the idle ones were closed",
        connected.as_secs_f64(),
        echo_time.as_secs_f64(),
        elapsed.as_secs_f64()
    );

    let ok = verified == want
        && mismatches == 0
        && done == expected
        && idle_eof == silent
        && server.peak >= conns + silent;
    if !ok {
        eprintln!(
            "echo: FAILED (done {done}/{expected}, idle closed {idle_eof}/{silent}, peak {})",
            server.peak
        );
        std::process::exit(1);
    }
    println!("  result:                  OK");
    Ok(())
}
