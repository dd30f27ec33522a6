//! TLS on both sides: calls work over it, plain-text and untrusted peers are turned away with
//! a clear error, and a handshake cannot hold a connection open past the read timeout.
//! Certificates are made at test time with rcgen.

use std::time::Duration;

use svrkit_runtime::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use svrkit_runtime::tls::{self, ClientTls};
use svrkit_runtime::{Channel, ChannelOptions, Code, Limits};
use svrkit_tests::echo;
use svrkit_tests::raw::{self, RawConn};
use svrkit_tests::svrkit::test::rpc::{EchoReq, EchoSvrClient};

/// A self-signed certificate for `localhost` and 127.0.0.1, and its key.
fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("generate a certificate");
    let key = PrivatePkcs8KeyDer::from(made.signing_key.serialize_der());
    (made.cert.der().clone(), PrivateKeyDer::Pkcs8(key))
}

async fn tls_server(limits: Limits) -> (echo::Running, CertificateDer<'static>) {
    let (cert, key) = certificate();
    let config = tls::server_config(vec![cert.clone()], key).unwrap();
    let running = echo::start_built(limits, None, |b| b.tls(config)).await;
    (running, cert)
}

fn tls_client(addr: &str, tls: ClientTls) -> EchoSvrClient {
    let options = ChannelOptions {
        connections_per_endpoint: 1,
        tls: Some(tls),
        ..Default::default()
    };
    EchoSvrClient::new(Channel::lazy([addr.to_owned()], options))
}

fn trusting(cert: &CertificateDer<'static>) -> ClientTls {
    ClientTls::new(tls::client_config([cert.clone()]).unwrap())
}

#[tokio::test]
async fn calls_work_over_tls() {
    let (running, cert) = tls_server(Limits::default()).await;
    // The server name comes from the address (an IP here), or is given.
    let by_address = tls_client(&running.addr, trusting(&cert));
    let by_name = tls_client(
        &running.addr,
        trusting(&cert).with_server_name("localhost").unwrap(),
    );
    for client in [&by_address, &by_name] {
        let response = client
            .echo(&EchoReq {
                text: "over tls".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(response.text, "over tls");
    }

    // Many calls at once on the one connection, and a body far larger than a TLS record (so
    // that frames arrive split across records and reads).
    let payload = svrkit_runtime::Bytes::from(vec![7u8; 1 << 20]);
    let calls = (0..64u64).map(|seq| {
        let client = by_address.clone();
        let payload = if seq % 16 == 0 {
            payload.clone()
        } else {
            svrkit_runtime::Bytes::new()
        };
        async move {
            // Within the method's 2 s timeout: ciphertext held back unflushed (a bug this
            // test found) was only sent when a keepalive ping came, 5 s later.
            let response = client
                .echo(&EchoReq {
                    seq,
                    payload: payload.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("seq {seq} len {}: {e}", payload.len()))
                .unwrap();
            assert_eq!(response.seq, seq);
            assert_eq!(response.payload, payload);
        }
    });
    let handles: Vec<_> = calls.map(tokio::spawn).collect();
    for handle in handles {
        handle.await.unwrap();
    }
}

#[tokio::test]
async fn plain_text_peer_gets_no_service() {
    let (running, _cert) = tls_server(Limits::default()).await;

    // A svrkit client without TLS: its call fails with a clear status instead of hanging.
    let plain = echo::client(&running.addr, 1);
    let failed = tokio::time::timeout(Duration::from_secs(5), plain.echo(&EchoReq::default()))
        .await
        .expect("the plain-text call ended")
        .unwrap_err();
    assert_eq!(failed.code(), Code::UNAVAILABLE, "{failed}");
    assert!(
        failed.message().contains("TLS"),
        "the error says why: {failed}"
    );

    // A plain-text request frame is not answered: the server closes the connection.
    let mut conn = RawConn::connect(&running.addr).await;
    conn.request(1, 1, 1000, &EchoReq::default()).await;
    assert!(raw::closed_within(&mut conn.stream, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn untrusted_certificate_is_refused_by_the_client() {
    let (running, _cert) = tls_server(Limits::default()).await;
    let (other, _) = certificate();
    let client = tls_client(&running.addr, trusting(&other));
    let failed = client.echo(&EchoReq::default()).await.unwrap_err();
    assert_eq!(failed.code(), Code::UNAVAILABLE, "{failed}");
    assert!(
        failed.message().contains("certificate"),
        "the error says why: {failed}"
    );
    assert_eq!(
        running
            .observed
            .started
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn stalled_handshake_is_closed_at_the_read_timeout() {
    let limits = Limits {
        read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (running, cert) = tls_server(limits).await;
    // Connects and never says hello.
    let mut stalled = tokio::net::TcpStream::connect(&running.addr).await.unwrap();
    let client = tls_client(&running.addr, trusting(&cert));
    // Others are served meanwhile.
    let response = client
        .echo(&EchoReq {
            text: "still here".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(response.text, "still here");
    assert!(raw::closed_within(&mut stalled, Duration::from_secs(3)).await);
}

#[test]
fn configs_from_pem_explain_bad_input() {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_pem = made.cert.pem();
    let key_pem = made.signing_key.serialize_pem();
    assert!(tls::server_config_from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).is_ok());
    assert!(tls::client_config_from_pem(cert_pem.as_bytes()).is_ok());

    let no_cert = tls::server_config_from_pem(b"not pem", key_pem.as_bytes()).unwrap_err();
    assert!(no_cert.to_string().contains("no certificate"), "{no_cert}");
    let no_key = tls::server_config_from_pem(cert_pem.as_bytes(), b"").unwrap_err();
    assert!(no_key.to_string().contains("key"), "{no_key}");
    let no_roots = tls::client_config_from_pem(b"").unwrap_err();
    assert!(
        no_roots.to_string().contains("no certificate"),
        "{no_roots}"
    );
}

#[tokio::test]
async fn tls_from_the_configuration_file() {
    let made = rcgen::generate_simple_self_signed(vec!["svc.internal".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("svrkit-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();

    let server_side = svrkit_runtime::Config::parse(&format!(
        "[server]\ntls_cert = {cert:?}\ntls_key = {key:?}\n"
    ))
    .unwrap();
    let config = server_side.server_tls().unwrap().expect("TLS configured");
    let running = echo::start_built(server_side.limits(), None, |b| b.tls(config)).await;

    // The endpoint is an address; its certificate names svc.internal.
    let client_side = svrkit_runtime::Config::parse(&format!(
        "[client]\ntls_ca = {cert:?}\ntls_server_name = \"svc.internal\"\n\
         [services.\"test.rpc.EchoSvr\"]\nendpoints = [\"{}\"]\n",
        running.addr
    ))
    .unwrap();
    let client = EchoSvrClient::new(client_side.channel("test.rpc.EchoSvr").unwrap());
    let response = client
        .echo(&EchoReq {
            text: "configured".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(response.text, "configured");
    std::fs::remove_dir_all(&dir).unwrap();
}
