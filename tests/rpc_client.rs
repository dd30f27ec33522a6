//! The client's call path: policies (admit, record), retries, the balancer avoiding a down
//! endpoint, reconnection after an endpoint comes back, and unknown methods.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use svrkit_runtime::client::{BalancerKind, CallInfo, CallPolicy, Outcome};
use svrkit_runtime::frame::{self, FrameKind, Header};
use svrkit_runtime::{Channel, ChannelOptions, Code, Status};
use svrkit_tests::echo;
use svrkit_tests::svrkit::test::all_types::AllTypes;
use svrkit_tests::svrkit::test::rpc::{EchoReq, EchoSvrClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
struct Counting {
    admitted: AtomicU32,
    recorded: AtomicU32,
    failures: AtomicU32,
    reject: bool,
}

impl CallPolicy for Counting {
    fn admit(&self, call: &CallInfo) -> Result<(), Status> {
        self.admitted.fetch_add(1, Ordering::SeqCst);
        if self.reject && call.method.name == "Echo" {
            return Err(Status::overloaded("shed by the caller's policy"));
        }
        Ok(())
    }
    fn record(&self, _call: &CallInfo, _latency: Duration, outcome: Outcome<'_>) {
        self.recorded.fetch_add(1, Ordering::SeqCst);
        if outcome.code() != Code::OK {
            self.failures.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A channel to a dead endpoint, then a live one, taken in turn (the first call goes to the
/// dead one); the dead one stays out of rotation for the whole test once a connect to it
/// failed.
async fn dead_then_live(live: &str, policy: &Arc<Counting>) -> EchoSvrClient {
    let options = ChannelOptions {
        min_backoff: Duration::from_secs(60),
        balancer: BalancerKind::RoundRobin,
        ..Default::default()
    };
    let channel =
        Channel::lazy([dead_address().await, live.to_owned()], options).with_policy(policy.clone());
    EchoSvrClient::new(channel)
}

async fn dead_address() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_can_reject_before_sending() {
    let running = echo::start().await;
    let policy = Arc::new(Counting {
        reject: true,
        ..Default::default()
    });
    let client = EchoSvrClient::new(
        Channel::lazy([running.addr.clone()], Default::default()).with_policy(policy.clone()),
    );
    let err = client.echo(&EchoReq::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::OVERLOADED);
    assert_eq!(
        running.observed.started.load(Ordering::SeqCst),
        0,
        "nothing reached the server"
    );
    assert_eq!(policy.recorded.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_cannot_connect_goes_to_another_endpoint_but_only_idempotent_ones_retry() {
    let running = echo::start().await;
    let policy = Arc::new(Counting::default());
    let client = dead_then_live(&running.addr, &policy).await;
    // The first call goes to the dead endpoint and cannot connect: nothing was sent, so it
    // goes to the live one at once, idempotent or not. After that the balancer keeps the
    // dead endpoint out of rotation. The policy, above it all, sees each call once, and
    // every one succeeded.
    client
        .echo(&EchoReq::default())
        .await
        .expect("moved to the live endpoint");
    for _ in 0..3 {
        client
            .all_types(&AllTypes::default())
            .await
            .expect("the live endpoint");
    }
    assert_eq!(policy.recorded.load(Ordering::SeqCst), 4);
    assert_eq!(policy.failures.load(Ordering::SeqCst), 0);

    // A server's UNAVAILABLE is retried only for idempotent methods: `Echo` is not, so the
    // server sees the call once and the caller sees the failure.
    let before = running.observed.started.load(Ordering::SeqCst);
    let refused = EchoReq {
        fail_code: Code::UNAVAILABLE.0,
        ..Default::default()
    };
    let err = client.echo(&refused).await.unwrap_err();
    assert_eq!(err.code(), Code::UNAVAILABLE, "{err}");
    assert_eq!(running.observed.started.load(Ordering::SeqCst), before + 1);
    assert_eq!(policy.failures.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_reconnects_when_its_endpoint_comes_back() {
    let first = echo::start().await;
    let addr = first.addr.clone();
    let client = echo::client(&addr, 1);
    client.echo(&EchoReq::default()).await.unwrap();
    first.server.shutdown().await;
    first.task.await.unwrap().unwrap();
    // Down: calls fail fast with UNAVAILABLE, not a hang.
    let err = client.echo(&EchoReq::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::UNAVAILABLE, "{err}");
    // Back on the same address: the channel reconnects on its own (after its backoff).
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let server = svrkit_runtime::Server::builder()
        .add_service(svrkit_tests::svrkit::test::rpc::EchoSvrServer::new(
            echo::Echo {
                observed: Default::default(),
                downstream: None,
            },
        ))
        .build();
    tokio::spawn(async move { server.serve(listener).await });
    let started = Instant::now();
    loop {
        match client
            .echo(&EchoReq {
                text: "back".into(),
                ..Default::default()
            })
            .await
        {
            Ok(r) => {
                assert_eq!(r.text, "back");
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), Code::UNAVAILABLE, "{e}");
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "did not reconnect"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Requests for a method or service the server does not host are answered UNIMPLEMENTED
/// (oneway ones cannot be) and every one is counted; a frame of a kind no protocol version
/// has closes its connection, counted too, while other connections are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_server_does_not_host_is_answered_counted_and_closed() {
    use svrkit_runtime::metrics::{Unknown, process};
    let running = echo::start().await;
    let counts = || Unknown::ALL.map(|kind| process().unknown(kind));
    let [service, method, frames] = counts();
    let mut raw = svrkit_tests::raw::RawConn::connect(&running.addr).await;
    let send = |kind, id, service_id, method_id| {
        let header = Header {
            kind,
            request_id: id,
            service_id,
            method_id,
            ..Default::default()
        };
        let mut out = Vec::new();
        frame::encode(&header, &[], &mut out);
        out
    };
    let mut answers = Vec::new();
    for (kind, id, service_id, method_id) in [
        (FrameKind::ONEWAY, 1, 9100, 98),
        (FrameKind::REQUEST, 2, 9100, 99),
        (FrameKind::REQUEST, 3, 4242, 1),
    ] {
        raw.stream
            .write_all(&send(kind, id, service_id, method_id))
            .await
            .unwrap();
        if kind == FrameKind::REQUEST {
            let response = raw.read(Duration::from_secs(5)).await;
            answers.push((
                response.header.request_id,
                Code(response.header.status_code),
                response.header.status_message.to_string(),
            ));
        }
    }
    assert_eq!(
        answers,
        [
            (
                2,
                Code::UNIMPLEMENTED,
                "test.rpc.EchoSvr has no method with id 99".to_owned()
            ),
            (3, Code::UNIMPLEMENTED, "no service with id 4242".to_owned()),
        ]
    );
    // The oneway was read before the request after it: all three are counted by now.
    assert_eq!(counts(), [service + 1, method + 2, frames]);

    // Kind 99 is in no version of the protocol: the server closes the connection.
    raw.stream
        .write_all(&send(FrameKind(99), 4, 9100, 1))
        .await
        .unwrap();
    assert!(
        svrkit_tests::raw::closed_within(&mut raw.stream, Duration::from_secs(5)).await,
        "the connection is closed"
    );
    assert_eq!(counts(), [service + 1, method + 2, frames + 1]);
    let metrics = svrkit_runtime::monitor::exposition::encode();
    let frames_line = format!(
        "svrkit_server_unknown_total{{kind=\"frame\"}} {}",
        frames + 1
    );
    assert!(metrics.contains(&frames_line), "{metrics}");
    // Others are still served.
    let client = EchoSvrClient::new(Channel::lazy(
        [running.addr.clone()],
        ChannelOptions::default(),
    ));
    client.echo(&EchoReq::default()).await.unwrap();
}

/// A peer that accepts connections and then never answers (a half-open connection, a hung
/// machine): the keepalive notices within two intervals, the call fails UNAVAILABLE instead
/// of waiting for its deadline, and the balancer sends later calls elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_endpoint_is_detected_and_avoided() {
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = black_hole.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((conn, _)) = black_hole.accept().await {
            conns.push(conn);
        }
    });
    let running = echo::start().await;
    let options = ChannelOptions {
        keepalive_interval: Duration::from_millis(100),
        min_backoff: Duration::from_secs(60),
        connections_per_endpoint: 1,
        // The first call goes to the silent endpoint.
        balancer: BalancerKind::RoundRobin,
        ..Default::default()
    };
    let channel = Channel::lazy([silent, running.addr.clone()], options);
    let client = EchoSvrClient::new(channel.clone());
    let long = svrkit_runtime::CallOptions::timeout(Duration::from_secs(30));
    let started = Instant::now();
    let err = client
        .echo_with(&EchoReq::default(), &long)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::UNAVAILABLE, "{err}");
    assert!(err.message().contains("keepalive"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    let endpoints = channel.endpoints().unwrap().snapshot();
    assert!(!endpoints[0].is_healthy());
    for _ in 0..10 {
        client.echo_with(&EchoReq::default(), &long).await.unwrap();
    }
    held.abort();
}

/// The endpoint set can change while calls run: an added endpoint takes calls, a removed
/// one gets no new ones, and calls already running on it finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_can_change_under_running_calls() {
    let a = echo::start().await;
    let b = echo::start().await;
    let channel = Channel::lazy([a.addr.clone()], Default::default());
    let client = EchoSvrClient::new(channel.clone());
    let running_call = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .echo(&EchoReq {
                    text: "slow".into(),
                    delay_ms: 300,
                    ..Default::default()
                })
                .await
        }
    });
    a.observed
        .until("the slow call started", Duration::from_secs(5), |o| {
            o.started.load(Ordering::SeqCst) == 1
        })
        .await;
    channel.endpoints().unwrap().update([b.addr.clone()]);
    for _ in 0..4 {
        client.echo(&EchoReq::default()).await.unwrap();
    }
    assert_eq!(b.observed.started.load(Ordering::SeqCst), 4);
    assert_eq!(running_call.await.unwrap().unwrap().text, "slow");
    assert_eq!(a.observed.started.load(Ordering::SeqCst), 1);
}

/// A server that stops reading: once the socket's buffers are full the client's writer
/// waits, and after `write_timeout` the connection is closed (with the requests queued on
/// it) and new calls go to a new connection, instead of queueing behind it for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_loses_its_connection_after_the_write_timeout() {
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = black_hole.local_addr().unwrap().to_string();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((conn, _)) = black_hole.accept().await {
            // Accepted, never read.
            conns.push(conn);
            let _ = accepted_tx.send(());
        }
    });
    let options = ChannelOptions {
        connections_per_endpoint: 1,
        write_timeout: Duration::from_millis(200),
        min_backoff: Duration::from_millis(10),
        ..Default::default()
    };
    let client = EchoSvrClient::new(Channel::lazy([addr], options));
    let note = svrkit_tests::svrkit::test::rpc::Note {
        text: "x".repeat(256 * 1024).into(),
        ..Default::default()
    };
    // Oneway calls return once queued; they fill the socket, then the queue.
    let sender = tokio::spawn(async move {
        loop {
            let _ = client.notify(&note).await;
        }
    });
    accepted.recv().await.unwrap();
    // The stalled connection is given up and a second one opened.
    tokio::time::timeout(Duration::from_secs(10), accepted.recv())
        .await
        .expect("the stalled connection was not replaced")
        .unwrap();
    sender.abort();
    held.abort();
}

/// A server whose response the client cannot decode (here a `string` holding bytes that are
/// not UTF-8) fails the call with INTERNAL, and the client's counters say so: it used to
/// fail with INVALID_ARGUMENT, a caller's error, after counting the call as `ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_does_not_decode_is_counted_as_an_internal_error() {
    use svrkit_runtime::metrics::STATUS_NAMES;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let decoder = frame::Decoder::new(1 << 20);
        let mut buf = bytes::BytesMut::new();
        loop {
            if socket.read_buf(&mut buf).await.unwrap() == 0 {
                return;
            }
            while let Some(request) = decoder.decode(&mut buf).unwrap() {
                if request.header.kind != FrameKind::REQUEST {
                    continue;
                }
                let header = Header {
                    kind: FrameKind::RESPONSE,
                    request_id: request.header.request_id,
                    ..Default::default()
                };
                let mut out = Vec::new();
                // Field 1 (`text`, a string): two bytes that are not UTF-8.
                frame::encode(&header, &[0x0a, 0x02, 0xff, 0xfe], &mut out);
                socket.write_all(&out).await.unwrap();
            }
        }
    });
    let mut options = ChannelOptions::default();
    options.retry.enabled = false;
    let client = EchoSvrClient::new(Channel::lazy([addr], options));
    let method = &EchoSvrClient::DESCRIPTOR.methods[0];
    let counted = |status: &str| {
        let slot = STATUS_NAMES.iter().position(|s| *s == status).unwrap();
        svrkit_runtime::metrics::find_method(method)
            .map_or(0, |m| m.client_totals().responses[slot])
    };
    let (ok, internal) = (counted("ok"), counted("internal"));
    let err = client.echo(&EchoReq::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::INTERNAL, "{err}");
    assert!(
        err.message()
            .starts_with("bad response from test.rpc.EchoSvr.Echo"),
        "{err}"
    );
    assert_eq!(counted("ok"), ok);
    assert_eq!(counted("internal"), internal + 1);
}

