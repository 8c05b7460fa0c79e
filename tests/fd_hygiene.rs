//! Dropping a loop closes every fd it holds: its own (epoll, timer fds, eventfd) and the
//! registered ones (the original leaked its interrupt fd per threaded loop). Alone in its test
//! binary so no other test opens fds while it counts them.

use dasynq::{
    Control, EventLoop, FdOptions, FnHandler, Interest, Priority, Rearm, SendFnHandler,
    ThreadedLoop,
};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn dropping_a_loop_closes_every_fd_it_holds() {
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
