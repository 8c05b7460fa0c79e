//! A simulated kqueue(2) over the simulated world, with the differences between FreeBSD,
//! NetBSD, OpenBSD, DragonFly and macOS selectable as a [`KqueuePlatform`].
//!
//! Every change, event, errno and signal take crosses the simulated system-call boundary in
//! the simulated platform's own numbers ([`KqueueAbi`]), through the same translation the
//! real kernel's calls go through: a number the backend gets wrong for a platform shows up
//! in that platform's simulated tests.
//!
//! # Modelled rules
//!
//! Each rule the simulation models, where each platform documents (or implements) it, and
//! the test that exercises it. Man-page sections are those of kqueue(2); "src" means the
//! kernel source (`kern_event.c`) where the man page is silent or wrong. Sources read: FreeBSD
//! 14 (lib/libc/sys/kqueue.2 of 2020-10-08, sys/kern/kern_event.c); NetBSD 10 (kqueue.2 1.57,
//! kern_event.c 1.140); OpenBSD (kqueue.2 1.26; kern_event.c 1.101 of 2018 and 1.205 of 2025);
//! DragonFly (kqueue.2 of 2016-06-08, kern_event.c); Apple xnu-11417.101.15 (bsd/man/man2/
//! kqueue.2, bsd/sys/event.h, bsd/kern/kern_event.c, kern_sig.c).
//!
//! | # | rule | FreeBSD | NetBSD | OpenBSD | DragonFly | macOS | test |
//! |---|---|---|---|---|---|---|---|
//! | K1 | knote = (ident, filter); `EV_ADD` creates it enabled (unless `EV_DISABLE`), or modifies an existing one: udata and data only; it neither re-enables it nor changes `EV_ONESHOT`/`EV_CLEAR`/`EV_DISPATCH` | DESCRIPTION, EV_ADD; src `kqueue_register` | same; src | same; src `knote_assign` | same; src | DESCRIPTION (udata also part of the key with `EV_UDATA_SPECIFIC`, unused); src `knote_apply_touch` | `changes_follow_the_man_page`, `adding_an_existing_knote_again_only_modifies_it` |
//! | K2 | `EV_DELETE`/`EV_ENABLE`/`EV_DISABLE` of a missing knote: `ENOENT` | ERRORS | ERRORS | ERRORS | ERRORS | ERRORS | `changes_follow_the_man_page` |
//! | K3 | a change's error comes back as an `EV_ERROR` entry (errno in `data`) if there is room, else `kevent` fails with it; `EV_RECEIPT` answers every change (`data` 0) and drains nothing; with the list full, later changes are not processed | RETURN VALUES; EV_RECEIPT | same | src `sys_kevent` (2018 on) | RETURN VALUES; EV_RECEIPT | RETURN VALUES; EV_RECEIPT, but goes on when full (src) | `changes_follow_the_man_page`, `a_full_receipt_list_ends_the_change_list_except_on_macos` |
//! | K4 | `EV_ONESHOT` deletes the knote after its first report, `EV_DISPATCH` disables it | EV_ONESHOT, EV_DISPATCH | same | src (not in the 2013 page) | same | EV_ONESHOT; `EV_DISPATCH` in event.h only | `level_oneshot_dispatch_and_eof` |
//! | K5 | `EV_CLEAR` resets the state after a report (modelled for `EVFILT_USER`) | EV_CLEAR | EV_CLEAR | EV_CLEAR | EV_CLEAR | EV_CLEAR | `timers_procs_and_user_events` |
//! | K6 | `EVFILT_READ`/`WRITE` on pipes and sockets: ready while data can be read (written); `EV_EOF` once the other end is gone or shut down, with the socket error in `fflags` | EVFILT_READ, EVFILT_WRITE | same | same | same | same | `level_oneshot_dispatch_and_eof` |
//! | K7 | closing a file removes its knotes (a later file with the number starts with none) | DESCRIPTION, EV_DELETE | same | same | same | same | `a_closed_fds_knotes_do_not_pass_to_the_next_file_with_its_number` |
//! | K8 | `EVFILT_TIMER`: `data` in milliseconds, or nanoseconds with `NOTE_NSECONDS` (NetBSD numbers the units 0 to 3) | EVFILT_TIMER | EVFILT_TIMER (units from 10.0, HISTORY) | ms here: `libc` has no `NOTE_NSECONDS` for OpenBSD | EVFILT_TIMER: ms only | EVFILT_TIMER | `timers_procs_and_user_events`, `kqueue_abi` tests |
//! | K9 | `NOTE_ABSTIME`: `data` is a system-clock time, converted to a period when added | EVFILT_TIMER; src | EVFILT_TIMER (10.0) | not used (see K8) | none | not used (`NOTE_ABSOLUTE` differs) | `kqueue_translation::system_clock_timers_follow_wall_clock_steps_on_every_profile` |
//! | K10 | `EVFILT_SIGNAL` counts delivery attempts made after it was added (blocked or ignored), as if `EV_CLEAR`; OpenBSD refuses numbers from `NSIG` (33) | EVFILT_SIGNAL | EVFILT_SIGNAL | EVFILT_SIGNAL; src `filt_sigattach` | EVFILT_SIGNAL ("masked by sigprocmask") | EVFILT_SIGNAL (process-directed only) | `signals_record_attempts_after_the_filter_was_added`, `signal_numbers_out_of_range` |
//! | K11 | `EVFILT_PROC`/`NOTE_EXIT` fires when the process exits | EVFILT_PROC | same | same | same | same | `timers_procs_and_user_events` |
//! | K12 | `EVFILT_PROC` on a zombie: reported at once (FreeBSD, DragonFly) or `ESRCH` | src `filt_procattach` (`pfind_any`) | src (`proc_find`: live only) | src (`PS_EXITING`) | src (`zpfind`) | src (`proc_find` after exit) | `proc_filter_on_a_zombie_follows_the_platform` |
//! | K13 | `EVFILT_USER` fires after `NOTE_TRIGGER`; FreeBSD ignores it on the creating `EV_ADD`; the OpenBSD profile has none (added in 2025, after 7.7), so the wake pipe is exercised | EVFILT_USER; src `filt_userattach` | EVFILT_USER (10.0) | none before 7.8 | event.h, src | event.h, src | `user_filter_details` |
//! | K14 | a change of an existing knote (even a plain `EV_ENABLE`/`EV_DISABLE`) stores its udata | src `kqueue_register` | src | no: udata only with `EV_ADD` | src | src `kevent_register` | `udata_follows_any_change_except_on_openbsd` |
//!
//! Not modelled, as the backend never depends on them: periodic timers (the backend always
//! uses `EV_ONESHOT`), `EVFILT_PROC`'s exit status in `data` (it calls `waitpid`), FreeBSD not
//! recording an ignored `SIGCHLD` (watched signals are blocked, not ignored), NetBSD's
//! `EV_CLEAR | EV_DISPATCH` not disabling (never combined), macOS not counting
//! thread-directed signals (the loop's signals are process-directed).
//!
//! The platform profiles' [`Features`] (what the backend may use) are the real backend's too;
//! their sources are in [`KqueuePlatform::features`].

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::world::{Objects, ProcState, SimWorld, reserved};
use crate::backend::kqueue::{
    Features, Filter, Kev, KevFlags, KqueueKernel, NOTE_ABSTIME, NOTE_NSECONDS, NOTE_TRIGGER,
};
use crate::child::{ChildStatus, SpawnedProcess};
use crate::error::Errno;
pub use crate::kernel::kqueue_abi::KqueuePlatform;
use crate::kernel::kqueue_abi::{KqueueAbi, RawKev};
use crate::signal::{SigInfo, Signal, SignalSet};
use crate::timer::Clock;

