//! The fuzzing harness: decode bytes into a program of loop operations, run it on a loop over
//! a simulated kernel, and check every handler call against a model of what the loop
//! promises. Shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`) and by `cargo test`
//! (`tests/fuzz_programs.rs` replays the committed corpus and every regression input).
//!
//! Checked after every step and in every handler call:
//! - a handler runs only for a registered watcher whose half is enabled (or requeued), never
//!   while it is already running, and only for an event that happened: data buffered or a
//!   hang-up for readable fds, a wake sent, a child that exited (with its status), a signal
//!   instance sent and not delivered before (real-time instances in order), a timer whose
//!   reported expirations add up exactly to the closed form `floor((now - first) / interval)
//!   + 1` (so never early);
//! - `on_removed` exactly once per registration, and only after removal;
//! - within one call (one batch) handlers run in priority order;
//! - capacity accounting: `usage()` matches the live registrations (at least, under faults,
//!   where a failed deregistration keeps its slot until retried);
//! - operations return only what the API allows (stale ids are `UsageError`s, never panics);
//! - after the program, every real-time signal instance sent was delivered exactly once (for
//!   signals whose watcher was never removed with instances outstanding);
//! - with an allocation counter, nothing allocates inside the loop's calls.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use dasynq::backend::Backend;
use dasynq::sim::{Fault, FaultPlan, SimCall, SimWorld};
use dasynq::{
    BidiOptions, ChildStatus, Clock, Control, Cx, Deadline, Errno, Event, EventLoop, FdOptions,
    Handler, Interest, Priority, Readiness, Rearm, Removed, SigInfo, Signal, Single, Waker,
    WatchId,
};

/// How many watchers a program may register over its life (the model's fixed size).
const MAX_SLOTS: usize = 48;
/// The loop's watcher capacity (smaller than `MAX_SLOTS`, so capacity errors happen).
const CAPACITY: usize = 12;
/// Trace entries kept (the differential target compares them).
const TRACE: usize = 2048;
/// Fds prepared before the loop is built, so registering inside handlers allocates nothing.
const FDS: usize = 24;
/// Real-time signals used (distinct values per instance).
const SIGNALS: usize = 2;
/// Simulated children prepared up front.
const CHILDREN: usize = 8;

/// What the loop's calls may do to the allocator: a counting allocator plugs in here.
pub trait AllocCounter {
    /// Start or stop counting (on this thread).
    fn set(&self, on: bool);
    /// Allocations counted so far.
    fn count(&self) -> u64;
}

/// No allocation counting.
pub struct NoCounter;
impl AllocCounter for NoCounter {
    fn set(&self, _on: bool) {}
    fn count(&self) -> u64 {
        0
    }
}

/// How to run a program.
#[derive(Clone, Debug)]
pub struct Options {
    /// Interpret fault-injection operations into this plan (the plan of the `Faulty` wrapper
    /// around the backend's kernel); `None`: they are skipped.
    pub faults: Option<FaultPlan>,
    /// Give every registration its own priorities, so the loop alone decides the order of a
    /// batch (the differential target: kernels report equally ready fds in different
    /// orders, which is "arrival order" on each).
    pub distinct_priorities: bool,
}

/// One handler call, normalised so that backends can be compared.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct Entry {
    /// The watcher's registration number in the program.
    pub slot: u8,
    /// What happened: see [`Entry::describe`].
    pub what: u8,
    /// Detail: readiness class bits, expirations, signal value, exit code.
    pub detail: u64,
    /// What the handler returned (index into `REARMS`).
    pub rearm: u8,
}

/// The trace of a run: every handler call, and each step's handler count.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Trace {
    /// Handler calls, in order (the first `TRACE`).
    pub calls: Vec<Entry>,
    /// Handlers run by each run/poll step.
    pub ran: Vec<u16>,
}

const REARMS: [Rearm; 5] = [
    Rearm::Rearm,
    Rearm::Disarm,
    Rearm::Noop,
    Rearm::Remove,
    Rearm::Requeue,
];

const FAULT_CALLS: [SimCall; 26] = [
    SimCall::EpollCreate,
    SimCall::EpollCtlAdd,
    SimCall::EpollCtlMod,
    SimCall::EpollCtlDel,
    SimCall::EpollWait,
    SimCall::TimerfdCreate,
    SimCall::TimerfdSettime,
    SimCall::EventfdCreate,
    SimCall::EventfdRead,
    SimCall::EventfdWrite,
    SimCall::SimAddFd,
    SimCall::SimModifyFd,
    SimCall::SimRemoveFd,
    SimCall::SimSetDeadline,
    SimCall::SimWait,
    SimCall::Signalfd,
    SimCall::SignalfdRead,
    SimCall::PidfdOpen,
    SimCall::Waitid,
    SimCall::SignalChild,
    SimCall::Spawn,
    SimCall::Kqueue,
    SimCall::KeventChange,
    SimCall::KnoteAdd,
    SimCall::KeventWait,
    SimCall::Fstat,
];

const ERRNOS: [Errno; 6] = [
    Errno::NOMEM,
    Errno::BADF,
    Errno::INVAL,
    Errno::NOENT,
    Errno::INTR,
    Errno::AGAIN,
];

