//! [`BrokerProcess`]: the `agora-broker` binary run as a child process, for tests of the
//! binary itself and of what survives `kill -9`.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{ChildStderr, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{lines, ChildProcess};

/// How long the broker may take to print its ready line, or to exit once told to.
const DEADLINE: Duration = Duration::from_secs(10);

/// What the broker prints on stdout, followed by its request endpoint, once it serves.
const READY: &str = "agora-broker ready: ";

/// An `agora-broker` child process with a given data dir; killed (SIGKILL) and reaped on drop
/// unless it has exited.
pub struct BrokerProcess {
    child: ChildProcess,
    /// The request endpoint from its ready line.
    endpoint: String,
}

impl BrokerProcess {
    /// Run `<bin> --listen <listen> --data <data> <extra...>` and wait for its ready line.
    /// `listen` may use port `*`. `bin` is the broker binary: integration tests of the
    /// `agora-broker` package pass `env!("CARGO_BIN_EXE_agora-broker")` (only the package
    /// that owns a binary is told where it is).
    pub fn start(bin: impl AsRef<OsStr>, listen: &str, data: &Path, extra: &[&str]) -> Self {
        BrokerProcess::start_logging_to(bin, listen, data, extra, Stdio::null())
    }

    /// [`BrokerProcess::start`], the broker's log (stderr) going to `stderr`
    /// (`Stdio::piped()`: [`BrokerProcess::take_stderr`] has it).
    pub fn start_logging_to(
        bin: impl AsRef<OsStr>,
        listen: &str,
        data: &Path,
        extra: &[&str],
        stderr: Stdio,
    ) -> Self {
        let bin = bin.as_ref();
        let mut child = Command::new(bin)
            .args(["--listen", listen, "--data"])
            .arg(data)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        // Owned before the wait, so that a broker that never gets ready is killed.
        let child = ChildProcess::from_child(child, bin);
        let line = lines(stdout, Some(1))
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|e| {
                panic!("the broker prints its ready line within {DEADLINE:?}: {e}")
            });
        let endpoint = line
            .strip_prefix(READY)
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        check_ready_endpoint(listen, &endpoint);
        BrokerProcess { child, endpoint }
    }

    /// The request endpoint clients connect to, from the ready line.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The broker's stderr, when started with it piped.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// Send `signal` (`libc::SIGTERM` to stop it cleanly, `libc::SIGINT` as Ctrl-C does).
    pub fn signal(&mut self, signal: libc::c_int) {
        self.child.signal(signal);
    }

    /// SIGTERM: the broker drains, flushes and exits 0 (see [`BrokerProcess::wait_exit`]).
    pub fn terminate(&mut self) {
        self.signal(libc::SIGTERM);
    }

    /// Wait for the broker to exit, failing the test if it has not within 10 s.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.child.wait_exit(DEADLINE)
    }

    /// `kill -9` the broker and reap it: no chance to flush anything.
    pub fn kill9(&mut self) {
        self.child.kill9();
    }
}

/// The ready line names a concrete endpoint on the host `listen` names: a port number, not
/// `*` or 0, and the very port when `listen` gave one.
fn check_ready_endpoint(listen: &str, endpoint: &str) {
    let split = |ep: &str| {
        ep.rsplit_once(':')
            .map(|(host, port)| (host.to_string(), port.to_string()))
            .unwrap_or_else(|| panic!("an endpoint with a port: {ep}"))
    };
    let (want_host, want_port) = split(listen);
    let (host, port) = split(endpoint);
    assert_eq!(
        host, want_host,
        "the broker listens where it was told: {endpoint}"
    );
    let port: u16 = port
        .parse()
        .unwrap_or_else(|e| panic!("a port number in {endpoint}: {e}"));
    assert_ne!(port, 0, "{endpoint}");
    if want_port != "*" {
        assert_eq!(port.to_string(), want_port, "{endpoint}");
    }
}
