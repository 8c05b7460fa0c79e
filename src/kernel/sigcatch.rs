//! Taking one pending signal instance, with its `siginfo`, where there is no `sigtimedwait`
//! (macOS, OpenBSD): a catching handler and a brief unblock in the calling thread.
//!
//! The watched signals are blocked in every thread (the masking rule), so an instance stays
//! pending until someone takes it. To take one without blocking, the loop looks at
//! `sigpending`, installs an `SA_SIGINFO` handler for that signal (once), and unblocks just
//! that signal in its own thread for the length of one `pthread_sigmask` call: POSIX says a
//! pending signal that a `sigprocmask` call unblocks is delivered before the call returns, so
//! the handler runs right there, on this thread, and stores the `siginfo`; blocking it again
//! ends the window. If something else took the instance between `sigpending` and the unblock,
//! nothing is delivered and the take finds nothing: it never waits (`sigwait` would block,
//! with the loop's state lock held).
//!
//! Dispositions are process-wide: the handler stays installed while the loop may take the
//! signal, and [`release`] puts the previous disposition back when the backend is dropped.
//! While the masking rule holds the handler can run only inside the window; a thread that
//! breaks the rule and has the signal unblocked would run it too, and its instance is then
//! taken by the next take instead of running the default action.
//!
//! This works on every POSIX system; it is also built on Linux for its tests, which run it
//! against the real kernel.

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use super::posix::to_sigset;
use crate::error::Errno;
use crate::signal::{MAX_SIGNAL, SigInfo, Signal, SignalSet};

/// One caught instance, written by the handler.
struct Caught {
    full: AtomicBool,
    code: AtomicI32,
    errno: AtomicI32,
    pid: AtomicI32,
    uid: AtomicU32,
    status: AtomicI32,
    value: AtomicU64,
}

impl Caught {
    const fn new() -> Self {
        Caught {
            full: AtomicBool::new(false),
            code: AtomicI32::new(0),
            errno: AtomicI32::new(0),
            pid: AtomicI32::new(0),
            uid: AtomicU32::new(0),
            status: AtomicI32::new(0),
            value: AtomicU64::new(0),
        }
    }
}

const SLOTS: usize = MAX_SIGNAL as usize + 1;
static CAUGHT: [Caught; SLOTS] = [const { Caught::new() }; SLOTS];

/// The dispositions replaced by the handler, per signal.
struct Saved {
    installed: SignalSet,
    old: [MaybeUninit<libc::sigaction>; SLOTS],
}

// SAFETY: `libc::sigaction` is plain data (a handler address, flags and a mask); it is only
// moved between threads, never shared while borrowed.
unsafe impl Send for Saved {}

static SAVED: Mutex<Saved> = Mutex::new(Saved {
    installed: SignalSet::new(),
    old: [const { MaybeUninit::uninit() }; SLOTS],
});

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let Some(slot) = usize::try_from(sig).ok().and_then(|i| CAUGHT.get(i)) else {
        return;
    };
    // An instance already caught and not yet taken keeps its place (only a thread breaking
    // the masking rule can deliver a second one before it is taken).
    if slot.full.load(Ordering::Acquire) {
        return;
    }
    if !info.is_null() {
        // SAFETY: the kernel passes a valid siginfo for this delivery (SA_SIGINFO); the
        // accessors read fields of it.
        let i = unsafe { &*info };
        // SAFETY: as above; each accessor reads a plain field of the kernel's siginfo.
        let (pid, uid, status, value) = unsafe {
            (
                i.si_pid(),
                i.si_uid(),
                i.si_status(),
                i.si_value().sival_ptr as usize as u64,
            )
        };
        slot.code.store(i.si_code, Ordering::Relaxed);
        slot.errno.store(i.si_errno, Ordering::Relaxed);
        slot.pid.store(pid, Ordering::Relaxed);
        slot.uid.store(uid, Ordering::Relaxed);
        slot.status.store(status, Ordering::Relaxed);
        slot.value.store(value, Ordering::Relaxed);
    }
    slot.full.store(true, Ordering::Release);
}