thread_local! {
    static LOG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Print every operation and handler call to stderr (for reading a failing input).
pub fn set_log(on: bool) {
    LOG.with(|l| l.set(on));
}

macro_rules! log {
    ($($arg:tt)*) => {
        if LOG.with(|l| l.get()) {
            eprintln!($($arg)*);
        }
    };
}

/// The real-time signal `n`.
pub fn signal(n: usize) -> Signal {
    Signal::rt(n as u32).unwrap_or(Signal::USR1)
}

#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
enum Kind {
    #[default]
    Fd,
    Bidi,
    File,
    Timer,
    Wake,
    Signal,
    Child,
}

/// The kinds registered by operations 0 to 6.
const KINDS: [Kind; 7] = [
    Kind::Fd,
    Kind::Bidi,
    Kind::File,
    Kind::Timer,
    Kind::Wake,
    Kind::Signal,
    Kind::Child,
];

/// The model of one registration.
#[derive(Default)]
struct Slot {
    id: Option<WatchId>,
    kind: Kind,
    /// Registered and not yet removed (by `remove` or a `Remove` return).
    live: bool,
    /// Per half: the user's view of "enabled".
    enabled: [bool; 2],
    /// Per half: present (bidi halves can be removed one at a time).
    present: [bool; 2],
    /// Per half: requeued by its handler (will run again with the same event).
    requeued: [bool; 2],
    priority: [i32; 2],
    running: bool,
    removed_calls: u8,
    /// Fds: the loop-owned end and its peer (index into the fd table).
    fd: RawFd,
    peer: usize,
    /// Timers.
    clock: Option<Clock>,
    armed: bool,
    first: u64,
    interval: u64,
    reported: u64,
    /// Signals: which one.
    sig: usize,
    /// Wakes.
    waker: Option<Waker>,
    wake_pending: bool,
    /// Children: the pid watched.
    pid: Option<u32>,
    /// Watched although the kernel could not confirm it is a child (a fault in the probe):
    /// the loop watches it the fallback way and may report `ChildStatus::Unknown`.
    unconfirmed: bool,
    /// The last delivered signal value or child pid (what a requeue repeats).
    last: u64,
    script: [u8; 8],
    step: usize,
}

struct Peer {
    /// The end the program writes to or closes (None once closed).
    fd: Option<OwnedFd>,
    /// The end the loop watches, until registered.
    watched: Option<OwnedFd>,
    watched_raw: RawFd,
    socket: bool,
    hung: bool,
}

struct Child {
    pid: u32,
    exited: Option<i32>,
    delivered: bool,
    watched: bool,
}

#[derive(Default)]
struct SignalModel {
    sent: u64,
    /// Values `1..=sent` were sent; `delivered` holds the next expected minimum and a count.
    delivered: u64,
    last: u64,
    lossy: bool,
    watcher: Option<usize>,
}

struct Model<X> {
    world: SimWorld<X>,
    slots: Vec<Slot>,
    peers: Vec<Peer>,
    children: Vec<Child>,
    signals: [SignalModel; SIGNALS],
    trace: Trace,
    /// The priority of the last handler run in the current step.
    batch_prio: Option<i32>,
    faults: bool,
    distinct: bool,
    drain: bool,
    failures: Vec<String>,
}

type Shared<X> = Rc<RefCell<Model<X>>>;

/// The handler: its registration number and the shared model.
pub struct H<X> {
    slot: usize,
    model: Shared<X>,
}

fn fail<X>(m: &mut Model<X>, what: String) {
    if m.failures.len() < 8 {
        m.failures.push(what);
    }
}

macro_rules! check {
    ($m:expr, $cond:expr, $($arg:tt)*) => {
        if !$cond {
            let msg = format!($($arg)*);
            fail($m, msg);
        }
    };
}

fn rearm_index(r: Rearm) -> u8 {
    REARMS.iter().position(|x| *x == r).unwrap_or(0) as u8
}

/// Readiness as "readable, writable, closed" bits. Once an fd is closed, whether readable
/// and writable come with it differs between kernels (epoll reports a hung-up pipe as
/// `HANGUP` alone, kqueue as `READABLE | READ_CLOSED` from `EV_EOF` on the read filter, and
/// its write filter's `EV_EOF` as `WRITABLE | HANGUP`): a closed fd is just "closed".
fn readiness_class(r: Readiness) -> u64 {
    let closed = r.is_read_closed() || r.is_hangup() || r.is_error();
    if closed {
        4
    } else {
        u64::from(r.is_readable()) | u64::from(r.is_writable()) << 1
    }
}

fn total_expirations(first: u64, interval: u64, now: u64) -> u64 {
    if now < first {
        return 0;
    }
    (now - first).checked_div(interval).map_or(1, |k| k + 1)
}

impl<X: 'static> Handler for H<X> {
    type Data = ();
    fn on_event(&mut self, cx: &Cx<'_, Self>, _: &mut (), ev: Event<'_>) -> Rearm {
        let me = self.slot;
        // 1. Check the call against the model and record it.
        let (rearm, nested) = {
            let mut guard = self.model.borrow_mut();
            let m = &mut *guard;
            let drain = m.drain;
            let half = match ev {
                Event::Write { .. } => 1,
                _ => 0,
            };
            let world = m.world.clone();
            let Some(s) = m.slots.get_mut(me) else {
                return Rearm::Remove;
            };
            let replay = s.requeued[half];
            let ok = s.live && s.present[half] && (s.enabled[half] || replay) && !s.running;
            let (live, present, enabled, running) =
                (s.live, s.present[half], s.enabled[half], s.running);
            s.requeued[half] = false;
            s.running = true;
            s.enabled[half] = false;
            let prio = s.priority[half];
            let (what, detail, event_ok, why) = match ev {
                Event::Fd { ready, .. }
                | Event::Read { ready, .. }
                | Event::Write { ready, .. } => {
                    let class = readiness_class(ready);
                    let mut why = String::new();
                    let mut good = true;
                    if ready.is_readable() && s.kind != Kind::File && !replay {
                        let p = &m.peers[s.peer];
                        let buffered = world.buffered(&s.fd);
                        good = buffered > 0 || p.hung;
                        if !good {
                            why = format!("readable with nothing buffered: {ready:?}");
                        }
                    }
                    // Take what is there, as a real handler would.
                    if ready.is_readable() && s.kind != Kind::File {
                        let _ = world.read(&s.fd, u64::MAX);
                    }
                    let what = match ev {
                        Event::Fd { .. } => 0,
                        Event::Read { .. } => 1,
                        _ => 2,
                    };
                    (what, class, good, why)
                }
                Event::Timer { expirations } => {
                    let clock = s.clock.unwrap_or(Clock::Monotonic);
                    let now = world.now_ns(clock);
                    s.reported = s.reported.saturating_add(expirations);
                    let want = total_expirations(s.first, s.interval, now);
                    // Exact, because every wait counts the expirations due by its end. Under
                    // faults a failed wait counts nothing, and an event queued before it is
                    // delivered with the count it had: never more than is due, the rest later.
                    let counted = if m.faults {
                        s.reported <= want
                    } else {
                        s.reported == want
                    };
                    let good = (s.armed || replay) && counted && (expirations > 0 || replay);
                    let why = if good {
                        String::new()
                    } else {
                        format!(
                            "timer: {expirations} reported, {} in all, {want} due by {now} (first {}, every {}, armed {})",
                            s.reported, s.first, s.interval, s.armed
                        )
                    };
                    if s.interval == 0 && s.reported >= 1 {
                        s.armed = false;
                    }
                    (3, expirations, good, why)
                }
                Event::Wake => {
                    let good = s.wake_pending || replay;
                    s.wake_pending = false;
                    let why = if good {
                        String::new()
                    } else {
                        "wake without a wake".to_string()
                    };
                    (4, 0, good, why)
                }
                Event::Signal(info) => {
                    let v = info.value_int() as u64;
                    let sm = &mut m.signals[s.sig];
                    let good = if replay {
                        v == s.last
                    } else {
                        let fresh = v > sm.last && v <= sm.sent && info.signal() == signal(s.sig);
                        if fresh {
                            sm.delivered += 1;
                            sm.last = v;
                        }
                        fresh
                    };
                    s.last = v;
                    let why = if good {
                        String::new()
                    } else {
                        format!(
                            "signal value {v}: last delivered {}, sent {}, replay {replay}",
                            sm.last, sm.sent
                        )
                    };
                    (5, v, good, why)
                }
                Event::Child { pid, status } => {
                    let code = match status {
                        ChildStatus::Exited(c) => c as u64,
                        _ => u64::MAX,
                    };
                    let mut good = if replay {
                        s.last == u64::from(pid)
                    } else {
                        s.pid == Some(pid)
                    };
                    s.last = u64::from(pid);
                    if replay {
                        // The same exit again: checked when first delivered.
                    } else if s.unconfirmed && status == ChildStatus::Unknown {
                        // Reaped elsewhere before the loop could watch it: allowed.
                    } else if let Some(c) = m.children.iter_mut().find(|c| c.pid == pid) {
                        good &= c.exited.map(|e| e as u64) == Some(code);
                        good &= !c.delivered || replay;
                        c.delivered = true;
                        c.watched = false;
                    } else {
                        good = false;
                    }
                    if !replay {
                        s.pid = None;
                        s.unconfirmed = false;
                    }
                    let why = if good {
                        String::new()
                    } else {
                        let c = m.children.iter().find(|c| c.pid == pid);
                        format!(
                            "child {pid} status {status:?}: watcher's pid {:?}, replay {replay}, exited {:?}",
                            s.pid,
                            c.map(|c| (c.exited, c.delivered))
                        )
                    };
                    (6, code, good, why)
                }
                _ => (7, 0, true, String::new()),
            };
            log!("  call slot {me}: {what} detail {detail} (prio {prio}, replay {replay})");
            check!(
                m,
                ok,
                "slot {me} ran while live {live}, present {present}, enabled {enabled}, running {running}"
            );
            check!(m, event_ok, "slot {me}: {why}");
            if let Some(p) = m.batch_prio {
                check!(
                    m,
                    p <= prio,
                    "slot {me} (priority {prio}) ran after priority {p} in one batch"
                );
            }
            m.batch_prio = Some(prio);
            // 2. Decide what to do: the script's next byte.
            let s = &mut m.slots[me];
            let b = s.script[s.step % 8];
            s.step += 1;
            let rearm = if drain {
                if s.kind == Kind::Signal {
                    Rearm::Rearm
                } else {
                    Rearm::Disarm
                }
            } else {
                REARMS[usize::from(b % 5)]
            };
            let nested = if drain { 0 } else { b / 5 };
            log!("    -> {rearm:?}, nested op {nested:#x}");
            if m.trace.calls.len() < TRACE {
                m.trace.calls.push(Entry {
                    slot: me as u8,
                    what,
                    detail,
                    rearm: rearm_index(rearm),
                });
            }
            (rearm, nested)
        };
        // 3. Nested operations, with the model unborrowed (they may call other handlers'
        // `on_removed`).
        nested_op(&self.model, cx, me, nested);
        // 4. Apply the return code to the model.
        let mut guard = self.model.borrow_mut();
        let m = &mut *guard;
        let half = match ev {
            Event::Write { .. } => 1,
            _ => 0,
        };
        let s = &mut m.slots[me];
        s.running = false;
        if s.live {
            match rearm {
                Rearm::Rearm => s.enabled[half] = true,
                Rearm::Disarm => s.enabled[half] = false,
                Rearm::Noop => {}
                Rearm::Remove => {
                    s.present[half] = false;
                    s.enabled[half] = false;
                    if !s.present[0] && !s.present[1] || s.kind != Kind::Bidi {
                        mark_removed(m, me);
                    }
                }
                Rearm::Requeue => s.requeued[half] = true,
            }
        }
        let s = &m.slots[me];
        log!(
            "    slot {me} after return: enabled {:?} requeued {:?} live {}",
            s.enabled,
            s.requeued,
            s.live
        );
        rearm
    }

    fn on_removed(self, _cx: &Cx<'_, Self>, _removed: Removed) {
        let mut m = self.model.borrow_mut();
        let me = self.slot;
        let (live, calls) = {
            let s = &mut m.slots[me];
            s.removed_calls += 1;
            (s.live, s.removed_calls)
        };
        check!(&mut m, !live, "on_removed for slot {me}, still registered");
        check!(
            &mut m,
            calls == 1,
            "on_removed for slot {me} called {calls} times"
        );
    }
}

