//! The trust boundary: which peers' words about a request the server takes.
//!
//! A request's header carries fields that steer the server: its business priority and user
//! key (which decide who overload control sheds), its dye tag (which routes the calls it makes
//! to a gray release), `no_retry`, its trace id and its deadline. Between a service's own
//! processes they are how a call chain stays one request. From a stranger they are claims:
//! a flood that says `critical` would have every real user shed before it.
//!
//! A server therefore trusts a set of address ranges (by default loopback and the private
//! ranges, where a service's own callers are; `[trust] peers` in the configuration) and,
//! with TLS, the peers whose client certificates are valid for names it trusts
//! ([`Trust::identities`], `[trust] identities`), wherever they connect from. From any other
//! peer those fields are replaced by the method's IDL defaults and counted
//! (`svrkit_server_untrusted_total{field}`), never obeyed:
//!
//! | field | from an untrusted peer |
//! |---|---|
//! | priority | the method's IDL `priority` |
//! | user key | none, until an authenticating [`Hook`](super::Hook) sets one; without one the request ranks below every user of its priority |
//! | dye | none |
//! | `no_retry` | off |
//! | trace id | a new one, made here |
//! | deadline | at most the method's IDL `timeout_ms` |
//! | attempt number | 0 (a retry's own calls do not retry: `no_retry` by another name) |
//!
//! Metadata and the caller's name cross as they are: they are the application's to judge. Untrusted peers are also the ones held to shares of admitted work
//! under overload ([`crate::policy::shares`]) and to per-address shares
//! ([`Limits::max_connections_per_peer`](super::Limits::max_connections_per_peer),
//! [`Limits::first_request_timeout`](super::Limits::first_request_timeout)).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The address ranges (and, with TLS, the client certificate names) a server trusts (see
/// the module documentation).
#[derive(Clone, PartialEq, Eq)]
pub struct Trust {
    ranges: Vec<Range>,
    /// Names a verified client certificate may be valid for.
    #[cfg(feature = "tls")]
    names: Vec<tokio_rustls::rustls::pki_types::ServerName<'static>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Range {
    addr: IpAddr,
    prefix: u8,
}

impl Range {
    fn contains(self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        list.entries(self.ranges.iter().map(ToString::to_string));
        #[cfg(feature = "tls")]
        list.entries(
            self.names
                .iter()
                .map(|n| format!("certificate {}", n.to_str())),
        );
        list.finish()
    }
}

/// Loopback, and the ranges private networks use (RFC 1918, RFC 4193, link-local).
const INTERNAL: [&str; 2] = ["loopback", "private"];

impl Default for Trust {
    /// Loopback and the private ranges.
    fn default() -> Trust {
        Trust::parse(INTERNAL).unwrap_or_else(|_| Trust::nobody())
    }
}

impl Trust {
    /// Trusts no network peer (in-process calls are always trusted).
    pub fn nobody() -> Trust {
        Trust {
            ranges: Vec::new(),
            #[cfg(feature = "tls")]
            names: Vec::new(),
        }
    }

    /// Trusts every peer: for a server no stranger can reach.
    pub fn everyone() -> Trust {
        Trust::parse(["any"]).unwrap_or_else(|_| Trust::nobody())
    }

