//! The echo example's server at the open-file limit: it must keep serving the connections it
//! has, refuse the others cleanly (each client sees its connection closed, none is left
//! hanging in the backlog), use no CPU while it stays at the limit, and serve again once
//! fds are free. The server runs in a child process (this binary again, with its open-file
//! limit lowered), so the limit does not touch the clients, which are this process.
//!
//! `harness = false`: one `main`, the server role chosen by an environment variable.

#[allow(dead_code, unused_imports)]
#[path = "../examples/echo.rs"]
mod echo;

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("fd_limit: skipped: it reads the server's CPU time from /proc (Linux only)");
}

#[cfg(target_os = "linux")]
fn main() {
    imp::main();
}

#[cfg(target_os = "linux")]
mod imp {
    use super::echo;
    use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// The server's open-file limit.
    const LIMIT: u64 = 256;
    /// Clients: well over the limit.
    const CLIENTS: usize = 400;

    pub fn main() {
        if let Ok(runners) = std::env::var("DASYNQ_FD_LIMIT_SERVER") {
            server(runners.parse().unwrap_or(1));
            return;
        }
        for runners in [1, 2] {
            at_the_limit(runners);
        }
        println!("fd_limit: ok");
    }

    fn server(runners: usize) {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let hard = getrlimit(Resource::Nofile).maximum;
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(LIMIT),
                maximum: hard,
            },
        )
        .expect("lower the open-file limit");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        println!("{}", listener.local_addr().expect("address"));
        std::io::stdout().flush().expect("flush");
        // Serves until killed (no shutdown waker); idle connections are kept for 10 minutes.
        let r = echo::serve(listener, 4096, Duration::from_secs(600), None, runners);
        eprintln!("server ended: {r:?}");
        std::process::exit(1);
    }

    /// User and system CPU time of `pid`, in clock ticks (`/proc/PID/stat` fields 14 and 15).
    fn cpu_ticks(pid: u32) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        // The command name (field 2) is in parentheses and may hold spaces: split after it.
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        // `after` starts at field 3, so fields 14 and 15 are at 11 and 12.
        f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
    }

    enum Outcome {
        Served,
        Refused,
        Hung,
    }

    /// Send a byte and see what comes back before `deadline`.
    fn probe(s: &mut TcpStream, deadline: Instant) -> Outcome {
        if s.write_all(b"x").is_err() {
            return Outcome::Refused;
        }
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        s.set_read_timeout(Some(left)).expect("timeout");
        let mut b = [0; 1];
        match s.read(&mut b) {
            Ok(1) if b[0] == b'x' => Outcome::Served,
            Ok(_) => Outcome::Refused,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Outcome::Hung
            }
            Err(_) => Outcome::Refused, // reset
        }
    }

    struct Server(Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn at_the_limit(runners: usize) {
        let exe = std::env::current_exe().expect("own path");
        let mut child = Command::new(exe)
            .env("DASYNQ_FD_LIMIT_SERVER", runners.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server");
        let out = child.stdout.take().expect("stdout");
        let server = Server(child);
        let pid = server.0.id();
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("address");
        let addr: SocketAddr = line.trim().parse().expect("an address");

        let mut clients: Vec<TcpStream> = (0..CLIENTS)
            .map(|_| TcpStream::connect(addr).expect("connect (the backlog takes it)"))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut served, mut refused, mut hung) = (Vec::new(), 0, 0);
        for mut c in clients.drain(..) {
            match probe(&mut c, deadline) {
                Outcome::Served => served.push(c),
                Outcome::Refused => refused += 1,
                Outcome::Hung => hung += 1,
            }
        }
        let what = format!(
            "runners {runners}: {} served, {refused} refused, {hung} hung",
            served.len()
        );
        println!("fd_limit: {what}");
        assert_eq!(
            hung, 0,
            "no connection is left waiting in the backlog ({what})"
        );
        assert!(refused > 0, "the limit was reached ({what})");
        assert!(
            served.len() as u64 >= LIMIT / 2 && (served.len() as u64) < LIMIT,
            "the server serves up to its limit ({what})"
        );

        // At the limit, with nothing to do: no CPU (a spinning listener takes a whole core, 100
        // ticks a second).
        let before = cpu_ticks(pid);
        std::thread::sleep(Duration::from_secs(1));
        let idle_ticks = cpu_ticks(pid) - before;
        println!("fd_limit: runners {runners}: {idle_ticks} CPU ticks in 1 s at the limit");
        assert!(
            idle_ticks <= 5,
            "no CPU at the limit: {idle_ticks} ticks in 1 s"
        );

        // Newcomers at the limit are refused at once, and the connections it has still work.
        for _ in 0..20 {
            let mut c = TcpStream::connect(addr).expect("connect");
            let late = probe(&mut c, Instant::now() + Duration::from_secs(5));
            assert!(
                matches!(late, Outcome::Refused),
                "a newcomer at the limit is refused"
            );
        }
        for c in served.iter_mut().take(10) {
            let again = probe(c, Instant::now() + Duration::from_secs(5));
            assert!(
                matches!(again, Outcome::Served),
                "an open connection is still served"
            );
        }

        // Free fds: the server serves newcomers again.
        served.truncate(served.len() - 20);
        std::thread::sleep(Duration::from_millis(200));
        let mut c = TcpStream::connect(addr).expect("connect");
        let fresh = probe(&mut c, Instant::now() + Duration::from_secs(5));
        assert!(
            matches!(fresh, Outcome::Served),
            "served again once fds are free"
        );
        drop(server);
    }
}
