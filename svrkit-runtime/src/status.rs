//! The outcome of a call: a numeric code and a message.

use std::fmt;

/// A status code. Codes below 1000 belong to svrkit; services define their own from 1000 up.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub u32);

impl Code {
    /// Success.
    pub const OK: Code = Code(0);
    /// The caller cancelled the call.
    pub const CANCELLED: Code = Code(1);
    /// The request was malformed (it could not be decoded, say).
    pub const INVALID_ARGUMENT: Code = Code(2);
    /// The deadline passed before the call completed.
    pub const DEADLINE_EXCEEDED: Code = Code(3);
    /// What the request named does not exist.
    pub const NOT_FOUND: Code = Code(4);
    /// The service could not be reached; trying again later may work.
    pub const UNAVAILABLE: Code = Code(5);
    /// The server shed the call to protect itself.
    pub const OVERLOADED: Code = Code(6);
    /// The server hosts no such service or method.
    pub const UNIMPLEMENTED: Code = Code(7);
    /// A bug on the server (a handler panicked, say).
    pub const INTERNAL: Code = Code(8);
    /// A request or response exceeds a size limit of the sender or the receiver; only that
    /// call fails.
    pub const TOO_LARGE: Code = Code(9);
    /// The caller did not say who it is, or its credentials are wrong.
    pub const UNAUTHENTICATED: Code = Code(10);
    /// The caller is known but may not make this call.
    pub const PERMISSION_DENIED: Code = Code(11);
    /// A quota or rate limit of the caller's is used up (failed logins, messages a minute,
    /// storage): not the server's capacity, so retrying at once does not help; the message
    /// says what was exceeded and, where it can, when to try again.
    pub const RESOURCE_EXHAUSTED: Code = Code(12);
    /// The first code available to applications.
    pub const FIRST_APPLICATION: Code = Code(1000);

    /// Whether the code says a server refused the call unrun or none could be reached
    /// (`OVERLOADED`, `UNAVAILABLE`): the failures a retry may help with, and that tell a
    /// caller a downstream refusal is why its own call failed.
    pub fn is_refusal(self) -> bool {
        matches!(self, Code::OVERLOADED | Code::UNAVAILABLE)
    }

    /// Whose doing the code is, as monitoring counts it unless a method says otherwise
    /// ([`Classes`]): see [`Class`].
    pub const fn class(self) -> Class {
        match self {
            Code::OK => Class::Ok,
            Code::CANCELLED => Class::Cancelled,
            // `OVERLOADED` too: a server's own refusals are counted apart as rejections;
            // one passed on from further down failed this service's caller.
            Code::DEADLINE_EXCEEDED | Code::UNAVAILABLE | Code::INTERNAL | Code::OVERLOADED => {
                Class::Fault
            }
            // The caller's request, credentials or quota; application codes are the
            // service's own business answers ("blocked", "no such group").
            Code(2 | 4 | 7 | 9..=12) => Class::Caller,
            Code(n) if n >= Code::FIRST_APPLICATION.0 => Class::Caller,
            // A code this runtime does not know: a newer peer's, or garbage; nobody can
            // say it was the caller's doing.
            _ => Class::Fault,
        }
    }

    /// The monitoring slot of the code: svrkit's codes each have their own, application
    /// codes share one, unknown codes another (see [`Code::slot_name`]).
    #[inline]
    pub const fn slot(self) -> usize {
        match self.0 {
            n @ 0..=12 => n as usize,
            n if n >= Code::FIRST_APPLICATION.0 => 13,
            _ => 14,
        }
    }

