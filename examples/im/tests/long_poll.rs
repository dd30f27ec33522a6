//! A sync with nothing new waits, and is woken as soon as a message for its user lands.
//! (Alone in its test binary, one test at a time: they watch a process-wide counter.)

mod support;

on_both_engines!(a_waiting_sync_is_woken_within_100_ms_of_a_message_landing,);

use std::time::{Duration, Instant};

use support::{Engine, TempDir, User, client, config, send, start_on, sync, user};
use svrkit_im::backend::{Backend, Role};
use svrkit_im::im::gateway::{GatewaySvrClient, SyncResp};
use svrkit_im::im::msg::MsgSvrClient;

/// Held by each test: the counter below is the process's.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits (briefly polling a counter, with a bound) until `n` long polls are waiting in the
/// message service.
async fn until_waiting(n: i64) {
    let fetch = &MsgSvrClient::DESCRIPTOR.methods[1];
    let metrics = svrkit_runtime::monitor::find_method(fetch).expect("registered");
    let give_up = Instant::now() + Duration::from_secs(10);
    while metrics.server_totals().in_flight < n {
        assert!(
            Instant::now() < give_up,
            "the long poll never started waiting"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A sync of `user` after `key` with a long wait, once it waits in the message service: its
/// answer and when it came.
async fn waiting_sync(
    c: &GatewaySvrClient,
    user: &User,
    key: u64,
) -> tokio::task::JoinHandle<(SyncResp, Instant)> {
    let (c, user) = (c.clone(), user.clone());
    let poll = tokio::spawn(async move {
        let resp = sync(&c, &user, key, Duration::from_secs(20)).await.unwrap();
        (resp, Instant::now())
    });
    until_waiting(1).await;
    poll
}

async fn a_waiting_sync_is_woken_within_100_ms_of_a_message_landing(engine: Engine) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let data = TempDir::new("poll");
    let backend = start_on(&engine, &data, "").await;
    let c = client(backend.addr().unwrap());
    let alice = user(&c, "alice").await;
    let bob = user(&c, "bob").await;

    for round in 0..5u64 {
        let poll = waiting_sync(&c, &bob, round).await;
        let sent = send(&c, &alice, "bob", "wake up", &format!("w{round}"))
            .await
            .unwrap();
        let acked = Instant::now();
        let (resp, woken) = poll.await.unwrap();
        assert_eq!(resp.msgs.len(), 1);
        assert_eq!(resp.sync_key, sent.seq);
        let late = woken.saturating_duration_since(acked);
        assert!(
            late < Duration::from_millis(100),
            "round {round}: woken {late:?} after the ack"
        );
    }

    // With nothing new, it answers empty when its wait is over, not an error.
    let started = Instant::now();
    let resp = sync(&c, &bob, 5, Duration::from_millis(300)).await.unwrap();
    assert!(resp.msgs.is_empty() && resp.sync_key == 5);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    backend.shutdown().await;
}

/// Two message replicas on one PostgreSQL database: a long poll waiting in one is woken by
/// an append made through the other (the store's NOTIFY), not by its wait running out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_poll_in_one_replica_is_woken_by_an_append_in_another() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(engine) = Engine::postgres().await else {
        return;
    };
    let (data_a, data_b) = (TempDir::new("poll-a"), TempDir::new("poll-b"));
    let mut config_a = config(&data_a.0, "", &engine.store_keys());
    config_a
        .app
        .insert("internal_listen".into(), "127.0.0.1:0".into());
    let a = Backend::start(&Role::ALL, &config_a).await.unwrap();
    // The second replica has its own gateway and message service, and shares the rest.
    let extra = format!(
        "{}{}",
        engine.store_keys(),
        [
            "im.account.AccountSvr",
            "im.seq.SeqAllocSvr",
            "im.spam.SpamSvr",
            "im.group.GroupSvr"
        ]
        .iter()
        .map(|s| format!(
            "[services.\"{s}\"]\nendpoints = [\"{}\"]\n",
            a.internal_addr().unwrap()
        ))
        .collect::<String>()
    );
    let b = Backend::start(&[Role::Msg, Role::Gateway], &config(&data_b.0, "", &extra))
        .await
        .unwrap();
    let (via_a, via_b) = (client(a.addr().unwrap()), client(b.addr().unwrap()));
    let alice = user(&via_a, "alice").await;
    let bob = user(&via_a, "bob").await;
    for round in 0..3u64 {
        let poll = waiting_sync(&via_b, &bob, round).await;
        send(&via_a, &alice, "bob", "across", &format!("x{round}"))
            .await
            .unwrap();
        let acked = Instant::now();
        let (resp, woken) = poll.await.unwrap();
        assert_eq!(resp.msgs.len(), 1);
        let late = woken.saturating_duration_since(acked);
        assert!(
            late < Duration::from_millis(500),
            "round {round}: woken {late:?} after the ack"
        );
    }
    b.shutdown().await;
    a.shutdown().await;
}
