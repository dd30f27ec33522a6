//! Layers every channel can take without writing a [`Layer`](super::Layer): policies that
//! admit and record calls, and interceptors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Call, CallFuture, Transport};
use crate::frame::Header;
use crate::service::MethodDescriptor;
use crate::status::{Code, Status};

/// What a [`CallPolicy`] knows about an attempt of a call.
#[derive(Clone, Copy, Debug)]
pub struct CallInfo {
    /// The method called.
    pub method: &'static MethodDescriptor,
    /// 0 for the first attempt.
    pub attempt: u32,
    /// When the call must be done by.
    pub deadline: Instant,
    /// The end user the call is for (0 if none).
    pub user_key: u64,
}

impl CallInfo {
    fn of(call: &Call) -> CallInfo {
        CallInfo {
            method: call.method,
            attempt: call.header.attempt,
            deadline: call.deadline,
            user_key: call.header.user_key,
        }
    }
}

/// How an attempt ended, as a [`CallPolicy`] learns it.
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    /// The server answered: the response header has its status (0 for success) and its
    /// admission level.
    Answered(&'a Header),
    /// No answer: the call failed on this side (unreachable, timed out, cancelled, shed).
    Failed(&'a Status),
    /// The caller dropped the call before it ended.
    Dropped,
}

impl Outcome<'_> {
    /// The status code the caller sees (`CANCELLED` for a dropped call).
    pub fn code(&self) -> Code {
        match self {
            Outcome::Answered(h) => Code(h.status_code),
            Outcome::Failed(s) => s.code(),
            Outcome::Dropped => Code::CANCELLED,
        }
    }
}

/// Decides about and learns from every attempt through a channel: where client-side
/// admission (dropping calls the server would shed), circuit breaking and metrics plug in.
/// A channel can have several; each sees every attempt.
pub trait CallPolicy: Send + Sync + 'static {
    /// Before each attempt; an error fails the attempt without sending it.
    ///
    /// # Errors
    /// The status the caller gets (`OVERLOADED`, say).
    fn admit(&self, _call: &CallInfo) -> Result<(), Status> {
        Ok(())
    }
    /// Exactly once after each admitted attempt, however it ended, dropped ones included.
    fn record(&self, _call: &CallInfo, _latency: Duration, _outcome: Outcome<'_>) {}
}

/// A shared policy, so the caller can keep a handle to it (to read what it recorded).
impl<P: CallPolicy + ?Sized> CallPolicy for Arc<P> {
    fn admit(&self, call: &CallInfo) -> Result<(), Status> {
        (**self).admit(call)
    }
    fn record(&self, call: &CallInfo, latency: Duration, outcome: Outcome<'_>) {
        (**self).record(call, latency, outcome);
    }
}

/// The policy that admits everything and records nothing.
#[derive(Debug, Default)]
pub struct NoPolicy;

impl CallPolicy for NoPolicy {}

pub(super) struct PolicyLayer(pub(super) Arc<dyn CallPolicy>);

impl super::Layer for PolicyLayer {
    type Transport = Policed;
    fn layer(self, inner: Arc<dyn Transport>) -> Policed {
        Policed {
            policy: self.0,
            inner,
        }
    }
}

pub(super) struct Policed {
    policy: Arc<dyn CallPolicy>,
    inner: Arc<dyn Transport>,
}

/// Records an admitted attempt once: with its outcome, or as dropped if it never got one.
struct Admitted<'a> {
    policy: &'a dyn CallPolicy,
    info: CallInfo,
    started: Instant,
    done: bool,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.policy
                .record(&self.info, self.started.elapsed(), Outcome::Dropped);
        }
    }
}

impl Transport for Policed {
    fn call<'a>(&'a self, call: &'a mut Call) -> CallFuture<'a> {
        Box::pin(async move {
            let info = CallInfo::of(call);
            self.policy.admit(&info)?;
            let mut admitted = Admitted {
                policy: &*self.policy,
                info,
                started: Instant::now(),
                done: false,
            };
            let result = self.inner.call(call).await;
            admitted.done = true;
            let outcome = match &result {
                Ok(frame) => Outcome::Answered(&frame.header),
                Err(status) => Outcome::Failed(status),
            };
            self.policy
                .record(&info, admitted.started.elapsed(), outcome);
            result
        })
    }
}

/// Sees every call before it is sent, and can change it (add metadata such as credentials)
/// or refuse it.
pub trait Interceptor: Send + Sync + 'static {
    /// Called once per call, before any policy or retry below it.
    ///
    /// # Errors
    /// The status the caller gets; nothing is sent.
    fn intercept(&self, call: &mut Call) -> Result<(), Status>;
}

pub(super) struct InterceptorLayer(pub(super) Arc<dyn Interceptor>);

impl super::Layer for InterceptorLayer {
    type Transport = Intercepted;
    fn layer(self, inner: Arc<dyn Transport>) -> Intercepted {
        Intercepted {
            interceptor: self.0,
            inner,
        }
    }
}

pub(super) struct Intercepted {
    interceptor: Arc<dyn Interceptor>,
    inner: Arc<dyn Transport>,
}

impl Transport for Intercepted {
    fn call<'a>(&'a self, call: &'a mut Call) -> CallFuture<'a> {
        if let Err(status) = self.interceptor.intercept(call) {
            return Box::pin(std::future::ready(Err(status)));
        }
        self.inner.call(call)
    }
}
