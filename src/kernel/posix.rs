//! POSIX calls shared by every real kernel: the calling thread's signal mask.

use core::mem::MaybeUninit;

use crate::error::Errno;
use crate::signal::{MAX_SIGNAL, Signal, SignalSet};

/// A `sigset_t` holding exactly `set`.
pub(crate) fn to_sigset(set: SignalSet) -> libc::sigset_t {
    let mut raw = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `sigemptyset` initialises the whole set it is given; we read it only after.
    unsafe { libc::sigemptyset(raw.as_mut_ptr()) };
    // SAFETY: initialised just above.
    let mut raw = unsafe { raw.assume_init() };
    for sig in set.iter() {
        // SAFETY: `raw` is a valid, initialised set; an out-of-range number only makes
        // `sigaddset` return EINVAL, which leaves the set unchanged.
        unsafe { libc::sigaddset(&mut raw, sig.raw()) };
    }
    raw
}

pub(crate) fn from_sigset(raw: &libc::sigset_t) -> SignalSet {
    let mut set = SignalSet::new();
    for n in 1..=MAX_SIGNAL {
        // SAFETY: `raw` is an initialised set; `sigismember` only reads it and answers -1 for a
        // number it does not know.
        if unsafe { libc::sigismember(raw, n) } == 1 {
            set.add(Signal::from_raw(n));
        }
    }
    set
}

fn sigmask(how: libc::c_int, set: Option<SignalSet>) -> Result<SignalSet, Errno> {
    let new = set.map(to_sigset);
    let mut old = MaybeUninit::<libc::sigset_t>::uninit();
    let new_ptr = new
        .as_ref()
        .map_or(core::ptr::null(), |s| s as *const libc::sigset_t);
    // SAFETY: `new_ptr` is null or points to an initialised set that outlives the call;
    // `old` is written by the call before we read it (on success).
    let r = unsafe { libc::pthread_sigmask(how, new_ptr, old.as_mut_ptr()) };
    if r != 0 {
        return Err(Errno(r));
    }
    // SAFETY: `pthread_sigmask` succeeded, so it filled `old`.
    let old = unsafe { old.assume_init() };
    Ok(from_sigset(&old))
}

/// Make `cmd`'s child start with a clean signal state: the default disposition for every
/// signal in `set` and every signal blocked in the calling thread, then an empty mask. What
/// `posix_spawn` does with `POSIX_SPAWN_SETSIGDEF` and `POSIX_SPAWN_SETSIGMASK`; `Command`
/// cannot ask for those, so this is a `pre_exec` hook, run in the child between `fork` and
/// `exec` (which makes `Command` fork instead of using `posix_spawn`: the cost is measured by
/// `cargo bench --bench signals_children`).
pub(crate) fn reset_signals_in_child(cmd: &mut std::process::Command, set: SignalSet) {
    use std::os::unix::process::CommandExt;
    let reset = child_reset_set(set);
    // Computed here, in the parent: the child only reads this copy (no allocation there).
    let hook = move || {
        reset_in_child(reset);
        Ok(())
    };
    // The hook allocates nothing (the set is a `Copy` value captured by move, iterated in
    // place) and touches no lock.
    // SAFETY: `pre_exec` runs the hook in the forked child, which must only make async-signal-
    // safe calls: it makes only `sigaction` and `sigprocmask`, both on POSIX's list.
    unsafe { cmd.pre_exec(hook) };
}

/// The signals a child's reset gives the default disposition: those in `set`, those blocked
/// in the calling thread, and `SIGPIPE` (Rust ignores it; `Command` resets it too); never
/// `SIGKILL`, `SIGSTOP` or the C library's own.
pub(crate) fn child_reset_set(set: SignalSet) -> SignalSet {
    let mut reset = set.union(blocked_signals());
    reset.add(Signal::PIPE);
    let all = reset;
    for sig in all.iter() {
        if sig.unwatchable().is_some() {
            reset.remove(sig);
        }
    }
    reset
}

/// The child side of [`reset_signals_in_child`]. Errors are ignored: a number the C library
/// refuses (its own reserved signals) keeps what it had, which is still not blocked below.
fn reset_in_child(reset: SignalSet) {
    for sig in reset.iter() {
        // SAFETY: all zeroes is a valid `sigaction` (no flags, empty mask); `sa_sigaction`
        // set to `SIG_DFL` asks for the default action; the old action is not read.
        unsafe {
            let mut dfl: libc::sigaction = core::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig.raw(), &dfl, core::ptr::null_mut());
        }
    }
    let empty = to_sigset(SignalSet::new());
    // SAFETY: `empty` is an initialised set that outlives the call; the old mask is not read.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, core::ptr::null_mut()) };
}

/// A close-on-exec pipe, `(read end, write end)`: `pipe2(O_CLOEXEC)` where the system has it
/// (also what Miri supports), else `pipe` and `fcntl`.
#[cfg_attr(
    not(any(dasynq_epoll, dasynq_kqueue, test, feature = "sim")),
    allow(dead_code)
)]
pub(crate) fn cloexec_pipe() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), Errno> {
    #[cfg(dasynq_pipe2)]
    {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(Errno::from_rustix)
    }
    #[cfg(not(dasynq_pipe2))]
    {
        let (r, w) = rustix::pipe::pipe().map_err(Errno::from_rustix)?;
        for fd in [&r, &w] {
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)
                .map_err(Errno::from_rustix)?;
        }
        Ok((r, w))
    }
}

/// The portable fields of a `siginfo` the kernel filled for signal `signo`.
#[cfg(dasynq_sigtimedwait)]
#[cfg_attr(dasynq_epoll, allow(dead_code))]
pub(crate) fn siginfo(i: &libc::siginfo_t, signo: libc::c_int) -> crate::signal::SigInfo {
    // SAFETY: the accessors read fields of a siginfo the kernel filled for this signal.
    let (pid, uid, status, value) = unsafe {
        (
            i.si_pid(),
            i.si_uid(),
            i.si_status(),
            i.si_value().sival_ptr as usize as u64,
        )
    };
    crate::signal::SigInfo::new(Signal::from_raw(signo))
        .with_code(i.si_code)
        .with_errno(i.si_errno)
        .with_sender(pid, uid)
        .with_status(status)
        .with_value(value)
}

/// Block `set` in the calling thread; returns the signals blocked before. Call it in `main`
/// before starting any thread, so every thread inherits the mask (see
/// [the masking rule](crate::Signal#the-masking-rule)).
pub fn block_signals(set: SignalSet) -> Result<SignalSet, Errno> {
    sigmask(libc::SIG_BLOCK, Some(set))
}

/// Unblock `set` in the calling thread; returns the signals blocked before.
pub fn unblock_signals(set: SignalSet) -> Result<SignalSet, Errno> {
    sigmask(libc::SIG_UNBLOCK, Some(set))
}

/// The signals blocked in the calling thread.
pub fn blocked_signals() -> SignalSet {
    sigmask(libc::SIG_BLOCK, None).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no pthread_sigmask")]
    fn block_and_unblock_in_this_thread() {
        // A fresh thread so the test does not disturb others.
        std::thread::spawn(|| {
            let s = SignalSet::of(&[Signal::WINCH, Signal::URG]);
            let before = block_signals(s).unwrap();
            let now = blocked_signals();
            assert!(now.contains(Signal::WINCH) && now.contains(Signal::URG));
            unblock_signals(s).unwrap();
            assert_eq!(blocked_signals(), before);
        })
        .join()
        .unwrap();
    }
}
