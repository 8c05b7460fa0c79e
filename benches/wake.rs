//! Cross-thread wake round trips: two threads, each running its own loop with one wake
//! watcher, ping-pong: each handler wakes the other thread's watcher, 20,000 round trips per
//! run. Variants: dasynq (`EventLoop` on each thread, `Waker::wake`), mio (`Poll` + `Waker`
//! on each thread), polling (`Poller::notify`), calloop (a `ping` source), and the floor, raw
//! epoll with an edge-triggered eventfd per thread (write to poke, `epoll_wait` to take it,
//! no read), all doing the same round trips (each side's wakes handled are checked and
//! printed). polling and calloop (which runs over polling) make four or five more system
//! calls per wake by their design (strace, one thread: one `timerfd_settime` and two
//! `epoll_ctl` each, and reads of their eventfds, one for polling, two for calloop).
//! Variants run interleaved over rounds (order rotating); figures are medians, ratios the
//! median of per-round ratios.
//!
//! A cross-thread round trip is mostly the scheduler's (two thread wake-ups), so its ratios
//! move widely on a busy machine. A second part times the loop's share alone, on one
//! thread: a wake, then the wait that takes it and its handler, 200,000 times, for the same
//! variants (dasynq, mio and the floor make one eventfd write and one `epoll_wait` per wake,
//! no read; the wakes handled are checked and printed).
//!
//! Run: `cargo bench --bench wake` (options: `--rounds N`, `--trips N`, `--passes N`).

#[cfg(dasynq_epoll)]
mod common;

#[cfg(dasynq_epoll)]
mod imp {
    use std::cell::Cell;
    use std::os::fd::OwnedFd;
    use std::rc::Rc;
    use std::sync::{Arc, Barrier, Mutex};
    use std::time::Instant;

    use dasynq::{Cx, Event, EventLoop, Handler, Priority, Rearm, Waker};

    use super::common::{arg, median, median_ratio};

    /// One side: counts the wakes it got and wakes the other side, until `trips`.
    struct Pong {
        other: Arc<Mutex<Option<Waker>>>,
        got: Rc<Cell<u64>>,
    }

    impl Handler for Pong {
        type Data = ();
        fn on_event(&mut self, _: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
            assert!(matches!(ev, Event::Wake));
            self.got.set(self.got.get() + 1);
            if let Some(w) = self.other.lock().expect("waker").as_ref() {
                w.wake();
            }
            Rearm::Rearm
        }
    }

    /// Where a side publishes its poke handle for the other side.
    type Slot<T> = Arc<Mutex<Option<T>>>;

    /// One side of a round trip (see `ping_pong`).
    /// Returns the wakes it handled.
    type Side<T> = fn(usize, u64, &Slot<T>, &Slot<T>, &dyn Fn()) -> u64;

