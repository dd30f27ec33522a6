//! The `ossagent` binary from outside: reports sent to it over the network show on its
//! pages, reports from peers it does not trust are refused and counted, and a port it cannot
//! take is one line of error.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use svrkit_runtime::monitor::board::this_minute;
use svrkit_runtime::monitor::ossagent::{MethodMinute, Minute, OssAgentClient, Report};
use svrkit_runtime::{Channel, ChannelOptions};

/// The agent, killed when dropped.
struct Agent {
    child: Child,
    addr: String,
    admin: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on free ports and reads where it listens from its first line.
fn agent(extra: &[&str]) -> Agent {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ossagent"))
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // `ossagent listening on A, admin http://B/`
    let rest = line
        .split("listening on ")
        .nth(1)
        .unwrap_or_else(|| panic!("{line:?}"));
    let (addr, admin) = rest.split_once(", admin http://").unwrap();
    Agent {
        child,
        addr: addr.to_owned(),
        admin: admin.trim().trim_end_matches('/').to_owned(),
    }
}

/// The body of `GET path` on the admin address.
fn get(admin: &str, path: &str) -> String {
    let mut s = TcpStream::connect(admin).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {admin}\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_owned()
}

fn system(admin: &str) -> serde_json::Value {
    serde_json::from_str(&get(admin, "/system.json")).unwrap()
}

/// Polls `f` every 20 ms until it gives a value, for at most 10 s.
fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "not within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one report of 42 calls of `s.S.M` this minute, as `instance`. A report is a oneway
/// call, on its way when the call returns: keep the client and runtime it gives back until
/// the agent has it, so that the connection's writer gets to write it.
#[must_use]
fn send_report(addr: &str, instance: &str) -> (tokio::runtime::Runtime, OssAgentClient) {
    let report = Report {
        instance: instance.to_owned().into(),
        pid: 7,
        minutes: vec![Minute {
            minute: this_minute(),
            methods: vec![MethodMinute {
                service: "s.S".into(),
                method: "M".into(),
                calls: 42,
                ..MethodMinute::default()
            }],
            ..Minute::default()
        }],
        ..Report::default()
    };
    // Its worker goes on writing after the call returns.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client = runtime.block_on(async {
        let client = OssAgentClient::new(Channel::lazy([addr], ChannelOptions::default()));
        client.report(&report).await.unwrap();
        client
    });
    (runtime, client)
}

#[test]
fn a_report_over_the_network_shows_on_the_agents_pages() {
    let agent = agent(&[]);
    let _sender = send_report(&agent.addr, "10.1.2.3:7000");
    let instance = eventually(|| {
        let system = system(&agent.admin);
        system["instances"].as_array()?.first().cloned()
    });
    assert_eq!(instance["instance"], "10.1.2.3:7000");
    assert_eq!(instance["pid"], 7);
    let system = system(&agent.admin);
    let series = system["series"].as_array().unwrap();
    let m = series.iter().find(|s| s["method"] == "M").unwrap();
    let calls: u64 = m["minutes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["calls"].as_u64().unwrap())
        .sum();
    assert_eq!(calls, 42);
    // The dashboard names the method and the instance.
    let page = get(&agent.admin, "/");
    assert!(page.contains("s.S.M") && page.contains("10.1.2.3:7000"));
}

#[test]
fn reports_from_peers_it_does_not_trust_are_refused_and_counted() {
    let dir = std::env::temp_dir().join(format!("svrkit-ossagent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("ossagent.toml");
    // Not loopback: the test's own reports come from an untrusted peer.
    std::fs::write(&config, "[trust]\npeers = [\"10.0.0.0/8\"]\n").unwrap();
    let agent = agent(&["--config", config.to_str().unwrap()]);
    let _sender = send_report(&agent.addr, "10.1.2.3:7000");
    eventually(|| (system(&agent.admin)["dropped"]["untrusted"] == 1).then_some(()));
    assert_eq!(system(&agent.admin)["instances"], serde_json::json!([]));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_port_it_cannot_take_is_one_line_of_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_ossagent"))
        .args(["--listen", &addr, "--admin", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("ossagent: ") && lines[0].contains(&addr),
        "{err}"
    );
}
