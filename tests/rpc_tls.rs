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

/// Records whether each request's peer was trusted.
#[derive(Default)]
struct TrustSeen(std::sync::Mutex<Vec<bool>>);

impl svrkit_runtime::server::Hook for TrustSeen {
    fn on_request(
        &self,
        _: &'static svrkit_runtime::service::MethodDescriptor,
        ctx: &svrkit_runtime::Context,
    ) -> Result<(), svrkit_runtime::Status> {
        self.0.lock().unwrap().push(ctx.trusted);
        Ok(())
    }
}

/// A certificate authority, and client certificates it (or nobody) issued.
struct Authority {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Authority {
    fn new() -> Authority {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        Authority { issuer }
    }

    /// A client certificate for `name` (PEM) and its key (PEM).
    fn client(&self, name: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Mutual TLS from the configuration files of both sides: the server trusts no address, and
/// the client certificate valid for `orders.internal` (issued by the client authority)
/// makes its peer trusted; one for another name, none at all, or one from another authority
/// do not (the last is refused in the handshake).
#[tokio::test]
async fn a_client_certificate_for_a_trusted_name_makes_its_peer_trusted() {
    let dir = std::env::temp_dir().join(format!("svrkit-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let server_cert = rcgen::generate_simple_self_signed(vec!["svc.internal".into()]).unwrap();
    let cert = write("server.pem", &server_cert.cert.pem());
    let key = write("server.key", &server_cert.signing_key.serialize_pem());
    let clients = Authority::new();
    let client_ca = write("clients.pem", &clients.issuer.pem());

    let server_side = svrkit_runtime::Config::parse(&format!(
        "[server]\ntls_cert = {cert:?}\ntls_key = {key:?}\ntls_client_ca = {client_ca:?}\n\
         [trust]\npeers = []\nidentities = [\"orders.internal\"]\n"
    ))
    .unwrap();
    let config = server_side.server_tls().unwrap().expect("TLS configured");
    let seen = std::sync::Arc::new(TrustSeen::default());
    let trust = server_side.trust();
    let running = echo::start_built(server_side.limits(), None, {
        let seen = seen.clone();
        move |b| b.tls(config).trust(trust).hook(seen)
    })
    .await;

    let client_config = |identity: Option<(String, String)>| {
        let mut text = format!(
            "[client]\ntls_ca = {cert:?}\ntls_server_name = \"svc.internal\"\n\
             [services.\"test.rpc.EchoSvr\"]\nendpoints = [\"{}\"]\n",
            running.addr
        );
        if let Some((cert_pem, key_pem)) = identity {
            let n = text.len();
            let (c, k) = (
                write(&format!("c{n}.pem"), &cert_pem),
                write(&format!("c{n}.key"), &key_pem),
            );
            text = text.replace(
                "[services.",
                &format!("tls_cert = {c:?}\ntls_key = {k:?}\n[services."),
            );
        }
        let config = svrkit_runtime::Config::parse(&text).unwrap();
        EchoSvrClient::new(config.channel("test.rpc.EchoSvr").unwrap())
    };
    let calls = [
        ("orders.internal", Some(clients.client("orders.internal"))),
        ("another name", Some(clients.client("payments.internal"))),
        ("no certificate", None),
    ];
    for (case, identity) in calls {
        let client = client_config(identity);
        client.echo(&EchoReq::default()).await.unwrap();
        let trusted = *seen.0.lock().unwrap().last().unwrap();
        assert_eq!(trusted, case == "orders.internal", "{case}");
    }

    // The right name from an authority the server does not know: no service at all.
    let forged = client_config(Some(Authority::new().client("orders.internal")));
    let failed = forged.echo(&EchoReq::default()).await.unwrap_err();
    assert_eq!(failed.code(), Code::UNAVAILABLE, "{failed}");
    assert_eq!(seen.0.lock().unwrap().len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A broken file is named by the key that gave it.
#[test]
fn tls_errors_name_the_key_of_the_broken_file() {
    let dir = std::env::temp_dir().join(format!("svrkit-tls-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["svc.internal".into()]).unwrap();
    let (cert, key, junk) = (dir.join("c.pem"), dir.join("k.pem"), dir.join("junk.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    std::fs::write(&junk, "not pem").unwrap();
    let server = svrkit_runtime::Config::parse(&format!(
        "[server]\ntls_cert = {cert:?}\ntls_key = {key:?}\ntls_client_ca = {junk:?}\n"
    ))
    .unwrap();
    let e = server.server_tls().unwrap_err().to_string();
    assert!(e.contains("server.tls_client_ca"), "{e}");
    let client = svrkit_runtime::Config::parse(&format!(
        "[client]\ntls_ca = {junk:?}\ntls_cert = {cert:?}\ntls_key = {key:?}\n\
         [services.\"test.rpc.EchoSvr\"]\nendpoints = [\"127.0.0.1:1\"]\n"
    ))
    .unwrap();
    let e = client.channel("test.rpc.EchoSvr").unwrap_err().to_string();
    assert!(e.contains("client.tls_ca"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gRPC client over TLS (ALPN `h2`, as every gRPC client asks) is served on the same TLS
/// port as svrkit's clients.
#[tokio::test]
async fn grpc_over_tls_is_served_on_the_same_port() {
    use svrkit_runtime::codec::Message;
    use svrkit_tests::svrkit::test::rpc::EchoResp;

    let (cert, key) = certificate();
    let config = tls::with_grpc(tls::server_config(vec![cert.clone()], key).unwrap());
    let running = echo::start_built(Limits::default(), None, |b| b.tls(config)).await;
    let mut config = (*tls::client_config([cert.clone()]).unwrap()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&running.addr).await.unwrap();
    let name = tls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut client, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);

    let request = EchoReq {
        text: "grpc over tls".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut body = vec![0];
    body.extend_from_slice(&(request.len() as u32).to_be_bytes());
    body.extend_from_slice(&request);
    let head = http::Request::post(format!("https://{}/test.rpc.EchoSvr/Echo", running.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(head, false).unwrap();
    send.send_data(body.into(), true).unwrap();
    let (parts, mut answer) = response.await.unwrap().into_parts();
    assert_eq!(parts.status, 200);
    let mut got = Vec::new();
    while let Some(chunk) = answer.data().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    let trailers = answer.trailers().await.unwrap().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    let echoed = EchoResp::decode_bytes(&bytes::Bytes::from(got).slice(5..)).unwrap();
    assert_eq!(echoed.text, "grpc over tls");

    // And a svrkit client on the same port, at the same time.
    let svrkit = tls_client(&running.addr, trusting(&cert));
    let response = svrkit.echo(&EchoReq::default()).await;
    assert!(response.is_ok(), "{response:?}");
}
