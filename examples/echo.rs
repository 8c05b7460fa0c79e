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
//! What it shows: one handler enum per loop; the loop owning every fd (handlers read and
//! write through the `BorrowedFd` in the event); an fd watcher switching between read and
//! write interest; a timer per connection, re-armed on activity and removed with it; bidirectional
//! watchers on the client side; a wake watcher to stop a loop from another thread; with
//! `--runners N`, the same server handlers on one `ThreadedLoop` that N threads run at once.

use std::cell::Cell;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use dasynq::{
    BidiOptions, Clock, Control, Cx, Deadline, Event, EventLoop, FdOptions, Flavor, Handler,
    Interest, Priority, Rearm, Removed, Single, Threaded, WatchId,
};
use rustix::io::Errno;

/// Bytes a connection buffers on the server when the client is slow to read.
const BUF: usize = 4096;

// ------------------------------------------------------------------------------------ server

/// Counters the server's handlers share (atomics: with `--runners N` the handlers run on N
/// threads).
#[derive(Default)]
struct ServerStats {
    open: AtomicUsize,
    peak: AtomicUsize,
    events: AtomicU64,
    idle_closed: AtomicUsize,
}

// Each slot of the loop's handler table holds a whole connection, buffer included: the
// server allocates nothing per connection.
#[allow(
    clippy::large_enum_variant,
    reason = "fixed per-slot storage is the point"
)]
enum Server {
    Listener {
        stats: Arc<ServerStats>,
        idle: Duration,
    },
    Conn {
        buf: [u8; BUF],
        start: usize,
        end: usize,
        timer: Option<WatchId>,
        stats: Arc<ServerStats>,
        idle: Duration,
    },
    Idle {
        conn: WatchId,
        stats: Arc<ServerStats>,
    },
    Shutdown,
}

/// Accept one connection as a non-blocking, close-on-exec socket: atomically with `accept4`
/// where the system has it, else with `fcntl` after `accept`.
fn accept_nonblocking(fd: BorrowedFd<'_>) -> rustix::io::Result<OwnedFd> {
    #[cfg(dasynq_pipe2)]
    {
        use rustix::net::SocketFlags;
        rustix::net::accept_with(fd, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)
    }
    #[cfg(not(dasynq_pipe2))]
    {
        let conn = rustix::net::accept(fd)?;
        rustix::io::fcntl_setfd(&conn, rustix::io::FdFlags::CLOEXEC)?;
        rustix::fs::fcntl_setfl(&conn, rustix::fs::OFlags::NONBLOCK)?;
        Ok(conn)
    }
}

impl Server {
    fn accept_all(cx: &Cx<'_, Self>, fd: BorrowedFd<'_>, stats: &Arc<ServerStats>, idle: Duration) {
        loop {
            match accept_nonblocking(fd) {
                Ok(conn) => {
                    // Registered for WRITE first: a new socket is writable at once, so its first
                    // call comes straight away; that call, which knows its own id, sets up its
                    // idle timer and switches to READ.
                    let h = Server::Conn {
                        buf: [0; BUF],
                        start: 0,
                        end: 0,
                        timer: None,
                        stats: stats.clone(),
                        idle,
                    };
                    match cx.add_fd(conn, Interest::WRITE, FdOptions::new(), h) {
                        Ok(_) => {
                            let open = stats.open.fetch_add(1, Ordering::Relaxed) + 1;
                            stats.peak.fetch_max(open, Ordering::Relaxed);
                        }
                        // Out of watcher slots: the rejected fd is dropped, closing it.
                        Err(e) => eprintln!("echo: connection refused: {e}"),
                    }
                }
                Err(Errno::AGAIN) => return,
                Err(Errno::INTR | Errno::CONNABORTED) => continue,
                Err(e) => {
                    // EMFILE and friends: stop accepting this round; the listener stays armed.
                    eprintln!("echo: accept: {e}");
                    return;
                }
            }
        }
    }
}

