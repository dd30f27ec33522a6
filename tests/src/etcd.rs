//! A real etcd for tests: Debian's `etcd-server` (`.ci/run` installs it), on loopback ports
//! with a throwaway data directory, killed when dropped. Without it a test skips
//! ([`crate::external`]).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An etcd process serving clients on `127.0.0.1`.
pub struct Etcd {
    binary: PathBuf,
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
}

impl Etcd {
    /// Starts etcd and waits until it answers; `None`, after a line saying the test
    /// skipped, when etcd is not installed (a failure under `SVRKIT_REQUIRE_EXTERNAL`).
    pub async fn start() -> Option<Etcd> {
        let binary = crate::external::ETCD.or_skip(crate::external::program("etcd"))?;
        let dir = std::env::temp_dir().join(format!(
            "svrkit-etcd-{}-{}",
            std::process::id(),
            crate::free_port()
        ));
        let mut etcd = Etcd {
            binary,
            child: None,
            url: String::new(),
            client_port: crate::free_port(),
            peer_port: crate::free_port(),
            dir,
        };
        etcd.url = format!("http://127.0.0.1:{}", etcd.client_port);
        etcd.restart().await;
        Some(etcd)
    }

    /// Starts the process again on the same ports and data (after [`kill`](Etcd::kill)).
    pub async fn restart(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&self.binary)
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

/// The keys under `prefix` in the etcd at `url`, as an operator reads them with etcdctl.
pub async fn keys(url: &str, prefix: &str) -> Vec<String> {
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_keys_only();
    client(url)
        .await
        .get(prefix, Some(options))
        .await
        .expect("list keys in etcd")
        .kvs()
        .iter()
        .map(|kv| kv.key_str().expect("a UTF-8 key").to_owned())
        .collect()
}

/// A client of the etcd at `url`, for tests that read or change what is registered.
pub async fn client(url: &str) -> etcd_client::Client {
    etcd_client::Client::connect([url], None)
        .await
        .expect("connect to etcd")
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
