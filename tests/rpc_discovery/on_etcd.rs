//! The cases of `rpc_discovery`, compiled with the `etcd` feature.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use svrkit_runtime::discovery::DiscoveryConfig;
use svrkit_runtime::discovery::etcd::Registration;
use svrkit_runtime::{Channel, Config};
use svrkit_tests::echo::{self, Running};
use svrkit_tests::etcd::Etcd;
use svrkit_tests::svrkit::test::rpc::{EchoReq, EchoSvrClient};

const SERVICE: &str = EchoSvrClient::DESCRIPTOR.name;
const TTL_S: u32 = 2;

fn discovery(etcd: &Etcd) -> DiscoveryConfig {
    DiscoveryConfig {
        etcd: vec![etcd.url.clone()],
        lease_ttl_s: TTL_S,
        drain_ms: 300,
        ..DiscoveryConfig::default()
    }
}

/// An echo server in this process, registered in etcd.
async fn replica(etcd: &Etcd) -> (Running, Registration) {
    let running = echo::start().await;
    let registration = Registration::register(&discovery(etcd), &[SERVICE], &running.addr)
        .await
        .expect("register");
    (running, registration)
}

/// A client whose endpoints come from etcd, made from configuration as a service would.
fn client(etcd: &Etcd, retry: bool) -> (EchoSvrClient, Channel) {
    let config = Config::parse(&format!(
        r#"
        [client]
        retry = {retry}
        [discovery]
        etcd = ["{}"]
        [services."{SERVICE}"]
        discovery = "etcd"
        "#,
        etcd.url
    ))
    .expect("config");
    let channel = config.channel(SERVICE).expect("channel");
    (EchoSvrClient::new(channel.clone()), channel)
}

fn endpoints(channel: &Channel) -> Vec<String> {
    let mut addrs: Vec<String> = channel
        .endpoints()
        .expect("remote")
        .snapshot()
        .iter()
        .map(|e| e.addr().to_owned())
        .collect();
    addrs.sort();
    addrs
}

/// Makes a first call (which waits for the first listing instead of failing for want of
/// endpoints), then waits until the channel lists `n` replicas.
async fn listed(client: &EchoSvrClient, channel: &Channel, n: usize) {
    client.echo(&EchoReq::default()).await.expect("first call");
    until("all replicas listed", Duration::from_secs(2), || {
        endpoints(channel).len() == n
    })
    .await;
}

/// Waits (up to `limit`) until `check` holds; how long it took.
async fn until(what: &str, limit: Duration, check: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

/// Calls made in a loop from a few tasks until stopped: how many failed, and when the last
/// failure was.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: &EchoSvrClient, callers: usize) -> Load {
        let load = Load {
            stop: Arc::default(),
            ok: Arc::default(),
            failed: Arc::default(),
            tasks: Vec::new(),
        };
        let tasks = (0..callers)
            .map(|_| {
                let (client, stop, ok, failed) = (
                    client.clone(),
                    load.stop.clone(),
                    load.ok.clone(),
                    load.failed.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match client.echo(&EchoReq::default()).await {
                            Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                failed.lock().unwrap().push((Instant::now(), e.to_string()));
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                0
                            }
                        };
                    }
                })
            })
            .collect();
        Load { tasks, ..load }
    }

    async fn stop(self) -> (usize, Vec<(Instant, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let failed = std::mem::take(&mut *self.failed.lock().unwrap());
        (self.ok.load(Ordering::Relaxed), failed)
    }
}

fn started(running: &Running) -> usize {
    running.observed.started.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_takes_traffic_within_two_seconds() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let (a, _ra) = replica(&etcd).await;
    let (client, channel) = client(&etcd, true);
    // The first call waits for the first listing instead of failing for want of endpoints.
    client.echo(&EchoReq::default()).await.expect("first call");
    assert_eq!(endpoints(&channel), vec![a.addr.clone()]);
    let load = Load::start(&client, 4);
    let (b, _rb) = replica(&etcd).await;
    let took = until(
        "the new replica to be called",
        Duration::from_secs(2),
        || started(&b) > 0,
    )
    .await;
    let (ok, failed) = load.stop().await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(started(&a) > 0 && ok > 0);
    eprintln!("the new replica got its first call {took:?} after registering");
}

/// An echo replica in another process, registered with its own lease.
struct ChildReplica {
    child: Child,
    addr: String,
}

