//! Helpers for tests that run the `agora-broker` binary as a child process.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A broker child process with a given data dir; killed (and reaped) on drop.
pub struct BrokerProcess {
    pub child: Child,
    /// The request endpoint from its ready line.
    pub endpoint: String,
}

impl BrokerProcess {
    /// Start `agora-broker --listen <listen> --data <data> <extra...>` and wait for its ready
    /// line. `listen` may use port `*`.
    pub fn start(listen: &str, data: &Path, extra: &[&str]) -> BrokerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agora-broker"))
            .args(["--listen", listen, "--data"])
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("broker starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("ready line");
        let endpoint = line
            .trim()
            .strip_prefix("agora-broker ready: ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        BrokerProcess { child, endpoint }
    }

    /// `kill -9` the broker and reap it.
    pub fn kill9(&mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port with the three ports after it free too (events, space, replay), outside
/// the ephemeral range, so a broker can be restarted on the same endpoints.
pub fn free_port() -> u16 {
    agora_testkit::loopback_port_block(4)
}
