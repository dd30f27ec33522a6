//! Service discovery: where the replicas of a service are, kept in a registry instead of in
//! every caller's configuration.
//!
//! A server registers each service it hosts under `<prefix>/<full service name>/<instance>`
//! (the instance is its advertised address, so a restarted process overwrites its own key),
//! with an [`Instance`] as the value, held by a lease that the process keeps alive: a process
//! that dies disappears when its lease expires, and one that stops cleanly deregisters first
//! ([`etcd::Registration::drain`]). A channel configured with `discovery = "etcd"` reads the
//! prefix and then watches it, feeding its balancer's endpoint set (and its gray-release
//! groups) live.
//!
//! ```toml
//! [discovery]
//! etcd = ["127.0.0.1:2379"]      # the etcd cluster's client URLs or host:port
//! # prefix = "/svrkit"
//! # lease_ttl_s = 3              # a dead process is forgotten this long after it died
//! # drain_ms = 500               # after deregistering, how long to keep serving
//! # advertise_host = "10.0.0.5"  # the host others call (default: the bound address's)
//! # weight = 100                 # share of calls, relative to the other replicas'
//! # set = "set-1"                # the SET this process belongs to: its calls go to
//! #                              # replicas of the same SET while one is healthy
//! # group = "canary"             # gray release: the endpoint group it joins
//!
//! [services."im.msg.MsgSvr"]
//! discovery = "etcd"             # instead of `endpoints`
//! ```
//!
//! The etcd client is behind the runtime's `etcd` feature; `docs/scale-out.md` has the
//! design and its reasons.

#[cfg(feature = "etcd")]
pub mod etcd;

use serde::{Deserialize, Serialize};

use crate::client::DEFAULT_WEIGHT;

/// `[discovery]`: the registry, and how this process appears in it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// The etcd cluster (`http://host:port` or `host:port`); empty: no discovery.
    pub etcd: Vec<String>,
    /// The key prefix every registration is under.
    pub prefix: String,
    /// Seconds a registration outlives its process (etcd's leases count in seconds).
    pub lease_ttl_s: u32,
    /// After deregistering, how long a process keeps serving before it stops accepting, so
    /// that callers have seen it go.
    pub drain_ms: u64,
    /// The host others reach this process at, with the bound port (default: the bound
    /// address's host, which must then not be `0.0.0.0` or `[::]`).
    pub advertise_host: Option<String>,
    /// This process's share of calls relative to the other replicas' (at least 1).
    pub weight: u32,
    /// The SET this process belongs to (empty: none). Registered with its endpoints, and
    /// preferred by its channels: calls stay in the SET while it has a healthy replica.
    pub set: String,
    /// The gray-release group this process's endpoints join (empty: the main group).
    pub group: String,
    /// The zone (data centre) this process runs in (empty: none). Registered with its
    /// endpoints; its channels prefer replicas in the same zone within the preferred SET,
    /// then the SET's others, then the zone's, then any.
    pub zone: String,
}

impl Default for DiscoveryConfig {
    fn default() -> DiscoveryConfig {
        DiscoveryConfig {
            etcd: Vec::new(),
            prefix: "/svrkit".to_owned(),
            lease_ttl_s: 3,
            drain_ms: 500,
            advertise_host: None,
            weight: DEFAULT_WEIGHT,
            set: String::new(),
            group: String::new(),
            zone: String::new(),
        }
    }
}

impl DiscoveryConfig {
    /// The address to register for a server bound to `bound`.
    ///
    /// # Errors
    /// When `bound` is a wildcard address and no `advertise_host` says where others reach
    /// it.
    pub fn advertised(&self, bound: std::net::SocketAddr) -> Result<String, String> {
        match &self.advertise_host {
            Some(host) if host.contains(':') => Ok(format!("[{host}]:{}", bound.port())),
            Some(host) => Ok(format!("{host}:{}", bound.port())),
            None if bound.ip().is_unspecified() => Err(format!(
                "discovery.advertise_host: missing: the server listens on {bound}, which \
                 others cannot call"
            )),
            None => Ok(bound.to_string()),
        }
    }

    /// The key prefix of a service's instances (with the trailing `/`).
    pub fn service_prefix(&self, service: &str) -> String {
        format!("{}/{service}/", self.prefix.trim_end_matches('/'))
    }
}

/// How a called service's replicas are found (`discovery` in `[services."<name>"]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryKind {
    /// The `endpoints` list of the configuration.
    #[default]
    Static,
    /// The instances registered in etcd (`[discovery]`).
    Etcd,
}

/// One registered replica: the value of its key, as JSON, so that `etcdctl get --prefix
/// /svrkit/` is readable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// `host:port` to call.
    pub addr: String,
    /// Share of calls relative to the other replicas'.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// The SET it belongs to (empty: none).
    #[serde(default)]
    pub set: String,
    /// Its gray-release group (empty: the main group).
    #[serde(default)]
    pub group: String,
    /// Its zone (empty: none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

impl Instance {
    /// Parses a registry value; `None` for one that is not an instance (it is skipped, not
    /// fatal: a registry is shared, and one bad writer must not empty everyone's sets).
    pub fn parse(value: &[u8]) -> Option<Instance> {
        let instance: Instance = serde_json::from_slice(value).ok()?;
        let port_ok = instance
            .addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        port_ok.then_some(instance)
    }
}

