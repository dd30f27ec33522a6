//! Spans over OTLP to a collector stand-in (OpenTelemetry's own protocol types, served by
//! tonic): a request that crosses two servers, over svrkit frames and over gRPC, gives spans
//! of one trace whose parent ids link the hops, a client span for each call and a server
//! span for each request under it; and the handlers' own `tracing` spans between them, through
//! the runtime's `tracing` layer. One test in its own binary: exporting is the process's.

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
    // The runtime's `rpc` span (debug) and the relay handler's own (info) both reach the
    // layer.
    use tracing_subscriber::prelude::*;
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new(
                "info,svrkit_runtime=debug",
            ))
            .with(svrkit_runtime::monitor::otlp::tracing_layer()),
    )
    .unwrap();
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
    // OTLP's span kinds.
    const INTERNAL: i32 = 1;
    const SERVER: i32 = 2;
    const CLIENT: i32 = 3;
    let find = |name: &str, kind: i32| -> Vec<&Span> {
        spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.name == name && s.kind == kind)
            .collect()
    };
    let under = |parent: &Span, name: &str, kind: i32| -> &Span {
        let found: Vec<&Span> = find(name, kind)
            .into_iter()
            .filter(|s| s.parent_span_id == parent.span_id)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one {name} span of kind {kind} under {parent:?}: {spans:#?}"
        );
        let child = found[0];
        assert_eq!(child.trace_id, parent.trace_id);
        assert_eq!(child.trace_id.len(), 16);
        assert_ne!(child.span_id, parent.span_id);
        assert!(
            child.start_time_unix_nano >= parent.start_time_unix_nano,
            "{child:?}"
        );
        child
    };
    let system = |s: &Span| {
        s.attributes
            .iter()
            .find(|a| a.key == "rpc.system")
            .and_then(|a| a.value.clone())
            .map(|v| format!("{:?}", v.value))
            .unwrap_or_default()
    };
    // Each chain, hop by hop: the test's call (a client span, the root), A's request under
    // it, A's `rpc` span and the relay handler's span inside that, A's call to B under the
    // handler's span, B's request under A's call, and B's `rpc` span under its request.
    let roots = find("test.rpc.EchoSvr.Relay", CLIENT);
    assert_eq!(roots.len(), 2, "{spans:#?}");
    let mut systems = Vec::new();
    for root in roots {
        assert!(root.parent_span_id.iter().all(|&b| b == 0), "{root:?}");
        let relay = under(root, "test.rpc.EchoSvr.Relay", SERVER);
        let rpc = under(relay, "rpc", INTERNAL);
        let downstream = under(rpc, "relay.downstream", INTERNAL);
        let call = under(downstream, "test.rpc.EchoSvr.Echo", CLIENT);
        let echo = under(call, "test.rpc.EchoSvr.Echo", SERVER);
        under(echo, "rpc", INTERNAL);
        assert!(system(root).contains("svrkit") && system(relay).contains("svrkit"));
        // The second hop's two ends say the same protocol.
        assert_eq!(system(call), system(echo), "{call:?} {echo:?}");
        systems.push(system(echo));
    }
    // The second hops: exactly one over svrkit frames and one over gRPC.
    systems.sort();
    assert!(
        systems[0].contains("\"grpc\"") && systems[1].contains("\"svrkit\""),
        "{systems:?}"
    );
}