    /// The `status` label of a monitoring slot: the code's name, `application` or
    /// `unknown`.
    pub const fn slot_name(slot: usize) -> &'static str {
        SLOT_NAMES[slot]
    }

    /// The code a slot name stands for (`application` and `unknown` stand for their
    /// slots' first code).
    pub fn from_slot_name(name: &str) -> Option<Code> {
        let slot = SLOT_NAMES.iter().position(|n| *n == name)?;
        Some(match slot {
            13 => Code::FIRST_APPLICATION,
            14 => Code(13),
            n => Code(n as u32),
        })
    }

    /// The name of an svrkit code.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Code::OK => "ok",
            Code::CANCELLED => "cancelled",
            Code::INVALID_ARGUMENT => "invalid_argument",
            Code::DEADLINE_EXCEEDED => "deadline_exceeded",
            Code::NOT_FOUND => "not_found",
            Code::UNAVAILABLE => "unavailable",
            Code::OVERLOADED => "overloaded",
            Code::UNIMPLEMENTED => "unimplemented",
            Code::INTERNAL => "internal",
            Code::TOO_LARGE => "too_large",
            Code::UNAUTHENTICATED => "unauthenticated",
            Code::PERMISSION_DENIED => "permission_denied",
            Code::RESOURCE_EXHAUSTED => "resource_exhausted",
            _ => return None,
        })
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "code {}", self.0),
        }
    }
}

/// Monitoring slots of status codes: svrkit's 13 codes, then application codes (1000 and
/// up) together, then codes this runtime does not know.
pub const SLOTS: usize = 15;

/// The `status` label of each slot.
pub const SLOT_NAMES: [&str; SLOTS] = [
    "ok",
    "cancelled",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "unavailable",
    "overloaded",
    "unimplemented",
    "internal",
    "too_large",
    "unauthenticated",
    "permission_denied",
    "resource_exhausted",
    "application",
    "unknown",
];

/// Whose doing a call's outcome is. Availability, its error rate and its alarms count
/// [`Class::Fault`] only, as SRE practice defines them: a user who mistypes a name or hangs
/// up is not an outage, and must not look like one (`docs/monitoring.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Success.
    Ok,
    /// The server failed the caller: a bug (`internal`), a dependency down
    /// (`unavailable`) or shedding (`overloaded`), an answer too late
    /// (`deadline_exceeded`), a code nobody knows. A server's own refusals of requests it
    /// did not run are counted apart, as rejections, whatever their code.
    Fault,
    /// The caller's doing: a bad request, a name that does not exist, missing rights, a
    /// quota of its own used up, an application's business answer.
    Caller,
    /// The caller gave up (hung up, or its own caller did).
    Cancelled,
}

impl Class {
    /// Every class, in label order.
    pub const ALL: [Class; 4] = [Class::Ok, Class::Fault, Class::Caller, Class::Cancelled];

    /// The `class` label.
    pub const fn name(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::Fault => "fault",
            Class::Caller => "caller",
            Class::Cancelled => "cancelled",
        }
    }
}

/// The class of each status slot for one method: [`Code::class`] unless the IDL moves a
/// code (`faults="not_found"` where a missing record means lost data, say). Built in
/// constant expressions by generated code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classes([Class; SLOTS]);

impl Classes {
    /// Every code in its default class.
    pub const DEFAULT: Classes = {
        let mut classes = [Class::Ok; SLOTS];
        let mut slot = 0;
        while slot < SLOTS {
            classes[slot] = match slot {
                13 => Code::FIRST_APPLICATION.class(),
                14 => Code(13).class(),
                n => Code(n as u32).class(),
            };
            slot += 1;
        }
        Classes(classes)
    };

    /// These classes with `code` (and every code of its slot) in `class`.
    pub const fn with(mut self, code: Code, class: Class) -> Classes {
        self.0[code.slot()] = class;
        self
    }

    /// The class of `code`.
    #[inline]
    pub const fn of(&self, code: Code) -> Class {
        self.0[code.slot()]
    }

    /// The class of a slot.
    #[inline]
    pub const fn of_slot(&self, slot: usize) -> Class {
        self.0[slot]
    }

    /// The sum of `counts` (per slot) whose slot is in `class`.
    pub fn count(&self, class: Class, counts: &[u64; SLOTS]) -> u64 {
        counts
            .iter()
            .zip(&self.0)
            .filter(|(_, c)| **c == class)
            .fold(0u64, |n, (k, _)| n.saturating_add(*k))
    }
}

impl Default for Classes {
    fn default() -> Classes {
        Classes::DEFAULT
    }
}

/// An error status: what went wrong with a call, as the caller sees it.
#[derive(Clone, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
}

impl Status {
    /// A status with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

