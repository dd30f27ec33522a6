//! A replicated PostgreSQL for tests: three members managed by Patroni (Debian's `patroni`,
//! which `.ci/run` installs) on a test's etcd, in a throwaway directory, on loopback ports.
//! Without Patroni or PostgreSQL a test skips ([`crate::external`]).
//!
//! Synchronous mode is strict: a commit is acknowledged once a synchronous standby has it,
//! and with no standby writes wait rather than go on alone. It comes with failsafe mode (a
//! primary that loses etcd but reaches its peers keeps running). The asynchronous cluster,
//! which stands for the mechanism removed, has neither: Patroni's failsafe mode refuses to
//! promote a standby that lags the last primary, which would hide the loss it exists to
//! show. Three members, so that after
//! a primary is lost the new one still has a standby. Patroni's own TTL is 8 s (its minimum
//! with a 1 s loop and 3 s retries), which sets how long a failover takes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::postgres::{bin_dir, command, server_user};

/// One member: its Patroni process and ports.
#[derive(Debug)]
pub struct Member {
    /// `pg0`, `pg1`, ...
    pub name: String,
    /// PostgreSQL's loopback port.
    pub port: u16,
    /// Patroni's REST port.
    pub api_port: u16,
    patroni: Option<Child>,
}

/// A Patroni cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Its scope (the cluster's name in etcd and in PostgreSQL's process titles).
    pub scope: String,
    /// The members, in start order.
    pub members: Vec<Member>,
    dir: PathBuf,
    etcd: String,
    synchronous: bool,
    /// WAL receivers frozen by [`Cluster::freeze_standbys`].
    frozen: std::sync::Mutex<Vec<u32>>,
}

fn patroni() -> Option<PathBuf> {
    crate::external::program("patroni")
}

impl Cluster {
    /// Starts `members` members on the etcd at `etcd` (a URL), synchronous or not, and waits
    /// until there is a primary (and, when synchronous, a synchronous standby). `None`,
    /// after a line saying the test skipped, without Patroni or PostgreSQL.
    ///
    /// # Panics
    /// When the cluster does not come up within a minute.
    pub async fn start(etcd: &str, members: usize, synchronous: bool) -> Option<Cluster> {
        let bin = crate::external::POSTGRES.or_skip(bin_dir())?;
        let patroni = crate::external::PATRONI.or_skip(patroni())?;
        static N: AtomicU32 = AtomicU32::new(0);
        let scope = format!(
            "svrkit-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&scope);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("make the cluster's directory");
        let user = server_user();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown to postgres");
        }
        let etcd_host = etcd.trim_start_matches("http://").to_owned();
        let mut cluster = Cluster {
            scope,
            members: Vec::new(),
            dir,
            etcd: etcd_host,
            synchronous,
            frozen: std::sync::Mutex::default(),
        };
        for i in 0..members {
            let member = Member {
                name: format!("pg{i}"),
                port: crate::free_port(),
                api_port: crate::free_port(),
                patroni: None,
            };
            let yml = cluster.config(&member, &bin);
            let path = cluster.dir.join(format!("{}.yml", member.name));
            std::fs::write(&path, yml).expect("write patroni.yml");
            cluster.members.push(member);
            cluster.spawn(i, &patroni, user);
            if i == 0 {
                // The first bootstraps the cluster; the others copy it.
                cluster.until(|c| Box::pin(c.primary_ready())).await;
            }
        }
        cluster.until(|c| Box::pin(c.ready())).await;
        Some(cluster)
    }

    fn config(&self, member: &Member, bin: &std::path::Path) -> String {
        let d = self.dir.display();
        format!(
            "scope: {scope}
name: {name}
namespace: /svrkit-pg/
log:
  level: WARNING
restapi:
  listen: 127.0.0.1:{api}
  connect_address: 127.0.0.1:{api}
etcd3:
  hosts: {etcd}
bootstrap:
  dcs:
    ttl: 8
    loop_wait: 1
    retry_timeout: 3
    maximum_lag_on_failover: 1048576
    synchronous_mode: {sync}
    synchronous_mode_strict: {sync}
    failsafe_mode: {sync}
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_log_hints: 'on'
        max_connections: 200
  initdb:
    - encoding: UTF8
    - auth: trust
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:{port}
  connect_address: 127.0.0.1:{port}
  data_dir: {d}/{name}
  bin_dir: {bin}
  pgpass: {d}/{name}.pgpass
  authentication:
    superuser: {{username: postgres, password: pw}}
    replication: {{username: replicator, password: pw}}
  parameters:
    unix_socket_directories: {d}
",
            scope = self.scope,
            name = member.name,
            api = member.api_port,
            port = member.port,
            etcd = self.etcd,
            sync = self.synchronous,
            bin = bin.display(),
        )
    }

    fn spawn(&mut self, i: usize, patroni: &std::path::Path, user: Option<(u32, u32)>) {
        let member = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", member.name)))
            .expect("open the member's log");
        let child = command(patroni, user)
            .arg(self.dir.join(format!("{}.yml", member.name)))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start patroni");
        member.patroni = Some(child);
    }

