//! What the backend's tests share: a throwaway data directory, a backend started in this
//! process with cheap password hashing, and a chat client over the network.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use svrkit_im::backend::{Backend, Role};
use svrkit_im::im::gateway::{
    Credentials, GatewaySvrClient, GroupAddReq, GroupCreateReq, GroupResp, GroupSendReq,
    GroupSendResp, SendReq, SendResp, SyncReq, SyncResp,
};
use svrkit_im::im::msg::Msg;
use svrkit_runtime::{CallOptions, Channel, ChannelOptions, Config, Status};

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("svrkit-im-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A configuration for tests: any free port, the data in `data`, argon2 at its cheapest
/// (the tests check what the services do, not how hard a hash is to crack), and the
/// embedded store moving every append from its log into the inbox table at once, so that
/// reads cross both tiers.
pub fn config(data: &std::path::Path, account: &str, extra: &str) -> Config {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[app]
data = "{}"

[app.account]
argon2_memory_kib = 64
argon2_iterations = 1
{account}

[app.store]
move_at = 1
move_after_ms = 1
move_chunk = 3
{extra}
"#,
        data.display()
    );
    Config::parse(&text).expect("test configuration")
}

/// The store a test's backend runs on.
pub enum Engine {
    /// The embedded store, in the test's data directory.
    Redb,
    /// A PostgreSQL server of the test's own (stopped at the end) and its database.
    Postgres(svrkit_tests::postgres::Postgres, String),
}

impl Engine {
    /// A fresh PostgreSQL server with an empty database; `None` (the test skips, saying
    /// so) when PostgreSQL is not installed.
    pub async fn postgres() -> Option<Engine> {
        let server = svrkit_tests::postgres::Postgres::start().await?;
        let url = server.database("im").await;
        Some(Engine::Postgres(server, url))
    }

    /// The `[app.store]` keys selecting it.
    pub fn store_keys(&self) -> String {
        match self {
            Engine::Redb => String::new(),
            Engine::Postgres(_, url) => format!("kind = \"postgres\"\nurl = \"{url}\"\n"),
        }
    }
}

/// Each named test function (taking an [`Engine`]) as two tests: `redb::<name>` and
/// `postgres::<name>`.
#[macro_export]
macro_rules! on_both_engines {
    ($($case:ident),* $(,)?) => {
        mod redb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::support::Engine::Redb).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(engine) = super::support::Engine::postgres().await {
                        super::$case(engine).await;
                    }
                }
            )*
        }
    };
}

/// Every service in this process, on a free port, on the embedded store.
pub async fn start(data: &TempDir, account: &str) -> Backend {
    start_on(&Engine::Redb, data, account).await
}

/// Every service in this process, on a free port, storing on `engine`.
pub async fn start_on(engine: &Engine, data: &TempDir, account: &str) -> Backend {
    Backend::start(&Role::ALL, &config(&data.0, account, &engine.store_keys()))
        .await
        .expect("backend starts")
}

/// A gateway client at `addr`.
pub fn client(addr: impl ToString) -> GatewaySvrClient {
    let options = ChannelOptions {
        caller: "im-test".into(),
        ..ChannelOptions::default()
    };
    GatewaySvrClient::new(Channel::lazy([addr.to_string()], options))
}

/// A logged-in user.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub uid: u64,
    pub token: svrkit_runtime::FastStr,
}

pub async fn user(client: &GatewaySvrClient, name: &str) -> User {
    let credentials = Credentials {
        name: svrkit_runtime::FastStr::new(name),
        password: format!("{name}-password").into(),
        ..Credentials::default()
    };
    client.register(&credentials).await.expect("register");
    let login = client.login(&credentials).await.expect("login");
    User {
        name: name.to_owned(),
        uid: login.uid,
        token: login.token,
    }
}

pub async fn send(
    client: &GatewaySvrClient,
    from: &User,
    to: &str,
    text: &str,
    id: &str,
) -> Result<SendResp, Status> {
    let request = SendReq {
        token: from.token.clone(),
        to: svrkit_runtime::FastStr::new(to),
        client_msg_id: svrkit_runtime::FastStr::new(id),
        text: svrkit_runtime::FastStr::new(text),
        ..SendReq::default()
    };
    client.send(&request).await
}

pub async fn sync(
    client: &GatewaySvrClient,
    user: &User,
    key: u64,
    wait: Duration,
) -> Result<SyncResp, Status> {
    let request = SyncReq {
        token: user.token.clone(),
        sync_key: key,
        limit: 7,
        wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        ..SyncReq::default()
    };
    let options = CallOptions {
        timeout: Some(wait + Duration::from_secs(5)),
        ..CallOptions::default()
    };
    client.sync_with(&request, &options).await
}

/// Every message after `key`, syncing page by page (the limit is small on purpose).
pub async fn sync_all(client: &GatewaySvrClient, user: &User, key: u64) -> Vec<Msg> {
    let mut msgs = Vec::new();
    let mut key = key;
    loop {
        let resp = sync(client, user, key, Duration::ZERO).await.expect("sync");
        msgs.extend(resp.msgs);
        assert!(resp.sync_key >= key, "the sync key went back");
        key = resp.sync_key;
        if !resp.has_more {
            return msgs;
        }
    }
}

pub async fn group_create(
    client: &GatewaySvrClient,
    owner: &User,
    name: &str,
) -> Result<GroupResp, Status> {
    let request = GroupCreateReq {
        token: owner.token.clone(),
        name: svrkit_runtime::FastStr::new(name),
        ..GroupCreateReq::default()
    };
    client.group_create(&request).await
}

pub async fn group_add(
    client: &GatewaySvrClient,
    by: &User,
    group: u64,
    names: &[&str],
) -> Result<GroupResp, Status> {
    let request = GroupAddReq {
        token: by.token.clone(),
        group_id: group,
        names: names.iter().map(svrkit_runtime::FastStr::new).collect(),
        ..GroupAddReq::default()
    };
    client.group_add(&request).await
}

pub async fn group_send(
    client: &GatewaySvrClient,
    from: &User,
    group: u64,
    text: &str,
    id: &str,
) -> Result<GroupSendResp, Status> {
    let request = GroupSendReq {
        token: from.token.clone(),
        group_id: group,
        client_msg_id: svrkit_runtime::FastStr::new(id),
        text: svrkit_runtime::FastStr::new(text),
        ..GroupSendReq::default()
    };
    client.group_send(&request).await
}

/// Makes `a` and `b` contacts: `a` asks, `b` accepts.
pub async fn befriend(client: &GatewaySvrClient, a: &User, b: &User) {
    use svrkit_im::im::gateway::ContactReq;
    let ask = ContactReq {
        token: a.token.clone(),
        name: b.name.clone().into(),
        ..ContactReq::default()
    };
    client.contact_request(&ask).await.expect("request");
    let accept = ContactReq {
        token: b.token.clone(),
        name: a.name.clone().into(),
        yes: true,
        ..ContactReq::default()
    };
    client.contact_answer(&accept).await.expect("accept");
}
