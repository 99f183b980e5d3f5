//! Child processes a test starts (the `agora` tool, an `agora-broker`): killed and reaped on
//! drop if the test fails while they run, waited for with a deadline, their output read line
//! by line with a deadline.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::ops::{Deref, DerefMut};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::wait_until_blocking;

/// A running child process, killed (SIGKILL) and reaped on drop unless it has exited.
///
/// It dereferences to its [`Child`] for what a test does with the process itself (take a
/// pipe, `try_wait`, `id`).
pub struct ChildProcess {
    child: Child,
    program: OsString,
}

impl ChildProcess {
    /// Spawn `cmd` with its stdout and stderr piped (stdin as `cmd` says).
    pub fn spawn(cmd: &mut Command) -> ChildProcess {
        let program = cmd.get_program().to_os_string();
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program:?}: {e}"));
        ChildProcess { child, program }
    }

    /// Take charge of a child spawned with other settings.
    pub fn from_child(child: Child, program: impl Into<OsString>) -> ChildProcess {
        ChildProcess {
            child,
            program: program.into(),
        }
    }

    /// Wait for the process to exit, failing the test if it has not within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        let exited = wait_until_blocking(timeout, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        assert!(exited, "{:?} did not exit within {timeout:?}", self.program);
        status.expect("exited")
    }

    /// [`ChildProcess::wait_exit`], then what is left in its stdout and stderr pipes (empty
    /// for a pipe already taken or not piped).
    pub fn wait_output(mut self, timeout: Duration) -> Output {
        let status = self.wait_exit(timeout);
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let Some(mut s) = self.child.stdout.take() {
            s.read_to_end(&mut stdout).expect("read stdout");
        }
        if let Some(mut s) = self.child.stderr.take() {
            s.read_to_end(&mut stderr).expect("read stderr");
        }
        Output {
            status,
            stdout,
            stderr,
        }
    }

    /// Send `signal` (`libc::SIGTERM`, `libc::SIGINT`, ...) to the process, which must still
    /// be running.
    pub fn signal(&mut self, signal: libc::c_int) {
        // Not reaped yet (checked here, and only we reap it): the pid is still our child's.
        let status = self.child.try_wait().expect("try_wait");
        assert!(
            status.is_none(),
            "{:?} exited before signal {signal}: {status:?}",
            self.program
        );
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) takes no pointers; the pid is our unreaped child's (above).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// `kill -9` the process and reap it.
    pub fn kill9(&mut self) {
        // SIGKILL on Unix; an error only says it has exited already.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Deref for ChildProcess {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.child
    }
}

impl DerefMut for ChildProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill9();
        }
    }
}

/// Run `cmd` to completion, failing the test if it has not exited within `timeout`; its
/// stdout and stderr are collected.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    ChildProcess::spawn(cmd).wait_output(timeout)
}

/// Forward the lines `from` yields (a child's stdout) over a channel, so that reads can have
/// deadlines (`recv_timeout`). With `max`, the reader stops after that many lines and drops
/// `from` (closing a pipe, as `| head -n max` would).
pub fn lines(from: impl Read + Send + 'static, max: Option<usize>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, line) in BufReader::new(from).lines().enumerate() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() || max.is_some_and(|m| n + 1 >= m) {
                break;
            }
        }
    });
    rx
}
