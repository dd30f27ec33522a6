//! Monitoring seen from outside, as a person or a scraper sees it: the demo server and the
//! ossagent run as processes of their own, the demo client makes real calls, and what comes
//! back is read over HTTP (and, for the dashboards, by a real browser).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Skips when a program from outside the Rust toolchain is missing (see the file).
#[allow(dead_code, unreachable_pub)]
#[path = "../../tests/src/external.rs"]
mod external;

/// A child process killed when dropped.
struct Proc {
    child: Child,
    /// The service's address and the admin address, from its first line.
    addr: String,
    admin: Option<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin` with `args` and waits for its `... listening on A, admin http://B/` line.
fn start(bin: &str, args: &[&str]) -> Proc {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {bin}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let rest = line
        .split("listening on ")
        .nth(1)
        .unwrap_or_else(|| panic!("{bin} said {line:?}"));
    let (addr, admin) = match rest.split_once(", admin http://") {
        Some((addr, admin)) => (
            addr.to_owned(),
            Some(admin.trim().trim_end_matches('/').to_owned()),
        ),
        None => (rest.trim().to_owned(), None),
    };
    Proc { child, addr, admin }
}

/// The `ossagent` binary, which lives in its own crate (`svrkit-ossagent`), so cargo gives
/// this crate's tests no `CARGO_BIN_EXE_` for it. `cargo test --workspace` builds it beside
/// this crate's binaries (for that crate's own tests); run alone, these tests build it once.
fn ossagent() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_BIN_EXE_hello-server"));
        let dir = dir.parent().unwrap();
        let bin = dir.join(format!("ossagent{}", std::env::consts::EXE_SUFFIX));
        if !bin.exists() {
            // `target/<profile>/`: build into the same target directory and profile.
            let target = dir.parent().unwrap();
            let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cargo.args(["build", "-q", "-p", "svrkit-ossagent", "--bin", "ossagent"]);
            cargo.arg("--target-dir").arg(target);
            if dir.file_name().is_some_and(|p| p == "release") {
                cargo.arg("--release");
            }
            let status = cargo.status().expect("run cargo to build the ossagent");
            assert!(status.success(), "cargo build -p svrkit-ossagent failed");
        }
        bin.to_string_lossy().into_owned()
    })
}