    /// Polls `check` every 100 ms until it holds, for at most a minute.
    async fn until(
        &self,
        check: impl for<'a> Fn(&'a Cluster) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + 'a>>,
    ) {
        let end = Instant::now() + Duration::from_secs(60);
        while !check(self).await {
            assert!(
                Instant::now() < end,
                "the Patroni cluster did not settle within a minute (logs in {})",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A connection string for database `db` that finds the primary among the members.
    pub fn url(&self, db: &str) -> String {
        let hosts = vec!["127.0.0.1"; self.members.len()].join(",");
        let ports: Vec<String> = self.members.iter().map(|m| m.port.to_string()).collect();
        format!(
            "host={hosts} port={} user=postgres dbname={db} target_session_attrs=read-write \
             connect_timeout=2",
            ports.join(",")
        )
    }

    async fn query(&self, port: u16, sql: &str) -> Option<Vec<tokio_postgres::Row>> {
        self.query_within(port, sql, Duration::from_secs(2))
            .await
            .ok()
    }

    async fn query_within(
        &self,
        port: u16,
        sql: &str,
        limit: Duration,
    ) -> Result<Vec<tokio_postgres::Row>, String> {
        let url =
            format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2");
        let (client, connection) = tokio::time::timeout(
            Duration::from_secs(3),
            tokio_postgres::connect(&url, tokio_postgres::NoTls),
        )
        .await
        .map_err(|_| "connect: no answer".to_owned())?
        .map_err(|e| format!("connect: {e:?}"))?;
        tokio::spawn(connection);
        tokio::time::timeout(limit, client.query(sql, &[]))
            .await
            .map_err(|_| format!("{sql}: no answer within {limit:?}"))?
            .map_err(|e| format!("{sql}: {e}"))
    }

    /// The index of the member that is primary now, if one is.
    pub async fn primary(&self) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if m.patroni.is_none() {
                continue;
            }
            let rows = self.query(m.port, "SELECT pg_is_in_recovery()").await;
            if rows.is_some_and(|r| r.first().is_some_and(|row| !row.get::<_, bool>(0))) {
                return Some(i);
            }
        }
        None
    }

    async fn primary_ready(&self) -> bool {
        self.primary().await.is_some()
    }

    /// A primary, every live standby streaming from it, and (when synchronous) one of them
    /// synchronous.
    pub async fn ready(&self) -> bool {
        let Some(p) = self.primary().await else {
            return false;
        };
        let live = self.members.iter().filter(|m| m.patroni.is_some()).count();
        let sql = "SELECT sync_state FROM pg_stat_replication WHERE state = 'streaming'";
        let Some(rows) = self.query(self.members[p].port, sql).await else {
            return false;
        };
        let sync = rows
            .iter()
            .filter(|r| r.get::<_, String>(0) == "sync")
            .count();
        rows.len() + 1 == live && (!self.synchronous || sync >= 1)
    }

    /// Waits until [`ready`](Cluster::ready).
    pub async fn settle(&self) {
        self.until(|c| Box::pin(c.ready())).await;
    }

    /// Creates database `name` on the primary; its connection string. On a loaded machine
    /// a commit that waits for the synchronous standby can take seconds: it is given 30.
    ///
    /// # Panics
    /// When there is no primary or it refuses.
    pub async fn database(&self, name: &str) -> String {
        let p = self.primary().await.expect("a primary");
        let sql = format!("CREATE DATABASE {name}");
        self.query_within(self.members[p].port, &sql, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("create the database: {e}"));
        self.url(name)
    }

    /// The postmaster of member `i`, from its pid file.
    fn postmaster(&self, i: usize) -> Option<u32> {
        let pid = self.dir.join(&self.members[i].name).join("postmaster.pid");
        std::fs::read_to_string(pid)
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Kills member `i` as a machine dies: Patroni and PostgreSQL at once (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        let postmaster = self.postmaster(i);
        if let Some(mut child) = self.members[i].patroni.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = postmaster {
            // Frozen first, so that it neither restarts its backends nor orphans them
            // before they are killed.
            signal("STOP", pid);
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &pid.to_string()])
                .status();
            signal("KILL", pid);
        }
    }

    /// Freezes (SIGSTOP) the WAL receiver of every live standby, found by its pid in
    /// `pg_stat_wal_receiver`: with them frozen, nothing the primary commits reaches a
    /// standby's WAL. Tries for up to 30 s to find them all (a standby Patroni is restarting
    /// has none for a moment); answers how many it froze. [`thaw`](Cluster::thaw) resumes
    /// them.
    pub async fn freeze_standbys(&self) -> usize {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let primary = self.primary().await;
            let standbys: Vec<&Member> = self
                .members
                .iter()
                .enumerate()
                .filter(|&(i, m)| m.patroni.is_some() && Some(i) != primary)
                .map(|(_, m)| m)
                .collect();
            let mut pids = Vec::new();
            for m in &standbys {
                let sql = "SELECT pid FROM pg_stat_wal_receiver";
                if let Ok(rows) = self.query_within(m.port, sql, Duration::from_secs(5)).await {
                    pids.extend(
                        rows.iter()
                            .map(|row| u32::try_from(row.get::<_, i32>(0)).unwrap_or(0)),
                    );
                }
            }
            if pids.len() == standbys.len() || Instant::now() >= end {
                for &pid in &pids {
                    signal("STOP", pid);
                }
                let n = pids.len();
                self.frozen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(pids);
                return n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Resumes the WAL receivers [`freeze_standbys`](Cluster::freeze_standbys) froze.
    pub fn thaw(&self) {
        let frozen = std::mem::take(
            &mut *self
                .frozen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for pid in frozen {
            signal("CONT", pid);
        }
    }
}

fn signal(name: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.thaw();
        for i in 0..self.members.len() {
            let postmaster = self.postmaster(i);
            if let Some(mut child) = self.members[i].patroni.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if let Some(pid) = postmaster {
                // SIGQUIT: immediate shutdown, taking the backends with it.
                signal("QUIT", pid);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
