//! `svrkit call` and `svrkit bench` against a live server, from another process, as a user
//! runs them: the answers, the one-line errors and exit codes, and bench's table.
//!
//! The server hosts `hello.Greeter` (`idl/hello/hello.xml`) written with the dynamic codec
//! itself, so this test needs no generated code: `SayHello` greets, fails with
//! `fail_code` or waits `delay_ms` first.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use svrkit_cli::dynamic::DynamicCodec;
use svrkit_codegen::Compiled;
use svrkit_runtime::service::{
    BoxFuture, MethodDescriptor, Priority, Retry, Service, ServiceDescriptor,
};
use svrkit_runtime::{Bytes, Code, Context, Server, Status};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

static METHODS: [MethodDescriptor; 1] = [MethodDescriptor {
    name: "SayHello",
    full_name: "hello.Greeter.SayHello",
    id: 1,
    service_id: 7100,
    timeout_ms: 1000,
    retry: Retry::None,
    priority: Priority::Normal,
    oneway: false,
    long_poll: false,
    classes: svrkit_runtime::status::Classes::DEFAULT,
}];
static GREETER: ServiceDescriptor = ServiceDescriptor {
    name: "hello.Greeter",
    id: 7100,
    methods: &METHODS,
};

struct Greeter(Arc<Compiled>);

impl Service for Greeter {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        &GREETER
    }

    fn call(&self, _: u16, _: Context, request: Bytes) -> BoxFuture<Result<Bytes, Status>> {
        let compiled = self.0.clone();
        Box::pin(async move {
            let codec = DynamicCodec::new(compiled.schema());
            let req = codec
                .decode(codec.struct_named("hello.HelloReq").unwrap(), &request)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            if let Some(ms) = req["delay_ms"].as_u64() {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let name = req["name"].as_str().unwrap_or("");
            if let Some(code) = req["fail_code"].as_u64() {
                // The caller's name in the message, if it gave one: a way to send the CLI
                // a message of one's choosing.
                let message = match name {
                    "" => "asked to fail".to_owned(),
                    name => format!("{name} asked to fail"),
                };
                return Err(Status::new(Code(code as u32), message));
            }
            let resp = json!({ "greeting": format!("Hello, {name}!") });
            let bytes = codec
                .encode(codec.struct_named("hello.HelloResp").unwrap(), &resp)
                .unwrap();
            Ok(Bytes::from(bytes))
        })
    }
}

/// A server on a free port, in a runtime of its own for as long as the test holds it.
struct Running {
    addr: String,
    _runtime: tokio::runtime::Runtime,
}

fn serve() -> Running {
    let compiled = svrkit_codegen::Builder::new()
        .emit_rerun_if_changed(false)
        .check(&[repo().join("idl/hello/hello.xml")])
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = Server::builder()
        .add_service(Greeter(Arc::new(compiled)))
        .build();
    runtime.spawn(async move { server.serve(listener).await });
    Running {
        addr,
        _runtime: runtime,
    }
}

fn svrkit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_svrkit"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

