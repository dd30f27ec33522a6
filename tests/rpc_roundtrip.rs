//! Calls through generated stubs over real loopback sockets, and in process: every IDL type
//! round trips, statuses come back as sent, unknown services get UNIMPLEMENTED, and a
//! panicking handler fails only its own call.

mod support;

use std::sync::atomic::Ordering;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use svrkit_runtime::status::Class;
use svrkit_runtime::{Channel, Code};
use svrkit_tests::echo;
use svrkit_tests::svrkit::test::all_types::AllTypesSvrClient;
use svrkit_tests::svrkit::test::rpc::{EchoReq, EchoSvrClient, Note};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_idl_type_round_trips_through_a_service() {
    let running = echo::start().await;
    let remote = echo::client(&running.addr, 2);
    let local = EchoSvrClient::new(running.server.local_channel());
    let mut runner = TestRunner::new(ProptestConfig::with_cases(64));
    let values: Vec<_> = (0..64)
        .map(|_| {
            support::all_types()
                .new_tree(&mut runner)
                .unwrap()
                .current()
        })
        .collect();
    for value in values {
        let over_network = remote.all_types(&value).await.expect("remote call");
        assert_eq!(over_network, value);
        let in_process = local.all_types(&value).await.expect("local call");
        assert_eq!(in_process, value);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_and_networked_calls_agree() {
    let running = echo::start().await;
    let remote = echo::client(&running.addr, 1);
    let local = EchoSvrClient::new(running.server.local_channel());
    let ok = EchoReq {
        text: "hello".into(),
        seq: 9,
        ..Default::default()
    };
    let (a, b) = (
        remote.echo(&ok).await.unwrap(),
        local.echo(&ok).await.unwrap(),
    );
    assert_eq!((a.text.as_str(), a.seq), (b.text.as_str(), b.seq));
    assert_eq!(a.caller, "tests");
    let fail = EchoReq {
        fail_code: 1042,
        ..Default::default()
    };
    let (a, b) = (
        remote.echo(&fail).await.unwrap_err(),
        local.echo(&fail).await.unwrap_err(),
    );
    assert_eq!(a.code(), Code(1042));
    assert_eq!(a, b);
    let panics = EchoReq {
        panic: true,
        ..Default::default()
    };
    let (a, b) = (
        remote.echo(&panics).await.unwrap_err(),
        local.echo(&panics).await.unwrap_err(),
    );
    assert_eq!((a.code(), b.code()), (Code::INTERNAL, Code::INTERNAL));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_only_its_call() {
    let running = echo::start().await;
    let client = echo::client(&running.addr, 1);
    let err = client
        .echo(&EchoReq {
            panic: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::INTERNAL);
    assert_eq!(err.message(), "the handler panicked");
    // Same connection, same server: still serving.
    let ok = client
        .echo(&EchoReq {
            text: "after".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ok.text, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_services_and_methods_are_unimplemented() {
    let running = echo::start().await;
    // A client for a service this server does not host.
    let other = AllTypesSvrClient::new(Channel::lazy([running.addr.clone()], Default::default()));
    let err = other.get_url(&Default::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::UNIMPLEMENTED, "{err}");
    assert_eq!(err.message(), "no service with id 9001");
    let local = AllTypesSvrClient::new(running.server.local_channel());
    assert_eq!(
        local.get_url(&Default::default()).await.unwrap_err().code(),
        Code::UNIMPLEMENTED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oneway_calls_arrive() {
    let running = echo::start().await;
    let client = echo::client(&running.addr, 1);
    client
        .notify(&Note {
            text: "one".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Oneway returns before the handler runs; an ordinary call on the same connection after it
    // is answered after the note was read.
    client.echo(&EchoReq::default()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(*running.observed.notes.lock().unwrap(), ["one"]);
    assert!(running.observed.started.load(Ordering::SeqCst) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoints_fail_fast_and_others_take_their_calls() {
    // Nothing listens on the first address (a port just freed).
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let running = echo::start().await;
    let options = svrkit_runtime::ChannelOptions {
        min_backoff: std::time::Duration::from_secs(60),
        balancer: svrkit_runtime::client::BalancerKind::RoundRobin,
        ..Default::default()
    };
    let channel = Channel::lazy([dead_addr, running.addr.clone()], options);
    let client = EchoSvrClient::new(channel.clone());
    let mut ok = 0;
    let mut unavailable = 0;
    for _ in 0..10 {
        match client.echo(&EchoReq::default()).await {
            Ok(_) => ok += 1,
            Err(e) if e.code() == Code::UNAVAILABLE => unavailable += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    // Round robin tries the dead endpoint first: its connect fails fast instead of hanging,
    // and as nothing was sent the call goes to the live endpoint; the dead one is out of
    // rotation (for its backoff) from then on.
    assert_eq!((ok, unavailable), (10, 0));
    let dead = &channel.endpoints().expect("a remote channel").snapshot()[0];
    assert!(!dead.is_healthy(), "{dead:?}");
}

/// `faults` and `caller_errors` in the IDL reach the method's descriptor, over the
/// runtime's defaults, and only that method's.
#[test]
fn the_idl_moves_status_codes_between_classes_for_one_method() {
    let relay = EchoSvrClient::DESCRIPTOR.method(4).unwrap();
    assert_eq!(relay.classes.of(Code::NOT_FOUND), Class::Fault);
    assert_eq!(relay.classes.of(Code::UNAVAILABLE), Class::Caller);
    assert_eq!(relay.classes.of(Code::INVALID_ARGUMENT), Class::Caller);
    assert_eq!(relay.classes.of(Code::INTERNAL), Class::Fault);
    let echo = EchoSvrClient::DESCRIPTOR.method(1).unwrap();
    assert_eq!(echo.classes, svrkit_runtime::status::Classes::DEFAULT);
}
