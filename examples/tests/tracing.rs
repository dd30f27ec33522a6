//! Tracing: one trace id follows a request through every hop, every call runs in a span
//! that names it, and slow or INTERNAL calls are logged at warn with their trace id.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use svrkit_examples::hello::{GreeterClient, GreeterServer, HelloReq};
use svrkit_examples::hello_service::Hello;
use svrkit_runtime::trace::Hex;
use svrkit_runtime::{Channel, ChannelOptions, Context, Server};

/// Log output, captured.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn one_trace_id_follows_a_request_into_every_hop_and_log() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("warn,svrkit_runtime=debug,svrkit_examples=debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Everything (server, handlers, client) on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let hello = Arc::new(Hello::default());
        hello.set_downstream(Channel::lazy([addr.clone()], ChannelOptions::default()));
        let server = Server::builder()
            .add_service(GreeterServer::from_arc(hello))
            .slow_call_threshold(Duration::from_millis(20))
            .build();
        tokio::spawn(async move { server.serve(listener).await });
        let client = GreeterClient::new(Channel::lazy([addr], ChannelOptions::default()));

        // A request that belongs to trace `trace`: Relay calls SayHello onwards (a second
        // hop), which answers with the trace id it saw. It waits 30 ms, so both hops are
        // slow calls.
        let trace = [0xab; 16];
        let mut ctx = Context::with_timeout(Duration::from_secs(5));
        ctx.trace_id = bytes::Bytes::copy_from_slice(&trace);
        let slow = HelloReq {
            name: "slow".into(),
            delay_ms: 30,
            ..HelloReq::default()
        };
        let response = ctx.scope(client.relay(&slow)).await.unwrap();
        let hex = Hex(&trace).to_string();
        assert_eq!(response.trace_id, hex.as_str());

        // A call with no trace gets one of its own; an INTERNAL failure is logged with it.
        let quick = client
            .say_hello(&HelloReq {
                name: "quick".into(),
                ..HelloReq::default()
            })
            .await
            .unwrap();
        assert_eq!(quick.trace_id.len(), 32);
        assert_ne!(quick.trace_id, hex.as_str());
        let failed = HelloReq {
            name: "broken".into(),
            fail_code: 8,
            ..HelloReq::default()
        };
        assert!(client.say_hello(&failed).await.is_err());
    });
    let lines = logs.lines();
    let with =
        |needle: &str| -> Vec<&String> { lines.iter().filter(|l| l.contains(needle)).collect() };

    // Both hops' handlers logged inside a span naming the call and its trace.
    let spans = with(&format!("trace_id={hex}", hex = Hex(&[0xab; 16])));
    let greeting = spans
        .iter()
        .find(|l| l.contains("greeting") && l.contains("method=\"SayHello\""))
        .unwrap_or_else(|| panic!("no span on the handler's log: {lines:#?}"));
    assert!(greeting.contains("service=\"hello.Greeter\""), "{greeting}");
    assert!(greeting.contains("request_id="), "{greeting}");
    // Both hops were slow, and said so at warn with the same trace id.
    let slow: Vec<_> = spans
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("slow call"))
        .collect();
    assert_eq!(slow.len(), 2, "{lines:#?}");
    assert!(slow.iter().any(|l| l.contains("hello.Greeter.Relay")));
    assert!(slow.iter().any(|l| l.contains("hello.Greeter.SayHello")));
    // The INTERNAL failure, with its message and a trace id of its own.
    let internal = with("broken asked to fail");
    assert_eq!(internal.len(), 1, "{lines:#?}");
    assert!(internal[0].contains("WARN") && internal[0].contains("status=\"internal\""));
    assert!(!internal[0].contains(&Hex(&[0xab; 16]).to_string()));
    // Quick successful calls are not logged at warn.
    assert!(with("WARN").len() == 3, "{lines:#?}");
}
