//! Many calls multiplexed on one connection, answered out of order and matched correctly.

use std::time::Duration;

use svrkit_runtime::{Code, Status};
use svrkit_tests::echo;
use svrkit_tests::svrkit::test::rpc::{EchoReq, EchoResp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_on_one_connection() {
    let running = echo::start().await;
    let client = echo::client(&running.addr, 1);
    let calls = (0..1000u64).map(|seq| {
        let client = client.clone();
        tokio::spawn(async move {
            // Later requests finish sooner, so answers come back out of order.
            let request = EchoReq {
                seq,
                text: format!("call {seq}").into(),
                delay_ms: (1000 - seq as u32) % 50,
                ..Default::default()
            };
            (seq, client.echo(&request).await)
        })
    });
    let results = futures_join(calls.collect()).await;
    for (seq, result) in results {
        let response = result.unwrap_or_else(|e| panic!("call {seq}: {e}"));
        assert_eq!(response.seq, seq);
        assert_eq!(response.text, format!("call {seq}"));
    }
    let order = running.observed.finish_order.lock().unwrap().clone();
    assert_eq!(order.len(), 1000);
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_ne!(
        order, sorted,
        "handlers ran concurrently and finished out of order"
    );
}

/// Frames written at once by the task that made them (a lone call's request, a reply with
/// nothing queued before it) and frames queued behind a full socket share one stream: large
/// payloads that fill the socket, mixed with small ones, some answered inline and some from
/// tasks, some calls alone on the connection and some not, must all arrive whole and matched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_at_once_and_queued_writes_never_interleave() {
    let running = echo::start().await;
    let client = echo::client(&running.addr, 1);
    for round in 0..4u64 {
        // Alone on the connection: written at once, however large.
        let lone = EchoReq {
            seq: round,
            payload: vec![round as u8; 3 << 20].into(),
            ..Default::default()
        };
        if let Some(answer) = whole(round, client.echo(&lone).await) {
            assert_eq!(answer.payload, lone.payload);
        }
        // Given up after its first poll, while its frame may still be going out (a socket
        // takes less than 3 MiB at once): the next call is alone on the connection again,
        // but must wait for the rest of that frame.
        for _ in 0..16 {
            // Within a timer tick it may also finish, which is fine.
            let _ = tokio::time::timeout(Duration::ZERO, client.echo(&lone)).await;
            let small = EchoReq {
                seq: round,
                payload: vec![7; 100].into(),
                ..Default::default()
            };
            if let Some(answer) = whole(round, client.echo(&small).await) {
                assert_eq!(answer.payload, small.payload);
            }
        }
        let calls = (0..64u64).map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let seq = round * 1000 + i;
                let len = match i % 4 {
                    0 => 3 << 20,
                    1 => 100_000,
                    2 => 300,
                    _ => 0,
                };
                let request = EchoReq {
                    seq,
                    payload: (0..len)
                        .map(|b| (b as u64 ^ seq) as u8)
                        .collect::<Vec<u8>>()
                        .into(),
                    delay_ms: if i % 3 == 0 { 1 } else { 0 },
                    ..Default::default()
                };
                let answer = client.echo(&request).await;
                (request, answer)
            })
        });
        for (request, answer) in futures_join(calls.collect()).await {
            let Some(answer) = whole(request.seq, answer) else {
                continue;
            };
            assert_eq!(answer.seq, request.seq);
            assert!(
                answer.payload == request.payload,
                "call {}: payload",
                request.seq
            );
        }
    }
}

/// The answer, or `None` for a call the server refused as overloaded (a whole answer too: on
/// two busy cores its admission control may shed some of these calls); anything else fails.
fn whole(seq: u64, answer: Result<EchoResp, Status>) -> Option<EchoResp> {
    match answer {
        Ok(answer) => Some(answer),
        Err(e) if e.code() == Code::OVERLOADED => None,
        Err(e) => panic!("call {seq}: {e}"),
    }
}

async fn futures_join<T: Send + 'static>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("call hung")
                .unwrap(),
        );
    }
    out
}
