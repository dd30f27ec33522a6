//! Deadlines and cancellation: they travel in the header, shrink hop by hop and reach the
//! handler through its context.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use svrkit_runtime::frame::FrameKind;
use svrkit_runtime::{CallOptions, Code};
use svrkit_tests::echo;
use svrkit_tests::raw::RawConn;
use svrkit_tests::svrkit::test::rpc::{EchoReq, EchoSvrClient};

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
    running
        .observed
        .until(
            "the handler saw the deadline",
            Duration::from_secs(5),
            |o| o.saw_cancel.load(Ordering::SeqCst) == 1,
        )
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_cancels_it_on_the_server() {
    let running = echo::start().await;
    let client = echo::client(&running.addr, 1);
    echo::drop_a_call_and_watch_the_handler(&running.observed, client.clone()).await;
    // The connection is still good.
    assert!(client.echo(&EchoReq::default()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_in_process_call_cancels_it_too() {
    let running = echo::start().await;
    let local = EchoSvrClient::new(running.server.local_channel());
    echo::drop_a_call_and_watch_the_handler(&running.observed, local).await;
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
    back.observed
        .until(
            "the downstream handler saw its deadline",
            Duration::from_secs(5),
            |o| o.saw_cancel.load(Ordering::SeqCst) == 1,
        )
        .await;
}

/// A peer that never sends CANCEL still gets its answer when the handler overruns: the
/// server answers DEADLINE_EXCEEDED on the wire at the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overrunning_handler_is_answered_deadline_exceeded_on_the_wire() {
    let running = echo::start().await;
    let mut raw = RawConn::connect(&running.addr).await;
    let slow = EchoReq {
        delay_ms: 10_000,
        ..Default::default()
    };
    raw.request(41, 1, 100, &slow).await;
    let response = raw.read(Duration::from_secs(2)).await;
    assert_eq!(response.header.kind, FrameKind::RESPONSE);
    assert_eq!(response.header.request_id, 41);
    assert_eq!(Code(response.header.status_code), Code::DEADLINE_EXCEEDED);
    // No deadline on the wire: the method's IDL timeout (Slow: 100 ms) applies.
    raw.request(42, 2, 0, &slow).await;
    let response = raw.read(Duration::from_secs(2)).await;
    assert_eq!(Code(response.header.status_code), Code::DEADLINE_EXCEEDED);
}

/// Dropping a call to a relay cancels the relay's handler, which cancels its own call to
/// the next hop at once: the handler two hops down sees it within 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_a_handler_two_hops_down_at_once() {
    let back = echo::start().await;
    let front = echo::start_with(Default::default(), Some(echo::client(&back.addr, 1))).await;
    let client = echo::client(&front.addr, 1);
    let call = tokio::spawn(async move {
        client
            .relay_with(
                &EchoReq {
                    delay_ms: 10_000,
                    ..Default::default()
                },
                &CallOptions::timeout(Duration::from_secs(60)),
            )
            .await
    });
    back.observed
        .until("the second hop started", Duration::from_secs(5), |o| {
            o.started.load(Ordering::SeqCst) == 1
        })
        .await;
    call.abort();
    back.observed
        .until(
            "the second hop saw the cancel",
            Duration::from_millis(100),
            |o| o.saw_cancel.load(Ordering::SeqCst) == 1,
        )
        .await;
}

/// Durations too large for the clock mean "no practical limit", never a panic: on the
/// client (a per-call timeout) and on the server (a requested deadline over its cap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_durations_do_not_panic() {
    let limits = svrkit_runtime::Limits {
        read_timeout: Duration::MAX,
        idle_timeout: Duration::MAX,
        max_deadline: Duration::MAX,
        ..Default::default()
    };
    let running = echo::start_with(limits, None).await;
    let client = echo::client(&running.addr, 1);
    let response = client
        .echo_with(&EchoReq::default(), &CallOptions::timeout(Duration::MAX))
        .await
        .unwrap();
    assert!(response.remaining_ms > 0);
    let mut raw = RawConn::connect(&running.addr).await;
    raw.request(1, 1, u32::MAX, &EchoReq::default()).await;
    assert_eq!(raw.read(Duration::from_secs(2)).await.header.status_code, 0);
}

/// A call made while serving a request carries that request's priority (Relay is "high" in
/// the IDL, Echo "normal"); a request that says none runs at normal, never critical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_is_inherited_and_absent_means_normal() {
    use svrkit_runtime::service::Priority;
    let back = echo::start().await;
    let front = echo::start_with(Default::default(), Some(echo::client(&back.addr, 1))).await;
    let relayed = echo::client(&front.addr, 1)
        .relay(&EchoReq::default())
        .await
        .unwrap();
    assert_eq!(relayed.priority, Priority::High.to_wire());
    let direct = echo::client(&back.addr, 1)
        .echo(&EchoReq::default())
        .await
        .unwrap();
    assert_eq!(direct.priority, Priority::Normal.to_wire());
    // No priority field on the wire at all.
    let mut raw = RawConn::connect(&back.addr).await;
    raw.request(1, 1, 1_000, &EchoReq::default()).await;
    let frame = raw.read(Duration::from_secs(2)).await;
    use svrkit_runtime::codec::Message;
    let response = svrkit_tests::svrkit::test::rpc::EchoResp::decode_bytes(&frame.body).unwrap();
    assert_eq!(response.priority, Priority::Normal.to_wire());
}
