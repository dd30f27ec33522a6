//! The counters every server and client keeps, at the bottom of the runtime so that both can
//! count without knowing about the monitoring built on top ([`crate::monitor`]: rollups,
//! alarms, exposition, the dashboard, reports).
//!
//! - [`method`]: the counters of one method on each side, sharded by thread, and what reading
//!   them gives;
//! - [`histogram`]: the log-linear latency histograms they hold;
//! - [`registry`]: every service registered in the process, so that every series exists
//!   from startup;
//! - [`process`]: counters of the process rather than of a method;
//! - [`business`]: the service author's own metrics, registered by name;
//! - [`callers`]: each method's requests by calling service, bounded.
//!
//! Counting goes through `&'static` handles resolved at registration: a few relaxed atomic
//! additions per call on cells sharded by thread, with no lock, lookup, allocation or
//! formatting.

pub mod business;
pub mod callers;
pub mod histogram;
pub mod method;
pub mod process;
pub mod registry;

pub use method::{
    ClientTotals, MethodMetrics, REJECTION_NAMES, Rejection, STATUS_NAMES, STATUS_SLOTS,
    ServerTotals, ServiceMetrics,
};
pub use process::{Process, Unknown, Untrusted, process};
pub(crate) use process::{count, note_unknown, note_untrusted};
pub use registry::{find_method, register_client, register_server, services};
