//! The case of `sets`, compiled with the `etcd` feature.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::support::{TempDir, User, sync_all};
use svrkit_im::im::gateway::{Credentials, GatewaySvrClient, SendReq, SyncReq};
use svrkit_runtime::{CallOptions, Config};

/// The deployment, stopped (and its directory removed) when dropped.
struct Deployment {
    dir: TempDir,
    base: u16,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/sets.sh")
}

impl Deployment {
    fn start() -> Deployment {
        let dir = TempDir::new("sets");
        // 50 ports from a base no other test of this run picks, below Linux's ephemeral
        // range (32768 and up), where the other tests' listeners and connections take ports
        // at random: a base up there collided with one now and then.
        let base = 20_000 + (std::process::id() % 250) as u16 * 50;
        let out = Command::new("bash")
            .arg(script())
            .args(["start"])
            .arg(&dir.0)
            .env("IM_SERVER", env!("CARGO_BIN_EXE_im-server"))
            .env("BASE_PORT", base.to_string())
            .env(
                "ACCOUNT_TOML",
                "argon2_memory_kib = 64\nargon2_iterations = 1",
            )
            .output()
            .expect("run sets.sh");
        let deployment = Deployment { dir, base };
        assert!(
            out.status.success(),
            "sets.sh start failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        deployment
    }

    fn etcd(&self) -> String {
        format!("http://127.0.0.1:{}", self.base)
    }

    /// A connection to one of the deployment's databases.
    async fn database(&self, name: &str) -> tokio_postgres::Client {
        let url = format!(
            "host={} port={} user=postgres dbname={name}",
            self.dir.0.join("pg").display(),
            self.base + 2
        );
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect to the deployment's PostgreSQL");
        tokio::spawn(connection);
        client
    }

    /// SIGKILLs one of the deployment's processes.
    fn kill(&self, name: &str) {
        let pid = std::fs::read_to_string(self.dir.0.join(format!("{name}.pid"))).unwrap();
        let status = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name}");
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir.0)
            .status();
    }
}

/// A client of the gateways found in etcd, each user's calls on one of them (its SET) by
/// consistent hashing, as `imctl --etcd` makes it.
fn gateways(etcd: &str) -> (GatewaySvrClient, svrkit_runtime::Channel) {
    let name = GatewaySvrClient::DESCRIPTOR.name;
    let config = Config::parse(&format!(
        "[client]\ncaller = \"sets-test\"\nbalancer = \"ring\"\n[discovery]\netcd = [\"{etcd}\"]\n\
         [services.\"{name}\"]\ndiscovery = \"etcd\"\n"
    ))
    .unwrap();
    let channel = config.channel(name).unwrap();
    (GatewaySvrClient::new(channel.clone()), channel)
}

/// The instances registered for `service`.
async fn registered(etcd: &str, service: &str) -> usize {
    svrkit_tests::etcd::keys(etcd, &format!("/svrkit/{service}/"))
        .await
        .len()
}

fn as_user(user: &User) -> CallOptions {
    CallOptions {
        user_key: Some(user.uid),
        ..CallOptions::default()
    }
}