/// Echo what can be echoed. Returns false when the connection is finished.
fn echo(fd: BorrowedFd<'_>, buf: &mut [u8; BUF], start: &mut usize, end: &mut usize) -> bool {
    loop {
        // Flush what is buffered first.
        while *start < *end {
            match rustix::io::write(fd, &buf[*start..*end]) {
                Ok(n) => *start += n,
                Err(Errno::AGAIN) => return true,
                Err(Errno::INTR) => {}
                Err(_) => return false,
            }
        }
        *start = 0;
        *end = 0;
        match rustix::io::read(fd, &mut buf[..]) {
            Ok(0) => return false,
            Ok(n) => *end = n,
            Err(Errno::AGAIN) => return true,
            Err(Errno::INTR) => {}
            Err(_) => return false,
        }
    }
}

impl Handler for Server {
    fn on_event(&mut self, cx: &Cx<'_, Self>, event: Event<'_>) -> Rearm {
        match (self, event) {
            (Server::Listener { stats, idle }, Event::Fd { fd, .. }) => {
                stats.events.fetch_add(1, Ordering::Relaxed);
                Server::accept_all(cx, fd, stats, *idle);
                Rearm::Rearm
            }
            (
                Server::Conn {
                    buf,
                    start,
                    end,
                    timer,
                    stats,
                    idle,
                },
                Event::Fd { fd, ready },
            ) => {
                stats.events.fetch_add(1, Ordering::Relaxed);
                let me = cx.id();
                let t = match *timer {
                    Some(t) => t,
                    None => match cx.add_timer(
                        Clock::Monotonic,
                        Priority::LOW,
                        Server::Idle {
                            conn: me,
                            stats: stats.clone(),
                        },
                    ) {
                        Ok(t) => {
                            *timer = Some(t);
                            t
                        }
                        Err(e) => {
                            eprintln!("echo: no idle timer: {e}");
                            return Rearm::Remove;
                        }
                    },
                };
                if ready.is_error() || !echo(fd, buf, start, end) {
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
            (Server::Idle { conn, stats }, Event::Timer { .. }) => {
                stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                // Removing the connection removes this timer too (in its on_removed).
                let _ = cx.remove(*conn);
                Rearm::Remove
            }
            (Server::Shutdown, Event::Wake) => {
                cx.stop();
                Rearm::Remove
            }
            _ => Rearm::Rearm,
        }
    }

    fn on_removed(self, cx: &Cx<'_, Self>, _removed: Removed) {
        if let Server::Conn { timer, stats, .. } = self {
            stats.open.fetch_sub(1, Ordering::Relaxed);
            if let Some(t) = timer {
                let _ = cx.remove(t);
            }
        }
        // The fd in `_removed` is dropped here, closing the connection.
    }
}

struct ServerReport {
    peak: usize,
    events: u64,
    idle_closed: usize,
}

/// Serve on a single-threaded loop (`runners` 1), or on one `ThreadedLoop` run by `runners`
/// threads at once (the same handler code).
fn serve(
    listener: TcpListener,
    capacity: usize,
    idle: Duration,
    ready: Option<mpsc::Sender<dasynq::Waker>>,
    runners: usize,
) -> Result<ServerReport, Box<dyn std::error::Error>> {
    // Until the shutdown wake watcher has removed itself.
    if runners <= 1 {
        serve_on::<Single>(listener, capacity, idle, ready, 1, |lp| {
            while lp.usage().wakers > 0 {
                lp.run();
            }
        })
    } else {
        // Every runner runs the same loop; the last stops reach those between two calls.
        serve_on::<Threaded>(listener, capacity, idle, ready, runners, |lp| {
            std::thread::scope(|scope| {
                let others: Vec<_> = (1..runners)
                    .map(|_| {
                        scope.spawn(move || {
                            while lp.usage().wakers > 0 {
                                lp.run();
                            }
                        })
                    })
                    .collect();
                while lp.usage().wakers > 0 {
                    lp.run();
                }
                for t in others {
                    while !t.is_finished() {
                        lp.stop();
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    let _ = t.join();
                }
            })
        })
    }
}

fn serve_on<F: Flavor>(
    listener: TcpListener,
    capacity: usize,
    idle: Duration,
    ready: Option<mpsc::Sender<dasynq::Waker>>,
    runners: usize,
    drive: impl FnOnce(&EventLoop<Server, dasynq::DefaultBackend, F>),
) -> Result<ServerReport, Box<dyn std::error::Error>> {
    listener.set_nonblocking(true)?;
    // std listens with a backlog of 128; a burst of connects overflows that and the dropped
    // SYNs wait a second for retransmission. Listening again raises it (Linux caps it at
    // net.core.somaxconn).
    rustix::net::listen(&listener, 4096)?;
    let lp = EventLoop::<Server, dasynq::DefaultBackend, F>::builder()
        .watchers(2 * capacity + 8)
        .timers(capacity + 4)
        .wakers(2)
        .runners(runners)
        .build()?;
    let stats = Arc::new(ServerStats::default());
    let fd: OwnedFd = listener.into();
    lp.add_fd(
        fd,
        Interest::READ,
        FdOptions::new().priority(Priority::HIGH),
        Server::Listener {
            stats: stats.clone(),
            idle,
        },
    )?;
    let (_id, waker) = lp.add_wake(Priority::HIGH, Server::Shutdown)?;
    if let Some(tx) = ready {
        tx.send(waker)?;
    }
    drive(&lp);
    Ok(ServerReport {
        peak: stats.peak.load(Ordering::Relaxed),
        events: stats.events.load(Ordering::Relaxed),
        idle_closed: stats.idle_closed.load(Ordering::Relaxed),
    })
}

// ------------------------------------------------------------------------------------ clients

#[derive(Default)]
struct ClientStats {
    done: Cell<usize>,
    verified: Cell<u64>,
    events: Cell<u64>,
    mismatches: Cell<u64>,
    idle_eof: Cell<usize>,
    expected: Cell<usize>,
    echo_expected: Cell<usize>,
    echo_done: Cell<usize>,
    echo_finished_at: Cell<Option<Instant>>,
}

enum Client {
    Echo {
        seed: u8,
        sent: usize,
        verified: usize,
        total: usize,
        stats: Rc<ClientStats>,
    },
    Silent {
        stats: Rc<ClientStats>,
    },
}

fn pattern(seed: u8, i: usize) -> u8 {
    (seed as usize).wrapping_add(i).wrapping_mul(31) as u8 ^ (i >> 8) as u8
}

impl Client {
    fn echo_finished(cx: &Cx<'_, Self>, stats: &ClientStats) -> Rearm {
        stats.echo_done.set(stats.echo_done.get() + 1);
        if stats.echo_done.get() == stats.echo_expected.get() {
            stats.echo_finished_at.set(Some(Instant::now()));
        }
        Client::finished(cx, stats)
    }

    fn finished(cx: &Cx<'_, Self>, stats: &ClientStats) -> Rearm {
        stats.done.set(stats.done.get() + 1);
        if stats.done.get() == stats.expected.get() {
            cx.stop();
        }
        let _ = cx.remove(cx.id());
        Rearm::Remove
    }
}

impl Handler for Client {
    fn on_event(&mut self, cx: &Cx<'_, Self>, event: Event<'_>) -> Rearm {
        match (self, event) {
            (
                Client::Echo {
                    seed,
                    sent,
                    total,
                    stats,
                    ..
                },
                Event::Write { fd, .. },
            ) => {
                stats.events.set(stats.events.get() + 1);
                let mut chunk = [0u8; 16384];
                while *sent < *total {
                    let n = (*total - *sent).min(chunk.len());
                    for (k, b) in chunk[..n].iter_mut().enumerate() {
                        *b = pattern(*seed, *sent + k);
                    }
                    match rustix::io::write(fd, &chunk[..n]) {
                        Ok(w) => *sent += w,
                        Err(Errno::AGAIN) => return Rearm::Rearm,
                        Err(Errno::INTR) => {}
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
                    stats,
                    ..
                },
                Event::Read { fd, .. },
            ) => {
                stats.events.set(stats.events.get() + 1);
                let mut buf = [0u8; 16384];
                loop {
                    match rustix::io::read(fd, &mut buf) {
                        Ok(0) => return Client::echo_finished(cx, stats),
                        Ok(n) => {
                            let bad = buf[..n]
                                .iter()
                                .enumerate()
                                .filter(|&(k, &b)| b != pattern(*seed, *verified + k))
                                .count();
                            stats.mismatches.set(stats.mismatches.get() + bad as u64);
                            *verified += n;
                            stats.verified.set(stats.verified.get() + n as u64);
                            if *verified >= *total {
                                return Client::echo_finished(cx, stats);
                            }
                        }
                        Err(Errno::AGAIN) => return Rearm::Rearm,
                        Err(Errno::INTR) => {}
                        Err(_) => return Client::echo_finished(cx, stats),
                    }
                }
            }
            (Client::Silent { stats }, Event::Fd { fd, .. }) => {
                stats.events.set(stats.events.get() + 1);
                let mut b = [0u8; 1];
                match rustix::io::read(fd, &mut b) {
                    Ok(0) | Err(Errno::CONNRESET) => {
                        stats.idle_eof.set(stats.idle_eof.get() + 1);
                        Client::finished(cx, stats)
                    }
                    Err(Errno::AGAIN) => Rearm::Rearm,
                    _ => {
                        stats.mismatches.set(stats.mismatches.get() + 1);
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

fn client_thread(
    addr: SocketAddr,
    echo_conns: usize,
    silent: usize,
    bytes: usize,
    first_seed: usize,
    start: Arc<Barrier>,
    deadline: Duration,
) -> Result<ClientReport, String> {
    let lp = EventLoop::<Client>::builder()
        .watchers(echo_conns + silent + 4)
        .timers(0)
        .wakers(0)
        .build()
        .map_err(|e| e.to_string())?;
    let stats = Rc::new(ClientStats::default());
    stats.expected.set(echo_conns + silent);
    stats.echo_expected.set(echo_conns);
    let mut streams = Vec::with_capacity(echo_conns + silent);
    for _ in 0..echo_conns + silent {
        let s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        streams.push(s);
    }
    // Every connection is open before any data moves.
    start.wait();
    for (i, s) in streams.into_iter().enumerate() {
        let fd: OwnedFd = s.into();
        let r = if i < echo_conns {
            let h = Client::Echo {
                seed: (first_seed + i) as u8,
                sent: 0,
                verified: 0,
                total: bytes,
                stats: stats.clone(),
            };
            lp.add_bidi(fd, BidiOptions::new(), h).map(|_| ())
        } else {
            lp.add_fd(
                fd,
                Interest::READ,
                FdOptions::new(),
                Client::Silent {
                    stats: stats.clone(),
                },
            )
            .map(|_| ())
        };
        r.map_err(|e| e.to_string())?;
    }
    let t0 = Instant::now();
    while stats.done.get() < stats.expected.get() && t0.elapsed() < deadline {
        lp.run_timeout(Duration::from_millis(200));
    }
    Ok(ClientReport {
        echo_time: stats.echo_finished_at.get().map(|t| t - t0),
        verified: stats.verified.get(),
        events: stats.events.get(),
        mismatches: stats.mismatches.get(),
        idle_eof: stats.idle_eof.get(),
        done: stats.done.get(),
        expected: stats.expected.get(),
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
    let shutdown = rx.recv()?;

    let start = Arc::new(Barrier::new(threads + 1));
    let t0 = Instant::now();
    let clients: Vec<_> = (0..threads)
        .map(|t| {
            let share = conns / threads + usize::from(t < conns % threads);
            let first_seed = t * (conns / threads + 1);
            let start = start.clone();
            std::thread::spawn(move || {
                client_thread(
                    addr,
                    share,
                    silent_per_thread,
                    bytes,
                    first_seed,
                    start,
                    Duration::from_secs(120),
                )
            })
        })
        .collect();
    start.wait();
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
    let silent = silent_per_thread * threads;
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