impl ChildReplica {
    fn start(etcd: &Etcd) -> ChildReplica {
        let mut child = Command::new(env!("CARGO_BIN_EXE_echo_replica"))
            .args([etcd.url.as_str(), &TTL_S.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start echo_replica");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("READY ")
            .expect("READY")
            .to_owned();
        ChildReplica { child, addr }
    }
}

impl Drop for ChildReplica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_leaves_the_set_when_its_lease_expires() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let (a, _ra) = replica(&etcd).await;
    let mut doomed = ChildReplica::start(&etcd);
    let (client, channel) = client(&etcd, true);
    listed(&client, &channel, 2).await;
    let load = Load::start(&client, 4);
    until(
        "calls on the healthy replica",
        Duration::from_secs(2),
        || started(&a) > 10,
    )
    .await;
    // SIGKILL: no deregistration, no goodbye on the connections.
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    let killed = Instant::now();
    let took = until(
        "the killed replica to leave the set",
        Duration::from_secs(u64::from(TTL_S) + 3),
        || endpoints(&channel) == vec![a.addr.clone()],
    )
    .await;
    // Its lease is what removed it: not before the TTL (less the time etcd had counted
    // since the last renewal, at most a third of it).
    assert!(
        took >= Duration::from_millis(u64::from(TTL_S) * 1000 * 2 / 3 - 100),
        "gone after {took:?}, before its lease could expire"
    );
    let removed = Instant::now();
    let before = started(&a);
    until("calls after the removal", Duration::from_secs(2), || {
        started(&a) > before + 100
    })
    .await;
    let (_, failed) = load.stop().await;
    // Calls in flight on the killed process fail (Echo is not idempotent, so they are not
    // retried); none fails once it is out of the set.
    let late: Vec<_> = failed.iter().filter(|(at, _)| *at > removed).collect();
    assert!(late.is_empty(), "{late:?}");
    eprintln!(
        "killed replica left the set {took:?} after SIGKILL ({} calls failed meanwhile); {:?} since",
        failed.len(),
        killed.elapsed()
    );
    assert!(!endpoints(&channel).contains(&doomed.addr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_replica_loses_no_call_in_flight() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let (a, _ra) = replica(&etcd).await;
    let (b, rb) = replica(&etcd).await;
    // No retries: a call lost in the drain would show as a failure.
    let (client, channel) = client(&etcd, false);
    listed(&client, &channel, 2).await;
    let load = Load::start(&client, 4);
    // Slow calls in flight on both replicas when the drain starts.
    let slow = echo::slow_calls(&client, 20, 600);
    until(
        "slow calls on the drained replica",
        Duration::from_secs(2),
        || started(&b) >= 5,
    )
    .await;
    rb.drain().await.expect("drain");
    // Deregistration reached the client before the server stops accepting.
    assert_eq!(endpoints(&channel), vec![a.addr.clone()]);
    let after_drain = started(&b);
    b.server.shutdown().await;
    for (seq, call) in slow.into_iter().enumerate() {
        let answer = call.await.unwrap();
        assert_eq!(
            answer.expect("a slow call lost in the drain").seq,
            seq as u64
        );
    }
    let (ok, failed) = load.stop().await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(
        started(&b),
        after_drain,
        "calls reached the drained replica"
    );
    assert!(ok > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_known_set_serves_while_etcd_is_down() {
    let Some(mut etcd) = Etcd::start().await else {
        return;
    };
    let (a, _ra) = replica(&etcd).await;
    let (b, _rb) = replica(&etcd).await;
    let (client, channel) = client(&etcd, false);
    listed(&client, &channel, 2).await;
    etcd.kill();
    let load = Load::start(&client, 4);
    // Longer than a lease: nothing the client knows expires with etcd gone.
    let (before_a, before_b) = (started(&a), started(&b));
    tokio::time::sleep(Duration::from_secs(u64::from(TTL_S) + 1)).await;
    let (ok, failed) = load.stop().await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 100, "{ok}");
    assert!(started(&a) > before_a && started(&b) > before_b);
    let mut both = vec![a.addr.clone(), b.addr.clone()];
    both.sort();
    assert_eq!(endpoints(&channel), both);
    // etcd back: the watcher reads afresh and follows changes again.
    etcd.restart().await;
    let (c, _rc) = replica(&etcd).await;
    until("the watch to resume", Duration::from_secs(10), || {
        endpoints(&channel).contains(&c.addr)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_set_and_group_travel_with_the_registration() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let (a, _ra) = replica(&etcd).await;
    let heavy = echo::start().await;
    let config = DiscoveryConfig {
        weight: 300,
        set: "set-b".into(),
        ..discovery(&etcd)
    };
    let _rh = Registration::register(&config, &[SERVICE], &heavy.addr)
        .await
        .unwrap();
    let canary = echo::start().await;
    let config = DiscoveryConfig {
        group: "canary".into(),
        ..discovery(&etcd)
    };
    let _rc = Registration::register(&config, &[SERVICE], &canary.addr)
        .await
        .unwrap();
    let (client, channel) = client(&etcd, true);
    client.echo(&EchoReq::default()).await.expect("first call");
    let mut main = vec![a.addr.clone(), heavy.addr.clone()];
    main.sort();
    until("the main set", Duration::from_secs(2), || {
        endpoints(&channel) == main
    })
    .await;
    let weights: Vec<(String, u32)> = channel
        .endpoints()
        .unwrap()
        .snapshot()
        .iter()
        .map(|e| (e.addr().to_owned(), e.weight()))
        .collect();
    assert!(weights.contains(&(heavy.addr.clone(), 300)), "{weights:?}");
    assert!(weights.contains(&(a.addr.clone(), 100)), "{weights:?}");
    // The canary is in its group, which only route rules send calls to.
    let group = channel.group("canary").expect("the canary group");
    let in_group: Vec<String> = group
        .snapshot()
        .iter()
        .map(|e| e.addr().to_owned())
        .collect();
    assert_eq!(in_group, vec![canary.addr.clone()]);
    // What an operator reads with etcdctl.
    let mut etcd_client = svrkit_tests::etcd::client(&etcd.url).await;
    let key = format!("/svrkit/{SERVICE}/{}", heavy.addr);
    let got = etcd_client.get(key.as_str(), None).await.unwrap();
    let value = got.kvs()[0].value_str().unwrap().to_owned();
    assert_eq!(
        value,
        format!(
            r#"{{"addr":"{}","weight":300,"set":"set-b","group":""}}"#,
            heavy.addr
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_registers_an_address_others_can_call() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let config = |extra: &str| {
        Config::parse(&format!("[discovery]\netcd = [\"{}\"]\n{extra}", etcd.url)).unwrap()
    };
    let wildcard: std::net::SocketAddr = "0.0.0.0:7123".parse().unwrap();
    let refused = config("").register(&[SERVICE], wildcard).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .starts_with("discovery.advertise_host: missing"),
        "{refused}"
    );
    let _registration = config("advertise_host = \"localhost\"")
        .register(&[SERVICE], wildcard)
        .await
        .unwrap()
        .expect("registered");
    assert_eq!(
        keys(&etcd).await,
        [format!("/svrkit/{SERVICE}/localhost:7123")]
    );
}

/// The keys of a replica in etcd.
async fn keys(etcd: &Etcd) -> Vec<String> {
    svrkit_tests::etcd::keys(&etcd.url, &format!("/svrkit/{SERVICE}/")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_comes_back_after_its_lease_or_its_key_is_lost() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let (a, registration) = replica(&etcd).await;
    let key = format!("/svrkit/{SERVICE}/{}", a.addr);
    assert_eq!(keys(&etcd).await, std::slice::from_ref(&key));
    // Frozen past the lease: etcd expires it when it runs again, and the process, whose
    // renewals failed meanwhile, must register anew.
    let old_lease = registration.lease();
    etcd.signal("STOP");
    tokio::time::sleep(Duration::from_secs(u64::from(TTL_S) + 3)).await;
    etcd.signal("CONT");
    let started = Instant::now();
    loop {
        if registration.lease() != old_lease && keys(&etcd).await == [key.clone()] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not registered again after its lease expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Deleted by hand while the lease lives: put back.
    let mut client = svrkit_tests::etcd::client(&etcd.url).await;
    client.delete(key.as_str(), None).await.unwrap();
    assert!(keys(&etcd).await.is_empty());
    let started = Instant::now();
    while keys(&etcd).await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(4 * u64::from(TTL_S) + 2),
            "a deleted key was not put back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_stay_in_the_callers_zone_while_it_has_a_healthy_replica_then_cross() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let zoned = |zone: &str| DiscoveryConfig {
        zone: zone.into(),
        ..discovery(&etcd)
    };
    let near = echo::start().await;
    let _rn = Registration::register(&zoned("z1"), &[SERVICE], &near.addr)
        .await
        .unwrap();
    let far = [echo::start().await, echo::start().await];
    let mut _registrations = Vec::new();
    for replica in &far {
        let registration = Registration::register(&zoned("z2"), &[SERVICE], &replica.addr)
            .await
            .unwrap();
        _registrations.push(registration);
    }
    let config = Config::parse(&format!(
        r#"
        [client]
        eject_after = 1
        [discovery]
        etcd = ["{}"]
        zone = "z1"
        [services."{SERVICE}"]
        discovery = "etcd"
        "#,
        etcd.url
    ))
    .expect("config");
    let channel = config.channel(SERVICE).expect("channel");
    let client = EchoSvrClient::new(channel.clone());
    listed(&client, &channel, 3).await;
    let before = started(&near);
    for _ in 0..50 {
        client.echo(&EchoReq::default()).await.expect("call");
    }
    assert_eq!(
        started(&near) - before,
        50,
        "every call in the caller's zone"
    );
    assert_eq!(started(&far[0]) + started(&far[1]), 0);

    // The zone loses its replica (still registered: its lease lives). Calls cross to the
    // other zone once it is ejected, without waiting for etcd.
    near.task.abort();
    near.server.shutdown().await;
    let mut failed = 0;
    for _ in 0..50 {
        if client.echo(&EchoReq::default()).await.is_err() {
            failed += 1;
        }
    }
    assert!(
        failed <= 1,
        "{failed} calls failed after the zone's replica went"
    );
    assert!(started(&far[0]) + started(&far[1]) >= 49);
}
