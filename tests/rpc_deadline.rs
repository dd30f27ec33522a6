//! Deadlines and cancellation: they travel in the header, shrink hop by hop and reach the
//! handler through its context.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use svrkit_runtime::{CallOptions, Code};
use svrkit_tests::echo;
use svrkit_tests::svrkit::test::rpc::{EchoReq, EchoSvrClient};

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idl_deadline_applies_and_reaches_the_handler() {
    let running = echo::start().await;
    let client = echo::client(&running.addr, 1);
    // `Slow` has timeout_ms="100" in the IDL.
    let started = Instant::now();
    let err = client
        .slow(&EchoReq {
            delay_ms: 2_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DEADLINE_EXCEEDED, "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(1_000),
        "took {:?}",
        started.elapsed()
    );
    eventually("the handler saw the deadline", || {
        running.observed.saw_cancel.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_call_options_override_the_idl() {
    let running = echo::start().await;
    let client = echo::client(&running.addr, 1);
    let request = EchoReq {
        delay_ms: 300,
        ..Default::default()
    };
    let response = client
        .slow_with(&request, &CallOptions::timeout(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(
        response.remaining_ms > 4_000 && response.remaining_ms <= 5_000,
        "{}",
        response.remaining_ms
    );
    let err = client
        .echo_with(&request, &CallOptions::timeout(Duration::from_millis(50)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DEADLINE_EXCEEDED);
}

/// Starts a call that would take ten seconds, drops it once the handler runs, and waits for
/// the handler to see the cancellation through its context.
async fn drop_a_call_and_watch_the_handler(running: &echo::Running, client: EchoSvrClient) {
    let call = tokio::spawn(async move {
        client
            .echo(&EchoReq {
                delay_ms: 10_000,
                ..Default::default()
            })
            .await
    });
    eventually("the handler started", || {
        running.observed.started.load(Ordering::SeqCst) == 1
    })
    .await;
    call.abort();
    eventually("the handler saw the cancel", || {
        running.observed.saw_cancel.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_cancels_it_on_the_server() {
    let running = echo::start().await;
    let client = echo::client(&running.addr, 1);
    drop_a_call_and_watch_the_handler(&running, client.clone()).await;
    // The connection is still good.
    assert!(client.echo(&EchoReq::default()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_in_process_call_cancels_it_too() {
    let running = echo::start().await;
    drop_a_call_and_watch_the_handler(&running, EchoSvrClient::new(running.server.local_channel()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_passes_its_remaining_budget_on() {
    let back = echo::start().await;
    let front = echo::start_with(Default::default(), Some(echo::client(&back.addr, 1))).await;
    let client = echo::client(&front.addr, 1);
    // The relay's own budget is 300 ms; its downstream call (IDL default 2 s) gets what is
    // left of those 300 ms, not 2 s.
    let response = client
        .relay_with(
            &EchoReq {
                text: "via".into(),
                ..Default::default()
            },
            &CallOptions::timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert_eq!(response.text, "via");
    assert!(
        response.remaining_ms > 0 && response.remaining_ms <= 300,
        "downstream had {} ms",
        response.remaining_ms
    );
    // And when the budget runs out downstream, the error comes back in time.
    let started = Instant::now();
    let err = client
        .relay_with(
            &EchoReq {
                delay_ms: 5_000,
                ..Default::default()
            },
            &CallOptions::timeout(Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DEADLINE_EXCEEDED);
    assert!(started.elapsed() < Duration::from_secs(2));
    eventually("the downstream handler saw its deadline", || {
        back.observed.saw_cancel.load(Ordering::SeqCst) == 1
    })
    .await;
}
