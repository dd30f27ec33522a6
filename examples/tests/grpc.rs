//! A client svrkit did not write, in a language it does not generate: Python's `grpcio`,
//! with stubs that protoc makes from what `svrkit proto` exports, calls `hello-server` on its
//! own port. Unary calls, a trace started by the caller, a deadline that expires, an error
//! status, a oneway method, a call built from server reflection alone (as `grpcurl` does),
//! and the health service before and during the drain that SIGTERM starts (`tests/grpc/hello_client.py` holds the calls and their assertions).
//! And `grpcurl` with no `.proto`: listing, describing and calling through reflection.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Skips when a program from outside the Rust toolchain is missing (see the file).
#[allow(dead_code, unreachable_pub)]
#[path = "../../tests/src/external.rs"]
mod external;

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const PYTHON: &str = "/usr/bin/python3";

/// Python with `grpc`, protoc and its Python gRPC plugin, if all are here.
fn python_grpc() -> Option<(PathBuf, PathBuf)> {
    let imports = Command::new(PYTHON)
        .args(["-c", "import grpc, google.protobuf, grpc_reflection"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let protoc = external::program("protoc")?;
    let plugin = external::program("grpc_python_plugin")?;
    imports.then_some((protoc, plugin))
}

/// Exports `idl/hello/hello.xml` as `.proto` into `dir` and runs protoc's Python generators.
fn python_stubs(dir: &Path, protoc: &Path, plugin: &Path) {
    let idl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../idl");
    let compiled = svrkit_codegen::Builder::new()
        .emit_rerun_if_changed(false)
        .include_dir(&idl)
        .check(&[idl.join("hello/hello.xml")])
        .expect("the hello IDL compiles");
    for file in compiled.proto_files() {
        std::fs::write(dir.join(&file.name), &file.content).unwrap();
    }
    let out = Command::new(protoc)
        .current_dir(dir)
        .arg(format!(
            "--plugin=protoc-gen-grpc_python={}",
            plugin.display()
        ))
        .args([
            "-I.",
            "--python_out=.",
            "--grpc_python_out=.",
            "hello.proto",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "protoc: {out:?}");
}

/// Waits for a line of `from` that starts with `start`, and returns it.
fn line_starting(from: &mut impl BufRead, start: &str, who: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = from.read_line(&mut line).unwrap();
        assert!(n > 0, "{who} ended before saying {start:?}");
        if line.starts_with(start) {
            return line;
        }
    }
}

/// Starts `hello-server` on free ports with `args`: the process, what it goes on saying,
/// and the line that says where it listens (`... listening on HOST:PORT[, admin http://...]`)
/// with its RPC address.
fn hello_server(
    args: &[&std::ffi::OsStr],
) -> (Proc, BufReader<std::process::ChildStdout>, String, String) {
    let mut server = Proc(
        Command::new(env!("CARGO_BIN_EXE_hello-server"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut said = BufReader::new(server.0.stdout.take().unwrap());
    let line = line_starting(&mut said, "hello-server listening on ", "hello-server");
    let addr = line["hello-server listening on ".len()..]
        .split([',', ' ', '\n'])
        .next()
        .unwrap()
        .to_owned();
    (server, said, line, addr)
}

/// The admin endpoint's `/readyz`, as an HTTP probe asks it: the whole answer.
fn readyz(admin: &str) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: probe\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn a_python_grpc_client_calls_hello_server_on_its_port() {
    let Some((protoc, plugin)) = external::PYTHON_GRPC.or_skip(python_grpc()) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("svrkit-grpc-python-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    python_stubs(&dir, &protoc, &plugin);

    // A drain long enough that the client's check lands in it, however slow the machine.
    let (server, mut said, line, addr) = hello_server(&[
        "--drain-ms".as_ref(),
        "60000".as_ref(),
        "--admin".as_ref(),
        "127.0.0.1:0".as_ref(),
    ]);
    let admin = line
        .split("admin http://")
        .nth(1)
        .unwrap()
        .trim_end()
        .trim_end_matches('/')
        .to_owned();
    assert!(readyz(&admin).starts_with("HTTP/1.0 200"));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc/hello_client.py");
    let mut client = Proc(
        Command::new(PYTHON)
            .arg(&script)
            .arg(&addr)
            .env("PYTHONPATH", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut heard = BufReader::new(client.0.stdout.take().unwrap());
    for step in [
        "unary ok",
        "deadline ok",
        "error ok",
        "oneway ok",
        "health SERVING",
    ] {
        line_starting(&mut heard, step, "the Python client");
    }

    // SIGTERM: the server drains, and says so once it does.
    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    line_starting(&mut said, "hello-server draining", "hello-server");
    // An HTTP probe hears the same as the gRPC one.
    let ready = readyz(&admin);
    assert!(
        ready.starts_with("HTTP/1.0 503") && ready.contains("draining"),
        "{ready}"
    );
    writeln!(client.0.stdin.as_mut().unwrap()).unwrap();
    line_starting(&mut heard, "health NOT_SERVING", "the Python client");
    let status = client.0.wait().unwrap();
    assert!(status.success(), "the Python client failed: {status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `grpcurl` (its Rust port, `grpcurl-rs`; same commands) against `hello-server`'s own port,
/// with no `.proto` at hand: it lists the services and methods, describes one, and calls it
/// and the health service from JSON, all through reflection.
#[test]
fn grpcurl_lists_describes_and_calls_hello_server() {
    let Some(grpcurl) = external::GRPCURL.or_skip(external::program("grpcurl")) else {
        return;
    };
    let (_server, _said, _, addr) = hello_server(&[]);
    let run = |args: &[&str]| {
        let out = Command::new(&grpcurl)
            .arg("-plaintext")
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, listed) = run(&[&addr, "list"]);
    assert!(ok, "{listed}");
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        ["grpc.health.v1.Health", "hello.Greeter"]
    );
    let (ok, methods) = run(&[&addr, "list", "hello.Greeter"]);
    assert!(ok, "{methods}");
    assert_eq!(
        methods.lines().collect::<Vec<_>>(),
        [
            "hello.Greeter.Relay",
            "hello.Greeter.SayHello",
            "hello.Greeter.Visited"
        ]
    );
    let (ok, described) = run(&[&addr, "describe", "hello.HelloReq"]);
    assert!(ok, "{described}");
    for field in [
        "string name = 1;",
        "uint32 fail_code = 2;",
        "uint32 delay_ms = 3;",
    ] {
        assert!(described.contains(field), "{field} in {described}");
    }
    // Fields have names of their own.
    let (ok, field) = run(&[&addr, "describe", "hello.HelloReq.name"]);
    assert!(ok && field.contains("name = 1"), "{field}");

    let (ok, reply) = run(&[
        "-d",
        r#"{"name":"grpcurl"}"#,
        &addr,
        "hello.Greeter/SayHello",
    ]);
    assert!(ok, "{reply}");
    assert!(
        reply.contains(r#""greeting": "Hello, grpcurl!""#),
        "{reply}"
    );
    // An error status comes back as such, with the handler's message.
    let (ok, failed) = run(&[
        "-d",
        r#"{"name":"broken","failCode":8}"#,
        &addr,
        "hello.Greeter/SayHello",
    ]);
    assert!(!ok, "{failed}");
    assert!(
        failed.contains("Code: Internal") && failed.contains("broken asked to fail"),
        "{failed}"
    );
    // The health service, described by reflection like the rest.
    for service in ["", "hello.Greeter"] {
        let request = format!(r#"{{"service":"{service}"}}"#);
        let (ok, health) = run(&["-d", &request, &addr, "grpc.health.v1.Health/Check"]);
        assert!(ok, "{health}");
        assert!(health.contains(r#""status": "SERVING""#), "{health}");
    }
    let (ok, unknown) = run(&[
        "-d",
        r#"{"service":"no.Such"}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(!ok && unknown.contains("Code: NotFound"), "{unknown}");
    // Watch is described (the standard schema) but not offered: the service says so.
    let (ok, watch) = run(&[&addr, "grpc.health.v1.Health/Watch"]);
    assert!(
        !ok && watch.contains("Code: Unimplemented") && watch.contains("poll Check"),
        "{watch}"
    );
}

/// At its connection cap the server refuses a gRPC client in a way grpc-core takes as a
/// failed connect: the call fails at once with `UNAVAILABLE`, and the client backs off rather
/// than reconnecting in a loop (`tests/grpc/over_the_cap.py` says why that matters).
#[test]
fn a_python_grpc_client_over_the_connection_cap_fails_fast_without_a_reconnect_storm() {
    if external::PYTHON_GRPC.or_skip(python_grpc()).is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("svrkit-grpc-cap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("cap.toml");
    std::fs::write(&config, "[limits]\nmax_connections = 1\n").unwrap();
    let args = [
        "--admin".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ];
    let (_server, _said, line, addr) = hello_server(&args);
    let admin_addr = line
        .split("admin http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no admin address in {line:?}"))
        .to_owned();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc/over_the_cap.py");
    let out = Command::new(PYTHON)
        .arg(&script)
        .args([&addr, &admin_addr])
        .output()
        .unwrap();
    assert!(out.status.success(), "the Python client failed: {out:?}");
    let said = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<&str> = said.split_whitespace().collect();
    let ["refused", code, seconds, refused] = fields[..] else {
        panic!("the Python client said {said:?}");
    };
    assert_eq!(code, "UNAVAILABLE", "{said}");
    let seconds: f64 = seconds.parse().unwrap();
    let refused: u64 = refused.parse().unwrap();
    assert!(seconds < 2.0, "the call took {seconds} s to fail: {said}");
    assert!(
        refused <= 3,
        "{refused} connections refused for one call: {said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
