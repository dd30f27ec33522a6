//! Hosts any set of the backend's services in one process.
//!
//! - The **gateway** is the only service on the public address (`server.listen`): clients
//!   cannot reach the internal services through it.
//! - The **internal** services hosted here are served on `app.internal_listen` when set
//!   (for other processes), or on `server.listen` when this process hosts no gateway.
//!   With neither, they are reached only in process.
//! - A service this process calls goes where `[services."<full name>"]` says it runs, or,
//!   without such an entry, to this process's own instance, in process through the same
//!   generated stubs (the framework's co-hosting: `ServerBuilder::local_channel`).
//!
//! So `im-server all` runs everything in one process, and the same binary with a role and a
//! configuration runs one service of a deployment spread over machines.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
#[cfg(feature = "etcd")]
use svrkit_runtime::discovery::etcd::Registration;
use svrkit_runtime::server::ServerBuilder;
use svrkit_runtime::{Channel, Config, Server};

use crate::account::{Account, AccountConfig};
use crate::gateway::{Downstream, Gateway, GatewayConfig};
use crate::group::GroupService;
use crate::home::{HomesConfig, Inboxes};
use crate::im::account::{AccountSvrClient, AccountSvrServer};
use crate::im::gateway::{GatewaySvrClient, GatewaySvrServer};
use crate::im::group::{GroupSvrClient, GroupSvrServer};
use crate::im::msg::{MsgSvrClient, MsgSvrServer};
use crate::im::seq::{SeqAllocSvrClient, SeqAllocSvrServer, SeqStoreSvrClient, SeqStoreSvrServer};
use crate::im::spam::{SpamSvrClient, SpamSvrServer};
use crate::msg::MsgConfig;
use crate::msg::MsgService;
use crate::seq::lease::Leased;
use crate::seq::route::Sequences;
use crate::seq::{SeqAlloc, SeqConfig, SeqStoreService, StoreBounds};
use crate::spam::{Spam, SpamConfig};
use crate::store::StoreConfig;

/// One service of the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Role {
    /// `im.account.AccountSvr`.
    Account,
    /// `im.seq.SeqAllocSvr`.
    SeqAlloc,
    /// `im.seq.SeqStoreSvr`.
    SeqStore,
    /// `im.msg.MsgSvr`.
    Msg,
    /// `im.spam.SpamSvr`.
    Spam,
    /// `im.group.GroupSvr`.
    Group,
    /// `im.gateway.GatewaySvr`.
    Gateway,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 7] = [
        Role::Account,
        Role::SeqAlloc,
        Role::SeqStore,
        Role::Msg,
        Role::Spam,
        Role::Group,
        Role::Gateway,
    ];

    /// The full name of the role's service.
    pub fn service(self) -> &'static str {
        match self {
            Role::Account => AccountSvrClient::DESCRIPTOR.name,
            Role::SeqAlloc => SeqAllocSvrClient::DESCRIPTOR.name,
            Role::SeqStore => SeqStoreSvrClient::DESCRIPTOR.name,
            Role::Msg => MsgSvrClient::DESCRIPTOR.name,
            Role::Spam => SpamSvrClient::DESCRIPTOR.name,
            Role::Group => GroupSvrClient::DESCRIPTOR.name,
            Role::Gateway => GatewaySvrClient::DESCRIPTOR.name,
        }
    }

    fn needs_store(self) -> bool {
        matches!(
            self,
            Role::Account | Role::SeqStore | Role::Msg | Role::Group
        )
    }
}

/// `[app]`: the backend's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImConfig {
    /// Where the embedded store keeps its file (default `./im-data`).
    pub data: PathBuf,
    /// Where internal services hosted here are served for other processes.
    pub internal_listen: Option<String>,
    /// `[app.account]`.
    pub account: AccountConfig,
    /// `[app.spam]`.
    pub spam: SpamConfig,
    /// `[app.gateway]`.
    pub gateway: GatewayConfig,
    /// `[app.msg]`.
    pub msg: MsgConfig,
    /// `[app.store]`.
    pub store: StoreConfig,
    /// `[app.seq]`.
    pub seq: SeqConfig,
    /// `[app.homes]`.
    pub homes: HomesConfig,
}

impl Default for ImConfig {
    fn default() -> ImConfig {
        ImConfig {
            data: PathBuf::from("./im-data"),
            internal_listen: None,
            account: AccountConfig::default(),
            spam: SpamConfig::default(),
            gateway: GatewayConfig::default(),
            msg: MsgConfig::default(),
            store: StoreConfig::default(),
            seq: SeqConfig::default(),
            homes: HomesConfig::default(),
        }
    }
}

/// A running set of services.
pub struct Backend {
    public: Option<(Server, SocketAddr)>,
    internal: Option<(Server, Option<SocketAddr>)>,
    /// The process's entries in etcd (`[discovery]`), drained before stopping. Without the
    /// `etcd` feature there are none: the configuration check refuses `[discovery] etcd`.
    #[cfg(feature = "etcd")]
    registrations: std::sync::Mutex<Vec<Registration>>,
    /// The sequence allocator's shards, when it holds them under a lease
    /// (`[app.seq] arbiter = "etcd"`): given back first on shutdown.
    seq_lease: Option<(Arc<Leased>, tokio::task::JoinHandle<()>)>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("addr", &self.addr())
            .field("internal_addr", &self.internal_addr())
            .finish()
    }
}

