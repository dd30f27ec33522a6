//! A real PostgreSQL for tests: Debian's `postgresql` package (`.ci/run` installs it),
//! `initdb` in a throwaway directory, serving on a Unix socket in it and on a loopback port,
//! shut down (immediately) when dropped. Without it a test skips ([`crate::external`]).
//!
//! PostgreSQL refuses to run as root; as root the server runs as the `postgres` user the
//! package creates.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A PostgreSQL server.
pub struct Postgres {
    child: Child,
    dir: PathBuf,
    /// Its loopback port (the socket in `dir` has the same number).
    pub port: u16,
}

/// The directory of PostgreSQL's programs: the newest under `/usr/lib/postgresql`, else the
/// PATH's; `None` when it is not installed.
pub fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .pop()
        .or_else(|| Some(crate::external::program("initdb")?.parent()?.to_owned()))
}

/// The (uid, gid) to run the server as: ours, or `postgres`'s when we are root.
pub(crate) fn server_user() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if id(&["-u"])? != 0 {
        return None;
    }
    Some((
        id(&["-u", "postgres"]).expect("a `postgres` user (the package makes one)"),
        id(&["-g", "postgres"]).expect("a `postgres` group"),
    ))
}

pub(crate) fn command(program: &Path, user: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(program);
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}

impl Postgres {
    /// Runs `initdb` and starts the server; returns once it accepts connections. `None`,
    /// after a line saying the test skipped, when PostgreSQL is not installed (a failure
    /// under `SVRKIT_REQUIRE_EXTERNAL`).
    pub async fn start() -> Option<Postgres> {
        let bin = crate::external::POSTGRES.or_skip(bin_dir())?;
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "svrkit-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("make the data directory");
        let user = server_user();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown to postgres");
        }
        let data = dir.join("data");
        let status = command(&bin.join("initdb"), user)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed in {}", dir.display());
        let port = crate::free_port();
        let child = command(&bin.join("postgres"), user)
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let server = Postgres { child, dir, port };
        let started = Instant::now();
        while tokio_postgres::connect(&server.url("postgres"), tokio_postgres::NoTls)
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "postgres did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(server)
    }

    /// The connection string of database `db` (over the Unix socket).
    pub fn url(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.dir.display(),
            self.port
        )
    }

    /// Creates a database; its connection string.
    pub async fn database(&self, name: &str) -> String {
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .expect("connect to postgres");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the database");
        self.url(name)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown; the postmaster takes its backends with it (SIGKILL
        // would orphan them).
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