const KQ_BASE: RawFd = 0x2000_0000;
/// Knotes per simulated kqueue.
const MAX_KNOTES: usize = 8192;

#[derive(Copy, Clone, Debug)]
struct Knote {
    ident: u64,
    filter: Filter,
    enabled: bool,
    flags: KevFlags,
    udata: u64,
    /// Timers: when it fires (monotonic ns).
    deadline: u64,
    /// Signals: delivery attempts seen so far.
    seen: u64,
    /// User events: triggered and not yet reported.
    triggered: bool,
    /// The order knotes became ready in.
    order: u64,
    /// Read and write filters: the object the fd number named when the knote was added
    /// (kqueue(2), DESCRIPTION: closing a descriptor removes the kevents that name it, so a
    /// later fd given the same number starts with none).
    serial: u64,
}

#[derive(Debug)]
struct Instance {
    open: bool,
    knotes: Vec<Knote>,
    scratch: Vec<(u64, usize)>,
}

/// The kqueue tables of a [`KqueueSim`].
#[derive(Debug)]
pub struct KqueueTables {
    platform: KqueuePlatform,
    instances: Vec<Instance>,
}

/// A simulated kqueue kernel: `Kqueue<KqueueSim>` runs the real kqueue backend against it.
/// Create it for a platform with [`KqueueSim::for_platform`]; drive it like any
/// [`SimWorld`].
pub type KqueueSim = SimWorld<KqueueTables>;

/// A kernel object of a [`KqueueSim`]: a kqueue (simulated only) or a pipe end (a simulated
/// pipe, backed like all of them by a real placeholder fd).
pub struct KqSimFd {
    world: KqueueSim,
    fd: RawFd,
    placeholder: Option<OwnedFd>,
}

impl AsRawFd for KqSimFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl Drop for KqSimFd {
    fn drop(&mut self) {
        let fd = self.fd;
        if self.placeholder.is_some() {
            self.world.close(&fd);
        } else {
            self.world.change(|_, x| {
                if let Some(i) = x.instance_mut(fd) {
                    i.open = false;
                    i.knotes.clear();
                }
            });
        }
    }
}

/// The events buffer of a simulated `kevent` wait: the events in the simulated platform's
/// own numbers, decoded by the same translation the real kernel's events go through.
#[derive(Debug)]
pub struct KqSimBuffer {
    raw: Vec<RawKev>,
    scratch: Vec<Kev>,
    abi: &'static KqueueAbi,
}

/// A result as it crosses the simulated system-call boundary: an error leaves as the
/// platform's errno and comes back through the translation.
fn via<T>(abi: &KqueueAbi, r: Result<T, Errno>) -> Result<T, Errno> {
    r.map_err(|e| abi.errno(abi.raw_errno(e)))
}

/// A change or receipt as it crosses the boundary: in the platform's numbers and back.
/// `EINVAL` for one the platform cannot express.
fn cross(abi: &KqueueAbi, k: &Kev) -> Result<Kev, Errno> {
    abi.decode(&abi.encode(k)?).ok_or(Errno::INVAL)
}

impl KqueueTables {
    fn instance_mut(&mut self, fd: RawFd) -> Option<&mut Instance> {
        let i = usize::try_from(fd.checked_sub(KQ_BASE)?).ok()?;
        self.instances.get_mut(i).filter(|i| i.open)
    }
}

