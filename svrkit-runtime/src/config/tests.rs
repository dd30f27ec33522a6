//! Configuration files, good and bad.
use std::net::SocketAddr;
use std::time::Duration;

use super::*;

#[test]
fn an_empty_file_works_on_localhost() {
    let c = Config::parse("").unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:7000");
    assert_eq!(c.limits().max_frame, crate::frame::DEFAULT_MAX_FRAME);
}

#[test]
fn a_full_file_is_read() {
    let c = Config::parse(
        r#"
        [server]
        listen = "0.0.0.0:9000"
        [limits]
        max_in_flight = 10
        write_timeout_ms = 5
        [client]
        connections_per_endpoint = 4
        [services."im.message.MessageSvr"]
        endpoints = ["10.0.0.1:7000", "svc.local:7000"]
        "#,
    )
    .unwrap();
    assert_eq!(c.server.listen, "0.0.0.0:9000");
    assert_eq!(c.limits().max_in_flight, 10);
    assert_eq!(c.limits().write_timeout, Duration::from_millis(5));
    assert!(c.channel("im.message.MessageSvr").is_ok());
}

fn error(text: &str) -> String {
    Config::parse(text).unwrap_err().to_string()
}

#[test]
fn trust_is_internal_by_default_and_read_from_its_section() {
    let peer = |ip: &str| Some(SocketAddr::new(ip.parse().unwrap(), 1));
    let default = Config::parse("").unwrap().trust();
    assert!(default.trusts(peer("10.0.0.1")) && !default.trusts(peer("8.8.8.8")));
    let c = Config::parse("[trust]\npeers = [\"203.0.113.0/24\"]\n[limits]\nmax_connections_per_peer = 3\nfirst_request_timeout_ms = 50\n").unwrap();
    assert!(c.trust().trusts(peer("203.0.113.9")) && !c.trust().trusts(peer("10.0.0.1")));
    assert_eq!(c.limits().max_connections_per_peer, 3);
    assert_eq!(c.limits().first_request_timeout, Duration::from_millis(50));
    assert_eq!(
        error("[trust]\npeers = [\"intranet\"]\n"),
        "trust.peers: `intranet` is not an address range: expected CIDR like `10.0.0.0/8`, an address, `loopback`, `private` or `any`"
    );
}

#[test]
fn tls_keys_go_together() {
    let e = error("[server]\ntls_cert = \"a.pem\"\n");
    assert!(e.contains("server.tls_key: missing"), "{e}");
    let e = error("[client]\ntls_server_name = \"x\"\n");
    assert!(e.contains("client.tls_ca: missing"), "{e}");
    let e = error("[client]\ntls_cert = \"a.pem\"\n");
    assert!(e.contains("client.tls_key: missing"), "{e}");
    let e = error("[server]\ntls_client_ca = \"ca.pem\"\n");
    assert!(e.contains("server.tls_cert: missing"), "{e}");
    let e = error("[trust]\nidentities = [\"orders.internal\"]\n");
    assert!(e.contains("server.tls_client_ca: missing"), "{e}");
}

#[cfg(not(feature = "tls"))]
#[test]
fn tls_keys_need_the_feature() {
    let e = error("[client]\ntls_ca = \"ca.pem\"\n");
    assert!(e.contains("enable the `tls` feature"), "{e}");
}

#[cfg(feature = "tls")]
#[test]
fn unreadable_tls_files_name_the_key() {
    let c =
        Config::parse("[server]\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"k\"\n").unwrap();
    let e = c.server_tls().unwrap_err().to_string();
    assert!(
        e.starts_with("server.tls_cert: cannot read /nonexistent/c.pem"),
        "{e}"
    );
}

#[test]
fn mistakes_name_the_key() {
    let e = error("[limits]\nmax_conections = 5\n");
    assert!(
        e.contains("unknown field `max_conections`") && e.contains("line 2"),
        "{e}"
    );
    let e = error("[limits]\nmax_in_flight = \"lots\"\n");
    assert!(e.contains("max_in_flight") || e.contains("line 2"), "{e}");
    assert_eq!(
        error("[server]\nlisten = \"localhost\"\n")
            .split(':')
            .next(),
        Some("server.listen")
    );
    assert_eq!(
        error("[limits]\nmax_in_flight = 0\n"),
        "limits.max_in_flight: must be at least 1"
    );
    assert_eq!(
        error("[services.\"a.B\"]\nendpoints = [\"nohost\"]\n"),
        "services.\"a.B\".endpoints: `nohost` is not host:port"
    );
    let missing = Config::parse("")
        .unwrap()
        .channel("a.B")
        .unwrap_err()
        .to_string();
    assert_eq!(
        missing,
        "services.\"a.B\".endpoints: missing: where does this service run?"
    );
}

