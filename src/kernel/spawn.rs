//! Starting a child on the real kernels: a `std::process::Command` (its signal state reset
//! by a `pre_exec` hook, see [`reset_signals_in_child`](super::posix::reset_signals_in_child))
//! or an [`Exec`], handed to `posix_spawn` with the signal state set by the spawn attributes
//! themselves (no fork).

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

use crate::backend::{ChildCommand, SpawnHow};
use crate::child::SpawnedProcess;
use crate::error::Errno;
use crate::exec::{Exec, ExecStdio};
use crate::signal::{Signal, SignalSet};

/// Start `cmd` as `how` says (see `Backend::spawn`).
pub(crate) fn spawn(cmd: ChildCommand<'_>, how: SpawnHow) -> Result<SpawnedProcess, Errno> {
    let reset = how.reset;
    match cmd {
        ChildCommand::Command(cmd) => {
            if how.new_group {
                use std::os::unix::process::CommandExt;
                cmd.process_group(0);
            }
            spawn_command(cmd, reset)
        }
        ChildCommand::Exec(exec) => {
            if how.new_group {
                exec.pgroup = Some(0);
            }
            // posix_spawn must report exec failures (not every system's does: OpenBSD's child
            // just exits 127) and, for a working directory, have `addchdir`.
            let direct =
                cfg!(dasynq_posix_spawn_errors) && (exec.cwd.is_none() || addchdir().is_some());
            if direct {
                posix_spawn(exec, reset)
            } else {
                let taken = core::mem::replace(exec, Exec::new(""));
                spawn_command(&mut taken.into_command(), reset)
            }
        }
    }
}

fn spawn_command(
    cmd: &mut std::process::Command,
    reset: Option<SignalSet>,
) -> Result<SpawnedProcess, Errno> {
    if let Some(set) = reset {
        super::posix::reset_signals_in_child(cmd, set);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EINVAL)))?;
    // Dropping a `Child` neither waits for nor kills the process: the loop reaps it.
    Ok(SpawnedProcess {
        pid: child.id(),
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
    })
}

fn cstring(s: &OsStr) -> Result<CString, Errno> {
    // A NUL inside an argument cannot be passed to exec.
    CString::new(s.as_bytes()).map_err(|_| Errno::INVAL)
}

/// The child's environment: this process's (unless cleared) with the changes applied.
fn environment(exec: &Exec) -> Result<Vec<CString>, Errno> {
    let mut vars: Vec<(OsString, OsString)> = if exec.env_clear {
        Vec::new()
    } else {
        std::env::vars_os().collect()
    };
    for (k, v) in &exec.env {
        vars.retain(|(have, _)| have != k);
        if let Some(v) = v {
            vars.push((k.clone(), v.clone()));
        }
    }
    vars.iter()
        .map(|(k, v)| {
            let mut b = k.as_bytes().to_vec();
            b.push(b'=');
            b.extend_from_slice(v.as_bytes());
            CString::new(b).map_err(|_| Errno::INVAL)
        })
        .collect()
}

fn pointers(v: &[CString]) -> Vec<*mut libc::c_char> {
    v.iter()
        .map(|c| c.as_ptr() as *mut libc::c_char)
        .chain(core::iter::once(core::ptr::null_mut()))
        .collect()
}

type AddChdir =
    unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, *const libc::c_char) -> libc::c_int;

/// The C library's `posix_spawn_file_actions_addchdir_np` (glibc 2.29, musl 1.1.24, FreeBSD
/// 13.1, macOS 10.15) or POSIX 2024's `posix_spawn_file_actions_addchdir`, looked up when
/// first needed, as std does: an older C library simply lacks it, and a working directory
/// then goes the `Command` way.
fn addchdir() -> Option<AddChdir> {
    static FOUND: OnceLock<Option<AddChdir>> = OnceLock::new();
    *FOUND.get_or_init(|| {
        for name in [
            c"posix_spawn_file_actions_addchdir",
            c"posix_spawn_file_actions_addchdir_np",
        ] {
            // SAFETY: `dlsym` with RTLD_DEFAULT only looks the name up; the name is a
            // NUL-terminated string.
            let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            if !p.is_null() {
                // SAFETY: both names are the same function, of this signature, in every C
                // library that has either.
                return Some(unsafe { core::mem::transmute::<*mut libc::c_void, AddChdir>(p) });
            }
        }
        None
    })
}

fn check(r: libc::c_int) -> Result<(), Errno> {
    if r == 0 { Ok(()) } else { Err(Errno(r)) }
}

/// `posix_spawn_file_actions_t`, destroyed when dropped.
struct Actions(libc::posix_spawn_file_actions_t);