fn last_errno() -> Errno {
    Errno(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

/// Install the catching handler for `sig` if it is not installed yet.
fn install(sig: Signal) -> Result<(), Errno> {
    let mut saved = SAVED.lock().unwrap_or_else(|p| p.into_inner());
    if saved.installed.contains(sig) {
        return Ok(());
    }
    let i = usize::try_from(sig.raw()).map_err(|_| Errno::INVAL)?;
    let old = saved.old.get_mut(i).ok_or(Errno::INVAL)?;
    // SAFETY: all zeroes is a valid `sigaction`; the fields set below make it an SA_SIGINFO
    // handler with every signal blocked while it runs (so it never nests).
    let mut act: libc::sigaction = unsafe { core::mem::zeroed() };
    act.sa_sigaction = on_signal as *const () as usize as libc::sighandler_t;
    act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: `sa_mask` is a valid set to fill.
    unsafe { libc::sigfillset(&mut act.sa_mask) };
    // SAFETY: `act` is a valid action; `old` is written with the previous one on success.
    if unsafe { libc::sigaction(sig.raw(), &act, old.as_mut_ptr()) } < 0 {
        return Err(last_errno());
    }
    saved.installed.add(sig);
    Ok(())
}

/// Put back the dispositions the handler replaced, for the signals in `set`.
pub(crate) fn release(set: SignalSet) {
    let mut saved = SAVED.lock().unwrap_or_else(|p| p.into_inner());
    for sig in set.iter() {
        if !saved.installed.contains(sig) {
            continue;
        }
        let Some(old) = usize::try_from(sig.raw())
            .ok()
            .and_then(|i| saved.old.get(i))
        else {
            continue;
        };
        // SAFETY: `installed` holds `sig` only after `sigaction` wrote its old action here.
        let old = unsafe { old.assume_init() };
        // SAFETY: `old` is the action the kernel gave back for this signal.
        unsafe { libc::sigaction(sig.raw(), &old, core::ptr::null_mut()) };
        saved.installed.remove(sig);
    }
}

fn mask(how: libc::c_int, sig: Signal) -> Result<(), Errno> {
    let set = to_sigset(SignalSet::of(&[sig]));
    // SAFETY: `set` is initialised and outlives the call; the old mask is not read.
    let r = unsafe { libc::pthread_sigmask(how, &set, core::ptr::null_mut()) };
    if r != 0 {
        return Err(Errno(r));
    }
    Ok(())
}

/// The instance caught for `sig`, if one was.
fn taken(sig: Signal) -> Option<SigInfo> {
    let slot = usize::try_from(sig.raw())
        .ok()
        .and_then(|i| CAUGHT.get(i))?;
    if !slot.full.load(Ordering::Acquire) {
        return None;
    }
    let info = SigInfo::new(sig)
        .with_code(slot.code.load(Ordering::Relaxed))
        .with_errno(slot.errno.load(Ordering::Relaxed))
        .with_sender(
            slot.pid.load(Ordering::Relaxed),
            slot.uid.load(Ordering::Relaxed),
        )
        .with_status(slot.status.load(Ordering::Relaxed))
        .with_value(slot.value.load(Ordering::Relaxed));
    slot.full.store(false, Ordering::Release);
    Some(info)
}

/// The signals pending for this thread or the process.
fn pending() -> Result<SignalSet, Errno> {
    let mut raw = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `sigpending` fills the set it is given.
    if unsafe { libc::sigpending(raw.as_mut_ptr()) } < 0 {
        return Err(last_errno());
    }
    // SAFETY: filled by the successful call.
    let raw = unsafe { raw.assume_init() };
    Ok(super::posix::from_sigset(&raw))
}

/// Take one pending instance of a signal in `set` (each blocked in this thread), lowest
/// number first, with its `siginfo`; `Ok(None)` if none is pending. Never blocks.
pub(crate) fn take(set: SignalSet) -> Result<Option<SigInfo>, Errno> {
    take_with(set, pending)
}

/// [`take`] with the pending set coming from `pending` (tests stand in for a race there).
fn take_with(
    set: SignalSet,
    pending: impl Fn() -> Result<SignalSet, Errno>,
) -> Result<Option<SigInfo>, Errno> {
    // One caught earlier by a thread that broke the masking rule goes first.
    for sig in set.iter() {
        if let Some(info) = taken(sig) {
            return Ok(Some(info));
        }
    }
    let candidates = pending()?;
    for sig in set.iter().filter(|s| candidates.contains(*s)) {
        install(sig)?;
        // The window: delivered (to the handler, on this thread) before the unblocking call
        // returns, if it is still pending.
        let opened = mask(libc::SIG_UNBLOCK, sig);
        let closed = mask(libc::SIG_BLOCK, sig);
        opened.and(closed)?;
        if let Some(info) = taken(sig) {
            return Ok(Some(info));
        }
        // Taken by someone else meanwhile: look at the next one.
    }
    Ok(None)
}

#[cfg(all(test, dasynq_epoll, not(miri)))]
mod tests {
    use super::*;

    /// Runs `f` on a fresh thread with `sigs` blocked in it (only there: thread-directed
    /// signals keep the test harness's other threads out of it), one test at a time (the
    /// dispositions and the caught slots are process-wide).
    fn in_thread(sigs: &[Signal], f: impl FnOnce() + Send + 'static) {
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let set = SignalSet::of(sigs);
        std::thread::spawn(move || {
            crate::block_signals(set).unwrap();
            f();
        })
        .join()
        .unwrap();
    }

    fn raise_here(sig: Signal) {
        // SAFETY: (test) a signal to the calling thread itself, where it is blocked.
        let r = unsafe { libc::pthread_kill(libc::pthread_self(), sig.raw()) };
        assert_eq!(r, 0);
    }

    #[test]
    fn takes_each_pending_instance_once_with_its_siginfo_and_never_blocks() {
        let (a, b) = if Signal::URG < Signal::WINCH {
            (Signal::URG, Signal::WINCH)
        } else {
            (Signal::WINCH, Signal::URG)
        };
        in_thread(&[a, b], move || {
            let set = SignalSet::of(&[a, b]);
            assert_eq!(take(set), Ok(None), "nothing pending: returns at once");
            raise_here(b);
            raise_here(a);
            let first = take(set).unwrap().expect("an instance");
            assert_eq!(first.signal(), a, "lowest number first");
            assert_eq!(
                first.pid(),
                std::process::id() as i32,
                "siginfo: the sender"
            );
            assert_eq!(first.code(), libc::SI_TKILL);
            assert_eq!(take(set).unwrap().map(|i| i.signal()), Some(b));
            assert_eq!(take(set), Ok(None));
            assert!(
                crate::blocked_signals().contains(a),
                "blocked again after the window"
            );
            release(set);
        });
    }

    /// The race `sigwait` lost: `sigpending` said pending, then something else took the
    /// instance. The take must find nothing and return, not wait.
    #[test]
    fn an_instance_taken_elsewhere_after_sigpending_is_not_waited_for() {
        let sig = Signal::WINCH;
        in_thread(&[sig], move || {
            let set = SignalSet::of(&[sig]);
            let claims_pending = || Ok(SignalSet::of(&[sig]));
            assert_eq!(take_with(set, claims_pending), Ok(None));
            release(set);
        });
    }

    #[test]
    fn release_puts_the_old_disposition_back() {
        let sig = Signal::URG;
        in_thread(&[sig], move || {
            let set = SignalSet::of(&[sig]);
            raise_here(sig);
            assert!(take(set).unwrap().is_some());
            release(set);
            let mut now = MaybeUninit::<libc::sigaction>::uninit();
            // SAFETY: (test) reads the current action into `now`.
            unsafe { libc::sigaction(sig.raw(), core::ptr::null(), now.as_mut_ptr()) };
            // SAFETY: (test) filled by the call above.
            let now = unsafe { now.assume_init() };
            assert_eq!(now.sa_sigaction, libc::SIG_DFL);
        });
    }
}