#[test]
fn policies_are_configured_and_checked() {
    let c = Config::parse(
        r#"
        [overload]
        queue_wait_ms = 50
        window_requests = 500
        [client]
        balancer = "ring"
        retry_budget_ratio = 0.1
        throttle = 0
        [services."a.B"]
        endpoints = ["10.0.0.1:7000"]
        weak_timeout_ms = 30
        groups.canary = ["10.0.0.9:7000"]
        routes = [{ group = "canary", dye = "gray", user_keys = [7] }]
        "#,
    )
    .unwrap();
    assert_eq!(c.overload.queue_wait, Duration::from_millis(50));
    assert_eq!(c.overload.window_requests, 500);
    assert!(c.overload.enabled);
    assert_eq!(c.client.balancer, BalancerKind::Ring);
    let channel = c.channel("a.B").unwrap();
    assert_eq!(channel.group("canary").unwrap().snapshot().len(), 1);
    assert_eq!(
        error("[client]\nbalancer = \"random\"\n")
            .lines()
            .next()
            .map(|l| l.contains("line 2")),
        Some(true)
    );
    assert_eq!(
        error("[overload]\nshed_step = 2.0\n"),
        "overload.shed_step: must be above 0 and at most 1"
    );
    assert_eq!(
        error("[client]\nthrottle = 0.5\n"),
        "client.throttle: must be 0 (off) or a number of at least 1"
    );
    assert_eq!(
        error("[client]\nthrottle = inf\n"),
        "client.throttle: must be 0 (off) or a number of at least 1"
    );
    assert_eq!(
        error("[client]\nretry_min_per_second = -1.0\n"),
        "client.retry_min_per_second: must be a number of at least 0"
    );
    assert_eq!(
        error("[client]\nretry_budget_ratio = inf\n"),
        "client.retry_budget_ratio: must be a number of at least 0"
    );
    assert_eq!(
        error("[client]\nretry_backoff_ms = 1000\nretry_max_backoff_ms = 1\n"),
        "client.retry_max_backoff_ms: 1 is below retry_backoff_ms (1000)"
    );
    assert_eq!(
        error("[overload]\nwindow_ms = 0\n"),
        "overload.window_ms: must be at least 1"
    );
    assert_eq!(
        error("[services.\"a.B\"]\nendpoints = [\"h:1\"]\ngroups.c = []\n"),
        "services.\"a.B\".groups.c: lists no endpoint"
    );
    assert_eq!(
        error("[services.\"a.B\"]\nendpoints = [\"h:1\"]\nroutes = [{ group = \"blue\" }]\n"),
        "services.\"a.B\".routes: group `blue` is not in groups"
    );
    assert_eq!(
        error("[services.\"a.B\"]\nendpoints = [\"h:1\"]\ngroups.c = [\"nohost\"]\n"),
        "services.\"a.B\".groups.c: `nohost` is not host:port"
    );
}

#[test]
fn a_missing_file_says_which() {
    let e = Config::from_file("/no/such/svrkit.toml")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cannot read /no/such/svrkit.toml: "), "{e}");
}

#[test]
fn errors_say_their_kind_and_keep_their_cause() {
    use std::error::Error as _;

    let missing = Config::from_file("/no/such/svrkit.toml").unwrap_err();
    assert_eq!(missing.kind(), ConfigErrorKind::Read);
    let io = missing.source().unwrap().downcast_ref::<std::io::Error>();
    assert_eq!(io.unwrap().kind(), std::io::ErrorKind::NotFound);

    let syntax = Config::parse("[server\n").unwrap_err();
    assert_eq!(syntax.kind(), ConfigErrorKind::Syntax);
    assert!(syntax.source().unwrap().is::<toml::de::Error>());

    let value = Config::parse("[limits]\nmax_connections = 0\n").unwrap_err();
    assert_eq!(value.kind(), ConfigErrorKind::Value);
    assert_eq!(
        value.to_string(),
        "limits.max_connections: must be at least 1"
    );
    assert!(value.source().is_none());

    let routes = Config::parse(
        r#"
        [services."a.B"]
        endpoints = ["127.0.0.1:1"]
        routes = [{ group = "canary", fraction = 0.5 }]
        "#,
    )
    .unwrap_err();
    assert_eq!(routes.kind(), ConfigErrorKind::Value);
}

#[tokio::test]
#[cfg(feature = "admin")]
async fn an_admin_address_taken_is_a_start_error_with_its_io_error() {
    use std::error::Error as _;

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = Config::parse(&format!("[server]\nadmin = \"{addr}\"\n")).unwrap();
    let e = config.start_monitoring("test").await.unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::Start);
    assert!(e.source().unwrap().is::<std::io::Error>(), "{e}");
}
