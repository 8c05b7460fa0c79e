//! The API as a program uses it: handlers that borrow locals, code generic over the loop and a
//! handler's `Cx`, program state lent by each run call (also one per runner), errors passed on
//! with `?`, and `run` with nothing registered.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dasynq::{
    Clock, Control, Cx, Deadline, Event, EventLoop, FnHandler, Handler, Priority, Rearm,
    SendFnHandler, ThreadedLoop, WatchId,
};

/// A handler borrowing a local: no `'static` bound anywhere on the loop or its operations.
struct Counts<'a>(&'a Cell<u32>);

impl Handler for Counts<'_> {
    type Data = ();
    fn on_event(&mut self, cx: &Cx<'_, Self>, _: &mut (), _: Event<'_>) -> Rearm {
        self.0.set(self.0.get() + 1);
        cx.stop();
        Rearm::Remove
    }
}

#[test]
fn a_handler_may_borrow_a_local() {
    let seen = Cell::new(0);
    let lp = EventLoop::<Counts<'_>>::builder()
        .watchers(4)
        .build()
        .unwrap();
    let (_id, waker) = lp.add_wake(Priority::DEFAULT, Counts(&seen)).unwrap();
    waker.wake();
    assert_eq!(lp.run(), 1);
    assert_eq!(seen.get(), 1);
}

/// Registers a one-shot timer through whatever it is given: the loop or a handler's `cx`.
fn add_soon<C: Control<FnHandler>>(c: &C, fired: std::rc::Rc<Cell<u32>>) -> WatchId {
    let t = c
        .add_timer(
            Clock::Monotonic,
            Priority::DEFAULT,
            FnHandler::new(move |cx, _| {
                fired.set(fired.get() + 1);
                cx.stop();
                Rearm::Remove
            }),
        )
        .unwrap();
    c.arm_timer(t, Deadline::After(Duration::ZERO), None)
        .unwrap();
    t
}

#[test]
fn control_is_implemented_by_the_loop_and_by_cx() {
    let fired = std::rc::Rc::new(Cell::new(0));
    let lp = EventLoop::<FnHandler>::builder()
        .watchers(8)
        .build()
        .unwrap();
    add_soon(&lp, fired.clone());
    let f2 = fired.clone();
    let (_w, waker) = lp
        .add_wake(
            Priority::DEFAULT,
            FnHandler::new(move |cx, _| {
                add_soon(cx, f2.clone());
                Rearm::Remove
            }),
        )
        .unwrap();
    assert_eq!(lp.run(), 1);
    waker.wake();
    while fired.get() < 2 {
        lp.run();
    }
    assert_eq!(fired.get(), 2);
}

/// Counts what it handles into the data of the run call that dispatched it, and into a
/// shared counter.
struct Tally(Arc<std::sync::atomic::AtomicU64>);

#[derive(Default)]
struct PerRunner {
    handled: u64,
}

impl Handler for Tally {
    type Data = PerRunner;
    fn on_event(&mut self, _: &Cx<'_, Self>, data: &mut PerRunner, _: Event<'_>) -> Rearm {
        data.handled += 1;
        self.0.fetch_add(1, Ordering::SeqCst);
        Rearm::Rearm
    }
}

#[test]
fn each_runner_lends_its_own_data() {
    let lp = Arc::new(
        ThreadedLoop::<Tally>::builder()
            .watchers(8)
            .runners(3)
            .build()
            .unwrap(),
    );
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (_id, waker) = lp
        .add_wake(Priority::DEFAULT, Tally(calls.clone()))
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let runners: Vec<_> = (0..2)
        .map(|_| {
            let (lp, done) = (lp.clone(), done.clone());
            std::thread::spawn(move || {
                let mut mine = PerRunner::default();
                while !done.load(Ordering::SeqCst) {
                    lp.run_with(&mut mine);
                }
                mine.handled
            })
        })
        .collect();
    // Each wake is handled before the next is made (one handler call per wake).
    let mut main = PerRunner::default();
    for _ in 0..200 {
        waker.wake();
        std::thread::sleep(Duration::from_micros(200));
    }
    // Whatever is still queued, this thread takes.
    lp.poll_with(&mut main);
    done.store(true, Ordering::SeqCst);
    let mut total = main.handled;
    for r in runners {
        while !r.is_finished() {
            lp.stop();
            std::thread::sleep(Duration::from_millis(1));
        }
        total += r.join().unwrap();
    }
    // Every call was counted in exactly one run call's data (coalesced wakes make fewer
    // calls than wakes, never more).
    assert_eq!(total, calls.load(Ordering::SeqCst));
    assert!((1..=200).contains(&total), "{total}");
}

