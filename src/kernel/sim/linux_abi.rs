//! Linux's numbers for what the simulated epoll kernel models, for builds on other systems
//! (where `libc` has no epoll). Whenever the crate is built for Linux, each value is checked
//! at compile time against the target's own `libc` constant, so the simulation can never
//! agree with the backend on a number the real kernel does not use.

/// `EPOLLIN`.
pub const EPOLLIN: u32 = 0x001;
/// `EPOLLOUT`.
pub const EPOLLOUT: u32 = 0x004;
/// `EPOLLERR`.
pub const EPOLLERR: u32 = 0x008;
/// `EPOLLHUP`.
pub const EPOLLHUP: u32 = 0x010;
/// `EPOLLRDHUP`.
pub const EPOLLRDHUP: u32 = 0x2000;
/// `EPOLLONESHOT`.
pub const EPOLLONESHOT: u32 = 1 << 30;
/// `EPOLLET`.
pub const EPOLLET: u32 = 1 << 31;

#[cfg(dasynq_epoll)]
const _: () = {
    assert!(EPOLLIN == libc::EPOLLIN as u32);
    assert!(EPOLLOUT == libc::EPOLLOUT as u32);
    assert!(EPOLLERR == libc::EPOLLERR as u32);
    assert!(EPOLLHUP == libc::EPOLLHUP as u32);
    assert!(EPOLLRDHUP == libc::EPOLLRDHUP as u32);
    assert!(EPOLLONESHOT == libc::EPOLLONESHOT as u32);
    assert!(EPOLLET == libc::EPOLLET as u32);
};