/// The model's side of a removal.
fn mark_removed<X>(m: &mut Model<X>, i: usize) {
    let s = &mut m.slots[i];
    if !s.live {
        return;
    }
    s.live = false;
    s.present = [false, false];
    s.enabled = [false, false];
    s.requeued = [false, false];
    if s.kind == Kind::Signal {
        let sm = &mut m.signals[s.sig];
        sm.watcher = None;
        if sm.delivered < sm.sent {
            // It may have held an instance taken from the kernel: that one is dropped.
            sm.lossy = true;
        }
    }
    if s.kind == Kind::Child {
        if let Some(pid) = s.pid {
            if let Some(c) = m.children.iter_mut().find(|c| c.pid == pid) {
                c.watched = false;
            }
        }
    }
}

/// A nested operation from inside a handler: `op` selects what.
fn nested_op<X: 'static>(model: &Shared<X>, cx: &Cx<'_, H<X>>, me: usize, op: u8) {
    let pick = |k: usize| -> Option<(usize, WatchId)> {
        let m = model.borrow();
        let n = m.slots.len();
        if n == 0 {
            return None;
        }
        let i = k % n;
        m.slots[i].id.map(|id| (i, id))
    };
    let other = usize::from(op >> 3);
    match op & 7 {
        0 | 1 => {}
        2 => {
            // Remove itself.
            let id = model.borrow().slots[me].id;
            if let Some(id) = id {
                remove(model, cx, me, id);
            }
        }
        3 => {
            if let Some((i, id)) = pick(other) {
                remove(model, cx, i, id);
            }
        }
        4 => {
            if let Some((i, id)) = pick(other) {
                set_enabled(model, cx, i, id, false);
            }
        }
        5 => {
            if let Some((i, id)) = pick(other) {
                set_enabled(model, cx, i, id, true);
            }
        }
        6 => {
            if let Some((i, id)) = pick(other) {
                // Every bit of a nested op (at most 51) has its use: the handler's own slot
                // and the target together pick the deadline's kind.
                let from_loop_time = (me + i) % 2 == 1;
                arm(
                    model,
                    cx,
                    i,
                    id,
                    u64::from(op >> 3) * 3,
                    u64::from(op >> 5),
                    from_loop_time,
                );
            }
        }
        _ => {
            let script = [op, op >> 1, op.wrapping_mul(7), 3, 0, 1, 2, 4];
            register(model, cx, Kind::Timer, other, 0, false, script);
        }
    }
}

