//! The bottom of a remote channel: per attempt, adaptive throttling, the route rules (gray
//! release), the balancer over the chosen endpoint set, the chosen server's admission level
//! (a call it would shed is dropped here, unsent), and what the answer teaches: the level,
//! the endpoint's health, the backend's refusals.

use std::sync::Arc;
use std::time::Instant;

use super::balance::Balancer;
use super::endpoint::{Endpoint, EndpointSet};
use super::route::Routing;
use super::{Call, CallFuture, ChannelOptions, Transport};
use crate::clock;
use crate::frame::Frame;
use crate::frame::remaining_ms;
use crate::policy::{priority, throttle::Throttle};
use crate::random;
use crate::status::{Code, Status};

/// Sends each attempt to the endpoint the balancer picks.
pub(crate) struct Pool {
    pub(crate) endpoints: Arc<EndpointSet>,
    pub(crate) routing: Routing,
    balancer: Arc<dyn Balancer>,
    throttle: Option<Throttle>,
    options: ChannelOptions,
}

impl Pool {
    pub(super) fn new(
        endpoints: Arc<EndpointSet>,
        balancer: Arc<dyn Balancer>,
        options: ChannelOptions,
    ) -> Pool {
        Pool {
            endpoints,
            routing: Routing::new(options.clone()),
            balancer,
            throttle: options.throttle.map(Throttle::new),
            options,
        }
    }

    /// The endpoint for this attempt, or why there is none: the balancer's pick, another one
    /// for a retry where there is one, and one whose server admits the call's level.
    fn choose(
        &self,
        call: &Call,
        endpoints: &[Arc<Endpoint>],
        level: u32,
        now_ms: u64,
    ) -> Result<Arc<Endpoint>, Status> {
        if endpoints.is_empty() {
            return Err(Status::unavailable("the channel has no endpoints"));
        }
        let mut pick = self
            .balancer
            .pick(call, endpoints)
            .filter(|&i| i < endpoints.len())
            .ok_or_else(|| Status::unavailable("the balancer found no endpoint to call"))?;
        // A hedge goes to the least loaded replica: not the one its first attempt is on,
        // which that attempt's load counts against.
        if call.hedge
            && let Some(least) = least_loaded(endpoints, |e| e.is_healthy())
        {
            pick = least;
        }
        // A retry goes to another replica than the attempt before, if one is up.
        if call.header.attempt > 0
            && endpoints.len() > 1
            && Arc::as_ptr(&endpoints[pick]) as usize == call.last_endpoint
            && let Some(other) = least_loaded(endpoints, |e| {
                Arc::as_ptr(e) as usize != call.last_endpoint && e.is_healthy()
            })
        {
            pick = other;
        }
        // Collaborative rejection: the server said what it admits; do not send what it would
        // shed (unless another replica admits it).
        if !endpoints[pick].admits(level, now_ms) {
            pick = least_loaded(endpoints, |e| e.admits(level, now_ms) && e.is_healthy())
                .ok_or_else(|| {
                    if let Some(m) = call.metrics {
                        m.client_local_reject();
                    }
                    Status::overloaded(
                        "dropped before sending: the server sheds requests of this priority",
                    )
                })?;
        }
        Ok(endpoints[pick].clone())
    }
}

/// The least loaded endpoint that passes `ok`.
fn least_loaded(endpoints: &[Arc<Endpoint>], ok: impl Fn(&Arc<Endpoint>) -> bool) -> Option<usize> {
    endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| ok(e))
        .min_by_key(|(_, e)| e.load())
        .map(|(i, _)| i)
}

/// Whether an answer or failure is the backend refusing work (for adaptive throttling) and
/// whether it is the endpoint failing (for ejection).
///
/// `OVERLOADED` from the server's overload control is not a refusal here: a request of
/// `level` shed by priority (the server says it admits less), or one the answer marks
/// `admission_refused` (shed, or dropped from the queue while the level moves). The
/// server's level keeps what it sheds at home from now on; a throttle, blind to priority,
/// would drop the important requests the server still admits with them, and would remember
/// the overload for its two minutes after the server had forgotten it (fresh calls dropped
/// at the caller long after the load ended). Refused by a limit, its memory, a hook or the
/// handler, it is the backend refusing work.
fn judge(result: &Result<Frame, Status>, level: u32) -> (bool, bool) {
    let (code, admits, by_admission) = match result {
        Ok(frame) => (
            Code(frame.header.status_code),
            frame.header.admission_level,
            frame.header.admission_refused,
        ),
        Err(status) => (status.code(), 0, false),
    };
    let shed_by_priority = admits != 0 && level >= admits;
    let refused = match code {
        Code::OVERLOADED => !shed_by_priority && !by_admission,
        Code::UNAVAILABLE | Code::DEADLINE_EXCEEDED => true,
        _ => false,
    };
    let endpoint_failed = code == Code::UNAVAILABLE;
    (refused, endpoint_failed)
}

