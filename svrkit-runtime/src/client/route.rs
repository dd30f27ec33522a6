//! Gray release: route rules that send part of a channel's traffic to a named group of
//! endpoints (a canary), changed while the channel is in use.
//!
//! A rule matches a call by its dye tag (set by the caller or inherited: it follows the
//! request through every hop), by its user key (chosen users), or by a fraction of traffic
//! (by user key when there is one, so that a user stays on one side; by trace id otherwise,
//! so that a request's calls stay together). The first matching rule's group takes the call;
//! calls no rule matches go to the channel's main endpoints.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use faststr::FastStr;
use serde::Deserialize;

use super::endpoint::EndpointSet;
use super::{Call, ChannelOptions};
use crate::random;

/// A rule sending some calls to a named endpoint group (`[[services."<name>".routes]]`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The group the matching calls go to.
    pub group: String,
    /// Share of all calls to send there (0 to 1).
    #[serde(default)]
    pub fraction: f64,
    /// Users whose calls go there.
    #[serde(default)]
    pub user_keys: Vec<u64>,
    /// Calls with this dye tag go there.
    #[serde(default)]
    pub dye: Option<String>,
}

impl Route {
    fn matches(&self, call: &Call) -> bool {
        if self
            .dye
            .as_deref()
            .is_some_and(|dye| !dye.is_empty() && call.header.dye == dye)
        {
            return true;
        }
        if call.header.user_key != 0 && self.user_keys.contains(&call.header.user_key) {
            return true;
        }
        self.fraction > 0.0 && unit(call) < self.fraction
    }
}

/// Where a call falls in `[0, 1)`: by its user, else by its trace.
fn unit(call: &Call) -> f64 {
    let key = if call.header.user_key != 0 {
        call.header.user_key
    } else {
        call.header
            .trace_id
            .iter()
            .fold(0x9e37_79b9, |h: u64, &b| random::mix(h ^ u64::from(b)))
    };
    (random::mix(key ^ 0x6772_6179) >> 11) as f64 / (1u64 << 53) as f64
}

/// The groups of a channel and the rules choosing among them.
pub(crate) struct Routing {
    groups: ArcSwap<HashMap<FastStr, Arc<EndpointSet>>>,
    routes: ArcSwap<Vec<Route>>,
    options: ChannelOptions,
}

/// Why route rules or endpoint groups were refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// A rule sends calls to a group that has no endpoints.
    #[error("route to group `{group}`, which has no endpoints")]
    UnknownGroup {
        /// The group the rule names.
        group: String,
    },
    /// A rule's fraction of calls is not between 0 and 1.
    #[error("route to group `{group}`: fraction {fraction} is not between 0 and 1")]
    BadFraction {
        /// The group the rule names.
        group: String,
        /// The fraction it gave.
        fraction: f64,
    },
    /// The channel calls in process: it has no endpoints to group.
    #[error("an in-process channel has no endpoint groups")]
    InProcess,
}

impl Routing {
    pub(super) fn new(options: ChannelOptions) -> Routing {
        Routing {
            groups: ArcSwap::from_pointee(HashMap::new()),
            routes: ArcSwap::from_pointee(Vec::new()),
            options,
        }
    }

    /// The group a call goes to, if a rule sends it to one (`None`: the main endpoints).
    #[inline]
    pub(super) fn group_for(&self, call: &Call) -> Option<Arc<EndpointSet>> {
        let routes = self.routes.load();
        if routes.is_empty() {
            return None;
        }
        let route = routes.iter().find(|r| r.matches(call))?;
        self.groups.load().get(route.group.as_str()).cloned()
    }

    /// Sets the endpoints of group `name` (made if new; an empty list removes it, and the
    /// rules naming it then match nothing).
    pub(crate) fn set_group(&self, name: &str, addrs: Vec<String>) {
        let mut groups = HashMap::clone(&self.groups.load());
        if addrs.is_empty() {
            groups.remove(name);
        } else if let Some(set) = groups.get(name) {
            set.update(addrs);
        } else {
            groups.insert(
                FastStr::new(name),
                Arc::new(EndpointSet::new(addrs, self.options.clone())),
            );
        }
        self.groups.store(Arc::new(groups));
    }

    /// Replaces the rules.
    pub(super) fn set_routes(&self, routes: Vec<Route>) -> Result<(), RouteError> {
        let groups = self.groups.load();
        for r in &routes {
            if !groups.contains_key(r.group.as_str()) {
                return Err(RouteError::UnknownGroup {
                    group: r.group.clone(),
                });
            }
            if !(0.0..=1.0).contains(&r.fraction) {
                return Err(RouteError::BadFraction {
                    group: r.group.clone(),
                    fraction: r.fraction,
                });
            }
        }
        self.routes.store(Arc::new(routes));
        Ok(())
    }

    /// The endpoints of group `name`.
    pub(super) fn group(&self, name: &str) -> Option<Arc<EndpointSet>> {
        self.groups.load().get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::test_call;

    fn routing() -> Routing {
        let r = Routing::new(ChannelOptions::default());
        r.set_group("canary", vec!["10.0.0.9:7000".into()]);
        r
    }

    #[test]
    fn dye_users_and_a_fraction_reach_the_group() {
        let r = routing();
        assert!(
            r.group_for(&test_call(1)).is_none(),
            "no rules: main endpoints"
        );
        r.set_routes(vec![
            Route {
                group: "canary".into(),
                dye: Some("gray".into()),
                user_keys: vec![7],
                ..Route::default()
            },
            Route {
                group: "canary".into(),
                fraction: 0.1,
                ..Route::default()
            },
        ])
        .unwrap();
        let mut dyed = test_call(1_000_000);
        dyed.header.dye = "gray".into();
        assert!(r.group_for(&dyed).is_some());
        assert!(r.group_for(&test_call(7)).is_some());
        let sent = (1..=10_000u64)
            .filter(|&u| r.group_for(&test_call(u)).is_some())
            .count();
        assert!((850..1_200).contains(&sent), "{sent}");
        // A user is on one side for good.
        let side = r.group_for(&test_call(12_345)).is_some();
        for _ in 0..10 {
            assert_eq!(r.group_for(&test_call(12_345)).is_some(), side);
        }
    }

    #[test]
    fn rules_are_checked_and_bad_ones_leave_the_old_in_force() {
        let r = routing();
        r.set_routes(vec![Route {
            group: "canary".into(),
            user_keys: vec![7],
            ..Route::default()
        }])
        .unwrap();
        let e = r
            .set_routes(vec![Route {
                group: "blue".into(),
                ..Route::default()
            }])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "route to group `blue`, which has no endpoints"
        );
        let e = r
            .set_routes(vec![Route {
                group: "canary".into(),
                fraction: 1.5,
                ..Route::default()
            }])
            .unwrap_err();
        assert!(e.to_string().contains("fraction 1.5"), "{e}");
        assert!(r.group_for(&test_call(7)).is_some(), "the old rules stay");
        // Removing the group: its rule matches nothing, calls go to the main endpoints.
        r.set_group("canary", Vec::new());
        assert!(r.group_for(&test_call(7)).is_none());
    }
}
