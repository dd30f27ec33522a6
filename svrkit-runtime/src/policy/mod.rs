//! Avalanche protection: the policies that keep an overloaded or failing service from taking
//! its callers down with it, on by default and driven by what the IDL says about each method
//! (`timeout_ms`, `retry`, `max_attempts`, `priority`).
//!
//! - [`admission`]: the server's DAGOR overload control. Overload is read from how long
//!   requests wait to start; an overloaded server lowers its *admission level* so that about
//!   5% fewer requests get in, by business priority first and a per-hour hash of the user
//!   second, and refuses the rest `OVERLOADED` before decoding them. Every response carries
//!   the level, and clients drop locally what the server would refuse.
//! - [`priority`]: where a request stands in the shedding order, the same on every hop of a
//!   call chain, so that a request that makes several calls is admitted by all or none.
//! - [`shares`]: fairness among strangers: an untrusted address or user that has had its
//!   share of the capacity ranks last, so that under overload one of them cannot take the
//!   admission budget from the others.
//! - [`budget`] and [`throttle`]: what keeps retries and calls to a refusing backend from
//!   multiplying load: retries are at most a fifth of requests, and a backend that keeps
//!   refusing gets requests dropped at the caller (the SRE book's adaptive throttling).
//! - `window`: the lock-free counters over sliding time windows these share.
//!
//! The client side (retries, balancers, ejection of failing replicas, gray release, weak
//! dependencies) lives in [`crate::client`], which uses these. `docs/policies.md` describes
//! the whole design and the measurements.

pub mod admission;
pub mod budget;
pub mod priority;
pub mod shares;
pub mod throttle;
pub(crate) mod window;

pub use admission::AdmissionConfig;