fn remove<X: 'static>(model: &Shared<X>, lp: &dyn Control<H<X>>, i: usize, id: WatchId) {
    let was_live = model.borrow().slots[i].live;
    if was_live {
        // Mark first: `on_removed` may run inside the call.
        mark_removed(&mut model.borrow_mut(), i);
    }
    let r = lp.remove(id);
    log!("  remove(slot {i}) = {r:?}, live {was_live}");
    let mut m = model.borrow_mut();
    check!(
        &mut m,
        r.is_ok() == was_live,
        "remove(slot {i}) = {r:?}, live {was_live}"
    );
    let s = &m.slots[i];
    let (running, calls) = (s.running, s.removed_calls);
    if was_live && !running {
        check!(
            &mut m,
            calls == 1,
            "slot {i} removed: on_removed ran {calls} times"
        );
    }
}

fn set_enabled<X: 'static>(
    model: &Shared<X>,
    lp: &dyn Control<H<X>>,
    i: usize,
    id: WatchId,
    on: bool,
) {
    let r = lp.set_enabled(id, on);
    let mut m = model.borrow_mut();
    let live = m.slots[i].live;
    log!(
        "  set_enabled(slot {i}, {on}) = {r:?}; requeued {:?}",
        m.slots[i].requeued
    );
    check!(
        &mut m,
        r.is_ok() == live,
        "set_enabled(slot {i}) = {r:?}, live {live}"
    );
    if live {
        let s = &mut m.slots[i];
        for h in 0..2 {
            // A requeued event survives disabling for wakes, signals, children and timers
            // (and an fd's hang-up): `requeued` stays, so the next call may be the replay.
            if s.present[h] {
                s.enabled[h] = on;
            }
        }
    }
}