    /// An application error; `code` should be 1000 or more.
    pub fn application(code: u32, message: impl Into<String>) -> Status {
        Status::new(Code(code), message)
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// [`Code::CANCELLED`].
    pub fn cancelled(message: impl Into<String>) -> Status {
        Status::new(Code::CANCELLED, message)
    }
    /// [`Code::INVALID_ARGUMENT`].
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(Code::INVALID_ARGUMENT, message)
    }
    /// [`Code::DEADLINE_EXCEEDED`].
    pub fn deadline_exceeded(message: impl Into<String>) -> Status {
        Status::new(Code::DEADLINE_EXCEEDED, message)
    }
    /// [`Code::NOT_FOUND`].
    pub fn not_found(message: impl Into<String>) -> Status {
        Status::new(Code::NOT_FOUND, message)
    }
    /// [`Code::UNAVAILABLE`].
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(Code::UNAVAILABLE, message)
    }
    /// [`Code::OVERLOADED`].
    pub fn overloaded(message: impl Into<String>) -> Status {
        Status::new(Code::OVERLOADED, message)
    }
    /// [`Code::UNIMPLEMENTED`].
    pub fn unimplemented(message: impl Into<String>) -> Status {
        Status::new(Code::UNIMPLEMENTED, message)
    }
    /// [`Code::INTERNAL`].
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::INTERNAL, message)
    }
    /// [`Code::TOO_LARGE`].
    pub fn too_large(message: impl Into<String>) -> Status {
        Status::new(Code::TOO_LARGE, message)
    }
    /// [`Code::UNAUTHENTICATED`].
    pub fn unauthenticated(message: impl Into<String>) -> Status {
        Status::new(Code::UNAUTHENTICATED, message)
    }
    /// [`Code::PERMISSION_DENIED`].
    pub fn permission_denied(message: impl Into<String>) -> Status {
        Status::new(Code::PERMISSION_DENIED, message)
    }
    /// [`Code::RESOURCE_EXHAUSTED`].
    pub fn resource_exhausted(message: impl Into<String>) -> Status {
        Status::new(Code::RESOURCE_EXHAUSTED, message)
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status({:?}: {:?})", self.code, self.message)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for Status {}

impl From<crate::codec::DecodeError> for Status {
    fn from(e: crate::codec::DecodeError) -> Status {
        Status::invalid_argument(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_name_every_code() {
        for n in 0..13 {
            let code = Code(n);
            assert_eq!(Code::slot_name(code.slot()), code.name().unwrap());
            assert_eq!(Code::from_slot_name(code.name().unwrap()), Some(code));
        }
        assert_eq!(Code(1000).slot(), 13);
        assert_eq!(Code(4711).slot(), 13);
        assert_eq!(Code(77).slot(), 14);
        assert_eq!(Code::from_slot_name("application"), Some(Code(1000)));
        assert_eq!(Code::from_slot_name("bogus"), None);
    }

    #[test]
    fn only_the_servers_failures_are_faults() {
        let faults: Vec<_> = (0..15)
            .filter(|&s| Classes::DEFAULT.of_slot(s) == Class::Fault)
            .map(Code::slot_name)
            .collect();
        assert_eq!(
            faults,
            [
                "deadline_exceeded",
                "unavailable",
                "overloaded",
                "internal",
                "unknown"
            ]
        );
        assert_eq!(Code::NOT_FOUND.class(), Class::Caller);
        assert_eq!(Code(1001).class(), Class::Caller);
        assert_eq!(Code::CANCELLED.class(), Class::Cancelled);

        let moved = Classes::DEFAULT
            .with(Code::NOT_FOUND, Class::Fault)
            .with(Code(1234), Class::Fault);
        assert_eq!(moved.of(Code::NOT_FOUND), Class::Fault);
        assert_eq!(moved.of(Code(1000)), Class::Fault);
        let mut counts = [0; SLOTS];
        counts[Code::NOT_FOUND.slot()] = 3;
        counts[Code::INTERNAL.slot()] = 2;
        counts[Code(1000).slot()] = 5;
        assert_eq!(Classes::DEFAULT.count(Class::Fault, &counts), 2);
        assert_eq!(moved.count(Class::Fault, &counts), 10);
    }
}
