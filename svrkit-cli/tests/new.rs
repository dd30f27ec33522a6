//! `svrkit new` end to end, as the README's walkthrough does it: make a crate, run it, call
//! it (UNIMPLEMENTED), add a method to the IDL (the build names the missing handler), write
//! a handler, run it again and call it successfully.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn svrkit(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_svrkit"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Cargo in the new crate, with a target directory of its own that outlives the test (the
/// first build compiles the dependencies; later runs reuse them).
fn cargo(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(args)
        .current_dir(dir)
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("svrkit-new"),
        )
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_MANIFEST_DIR");
    c
}

/// `cargo run` in its own process group (cargo starts the server as its child), until the
/// server prints that it is listening.
struct Running(Child);

impl Running {
    fn start(dir: &Path) -> Running {
        let mut child = cargo(dir, &["run"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(Ok(line));
                    return;
                }
            }
            // Out of output before the server said anything: the build or the start failed.
            let mut log = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.push_str(&line);
                log.push('\n');
            }
            let _ = tx.send(Err(log));
        });
        match rx.recv_timeout(Duration::from_secs(900)) {
            Ok(Ok(line)) => eprintln!("{line}"),
            Ok(Err(log)) => panic!("cargo run failed:\n{log}"),
            Err(e) => panic!("no server: {e}"),
        }
        Running(child)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