fn hello_server(extra: &[&str]) -> Proc {
    let mut args = vec!["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
    args.extend(extra);
    start(env!("CARGO_BIN_EXE_hello-server"), &args)
}

fn hello_client(addr: &str, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_hello-client"))
        .args(["--addr", addr])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    out
}

fn get(admin: &str, path: &str) -> String {
    ureq::get(&format!("http://{admin}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// A free loopback port (bound, then released).
fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Samples by name and sorted labels.
type Samples = HashMap<(String, Vec<(String, String)>), f64>;

/// Every sample of a scrape, parsed by a Prometheus text parser, by name and labels.
fn scrape(admin: &str) -> Samples {
    let text = get(admin, "/metrics");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with EOF");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    parsed
        .samples
        .into_iter()
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            Some(((s.metric, labels), value))
        })
        .collect()
}

fn sample(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    *samples
        .get(&(name.to_owned(), labels.clone()))
        .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
}

#[test]
fn metrics_and_stats_count_exactly_what_was_called() {
    let server = hello_server(&[]);
    let admin = server.admin.clone().unwrap();

    // Every series exists at zero before the first call.
    let before = scrape(&admin);
    for method in ["SayHello", "Relay", "Visited"] {
        let l = [("service", "hello.Greeter"), ("method", method)];
        assert_eq!(sample(&before, "svrkit_server_requests_total", &l), 0.0);
        for (status, class) in [
            ("ok", "ok"),
            ("internal", "fault"),
            ("not_found", "caller"),
            ("application", "caller"),
            ("cancelled", "cancelled"),
        ] {
            let l = [
                ("service", "hello.Greeter"),
                ("method", method),
                ("status", status),
                ("class", class),
            ];
            assert_eq!(sample(&before, "svrkit_server_responses_total", &l), 0.0);
        }
        for reason in ["overload", "in_flight_limit", "expired"] {
            let l = [
                ("service", "hello.Greeter"),
                ("method", method),
                ("reason", reason),
            ];
            assert_eq!(sample(&before, "svrkit_server_rejected_total", &l), 0.0);
        }
        // The server's own client (Relay's downstream) is registered too.
        assert_eq!(sample(&before, "svrkit_client_requests_total", &l[..]), 0.0);
    }

    // 200 calls, every 10th failing INTERNAL; 40 more, every 4th failing with an
    // application code; 30 more, every 3rd asking for a name that is not there
    // (NOT_FOUND); 6 that the caller gives up on; 30 relayed (two hops each); 5 oneway
    // visits.
    hello_client(&server.addr, &["--calls", "200", "--fail-every", "10"]);
    hello_client(
        &server.addr,
        &["--calls", "40", "--fail-every", "4", "--fail-code", "1001"],
    );
    hello_client(
        &server.addr,
        &["--calls", "30", "--fail-every", "3", "--fail-code", "4"],
    );
    hello_client(
        &server.addr,
        &[
            "--calls",
            "6",
            "--concurrency",
            "6",
            "--delay-ms",
            "3000",
            "--give-up-ms",
            "100",
        ],
    );
    hello_client(&server.addr, &["--calls", "30", "--relay", "--visits", "5"]);

    // The server counts a hang-up once it has seen it.
    let cancelled = [
        ("service", "hello.Greeter"),
        ("method", "SayHello"),
        ("status", "cancelled"),
        ("class", "cancelled"),
    ];
    let after = eventually(Duration::from_secs(10), || {
        let s = scrape(&admin);
        (sample(&s, "svrkit_server_responses_total", &cancelled) == 6.0).then_some(s)
    });
    let say = [("service", "hello.Greeter"), ("method", "SayHello")];
    let status = |method: &str, status: &str, class: &str| {
        sample(
            &after,
            "svrkit_server_responses_total",
            &[
                ("service", "hello.Greeter"),
                ("method", method),
                ("status", status),
                ("class", class),
            ],
        )
    };
    assert_eq!(sample(&after, "svrkit_server_requests_total", &say), 306.0);
    assert_eq!(status("SayHello", "ok", "ok"), 180.0 + 30.0 + 20.0 + 30.0);
    assert_eq!(status("SayHello", "internal", "fault"), 20.0);
    assert_eq!(status("SayHello", "application", "caller"), 10.0);
    assert_eq!(status("SayHello", "not_found", "caller"), 10.0);
    assert_eq!(status("Relay", "ok", "ok"), 30.0);
    assert_eq!(status("Visited", "ok", "ok"), 5.0);
    assert_eq!(
        sample(&after, "svrkit_server_latency_seconds_count", &say),
        306.0
    );
    assert_eq!(
        sample(&after, "svrkit_server_queue_wait_seconds_count", &say),
        306.0
    );
    assert_eq!(sample(&after, "svrkit_server_in_flight", &say), 0.0);
    // Relay's downstream calls, counted on the client side of the server's process.
    assert_eq!(sample(&after, "svrkit_client_requests_total", &say), 30.0);
    assert_eq!(
        sample(
            &after,
            "svrkit_client_responses_total",
            &[
                ("service", "hello.Greeter"),
                ("method", "SayHello"),
                ("status", "ok"),
                ("class", "ok"),
            ]
        ),
        30.0
    );
    assert!(sample(&after, "svrkit_connections_accepted_total", &[]) >= 4.0);
    assert!(sample(&after, "svrkit_uptime_seconds", &[]) > 0.0);

    let stats: serde_json::Value = serde_json::from_str(&get(&admin, "/stats.json")).unwrap();
    let methods = stats["methods"].as_array().unwrap();
    let server_say = methods
        .iter()
        .find(|m| m["method"] == "SayHello" && m["side"] == "server")
        .unwrap();
    assert_eq!(server_say["requests"], 306);
    assert_eq!(server_say["responses"]["internal"], 20);
    assert_eq!(server_say["responses"]["application"], 10);
    assert_eq!(server_say["responses"]["not_found"], 10);
    assert_eq!(server_say["responses"]["cancelled"], 6);
    let classes = &server_say["classes"];
    assert_eq!(
        (
            &classes["ok"],
            &classes["fault"],
            &classes["caller"],
            &classes["cancelled"]
        ),
        (
            &serde_json::json!(260),
            &serde_json::json!(20),
            &serde_json::json!(20),
            &serde_json::json!(6)
        )
    );
    // The minute under way holds the calls (unless the minute turned during the test).
    let current = &server_say["current"];
    let in_history: u64 = server_say["minutes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["calls"].as_u64().unwrap())
        .sum();
    assert_eq!(current["calls"].as_u64().unwrap() + in_history, 306);
    // The error rate counts the server's faults only: the 20 INTERNAL, not the not-found
    // names, the application answers or the hang-ups, which are counted apart.
    let total = |field: &str| {
        current[field].as_u64().unwrap()
            + server_say["minutes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m[field].as_u64().unwrap())
                .sum::<u64>()
    };
    assert_eq!(total("errors"), 20);
    assert_eq!(total("caller_errors"), 20);
    assert_eq!(total("cancelled"), 6);
    assert_eq!(get(&admin, "/healthz"), "ok\n");
    let alerts: serde_json::Value = serde_json::from_str(&get(&admin, "/alerts.json")).unwrap();
    assert_eq!(alerts["firing"], serde_json::json!([]));
}

/// Polls `f` until it gives a value (every 50 ms, up to `within`).
fn eventually<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_service_serves_without_its_agent_and_reports_once_it_is_back() {
    // Found (or built) before any of the waits below starts its clock.
    let ossagent = ossagent();
    let agent_addr = free_port();
    let server = hello_server(&["--agent", &agent_addr, "--report-interval-ms", "100"]);
    let admin = server.admin.clone().unwrap();

    // No agent: every call still succeeds, and the reporter keeps trying.
    let out = hello_client(&server.addr, &["--calls", "500", "--concurrency", "8"]);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("500 calls") && summary.contains("ok 500"),
        "{summary}"
    );
    eventually(Duration::from_secs(10), || {
        let s = scrape(&admin);
        (sample(&s, "svrkit_monitor_reports_failed_total", &[]) >= 2.0).then_some(())
    });

    // The agent comes up on the address the server reports to: reports arrive by themselves.
    let agent = start(
        ossagent,
        &["--listen", &agent_addr, "--admin", "127.0.0.1:0"],
    );
    let agent_admin = agent.admin.clone().unwrap();
    let calls = eventually(Duration::from_secs(20), || {
        let system: serde_json::Value =
            serde_json::from_str(&get(&agent_admin, "/system.json")).ok()?;
        let instance = system["instances"].as_array()?.first()?.clone();
        let say = system["series"]
            .as_array()?
            .iter()
            .find(|s| s["method"] == "SayHello" && s["side"] == "server")?
            .clone();
        let calls: u64 = say["minutes"]
            .as_array()?
            .iter()
            .map(|m| m["calls"].as_u64().unwrap_or(0))
            .sum();
        (calls == 500).then_some((instance, calls))
    });
    assert_eq!(calls.0["instance"], server.addr.as_str());
    assert_eq!(calls.0["services"], serde_json::json!(["hello.Greeter"]));

    // Who called, and the service's own figures: in the process's /metrics, and in the
    // agent (its service map and business sums) from the same reports.
    let s = scrape(&admin);
    let by_caller = [
        ("service", "hello.Greeter"),
        ("method", "SayHello"),
        ("caller", "hello-client"),
    ];
    assert_eq!(
        sample(&s, "svrkit_server_caller_requests_total", &by_caller),
        500.0
    );
    assert_eq!(sample(&s, "hello_greetings_total", &[]), 500.0);
    assert_eq!(sample(&s, "hello_name_bytes_count", &[]), 500.0);
    eventually(Duration::from_secs(20), || {
        let system: serde_json::Value =
            serde_json::from_str(&get(&agent_admin, "/system.json")).ok()?;
        let edge = system["service_map"].as_array()?.first()?.clone();
        let greeted = system["business"]
            .as_array()?
            .iter()
            .find(|b| b["name"] == "hello_greetings")?
            .clone();
        // (Its `per_minute` depends on when the reports fell.)
        let map_ok = edge["caller"] == "hello-client"
            && edge["service"] == "hello.Greeter"
            && edge["calls"] == 500;
        (map_ok && greeted["value"] == 500.0).then_some(())
    });
    // The dashboard draws the map.
    let page = get(&agent_admin, "/");
    assert!(
        page.contains("id=\"service-map\""),
        "no service map on the page"
    );
    assert!(
        page.contains(
            "data-caller=\"hello-client\" data-service=\"hello.Greeter\" data-calls=\"500\""
        ),
        "{page}"
    );
}

/// The Chromium the CI job installs (or one on the PATH); `None`, after a line saying the
/// test skipped, without one.
fn chromium() -> Option<String> {
    external::CHROMIUM.or_skip(external::runnable(&[
        "chromium",
        "chromium-browser",
        "google-chrome",
    ]))
}

fn headless(browser: &str, args: &[&str], url: &str) -> Output {
    let profile = std::env::temp_dir().join(format!("svrkit-chromium-{}", std::process::id()));
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            // Lets the page settle (and its charts lay out) before the DOM is read.
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{browser}: {out:?}");
    out
}

#[test]
fn the_dashboards_show_the_calls_in_a_real_browser() {
    let Some(browser) = chromium() else {
        return;
    };
    let agent = start(
        ossagent(),
        &["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
    );
    let server = hello_server(&["--agent", &agent.addr, "--report-interval-ms", "100"]);
    hello_client(&server.addr, &["--calls", "300", "--fail-every", "20"]);
    hello_client(&server.addr, &["--calls", "20", "--relay"]);
    let admin = server.admin.clone().unwrap();
    let agent_admin = agent.admin.clone().unwrap();
    // The agent has the report of these calls.
    eventually(Duration::from_secs(20), || {
        let dom = get(&agent_admin, "/");
        dom.contains(r#"data-method="hello.Greeter.SayHello" data-side="server" data-calls="320""#)
            .then_some(())
    });

    let out_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for (name, url, calls_attr) in [
        (
            "dashboard-service",
            format!("http://{admin}/"),
            r#"data-method="hello.Greeter.SayHello" data-side="server" data-calls="320""#,
        ),
        (
            "dashboard-agent",
            format!("http://{agent_admin}/"),
            r#"data-method="all services" data-side="all" data-calls="340""#,
        ),
    ] {
        let dom = String::from_utf8(headless(&browser, &["--dump-dom"], &url).stdout).unwrap();
        assert!(
            dom.contains(calls_attr),
            "{name}: no {calls_attr} in\n{dom}"
        );
        let charts = dom.matches(r#"<svg class="chart""#).count();
        assert!(charts >= 5, "{name}: {charts} charts");
        // The calls chart of SayHello counts the 320 calls and draws them as bars.
        let say = dom
            .split(r#"<section class="panel""#)
            .skip(1)
            .find(|p| p.contains(r#"data-method="hello.Greeter.SayHello" data-side="server""#))
            .unwrap_or_else(|| panic!("{name}: no SayHello panel"));
        assert!(
            say.contains(r#"data-series="calls" data-total="320""#),
            "{say}"
        );
        assert!(
            say.contains(r#"data-series="error_rate" data-total="15""#),
            "{say}"
        );
        assert!(say.contains("<rect"), "{name}: no bars");
        assert!(say.contains("<polyline"), "{name}: no lines");

        let shot = out_dir.join(format!("{name}.png"));
        headless(
            &browser,
            &[
                &format!("--screenshot={}", shot.display()),
                "--window-size=1400,1100",
            ],
            &url,
        );
        let png = std::fs::read(&shot).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{name}: screenshot"
        );
        eprintln!("screenshot: {}", shot.display());
    }
}

/// In this test process: a call its caller drops is counted `cancelled` on both sides.
#[test]
fn a_dropped_call_counts_as_cancelled_on_both_sides() {
    use svrkit_examples::hello::{GreeterClient, GreeterServer, HelloReq};
    use svrkit_examples::hello_service::Hello;
    use svrkit_runtime::metrics;

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = svrkit_runtime::Server::builder()
            .add_service(GreeterServer::new(Hello::default()))
            .build();
        let client = GreeterClient::new(server.local_channel());
        let slow = HelloReq {
            name: "slow".into(),
            delay_ms: 5_000,
            ..HelloReq::default()
        };
        let gave_up = tokio::time::timeout(Duration::from_millis(50), client.say_hello(&slow));
        assert!(gave_up.await.is_err());
        let say = metrics::services()
            .into_iter()
            .find(|s| s.descriptor.name == "hello.Greeter")
            .unwrap()
            .method(1)
            .unwrap();
        let cancelled = 1; // the slot of `cancelled`
        let client_side = say.client_totals();
        assert_eq!(client_side.requests, 1);
        assert_eq!(client_side.responses[cancelled], 1);
        assert_eq!(client_side.latency.count(), 1);
        // The server sees the cancel and ends the handler, counting it too.
        let mut waited = 0;
        while say.server_totals().responses[cancelled] == 0 {
            assert!(waited < 200, "{:?}", say.server_totals());
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        let server_side = say.server_totals();
        assert_eq!((server_side.requests, server_side.in_flight), (1, 0));
    });
}

/// Idle connections cannot keep the admin endpoint (and its health probe) away for long:
/// over the limit they are closed at once, and under it each is closed when its headers do
/// not come within the header timeout.
#[test]
fn idle_connections_do_not_shut_out_the_health_probe() {
    let server = hello_server(&[]);
    let admin = server.admin.clone().unwrap();
    let idle: Vec<std::net::TcpStream> = (0..300)
        .filter_map(|_| std::net::TcpStream::connect(&admin).ok())
        .collect();
    assert!(idle.len() >= 256);
    let healthy = eventually(Duration::from_secs(8), || {
        ureq::get(&format!("http://{admin}/healthz"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
    });
    assert_eq!(healthy, "ok\n");
    // Meanwhile the service itself was never affected.
    hello_client(&server.addr, &["--calls", "10"]);
    drop(idle);
}