/// Whether a knote is ready, with the flags, fflags and data it reports.
fn poll(o: &Objects, k: &Knote) -> Option<(KevFlags, u32, i64)> {
    match k.filter {
        Filter::Read | Filter::Write => {
            let fd = RawFd::try_from(k.ident).ok()?;
            let r = o.readiness(fd)?;
            let eof = if k.filter == Filter::Read {
                r.is_read_closed() || r.is_hangup()
            } else {
                r.is_hangup() || r.is_error()
            };
            let ready = match k.filter {
                Filter::Read => r.is_readable() || eof,
                _ => r.is_writable() || eof,
            };
            let fflags = if r.is_error() {
                Errno::IO.raw() as u32
            } else {
                0
            };
            let flags = if eof || r.is_error() {
                KevFlags::EOF
            } else {
                KevFlags(0)
            };
            ready.then_some((flags, if eof || r.is_error() { fflags } else { 0 }, 0))
        }
        Filter::Timer => (o.now(Clock::Monotonic) >= k.deadline).then_some((KevFlags(0), 0, 1)),
        Filter::Signal => {
            let n = o.signal_attempts(Signal::from_raw(k.ident as i32));
            (n > k.seen).then(|| (KevFlags(0), 0, (n - k.seen) as i64))
        }
        Filter::Proc => {
            let p = o.proc(k.ident as u32)?;
            (p.state != ProcState::Running).then_some((
                KevFlags::EOF,
                crate::backend::kqueue::NOTE_EXIT,
                0,
            ))
        }
        Filter::User => k.triggered.then_some((KevFlags(0), 0, 0)),
    }
}

/// When the object a knote watches last changed (0 for objects without a history).
fn changed(o: &Objects, k: &Knote) -> u64 {
    match k.filter {
        Filter::Read | Filter::Write => RawFd::try_from(k.ident)
            .ok()
            .and_then(|fd| o.get(fd))
            .map_or(0, |obj| obj.changed),
        Filter::Proc => o.proc(k.ident as u32).map_or(0, |p| p.changed),
        _ => 0,
    }
}

/// Whether the object a knote watches still exists.
fn alive(o: &Objects, k: &Knote) -> bool {
    match k.filter {
        Filter::Read | Filter::Write => {
            RawFd::try_from(k.ident).is_ok_and(|fd| o.serial(fd) == Some(k.serial))
        }
        Filter::Proc => o.proc(k.ident as u32).is_some(),
        _ => true,
    }
}

impl KqueueSim {
    /// A simulated kqueue kernel behaving like `platform`'s.
    pub fn for_platform(platform: KqueuePlatform) -> Self {
        SimWorld::with_tables(KqueueTables {
            platform,
            instances: Vec::new(),
        })
    }

    /// Knotes in the simulated kqueue `kq` (for checking that nothing leaked).
    pub fn knotes(&self, kq: &impl AsRawFd) -> usize {
        let mut g = self.lock();
        g.1.instance_mut(kq.as_raw_fd())
            .map_or(0, |i| i.knotes.len())
    }

    /// Knotes in every open simulated kqueue.
    pub fn knotes_total(&self) -> usize {
        let g = self.lock();
        g.1.instances
            .iter()
            .filter(|i| i.open)
            .map(|i| i.knotes.len())
            .sum()
    }

    /// Enabled knotes watching `fd` (either filter) in every open simulated kqueue: what
    /// the kernel would report for it once ready.
    pub fn enabled_fd_knotes(&self, fd: &impl AsRawFd) -> usize {
        let ident = fd.as_raw_fd() as u64;
        let g = self.lock();
        g.1.instances
            .iter()
            .filter(|i| i.open)
            .flat_map(|i| i.knotes.iter())
            .filter(|k| {
                k.ident == ident && k.enabled && matches!(k.filter, Filter::Read | Filter::Write)
            })
            .count()
    }

    /// The platform simulated.
    pub fn platform(&self) -> KqueuePlatform {
        self.quiet().1.platform
    }
}

