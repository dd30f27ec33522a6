//! A server in a child process of the current executable, for benches that measure a server
//! apart from the load they put on it: its CPU and memory are its own.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A child process serving on a loopback port. Dropping it closes the child's stdin, waits up
/// to 5 s for it to exit (blocking the dropping thread meanwhile: a server exits at once) and
/// then kills it.
pub struct ServerProcess {
    /// The process.
    pub child: Child,
    /// Where it serves.
    pub addr: String,
}

impl ServerProcess {
    /// Runs this executable with `args`; it must print `READY <addr>` once serving and exit
    /// when its stdin closes.
    pub fn start(args: &[&str]) -> ServerProcess {
        let mut child = Command::new(std::env::current_exe().expect("this executable"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server process");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("piped stdout"))
            .read_line(&mut line)
            .expect("the server's first line");
        let addr = line
            .trim()
            .strip_prefix("READY ")
            .expect("the server said READY")
            .to_owned();
        ServerProcess { child, addr }
    }

    /// Resident memory of the server process, in bytes (0 once it is gone).
    pub fn rss_bytes(&self) -> u64 {
        rss_of(self.child.id())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        // It exits by itself once its stdin closes; a moment for that lets a profiler it
        // runs under (callgrind, `scripts/profile-rpc.sh`) write its output.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of process `pid`, in bytes (0 if it is gone).
pub fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