impl Drop for Actions {
    fn drop(&mut self) {
        // SAFETY: initialised by `posix_spawn_file_actions_init` in `posix_spawn`.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// `posix_spawnattr_t`, destroyed when dropped.
struct Attributes(libc::posix_spawnattr_t);

impl Drop for Attributes {
    fn drop(&mut self) {
        // SAFETY: initialised by `posix_spawnattr_init` in `posix_spawn`.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

fn posix_spawn(exec: &mut Exec, reset: Option<SignalSet>) -> Result<SpawnedProcess, Errno> {
    let program = cstring(&exec.program)?;
    let mut argv_c = vec![program.clone()];
    for a in &exec.args {
        argv_c.push(cstring(a)?);
    }
    let argv = pointers(&argv_c);
    let env_c = environment(exec)?;
    let envp = pointers(&env_c);

    let mut actions = {
        let mut a = core::mem::MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
        // SAFETY: `init` initialises the object it is given.
        check(unsafe { libc::posix_spawn_file_actions_init(a.as_mut_ptr()) })?;
        // SAFETY: initialised just above.
        Actions(unsafe { a.assume_init() })
    };
    // The fds the child gets as its stdio: closed here once it has them.
    let mut given: Vec<OwnedFd> = Vec::new();
    let mut parent_ends: [Option<OwnedFd>; 3] = [None, None, None];
    for (n, s) in exec.stdio.iter_mut().enumerate() {
        let n = n as RawFd;
        let source = match core::mem::take(s) {
            ExecStdio::Inherit => continue,
            ExecStdio::Null => {
                let mode = if n == 0 {
                    libc::O_RDONLY
                } else {
                    libc::O_WRONLY
                };
                // SAFETY: `actions` is initialised; the path is a NUL-terminated string that
                // outlives the call (the action copies it).
                check(unsafe {
                    libc::posix_spawn_file_actions_addopen(
                        &mut actions.0,
                        n,
                        c"/dev/null".as_ptr(),
                        mode,
                        0,
                    )
                })?;
                continue;
            }
            ExecStdio::Piped => {
                let (r, w) = super::cloexec_pipe()?;
                let (child, parent) = if n == 0 { (r, w) } else { (w, r) };
                parent_ends[n as usize] = Some(parent);
                child
            }
            ExecStdio::Fd(fd) => fd,
        };
        // dup2 onto the same number would leave its close-on-exec flag: move it first.
        let source = if source.as_raw_fd() <= 2 {
            rustix::io::fcntl_dupfd_cloexec(&source, 3).map_err(Errno::from_rustix)?
        } else {
            source
        };
        // SAFETY: `actions` is initialised; `source` stays open until after the spawn.
        check(unsafe {
            libc::posix_spawn_file_actions_adddup2(&mut actions.0, source.as_raw_fd(), n)
        })?;
        given.push(source);
    }
    let cwd = match &exec.cwd {
        Some(d) => Some(cstring(d.as_os_str())?),
        None => None,
    };
    if let Some(d) = &cwd {
        // (`spawn` takes this path only when the C library has the call.)
        let add = addchdir().ok_or(Errno::NOSYS)?;
        // SAFETY: `actions` is initialised; the path is NUL-terminated and outlives the
        // spawn; `add` has the C library's signature for this function.
        check(unsafe { add(&mut actions.0, d.as_ptr()) })?;
    }

    let mut attrs = {
        let mut a = core::mem::MaybeUninit::<libc::posix_spawnattr_t>::uninit();
        // SAFETY: `init` initialises the object it is given.
        check(unsafe { libc::posix_spawnattr_init(a.as_mut_ptr()) })?;
        // SAFETY: initialised just above.
        Attributes(unsafe { a.assume_init() })
    };
    // As `Command` does, the child gets `SIGPIPE`'s default action (Rust ignores it).
    let mut defaults = SignalSet::of(&[Signal::PIPE]);
    let mut flags = libc::POSIX_SPAWN_SETSIGDEF;
    if let Some(set) = reset {
        defaults = super::posix::child_reset_set(set);
        flags |= libc::POSIX_SPAWN_SETSIGMASK;
        let empty = super::posix::to_sigset(SignalSet::new());
        // SAFETY: `attrs` is initialised; `empty` is an initialised set, copied by the call.
        check(unsafe { libc::posix_spawnattr_setsigmask(&mut attrs.0, &empty) })?;
    }
    let defaults = super::posix::to_sigset(defaults);
    // SAFETY: as above.
    check(unsafe { libc::posix_spawnattr_setsigdefault(&mut attrs.0, &defaults) })?;
    if let Some(pg) = exec.pgroup {
        flags |= libc::POSIX_SPAWN_SETPGROUP;
        // SAFETY: `attrs` is initialised.
        check(unsafe { libc::posix_spawnattr_setpgroup(&mut attrs.0, pg) })?;
    }
    // SAFETY: `attrs` is initialised; the flags are the spawn flags named above.
    check(unsafe { libc::posix_spawnattr_setflags(&mut attrs.0, flags as _) })?;

    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: the program and the NULL-terminated argv
    // and envp arrays point into `argv_c`/`env_c`, which outlive it; `actions` and `attrs`
    // are initialised; `pid` is a valid out-pointer.
    check(unsafe {
        libc::posix_spawnp(
            &mut pid,
            program.as_ptr(),
            &actions.0,
            &attrs.0,
            argv.as_ptr(),
            envp.as_ptr(),
        )
    })?;
    drop(given);
    let [i, o, e] = parent_ends;
    Ok(SpawnedProcess {
        pid: pid as u32,
        stdin: i.map(std::process::ChildStdin::from),
        stdout: o.map(std::process::ChildStdout::from),
        stderr: e.map(std::process::ChildStderr::from),
    })
}