/// The endpoints of a service as the registry lists them: the main group's
/// `(address, weight)` pairs and each named group's addresses, sorted so that the same
/// registry gives the same sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The main group.
    pub main: Vec<(String, u32)>,
    /// Tiers of the main group's addresses a caller prefers, best first: its SET in its
    /// zone, its SET, its zone (tiers that do not apply are left out).
    pub preferred: Vec<Vec<String>>,
    /// Named gray-release groups.
    pub groups: std::collections::BTreeMap<String, Vec<String>>,
}

impl Listing {
    /// The listing of these instances for a caller in SET `set` and zone `zone` (each
    /// empty: none).
    pub fn of<'a>(
        instances: impl IntoIterator<Item = &'a Instance>,
        set: &str,
        zone: &str,
    ) -> Listing {
        let mut listing = Listing::default();
        // Same SET and zone, same SET, same zone.
        let mut tiers: [Vec<String>; 3] = Default::default();
        for i in instances {
            if i.group.is_empty() {
                listing.main.push((i.addr.clone(), i.weight.max(1)));
                let in_set = !set.is_empty() && i.set == set;
                let in_zone = !zone.is_empty() && i.zone == zone;
                if in_set && in_zone {
                    tiers[0].push(i.addr.clone());
                }
                if in_set {
                    tiers[1].push(i.addr.clone());
                }
                if in_zone {
                    tiers[2].push(i.addr.clone());
                }
            } else {
                listing
                    .groups
                    .entry(i.group.clone())
                    .or_default()
                    .push(i.addr.clone());
            }
        }
        listing.main.sort();
        listing.main.dedup_by(|a, b| a.0 == b.0);
        for mut tier in tiers {
            tier.sort();
            tier.dedup();
            if !tier.is_empty() && !listing.preferred.contains(&tier) {
                listing.preferred.push(tier);
            }
        }
        for addrs in listing.groups.values_mut() {
            addrs.sort();
            addrs.dedup();
        }
        listing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertised_address_is_one_others_can_call() {
        let mut config = DiscoveryConfig::default();
        let bound = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(
            config.advertised(bound("10.1.2.3:7000")).unwrap(),
            "10.1.2.3:7000"
        );
        let e = config.advertised(bound("0.0.0.0:7000")).unwrap_err();
        assert!(e.starts_with("discovery.advertise_host: missing"), "{e}");
        config.advertise_host = Some("svc.internal".into());
        assert_eq!(
            config.advertised(bound("0.0.0.0:7000")).unwrap(),
            "svc.internal:7000"
        );
        config.advertise_host = Some("fd00::5".into());
        assert_eq!(
            config.advertised(bound("[::]:7000")).unwrap(),
            "[fd00::5]:7000"
        );
    }

    #[test]
    fn instances_parse_leniently_and_list_by_group() {
        let a = Instance::parse(br#"{"addr":"10.0.0.1:7000"}"#).unwrap();
        assert_eq!(a.weight, DEFAULT_WEIGHT);
        assert_eq!(Instance::parse(b"not json"), None);
        assert_eq!(Instance::parse(br#"{"addr":"nohost"}"#), None);
        assert_eq!(Instance::parse(br#"{"addr":":7000"}"#), None);
        let b = Instance::parse(br#"{"addr":"10.0.0.2:7000","weight":300,"set":"s1"}"#).unwrap();
        let c = Instance::parse(br#"{"addr":"10.0.0.3:7000","group":"canary"}"#).unwrap();
        let listing = Listing::of([&b, &a, &c, &a], "s1", "");
        assert_eq!(listing.preferred, vec![vec!["10.0.0.2:7000".to_owned()]]);
        assert_eq!(
            listing.main,
            vec![
                ("10.0.0.1:7000".to_owned(), 100),
                ("10.0.0.2:7000".to_owned(), 300)
            ]
        );
        assert_eq!(listing.groups["canary"], vec!["10.0.0.3:7000".to_owned()]);
    }

    #[test]
    fn a_caller_prefers_its_set_in_its_zone_then_its_set_then_its_zone() {
        let at = |addr: &str, set: &str, zone: &str| Instance {
            addr: addr.into(),
            weight: DEFAULT_WEIGHT,
            set: set.into(),
            group: String::new(),
            zone: zone.into(),
        };
        let all = [
            at("a:1", "s1", "z1"),
            at("b:1", "s1", "z2"),
            at("c:1", "s2", "z1"),
            at("d:1", "s2", "z2"),
        ];
        let tiers = |set: &str, zone: &str| Listing::of(&all, set, zone).preferred;
        assert_eq!(
            tiers("s1", "z1"),
            [vec!["a:1"], vec!["a:1", "b:1"], vec!["a:1", "c:1"]]
        );
        assert_eq!(tiers("", "z2"), [vec!["b:1", "d:1"]]);
        assert_eq!(tiers("s2", ""), [vec!["c:1", "d:1"]]);
        assert!(tiers("", "").is_empty());
        // An instance registered without a zone parses, and its value has no zone key.
        let old = Instance::parse(br#"{"addr":"10.0.0.1:7000","set":"s1"}"#).unwrap();
        assert_eq!(old.zone, "");
        assert!(!serde_json::to_string(&old).unwrap().contains("zone"));
    }
}