fn arm<X: 'static>(
    model: &Shared<X>,
    lp: &dyn Control<H<X>>,
    i: usize,
    id: WatchId,
    after: u64,
    every: u64,
    from_loop_time: bool,
) {
    let (live, kind, clock) = {
        let m = model.borrow();
        let s = &m.slots[i];
        (s.live, s.kind, s.clock)
    };
    let interval = (every > 0).then(|| Duration::from_nanos(every));
    // `AfterLoopTime` counts from the clock as read after the latest wait, and an arm outside a
    // run call reads the clock: the simulated clock moves only in waits (virtual time jumps)
    // and in the program's `advance` between calls, so the model's "now" is right for both.
    // A reading kept too long (across a wait or a run call) would count from an earlier time
    // and show as an expiry before the model's deadline.
    let d = Duration::from_nanos(after);
    let deadline = if from_loop_time {
        Deadline::AfterLoopTime(d)
    } else {
        Deadline::After(d)
    };
    let r = lp.arm_timer(id, deadline, interval);
    let mut m = model.borrow_mut();
    let ok = live && kind == Kind::Timer;
    check!(&mut m, r.is_ok() == ok, "arm_timer(slot {i}) = {r:?}");
    if ok {
        let now = m.world.now_ns(clock.unwrap_or(Clock::Monotonic));
        log!("  arm slot {i} at {now} after {after} every {every}");
        let s = &mut m.slots[i];
        s.armed = true;
        s.first = now.saturating_add(after);
        s.interval = every;
        s.reported = 0;
        s.enabled[0] = true;
        s.requeued[0] = false;
    }
}

/// Register a watcher of `kind`; `arg` picks its fd, signal or priority.
fn register<X: 'static>(
    model: &Shared<X>,
    lp: &dyn Control<H<X>>,
    kind: Kind,
    arg: usize,
    prio: i32,
    disabled: bool,
    script: [u8; 8],
) {
    let i = {
        let mut m = model.borrow_mut();
        if m.slots.len() >= MAX_SLOTS {
            return;
        }
        let i = m.slots.len();
        let prio = if m.distinct { i as i32 * 2 } else { prio };
        m.slots.push(Slot {
            kind,
            script,
            priority: [prio, prio.wrapping_add(1)],
            ..Slot::default()
        });
        i
    };
    let h = H {
        slot: i,
        model: model.clone(),
    };
    let prio = model.borrow().slots[i].priority[0];
    let priority = Priority(prio);
    let result = match kind {
        Kind::Fd | Kind::Bidi | Kind::File => {
            let taken = if kind == Kind::File {
                None
            } else {
                let mut m = model.borrow_mut();
                let want_socket = kind == Kind::Bidi;
                let n = m.peers.len();
                (0..n)
                    .map(|k| (arg + k) % n)
                    .find(|&k| {
                        let p = &m.peers[k];
                        p.watched.is_some() && p.socket == want_socket
                    })
                    .and_then(|k| {
                        let fd = m.peers[k].watched.take()?;
                        let raw = m.peers[k].watched_raw;
                        let s = &mut m.slots[i];
                        s.peer = k;
                        s.fd = raw;
                        Some(fd)
                    })
            };
            let fd = if kind == Kind::File {
                let world = model.borrow().world.clone();
                world.regular_file().ok()
            } else {
                taken
            };
            let Some(fd) = fd else {
                model.borrow_mut().slots.pop();
                return;
            };
            if kind == Kind::File {
                model.borrow_mut().slots[i].fd = fd.as_raw_fd();
            }
            match kind {
                Kind::Bidi => {
                    let mut o = BidiOptions::new();
                    o.read_priority = Priority(prio);
                    o.write_priority = Priority(prio.wrapping_add(1));
                    o.read_enabled = !disabled;
                    o.write_enabled = !disabled;
                    lp.add_bidi(fd, o, h)
                }
                _ => {
                    let mut o = FdOptions::new().priority(priority);
                    if disabled {
                        o = o.disabled();
                    }
                    let interest = if arg % 3 == 0 {
                        Interest::BOTH
                    } else {
                        Interest::READ
                    };
                    lp.add_fd(fd, interest, o, h)
                }
            }
        }
        Kind::Timer => {
            let clock = if arg % 2 == 0 {
                Clock::Monotonic
            } else {
                Clock::System
            };
            model.borrow_mut().slots[i].clock = Some(clock);
            lp.add_timer(clock, priority, h)
        }
        Kind::Wake => match lp.add_wake(priority, h) {
            Ok((id, w)) => {
                model.borrow_mut().slots[i].waker = Some(w);
                Ok(id)
            }
            Err(e) => Err(e),
        },
        Kind::Signal => {
            let sig = arg % SIGNALS;
            model.borrow_mut().slots[i].sig = sig;
            lp.add_signal(signal(sig), priority, h)
        }
        Kind::Child => lp.reserve_child(priority, h),
    };
    let mut m = model.borrow_mut();
    log!(
        "  register slot {i} {kind:?} peer {} fd {}: {}",
        m.slots[i].peer,
        m.slots[i].fd,
        result.as_ref().map_or("refused", |_| "ok")
    );
    match result {
        Ok(id) => {
            let s = &mut m.slots[i];
            s.id = Some(id);
            s.live = true;
            s.present = [true, kind == Kind::Bidi];
            let on = !disabled || !matches!(kind, Kind::Fd | Kind::Bidi | Kind::File);
            s.enabled = [on, on && kind == Kind::Bidi];
            if kind == Kind::Signal {
                let sig = s.sig;
                m.signals[sig].watcher = Some(i);
            }
        }
        Err(rejected) => {
            // The handler and fd come back: nothing registered, nothing to model.
            drop(rejected);
            m.slots.pop();
        }
    }
}

