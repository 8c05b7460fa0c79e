//! Fd hygiene: dropping a loop closes every fd it holds, its own (epoll, timer fds, eventfd)
//! and the registered ones (the original leaked its interrupt fd per threaded loop); a
//! reused fd number is a new registration. In their own test binary, serialised, so no other
//! test opens fds while these count or reuse them.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dasynq::{
    Event, EventLoop, FdOptions, FnHandler, Interest, Priority, Rearm, SendFnHandler, ThreadedLoop,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn dropping_a_loop_closes_every_fd_it_holds() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let baseline = open_fds();
    {
        let lp = EventLoop::<FnHandler>::builder().build().unwrap();
        let (r, _w) = rustix::pipe::pipe().unwrap();
        lp.add_fd(
            r,
            Interest::READ,
            FdOptions::new(),
            FnHandler::new(|_, _| Rearm::Rearm),
        )
        .unwrap();
        let (_id, waker) = lp
            .add_wake(Priority::DEFAULT, FnHandler::new(|_, _| Rearm::Rearm))
            .unwrap();
        waker.wake();
        lp.poll();
    }
    {
        let lp = ThreadedLoop::<SendFnHandler>::builder().build().unwrap();
        let (r, _w) = rustix::pipe::pipe().unwrap();
        lp.add_fd(
            r,
            Interest::READ,
            FdOptions::new(),
            SendFnHandler::new(|_, _| Rearm::Rearm),
        )
        .unwrap();
        lp.poll();
    }
    assert_eq!(
        open_fds(),
        baseline,
        "the loop's own fds and the registered ones are closed"
    );
}

#[test]
fn a_reused_fd_number_is_a_new_registration() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lp = EventLoop::<FnHandler>::builder().build().unwrap();
    let (r1, w1) = rustix::pipe::pipe().unwrap();
    let n1 = r1.as_raw_fd();
    let old = lp
        .add_fd(
            r1,
            Interest::READ,
            FdOptions::new(),
            FnHandler::new(|_, _| Rearm::Rearm),
        )
        .unwrap();
    lp.remove(old).unwrap(); // closes r1
    drop(w1);
    let (r2, w2) = rustix::pipe::pipe().unwrap();
    assert_eq!(r2.as_raw_fd(), n1, "the kernel reused the number");
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    lp.add_fd(
        r2,
        Interest::READ,
        FdOptions::new(),
        FnHandler::new(move |_, ev| {
            if let Event::Fd { fd, .. } = ev {
                let mut b = [0u8; 8];
                let _ = rustix::io::read(fd, &mut b);
            }
            h.fetch_add(1, Ordering::SeqCst);
            Rearm::Rearm
        }),
    )
    .unwrap();
    rustix::io::write(&w2, b"x").unwrap();
    assert_eq!(lp.run(), 1);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(!lp.contains(old));
    let _ = w2.as_fd();
}
