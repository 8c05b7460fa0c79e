//! The simulated process's signals: its mask, the instances pending in arrival order
//! (standard signals coalesce, real-time ones queue), and the delivery attempts kqueue's
//! `EVFILT_SIGNAL` counts.

use super::{Objects, SimWorld};
use crate::error::Errno;
use crate::signal::{SigInfo, Signal, SignalSet};

/// Signal instances the simulated process can have pending at once (`RLIMIT_SIGPENDING`).
pub(crate) const SIGNAL_QUEUE: usize = 1024;

impl Objects {
    /// How many times `signal` was sent to the simulated process.
    pub(crate) fn signal_attempts(&self, signal: Signal) -> u64 {
        usize::try_from(signal.raw())
            .ok()
            .and_then(|i| self.attempts.get(i))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn blocked(&self) -> SignalSet {
        self.blocked
    }

    /// Queue a signal instance for the simulated process. A signal that is not blocked is
    /// taken by its default action (here: dropped); a standard signal already pending
    /// coalesces (POSIX); real-time instances queue up to `SIGNAL_QUEUE` (then `EAGAIN`).
    pub(crate) fn raise(&mut self, info: SigInfo) -> Result<(), Errno> {
        let sig = info.signal();
        if let Some(a) = usize::try_from(sig.raw())
            .ok()
            .and_then(|i| self.attempts.get_mut(i))
        {
            *a += 1;
        }
        if !self.blocked.contains(sig) {
            return Ok(());
        }
        if !sig.is_realtime() && self.pending.iter().any(|p| p.signal() == sig) {
            return Ok(());
        }
        if self.pending.len() >= self.pending.capacity() {
            return Err(Errno::AGAIN);
        }
        self.pending.push(info);
        self.next_seq();
        Ok(())
    }

    /// Whether an instance of a signal in `armed` is pending.
    pub(crate) fn signal_pending(&self, armed: SignalSet) -> bool {
        self.pending.iter().any(|p| armed.contains(p.signal()))
    }

    /// Take the first instance of the lowest-numbered pending signal in `armed` (the order a
    /// kernel dequeues them in).
    pub(crate) fn take_signal(&mut self, armed: SignalSet) -> Option<SigInfo> {
        let mut present = SignalSet::new();
        for p in &self.pending {
            if armed.contains(p.signal()) {
                present.add(p.signal());
            }
        }
        let sig = present.lowest()?;
        let i = self.pending.iter().position(|p| p.signal() == sig)?;
        Some(self.pending.remove(i))
    }
}

impl<X> SimWorld<X> {
    /// Block `signal` in the simulated process (as `pthread_sigmask` would); watched signals
    /// must be blocked, as on a real kernel.
    pub fn block_signal(&self, signal: Signal) {
        self.change(|o, _| {
            o.blocked.add(signal);
        });
    }

    /// Unblock `signal`; pending instances of it are dropped (taken by the default action).
    pub fn unblock_signal(&self, signal: Signal) {
        self.change(|o, _| {
            o.blocked.remove(signal);
            o.pending.retain(|p| p.signal() != signal);
        });
    }

    /// Send a signal instance to the simulated process, as `kill` or `sigqueue` would (`AGAIN`
    /// when the queue of pending instances is full).
    pub fn raise(&self, info: SigInfo) -> Result<(), Errno> {
        self.change(|o, _| o.raise(info))
    }

    /// Signal instances pending in the simulated process.
    pub fn pending_signals(&self) -> usize {
        self.lock().0.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> SimWorld<()> {
        SimWorld::with_tables(())
    }

    #[test]
    fn standard_signals_coalesce_realtime_ones_queue_in_order() {
        let w = world();
        let rt = Signal::rt(0).unwrap();
        w.raise(SigInfo::new(Signal::USR1)).unwrap();
        assert_eq!(
            w.pending_signals(),
            0,
            "not blocked: the default action takes it"
        );
        w.block_signal(Signal::USR1);
        w.block_signal(rt);
        for v in 1..=3 {
            w.raise(SigInfo::new(Signal::USR1).with_value(v)).unwrap();
            w.raise(SigInfo::new(rt).with_value(v)).unwrap();
        }
        assert_eq!(w.pending_signals(), 4);
        let mut g = w.lock();
        let all = SignalSet::of(&[Signal::USR1, rt]);
        assert_eq!(
            g.0.take_signal(all).unwrap().signal(),
            Signal::USR1,
            "lowest number first"
        );
        let vals: Vec<u64> = std::iter::from_fn(|| g.0.take_signal(all))
            .map(|i| i.value_ptr() as u64)
            .collect();
        assert_eq!(vals, vec![1, 2, 3]);
        assert!(g.0.take_signal(all).is_none());
    }
}
