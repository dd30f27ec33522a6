//! Graceful shutdown: stop accepting, tell clients to go away, answer everything in flight.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use svrkit_tests::echo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_loses_no_request_in_flight() {
    let running = echo::start().await;
    let client = echo::client(&running.addr, 2);
    let calls = echo::slow_calls(&client, 20, 300);
    let start = Instant::now();
    while running.observed.started.load(Ordering::SeqCst) < 20 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "calls did not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.server.shutdown().await;
    for (seq, call) in calls.into_iter().enumerate() {
        let response = call
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("call {seq} lost in shutdown: {e}"));
        assert_eq!(response.seq, seq as u64);
    }
    // The accept loop has returned, and new connections are refused.
    assert!(running.task.await.unwrap().is_ok());
    assert!(tokio::net::TcpStream::connect(&running.addr).await.is_err());
}
