//! What `build()` reserves is what the builder's documentation (and the README) says: at
//! most 164 bytes per watcher slot beyond the handler (kept as an `Option<H>`), 16 per timer,
//! 28 per wake watcher, 84 per signal instance and the kernel's event record (12 on x86_64
//! Linux) per event of a runner's buffer, for both flavours and handlers of several sizes and
//! alignments. Measured with a counting global allocator
//! as the difference between two builds (so the fixed part, such as the events buffer, cancels
//! out). A harness-less binary, so no test-runner thread allocates during a measurement.
//!
//! Where the 164 go (x86_64, 160 measured): the watcher slot 88, the pending queue 56 (two
//! halves, each with its node links, key and position, 24, and a place in the priority heap
//! reserved, 4), the timer heaps' position 4 (one array for both clocks), the dirty list, the
//! fallback and watched children lists 4 each. A timer's 16 is its place in the timer heaps'
//! shared buffer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::mem::size_of;
use std::sync::atomic::{AtomicUsize, Ordering};

use dasynq::{Cx, Event, EventLoop, Handler, Rearm, ThreadedLoop};

struct Counting;
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only the sizes are added up.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        BYTES.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        BYTES.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        BYTES.fetch_add(n.saturating_sub(l.size()), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A handler of `N` bytes, aligned to 1, with no spare bit pattern (`Option` adds a byte).
struct Bytes<const N: usize>([u8; N]);
/// A handler of `N` words, aligned to 8 (`Option` adds 8 bytes).
struct Words<const N: usize>([u64; N]);
/// A handler with a spare bit pattern (`Option` adds nothing).
struct Boxed(#[allow(dead_code)] Box<u8>);

macro_rules! handler {
    ($($t:ty),*) => {$(
        impl Handler for $t {
            type Data = ();
            fn on_event(&mut self, _: &Cx<'_, Self>, _: &mut (), _: Event<'_>) -> Rearm {
                Rearm::Rearm
            }
        }
    )*};
}
handler!(Bytes<0>, Bytes<64>, Bytes<1024>, Words<1>, Words<8>, Boxed);

#[derive(Clone, Copy)]
struct Counts {
    watchers: usize,
    timers: usize,
    wakers: usize,
    signal_instances: usize,
    events: usize,
}

fn reserved<H: Handler + Send>(threaded: bool, c: Counts) -> usize {
    let before = BYTES.load(Ordering::Relaxed);
    if threaded {
        let lp = ThreadedLoop::<H>::builder()
            .watchers(c.watchers)
            .timers(c.timers)
            .wakers(c.wakers)
            .signal_instances(c.signal_instances)
            .events(c.events)
            .runners(1)
            .build()
            .expect("build");
        let b = BYTES.load(Ordering::Relaxed) - before;
        drop(lp);
        b
    } else {
        let lp = EventLoop::<H>::builder()
            .watchers(c.watchers)
            .timers(c.timers)
            .wakers(c.wakers)
            .signal_instances(c.signal_instances)
            .events(c.events)
            .build()
            .expect("build");
        let b = BYTES.load(Ordering::Relaxed) - before;
        drop(lp);
        b
    }
}

/// Bytes per watcher slot beyond `size_of::<Option<H>>()`, per timer, per waker, per signal
/// instance held, per event fetched in a wait.
fn per_item<H: Handler + Send>(threaded: bool) -> [f64; 5] {
    const K: usize = 4096;
    let base = Counts {
        watchers: K,
        timers: 0,
        wakers: 0,
        signal_instances: 0,
        events: K,
    };
    // A first build, unmeasured, so nothing done once per process counts.
    let _ = reserved::<H>(threaded, base);
    let per = |extra: Counts| {
        (reserved::<H>(threaded, extra) as f64 - reserved::<H>(threaded, base) as f64) / K as f64
    };
    [
        per(Counts {
            watchers: 2 * K,
            ..base
        }) - size_of::<Option<H>>() as f64,
        per(Counts { timers: K, ..base }),
        per(Counts { wakers: K, ..base }),
        per(Counts {
            signal_instances: K,
            ..base
        }),
        per(Counts {
            events: 2 * K,
            ..base
        }),
    ]
}

/// The documented bounds, in bytes.
const SLOT: f64 = 164.0;
const TIMER: f64 = 16.0;
const WAKER: f64 = 28.0;
const SIGNAL_INSTANCE: f64 = 84.0;
/// The kernel's own event record, which a runner's buffer holds `events` of.
#[cfg(any(target_os = "linux", target_os = "android"))]
const EVENT: f64 = size_of::<libc::epoll_event>() as f64;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const EVENT: f64 = size_of::<libc::kevent>() as f64;

fn main() {
    let mut failed = false;
    for threaded in [false, true] {
        for (handler, size, [slot, timer, waker, instance, event]) in [
            (
                "[u8; 0]",
                size_of::<Option<Bytes<0>>>(),
                per_item::<Bytes<0>>(threaded),
            ),
            (
                "[u8; 64]",
                size_of::<Option<Bytes<64>>>(),
                per_item::<Bytes<64>>(threaded),
            ),
            (
                "[u8; 1024]",
                size_of::<Option<Bytes<1024>>>(),
                per_item::<Bytes<1024>>(threaded),
            ),
            (
                "[u64; 1]",
                size_of::<Option<Words<1>>>(),
                per_item::<Words<1>>(threaded),
            ),
            (
                "[u64; 8]",
                size_of::<Option<Words<8>>>(),
                per_item::<Words<8>>(threaded),
            ),
            (
                "Box<u8>",
                size_of::<Option<Boxed>>(),
                per_item::<Boxed>(threaded),
            ),
        ] {
            let flavour = if threaded {
                "ThreadedLoop"
            } else {
                "EventLoop"
            };
            println!(
                "{flavour}, handler {handler} ({size} B as an Option): {slot:.1} B per watcher \
                 slot beyond it, \
                 {timer:.1} B per timer, {waker:.1} B per waker, {instance:.1} B per signal \
                 instance, {event:.1} B per event of a runner's buffer"
            );
            for (what, got, bound) in [
                ("watcher slot", slot, SLOT),
                ("timer", timer, TIMER),
                ("waker", waker, WAKER),
                ("signal instance", instance, SIGNAL_INSTANCE),
                ("event", event, EVENT),
            ] {
                if got > bound {
                    eprintln!(
                        "{flavour}: {got:.1} B per {what}, over the documented {bound} B: \
                         update the docs (Builder, README) and this bound, or find the growth"
                    );
                    failed = true;
                }
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