/// Apply one change; the errno if it fails. Each rule's source is in the module docs.
fn apply(o: &Objects, x: &mut KqueueTables, kq: RawFd, c: &Kev) -> Result<(), Errno> {
    let rules = Rules::of(x.platform);
    let abs_timer = x.platform.features().abs_timer;
    let now = o.now(Clock::Monotonic);
    let inst = x.instance_mut(kq).ok_or(Errno::BADF)?;
    // Knotes of closed fds are gone before any change looks for one (K7).
    inst.knotes.retain(|k| alive(o, k));
    let pos = inst
        .knotes
        .iter()
        .position(|k| k.ident == c.ident && k.filter == c.filter);
    if c.flags.contains(KevFlags::ADD) {
        match c.filter {
            Filter::Read | Filter::Write => {
                let fd = RawFd::try_from(c.ident).map_err(|_| Errno::BADF)?;
                if !o.is_open(fd) {
                    return Err(Errno::BADF);
                }
            }
            // K12: a zombie's exit is reported at once on FreeBSD and DragonFly, refused
            // elsewhere.
            Filter::Proc => match o.proc(c.ident as u32) {
                Some(p) if p.state == ProcState::Running => {}
                Some(p) if rules.zombie_proc_attach && matches!(p.state, ProcState::Exited(_)) => {}
                _ => return Err(Errno::SRCH),
            },
            // K10: only OpenBSD checks the number (`>= NSIG`); the simulation keeps to the
            // numbers it can count.
            Filter::Signal if c.ident == 0 || c.ident > rules.signal_ident_max.min(127) => {
                return Err(Errno::INVAL);
            }
            // K13: kernels without the filter refuse it.
            Filter::User if !rules.user_filter => return Err(Errno::INVAL),
            _ => {}
        }
        let deadline = if c.filter == Filter::Timer && c.fflags & NOTE_ABSTIME != 0 {
            // K9: `data` is an absolute time on the system clock, converted when added: a
            // later clock step does not move it.
            if !abs_timer {
                return Err(Errno::INVAL);
            }
            let abs = c.data.max(0) as u64;
            now.saturating_add(abs.saturating_sub(o.now(Clock::System)))
        } else if c.filter == Filter::Timer {
            // K8: milliseconds, or nanoseconds with NOTE_NSECONDS.
            let unit = if c.fflags & NOTE_NSECONDS != 0 {
                1
            } else {
                1_000_000
            };
            now.saturating_add((c.data.max(0) as u64).saturating_mul(unit))
        } else {
            0
        };
        match pos {
            Some(i) => {
                // K1: EV_ADD of an existing knote modifies it in place: its udata and its
                // filter's data (a timer's period), nothing else. It neither enables it nor
                // changes EV_ONESHOT/EV_CLEAR/EV_DISPATCH, which are fixed at creation.
                let k = &mut inst.knotes[i];
                k.udata = c.udata;
                if k.filter == Filter::Timer {
                    k.deadline = deadline;
                }
            }
            None => {
                if inst.knotes.len() == inst.knotes.capacity() {
                    return Err(Errno::NOMEM);
                }
                let keep = KevFlags::ONESHOT.0 | KevFlags::CLEAR.0 | KevFlags::DISPATCH.0;
                let seen = if c.filter == Filter::Signal {
                    // K10: attempts made before the filter was added are not reported.
                    o.signal_attempts(Signal::from_raw(c.ident as i32))
                } else {
                    0
                };
                inst.knotes.push(Knote {
                    ident: c.ident,
                    filter: c.filter,
                    // K1: a new knote is enabled unless EV_DISABLE is given.
                    enabled: !c.flags.contains(KevFlags::DISABLE),
                    flags: KevFlags(c.flags.0 & keep),
                    udata: c.udata,
                    deadline,
                    seen,
                    // K13: FreeBSD's attach ignores NOTE_TRIGGER on the EV_ADD itself.
                    triggered: c.filter == Filter::User
                        && c.fflags & NOTE_TRIGGER != 0
                        && rules.trigger_on_add,
                    order: o.seq(),
                    serial: RawFd::try_from(c.ident)
                        .ok()
                        .and_then(|fd| o.serial(fd))
                        .unwrap_or(0),
                });
                return Ok(());
            }
        }
    }
    // K2: the other changes need the knote.
    let i = pos.ok_or(Errno::NOENT)?;
    if c.flags.contains(KevFlags::DELETE) {
        inst.knotes.swap_remove(i);
        return Ok(());
    }
    let k = &mut inst.knotes[i];
    if c.flags.contains(KevFlags::ENABLE) {
        k.enabled = true;
        k.order = o.seq();
    }
    if c.flags.contains(KevFlags::DISABLE) {
        k.enabled = false;
    }
    // K14: most kernels store the change's udata on any change of an existing knote.
    if rules.udata_on_any_change {
        k.udata = c.udata;
    }
    if c.filter == Filter::User && c.fflags & NOTE_TRIGGER != 0 {
        k.triggered = true;
    }
    Ok(())
}

/// How the simulated platforms differ where the backend does not choose (each rule's
/// source is in the module docs, under its number).
#[derive(Copy, Clone, Debug)]
struct Rules {
    /// K13: `EVFILT_USER` exists (the OpenBSD profile models 7.7 and earlier, so that the
    /// wake-pipe fallback is exercised).
    user_filter: bool,
    /// K13: `NOTE_TRIGGER` on the `EV_ADD` that creates a user knote triggers it.
    trigger_on_add: bool,
    /// K14: any non-delete change of an existing knote stores the change's `udata`.
    udata_on_any_change: bool,
    /// K12: `EVFILT_PROC` on a zombie attaches and reports the exit at once (else `ESRCH`).
    zombie_proc_attach: bool,
    /// K3: with no room left for a receipt, the remaining changes are not processed.
    receipt_stops_when_full: bool,
    /// K10: the largest signal number `EVFILT_SIGNAL` accepts (`u64::MAX`: not checked).
    signal_ident_max: u64,
}

impl Rules {
    const fn of(p: KqueuePlatform) -> Rules {
        match p {
            KqueuePlatform::FreeBsd => Rules {
                user_filter: true,
                trigger_on_add: false,
                udata_on_any_change: true,
                zombie_proc_attach: true,
                receipt_stops_when_full: true,
                signal_ident_max: u64::MAX,
            },
            KqueuePlatform::NetBsd => Rules {
                user_filter: true,
                trigger_on_add: true,
                udata_on_any_change: true,
                zombie_proc_attach: false,
                receipt_stops_when_full: true,
                signal_ident_max: u64::MAX,
            },
            KqueuePlatform::DragonFly => Rules {
                user_filter: true,
                trigger_on_add: true,
                udata_on_any_change: true,
                zombie_proc_attach: true,
                receipt_stops_when_full: true,
                signal_ident_max: u64::MAX,
            },
            KqueuePlatform::OpenBsd => Rules {
                user_filter: false,
                trigger_on_add: true,
                udata_on_any_change: false,
                zombie_proc_attach: false,
                receipt_stops_when_full: true,
                signal_ident_max: 32,
            },
            KqueuePlatform::MacOs => Rules {
                user_filter: true,
                trigger_on_add: true,
                udata_on_any_change: true,
                zombie_proc_attach: false,
                receipt_stops_when_full: false,
                signal_ident_max: u64::MAX,
            },
        }
    }
}

impl KqueueTables {
    fn collect(&mut self, o: &Objects, kq: RawFd, out: &mut Vec<Kev>) {
        out.clear();
        let Some(inst) = self.instance_mut(kq) else {
            return;
        };
        inst.knotes.retain(|k| alive(o, k));
        inst.scratch.clear();
        for (i, k) in inst.knotes.iter().enumerate() {
            if k.enabled && poll(o, k).is_some() {
                // A knote joins the kernel's active queue when its object changes or when it
                // is (re-)enabled, whichever came last: report in that order.
                inst.scratch.push((k.order.max(changed(o, k)), i));
            }
        }
        inst.scratch.sort_unstable();
        let room = out.capacity();
        let mut dead = 0usize;
        for &(_, i) in inst.scratch.iter().take(room) {
            let k = &mut inst.knotes[i];
            let Some((flags, fflags, data)) = poll(o, k) else {
                continue;
            };
            out.push(Kev {
                ident: k.ident,
                filter: k.filter,
                flags,
                fflags,
                data,
                udata: k.udata,
            });
            if k.filter == Filter::Signal {
                k.seen = o.signal_attempts(Signal::from_raw(k.ident as i32));
            }
            if k.flags.contains(KevFlags::CLEAR) && k.filter == Filter::User {
                k.triggered = false;
            }
            if k.flags.contains(KevFlags::DISPATCH) {
                k.enabled = false;
            }
            if k.flags.contains(KevFlags::ONESHOT) {
                // Deleted after this report (marked now, removed below to keep indices).
                k.enabled = false;
                k.ident = u64::MAX;
                dead += 1;
            }
        }
        if dead > 0 {
            inst.knotes.retain(|k| k.ident != u64::MAX);
        }
    }

