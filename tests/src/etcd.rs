//! A real etcd for tests: Debian's `etcd-server` (`.ci/run` installs it), on loopback ports
//! with a throwaway data directory, killed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An etcd process serving clients on `127.0.0.1`.
pub struct Etcd {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
}

/// A loopback port free now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The etcd binary: on the PATH, or where Debian's package puts it.
fn binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("etcd"))
        .find(|path| path.is_file())
        .expect("etcd is not installed: `apt-get install etcd-server` (.ci/run does)")
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub async fn start() -> Etcd {
        let dir = std::env::temp_dir().join(format!(
            "svrkit-etcd-{}-{}",
            std::process::id(),
            free_port()
        ));
        let mut etcd = Etcd {
            child: None,
            url: String::new(),
            client_port: free_port(),
            peer_port: free_port(),
            dir,
        };
        etcd.url = format!("http://127.0.0.1:{}", etcd.client_port);
        etcd.restart().await;
        etcd
    }

    /// Starts the process again on the same ports and data (after [`kill`](Etcd::kill)).
    pub async fn restart(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(binary())
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.dir.display()))
            .arg(format!("--listen-client-urls={}", self.url))
            .arg(format!("--advertise-client-urls={}", self.url))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            let ready = async {
                let mut client = etcd_client::Client::connect([self.url.as_str()], None).await?;
                client.get("/", None).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), ready).await {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "etcd did not start on {}",
                self.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the process: a partition, as its clients
    /// see it.
    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -{signal} etcd");
        }
    }

    /// SIGKILLs the process (the data directory stays).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
