//! Many calls multiplexed on one connection, answered out of order and matched correctly.

use std::time::Duration;

use svrkit_tests::echo;
use svrkit_tests::svrkit::test::rpc::EchoReq;

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