impl Transport for Pool {
    fn call<'a>(&'a self, call: &'a mut Call) -> CallFuture<'a> {
        Box::pin(async move {
            let now = Instant::now();
            let now_ms = clock::millis(now);
            if let Some(throttle) = &self.throttle
                && !throttle.admit(now_ms, random::random_unit)
            {
                if let Some(m) = call.metrics {
                    m.client_local_reject();
                }
                return Err(Status::overloaded(
                    "dropped before sending: the backend has been refusing most calls",
                ));
            }
            let set = self
                .routing
                .group_for(call)
                .unwrap_or_else(|| self.endpoints.clone());
            let mut endpoints = set.choosable();
            // An unresolved set is empty, so a set with endpoints costs no more than this
            // check. Discovery has not answered yet: wait for it, within the call's
            // deadline (the channel's timeout then says the call got no answer in time).
            if endpoints.is_empty() && !set.is_resolved() {
                set.resolved().await;
                endpoints = set.choosable();
            }
            let level = priority::of_header(&call.header, now);
            let mut endpoint = self.choose(call, &endpoints, level, now_ms)?;
            // A connection that cannot be made sent nothing: any call may try another
            // endpoint (up to three), so that a replica that died costs no failed calls.
            let mut tries = 0;
            let conn = loop {
                match endpoint.connection(&self.options).await {
                    Ok(conn) => break conn,
                    Err(status) => {
                        tries += 1;
                        let other = least_loaded(&endpoints, |e| {
                            !Arc::ptr_eq(e, &endpoint) && e.is_healthy() && e.admits(level, now_ms)
                        });
                        match other {
                            Some(i) if tries < 3 => endpoint = endpoints[i].clone(),
                            _ => {
                                if let Some(throttle) = &self.throttle {
                                    throttle.record(now_ms, false);
                                }
                                return Err(status);
                            }
                        }
                    }
                }
            };
            call.last_endpoint = Arc::as_ptr(&endpoint) as usize;
            let _load = endpoint.start();
            // What is left now, after connecting, is what the server gets.
            call.header.deadline_ms = remaining_ms(call.deadline);
            let result = conn.call(call.method, &mut call.header, &call.body).await;
            if let Ok(frame) = &result {
                // Stamped with the answer's time: its level is fresh now, however long the
                // call took.
                endpoint.note_level(frame.header.admission_level, clock::millis(Instant::now()));
            }
            let (refused, failed) = judge(&result, level);
            if failed {
                endpoint.failed();
            } else if result.is_ok() {
                endpoint.succeeded();
            }
            if let Some(throttle) = &self.throttle {
                throttle.record(now_ms, !refused);
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Header;

    fn answer(code: Code, admission_level: u32, admission_refused: bool) -> Result<Frame, Status> {
        Ok(Frame {
            header: Header {
                status_code: code.0,
                admission_level,
                admission_refused,
                ..Header::default()
            },
            body: bytes::Bytes::new(),
        })
    }

    #[test]
    fn a_refusal_by_overload_control_is_not_one_for_the_throttle() {
        // (answer's code, level the server admits below, marked `admission_refused`, the
        // request's level) -> (refused, failed).
        let cases = [
            // The server admits levels below 100: a request of level 200 was shed by
            // priority, which the server's level handles from now on.
            ((Code::OVERLOADED, 100, false, 200), (false, false)),
            // One of level 50 it admits, dropped by its queue check while the level moves
            // (the answer says so): its overload control at work, not the throttle's.
            ((Code::OVERLOADED, 100, true, 50), (false, false)),
            // Refused by a limit, its memory, a hook or the handler while it sheds (not
            // marked), or by a server that does not say: the backend refusing work.
            ((Code::OVERLOADED, 100, false, 50), (true, false)),
            ((Code::OVERLOADED, 512, false, 50), (true, false)),
            ((Code::OVERLOADED, 0, false, 50), (true, false)),
            // UNAVAILABLE: refused, and the endpoint's failure.
            ((Code::UNAVAILABLE, 512, false, 0), (true, true)),
            // Anything else the server answered is an accept.
            ((Code::INTERNAL, 512, false, 0), (false, false)),
            ((Code::OK, 512, false, 0), (false, false)),
        ];
        for ((code, admits, marked, level), want) in cases {
            let got = judge(&answer(code, admits, marked), level);
            assert_eq!(
                got, want,
                "{code:?} admitting below {admits}, marked {marked}, level {level}"
            );
        }
        // Unreachable: refused, and the endpoint's failure.
        let unreachable = Err(Status::unavailable("cannot connect"));
        assert_eq!(judge(&unreachable, 0), (true, true));
    }
}