/// Failed calls, with when they failed.
type Failures = Arc<Mutex<Vec<(Instant, String)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_gateway_a_message_replica_and_an_allocator_under_load_loses_nothing() {
    use svrkit_tests::external::{ETCD, POSTGRES, program};
    if ETCD.or_skip(program("etcd")).is_none()
        || POSTGRES
            .or_skip(svrkit_tests::postgres::bin_dir())
            .is_none()
    {
        return;
    }
    let deployment = Deployment::start();
    let (c, channel) = gateways(&deployment.etcd());
    let mut users = Vec::new();
    for i in 0..12 {
        let credentials = Credentials {
            name: format!("u{i}").into(),
            password: "pw-for-the-test".into(),
            ..Credentials::default()
        };
        c.register(&credentials).await.expect("register");
        let login = c.login(&credentials).await.expect("login");
        users.push(User {
            name: format!("u{i}"),
            uid: login.uid,
            token: login.token,
        });
    }
    let users = Arc::new(users);
    let stop = Arc::new(AtomicBool::new(false));
    let failures: Failures = Arc::default();
    let acked = Arc::new(Mutex::new(Vec::<(usize, String, u64)>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let synced = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let (c, users, stop, failures, acked, count) = (
            c.clone(),
            users.clone(),
            stop.clone(),
            failures.clone(),
            acked.clone(),
            count.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let (from, to) = ((t + i) % 12, (t + i * 5 + 1) % 12);
                let to = if to == from { (to + 1) % 12 } else { to };
                let id = format!("t{t}-{i}");
                let request = SendReq {
                    token: users[from].token.clone(),
                    to: users[to].name.clone().into(),
                    client_msg_id: id.clone().into(),
                    text: "through a SET".into(),
                    ..SendReq::default()
                };
                // A client that was not answered sends again with the same id: stored once.
                match c.send_with(&request, &as_user(&users[from])).await {
                    Ok(sent) => {
                        acked.lock().unwrap().push((to, id, sent.seq));
                        count.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    Err(e) => {
                        failures
                            .lock()
                            .unwrap()
                            .push((Instant::now(), format!("send: {e}")));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    // Every user follows its sync key with long polls.
    for u in 0..12usize {
        let (c, users, stop, failures, synced) = (
            c.clone(),
            users.clone(),
            stop.clone(),
            failures.clone(),
            synced.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut key = 0;
            while !stop.load(Ordering::Relaxed) {
                let request = SyncReq {
                    token: users[u].token.clone(),
                    sync_key: key,
                    limit: 100,
                    wait_ms: 500,
                    ..SyncReq::default()
                };
                match c.sync_with(&request, &as_user(&users[u])).await {
                    Ok(resp) => {
                        synced.fetch_add(resp.msgs.len(), Ordering::Relaxed);
                        key = resp.sync_key;
                    }
                    Err(e) => {
                        failures
                            .lock()
                            .unwrap()
                            .push((Instant::now(), format!("sync: {e}")));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }

    let wait_for = |n: usize| {
        let count = count.clone();
        async move {
            let started = Instant::now();
            while count.load(Ordering::Relaxed) < n {
                assert!(started.elapsed() < Duration::from_secs(60), "load stalled");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(300).await;
    assert_eq!(channel.endpoints().unwrap().snapshot().len(), 2);
    assert_eq!(registered(&deployment.etcd(), "im.msg.MsgSvr").await, 4);
    let before_kill = failures.lock().unwrap().len();
    deployment.kill("gateway-a");
    deployment.kill("msg-b");
    let killed = Instant::now();
    let at_kill = count.load(Ordering::Relaxed);
    // Load goes on for longer than the lease, so that etcd drops the dead replicas too.
    tokio::time::sleep(Duration::from_secs(5)).await;
    wait_for(at_kill + 300).await;
    let first_phase = failures.lock().unwrap().clone();

    // Then one of the two sequence allocators: its shards go to the other once its lease
    // (3 s) has expired, and the message replicas follow the routing table there.
    assert_eq!(
        registered(&deployment.etcd(), "im.seq.SeqAllocSvr").await,
        2
    );
    deployment.kill("seq-1");
    let seq_killed = Instant::now();
    let at_seq_kill = count.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(5)).await;
    wait_for(at_seq_kill + 300).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    // Their leases expired: gone from etcd, and from the client's set.
    assert_eq!(registered(&deployment.etcd(), "im.msg.MsgSvr").await, 3);
    assert_eq!(
        registered(&deployment.etcd(), "im.gateway.GatewaySvr").await,
        1
    );
    assert_eq!(channel.endpoints().unwrap().snapshot().len(), 1);
    assert_eq!(
        registered(&deployment.etcd(), "im.seq.SeqAllocSvr").await,
        1
    );
    let failures = failures.lock().unwrap().clone();
    assert_eq!(before_kill, 0, "failures before the kill: {failures:?}");
    let late: Vec<_> = first_phase
        .iter()
        .filter(|(at, _)| at.duration_since(killed) > Duration::from_secs(2))
        .collect();
    assert!(
        late.is_empty(),
        "errors more than 2 s after the kill: {late:?}"
    );
    let last = first_phase.last().map(|(at, _)| at.duration_since(killed));
    // An allocator's death costs at most its lease's TTL and a keeper round.
    let after_seq: Vec<_> = failures[first_phase.len()..].iter().collect();
    let late: Vec<_> = after_seq
        .iter()
        .filter(|(at, _)| at.duration_since(seq_killed) > Duration::from_secs(5))
        .collect();
    assert!(
        late.is_empty(),
        "errors more than 5 s after the allocator's kill: {late:?}"
    );
    let last_seq = after_seq
        .last()
        .map(|(at, _)| at.duration_since(seq_killed));
    eprintln!(
        "{} failed calls after the allocator's kill, the last {last_seq:?} after it",
        after_seq.len()
    );
    eprintln!(
        "{} failed calls after the first kill, the last {last:?} after it; {} sends acknowledged, {} messages synced",
        first_phase.len(),
        count.load(Ordering::Relaxed),
        synced.load(Ordering::Relaxed)
    );

    // Every acknowledged message is in its recipient's inbox once, in sequence order, and
    // the inbox is in its home SET's database only.
    let acked = acked.lock().unwrap().clone();
    let databases = [
        deployment.database("im_a").await,
        deployment.database("im_b").await,
    ];
    let mut homes = [0; 2];
    for (u, user) in users.iter().enumerate() {
        let inbox = sync_all(&c, user, 0).await;
        let home = svrkit_im::home::home_of(user.uid, 2);
        homes[home] += 1;
        for (d, db) in databases.iter().enumerate() {
            let uid = i64::try_from(user.uid).unwrap();
            let row = db
                .query_one("SELECT count(*) FROM inbox WHERE uid = $1", &[&uid])
                .await
                .unwrap();
            let stored = usize::try_from(row.get::<_, i64>(0)).unwrap();
            let expected = if d == home { inbox.len() } else { 0 };
            assert_eq!(stored, expected, "{}: rows in database {d}", user.name);
        }
        assert!(
            inbox.windows(2).all(|w| w[0].seq < w[1].seq),
            "{}: out of order",
            user.name
        );
        let ids: BTreeMap<&str, u64> = inbox
            .iter()
            .map(|m| (m.client_msg_id.as_str(), m.seq))
            .collect();
        assert_eq!(ids.len(), inbox.len(), "{}: a message twice", user.name);
        for (_, id, seq) in acked.iter().filter(|(to, _, _)| *to == u) {
            assert_eq!(
                ids.get(id.as_str()),
                Some(seq),
                "{}: acknowledged {id} (seq {seq}) lost",
                user.name
            );
        }
    }
    assert!(
        homes[0] > 0 && homes[1] > 0,
        "every user in one SET: {homes:?}"
    );
}
