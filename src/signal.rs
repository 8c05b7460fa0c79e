//! POSIX signals: numbers ([`Signal`]), sets ([`SignalSet`]), and the per-instance data a
//! signal watcher receives ([`SigInfo`]).
//!
//! The masking rule is documented on [`Signal`], which the crate root re-exports.

use core::fmt;

/// A signal number.
///
/// Constants name the standard signals with this platform's numbers; real-time signals come
/// from [`Signal::rt`]. Any number can be wrapped with [`Signal::from_raw`]; registration
/// checks it.
///
/// # The masking rule
///
/// A watched signal must be blocked in *every* thread of the process, or the kernel may
/// deliver it to a thread that has it unblocked (running its default action, often
/// termination) instead of queueing it for the loop. Block the signals the program will watch
/// in `main`, before starting any thread (threads inherit the mask), with
/// [`block_signals`](crate::block_signals). Registration checks the registering thread and
/// fails with [`Error::SignalNotBlocked`](crate::Error::SignalNotBlocked) otherwise; the
/// other threads are the program's responsibility. Children started by the loop still get a
/// clean signal state ([`ChildSignals`](crate::ChildSignals)).
///
/// ```
/// use dasynq::{Signal, SignalSet};
/// let mut watched = SignalSet::new();
/// watched.add(Signal::TERM);
/// watched.add(Signal::HUP);
/// // In main, before any thread starts:
/// dasynq::block_signals(watched).expect("block");
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal(i32);

macro_rules! signals {
    ($($name:ident = $c:ident: $doc:literal),* $(,)?) => {
        impl Signal {
            $(
                #[doc = $doc]
                pub const $name: Signal = Signal(libc::$c);
            )*
        }

        fn name(n: i32) -> Option<&'static str> {
            match n {
                $(libc::$c => Some(stringify!($c)),)*
                _ => None,
            }
        }
    };
}

signals! {
    HUP = SIGHUP: "Hang-up: the controlling terminal closed; daemons use it for \"reload\".",
    INT = SIGINT: "Interrupt from the keyboard (Ctrl-C).",
    QUIT = SIGQUIT: "Quit from the keyboard.",
    ABRT = SIGABRT: "Abort.",
    KILL = SIGKILL: "Kill: cannot be caught, blocked or watched.",
    USR1 = SIGUSR1: "User-defined signal 1.",
    USR2 = SIGUSR2: "User-defined signal 2.",
    PIPE = SIGPIPE: "Write to a pipe with no reader.",
    ALRM = SIGALRM: "Timer alarm.",
    TERM = SIGTERM: "Termination request.",
    CHLD = SIGCHLD: "A child stopped or terminated.",
    CONT = SIGCONT: "Continue if stopped.",
    STOP = SIGSTOP: "Stop: cannot be caught, blocked or watched.",
    TSTP = SIGTSTP: "Stop from the keyboard.",
    TTIN = SIGTTIN: "Background read from the terminal.",
    TTOU = SIGTTOU: "Background write to the terminal.",
    URG = SIGURG: "Urgent data on a socket.",
    XCPU = SIGXCPU: "CPU time limit exceeded.",
    XFSZ = SIGXFSZ: "File size limit exceeded.",
    VTALRM = SIGVTALRM: "Virtual timer alarm.",
    PROF = SIGPROF: "Profiling timer alarm.",
    WINCH = SIGWINCH: "Terminal window size changed.",
    IO = SIGIO: "I/O possible.",
    SYS = SIGSYS: "Bad system call.",
}

/// The largest signal number a [`SignalSet`] can hold.
pub(crate) const MAX_SIGNAL: i32 = 127;

impl Signal {
    /// Wrap a raw signal number (not checked here; registration checks it).
    pub const fn from_raw(n: i32) -> Signal {
        Signal(n)
    }

    /// The raw number.
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// The `n`th real-time signal (`SIGRTMIN + n`), if it exists on this system (Linux,
    /// FreeBSD and NetBSD have them; macOS, OpenBSD and DragonFly do not). On Linux the C
    /// library reserves the first few kernel real-time signals for itself; this starts after
    /// them.
    pub fn rt(n: u32) -> Option<Signal> {
        let range = Self::rt_range();
        let s = range.start().checked_add(i32::try_from(n).ok()?)?;
        range.contains(&s).then_some(Signal(s))
    }

    /// The range of real-time signals a program may use (`SIGRTMIN..=SIGRTMAX`); empty where
    /// there are none.
    pub fn rt_range() -> core::ops::RangeInclusive<i32> {
        #[cfg(dasynq_epoll)]
        {
            libc::SIGRTMIN()..=libc::SIGRTMAX()
        }
        #[cfg(not(dasynq_epoll))]
        {
            if cfg!(dasynq_rt_signals) {
                platform::RTMIN..=platform::RTMAX
            } else {
                #[allow(clippy::reversed_empty_ranges)]
                {
                    1..=0
                }
            }
        }
    }

