//! Registration options for fd watchers and spawned children.

use crate::id::Priority;

/// What to do with an fd the kernel cannot poll (a regular file or directory).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, Default)]
pub enum Emulation {
    /// Treat it as always ready: while enabled, the handler runs once per batch, like
    /// `select`/`poll` would report it.
    #[default]
    Allow,
    /// Refuse it: registration fails with [`Error::NotPollable`](crate::Error::NotPollable).
    Refuse,
}

/// Options for [`Control::add_fd`](crate::Control::add_fd).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct FdOptions {
    /// Dispatch priority (lower runs first).
    pub priority: Priority,
    /// Whether the watcher starts enabled.
    pub enabled: bool,
    /// What to do if the fd cannot be polled.
    pub emulation: Emulation,
}

impl FdOptions {
    /// Default priority, enabled, emulation allowed.
    pub const fn new() -> Self {
        FdOptions {
            priority: Priority::DEFAULT,
            enabled: true,
            emulation: Emulation::Allow,
        }
    }
    /// Set the priority.
    pub const fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }
    /// Start disabled.
    pub const fn disabled(mut self) -> Self {
        self.enabled = false;
        self
    }
    /// Refuse fds the kernel cannot poll.
    pub const fn no_emulation(mut self) -> Self {
        self.emulation = Emulation::Refuse;
        self
    }
}

impl Default for FdOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Options for [`Control::add_bidi`](crate::Control::add_bidi): each half has its own priority
/// and starts enabled or not.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct BidiOptions {
    /// Priority of the read half.
    pub read_priority: Priority,
    /// Priority of the write half.
    pub write_priority: Priority,
    /// Whether the read half starts enabled.
    pub read_enabled: bool,
    /// Whether the write half starts enabled.
    pub write_enabled: bool,
    /// What to do if the fd cannot be polled.
    pub emulation: Emulation,
}

impl BidiOptions {
    /// Default priorities, both halves enabled, emulation allowed.
    pub const fn new() -> Self {
        BidiOptions {
            read_priority: Priority::DEFAULT,
            write_priority: Priority::DEFAULT,
            read_enabled: true,
            write_enabled: true,
            emulation: Emulation::Allow,
        }
    }
    /// Set both priorities.
    pub const fn priorities(mut self, read: Priority, write: Priority) -> Self {
        self.read_priority = read;
        self.write_priority = write;
        self
    }
    /// Set which halves start enabled.
    pub const fn enabled(mut self, read: bool, write: bool) -> Self {
        self.read_enabled = read;
        self.write_enabled = write;
        self
    }
    /// Refuse fds the kernel cannot poll.
    pub const fn no_emulation(mut self) -> Self {
        self.emulation = Emulation::Refuse;
        self
    }
}

impl Default for BidiOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// The signal state a spawned child starts with.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, Default)]
pub enum ChildSignals {
    /// A clean state: an empty signal mask, and the default disposition for every signal the
    /// spawning thread blocks and every signal this loop watches (what `posix_spawn`'s
    /// `POSIX_SPAWN_SETSIGMASK` and `POSIX_SPAWN_SETSIGDEF` give). This is what a service
    /// expects: the masking rule blocks `SIGTERM` and friends in every thread of the
    /// supervisor, and a mask is inherited across `fork` and `exec`, so without this a child
    /// would never see the `SIGTERM` sent to stop it.
    #[default]
    Reset,
    /// The child inherits the spawning thread's mask and the program's dispositions, as
    /// `Command::spawn` alone gives them (for a child that is meant to start with signals
    /// blocked). `Command` then uses `posix_spawn` where it can, which is faster than the
    /// `fork` that the reset needs (see the crate's `signals_children` benchmark).
    Inherit,
}

/// Options for [`Control::spawn_child`](crate::Control::spawn_child).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct SpawnOptions {
    /// Dispatch priority of the child watcher (lower runs first).
    pub priority: Priority,
    /// The signal state the child starts with.
    pub signals: ChildSignals,
    /// Start the child as the leader of a new process group (see
    /// [`new_process_group`](Self::new_process_group)).
    pub new_group: bool,
}

impl SpawnOptions {
    /// Default priority, a clean signal state.
    pub const fn new() -> Self {
        SpawnOptions {
            priority: Priority::DEFAULT,
            signals: ChildSignals::Reset,
            new_group: false,
        }
    }
    /// Set the priority.
    pub const fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }
    /// Let the child inherit the spawning thread's signal mask and the program's
    /// dispositions ([`ChildSignals::Inherit`]).
    pub const fn inherit_signals(mut self) -> Self {
        self.signals = ChildSignals::Inherit;
        self
    }
    /// Start the child as the leader of a new process group, whose id is the child's pid
    /// (`setpgid(0, 0)` in the child, what std's `CommandExt::process_group(0)` does), so
    /// that [`signal_child_group`](crate::Control::signal_child_group) reaches it and every
    /// process it starts that stays in its group (a shell's pipeline, a daemon's workers).
    /// A child in its own group also no longer gets the terminal's `SIGINT` on Ctrl-C: a
    /// supervisor decides when its services stop.
    pub const fn new_process_group(mut self) -> Self {
        self.new_group = true;
        self
    }
}

impl Default for SpawnOptions {
    fn default() -> Self {
        Self::new()
    }
}