/// Channels to the services, as the configuration and the roles hosted here say.
struct Wiring<'a> {
    config: &'a Config,
    roles: &'a BTreeSet<Role>,
    local: Channel,
}

impl Wiring<'_> {
    fn channel(&self, role: Role) -> Result<Channel, String> {
        let name = role.service();
        if self.config.services.contains_key(name) {
            return self.config.channel(name).map_err(|e| e.to_string());
        }
        if self.roles.contains(&role) {
            return Ok(self.local.clone());
        }
        Err(format!(
            "services.\"{name}\".endpoints: missing: this process calls {name}, does not host \
             it, and the configuration does not say where it runs"
        ))
    }
}

impl Wiring<'_> {
    /// The way to inboxes: one message service, or one per home SET.
    fn inboxes(&self, homes: &HomesConfig) -> Result<Inboxes, String> {
        if homes.sets.is_empty() {
            return Ok(Inboxes::One(MsgSvrClient::new(self.channel(Role::Msg)?)));
        }
        let name = Role::Msg.service();
        let clients = homes
            .sets
            .iter()
            .map(|set| {
                self.config
                    .channel_in_set(name, set)
                    .map(MsgSvrClient::new)
                    .map_err(|e| format!("app.homes.sets: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Inboxes::BySet(clients))
    }
}

/// This process's place among the homes: its SET's index, when inboxes are kept per SET.
fn own_home(config: &Config, homes: &HomesConfig) -> Result<Option<usize>, String> {
    if homes.sets.is_empty() {
        return Ok(None);
    }
    let set = &config.discovery.set;
    homes
        .sets
        .iter()
        .position(|s| s == set)
        .map(Some)
        .ok_or_else(|| {
            format!(
                "discovery.set: {set:?} is not one of app.homes.sets {:?}: a message replica \
                 keeps the inboxes of one home SET",
                homes.sets
            )
        })
}

impl Backend {
    /// Starts the services of `roles` as `config` says (`[app]` is [`ImConfig`]); the
    /// servers run on tasks of the current runtime until [`shutdown`](Backend::shutdown).
    ///
    /// # Errors
    /// A configuration problem (naming its key), a store that cannot be opened, an address
    /// that cannot be bound.
    pub async fn start(roles: &[Role], config: &Config) -> Result<Backend, String> {
        // Every figure of the backend exists from startup, at zero.
        crate::figures::register();
        let app: ImConfig = config.app().map_err(|e| e.to_string())?;
        let roles: BTreeSet<Role> = roles.iter().copied().collect();
        let store = if roles.iter().any(|r| r.needs_store()) {
            Some(
                crate::store::open(&app.data, &app.store)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        let store = || store.clone().expect("opened for the roles that need it");

        let internal_builder = config.server_builder();
        let wiring = Wiring {
            config,
            roles: &roles,
            local: internal_builder.local_channel(),
        };
        let mut internal = internal_builder;
        let mut hosts_internal = false;
        let mut seq_lease = None::<Arc<Leased>>;
        let mut public = None::<ServerBuilder>;
        for &role in &roles {
            hosts_internal |= role != Role::Gateway;
            internal = match role {
                Role::Account => {
                    let account = Account::new(store(), &app.account)?;
                    internal.add_service(AccountSvrServer::new(account))
                }
                Role::SeqAlloc => {
                    let alloc = if app.seq.leased() {
                        let leased = crate::seq::leased(config, &app.seq).await?;
                        seq_lease = Some(leased.clone());
                        SeqAlloc::new(leased)
                    } else {
                        let store = SeqStoreSvrClient::new(wiring.channel(Role::SeqStore)?);
                        SeqAlloc::new(Arc::new(StoreBounds(store)))
                    };
                    internal.add_service(SeqAllocSvrServer::new(alloc))
                }
                Role::SeqStore => {
                    internal.add_service(SeqStoreSvrServer::new(SeqStoreService::new(store())))
                }
                Role::Msg => {
                    let seq = if app.seq.leased() {
                        crate::seq::routed(config, &app.seq).await?
                    } else {
                        Sequences::One(SeqAllocSvrClient::new(wiring.channel(Role::SeqAlloc)?))
                    };
                    let mut service = MsgService::new(store(), seq, &app.msg);
                    if let Some(index) = own_home(config, &app.homes)? {
                        service = service.with_home(index, app.homes.sets.len());
                    }
                    internal.add_service(MsgSvrServer::new(service))
                }
                Role::Spam => internal.add_service(SpamSvrServer::new(Spam::new(&app.spam))),
                Role::Group => {
                    let msg = wiring.inboxes(&app.homes)?;
                    internal.add_service(GroupSvrServer::new(GroupService::new(store(), msg)))
                }
                Role::Gateway => {
                    let down = Downstream {
                        account: AccountSvrClient::new(wiring.channel(Role::Account)?),
                        msg: wiring.inboxes(&app.homes)?,
                        spam: SpamSvrClient::new(wiring.channel(Role::Spam)?),
                        group: GroupSvrClient::new(wiring.channel(Role::Group)?),
                    };
                    let gateway = Gateway::new(down, &app.gateway);
                    public = Some(
                        config
                            .server_builder()
                            .add_service(GatewaySvrServer::new(gateway)),
                    );
                    internal
                }
            };
        }
        // Built even when it hosts nothing, so that the gateway's in-process channels to
        // services it does not host answer UNIMPLEMENTED rather than "not built".
        let internal = internal.build();
        let internal_addr = match (&public, &app.internal_listen) {
            (_, Some(addr)) => Some(addr.clone()),
            (None, None) if hosts_internal => Some(config.server.listen.clone()),
            _ => None,
        };
        let internal_addr = match internal_addr {
            Some(addr) if hosts_internal => Some(serve(&internal, &addr).await?),
            _ => None,
        };
        let public = match public {
            Some(builder) => {
                let server = builder.build();
                let addr = serve(&server, &config.server.listen).await?;
                Some((server, addr))
            }
            None => None,
        };
        // Shards are claimed only once callers can reach the allocator.
        let seq_lease = match (seq_lease, internal_addr) {
            (Some(leased), Some(addr)) => {
                let holder = config.discovery.advertised(addr)?;
                let keeper = leased.start(holder);
                Some((leased, keeper))
            }
            (Some(_), None) => {
                return Err(
                    "app.seq.arbiter = \"etcd\": the allocator must be served for \
                            other processes (set app.internal_listen)"
                        .into(),
                );
            }
            (None, _) => None,
        };
        // Found by others only once serving.
        #[cfg(feature = "etcd")]
        let registrations = register(
            config,
            &roles,
            internal_addr,
            public.as_ref().map(|(_, addr)| *addr),
        )
        .await?;
        Ok(Backend {
            public,
            internal: Some((internal, internal_addr)),
            #[cfg(feature = "etcd")]
            registrations: std::sync::Mutex::new(registrations),
            seq_lease,
        })
    }

    /// Where the gateway is served, if this process hosts it.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.public.as_ref().map(|(_, addr)| *addr)
    }

    /// Where the internal services are served for other processes, if they are.
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal.as_ref().and_then(|(_, addr)| *addr)
    }

    /// A channel to this process's internal services, in process.
    pub fn internal_channel(&self) -> Option<Channel> {
        self.internal
            .as_ref()
            .map(|(server, _)| server.local_channel())
    }

    /// Stops serving: leaves the registry (and waits for callers to notice), then stops
    /// the gateway, so nothing new comes in, then the internal services, each after
    /// answering what it is running (up to its grace period).
    pub async fn shutdown(&self) {
        if let Some((leased, keeper)) = &self.seq_lease {
            keeper.abort();
            if let Err(e) = leased.stop().await {
                tracing::warn!("giving back the seq shards: {e}; they free with the lease");
            }
        }
        #[cfg(feature = "etcd")]
        self.leave_the_registry().await;
        if let Some((server, _)) = &self.public {
            server.shutdown().await;
        }
        if let Some((server, _)) = &self.internal {
            server.shutdown().await;
        }
    }

    /// Drains every registration at once, each waiting for callers to notice.
    #[cfg(feature = "etcd")]
    async fn leave_the_registry(&self) {
        let registrations = std::mem::take(
            &mut *self
                .registrations
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let drains: Vec<_> = registrations
            .into_iter()
            .map(|r| tokio::spawn(r.drain()))
            .collect();
        for drain in drains {
            if let Ok(Err(e)) = drain.await {
                tracing::warn!("leaving the registry: {e}; the entries expire with the lease");
            }
        }
    }
}

/// Registers the internal services hosted here and the gateway, each at the address it is
/// served on, when `[discovery] etcd` is set.
#[cfg(feature = "etcd")]
async fn register(
    config: &Config,
    roles: &BTreeSet<Role>,
    internal_addr: Option<SocketAddr>,
    public_addr: Option<SocketAddr>,
) -> Result<Vec<Registration>, String> {
    let mut registrations = Vec::new();
    let internal_names: Vec<&str> = roles
        .iter()
        .filter(|&&r| r != Role::Gateway)
        .map(|r| r.service())
        .collect();
    for (names, addr) in [
        (internal_names, internal_addr),
        (vec![Role::Gateway.service()], public_addr),
    ] {
        if let Some(addr) = addr
            && let Some(registration) = config
                .register(&names, addr)
                .await
                .map_err(|e| e.to_string())?
        {
            registrations.push(registration);
        }
    }
    Ok(registrations)
}

/// Binds `addr` and serves `server` there on a task; the address bound.
async fn serve(server: &Server, addr: &str) -> Result<SocketAddr, String> {
    let listener = svrkit_runtime::server::listen(addr)
        .await
        .map_err(|e| e.to_string())?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let server = server.clone();
    tokio::spawn(async move {
        if let Err(e) = server.serve(listener).await {
            tracing::error!("serving on {bound}: {e}");
        }
    });
    Ok(bound)
}