/// A port `p` with `p + 1` (the admin port `svrkit new` gives the crate) free too. Taken
/// below Linux's ephemeral range (32768 and up): the server starts only after its crate is
/// built, a minute later, and an ephemeral port free now is by then often another test's.
fn free_port() -> u16 {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let start = 20_000 + (std::process::id() % 6_000) as u16 * 2;
    (start..32_000)
        .step_by(2)
        .chain((20_000..start).step_by(2))
        .find(|&port| free(port) && free(port + 1))
        .expect("two free loopback ports below 32000")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_new_service_serves_at_once_and_answers_once_written() {
    let root = std::env::temp_dir().join(format!("svrkit-new-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let dir: PathBuf = root.join("greeter");

    // svrkit new greeter
    let made = svrkit(&root, &["new", "greeter", "--port", &port]);
    assert!(made.status.success(), "{}", text(&made));
    assert!(
        text(&made).contains("svrkit from the checkout at"),
        "{}",
        text(&made)
    );

    // cargo run; svrkit call ... -> UNIMPLEMENTED
    let call = |json: &str| {
        svrkit(
            &dir,
            &[
                "call",
                &addr,
                "Greeter.SayHello",
                "--idl",
                "idl/greeter.xml",
                "--json",
                json,
            ],
        )
    };
    {
        let _server = Running::start(&dir);
        let o = call(r#"{"name": "ann"}"#);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stderr),
            "error: greeter.Greeter.SayHello failed with UNIMPLEMENTED: \
             greeter.Greeter.SayHello is not written yet\n"
        );
    }
    // Its own test passes as generated.
    let tested = cargo(&dir, &["test"]).output().unwrap();
    assert!(tested.status.success(), "{}", text(&tested));

    // A method added to the IDL: the build names the handler that is missing.
    let idl = dir.join("idl/greeter.xml");
    let original = std::fs::read_to_string(&idl).unwrap();
    let with_bye = original.replace(
        "</service>",
        "  <method name=\"SayBye\" id=\"2\" request=\"HelloReq\" response=\"HelloResp\"/>\n  </service>",
    );
    assert_ne!(with_bye, original);
    std::fs::write(&idl, with_bye).unwrap();
    let built = cargo(&dir, &["build"]).output().unwrap();
    assert!(!built.status.success());
    let log = text(&built);
    assert!(
        log.contains("missing: `say_bye`") && log.contains("src/handlers.rs"),
        "{log}"
    );
    std::fs::write(&idl, original).unwrap();

    // Write the handler (the README shows the same edit), run again, call again.
    let handlers = dir.join("src/handlers.rs");
    let code = std::fs::read_to_string(&handlers).unwrap();
    let unimplemented = "        Err(Status::unimplemented(\n            \"greeter.Greeter.SayHello is not written yet\",\n        ))";
    assert!(code.contains(unimplemented), "{code}");
    let written = code.replace(
        unimplemented,
        "        Ok(crate::greeter::HelloResp {\n            greeting: format!(\"Hello, {}!\", request.name).into(),\n            ..Default::default()\n        })",
    );
    std::fs::write(&handlers, written).unwrap();
    {
        let _server = Running::start(&dir);
        let o = call(r#"{"name": "ann"}"#);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "{\n  \"greeting\": \"Hello, ann!\"\n}\n"
        );
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn new_refuses_what_it_cannot_make() {
    let root = std::env::temp_dir().join(format!("svrkit-new-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("taken")).unwrap();
    std::fs::write(root.join("taken/file"), "").unwrap();
    // (arguments, exit status, what the one line says)
    let cases: [(&[&str], i32, &str); 7] = [
        (&["new", "taken"], 1, "taken exists and is not empty"),
        (&["new", "9lives"], 1, "`9lives` cannot name a crate"),
        (
            &["new", "fn"],
            1,
            "`fn` cannot name the crate: it is a Rust keyword",
        ),
        (&["new", "tokio"], 1, "`tokio` cannot name the crate"),
        (
            &["new", "x", "--port", "65535"],
            1,
            "--port 65535: the dashboard takes the next port",
        ),
        // An I/O error, like the compiler's.
        (
            &["new", "x", "--idl", "missing.xml"],
            2,
            "missing.xml: No such file",
        ),
        (
            &["new", "x", "--svrkit-path", "."],
            1,
            "is not a svrkit checkout",
        ),
    ];
    for (args, code, expected) in cases {
        let o = svrkit(&root, args);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(expected) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
        assert!(!root.join("x").exists());
    }
    // An IDL with errors is reported as the compiler reports it, and nothing is written.
    std::fs::write(
        root.join("bad.xml"),
        "<svrkit package=\"a\"><struct name=\"x\"/></svrkit>",
    )
    .unwrap();
    let o = svrkit(&root, &["new", "y", "--idl", "bad.xml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bad.xml:1:"),
        "{}",
        text(&o)
    );
    assert!(!root.join("y").exists());
    std::fs::remove_dir_all(&root).unwrap();
}

/// A schema from elsewhere: includes through `..` and an include directory, a service named
/// `Self`, a method named like a keyword, a package of several segments and a service with
/// oneway methods only. The new crate builds and its test passes.
#[test]
fn a_crate_from_an_awkward_idl_builds_and_its_test_passes() {
    let root = std::env::temp_dir().join(format!("svrkit-new-awkward-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("schemas/shared")).unwrap();
    std::fs::create_dir_all(root.join("schemas/svc")).unwrap();
    std::fs::create_dir_all(root.join("lib/common")).unwrap();
    std::fs::write(
        root.join("schemas/shared/types.xml"),
        r#"<svrkit package="acme.shared"><struct name="Req"><field id="1" name="self" type="string"/></struct></svrkit>"#,
    )
    .unwrap();
    std::fs::write(
        root.join("lib/common/ids.xml"),
        r#"<svrkit package="acme.ids"><struct name="Id"><field id="1" name="type" type="uint64"/></struct></svrkit>"#,
    )
    .unwrap();
    std::fs::write(
        root.join("schemas/svc/main.xml"),
        r#"<svrkit package="acme.type.svc">
  <include file="../shared/types.xml"/>
  <include file="common/ids.xml"/>
  <service name="Self" id="10">
    <method name="Type" id="1" request="acme.shared.Req" response="acme.ids.Id"/>
  </service>
  <service name="Events" id="11">
    <method name="Fire" id="1" request="acme.ids.Id" oneway="true"/>
  </service>
</svrkit>"#,
    )
    .unwrap();
    let made = svrkit(
        &root,
        &[
            "new",
            "awkward",
            "--idl",
            "schemas/svc/main.xml",
            "-I",
            "lib",
        ],
    );
    assert!(made.status.success(), "{}", text(&made));
    let tested = cargo(&root.join("awkward"), &["test"]).output().unwrap();
    assert!(tested.status.success(), "{}", text(&tested));
    assert!(
        text(&tested).contains("test type_is_served ... ok"),
        "{}",
        text(&tested)
    );
    // A service with no method yet: a crate that builds without warnings and a test that
    // serves.
    std::fs::write(
        root.join("empty.xml"),
        r#"<svrkit package="empty"><service name="Empty" id="12"/></svrkit>"#,
    )
    .unwrap();
    let made = svrkit(&root, &["new", "nothing", "--idl", "empty.xml"]);
    assert!(made.status.success(), "{}", text(&made));
    let tested = cargo(&root.join("nothing"), &["test"]).output().unwrap();
    assert!(tested.status.success(), "{}", text(&tested));
    assert!(!text(&tested).contains("warning"), "{}", text(&tested));
    std::fs::remove_dir_all(&root).unwrap();
}
