//! A sync with nothing new waits, and is woken as soon as a message for its user lands.
//! (Alone in its test binary: it watches a process-wide counter.)

mod support;

on_both_engines!(a_waiting_sync_is_woken_within_100_ms_of_a_message_landing,);

use std::time::{Duration, Instant};

use support::{Engine, TempDir, client, send, start_on, sync, user};
use svrkit_im::im::msg::MsgSvrClient;

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

async fn a_waiting_sync_is_woken_within_100_ms_of_a_message_landing(engine: Engine) {
    let data = TempDir::new("poll");
    let backend = start_on(&engine, &data, "").await;
    let c = client(backend.addr().unwrap());
    let alice = user(&c, "alice").await;
    let bob = user(&c, "bob").await;

    for round in 0..5u64 {
        let poll = {
            let (c, bob) = (c.clone(), bob.clone());
            tokio::spawn(async move {
                let resp = sync(&c, &bob, round, Duration::from_secs(20))
                    .await
                    .unwrap();
                (resp, Instant::now())
            })
        };
        until_waiting(1).await;
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