/// Bytes of a program.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = self.data.get(self.pos).copied();
        self.pos += 1;
        b
    }
    fn b(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }
    fn script(&mut self) -> [u8; 8] {
        let mut s = [0u8; 8];
        for x in &mut s {
            *x = self.b();
        }
        s
    }
}

/// The outcome of a run: the trace, and what went wrong (empty if nothing).
pub struct Outcome {
    /// Handler calls and step counts.
    pub trace: Trace,
    /// Violations of the model, in order.
    pub failures: Vec<String>,
}

/// Run the program `data` on `world` and `backend`.
pub fn run<X: 'static, B: Backend>(
    world: SimWorld<X>,
    backend: B,
    data: &[u8],
    opts: Options,
    allocs: &dyn AllocCounter,
) -> Outcome {
    for n in 0..SIGNALS {
        world.block_signal(signal(n));
    }
    let lp = match EventLoop::<H<X>, B, Single>::builder()
        .watchers(CAPACITY)
        .timers(6)
        .wakers(4)
        .events(64)
        .build_with(backend)
    {
        Ok(lp) => lp,
        Err(e) => {
            return Outcome {
                trace: Trace::default(),
                failures: vec![format!("build failed: {e}")],
            };
        }
    };
    let mut peers = Vec::with_capacity(FDS);
    for k in 0..FDS {
        let socket = k % 3 == 2;
        let pair = if socket {
            world.socketpair()
        } else {
            world.pipe()
        };
        // The loop watches the first end (a pipe's read end); the program writes to and
        // closes the other.
        let Ok((watched, other)) = pair else { continue };
        peers.push(Peer {
            watched_raw: watched.as_raw_fd(),
            watched: Some(watched),
            fd: Some(other),
            socket,
            hung: false,
        });
    }
    let mut children = Vec::with_capacity(CHILDREN);
    for _ in 0..CHILDREN {
        if let Ok(pid) = world.spawn_child() {
            children.push(Child {
                pid,
                exited: None,
                delivered: false,
                watched: false,
            });
        }
    }
    let mut trace = Trace::default();
    trace.calls.reserve_exact(TRACE);
    trace.ran.reserve_exact(512);
    let model: Shared<X> = Rc::new(RefCell::new(Model {
        world: world.clone(),
        slots: Vec::with_capacity(MAX_SLOTS),
        peers,
        children,
        signals: Default::default(),
        trace,
        batch_prio: None,
        faults: opts.faults.is_some(),
        distinct: opts.distinct_priorities,
        drain: false,
        failures: Vec::with_capacity(8),
    }));
    let lpc: &dyn Control<H<X>> = &lp;
    let mut input = Input { data, pos: 0 };
    let mut next_value = [0u64; SIGNALS];
    let mut steps = 0;
    while let Some(op) = input.byte() {
        steps += 1;
        if steps > 400 || !model.borrow().failures.is_empty() {
            break;
        }
        let a = usize::from(input.b());
        let pick = |k: usize| -> Option<(usize, WatchId)> {
            let m = model.borrow();
            let n = m.slots.len();
            (n > 0)
                .then(|| k % n)
                .and_then(|i| m.slots[i].id.map(|id| (i, id)))
        };
        log!("op {} arg {a}", op % 20);
        let before = allocs.count();
        allocs.set(true);
        match op % 20 {
            k @ 0..=6 => {
                let kind = KINDS[usize::from(k)];
                let s = input.script();
                if kind == Kind::File {
                    // The simulated file is made outside the count (the world allocates for it).
                    allocs.set(false);
                }
                let disabled = a & 64 != 0 && matches!(kind, Kind::Fd | Kind::Bidi);
                register(&model, lpc, kind, a, i32::from(a as u8 % 4), disabled, s)
            }
            7 => {
                if let Some((i, id)) = pick(a) {
                    set_enabled(&model, lpc, i, id, true);
                }
            }
            8 => {
                if let Some((i, id)) = pick(a) {
                    set_enabled(&model, lpc, i, id, false);
                }
            }
            9 => {
                if let Some((i, id)) = pick(a) {
                    remove(&model, lpc, i, id);
                }
            }
            10 => {
                let (after, e) = (u64::from(input.b()), input.b());
                let (every, from_loop_time) = (u64::from(e % 8), e & 8 != 0);
                if let Some((i, id)) = pick(a) {
                    arm(&model, lpc, i, id, after, every, from_loop_time);
                }
            }
            11 => {
                if let Some((i, id)) = pick(a) {
                    let r = lpc.stop_timer(id);
                    let mut m = model.borrow_mut();
                    let ok = m.slots[i].live && m.slots[i].kind == Kind::Timer;
                    check!(&mut m, r.is_ok() == ok, "stop_timer(slot {i}) = {r:?}");
                    if ok {
                        let s = &mut m.slots[i];
                        s.armed = false;
                        s.requeued[0] = false;
                    }
                }
            }
            12 => {
                if let Some((i, _)) = pick(a) {
                    let w = {
                        let mut m = model.borrow_mut();
                        let s = &mut m.slots[i];
                        if s.live && s.waker.is_some() {
                            s.wake_pending = true;
                        }
                        s.waker.clone()
                    };
                    if let Some(w) = w {
                        w.wake();
                    }
                }
            }
            13 => {
                allocs.set(false);
                world.advance(Duration::from_nanos(
                    a as u64 * u64::from(input.b() % 4 + 1),
                ));
            }
            14 => {
                allocs.set(false);
                let n = u64::from(input.b() % 4 + 1);
                let m = model.borrow_mut();
                let k = a % m.peers.len().max(1);
                if let Some(p) = m.peers.get(k) {
                    if let Some(fd) = &p.fd {
                        let _ = world.write(fd, n);
                    }
                }
            }
            15 => {
                allocs.set(false);
                let mut m = model.borrow_mut();
                let k = a % m.peers.len().max(1);
                if let Some(p) = m.peers.get_mut(k) {
                    if let Some(fd) = p.fd.take() {
                        world.close(&fd);
                        p.hung = true;
                        log!("  hang up peer {k}");
                    }
                }
            }
            16 => {
                allocs.set(false);
                let sig = a % SIGNALS;
                let v = next_value[sig] + 1;
                let info = SigInfo::new(signal(sig)).with_code(-1).with_value(v);
                log!("  raise signal {sig} value {v}");
                if world.raise(info).is_ok() {
                    next_value[sig] = v;
                    model.borrow_mut().signals[sig].sent = v;
                }
            }
            17 => {
                allocs.set(false);
                let code = i32::from(input.b() % 4);
                let mut m = model.borrow_mut();
                let k = a % m.children.len().max(1);
                if let Some(c) = m.children.get_mut(k) {
                    if c.exited.is_none()
                        && world.exit_child(c.pid, ChildStatus::Exited(code)).is_ok()
                    {
                        c.exited = Some(code);
                    }
                }
            }
            18 => {
                // Point a child watcher at a child.
                let k = usize::from(input.b());
                if let Some((i, id)) = pick(a) {
                    let pid = {
                        let m = model.borrow();
                        let n = m.children.len().max(1);
                        m.children
                            .get(k % n)
                            .map(|c| (c.pid, c.exited.is_some(), c.delivered, c.watched))
                    };
                    if let Some((pid, exited, delivered, watched)) = pid {
                        let r = lpc.watch_child(id, pid);
                        log!(
                            "  watch_child(slot {i}, {pid}) = {r:?} [exited {exited} delivered {delivered} watched {watched}]"
                        );
                        let mut m = model.borrow_mut();
                        let s = &m.slots[i];
                        // A requeued exit is still the watcher's until delivered again.
                        let free =
                            s.live && s.kind == Kind::Child && s.pid.is_none() && !s.requeued[0];
                        // An exited child is reaped once its exit was delivered; one whose
                        // watcher was removed after the exit was seen may be reaped too.
                        let expect = if !free || watched || delivered {
                            Some(false)
                        } else if exited {
                            None
                        } else {
                            Some(true)
                        };
                        // A kernel fault in the probe makes the loop watch the pid anyway (the
                        // fallback way), rather than fail an operation that cannot fail.
                        let unconfirmed = m.faults && free && r.is_ok() && expect != Some(true);
                        check!(
                            &mut m,
                            unconfirmed || expect.is_none_or(|e| r.is_ok() == e),
                            "watch_child(slot {i}, pid {pid}) = {r:?}, expected ok {expect:?}"
                        );
                        if r.is_ok() {
                            m.slots[i].pid = Some(pid);
                            m.slots[i].unconfirmed = unconfirmed;
                            if let Some(c) = m.children.iter_mut().find(|c| c.pid == pid) {
                                c.watched = true;
                            }
                        }
                    }
                }
            }
            _ => {
                let sub = input.b();
                if let (Some(plan), true) = (&opts.faults, sub & 0x80 != 0) {
                    allocs.set(false);
                    let call = FAULT_CALLS[usize::from(sub) % FAULT_CALLS.len()];
                    let mut errno = ERRNOS[a % ERRNOS.len()];
                    // A deregistration that answers "not registered" (ENOENT, EBADF) is taken
                    // at its word: on a real kernel it is true. Injected, the simulation would
                    // keep the registration while the loop forgets it, and a file that stays
                    // ready would then report forever under a stale token (dropped, but never
                    // ending a wait in virtual time). Such deletions fail with ENOMEM instead.
                    let deletes = matches!(
                        call,
                        SimCall::EpollCtlDel | SimCall::SimRemoveFd | SimCall::KeventChange
                    );
                    if deletes && matches!(errno, Errno::NOENT | Errno::BADF) {
                        errno = Errno::NOMEM;
                    }
                    let times = u32::from(input.b() % 3 + 1);
                    log!("  inject {call:?} {errno:?} x{times}");
                    plan.inject(
                        call,
                        Fault {
                            errno,
                            skip: u32::from(input.b() % 4),
                            times,
                        },
                    );
                } else {
                    model.borrow_mut().batch_prio = None;
                    log!(
                        "  run mode {} at {}",
                        sub % 3,
                        world.now_ns(Clock::Monotonic)
                    );
                    let ran = match sub % 3 {
                        0 => lp.poll(),
                        1 => lp.poll_limit(usize::from(sub % 5)),
                        _ => lp.run_timeout(Duration::from_nanos(a as u64 * 8)),
                    };
                    let mut m = model.borrow_mut();
                    if m.trace.ran.len() < m.trace.ran.capacity() {
                        m.trace.ran.push(ran as u16);
                    }
                }
            }
        }
        allocs.set(false);
        let after = allocs.count();
        {
            let mut m = model.borrow_mut();
            // (A failure message recorded during the step allocates: count only clean steps.)
            let clean = m.failures.is_empty();
            check!(
                &mut m,
                !clean || after == before,
                "operation {} allocated {} times",
                op % 20,
                after - before
            );
        }
        check_usage(&model, &lp);
    }
    // Drain: no faults, every live watcher enabled, signal handlers re-arm, the rest disarm.
    if let Some(plan) = &opts.faults {
        plan.clear();
    }
    model.borrow_mut().drain = true;
    let ids: Vec<(usize, WatchId)> = model
        .borrow()
        .slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.live)
        .filter_map(|(i, s)| s.id.map(|id| (i, id)))
        .collect();
    for (i, id) in &ids {
        set_enabled(&model, lpc, *i, *id, true);
    }
    // Each batch delivers at most one instance per signal: room for every instance sent.
    let mut quiet = 0;
    for _ in 0..4000 {
        model.borrow_mut().batch_prio = None;
        if lp.poll() == 0 {
            quiet += 1;
            if quiet > 3 {
                break;
            }
        } else {
            quiet = 0;
        }
    }
    {
        let mut m = model.borrow_mut();
        for sig in 0..SIGNALS {
            let sm = &m.signals[sig];
            let (sent, delivered, lossy, watched) = (sm.sent, sm.delivered, sm.lossy, sm.watcher);
            if watched.is_some() && !lossy {
                check!(
                    &mut m,
                    delivered == sent,
                    "signal {sig}: {sent} sent, {delivered} delivered"
                );
            }
        }
    }
    // Every live watcher removed: on_removed exactly once each.
    for (i, id) in ids {
        if model.borrow().slots[i].live {
            remove(&model, lpc, i, id);
        }
    }
    check_usage(&model, &lp);
    drop(lp);
    let m = Rc::try_unwrap(model).ok().map(RefCell::into_inner);
    match m {
        Some(mut m) => {
            for (i, s) in m.slots.iter().enumerate() {
                if s.id.is_some() && s.removed_calls != 1 && m.failures.len() < 8 {
                    m.failures.push(format!(
                        "slot {i}: on_removed ran {} times in all",
                        s.removed_calls
                    ));
                }
            }
            Outcome {
                trace: m.trace,
                failures: m.failures,
            }
        }
        None => Outcome {
            trace: Trace::default(),
            failures: vec!["a handler outlived the loop".to_string()],
        },
    }
}

