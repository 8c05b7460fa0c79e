//! A program to start with `posix_spawn` ([`Exec`]): what
//! [`Control::spawn_exec`](crate::Control::spawn_exec) takes where
//! [`Control::spawn_child`](crate::Control::spawn_child) takes a `std::process::Command`.
//!
//! Why a second way: a child must start with a clean signal state (the masking rule blocks
//! `SIGTERM` and friends in the supervisor, and a mask is inherited across `exec`).
//! `posix_spawn` can set the child's mask and dispositions itself (`POSIX_SPAWN_SETSIGMASK`,
//! `POSIX_SPAWN_SETSIGDEF`), but `Command` has no way to ask for that, so `spawn_child` resets
//! them in a `pre_exec` hook, which makes `Command` fork: measurably slower, and more so the
//! larger the parent. An `Exec` says everything a service needs (program, arguments,
//! environment, working directory, stdio, process group) in a form dasynq can hand to
//! `posix_spawn` directly, so spawning with a clean signal state costs what `Command::spawn`
//! costs. Where the system's `posix_spawn` cannot do all of it (a working directory outside
//! Linux, exec errors on OpenBSD), the `Exec` is run through `Command` and the hook instead,
//! with the same result.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Where a child's standard stream goes.
#[derive(Debug, Default)]
pub enum ExecStdio {
    /// The parent's own (the default).
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// A new pipe; the parent's end comes back in [`Spawned`](crate::Spawned).
    Piped,
    /// This fd (a file, a socket, one end of a pipe...), which the child gets as the stream.
    Fd(OwnedFd),
}

/// A program to start, with its arguments, environment, working directory, stdio and process
/// group: the `std::process::Command` of [`Control::spawn_exec`](crate::Control::spawn_exec),
/// started with `posix_spawn`.
///
/// ```
/// use dasynq::{Exec, ExecStdio};
/// let mut exec = Exec::new("/bin/sh");
/// exec.arg("-c")
///     .arg("echo started; exec sleep 30")
///     .env("SERVICE", "web")
///     .stdin(ExecStdio::Null)
///     .stdout(ExecStdio::Piped)
///     .process_group(0);
/// assert_eq!(exec.get_program(), "/bin/sh");
/// ```
#[derive(Debug)]
pub struct Exec {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    pub(crate) env_clear: bool,
    /// Changes to the environment, in order: `None` removes the variable.
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) stdio: [ExecStdio; 3],
    pub(crate) pgroup: Option<i32>,
}

impl Exec {
    /// Run `program` (looked up in this process's `PATH` if it has no `/`), with no
    /// arguments, this process's environment, working directory and stdio.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Exec {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            env_clear: false,
            env: Vec::new(),
            cwd: None,
            stdio: [ExecStdio::Inherit, ExecStdio::Inherit, ExecStdio::Inherit],
            pgroup: None,
        }
    }

    /// Add an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// Add arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.arg(a);
        }
        self
    }

    /// Set an environment variable for the child.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env.push((
            key.as_ref().to_os_string(),
            Some(value.as_ref().to_os_string()),
        ));
        self
    }

    /// Remove an environment variable from the child's environment.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.env.push((key.as_ref().to_os_string(), None));
        self
    }

    /// Start the child with an empty environment (plus what `env` sets afterwards).
    pub fn env_clear(&mut self) -> &mut Self {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// The child's working directory.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The child's standard input.
    pub fn stdin(&mut self, s: ExecStdio) -> &mut Self {
        self.stdio[0] = s;
        self
    }

    /// The child's standard output.
    pub fn stdout(&mut self, s: ExecStdio) -> &mut Self {
        self.stdio[1] = s;
        self
    }

    /// The child's standard error.
    pub fn stderr(&mut self, s: ExecStdio) -> &mut Self {
        self.stdio[2] = s;
        self
    }

    /// Put the child in process group `pgid`; 0 makes it the leader of a new group of its
    /// own (its pid), which can then be signalled as a whole.
    pub fn process_group(&mut self, pgid: i32) -> &mut Self {
        self.pgroup = Some(pgid);
        self
    }

    /// The program.
    pub fn get_program(&self) -> &OsStr {
        &self.program
    }

    /// The arguments (without the program).
    pub fn get_args(&self) -> impl Iterator<Item = &OsStr> {
        self.args.iter().map(|a| a.as_os_str())
    }

    /// The environment changes, in order (`None`: removed).
    pub fn get_envs(&self) -> impl Iterator<Item = (&OsStr, Option<&OsStr>)> {
        self.env.iter().map(|(k, v)| (k.as_os_str(), v.as_deref()))
    }

    /// The working directory, if set.
    pub fn get_current_dir(&self) -> Option<&Path> {
        self.cwd.as_deref()
    }

    /// The same program as a `std::process::Command` (for systems whose `posix_spawn` cannot
    /// do what this asks). Fds given as stdio move into the command.
    pub(crate) fn into_command(self) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        use std::process::Stdio;
        let mut c = std::process::Command::new(&self.program);
        c.args(&self.args);
        if self.env_clear {
            c.env_clear();
        }
        for (k, v) in &self.env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        if let Some(pg) = self.pgroup {
            c.process_group(pg);
        }
        let [i, o, e] = self.stdio;
        let conv = |s: ExecStdio| match s {
            ExecStdio::Inherit => Stdio::inherit(),
            ExecStdio::Null => Stdio::null(),
            ExecStdio::Piped => Stdio::piped(),
            ExecStdio::Fd(fd) => Stdio::from(fd),
        };
        c.stdin(conv(i)).stdout(conv(o)).stderr(conv(e));
        c
    }
}