    /// Whether this is a real-time signal: its instances queue (each with its own value)
    /// instead of coalescing.
    pub fn is_realtime(self) -> bool {
        Self::rt_range().contains(&self.0)
    }

    /// The largest signal number of this system.
    fn max() -> i32 {
        #[cfg(dasynq_epoll)]
        {
            libc::SIGRTMAX()
        }
        #[cfg(not(dasynq_epoll))]
        {
            platform::MAX
        }
    }

    /// The numbers the C library keeps for itself (glibc's and FreeBSD's threads use the
    /// first numbers above the standard signals): neither watched nor sent.
    fn reserved(self) -> bool {
        let from = platform::RESERVED;
        from != 0 && self.0 >= from && self.0 < *Self::rt_range().start()
    }

    /// Why this signal cannot be watched, if it cannot.
    pub(crate) fn unwatchable(self) -> Option<&'static str> {
        if let Some(why) = self.unsendable() {
            return Some(why);
        }
        if self == Signal::KILL || self == Signal::STOP {
            return Some("SIGKILL and SIGSTOP cannot be caught or watched");
        }
        None
    }

    /// Why this signal cannot be sent to a child, if it cannot: a number outside this
    /// system's range, or one reserved for the C library.
    pub(crate) fn unsendable(self) -> Option<&'static str> {
        if self.0 < 1 || self.0 > MAX_SIGNAL || self.0 > Self::max() {
            return Some("the signal number is out of range on this system (see Signal::rt_range)");
        }
        if self.reserved() {
            return Some("reserved for the C library's threads");
        }
        None
    }
}

/// Signal numbers the `libc` crate does not provide for this system, from `build.rs` (which
/// cites the headers).
mod platform {
    const fn parse(s: &str) -> i32 {
        let b = s.as_bytes();
        let mut i = 0;
        let mut n = 0i32;
        while i < b.len() {
            n = n * 10 + (b[i] - b'0') as i32;
            i += 1;
        }
        n
    }
    #[cfg_attr(dasynq_epoll, allow(dead_code))]
    pub(super) const MAX: i32 = parse(env!("DASYNQ_SIGNAL_MAX"));
    #[cfg_attr(any(dasynq_epoll, not(dasynq_rt_signals)), allow(dead_code))]
    pub(super) const RTMIN: i32 = parse(env!("DASYNQ_SIGNAL_RTMIN"));
    #[cfg_attr(any(dasynq_epoll, not(dasynq_rt_signals)), allow(dead_code))]
    pub(super) const RTMAX: i32 = parse(env!("DASYNQ_SIGNAL_RTMAX"));
    pub(super) const RESERVED: i32 = parse(env!("DASYNQ_SIGNAL_RESERVED"));
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match name(self.0) {
            Some(n) => f.write_str(n),
            None if self.is_realtime() => {
                write!(f, "SIGRTMIN+{}", self.0 - Self::rt_range().start())
            }
            None => write!(f, "SIG{}", self.0),
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A set of signals (numbers 1 to 127).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Default)]
pub struct SignalSet(u128);

impl SignalSet {
    /// The empty set.
    pub const fn new() -> Self {
        SignalSet(0)
    }

    /// A set of the given signals (numbers outside 1 to 127 are ignored).
    pub fn of(signals: &[Signal]) -> Self {
        let mut s = SignalSet::new();
        for &sig in signals {
            s.add(sig);
        }
        s
    }

    fn bit(sig: Signal) -> Option<u128> {
        (1..=MAX_SIGNAL).contains(&sig.0).then(|| 1u128 << sig.0)
    }

    /// Add a signal. Returns false for a number outside 1 to 127.
    pub fn add(&mut self, sig: Signal) -> bool {
        match Self::bit(sig) {
            Some(b) => {
                self.0 |= b;
                true
            }
            None => false,
        }
    }

    /// Remove a signal.
    pub fn remove(&mut self, sig: Signal) {
        if let Some(b) = Self::bit(sig) {
            self.0 &= !b;
        }
    }

    /// Whether the set holds `sig`.
    pub fn contains(&self, sig: Signal) -> bool {
        Self::bit(sig).is_some_and(|b| self.0 & b != 0)
    }

    /// The signals in either set.
    pub const fn union(self, other: SignalSet) -> SignalSet {
        SignalSet(self.0 | other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The signals in the set, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = Signal> + '_ {
        // One step per member (lowest set bit, then clear it), not one per possible number:
        // the loop walks its armed set for every signal instance it takes. Only bits 1 to 127
        // are ever set (`add` refuses the rest).
        let mut bits = self.0;
        core::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let n = bits.trailing_zeros();
            bits &= bits - 1;
            Some(Signal(n as i32))
        })
    }

    /// The lowest signal in the set.
    #[cfg_attr(not(any(test, feature = "sim")), allow(dead_code))]
    pub(crate) fn lowest(&self) -> Option<Signal> {
        (self.0 != 0).then(|| Signal(self.0.trailing_zeros() as i32))
    }
}

