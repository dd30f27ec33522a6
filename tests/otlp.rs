//! Spans over OTLP to a collector stand-in (OpenTelemetry's own protocol types, served by
//! tonic): a request that crosses two servers, over svrkit frames and over gRPC, gives spans
//! of one trace whose parent ids link the hops. One test in its own binary: exporting is the
//! process's.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use svrkit_runtime::client::Protocol;
use svrkit_runtime::{Channel, ChannelOptions, Limits};
use svrkit_tests::echo;
use svrkit_tests::svrkit::test::rpc::{EchoReq, EchoSvrClient};

/// The collector: keeps every span it is sent.
#[derive(Default, Clone)]
struct Collector(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    kept.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn client(addr: &str, protocol: Protocol) -> EchoSvrClient {
    let options = ChannelOptions {
        protocol,
        caller: "otlp-test".into(),
        ..ChannelOptions::default()
    };
    EchoSvrClient::new(Channel::lazy([addr.to_owned()], options))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_link_two_hops_over_svrkit_and_grpc() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    let collector = Collector::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let otlp =
        svrkit_runtime::monitor::otlp::start(&format!("http://{collector_addr}"), "otlp-test")
            .unwrap();

    // Two chains: client -> A (Relay) -> B (Echo), the second hop over svrkit frames for
    // one and over gRPC for the other.
    let b = echo::start().await;
    for (protocol, seq) in [(Protocol::Svrkit, 1), (Protocol::Grpc, 2)] {
        let a = echo::start_with(Limits::default(), Some(client(&b.addr, protocol))).await;
        let got = client(&a.addr, Protocol::Svrkit)
            .relay(&EchoReq {
                seq,
                ..EchoReq::default()
            })
            .await
            .unwrap();
        assert_eq!(got.seq, seq);
    }
    tokio::task::spawn_blocking(move || otlp.flush())
        .await
        .unwrap()
        .unwrap();

    let spans = collector.0.lock().unwrap().clone();
    let named = |name: &str| -> Vec<&Span> {
        spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.name == name)
            .collect()
    };
    let relays = named("test.rpc.EchoSvr.Relay");
    let echoes = named("test.rpc.EchoSvr.Echo");
    assert_eq!((relays.len(), echoes.len()), (2, 2), "{spans:#?}");
    let mut systems = Vec::new();
    for relay in relays {
        // The first hop started the trace here: a root.
        assert!(relay.parent_span_id.iter().all(|&b| b == 0), "{relay:?}");
        let child = echoes
            .iter()
            .find(|e| e.parent_span_id == relay.span_id)
            .unwrap_or_else(|| panic!("no Echo span under {relay:?} in {echoes:#?}"));
        assert_eq!(child.trace_id, relay.trace_id);
        assert_eq!(child.trace_id.len(), 16);
        assert_ne!(child.span_id, relay.span_id);
        let system = |s: &Span| {
            s.attributes
                .iter()
                .find(|a| a.key == "rpc.system")
                .and_then(|a| a.value.clone())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default()
        };
        assert!(system(relay).contains("svrkit"), "{relay:?}");
        assert!(
            system(child).contains("svrkit") || system(child).contains("grpc"),
            "{child:?}"
        );
        // A server span: kind 2.
        assert_eq!(child.kind, 2);
        systems.push(system(child));
    }
    // The second hops: exactly one over svrkit frames and one over gRPC.
    systems.sort();
    assert!(
        systems[0].contains("\"grpc\"") && systems[1].contains("\"svrkit\""),
        "{systems:?}"
    );
    // One of the two Echo spans came over gRPC.
    assert!(
        echoes
            .iter()
            .any(|e| format!("{:?}", e.attributes).contains("grpc")),
        "{echoes:#?}"
    );
}
