//! A sync with nothing new waits, and is woken as soon as a message for its user lands.
//! (Alone in its test binary, one test at a time: they watch a process-wide counter.)

mod support;

on_both_engines!(
    a_waiting_sync_is_woken_within_100_ms_of_a_message_landing,
    a_users_polls_past_the_cap_end_the_oldest_and_leave_others_waiting,
    a_long_poll_is_not_logged_as_a_slow_call,
);

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
    let metrics = svrkit_runtime::metrics::find_method(fetch).expect("registered");
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

/// One user's pile of waiting syncs is held to the cap: each one past it ends the oldest
/// (which answers with nothing new), and another user's poll is not touched.
async fn a_users_polls_past_the_cap_end_the_oldest_and_leave_others_waiting(engine: Engine) {
    use svrkit_im::msg::MAX_POLLS_PER_USER;
    let _alone = ONE_AT_A_TIME.lock().await;
    let data = TempDir::new("poll-cap");
    let backend = start_on(&engine, &data, "").await;
    let c = client(backend.addr().unwrap());
    let alice = user(&c, "alice").await;
    let bob = user(&c, "bob").await;
    let carol = user(&c, "carol").await;
    let carols = waiting_sync(&c, &carol, 0).await;
    let piled = MAX_POLLS_PER_USER + 12;
    let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..piled {
        let (c, bob, done) = (c.clone(), bob.clone(), done.clone());
        tokio::spawn(async move {
            let resp = sync(&c, &bob, 0, Duration::from_secs(20)).await.unwrap();
            let _ = done.send(resp.msgs.len());
        });
    }
    // The ones past the cap end at once, empty; no message has been sent.
    for _ in 0..piled - MAX_POLLS_PER_USER {
        let ended = tokio::time::timeout(Duration::from_secs(10), finished.recv())
            .await
            .expect("polls past the cap end without waiting")
            .unwrap();
        assert_eq!(ended, 0);
    }
    until_waiting(i64::try_from(MAX_POLLS_PER_USER + 1).unwrap()).await;
    // The rest still wait, and get the message.
    send(&c, &alice, "bob", "for the newest", "n1")
        .await
        .unwrap();
    for _ in 0..MAX_POLLS_PER_USER {
        assert_eq!(finished.recv().await.unwrap(), 1);
    }
    // Carol's poll waited through all of it.
    send(&c, &alice, "carol", "yours", "c1").await.unwrap();
    assert_eq!(carols.await.unwrap().0.msgs.len(), 1);
    backend.shutdown().await;
}

/// What the process logged, from the first test that asked on.
fn logged() -> &'static std::sync::Mutex<Vec<u8>> {
    static LOG: std::sync::OnceLock<std::sync::Mutex<Vec<u8>>> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        #[derive(Clone, Copy)]
        struct Sink;
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                logged().lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(|| Sink)
            .try_init();
        std::sync::Mutex::default()
    })
}

/// A sync that waits is doing its job: past the slow-call threshold it is not a slow call
/// (the IDL says `long_poll="true"`), while an ordinary call that slow would be one.
async fn a_long_poll_is_not_logged_as_a_slow_call(engine: Engine) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let _ = logged();
    let data = TempDir::new("poll-log");
    let extra = format!("{}\n[monitor]\nslow_call_ms = 20\n", engine.store_keys());
    let backend = Backend::start(&Role::ALL, &config(&data.0, "", &extra))
        .await
        .unwrap();
    let c = client(backend.addr().unwrap());
    let bob = user(&c, "bob").await;
    logged().lock().unwrap().clear();
    let resp = sync(&c, &bob, 0, Duration::from_millis(200)).await.unwrap();
    assert!(resp.msgs.is_empty());
    backend.shutdown().await;
    let log = String::from_utf8_lossy(&logged().lock().unwrap()).into_owned();
    assert!(!log.contains("slow call"), "{log}");
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