#[test]
fn rejected_passes_on_with_question_mark() {
    fn register(
        lp: &ThreadedLoop<SendFnHandler>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        lp.add_timer(
            Clock::Monotonic,
            Priority::DEFAULT,
            SendFnHandler::new(|_, _| Rearm::Rearm),
        )?;
        Ok(())
    }
    fn register_io(lp: &EventLoop<FnHandler>) -> std::io::Result<()> {
        lp.add_timer(
            Clock::Monotonic,
            Priority::DEFAULT,
            FnHandler::new(|_, _| Rearm::Rearm),
        )?;
        Ok(())
    }
    let lp = ThreadedLoop::<SendFnHandler>::builder()
        .watchers(1)
        .timers(1)
        .build()
        .unwrap();
    register(&lp).unwrap();
    let e = register(&lp).unwrap_err();
    assert!(e.to_string().contains("every timer slot is in use"), "{e}");
    let back = e
        .downcast::<dasynq::Rejected<SendFnHandler>>()
        .expect("the Rejected itself");
    assert_eq!(back.error(), dasynq::Error::Capacity(dasynq::Pool::Timers));

    let lp = EventLoop::<FnHandler>::builder()
        .watchers(1)
        .timers(1)
        .build()
        .unwrap();
    register_io(&lp).unwrap();
    assert_eq!(
        register_io(&lp).unwrap_err().kind(),
        std::io::ErrorKind::OutOfMemory
    );
}

#[test]
fn a_single_threaded_run_with_nothing_registered_returns_at_once() {
    let lp = EventLoop::<FnHandler>::builder().build().unwrap();
    // A plain blocking `run`: with nothing registered nothing could ever end its wait.
    assert_eq!(lp.run(), 0);
    assert_eq!(lp.run_limit(5), 0);
}

#[test]
fn a_threaded_run_with_nothing_registered_waits_for_another_thread() {
    let lp = Arc::new(
        ThreadedLoop::<SendFnHandler>::builder()
            .watchers(4)
            .runners(2)
            .build()
            .unwrap(),
    );
    let runner = {
        let lp = lp.clone();
        std::thread::spawn(move || lp.run())
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !runner.is_finished(),
        "run waits: another thread may register"
    );
    let (_id, waker) = lp
        .add_wake(Priority::DEFAULT, SendFnHandler::new(|_, _| Rearm::Remove))
        .unwrap();
    waker.wake();
    let watchdog = std::time::Instant::now();
    while !runner.is_finished() {
        assert!(
            watchdog.elapsed() < Duration::from_secs(30),
            "the wake was lost"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(runner.join().unwrap(), 1);
}

#[test]
fn an_arc_of_a_threaded_loop_is_a_control() {
    fn add_one<C: Control<SendFnHandler>>(c: &C) -> WatchId {
        c.add_timer(
            Clock::Monotonic,
            Priority::DEFAULT,
            SendFnHandler::new(|_, _| Rearm::Rearm),
        )
        .unwrap()
    }
    let lp = Arc::new(
        ThreadedLoop::<SendFnHandler>::builder()
            .watchers(4)
            .build()
            .unwrap(),
    );
    let id = add_one(&lp);
    assert!(lp.contains(id));
    let dynamic: &dyn Control<SendFnHandler> = &lp;
    assert!(dynamic.contains(id));
}
