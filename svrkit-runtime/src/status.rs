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