fn call(addr: &str, method: &str, extra: &[&str]) -> Output {
    let mut args = vec!["call", addr, method, "--idl", "idl/hello/hello.xml"];
    args.extend_from_slice(extra);
    svrkit(&args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn call_prints_the_answer_as_json() {
    let server = serve();
    let o = call(
        &server.addr,
        "Greeter.SayHello",
        &["--json", r#"{"name": "ann"}"#],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "{\n  \"greeting\": \"Hello, ann!\"\n}\n"
    );
    // The full name works too.
    let o = call(&server.addr, "hello.Greeter.SayHello", &["--json", "{}"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Every kind of bad input: one line naming the problem, exit status 1 (2 for usage).
#[test]
fn bad_input_is_one_line_and_exit_status_1() {
    let server = serve();
    let addr = server.addr.as_str();
    let unreachable = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    // An HTTP server that answers anything with 400, as hyper does to a stranger.
    let http = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in l.incoming().flatten() {
                let mut stream = stream;
                let _ = std::io::Write::write_all(
                    &mut stream,
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        addr
    };
    let cases: Vec<(Output, String)> = vec![
        (
            call(addr, "Greeter.SayHello", &["--json", r#"{"name": "#]),
            "error: invalid JSON in --json: EOF while parsing a value at line 1 column 9".into(),
        ),
        (
            call(addr, "Greeter.SayHello", &["--json", r#"{"nmae": "ann"}"#]),
            "error: the request is not a hello.HelloReq: unknown field `nmae` in hello.HelloReq; did you mean `name`?".into(),
        ),
        (
            call(addr, "Greeter.SayHello", &["--json", r#"{"fail_code": 4294967296}"#]),
            "error: the request is not a hello.HelloReq: fail_code: 4294967296 is out of range for uint32".into(),
        ),
        (
            call(addr, "Greeter.Nope", &[]),
            "error: unknown method `Greeter.Nope` (the IDL has Greeter.SayHello, Greeter.Relay, Greeter.Visited)".into(),
        ),
        (
            call(addr, "Greeter.SayHello", &["--json", r#"{"fail_code": 4}"#]),
            "error: hello.Greeter.SayHello failed with NOT_FOUND: asked to fail".into(),
        ),
        (
            // The server's message stays one line and cannot drive the terminal.
            call(addr, "Greeter.SayHello", &["--json", r#"{"name": "a\nb\u001b[31m\u202e", "fail_code": 4}"#]),
            r"error: hello.Greeter.SayHello failed with NOT_FOUND: a\nb\u{1b}[31m\u{202e} asked to fail".into(),
        ),
        (
            call(addr, "Greeter.SayHello", &["--json", r#"{"delay_ms": 5000}"#, "--timeout", "200ms"]),
            // The server or the client says so first, in its words.
            "error: hello.Greeter.SayHello failed with DEADLINE_EXCEEDED: hello.Greeter.SayHello did ".into(),
        ),
        (
            call(addr, "Greeter.Relay", &[]),
            "error: hello.Greeter.Relay failed with UNIMPLEMENTED: ".into(),
        ),
        (
            // What happened and what to check; no word of attempts that will not come.
            call(&unreachable, "Greeter.SayHello", &[]),
            format!("error: hello.Greeter.SayHello failed with UNAVAILABLE: {unreachable} is down: cannot connect: Connection refused (os error 111) (is the server running?)\n"),
        ),
        (
            // An HTTP port (a dashboard, say) where the service's port was meant.
            call(&http, "Greeter.SayHello", &[]),
            "error: hello.Greeter.SayHello failed with UNAVAILABLE: broken response stream: not an svrkit frame but HTTP: the peer is an HTTP server (an admin or web port?), not an svrkit service\n".into(),
        ),
    ];
    for (o, expected) in cases {
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{expected}: {err}");
        assert!(
            err.starts_with(&expected),
            "expected {expected}\n got {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(o.stdout.is_empty());
    }
    // bench refuses an unreachable server before it starts.
    let o = svrkit(&[
        "bench",
        &unreachable,
        "Greeter.SayHello",
        "--idl",
        "idl/hello/hello.xml",
        "-d",
        "1s",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .lines()
            .last()
            .unwrap()
            .contains("failed with UNAVAILABLE"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());
    // Usage errors are clap's, exit status 2.
    let o = call("127.0.0.1", "Greeter.SayHello", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`127.0.0.1` is not host:port"),
        "{}",
        stderr(&o)
    );
    let o = call(addr, "Greeter.SayHello", &["--timeout", "soon"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`soon` is not a duration"),
        "{}",
        stderr(&o)
    );
    for usage in [
        ["-c", "0"],
        ["--rate", "0"],
        ["--rate", "nan"],
        ["-d", "0s"],
    ] {
        let mut args = vec![
            "bench",
            addr,
            "Greeter.SayHello",
            "--idl",
            "idl/hello/hello.xml",
        ];
        args.extend_from_slice(&usage);
        let o = svrkit(&args);
        assert_eq!(o.status.code(), Some(2), "{usage:?}: {}", stderr(&o));
    }
}

/// Half the calls fail: the table's rows add up to its total, and the total to the first line.
/// A rate the sender cannot keep still stops at `-d`, and says how many calls it could not
/// start.
#[test]
fn an_open_loop_stops_at_its_duration() {
    let server = serve();
    let open_loop = |rate: &str| {
        svrkit(&[
            "bench",
            &server.addr,
            "Greeter.SayHello",
            "--idl",
            "idl/hello/hello.xml",
            "--json",
            "{}",
            "--rate",
            rate,
            "-d",
            "1s",
        ])
    };
    let started = std::time::Instant::now();
    let o = open_loop("1e9");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("scheduled calls were not started"),
        "{}",
        stderr(&o)
    );
    for rate in ["1e-20", "0.1"] {
        let o = open_loop(rate);
        assert!(o.status.success(), "{rate}: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.starts_with("1 calls in 1.00 s: 1.0 calls/s"),
            "{rate}: {out}"
        );
    }
}

#[test]
fn bench_prints_a_table_whose_counts_add_up() {
    let server = serve();
    let bench = |json: &str, extra: &[&str]| {
        let mut args = vec![
            "bench",
            server.addr.as_str(),
            "Greeter.SayHello",
            "--idl",
            "idl/hello/hello.xml",
            "--json",
            json,
            "-d",
            "1s",
        ];
        args.extend_from_slice(extra);
        let o = svrkit(&args);
        // Exit status 1 when no call succeeded, with the table all the same.
        let failing = json.contains("fail");
        assert_eq!(o.status.code(), Some(i32::from(failing)), "{}", stderr(&o));
        if failing {
            assert_eq!(
                stderr(&o).lines().last().unwrap(),
                "error: no call to hello.Greeter.SayHello succeeded"
            );
        }
        String::from_utf8(o.stdout).unwrap()
    };
    for (json, extra) in [
        (r#"{"name": "b"}"#, &["-c", "4"][..]),
        (r#"{"fail_code": 8}"#, &["-c", "4"][..]),
        // Room for 64 in flight: with 4, a loaded machine (calls of 10-20 ms) kept the sender
        // from starting the 500th call within the second.
        (r#"{"name": "b"}"#, &["-c", "64", "--rate", "500"][..]),
    ] {
        let out = bench(json, extra);
        let first: u64 = out.split_whitespace().next().unwrap().parse().unwrap();
        let rows: Vec<(&str, u64)> = out
            .lines()
            .skip_while(|l| !l.starts_with("status"))
            .skip(1)
            .take_while(|l| !l.is_empty())
            .map(|l| {
                let mut w = l.split_whitespace();
                (w.next().unwrap(), w.next_back().unwrap().parse().unwrap())
            })
            .collect();
        let (total, statuses) = rows.split_last().unwrap();
        assert_eq!(total.0, "total", "{out}");
        assert_eq!(statuses.iter().map(|r| r.1).sum::<u64>(), total.1, "{out}");
        assert_eq!(first, total.1, "{out}");
        assert!(first > 0, "{out}");
        let expected = if json.contains("fail") {
            "INTERNAL"
        } else {
            "OK"
        };
        assert_eq!(statuses.len(), 1, "{out}");
        assert_eq!(statuses[0].0, expected, "{out}");
        for row in ["p50", "p99", "p99.9", "max"] {
            assert!(out.lines().any(|l| l.starts_with(row)), "{out}");
        }
        if extra.contains(&"--rate") {
            // 500 a second for a second, all answered, and counted over the second.
            assert_eq!(first, 500, "{out}");
            assert!(
                out.starts_with("500 calls in 1.00 s: 500.0 calls/s"),
                "{out}"
            );
        }
    }
}