    /// Trusts these ranges: CIDR (`10.0.0.0/8`, `2001:db8::/32`), single addresses, and the
    /// names `loopback`, `private` (RFC 1918, RFC 4193 and link-local) and `any`.
    ///
    /// # Errors
    /// An entry that is none of those, named.
    pub fn parse<S: AsRef<str>>(entries: impl IntoIterator<Item = S>) -> Result<Trust, String> {
        let mut ranges = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            let named: &[&str] = match entry {
                "loopback" => &["127.0.0.0/8", "::1/128"],
                "private" => &[
                    "10.0.0.0/8",
                    "172.16.0.0/12",
                    "192.168.0.0/16",
                    "169.254.0.0/16",
                    "fc00::/7",
                    "fe80::/10",
                ],
                "any" => &["0.0.0.0/0", "::/0"],
                _ => &[],
            };
            if named.is_empty() {
                ranges.push(range(entry)?);
            } else {
                ranges.extend(
                    named
                        .iter()
                        .map(|r| range(r).expect("built-in ranges parse")),
                );
            }
        }
        let mut trust = Trust::nobody();
        trust.ranges = ranges;
        Ok(trust)
    }

    /// Trusts, besides, any peer whose client certificate (verified against the client
    /// authorities of [`crate::tls::server_config_for_clients`]) is valid for one of
    /// `names`: DNS names such as `orders.internal`, or addresses, as in a certificate's
    /// subject alternative names.
    ///
    /// # Errors
    /// A name that is neither a DNS name nor an address.
    #[cfg(feature = "tls")]
    pub fn identities<S: AsRef<str>>(
        mut self,
        names: impl IntoIterator<Item = S>,
    ) -> Result<Trust, String> {
        for name in names {
            self.names.push(crate::tls::identity(name.as_ref().trim())?);
        }
        Ok(self)
    }

    /// Whether a verified client certificate chain (leaf first) vouches for its peer.
    #[cfg(feature = "tls")]
    pub(crate) fn trusts_certificate(
        &self,
        certs: &[tokio_rustls::rustls::pki_types::CertificateDer<'_>],
    ) -> bool {
        !self.names.is_empty() && crate::tls::valid_for_any(certs, &self.names)
    }

    /// Whether requests from `peer` are taken at their word (`None`, in process: yes).
    #[inline]
    pub fn trusts(&self, peer: Option<SocketAddr>) -> bool {
        let Some(peer) = peer else {
            return true;
        };
        let ip = canonical(peer.ip());
        self.ranges.iter().any(|r| r.contains(ip))
    }
}

/// The address a stranger is counted by, for its connections and its share of admitted
/// work: an IPv4 address as it is; an IPv6 one by its /64, which a single subscriber is
/// given whole (counted by full address, one host could be 2^64 strangers).
pub(crate) fn peer_group(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// An IPv4 address seen through an IPv6 socket (`::ffff:10.0.0.1`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn range(entry: &str) -> Result<Range, String> {
    let bad = || {
        format!(
            "`{entry}` is not an address range: expected CIDR like `10.0.0.0/8`, an address, `loopback`, `private` or `any`"
        )
    };
    let (addr, prefix) = match entry.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (entry, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?,
        None => max,
    };
    Ok(Range {
        addr: canonical(addr),
        prefix: if addr.is_ipv6() && canonical(addr).is_ipv4() {
            prefix.saturating_sub(96)
        } else {
            prefix
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 1234))
    }

    #[test]
    fn the_default_trusts_loopback_and_private_networks_only() {
        let t = Trust::default();
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "10.1.2.3",
            "172.31.0.1",
            "192.168.7.7",
            "fd00::5",
            "::ffff:10.0.0.1",
        ] {
            assert!(t.trusts(peer(ip)), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "192.169.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!t.trusts(peer(ip)), "{ip}");
        }
        assert!(t.trusts(None), "in process");
    }

    #[test]
    fn strangers_are_counted_by_ipv4_address_or_ipv6_64() {
        let group = |ip: &str| peer_group(ip.parse().unwrap());
        assert_eq!(group("203.0.113.7"), group("::ffff:203.0.113.7"));
        assert_ne!(group("203.0.113.7"), group("203.0.113.8"));
        assert_eq!(group("2001:db8:1:2::5"), group("2001:db8:1:2:ffff::9"));
        assert_ne!(group("2001:db8:1:2::5"), group("2001:db8:1:3::4"));
    }

    #[test]
    fn ranges_parse_and_match_by_prefix() {
        let t = Trust::parse(["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"]).unwrap();
        assert!(t.trusts(peer("203.0.113.200")));
        assert!(!t.trusts(peer("203.0.114.1")));
        assert!(t.trusts(peer("2001:db8:ffff::1")));
        assert!(t.trusts(peer("198.51.100.7")));
        assert!(!t.trusts(peer("198.51.100.8")));
        assert!(!t.trusts(peer("127.0.0.1")));
        assert!(Trust::nobody().trusts(None));
        assert!(!Trust::nobody().trusts(peer("127.0.0.1")));
        assert!(Trust::everyone().trusts(peer("2001:db8::1")));
        assert!(Trust::everyone().trusts(peer("8.8.8.8")));
        for bad in ["10.0.0.0/33", "10.0.0/8", "localhost", ""] {
            let e = Trust::parse([bad]).unwrap_err();
            assert!(e.contains("is not an address range"), "{e}");
        }
    }
}
