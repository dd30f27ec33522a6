//! `im.account.AccountSvr`: users, argon2 password hashes and session tokens.
//!
//! A wrong password and an unknown name get the same answer, after the same work: a login
//! for an unknown name verifies against a hash made at start, so its time does not tell
//! the names apart. Hashing runs on blocking threads, at most one per core at a time: each
//! takes argon2's memory (19 MiB by default), and a burst of logins must not take it all.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::Deserialize;
use svrkit_runtime::{Code, Context, Status};
use tokio::sync::Semaphore;

use crate::im::account::{
    AccountSvr, CheckTokenReq, FindReq, LoginReq, RegisterReq, RegisterResp, Session,
};
use crate::im::common::UserRef;
use crate::store::{AccountStore, SessionRecord};

/// `[app.account]` settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountConfig {
    /// How long a session token is good for (default one day).
    pub session_ttl_ms: u64,
    /// Argon2 memory cost in KiB (default 19456, OWASP's recommendation).
    pub argon2_memory_kib: u32,
    /// Argon2 iterations (default 2).
    pub argon2_iterations: u32,
}

impl Default for AccountConfig {
    fn default() -> AccountConfig {
        AccountConfig {
            session_ttl_ms: 24 * 3600 * 1000,
            argon2_memory_kib: Params::DEFAULT_M_COST,
            argon2_iterations: Params::DEFAULT_T_COST,
        }
    }
}

/// The account service.
pub struct Account {
    store: Arc<dyn AccountStore>,
    ttl: Duration,
    argon: Argon2<'static>,
    /// What a login for an unknown name is verified against.
    decoy: String,
    hashing: Arc<Semaphore>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Longest name, in bytes.
pub const MAX_NAME: usize = 32;
/// Password length bounds, in bytes.
pub const PASSWORD_BYTES: std::ops::RangeInclusive<usize> = 8..=128;

impl Account {
    /// An account service over `store`.
    ///
    /// # Errors
    /// When the argon2 settings are out of range.
    pub fn new(store: Arc<dyn AccountStore>, config: &AccountConfig) -> Result<Account, String> {
        let params = Params::new(config.argon2_memory_kib, config.argon2_iterations, 1, None)
            .map_err(|e| format!("app.account.argon2_*: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let decoy = argon
            .hash_password(b"not anyone's password")
            .map_err(|e| format!("argon2: {e}"))?
            .to_string();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Account {
            store,
            ttl: Duration::from_millis(config.session_ttl_ms),
            argon,
            decoy,
            hashing: Arc::new(Semaphore::new(cores)),
        })
    }

    /// Runs `f` (argon2 work) on a blocking thread, one per core at a time.
    async fn hashing<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, Status> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| internal("closed"))?;
        let argon = self.argon.clone();
        tokio::task::spawn_blocking(move || f(&argon))
            .await
            .map_err(internal)
    }

    async fn session_of(&self, token: &str) -> Result<(SessionRecord, String), Status> {
        let bytes = parse_token(token)
            .ok_or_else(|| Status::new(Code::UNAUTHENTICATED, "not a session token"))?;
        let session = self
            .store
            .session(bytes)
            .await?
            .ok_or_else(|| Status::new(Code::UNAUTHENTICATED, "unknown session token"))?;
        if session.expires_at_ms <= crate::now_ms() {
            return Err(Status::new(Code::UNAUTHENTICATED, "session token expired"));
        }
        let user = self
            .store
            .user_by_id(session.uid)
            .await?
            .ok_or_else(|| internal("a session of no user"))?;
        Ok((session, user.name))
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::new(Code::INTERNAL, e.to_string())
}

/// Checks a user name: 1 to [`MAX_NAME`] bytes of letters, digits, `_`, `-` and `.`.
pub fn check_name(name: &str) -> Result<(), Status> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Status::new(
            Code::INVALID_ARGUMENT,
            format!("a name is 1 to {MAX_NAME} letters, digits, `_`, `-` or `.`"),
        ))
    }
}

/// The 32 bytes a token's 64 hex digits spell.
pub fn parse_token(token: &str) -> Option<[u8; 32]> {
    let hex = token.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |c: u8| char::from(c).to_digit(16);
        *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

fn token_hex(bytes: &[u8; 32]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl AccountSvr for Account {
    async fn register(&self, _ctx: Context, request: RegisterReq) -> Result<RegisterResp, Status> {
        check_name(&request.name)?;
        if !PASSWORD_BYTES.contains(&request.password.len()) {
            return Err(Status::new(
                Code::INVALID_ARGUMENT,
                "a password is 8 to 128 bytes",
            ));
        }
        // Cheap refusal of a taken name before the costly hash (the store checks again).
        if self.store.user_by_name(&request.name).await?.is_some() {
            return Err(Status::new(Code::INVALID_ARGUMENT, "that name is taken"));
        }
        let password = request.password.clone();
        let hash = self
            .hashing(move |argon| {
                argon
                    .hash_password(password.as_bytes())
                    .map(|h| h.to_string())
            })
            .await?
            .map_err(internal)?;
        match self.store.create_user(&request.name, &hash).await? {
            Some(uid) => Ok(RegisterResp {
                uid,
                ..RegisterResp::default()
            }),
            None => Err(Status::new(Code::INVALID_ARGUMENT, "that name is taken")),
        }
    }

    async fn login(&self, _ctx: Context, request: LoginReq) -> Result<Session, Status> {
        let user = self.store.user_by_name(&request.name).await?;
        let (uid, name, hash) = match user {
            Some(u) => (u.uid, u.name, u.password_hash),
            None => (0, String::new(), self.decoy.clone()),
        };
        let password = request.password.clone();
        let verified = self
            .hashing(move |argon| {
                argon
                    .verify_password(password.as_bytes(), hash.as_str())
                    .is_ok()
            })
            .await?;
        if !verified || uid == 0 {
            return Err(Status::new(Code::UNAUTHENTICATED, "wrong name or password"));
        }
        let mut token = [0u8; 32];
        getrandom::fill(&mut token).map_err(internal)?;
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let expires_at_ms = crate::now_ms().saturating_add(ttl_ms);
        self.store
            .put_session(token, SessionRecord { uid, expires_at_ms })
            .await?;
        Ok(Session {
            uid,
            name: name.into(),
            token: token_hex(&token).into(),
            expires_at_ms,
            ..Session::default()
        })
    }

    async fn check_token(&self, _ctx: Context, request: CheckTokenReq) -> Result<Session, Status> {
        let (session, name) = self.session_of(&request.token).await?;
        Ok(Session {
            uid: session.uid,
            name: name.into(),
            expires_at_ms: session.expires_at_ms,
            ..Session::default()
        })
    }

    async fn find(&self, _ctx: Context, request: FindReq) -> Result<UserRef, Status> {
        let user = if request.uid != 0 {
            self.store.user_by_id(request.uid).await?
        } else {
            self.store.user_by_name(&request.name).await?
        };
        let user = user.ok_or_else(|| Status::new(Code::NOT_FOUND, "no such user"))?;
        Ok(UserRef {
            uin: user.uid,
            nickname: user.name.into(),
            ..UserRef::default()
        })
    }
}