    fn next_deadline(&mut self, kq: RawFd) -> Option<u64> {
        let inst = self.instance_mut(kq)?;
        inst.knotes
            .iter()
            .filter(|k| k.enabled && k.filter == Filter::Timer)
            .map(|k| k.deadline)
            .min()
    }
}

impl KqueueKernel for KqueueSim {
    type Fd = KqSimFd;
    type Buffer = KqSimBuffer;

    fn features(&self) -> Features {
        self.platform().features()
    }

    fn kqueue(&self) -> Result<KqSimFd, Errno> {
        let fd = self.change(|_, x| {
            x.instances.push(Instance {
                open: true,
                knotes: reserved(MAX_KNOTES)?,
                scratch: reserved(MAX_KNOTES)?,
            });
            Ok(KQ_BASE + (x.instances.len() - 1) as RawFd)
        })?;
        Ok(KqSimFd {
            world: self.clone(),
            fd,
            placeholder: None,
        })
    }

    fn kevent_change(
        &self,
        kq: &KqSimFd,
        changes: &[Kev],
        receipts: &mut [Kev],
    ) -> Result<usize, Errno> {
        let abi = self.platform().abi();
        via(
            abi,
            self.change(|o, x| {
                let mut n = 0;
                for c in changes {
                    // What the kernel sees: the change in its own numbers (the real kernel's
                    // wrapper fails the whole call for one it cannot express).
                    let c = &cross(abi, c)?;
                    if c.flags.contains(KevFlags::RECEIPT)
                        && !receipts.is_empty()
                        && n >= receipts.len()
                        && Rules::of(x.platform).receipt_stops_when_full
                    {
                        // K3: the receipt list is full: the remaining changes are not processed.
                        return Ok(n);
                    }
                    let r = apply(o, x, kq.fd, c);
                    let receipt = c.flags.contains(KevFlags::RECEIPT);
                    match r {
                        Err(e) if n >= receipts.len() => return Err(e),
                        Err(e) => {
                            receipts[n] = cross(
                                abi,
                                &Kev {
                                    flags: KevFlags::ERROR,
                                    data: i64::from(e.raw()),
                                    ..*c
                                },
                            )?;
                            n += 1;
                        }
                        Ok(()) if receipt && n < receipts.len() => {
                            receipts[n] = cross(
                                abi,
                                &Kev {
                                    flags: KevFlags::ERROR,
                                    data: 0,
                                    ..*c
                                },
                            )?;
                            n += 1;
                        }
                        Ok(()) => {}
                    }
                }
                Ok(n)
            }),
        )
    }

    fn buffer(&self, capacity: usize) -> Result<KqSimBuffer, Errno> {
        Ok(KqSimBuffer {
            raw: reserved(capacity.max(1))?,
            scratch: reserved(capacity.max(1))?,
            abi: self.platform().abi(),
        })
    }

    fn kevent_wait(
        &self,
        kq: &KqSimFd,
        buf: &mut KqSimBuffer,
        timeout: Option<Duration>,
    ) -> Result<(), Errno> {
        // This wait's events only, none on error (as the real wrapper).
        buf.raw.clear();
        let abi = buf.abi;
        {
            let mut g = self.lock();
            if g.1.instance_mut(kq.fd).is_none() {
                return via(abi, Err(Errno::BADF));
            }
        }
        let events = &mut buf.scratch;
        self.wait_with(timeout, |o, x, timed_out| {
            x.collect(o, kq.fd, events);
            if !events.is_empty() || timed_out || timeout == Some(Duration::ZERO) {
                return Ok(());
            }
            Err(x.next_deadline(kq.fd))
        });
        // Reported in the platform's numbers, as the kernel writes them. (An event the
        // platform could not express would be a simulation bug: it is reported as one that
        // does not decode, which the loop counts as a kernel fault, rather than dropped.)
        for ev in buf.scratch.iter() {
            buf.raw.push(abi.encode(ev).unwrap_or(RawKev {
                filter: i32::MIN,
                ..RawKev::default()
            }));
        }
        Ok(())
    }