impl fmt::Debug for SignalSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// What the kernel says about one delivered instance of a signal: each handler call gets its
/// own.
///
/// The portable fields are methods here; Linux-only ones are behind `cfg`. A field the kernel
/// did not fill for this kind of signal reads as 0.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct SigInfo {
    signo: i32,
    code: i32,
    errno: i32,
    pid: i32,
    uid: u32,
    status: i32,
    value: u64,
    #[cfg(dasynq_epoll)]
    linux: LinuxSigInfo,
}

/// The fields only Linux's `signalfd_siginfo` provides.
#[cfg(dasynq_epoll)]
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, Default)]
pub(crate) struct LinuxSigInfo {
    pub(crate) fd: i32,
    pub(crate) tid: u32,
    pub(crate) band: u32,
    pub(crate) overrun: u32,
    pub(crate) trapno: u32,
    pub(crate) utime: u64,
    pub(crate) stime: u64,
    pub(crate) addr: u64,
}

impl SigInfo {
    /// An instance of `signal` with every other field 0, as `kill` would send from pid 0. Use
    /// the `with_*` methods to fill it (for simulations and tests).
    pub fn new(signal: Signal) -> Self {
        SigInfo {
            signo: signal.0,
            code: 0,
            errno: 0,
            pid: 0,
            uid: 0,
            status: 0,
            value: 0,
            #[cfg(dasynq_epoll)]
            linux: LinuxSigInfo::default(),
        }
    }

    /// Set the `si_code` (how it was sent: `SI_USER`, `SI_QUEUE`, `CLD_EXITED`...).
    pub fn with_code(mut self, code: i32) -> Self {
        self.code = code;
        self
    }
    /// Set the sender's pid and uid.
    pub fn with_sender(mut self, pid: i32, uid: u32) -> Self {
        self.pid = pid;
        self.uid = uid;
        self
    }
    /// Set the value sent with `sigqueue` (both the int and pointer views).
    pub fn with_value(mut self, value: u64) -> Self {
        self.value = value;
        self
    }
    /// Set the child's exit status or signal (`SIGCHLD`).
    pub fn with_status(mut self, status: i32) -> Self {
        self.status = status;
        self
    }
    /// Set the error number.
    pub fn with_errno(mut self, errno: i32) -> Self {
        self.errno = errno;
        self
    }

    /// The signal.
    pub fn signal(&self) -> Signal {
        Signal(self.signo)
    }
    /// `si_code`: how the signal was sent (`SI_USER` for `kill`, `SI_QUEUE` for `sigqueue`,
    /// `CLD_*` for `SIGCHLD`, ...).
    pub fn code(&self) -> i32 {
        self.code
    }
    /// `si_errno`.
    pub fn errno(&self) -> i32 {
        self.errno
    }
    /// `si_pid`: the sending process (or the child, for `SIGCHLD`).
    pub fn pid(&self) -> i32 {
        self.pid
    }
    /// `si_uid`: the real user id of the sender.
    pub fn uid(&self) -> u32 {
        self.uid
    }
    /// `si_status`: the exit code or signal of the child, for `SIGCHLD`.
    pub fn status(&self) -> i32 {
        self.status
    }
    /// `si_value.sival_int`: the integer sent with `sigqueue`.
    pub fn value_int(&self) -> i32 {
        self.value as u32 as i32
    }
    /// `si_value.sival_ptr`: the pointer-sized value sent with `sigqueue` (as an integer; this
    /// crate never dereferences it).
    pub fn value_ptr(&self) -> usize {
        self.value as usize
    }

    /// `ssi_fd`: the fd, for `SIGIO`/`SIGPOLL` (Linux only).
    #[cfg(dasynq_epoll)]
    pub fn fd(&self) -> i32 {
        self.linux.fd
    }
    /// `ssi_tid`: the kernel timer id, for POSIX timer signals (Linux only).
    #[cfg(dasynq_epoll)]
    pub fn timer_id(&self) -> u32 {
        self.linux.tid
    }
    /// `ssi_band`: the band event, for `SIGIO`/`SIGPOLL` (Linux only).
    #[cfg(dasynq_epoll)]
    pub fn band(&self) -> u32 {
        self.linux.band
    }
    /// `ssi_overrun`: the overrun count, for POSIX timer signals (Linux only).
    #[cfg(dasynq_epoll)]
    pub fn overrun(&self) -> u32 {
        self.linux.overrun
    }
    /// `ssi_trapno`: the trap number (Linux only).
    #[cfg(dasynq_epoll)]
    pub fn trapno(&self) -> u32 {
        self.linux.trapno
    }
    /// `ssi_utime`: user CPU time consumed by the child, for `SIGCHLD` (Linux only).
    #[cfg(dasynq_epoll)]
    pub fn utime(&self) -> u64 {
        self.linux.utime
    }
    /// `ssi_stime`: system CPU time consumed by the child, for `SIGCHLD` (Linux only).
    #[cfg(dasynq_epoll)]
    pub fn stime(&self) -> u64 {
        self.linux.stime
    }
    /// `ssi_addr`: the faulting address, for hardware-generated signals (Linux only).
    #[cfg(dasynq_epoll)]
    pub fn addr(&self) -> u64 {
        self.linux.addr
    }

