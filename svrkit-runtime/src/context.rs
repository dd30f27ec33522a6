//! The request context: deadline, caller, trace and cancellation, carried through a call
//! chain.
//!
//! The server sets the context for each request it runs; a handler that calls another service
//! passes it on automatically (it is task-local), so the remaining deadline shrinks hop by hop
//! and the trace id and dye tag follow the request.

use std::time::{Duration, Instant};

use bytes::Bytes;
use faststr::FastStr;
use tokio_util::sync::CancellationToken;

use crate::service::Priority;

/// Everything a handler knows about the request it is serving.
#[derive(Clone, Debug)]
pub struct Context {
    deadline: Option<Instant>,
    cancel: CancellationToken,
    /// The calling service's name, if it said.
    pub caller: FastStr,
    /// Trace id, passed along the call chain.
    pub trace_id: Bytes,
    /// Dye or gray-release tag, passed along the call chain.
    pub dye: FastStr,
    /// The end user the call is for (0 if none), for overload control.
    pub user_key: u64,
    /// Business priority of the call.
    pub priority: Priority,
    /// Retry attempt (0 for the first try).
    pub attempt: u32,
}

impl Default for Context {
    fn default() -> Context {
        Context {
            deadline: None,
            cancel: CancellationToken::new(),
            caller: FastStr::empty(),
            trace_id: Bytes::new(),
            dye: FastStr::empty(),
            user_key: 0,
            priority: Priority::Normal,
            attempt: 0,
        }
    }
}

tokio::task_local! {
    static CURRENT: Context;
}

impl Context {
    /// A context with a deadline `timeout` from now.
    pub fn with_timeout(timeout: Duration) -> Context {
        Context {
            deadline: Some(Instant::now() + timeout),
            ..Context::default()
        }
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

    /// The token behind [`cancelled`](Context::cancelled), for the runtime.
    pub(crate) fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The context of the request the current task is serving, if any.
    pub fn current() -> Option<Context> {
        CURRENT.try_with(Context::clone).ok()
    }

    /// Runs `f` with `self` as the current context.
    pub async fn scope<F: std::future::Future>(self, f: F) -> F::Output {
        CURRENT.scope(self, f).await
    }
}
