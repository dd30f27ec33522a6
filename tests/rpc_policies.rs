//! Avalanche protection over real loopback servers: admission by priority and the callers
//! that drop what a server would shed, retries bounded by the budget and along a chain,
//! adaptive throttling, weak dependencies, killed and failing replicas, gray release and the
//! consistent-hash ring. Every assertion is a count or an ordering.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use svrkit_runtime::client::{BalancerKind, RetryConfig, Route};
use svrkit_runtime::policy::AdmissionConfig;
use svrkit_runtime::policy::priority::{LEVELS, USER_LEVELS};
use svrkit_runtime::{CallOptions, Channel, ChannelOptions, Code};
use svrkit_tests::svrkit::test::overload::{WorkReq, WorkSvrClient};
use svrkit_tests::work::{self, Work};

fn admission() -> AdmissionConfig {
    AdmissionConfig::default()
}

/// Options with fast retries and, unless `throttle`, no adaptive throttling, so that what a
/// test counts is the mechanism it is about.
fn options(throttle: bool) -> ChannelOptions {
    ChannelOptions {
        retry: RetryConfig {
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            ..RetryConfig::default()
        },
        throttle: throttle.then_some(2.0),
        ..ChannelOptions::default()
    }
}

fn user(key: u64) -> CallOptions {
    CallOptions {
        user_key: Some(key),
        ..CallOptions::default()
    }
}

