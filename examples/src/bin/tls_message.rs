//! A message service over TLS: the server presents a certificate, the client trusts it, and
//! calls look the same as over plain TCP.
//!
//! ```text
//! cargo run -p svrkit-examples --bin tls_message
//! cargo run -p svrkit-examples --bin tls_message -- cert.pem key.pem
//! ```
//!
//! With no arguments it makes a self-signed certificate for `localhost` (with rcgen), as a
//! test would; give it a PEM certificate chain and key to use your own, for `localhost`.
//! (`openssl req -x509` makes a CA certificate unless told `-addext
//! basicConstraints=critical,CA:FALSE`, and rustls refuses a CA certificate as a server's.)

use std::sync::atomic::{AtomicU64, Ordering};

use svrkit_examples::im::message::{
    AckReq, FetchReq, FetchResp, Message, MessageSvr, MessageSvrClient, MessageSvrServer, SendReq,
    SendResp,
};
use svrkit_runtime::tls::{self, ClientTls};
use svrkit_runtime::{Channel, ChannelOptions, Context, Server, Status};

/// Keeps nothing: hands out sequence numbers, for the example's sake.
#[derive(Default)]
struct Messages {
    next_seq: AtomicU64,
}

impl MessageSvr for Messages {
    async fn send(&self, ctx: Context, request: SendReq) -> Result<SendResp, Status> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed) + 1;
        println!(
            "server: {} -> {} from {:?}: {:?}",
            request.msg.from_user,
            request.to_user,
            ctx.peer,
            String::from_utf8_lossy(&request.msg.content)
        );
        Ok(SendResp {
            seq,
            ..Default::default()
        })
    }

    async fn fetch(&self, _ctx: Context, _request: FetchReq) -> Result<FetchResp, Status> {
        Ok(FetchResp::default())
    }

    async fn ack(&self, _ctx: Context, _request: AckReq) -> Result<(), Status> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cert_pem, key_pem) = match args.as_slice() {
        [cert, key] => (read(cert)?, read(key)?),
        [] => {
            let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
            (
                made.cert.pem().into_bytes(),
                made.signing_key.serialize_pem().into_bytes(),
            )
        }
        _ => return Err("usage: tls_message [CERT.pem KEY.pem]".into()),
    };

    let server = Server::builder()
        .add_service(MessageSvrServer::new(Messages::default()))
        .tls(tls::server_config_from_pem(&cert_pem, &key_pem)?)
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    println!("serving over TLS on {addr}");

    // The certificate names `localhost`; the endpoint is an address, so say which name to
    // check.
    let client_tls =
        ClientTls::new(tls::client_config_from_pem(&cert_pem)?).with_server_name("localhost")?;
    let options = ChannelOptions {
        tls: Some(client_tls),
        ..Default::default()
    };
    let client = MessageSvrClient::new(Channel::lazy([addr.clone()], options));
    for text in ["hello", "over", "tls"] {
        let response = client
            .send(&SendReq {
                to_user: "bob".into(),
                msg: Message {
                    from_user: "alice".into(),
                    content: text.as_bytes().to_vec().into(),
                    ..Default::default()
                },
                ..Default::default()
            })
            .await?;
        println!("client: sent {text:?}, seq {}", response.seq);
    }

    // A client that does not speak TLS is not served.
    let plain = MessageSvrClient::new(Channel::lazy([addr], ChannelOptions::default()));
    match plain.send(&SendReq::default()).await {
        Ok(_) => return Err("a plain-text client was served".into()),
        Err(status) => println!("plain-text client: {status}"),
    }
    server.shutdown().await;
    Ok(())
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}