    fn buffer_events(buf: &KqSimBuffer) -> impl Iterator<Item = Option<Kev>> + '_ {
        buf.raw.iter().map(|r| buf.abi.decode(r))
    }

    fn is_regular_file(&self, fd: RawFd) -> Result<bool, Errno> {
        let g = self.lock();
        let obj = g.0.get(fd).filter(|o| o.open).ok_or(Errno::BADF)?;
        Ok(obj.kind == super::world::Kind::File)
    }

    fn clock_now(&self, clock: Clock) -> u64 {
        self.quiet().0.now(clock)
    }

    fn pipe(&self) -> Result<(KqSimFd, KqSimFd), Errno> {
        let (r, w) = SimWorld::pipe(self)?;
        let (rn, wn) = (r.as_raw_fd(), w.as_raw_fd());
        Ok((
            KqSimFd {
                world: self.clone(),
                fd: rn,
                placeholder: Some(r),
            },
            KqSimFd {
                world: self.clone(),
                fd: wn,
                placeholder: Some(w),
            },
        ))
    }

    fn pipe_poke(&self, fd: &KqSimFd) {
        let _ = self.write(&fd.fd, 1);
    }

    fn pipe_drain(&self, fd: &KqSimFd) {
        let _ = self.read(&fd.fd, u64::MAX);
    }

    fn signal_blocked(&self, signal: Signal) -> bool {
        self.quiet().0.blocked().contains(signal)
    }

    fn not_blocked_error(&self, signal: Signal) -> crate::Error {
        crate::Error::SimSignalNotBlocked(signal)
    }

    fn signal_take(&self, set: SignalSet) -> Result<Option<SigInfo>, Errno> {
        let platform = self.platform();
        let abi = platform.abi();
        // An injected fault is a failed call, whatever its errno says.
        let taken = via(abi, self.change(|o, _| Ok(o.take_signal(set))))?;
        if !platform.features().sigtimedwait {
            // The catching handler's take (`sigcatch`) gives the instance with its siginfo.
            return Ok(taken);
        }
        // What `sigtimedwait(set, info, {0, 0})` answers, read the way the real kernel's
        // answer is read: an instance's number, or -1 and the platform's `EAGAIN`.
        let (r, errno) = match taken {
            Some(info) => (info.signal().raw(), 0),
            None => (-1, abi.raw_errno(Errno::AGAIN)),
        };
        match abi.sigtimedwait(r, errno)? {
            Some(_) => Ok(taken),
            None => Ok(None),
        }
    }

    fn signal_release(&self, _set: SignalSet) {}

    fn probe_child(&self, pid: u32) -> Result<(), Errno> {
        let r = self.change(|o, _| o.wait_process(pid, false).map(|_| ()));
        via(self.platform().abi(), r)
    }

    fn waitpid(&self, pid: u32) -> Result<Option<ChildStatus>, Errno> {
        let r = self.change(|o, _| o.wait_process(pid, true));
        via(self.platform().abi(), r)
    }

    fn kill(&self, pid: u32, signal: Signal) -> Result<(), Errno> {
        via(self.platform().abi(), self.sys_kill(pid, signal))
    }

    fn kill_group(&self, pgid: u32, signal: Signal) -> Result<(), Errno> {
        via(self.platform().abi(), self.sys_kill_group(pgid, signal))
    }

    fn getpgid(&self, pid: u32) -> Result<u32, Errno> {
        via(self.platform().abi(), self.sys_getpgid(pid))
    }

    fn spawn(
        &self,
        cmd: crate::backend::ChildCommand<'_>,
        how: crate::backend::SpawnHow,
    ) -> Result<SpawnedProcess, Errno> {
        self.sys_spawn(&cmd, how)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(p: KqueuePlatform) -> (KqueueSim, KqSimFd, KqSimBuffer) {
        let k = KqueueSim::for_platform(p);
        let kq = k.kqueue().unwrap();
        let buf = k.buffer(16).unwrap();
        (k, kq, buf)
    }

    fn wait0(k: &KqueueSim, kq: &KqSimFd, buf: &mut KqSimBuffer) -> Vec<Kev> {
        k.kevent_wait(kq, buf, Some(Duration::ZERO)).unwrap();
        events(buf)
    }

    fn events(buf: &KqSimBuffer) -> Vec<Kev> {
        KqueueSim::buffer_events(buf)
            .map(|e| e.expect("decodes"))
            .collect()
    }

    fn add(ident: u64, filter: Filter, flags: KevFlags, udata: u64) -> Kev {
        Kev::new(ident, filter, KevFlags::ADD | flags, udata)
    }

    /// Found by the `kqueue_backend` fuzz target: knotes were tied to fd numbers, so a socket
    /// dropped without `close` and a regular file given its number revived the socket's write
    /// knote, which then reported forever under a token nobody owned.
    #[test]
    fn a_closed_fds_knotes_do_not_pass_to_the_next_file_with_its_number() {
        let (k, kq, mut buf) = setup(KqueuePlatform::FreeBsd);
        let (a, _b) = k.socketpair().unwrap();
        let n = a.as_raw_fd();
        let w = add(n as u64, Filter::Write, KevFlags(0), 7);
        assert_eq!(k.kevent_change(&kq, &[w], &mut []), Ok(0));
        assert_eq!(wait0(&k, &kq, &mut buf).len(), 1, "the socket is writable");
        drop(a);
        let _keep = k.file_at_number(n);
        assert!(
            wait0(&k, &kq, &mut buf).is_empty(),
            "the knote went with the socket"
        );
        assert_eq!(k.knotes(&kq), 0);
        let del = Kev::new(n as u64, Filter::Write, KevFlags::DELETE, 0);
        assert_eq!(k.kevent_change(&kq, &[del], &mut []), Err(Errno::NOENT));
    }

    #[test]
    fn changes_follow_the_man_page() {
        let (k, kq, _) = setup(KqueuePlatform::FreeBsd);
        let (r, _w) = k.pipe().unwrap();
        let rn = r.as_raw_fd() as u64;
        let mut out = [Kev::new(0, Filter::Read, KevFlags(0), 0); 4];
        let del = Kev::new(rn, Filter::Read, KevFlags::DELETE, 0);
        assert_eq!(k.kevent_change(&kq, &[del], &mut []), Err(Errno::NOENT));
        assert_eq!(
            k.kevent_change(&kq, &[add(rn, Filter::Read, KevFlags(0), 1)], &mut []),
            Ok(0)
        );
        // Re-adding modifies, no duplicate, no EEXIST.
        assert_eq!(
            k.kevent_change(&kq, &[add(rn, Filter::Read, KevFlags(0), 2)], &mut []),
            Ok(0)
        );
        assert_eq!(k.knotes(&kq), 1);
        // An error goes to the event list when there is room.
        let bad = add(999_999, Filter::Read, KevFlags(0), 3);
        assert_eq!(k.kevent_change(&kq, &[bad], &mut out), Ok(1));
        assert!(
            out[0].flags.contains(KevFlags::ERROR) && out[0].data == i64::from(Errno::BADF.raw())
        );
        // With EV_RECEIPT every change answers.
        let good = add(rn, Filter::Read, KevFlags::RECEIPT, 4);
        assert_eq!(
            k.kevent_change(
                &kq,
                &[
                    good,
                    Kev {
                        flags: bad.flags | KevFlags::RECEIPT,
                        ..bad
                    }
                ],
                &mut out
            ),
            Ok(2)
        );
        assert_eq!(
            (out[0].data, out[1].data),
            (0, i64::from(Errno::BADF.raw()))
        );
    }

    #[test]
    fn level_oneshot_dispatch_and_eof() {
        let (k, kq, mut buf) = setup(KqueuePlatform::FreeBsd);
        let (r1, w1) = k.pipe().unwrap();
        let (r2, w2) = k.pipe().unwrap();
        let (r3, w3) = k.pipe().unwrap();
        let ch = [
            add(r1.as_raw_fd() as u64, Filter::Read, KevFlags(0), 1),
            add(r2.as_raw_fd() as u64, Filter::Read, KevFlags::ONESHOT, 2),
            add(r3.as_raw_fd() as u64, Filter::Read, KevFlags::DISPATCH, 3),
        ];
        k.kevent_change(&kq, &ch, &mut []).unwrap();
        for w in [&w1, &w2, &w3] {
            k.write(w, 1).unwrap();
        }
        let ids = |v: Vec<Kev>| v.iter().map(|e| e.udata).collect::<Vec<_>>();
        assert_eq!(ids(wait0(&k, &kq, &mut buf)), vec![1, 2, 3]);
        assert_eq!(
            ids(wait0(&k, &kq, &mut buf)),
            vec![1],
            "one-shot deleted, dispatch disabled"
        );
        assert_eq!(k.knotes(&kq), 2);
        let en = Kev::new(r3.as_raw_fd() as u64, Filter::Read, KevFlags::ENABLE, 3);
        k.kevent_change(&kq, &[en], &mut []).unwrap();
        k.close(&w3);
        let evs = wait0(&k, &kq, &mut buf);
        let e3 = evs.iter().find(|e| e.udata == 3).unwrap();
        assert!(
            e3.flags.contains(KevFlags::EOF),
            "a disabled filter's EOF is reported on enable"
        );
    }

    /// K14: FreeBSD, NetBSD, DragonFly and macOS store the change's udata on a plain
    /// `EV_ENABLE`; OpenBSD keeps the knote's.
    #[test]
    fn udata_follows_any_change_except_on_openbsd() {
        for p in KqueuePlatform::ALL {
            let want = if p == KqueuePlatform::OpenBsd { 1 } else { 9 };
            let (k, kq, mut buf) = setup(p);
            let (r, w) = k.pipe().unwrap();
            let rn = r.as_raw_fd() as u64;
            k.kevent_change(&kq, &[add(rn, Filter::Read, KevFlags(0), 1)], &mut [])
                .unwrap();
            k.kevent_change(
                &kq,
                &[Kev::new(rn, Filter::Read, KevFlags::ENABLE, 9)],
                &mut [],
            )
            .unwrap();
            k.write(&w, 1).unwrap();
            assert_eq!(wait0(&k, &kq, &mut buf)[0].udata, want, "{p:?}");
        }
    }

    /// K1: `EV_ADD` of an existing knote neither enables it nor changes its dispatch mode.
    #[test]
    fn adding_an_existing_knote_again_only_modifies_it() {
        for p in KqueuePlatform::ALL {
            let (k, kq, mut buf) = setup(p);
            let (r, w) = k.pipe().unwrap();
            let rn = r.as_raw_fd() as u64;
            let disabled = add(rn, Filter::Read, KevFlags::DISPATCH | KevFlags::DISABLE, 1);
            k.kevent_change(&kq, &[disabled], &mut []).unwrap();
            k.write(&w, 1).unwrap();
            k.kevent_change(&kq, &[add(rn, Filter::Read, KevFlags(0), 2)], &mut [])
                .unwrap();
            assert!(wait0(&k, &kq, &mut buf).is_empty(), "{p:?}: still disabled");
            let enable = Kev::new(rn, Filter::Read, KevFlags::ENABLE, 2);
            k.kevent_change(&kq, &[enable], &mut []).unwrap();
            assert_eq!(wait0(&k, &kq, &mut buf)[0].udata, 2, "{p:?}: the new udata");
            assert!(
                wait0(&k, &kq, &mut buf).is_empty(),
                "{p:?}: still EV_DISPATCH (disabled after the report)"
            );
        }
    }

    /// K12: a zombie's `NOTE_EXIT` is reported at once on FreeBSD and DragonFly; NetBSD,
    /// OpenBSD and macOS refuse it with `ESRCH`.
    #[test]
    fn proc_filter_on_a_zombie_follows_the_platform() {
        for p in KqueuePlatform::ALL {
            let (k, kq, mut buf) = setup(p);
            let pid = k.spawn_child().unwrap();
            k.exit_child(pid, ChildStatus::Exited(0)).unwrap();
            let mut c = add(u64::from(pid), Filter::Proc, KevFlags::ONESHOT, 8);
            c.fflags = crate::backend::kqueue::NOTE_EXIT;
            let r = k.kevent_change(&kq, &[c], &mut []);
            if matches!(p, KqueuePlatform::FreeBsd | KqueuePlatform::DragonFly) {
                assert_eq!(r, Ok(0), "{p:?}");
                assert_eq!(wait0(&k, &kq, &mut buf)[0].udata, 8, "{p:?}: at once");
            } else {
                assert_eq!(r, Err(Errno::SRCH), "{p:?}");
            }
        }
    }

    /// K13: FreeBSD ignores `NOTE_TRIGGER` on the `EV_ADD` that creates a user knote; the
    /// OpenBSD profile (7.7 and earlier) has no `EVFILT_USER`.
    #[test]
    fn user_filter_details() {
        for p in KqueuePlatform::ALL {
            let (k, kq, mut buf) = setup(p);
            let mut c = add(1, Filter::User, KevFlags::CLEAR, 3);
            c.fflags = NOTE_TRIGGER;
            let r = k.kevent_change(&kq, &[c], &mut []);
            match p {
                KqueuePlatform::OpenBsd => assert_eq!(r, Err(Errno::INVAL)),
                KqueuePlatform::FreeBsd => {
                    assert_eq!(r, Ok(0));
                    assert!(
                        wait0(&k, &kq, &mut buf).is_empty(),
                        "not triggered by the add"
                    );
                }
                _ => {
                    assert_eq!(r, Ok(0));
                    assert_eq!(wait0(&k, &kq, &mut buf)[0].udata, 3, "{p:?}");
                }
            }
        }
    }

    /// K10: OpenBSD refuses signal numbers from `NSIG` (33) on; the others do not check.
    #[test]
    fn signal_numbers_out_of_range() {
        for p in KqueuePlatform::ALL {
            let (k, kq, _) = setup(p);
            let r = k.kevent_change(&kq, &[add(40, Filter::Signal, KevFlags(0), 1)], &mut []);
            if p == KqueuePlatform::OpenBsd {
                assert_eq!(r, Err(Errno::INVAL));
            } else {
                assert_eq!(r, Ok(0), "{p:?}");
            }
            let zero = k.kevent_change(&kq, &[add(0, Filter::Signal, KevFlags(0), 1)], &mut []);
            assert_eq!(zero, Err(Errno::INVAL), "{p:?}: no signal 0");
        }
    }

    #[test]
    fn signals_record_attempts_after_the_filter_was_added() {
        let (k, kq, mut buf) = setup(KqueuePlatform::FreeBsd);
        k.block_signal(Signal::USR1);
        k.raise(SigInfo::new(Signal::USR1)).unwrap();
        k.kevent_change(
            &kq,
            &[add(
                Signal::USR1.raw() as u64,
                Filter::Signal,
                KevFlags(0),
                5,
            )],
            &mut [],
        )
        .unwrap();
        assert!(
            wait0(&k, &kq, &mut buf).is_empty(),
            "an instance pending before is not reported"
        );
        k.raise(SigInfo::new(Signal::USR1)).unwrap();
        k.raise(SigInfo::new(Signal::USR1)).unwrap();
        let e = wait0(&k, &kq, &mut buf);
        assert_eq!(
            (e.len(), e[0].data),
            (1, 2),
            "two attempts, even though they coalesced"
        );
        assert!(
            wait0(&k, &kq, &mut buf).is_empty(),
            "cleared after the report"
        );
    }

    #[test]
    fn timers_procs_and_user_events() {
        let (k, kq, mut buf) = setup(KqueuePlatform::NetBsd);
        let mut t = add(0, Filter::Timer, KevFlags::ONESHOT, 7);
        t.fflags = NOTE_NSECONDS;
        t.data = 500;
        k.kevent_change(&kq, &[t], &mut []).unwrap();
        let start = k.clock_now(Clock::Monotonic);
        k.kevent_wait(&kq, &mut buf, None).unwrap();
        assert_eq!(events(&buf)[0].udata, 7);
        assert_eq!(k.clock_now(Clock::Monotonic) - start, 500);
        let pid = k.spawn_child().unwrap();
        let mut p = add(u64::from(pid), Filter::Proc, KevFlags::ONESHOT, 8);
        p.fflags = crate::backend::kqueue::NOTE_EXIT;
        k.kevent_change(&kq, &[p], &mut []).unwrap();
        assert!(wait0(&k, &kq, &mut buf).is_empty());
        k.exit_child(pid, ChildStatus::Exited(0)).unwrap();
        assert_eq!(wait0(&k, &kq, &mut buf)[0].udata, 8);
        assert_eq!(
            k.kevent_change(&kq, &[p], &mut []),
            Err(Errno::SRCH),
            "already exited"
        );
        k.kevent_change(&kq, &[add(1, Filter::User, KevFlags::CLEAR, 9)], &mut [])
            .unwrap();
        let mut trig = Kev::new(1, Filter::User, KevFlags(0), 9);
        trig.fflags = NOTE_TRIGGER;
        k.kevent_change(&kq, &[trig], &mut []).unwrap();
        assert_eq!(wait0(&k, &kq, &mut buf)[0].udata, 9);
        assert!(wait0(&k, &kq, &mut buf).is_empty());
    }

    /// K3: with no room left for a receipt, FreeBSD, NetBSD, OpenBSD (and the DragonFly
    /// profile) process no further change; macOS goes on.
    #[test]
    fn a_full_receipt_list_ends_the_change_list_except_on_macos() {
        for p in KqueuePlatform::ALL {
            let (k, kq, _) = setup(p);
            let (a, _x) = k.pipe().unwrap();
            let (b, _y) = k.pipe().unwrap();
            let ca = add(a.as_raw_fd() as u64, Filter::Read, KevFlags::RECEIPT, 1);
            let cb = add(b.as_raw_fd() as u64, Filter::Read, KevFlags::RECEIPT, 2);
            let mut one = [ca];
            assert_eq!(k.kevent_change(&kq, &[ca, cb], &mut one), Ok(1), "{p:?}");
            let want = if p == KqueuePlatform::MacOs { 2 } else { 1 };
            assert_eq!(k.knotes(&kq), want, "{p:?}");
        }
    }
}
