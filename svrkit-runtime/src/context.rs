//! The request context: deadline, caller, trace and cancellation, carried through a call
//! chain.
//!
//! The server sets the context for each request it runs; a handler that calls another service
//! passes it on automatically (it is task-local), so the remaining deadline shrinks hop by hop
//! and the trace id and dye tag follow the request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sync::Cancel;
use bytes::Bytes;
use faststr::FastStr;

/// Everything a handler knows about the request it is serving.
#[derive(Clone, Debug)]
pub struct Context {
    deadline: Option<Instant>,
    cancel: Cancel,
    /// The calling service's name, if it said.
    pub caller: FastStr,
    /// Trace id, passed along the call chain.
    pub trace_id: Bytes,
    /// This request's span at the server (random, never 0 on a served request): the calls
    /// made while serving it are its children (their client spans' parent where spans are
    /// exported; else the calls name it as their parent directly), so that a trace's spans
    /// link up hop by hop (`trace.rs`). 0 on a context that serves nothing.
    pub span_id: u64,
    /// The caller's span, this one's parent (0: the request started the trace, or came from
    /// a peer the server does not trust).
    pub parent_span_id: u64,
    /// Dye or gray-release tag, passed along the call chain.
    pub dye: FastStr,
    /// The end user the call is for (0 if none), for overload control.
    pub user_key: u64,
    /// Business priority of the call.
    pub priority: Priority,
    /// Retry attempt (0 for the first try).
    pub attempt: u32,
    /// Whether the caller forbade retries of the calls made while serving this request (it
    /// is serving a retry itself, somewhere up the chain).
    pub no_retry: bool,
    /// When the request's frame was read (or an in-process call was made): deadlines and
    /// queue wait count from here.
    pub arrived: Instant,
    /// The address of the connection the request came on (`None` in process).
    pub peer: Option<SocketAddr>,
    /// Whether the server trusts the peer's word for the priority, user key, dye, trace id,
    /// `no_retry` and deadline (`server/trust.rs`); if not, those are the method's defaults.
    /// True in process and on the calling side.
    pub trusted: bool,
    /// What the caller's interceptors attached (credentials, say).
    ///
    /// Shared: the context is copied for the handler, its task and every call it makes
    /// onwards, and the map is not. Change it with [`Arc::make_mut`].
    pub metadata: Arc<BTreeMap<FastStr, FastStr>>,
}

impl Default for Context {
    fn default() -> Context {
        Context::arrived_at(Instant::now())
    }
}

impl Context {
    /// A context for a request that arrived at `arrived` (no clock read: the server has the
    /// time already).
    pub(crate) fn arrived_at(arrived: Instant) -> Context {
        Context {
            deadline: None,
            cancel: Cancel::new(),
            caller: FastStr::empty(),
            trace_id: Bytes::new(),
            span_id: 0,
            parent_span_id: 0,
            dye: FastStr::empty(),
            user_key: 0,
            priority: Priority::Normal,
            attempt: 0,
            no_retry: false,
            arrived,
            peer: None,
            trusted: true,
            metadata: Arc::default(),
        }
    }
}

tokio::task_local! {
    static CURRENT: Context;
}

impl Context {
    /// A context with a deadline `timeout` from now.
    pub fn with_timeout(timeout: Duration) -> Context {
        let mut ctx = Context::default();
        ctx.deadline = ctx.arrived.checked_add(timeout);
        ctx
    }

    /// When the call must be done by, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (`None`: no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Sets the deadline.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// Whether the caller cancelled the call (or its deadline passed).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the caller cancels the call or its deadline passes.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// The signal behind [`cancelled`](Context::cancelled): cancelling it cancels the call.
    pub fn cancel_token(&self) -> &Cancel {
        &self.cancel
    }

    /// The context of the request the current task is serving, if any.
    pub fn current() -> Option<Context> {
        CURRENT.try_with(Context::clone).ok()
    }

    /// `f`, running with `self` as the current context (a nameable future, for the server).
    pub(crate) fn scoped<F: std::future::Future>(
        self,
        f: F,
    ) -> tokio::task::futures::TaskLocalFuture<Context, F> {
        CURRENT.scope(self, f)
    }

    /// Runs `f` with `self` as the current context.
    pub async fn scope<F: std::future::Future>(self, f: F) -> F::Output {
        CURRENT.scope(self, f).await
    }
}

/// Business priority of a method, from the IDL: what overload control sheds last.
///
/// On the wire (the frame header's `priority`) 0 means unspecified and reads as
/// [`Normal`](Priority::Normal), so a peer that leaves the field out is never treated as
/// critical.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Never shed before anything else.
    Critical = 1,
    /// More important than most.
    High = 2,
    /// The default.
    #[default]
    Normal = 3,
    /// Shed first.
    Low = 4,
}

impl Priority {
    /// The priority with this wire number (0 and unknown numbers read as `Normal`).
    pub fn from_wire(n: u32) -> Priority {
        match n {
            1 => Priority::Critical,
            2 => Priority::High,
            4 => Priority::Low,
            _ => Priority::Normal,
        }
    }

    /// The wire number of this priority.
    pub fn to_wire(self) -> u32 {
        self as u32
    }
}
