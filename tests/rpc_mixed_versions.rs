//! A client built from an older IDL and a server built from a newer one (and the reverse)
//! work together; an old server relays a new client's fields back unchanged.

use std::collections::BTreeMap;

use svrkit_runtime::{Channel, Context, Server, Status};
use svrkit_tests::svrkit::test::{evolution_v1 as v1, evolution_v2 as v2};

struct V1Echo;
impl v1::ProfileSvr for V1Echo {
    async fn echo(&self, _ctx: Context, request: v1::Profile) -> Result<v1::Profile, Status> {
        Ok(request)
    }
}

struct V2Fill;
impl v2::ProfileSvr for V2Fill {
    async fn echo(&self, _ctx: Context, mut request: v2::Profile) -> Result<v2::Profile, Status> {
        request.level = 42;
        request.avatar.url = "https://example.invalid/a.png".into();
        Ok(request)
    }

    async fn rename(&self, _ctx: Context, request: v2::Profile) -> Result<v2::Profile, Status> {
        Ok(request)
    }

    async fn touch(&self, _ctx: Context, _request: v2::Profile) -> Result<(), Status> {
        Ok(())
    }
}

async fn serve(server: Server) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { server.serve(listener).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_client_talks_to_a_new_server() {
    let addr = serve(
        Server::builder()
            .add_service(v2::ProfileSvrServer::new(V2Fill))
            .build(),
    )
    .await;
    let client = v1::ProfileSvrClient::new(Channel::lazy([addr], Default::default()));
    let sent = v1::Profile {
        uin: 7,
        name: "old".into(),
        kind: v1::Kind::TEXT,
        ..Default::default()
    };
    let got = client.echo(&sent).await.unwrap();
    assert_eq!(
        (got.uin, got.name.as_str(), got.kind),
        (7, "old", v1::Kind::TEXT)
    );
    // The new fields the server set are kept, unknown, by the old client.
    assert_eq!(
        got.unknown_fields.iter().map(|f| f.id).collect::<Vec<_>>(),
        [5, 8]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_talks_to_an_old_server_which_relays_new_fields() {
    let addr = serve(
        Server::builder()
            .add_service(v1::ProfileSvrServer::new(V1Echo))
            .build(),
    )
    .await;
    let client = v2::ProfileSvrClient::new(Channel::lazy([addr], Default::default()));
    let sent = v2::Profile {
        uin: 9,
        name: "new".into(),
        kind: v2::Kind::VIDEO,
        level: -3,
        score: 2.5,
        friends: vec![1, 2, 3],
        attrs: BTreeMap::from([("lang".into(), "zh".into())]),
        avatar: v2::Avatar {
            url: "u".into(),
            size: 64,
            ..Default::default()
        },
        ..Default::default()
    };
    let got = client.echo(&sent).await.unwrap();
    assert_eq!(got, sent, "the old server passed every new field through");
}

/// During a rolling upgrade a client built from v2 calls methods that a server still on v1
/// does not host. The unary one is answered UNIMPLEMENTED by the server, which counts it; the
/// oneway one, which the server could only drop, is refused by the client with UNIMPLEMENTED
/// (the server listed its methods when the connection opened) instead of vanishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_an_old_server_does_not_host_fail_at_the_caller_oneway_included() {
    use svrkit_runtime::Code;
    use svrkit_runtime::metrics::{Unknown, process};
    let old = serve(
        Server::builder()
            .add_service(v1::ProfileSvrServer::new(V1Echo))
            .build(),
    )
    .await;
    let new = serve(
        Server::builder()
            .add_service(v2::ProfileSvrServer::new(V2Fill))
            .build(),
    )
    .await;
    let client = v2::ProfileSvrClient::new(Channel::lazy([old], Default::default()));
    let sent = v2::Profile {
        uin: 9,
        ..Default::default()
    };
    let unknown_methods = process().unknown(Unknown::Method);

    let err = client.touch(&sent).await.unwrap_err();
    assert_eq!(err.code(), Code::UNIMPLEMENTED, "{err}");
    assert!(
        err.message()
            .contains("does not host method 3 of service 9200"),
        "{err}"
    );
    let err = client.rename(&sent).await.unwrap_err();
    assert_eq!(err.code(), Code::UNIMPLEMENTED, "{err}");
    assert_eq!(
        err.message(),
        "test.evolution.ProfileSvr has no method with id 2"
    );
    // Only the unary call reached the old server.
    assert_eq!(process().unknown(Unknown::Method), unknown_methods + 1);
    // What the old server hosts still works.
    client.echo(&sent).await.unwrap();
    // The caller counts both as failed calls, not as `ok`.
    let text = svrkit_runtime::monitor::exposition::encode();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("svrkit_server_unknown_total")
                || (l.contains("ProfileSvr")
                    && l.contains("status=\"unimplemented\"")
                    && !l.ends_with(" 0"))
        })
        .collect();
    println!("{}", series.join("\n"));
    for method in ["Touch", "Rename"] {
        assert!(
            series.iter().any(|l| l.starts_with("svrkit_client_")
                && l.contains(&format!("method=\"{method}\""))
                && l.ends_with(" 1")),
            "{method}: {series:#?}"
        );
    }

    // A server that hosts them takes both.
    let client = v2::ProfileSvrClient::new(Channel::lazy([new], Default::default()));
    client.touch(&sent).await.unwrap();
    client.rename(&sent).await.unwrap();
}