    /// Run two sides on their own threads and time them from the moment both are set up
    /// until both are done. Each `side(i, mine, other, go)` sets itself up, publishes its
    /// handle in `mine`, calls `go()` (which returns when the clock starts), then plays.
    /// Returns the time per round trip and the wakes each side handled.
    fn ping_pong<T: Send + 'static>(trips: u64, side: Side<T>) -> (f64, [u64; 2]) {
        let slots: [Slot<T>; 2] = [Arc::default(), Arc::default()];
        let barrier = Arc::new(Barrier::new(3));
        let sides: Vec<_> = (0..2)
            .map(|i| {
                let (mine, other) = (slots[i].clone(), slots[1 - i].clone());
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let go = || {
                        barrier.wait();
                        barrier.wait();
                    };
                    side(i, trips, &mine, &other, &go)
                })
            })
            .collect();
        barrier.wait();
        let t = Instant::now();
        barrier.wait();
        let mut got = [0; 2];
        for (g, s) in got.iter_mut().zip(sides) {
            *g = s.join().expect("side");
        }
        (t.elapsed().as_nanos() as f64 / trips as f64, got)
    }

    fn dasynq_side(
        i: usize,
        trips: u64,
        mine: &Slot<Waker>,
        other: &Slot<Waker>,
        go: &dyn Fn(),
    ) -> u64 {
        let lp = EventLoop::<Pong>::builder()
            .watchers(2)
            .wakers(1)
            .build()
            .expect("build");
        let got = Rc::new(Cell::new(0));
        let (_id, w) = lp
            .add_wake(
                Priority::DEFAULT,
                Pong {
                    other: other.clone(),
                    got: got.clone(),
                },
            )
            .expect("wake");
        *mine.lock().expect("slot") = Some(w.clone());
        go();
        if i == 0 {
            w.wake();
        }
        while got.get() < trips {
            lp.run();
        }
        got.get()
    }

    fn mio_side(
        i: usize,
        trips: u64,
        mine: &Slot<Arc<mio::Waker>>,
        other: &Slot<Arc<mio::Waker>>,
        go: &dyn Fn(),
    ) -> u64 {
        use mio::{Events, Poll, Token, Waker};
        let mut poll = Poll::new().expect("poll");
        let w = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
        *mine.lock().expect("slot") = Some(w.clone());
        go();
        if i == 0 {
            w.wake().expect("wake");
        }
        let mut events = Events::with_capacity(8);
        let mut got = 0;
        while got < trips {
            poll.poll(&mut events, None).expect("poll");
            for _ in events.iter() {
                got += 1;
                if let Some(o) = other.lock().expect("waker").as_ref() {
                    o.wake().expect("wake");
                }
            }
        }
        got
    }

    fn raw_side(
        i: usize,
        trips: u64,
        mine: &Slot<Arc<OwnedFd>>,
        other: &Slot<Arc<OwnedFd>>,
        go: &dyn Fn(),
    ) -> u64 {
        use rustix::event::{EventfdFlags, epoll, eventfd};
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll");
        let efd =
            Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).expect("eventfd"));
        epoll::add(
            &ep,
            &*efd,
            epoll::EventData::new_u64(0),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )
        .expect("add");
        *mine.lock().expect("slot") = Some(efd.clone());
        go();
        let poke = |fd: &OwnedFd| {
            let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
        };
        if i == 0 {
            poke(&efd);
        }
        let mut events = Vec::with_capacity(8);
        let mut got = 0;
        while got < trips {
            events.clear();
            epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), None).expect("wait");
            for _ in &events {
                got += 1;
                if let Some(o) = other.lock().expect("fd").as_ref() {
                    poke(o);
                }
            }
        }
        got
    }

    /// Counts the wakes it handled (one thread: no other side to wake).
    struct Count(Rc<Cell<u64>>);

    impl Handler for Count {
        type Data = ();
        fn on_event(&mut self, _: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
            assert!(matches!(ev, Event::Wake));
            self.0.set(self.0.get() + 1);
            Rearm::Rearm
        }
    }

    /// One thread, dasynq: `n` times a wake and the `run` call that handles it. Returns the
    /// time per wake and the wakes handled.
    fn dasynq_local(n: u64) -> (f64, u64) {
        let lp = EventLoop::<Count>::builder()
            .watchers(2)
            .wakers(1)
            .build()
            .expect("build");
        let got = Rc::new(Cell::new(0));
        let (_id, w) = lp
            .add_wake(Priority::DEFAULT, Count(got.clone()))
            .expect("wake");
        let t = Instant::now();
        for _ in 0..n {
            w.wake();
            lp.run();
        }
        (t.elapsed().as_nanos() as f64 / n as f64, got.get())
    }

    /// One thread, mio: `n` times `Waker::wake` and the `poll` that reports it.
    fn mio_local(n: u64) -> (f64, u64) {
        use mio::{Events, Poll, Token, Waker};
        let mut poll = Poll::new().expect("poll");
        let w = Waker::new(poll.registry(), Token(0)).expect("waker");
        let mut events = Events::with_capacity(8);
        let mut got = 0;
        let t = Instant::now();
        for _ in 0..n {
            w.wake().expect("wake");
            poll.poll(&mut events, None).expect("poll");
            got += events.iter().count() as u64;
        }
        (t.elapsed().as_nanos() as f64 / n as f64, got)
    }

    /// One thread, the floor: an eventfd write and the edge-triggered `epoll_wait` that
    /// reports it (no read).
    fn raw_local(n: u64) -> (f64, u64) {
        use rustix::event::{EventfdFlags, epoll, eventfd};
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll");
        let efd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).expect("eventfd");
        epoll::add(
            &ep,
            &efd,
            epoll::EventData::new_u64(0),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )
        .expect("add");
        let mut events = Vec::with_capacity(8);
        let mut got = 0;
        let t = Instant::now();
        for _ in 0..n {
            let _ = rustix::io::write(&efd, &1u64.to_ne_bytes());
            events.clear();
            epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), None).expect("wait");
            got += events.len() as u64;
        }
        (t.elapsed().as_nanos() as f64 / n as f64, got)
    }

    /// One thread, polling: `n` times `Poller::notify` and the `wait` it ends (a
    /// notification ends the wait without an event: each return is counted).
    fn polling_local(n: u64) -> (f64, u64) {
        let poller = polling::Poller::new().expect("poller");
        let mut events = polling::Events::new();
        let mut got = 0;
        let t = Instant::now();
        for _ in 0..n {
            poller.notify().expect("notify");
            events.clear();
            poller.wait(&mut events, None).expect("wait");
            got += 1;
        }
        (t.elapsed().as_nanos() as f64 / n as f64, got)
    }

    /// One thread, calloop: `n` times `Ping::ping` and the `dispatch` that runs its source's
    /// callback.
    fn calloop_local(n: u64) -> (f64, u64) {
        let (ping, source) = calloop::ping::make_ping().expect("ping");
        let mut el: calloop::EventLoop<'_, u64> = calloop::EventLoop::try_new().expect("calloop");
        el.handle()
            .insert_source(source, |_, _, got: &mut u64| *got += 1)
            .expect("source");
        let mut got = 0;
        let t = Instant::now();
        for _ in 0..n {
            ping.ping();
            el.dispatch(None, &mut got).expect("dispatch");
        }
        (t.elapsed().as_nanos() as f64 / n as f64, got)
    }

    /// The one-thread part (see the module's docs).
    fn local(rounds: usize, passes: u64) {
        type V = (&'static str, fn(u64) -> (f64, u64));
        let variants: [V; 5] = [
            ("dasynq EventLoop + Waker", dasynq_local),
            ("mio Poll + Waker", mio_local),
            ("raw epoll + eventfd (ET)", raw_local),
            ("polling Poller::notify", polling_local),
            ("calloop ping", calloop_local),
        ];
        println!();
        println!("wake and the wait that takes it, one thread: {passes} per run, {rounds} rounds");
        println!("work per variant (wakes handled):");
        for (name, f) in &variants {
            let (_, got) = f(passes);
            println!("  {name:<28} {got:>8}");
            assert_eq!(got, passes, "{name} did a different amount of work");
        }
        let mut ns: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        for round in 0..rounds {
            for k in 0..variants.len() {
                let i = (k + round) % variants.len();
                let (t, got) = (variants[i].1)(passes);
                assert_eq!(got, passes, "{}: work", variants[i].0);
                ns[i].push(t);
            }
        }
        for (i, (name, _)) in variants.iter().enumerate() {
            let mut v = ns[i].clone();
            println!("{name:<28} median {:>8.1} ns per wake", median(&mut v));
        }
        let ratio = |a: usize, b: usize| median_ratio(&ns[a], &ns[b]);
        println!("median ratio dasynq / mio:   {:.3}", ratio(0, 1));
        println!("median ratio dasynq / floor: {:.3}", ratio(0, 2));
        println!("median ratio mio / floor:    {:.3}", ratio(1, 2));
        println!("median ratio dasynq / polling: {:.3}", ratio(0, 3));
        println!("median ratio dasynq / calloop: {:.3}", ratio(0, 4));
    }

    fn polling_side(
        i: usize,
        trips: u64,
        mine: &Slot<Arc<polling::Poller>>,
        other: &Slot<Arc<polling::Poller>>,
        go: &dyn Fn(),
    ) -> u64 {
        let poller = Arc::new(polling::Poller::new().expect("poller"));
        *mine.lock().expect("slot") = Some(poller.clone());
        go();
        if i == 0 {
            poller.notify().expect("notify");
        }
        let mut events = polling::Events::new();
        let mut got = 0;
        while got < trips {
            events.clear();
            // A notification ends the wait without an event: count the wait's return (one
            // notification is in flight at a time).
            poller.wait(&mut events, None).expect("wait");
            got += 1;
            if let Some(o) = other.lock().expect("poller").as_ref() {
                o.notify().expect("notify");
            }
        }
        got
    }

    fn calloop_side(
        i: usize,
        trips: u64,
        mine: &Slot<calloop::ping::Ping>,
        other: &Slot<calloop::ping::Ping>,
        go: &dyn Fn(),
    ) -> u64 {
        let (ping, source) = calloop::ping::make_ping().expect("ping");
        let mut el: calloop::EventLoop<'_, u64> = calloop::EventLoop::try_new().expect("calloop");
        let other = other.clone();
        el.handle()
            .insert_source(source, move |_, _, got: &mut u64| {
                *got += 1;
                if let Some(o) = other.lock().expect("ping").as_ref() {
                    o.ping();
                }
            })
            .expect("source");
        *mine.lock().expect("slot") = Some(ping.clone());
        go();
        if i == 0 {
            ping.ping();
        }
        let mut got = 0;
        while got < trips {
            el.dispatch(None, &mut got).expect("dispatch");
        }
        got
    }

    pub fn main() {
        let args: Vec<String> = std::env::args().collect();
        let rounds = arg(&args, "--rounds", 7).max(3) as usize;
        let trips = arg(&args, "--trips", 20_000).max(1);
        type V = (&'static str, fn(u64) -> (f64, [u64; 2]));
        let variants: [V; 5] = [
            ("dasynq EventLoop + Waker", |n| ping_pong(n, dasynq_side)),
            ("mio Poll + Waker", |n| ping_pong(n, mio_side)),
            ("raw epoll + eventfd (ET)", |n| ping_pong(n, raw_side)),
            ("polling Poller::notify", |n| ping_pong(n, polling_side)),
            ("calloop ping", |n| ping_pong(n, calloop_side)),
        ];
        println!("wake round trips between two threads: {trips} per run, {rounds} rounds");
        // Warm-up, and the work check: each side of every variant handled one wake per
        // round trip (one wake is in flight at a time, so none coalesce).
        println!("work per variant (wakes handled by each side):");
        for (name, f) in &variants {
            let (_, got) = f(trips);
            println!("  {name:<28} {:>8} {:>8}", got[0], got[1]);
            assert_eq!(got, [trips, trips], "{name} did a different amount of work");
        }
        let mut ns: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        for round in 0..rounds {
            for k in 0..variants.len() {
                let i = (k + round) % variants.len();
                let (t, got) = (variants[i].1)(trips);
                assert_eq!(got, [trips, trips], "{}: work", variants[i].0);
                ns[i].push(t);
            }
        }
        for (i, (name, _)) in variants.iter().enumerate() {
            let mut v = ns[i].clone();
            println!(
                "{name:<28} median {:>8.1} ns per round trip",
                median(&mut v)
            );
        }
        let ratio = |a: usize, b: usize| median_ratio(&ns[a], &ns[b]);
        println!("median ratio dasynq / mio:   {:.3}", ratio(0, 1));
        println!("median ratio dasynq / floor: {:.3}", ratio(0, 2));
        println!("median ratio mio / floor:    {:.3}", ratio(1, 2));
        println!("median ratio dasynq / polling: {:.3}", ratio(0, 3));
        println!("median ratio dasynq / calloop: {:.3}", ratio(0, 4));
        local(rounds, arg(&args, "--passes", 200_000).max(1));
    }
}

#[cfg(dasynq_epoll)]
fn main() {
    imp::main()
}

#[cfg(not(dasynq_epoll))]
fn main() {
    eprintln!("wake: this benchmark compares dasynq with raw epoll and runs on Linux only");
}