fn check_usage<X: 'static, B: Backend>(model: &Shared<X>, lp: &EventLoop<H<X>, B, Single>) {
    let u = lp.usage();
    let mut m = model.borrow_mut();
    let live = m.slots.iter().filter(|s| s.live).count();
    let faults = m.faults;
    if faults {
        check!(
            &mut m,
            u.watchers >= live && u.watchers <= CAPACITY,
            "usage {} watchers, {live} live",
            u.watchers
        );
    } else {
        check!(
            &mut m,
            u.watchers == live,
            "usage {} watchers, {live} live",
            u.watchers
        );
    }
}

/// Run `data` on `Sim`, `Epoll<EpollSim>` and `Kqueue<KqueueSim>` (FreeBSD profile) without
/// faults; each must pass the model and all three traces must agree.
pub fn differential(data: &[u8], allocs: &dyn AllocCounter) -> Result<(), String> {
    use dasynq::backend::{Epoll, Kqueue};
    use dasynq::sim::{EpollSim, KqueuePlatform, KqueueSim, Sim};
    let opts = Options {
        faults: None,
        distinct_priorities: true,
    };
    let sim = Sim::new();
    let a = run(sim.clone(), sim, data, opts.clone(), allocs);
    let k = EpollSim::new();
    let backend = Epoll::with_kernel(k.clone()).map_err(|e| e.to_string())?;
    let b = run(k, backend, data, opts.clone(), allocs);
    let k = KqueueSim::for_platform(KqueuePlatform::FreeBsd);
    let backend = Kqueue::with_kernel(k.clone()).map_err(|e| e.to_string())?;
    let c = run(k, backend, data, opts, allocs);
    for (name, o) in [("Sim", &a), ("epoll", &b), ("kqueue", &c)] {
        if !o.failures.is_empty() {
            return Err(format!("{name}: {}", o.failures.join("\n")));
        }
    }
    for (name, o) in [("epoll", &b), ("kqueue", &c)] {
        if o.trace != a.trace {
            let at = o
                .trace
                .calls
                .iter()
                .zip(&a.trace.calls)
                .position(|(x, y)| x != y)
                .unwrap_or(o.trace.calls.len().min(a.trace.calls.len()));
            return Err(format!(
                "{name} differs from Sim at call {at}: {:?} vs {:?}; steps {:?} vs {:?}",
                o.trace.calls.get(at..(at + 3).min(o.trace.calls.len())),
                a.trace.calls.get(at..(at + 3).min(a.trace.calls.len())),
                o.trace.ran,
                a.trace.ran
            ));
        }
    }
    Ok(())
}
