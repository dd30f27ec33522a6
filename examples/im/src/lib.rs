//! A messaging backend written as svrkit services: every service is defined in
//! `idl/im/*.xml`, its structs, codec, clients and servers generated; this crate holds only
//! the business logic and the storage.
//!
//! | service | what it does |
//! |---|---|
//! | [`account`] `im.account.AccountSvr` | names, argon2 password hashes, session tokens |
//! | [`seq`] `im.seq.SeqAllocSvr`, `SeqStoreSvr` | seqsvr: per-user sequences from memory, sections' `max_seq` on disk |
//! | [`msg`] `im.msg.MsgSvr` | inboxes: idempotent appends committed in groups, fetch, long poll |
//! | [`spam`] `im.spam.SpamSvr` | a content check, called as a weak dependency |
//! | [`group`] `im.group.GroupSvr` | groups and fan-out to every member's inbox |
//! | [`gateway`] `im.gateway.GatewaySvr` | what clients call: tokens checked, sync with long poll |
//!
//! [`backend`] hosts any set of them in one process, reaching the others in process or over
//! the network as the configuration says. `docs/im.md` describes the design.

pub mod account;
pub mod backend;
mod figures;
pub mod gateway;
pub mod group;
pub mod home;
pub mod msg;
pub mod seq;
pub mod spam;
pub mod store;
pub mod throttle;

/// The generated code of `idl/im/*.xml`, at the module paths of their packages.
#[allow(missing_docs)]
pub mod im {
    /// `im.common`.
    pub mod common {
        svrkit_runtime::include_idl!("im.common");
    }
    /// `im.account`.
    pub mod account {
        svrkit_runtime::include_idl!("im.account");
    }
    /// `im.seq`.
    pub mod seq {
        svrkit_runtime::include_idl!("im.seq");
    }
    /// `im.msg`.
    pub mod msg {
        svrkit_runtime::include_idl!("im.msg");
    }
    /// `im.spam`.
    pub mod spam {
        svrkit_runtime::include_idl!("im.spam");
    }
    /// `im.group`.
    pub mod group {
        svrkit_runtime::include_idl!("im.group");
    }
    /// `im.gateway`.
    pub mod gateway {
        svrkit_runtime::include_idl!("im.gateway");
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