/// A server that does not list its methods (one of an older version) answers the PING every
/// connection opens with a plain PONG: oneway calls then go out unchecked, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oneway_calls_to_a_server_that_lists_nothing_go_out_unchecked() {
    use svrkit_tests::svrkit::test::rpc::Note;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (got, mut oneways) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let decoder = frame::Decoder::new(1 << 20);
        let mut buf = bytes::BytesMut::new();
        while socket.read_buf(&mut buf).await.unwrap_or(0) > 0 {
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                match frame.header.kind {
                    FrameKind::PING => {
                        let pong = Header {
                            kind: FrameKind::PONG,
                            ..Default::default()
                        };
                        let mut out = Vec::new();
                        frame::encode(&pong, &[], &mut out);
                        socket.write_all(&out).await.unwrap();
                    }
                    FrameKind::ONEWAY => got.send(frame.header.method_id).unwrap(),
                    _ => {}
                }
            }
        }
    });
    let client = EchoSvrClient::new(Channel::lazy([addr], ChannelOptions::default()));
    client.notify(&Note::default()).await.unwrap();
    assert_eq!(oneways.recv().await, Some(3));
}

/// A channel is a tower `Service`: tower's own middleware drives it, and a call it gives up
/// on is cancelled at the server like any dropped call.
#[tokio::test]
async fn tower_middleware_composes_with_a_channel() {
    use svrkit_runtime::client::TowerCall;
    use svrkit_tests::svrkit::test::rpc::EchoResp;
    use tower::{Service, ServiceBuilder, ServiceExt};

    async fn through<S>(
        service: &mut S,
        call: TowerCall<EchoReq, EchoResp>,
    ) -> Result<EchoResp, S::Error>
    where
        S: Service<TowerCall<EchoReq, EchoResp>, Response = EchoResp>,
    {
        service.ready().await?.call(call).await
    }

    let running = echo::start().await;
    let channel = Channel::lazy([running.addr.clone()], ChannelOptions::default());
    let echo_method = &EchoSvrClient::DESCRIPTOR.methods[0];
    let mut service = ServiceBuilder::new()
        .concurrency_limit(4)
        .timeout(Duration::from_millis(300))
        .service(channel);

    let call = TowerCall::<EchoReq, EchoResp>::new(
        echo_method,
        EchoReq {
            text: "through tower".into(),
            ..EchoReq::default()
        },
    );
    let got = through(&mut service, call).await.unwrap();
    assert_eq!(got.text, "through tower");

    // tower's timeout, shorter than the method's deadline (2 s), ends the call: the handler
    // hears of it through its context.
    let slow = TowerCall::<EchoReq, EchoResp>::new(
        echo_method,
        EchoReq {
            delay_ms: 10_000,
            ..EchoReq::default()
        },
    );
    let err = through(&mut service, slow).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    running
        .observed
        .until("the handler sees the cancel", Duration::from_secs(1), |o| {
            o.saw_cancel.load(Ordering::SeqCst) == 1
        })
        .await;

    // A status is the channel's error, as it was.
    let failing = TowerCall::<EchoReq, EchoResp>::new(
        echo_method,
        EchoReq {
            fail_code: Code::NOT_FOUND.0,
            ..EchoReq::default()
        },
    );
    let err = through(&mut service, failing).await.unwrap_err();
    let status = err.downcast::<Status>().unwrap();
    assert_eq!(status.code(), Code::NOT_FOUND);
}