    #[cfg(dasynq_epoll)]
    pub(crate) fn from_signalfd(s: &libc::signalfd_siginfo) -> Self {
        SigInfo {
            signo: s.ssi_signo as i32,
            code: s.ssi_code,
            errno: s.ssi_errno,
            pid: s.ssi_pid as i32,
            uid: s.ssi_uid,
            status: s.ssi_status,
            value: s.ssi_ptr,
            linux: LinuxSigInfo {
                fd: s.ssi_fd,
                tid: s.ssi_tid,
                band: s.ssi_band,
                overrun: s.ssi_overrun,
                trapno: s.ssi_trapno,
                utime: s.ssi_utime,
                stime: s.ssi_stime,
                addr: s.ssi_addr,
            },
        }
    }
}

/// Take up to `max` instances one at a time from `next` (which answers `Ok(None)` when none
/// is pending), handing each to `f`; returns how many. A failure is the answer even after
/// some were taken (those were handed to `f` all the same): the caller must hear of it, since
/// a kqueue backend reports a delivery once, and only the failure path (the core disarms
/// every signal, then arms them again, which makes the backend look again) gets the
/// instance left behind taken. The default of `Backend::take_signals` and
/// `EpollKernel::signalfd_read_many`.
pub(crate) fn take_each<E>(
    max: usize,
    f: &mut dyn FnMut(SigInfo),
    mut next: impl FnMut() -> Result<Option<SigInfo>, E>,
) -> Result<usize, E> {
    let mut n = 0;
    while n < max {
        match next() {
            Ok(Some(info)) => {
                f(info);
                n += 1;
            }
            Ok(None) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_hold_what_they_are_given() {
        let mut s = SignalSet::new();
        assert!(s.add(Signal::USR1));
        assert!(s.add(Signal::from_raw(127)));
        assert!(!s.add(Signal::from_raw(0)));
        assert!(!s.add(Signal::from_raw(128)));
        assert!(s.contains(Signal::USR1) && !s.contains(Signal::USR2));
        assert_eq!(s.lowest(), Some(Signal::USR1));
        s.remove(Signal::USR1);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![Signal::from_raw(127)]);
        assert_eq!(format!("{:?}", Signal::TERM), "SIGTERM");
    }

    quickcheck::quickcheck! {
        /// `iter` (a bit scan) yields what a scan of every number would: the members, lowest
        /// first.
        fn iter_yields_the_members_in_order(numbers: Vec<u8>) -> bool {
            let mut s = SignalSet::new();
            for n in numbers {
                s.add(Signal::from_raw(i32::from(n)));
            }
            let scanned: Vec<Signal> =
                (1..=MAX_SIGNAL).map(Signal).filter(|&x| s.contains(x)).collect();
            s.iter().collect::<Vec<_>>() == scanned
        }
    }

    #[test]
    fn unwatchable_signals_are_named() {
        assert!(Signal::KILL.unwatchable().is_some());
        assert!(Signal::STOP.unwatchable().is_some());
        assert!(Signal::from_raw(0).unwatchable().is_some());
        assert!(Signal::from_raw(65).unwatchable().is_some());
        assert!(Signal::from_raw(32).unwatchable().is_some());
        assert!(Signal::USR1.unwatchable().is_none());
        assert!(Signal::rt(0).unwrap().unwatchable().is_none());
        assert!(Signal::rt(0).unwrap().is_realtime());
        assert_eq!(Signal::rt(1000), None);
    }

    #[test]
    fn values_read_as_int_and_pointer() {
        let i = SigInfo::new(Signal::USR1)
            .with_value(0x1234_0000_0007)
            .with_sender(42, 1000);
        assert_eq!(i.value_int(), 7);
        // Pointer-sized: all of it on 64-bit targets, the low half on 32-bit ones.
        assert_eq!(i.value_ptr(), 0x1234_0000_0007u64 as usize);
        assert_eq!((i.pid(), i.uid(), i.signal()), (42, 1000, Signal::USR1));
    }
}
