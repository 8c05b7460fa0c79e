//! A loop driven from another event loop (mio, edge-triggered, as tokio's `AsyncFd` is):
//! the outer loop blocks in its own plain wait on the loop's `AsFd` and calls `poll` when it
//! is readable. Every event must arrive through that blocking path alone: fd data, a timer
//! expiry, a wake from another thread, and work queued in user space (a `Requeue`), which the
//! kernel object would not show by itself.

#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use dasynq::{
    Clock, Cx, Deadline, Event, EventLoop, FdOptions, Flavor, Handler, Interest, Priority, Rearm,
    Single, Threaded,
};
use mio::unix::SourceFd;

#[derive(Default, Debug)]
struct Seen {
    bytes: usize,
    timer: u64,
    wakes: u32,
    requeued: u32,
}

enum W {
    Input,
    Timer,
    Wake,
    /// Requeues itself twice, then stops.
    Again,
}

impl Handler for W {
    type Data = Seen;
    fn on_event(&mut self, _cx: &Cx<'_, Self>, seen: &mut Seen, ev: Event<'_>) -> Rearm {
        match self {
            W::Input => {
                let Some(mut s) = ev.view::<UnixStream>() else {
                    return Rearm::Rearm;
                };
                let mut buf = [0; 64];
                // Drain: the outer loop is edge-triggered.
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => return Rearm::Remove,
                        Ok(n) => seen.bytes += n,
                        Err(_) => return Rearm::Rearm,
                    }
                }
            }
            W::Timer => {
                if let Event::Timer { expirations } = ev {
                    seen.timer += expirations;
                }
                Rearm::Rearm
            }
            W::Wake => {
                seen.wakes += 1;
                Rearm::Rearm
            }
            W::Again => {
                seen.requeued += 1;
                if seen.requeued < 3 {
                    Rearm::Requeue
                } else {
                    Rearm::Disarm
                }
            }
        }
    }
}

/// Abort the whole test binary if the blocking path loses an event.
fn watchdog(what: &'static str) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(30)) == Err(mpsc::RecvTimeoutError::Timeout) {
            eprintln!("{what}: an event was lost (the outer loop never woke)");
            std::process::abort();
        }
    });
    tx
}

fn embedded<F: Flavor>(what: &'static str)
where
    EventLoop<W, dasynq::DefaultBackend, F>: AsFd,
{
    let done = watchdog(what);
    let lp = EventLoop::<W, dasynq::DefaultBackend, F>::builder()
        .watchers(8)
        .runners(1)
        .build()
        .unwrap();
    let mut poll = mio::Poll::new().unwrap();
    let raw = lp.as_fd().as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&raw), mio::Token(0), mio::Interest::READABLE)
        .unwrap();
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    lp.add_fd(ours.into(), Interest::READ, FdOptions::new(), W::Input)
        .unwrap();
    let t = lp
        .add_timer(Clock::Monotonic, Priority::DEFAULT, W::Timer)
        .unwrap();
    let (_w, waker) = lp.add_wake(Priority::DEFAULT, W::Wake).unwrap();
    let again = lp
        .add_timer(Clock::Monotonic, Priority::DEFAULT, W::Again)
        .unwrap();
    lp.arm_timer(t, Deadline::After(Duration::from_millis(20)), None)
        .unwrap();
    theirs.write_all(b"hello").unwrap();
    let waker2 = waker.clone();
    let other = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        waker2.wake();
    });
    let mut seen = Seen::default();
    let mut events = mio::Events::with_capacity(8);
    let mut outer_waits = 0;
    while seen.bytes < 5 || seen.timer < 1 || seen.wakes < 1 {
        // The outer loop's plain blocking wait: no timeout.
        poll.poll(&mut events, None).unwrap();
        outer_waits += 1;
        lp.poll_with(&mut seen);
    }
    other.join().unwrap();
    // Then, alone, a handler that requeues itself: after its first call only user space
    // knows there is more to do, and nothing else will happen.
    lp.arm_timer(again, Deadline::After(Duration::ZERO), None)
        .unwrap();
    while seen.requeued < 3 {
        poll.poll(&mut events, None).unwrap();
        outer_waits += 1;
        lp.poll_with(&mut seen);
    }
    assert_eq!(
        (seen.bytes, seen.timer, seen.wakes, seen.requeued),
        (5, 1, 1, 3)
    );
    assert!(outer_waits >= 3, "{what}: {outer_waits} outer waits");
    drop(done);
}

#[test]
fn a_single_threaded_loop_runs_inside_mio() {
    embedded::<Single>("single");
}

#[test]
fn a_threaded_loop_runs_inside_mio() {
    embedded::<Threaded>("threaded");
}

#[test]
fn without_work_the_fd_is_not_readable() {
    let lp = EventLoop::<W>::builder().watchers(4).build().unwrap();
    let (ours, _theirs) = UnixStream::pair().unwrap();
    lp.add_fd(ours.into(), Interest::READ, FdOptions::new(), W::Input)
        .unwrap();
    let fd = lp.as_fd();
    let mut pfd = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    assert_eq!(rustix::event::poll(&mut pfd, Some(&zero)).unwrap(), 0);
}