fn served(running: &work::Running) -> u64 {
    running.seen.served.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_sheds_below_its_level_and_its_callers_drop_what_it_would_shed() {
    let backend = work::start(Work::new("backend"), admission(), 1);
    let admission = backend.server.admission().expect("on by default");
    // Only critical requests get in.
    admission.pin(Some(USER_LEVELS));
    let client = work::client(&[&backend.addr], options(false));
    let req = WorkReq::default();
    // The first normal call reaches the server, which refuses it unrun and says its level.
    let first = client.normal(&req).await.unwrap_err();
    assert_eq!(first.code(), Code::OVERLOADED);
    assert!(first.message().contains("server is overloaded"), "{first}");
    // The caller now knows: normal calls are dropped before they are sent.
    for _ in 0..50 {
        let e = client.normal(&req).await.unwrap_err();
        assert_eq!(e.code(), Code::OVERLOADED);
        assert!(e.message().contains("dropped before sending"), "{e}");
    }
    assert_eq!(served(&backend), 0);
    // Critical calls are served throughout.
    for _ in 0..10 {
        client.critical(&req).await.expect("critical is admitted");
    }
    assert_eq!(served(&backend), 10);
    // Open again: the next response says so, and normal calls flow.
    admission.pin(Some(LEVELS));
    client.critical(&req).await.unwrap();
    client.normal(&req).await.expect("admitted again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_and_all_its_downstream_calls_are_admitted_or_shed_together() {
    let backend = work::start(Work::new("backend"), admission(), 1);
    // Normal requests of half the users get in.
    let level = 2 * USER_LEVELS + USER_LEVELS / 2;
    backend.server.admission().unwrap().pin(Some(level));
    let front = work::start(
        Work::calling("front", &backend, options(false)),
        admission(),
        1,
    );
    let client = work::client(&[&front.addr], options(false));
    let (mut admitted, mut shed) = (0, 0);
    for key in 1..=200u64 {
        let once = client
            .fan_with(
                &WorkReq {
                    calls: 1,
                    ..WorkReq::default()
                },
                &user(key),
            )
            .await;
        let four = client
            .fan_with(
                &WorkReq {
                    calls: 4,
                    ..WorkReq::default()
                },
                &user(key),
            )
            .await;
        // The downstream calls inherit the user and the priority: a request that got one
        // call through gets all four through.
        assert_eq!(once.is_ok(), four.is_ok(), "user {key}: {once:?} {four:?}");
        if once.is_ok() {
            admitted += 1;
        } else {
            shed += 1;
        }
    }
    assert!(
        admitted > 50 && shed > 50,
        "{admitted} admitted, {shed} shed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_of_a_failing_backend_stay_within_the_budget() {
    let backend = work::start(Work::new("backend"), admission(), 1);
    backend.fail_with(Code::UNAVAILABLE);
    let client = work::client(&[&backend.addr], options(false));
    let calls = 500;
    for _ in 0..calls {
        let e = client.get(&WorkReq::default()).await.unwrap_err();
        assert_eq!(e.code(), Code::UNAVAILABLE);
    }
    // `Get` allows 3 attempts: 1,500 without a budget. The budget allows a fifth of the
    // requests plus 10 a second over its 10 s window.
    let seen = served(&backend);
    assert!(seen > calls, "some were retried: {seen}");
    assert!(
        seen <= calls + calls / 5 + 100,
        "{seen} attempts for {calls} calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_keeps_refusing_is_throttled_at_the_caller() {
    let backend = work::start(Work::new("backend"), admission(), 1);
    backend.fail_with(Code::OVERLOADED);
    let client = work::client(&[&backend.addr], options(true));
    let calls = 1_000;
    let mut local = 0;
    for _ in 0..calls {
        let e = client.normal(&WorkReq::default()).await.unwrap_err();
        assert_eq!(e.code(), Code::OVERLOADED);
        if e.message().contains("backend has been refusing") {
            local += 1;
        }
    }
    let seen = served(&backend);
    assert_eq!(
        seen + local,
        calls,
        "every call was either sent or dropped here"
    );
    // The drop probability is (requests - 2 * accepts) / (requests + 1), near 1 with no
    // accepts: the backend sees a few percent of the calls after the first twenty.
    assert!(seen < calls / 5, "the backend still got {seen} of {calls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn along_a_chain_only_the_level_above_the_failure_retries() {
    let leaf = work::start(Work::new("leaf"), admission(), 1);
    leaf.fail_with(Code::UNAVAILABLE);
    let middle = work::start(
        Work::calling("middle", &leaf, options(false)),
        admission(),
        1,
    );
    let top = work::start(
        Work::calling("top", &middle, options(false)),
        admission(),
        1,
    );
    let client = work::client(&[&top.addr], options(false));
    let calls = 300;
    for _ in 0..calls {
        client.get(&WorkReq::default()).await.unwrap_err();
    }
    // The middle retried the leaf; its failure said so, and nobody above retried again.
    assert_eq!(served(&top), calls);
    assert_eq!(served(&middle), calls);
    let at_leaf = served(&leaf);
    assert!(
        at_leaf > calls && at_leaf <= calls + calls / 5 + 100,
        "the leaf saw {at_leaf} for {calls}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_does_not_retry_its_own_calls() {
    let leaf = work::start(Work::new("leaf"), admission(), 1);
    leaf.fail_with(Code::UNAVAILABLE);
    let relay = || Work::calling("relay", &leaf, options(false));
    // One replica fails by itself (before calling on); the caller retries on the other.
    let failing = work::start(relay(), admission(), 1);
    failing.fail_with(Code::UNAVAILABLE);
    let serving = work::start(relay(), admission(), 1);
    let client = work::client(&[&failing.addr, &serving.addr], options(false));
    for _ in 0..200 {
        client.get(&WorkReq::default()).await.unwrap_err();
    }
    let retried_here = serving.seen.retries.load(Ordering::SeqCst);
    assert!(retried_here > 0);
    // Each retry the serving replica got made exactly one call on, marked not to retry.
    assert_eq!(leaf.seen.no_retry.load(Ordering::SeqCst), retried_here);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_to_another_replica() {
    let failing = work::start(Work::new("failing"), admission(), 1);
    failing.fail_with(Code::UNAVAILABLE);
    let good = work::start(Work::new("good"), admission(), 1);
    let client = work::client(&[&failing.addr, &good.addr], options(false));
    for _ in 0..100 {
        let resp = client.get(&WorkReq::default()).await.expect("retried");
        assert_eq!(&*resp.server, "good");
    }
    // Every attempt that failed was followed by one on the good replica, never the same.
    assert_eq!(good.seen.retries.load(Ordering::SeqCst), served(&failing));
    assert_eq!(served(&good), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_past_its_share_of_the_deadline_is_hedged_not_abandoned() {
    let req = WorkReq::default();
    // Slower than its share of the deadline (500 ms over 3 attempts) but well within it:
    // every call succeeds, with at most one hedge each.
    let slow = work::start(Work::new("slow"), admission(), 1);
    slow.behaviour.delay_ms.store(250, Ordering::SeqCst);
    let client = work::client(&[&slow.addr], options(false));
    for _ in 0..5 {
        client.get(&req).await.expect("slow but in time");
    }
    assert!((5..=10).contains(&served(&slow)), "{}", served(&slow));
    // A replica that hangs: the hedge, on the other one, answers in time.
    let stuck = work::start(Work::new("stuck"), admission(), 1);
    stuck.behaviour.delay_ms.store(5_000, Ordering::SeqCst);
    let good = work::start(Work::new("good"), admission(), 1);
    let client = work::client(&[&stuck.addr, &good.addr], options(false));
    for _ in 0..10 {
        let resp = client.get(&req).await.expect("the hedge answered");
        assert_eq!(&*resp.server, "good");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weak_dependency_that_is_down_or_slow_is_skipped() {
    let dependency = work::start(Work::new("dependency"), admission(), 1);
    let front = work::start(
        Work {
            weak: Some((
                work::client(&[&dependency.addr], options(true)),
                Duration::from_millis(50),
            )),
            ..Work::new("front")
        },
        admission(),
        1,
    );
    let client = work::client(&[&front.addr], options(false));
    let req = WorkReq::default();
    assert!(!client.lean(&req).await.unwrap().skipped);
    // Slow: the caller gives up at its own short timeout and answers without it.
    dependency.behaviour.delay_ms.store(2_000, Ordering::SeqCst);
    let started = Instant::now();
    for _ in 0..5 {
        assert!(client.lean(&req).await.expect("served").skipped);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "it waited for the slow one"
    );
    // Down.
    dependency.kill();
    for _ in 0..20 {
        assert!(client.lean(&req).await.expect("served").skipped);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weak_channel_gives_defaults_instead_of_errors() {
    let dependency = work::start(Work::new("dependency"), admission(), 1);
    dependency.fail_with(Code::INTERNAL);
    let channel =
        Channel::lazy([dependency.addr.clone()], options(false)).weak(Duration::from_millis(100));
    let client = WorkSvrClient::new(channel);
    let resp = client
        .normal(&WorkReq {
            tag: 7,
            ..WorkReq::default()
        })
        .await
        .expect("skipped, not failed");
    assert_eq!(resp.tag, 0, "the response's defaults");
    assert!(
        client
            .normal_weak(&WorkReq::default(), Duration::from_millis(100))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_stops_getting_calls_at_once() {
    let replicas: Vec<_> = (0..3)
        .map(|i| work::start(Work::new(&format!("r{i}")), admission(), 1))
        .collect();
    let addrs: Vec<&str> = replicas.iter().map(|r| r.addr.as_str()).collect();
    let client = work::client(&addrs, options(false));
    for _ in 0..100 {
        client.normal(&WorkReq::default()).await.unwrap();
    }
    let mut replicas = replicas;
    replicas.pop().unwrap().kill();
    // Its connections are found closed, a reconnect is refused, and the call goes to
    // another replica instead (nothing was sent). Only a call racing with the kill (sent
    // before the client saw the connection close) can fail.
    let mut failed = Vec::new();
    for i in 0..500 {
        match client.normal(&WorkReq::default()).await {
            Ok(resp) => assert_ne!(&*resp.server, "r2"),
            Err(e) => {
                assert_eq!(e.code(), Code::UNAVAILABLE, "{e}");
                failed.push(i);
            }
        }
    }
    assert!(failed.iter().all(|&i| i < 2), "failed calls: {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gray_release_routes_by_dye_user_and_fraction_and_changes_live() {
    let main = work::start(Work::new("main"), admission(), 1);
    let canary = work::start(Work::new("canary"), admission(), 1);
    let channel = Channel::lazy([main.addr.clone()], options(false));
    channel.set_group("canary", [canary.addr.clone()]).unwrap();
    let client = WorkSvrClient::new(channel.clone());
    let on = |server: &str| server.to_owned();
    let req = WorkReq::default();
    assert_eq!(on(&client.normal(&req).await.unwrap().server), "main");

    channel
        .set_routes(vec![Route {
            group: "canary".into(),
            dye: Some("gray".into()),
            user_keys: vec![7],
            ..Route::default()
        }])
        .unwrap();
    let dyed = CallOptions {
        dye: Some("gray".into()),
        ..CallOptions::default()
    };
    assert_eq!(
        on(&client.normal_with(&req, &dyed).await.unwrap().server),
        "canary"
    );
    assert_eq!(
        on(&client.normal_with(&req, &user(7)).await.unwrap().server),
        "canary"
    );
    assert_eq!(
        on(&client.normal_with(&req, &user(8)).await.unwrap().server),
        "main"
    );

    // A fraction, by user: each user stays on one side.
    channel
        .set_routes(vec![Route {
            group: "canary".into(),
            fraction: 0.5,
            ..Route::default()
        }])
        .unwrap();
    let mut to_canary = 0;
    for key in 1..=200 {
        let first = on(&client.normal_with(&req, &user(key)).await.unwrap().server);
        let again = on(&client.normal_with(&req, &user(key)).await.unwrap().server);
        assert_eq!(first, again, "user {key} moved");
        to_canary += usize::from(first == "canary");
    }
    assert!((60..=140).contains(&to_canary), "{to_canary} of 200");

    // The dye follows the request: a front whose downstream channel routes dyed calls.
    let downstream = Channel::lazy([main.addr.clone()], options(false));
    downstream
        .set_group("canary", [canary.addr.clone()])
        .unwrap();
    downstream
        .set_routes(vec![Route {
            group: "canary".into(),
            dye: Some("gray".into()),
            ..Route::default()
        }])
        .unwrap();
    let front = work::start(
        Work {
            downstream: Some(WorkSvrClient::new(downstream)),
            ..Work::new("front")
        },
        admission(),
        1,
    );
    let front_client = work::client(&[&front.addr], options(false));
    assert_eq!(
        on(&front_client.get_with(&req, &dyed).await.unwrap().server),
        "canary"
    );
    assert_eq!(on(&front_client.get(&req).await.unwrap().server), "main");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_keeps_each_user_on_one_replica() {
    let replicas: Vec<_> = (0..3)
        .map(|i| work::start(Work::new(&format!("r{i}")), admission(), 1))
        .collect();
    let addrs: Vec<&str> = replicas.iter().map(|r| r.addr.as_str()).collect();
    let client = work::client(
        &addrs,
        ChannelOptions {
            balancer: BalancerKind::Ring,
            ..options(false)
        },
    );
    let mut used = std::collections::HashSet::new();
    for key in 1..=60 {
        let home = client
            .normal_with(&WorkReq::default(), &user(key))
            .await
            .unwrap()
            .server;
        for _ in 0..5 {
            let again = client
                .normal_with(&WorkReq::default(), &user(key))
                .await
                .unwrap()
                .server;
            assert_eq!(again, home, "user {key}");
        }
        used.insert(home.to_string());
    }
    assert_eq!(used.len(), 3, "users spread over every replica");
}
