//! Verdicts as data, shared by every part: what a passdb decided ([`PassdbResult`]), what a
//! password check came to ([`Outcome`]), and how the driver answers one step of a SASL exchange
//! ([`Answer`], with Dovecot's [`FailCode`]s). A verdict is a normal return value; a backend
//! that broke is told apart ([`Outcome::Error`]) and answered differently on the wire.
//!
//! After Dovecot's `enum passdb_result` (`passdb.h`) and `AUTH_CLIENT_FAIL_CODE_*`
//! (`auth-client-interface.h`).

use std::fmt;
use std::time::Instant;

/// A passdb as the other parts name it: its Cyrus `-a` name, and the texts Cyrus's saslauthd
/// answers its verdicts with. Each passdb declares its own (the table of passdbs in
/// `crate::passdb` lists them); the codecs and the metrics read them here, without knowing
/// any backend.
#[derive(Debug, Clone, Copy)]
pub struct PassdbKind {
    /// The `-a` name (`sasldb`, `pam`).
    pub name: &'static str,
    /// What the saslauthd protocol answers with.
    pub replies: Replies,
}

impl PassdbKind {
    /// The `-a` name.
    pub fn name(self) -> &'static str {
        self.name
    }
}

impl PartialEq for PassdbKind {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for PassdbKind {}

impl fmt::Display for PassdbKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// The reasons Cyrus's saslauthd gives after `OK` or `NO` for one backend's verdicts (empty:
/// a bare `OK` or `NO`). None of them tells an unknown user from a wrong password: where
/// Cyrus's does (shadow's `Invalid username`), ours says the same for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replies {
    /// After `OK`.
    pub ok: &'static str,
    /// A wrong password or an unknown user.
    pub failure: &'static str,
    /// A disabled account (told only after the right password).
    pub disabled: &'static str,
    /// An expired password (the same).
    pub expired: &'static str,
    /// A backend that broke or did not answer in time (unless the passdb's error says
    /// more): Cyrus's `saslauthd-main.c` text, `internal mechanism failure`, for most.
    pub error: &'static str,
}

impl Replies {
    /// Bare `OK` and `NO` for every verdict, as Cyrus's `auth_sasldb`.
    pub const BARE: Replies = Replies {
        ok: "",
        failure: "",
        disabled: "",
        expired: "",
        error: INTERNAL_FAILURE,
    };
}

/// What Cyrus's saslauthd answers after `NO` for a backend that broke.
pub const INTERNAL_FAILURE: &str = "internal mechanism failure";

/// Why an OAuth 2.0 access token was refused: for the log (never the token), and, on the wire,
/// one error challenge for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Not a JWT, or a claim of the wrong type.
    Malformed,
    /// Signed with an algorithm the allow-list does not have (`none`, an HMAC, ...).
    Algorithm,
    /// No key of the provider's has its `kid`, even after the keys were fetched again.
    UnknownKey,
    /// The signature does not verify.
    Signature,
    /// Issued by another issuer.
    Issuer,
    /// For another audience (neither `aud` nor `azp` is ours).
    Audience,
    /// Past its `exp`.
    Expired,
    /// Before its `nbf`, or issued (`iat`) in the future.
    NotYetValid,
    /// Without a scope it must have.
    Scope,
    /// Introspection says it is not active (revoked, expired, unknown).
    Inactive,
    /// It names no user (the configured claim is missing or empty).
    NoUser,
    /// It names another user than the client did, or one outside the configured domain.
    UserMismatch,
}

impl TokenRefusal {
    /// Its name in the metrics (`token_refusals_total{reason}`).
    pub fn name(self) -> &'static str {
        match self {
            TokenRefusal::Malformed => "malformed",
            TokenRefusal::Algorithm => "algorithm",
            TokenRefusal::UnknownKey => "unknown_key",
            TokenRefusal::Signature => "signature",
            TokenRefusal::Issuer => "issuer",
            TokenRefusal::Audience => "audience",
            TokenRefusal::Expired => "expired",
            TokenRefusal::NotYetValid => "not_yet_valid",
            TokenRefusal::Scope => "scope",
            TokenRefusal::Inactive => "inactive",
            TokenRefusal::NoUser => "no_user",
            TokenRefusal::UserMismatch => "user_mismatch",
        }
    }
}

impl fmt::Display for TokenRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenRefusal::Malformed => "malformed token",
            TokenRefusal::Algorithm => "algorithm not allowed",
            TokenRefusal::UnknownKey => "signed with an unknown key",
            TokenRefusal::Signature => "bad signature",
            TokenRefusal::Issuer => "wrong issuer",
            TokenRefusal::Audience => "wrong audience",
            TokenRefusal::Expired => "expired",
            TokenRefusal::NotYetValid => "not yet valid",
            TokenRefusal::Scope => "missing scope",
            TokenRefusal::Inactive => "not active",
            TokenRefusal::NoUser => "names no user",
            TokenRefusal::UserMismatch => "names another user",
        })
    }
}

/// The verdict of a passdb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassdbResult {
    /// The password is right.
    Ok,
    /// The user exists; the password is wrong.
    PasswordMismatch,
    /// No such user.
    UserUnknown,
    /// The account is locked or disabled.
    UserDisabled,
    /// The password or account has expired.
    PassExpired,
}

impl fmt::Display for PassdbResult {
    /// The reason written in log lines (never on the wire: there, unknown user and wrong
    /// password look the same).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PassdbResult::Ok => "success",
            PassdbResult::PasswordMismatch => "password mismatch",
            PassdbResult::UserUnknown => "unknown user",
            PassdbResult::UserDisabled => "account disabled",
            PassdbResult::PassExpired => "password expired",
        })
    }
}

/// What one password check came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The request was refused before any lookup.
    Refused(Refusal),
    /// The passdb's verdict.
    Verdict(PassdbResult),
    /// The passdb broke (the driver has logged why): not a wrong password.
    Error,
}

/// Requests refused without asking the passdb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An empty login (`NO NULL login received`).
    EmptyLogin,
    /// An empty password (`NO NULL password received`).
    EmptyPassword,
    /// A NUL byte in the login or realm. Cyrus truncates at it (so `alice\0zz` is accepted
    /// as `alice`); we refuse, as an ordinary authentication failure.
    NulByte,
}

impl fmt::Display for Refusal {
    /// The name, for log lines (`[reason=EmptyLogin]`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Remembers recent successful checks, for passdbs whose checks are costly (a yescrypt hash,
/// a PAM stack). The driver owns it; a passdb names the slot of a check and puts into it
/// whatever would make an old password invalid (the shadow passdb: the current hash), so that
/// a changed password misses at once.
pub trait SuccessCache: Send + Sync {
    /// Whether `password` succeeded for the check named by `slot`, recently enough.
    fn hit(&self, slot: &[&[u8]], password: &[u8], now: Instant) -> bool;
    /// Records a success; replaces what the slot held (an older password).
    fn insert(&self, slot: &[&[u8]], password: &[u8], now: Instant);
}

/// The driver's answer to one step of a SASL exchange (Dovecot's `OK`, `CONT`, `FAIL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Send this challenge (or the server's final data) and wait for the client's next step.
    Continue {
        /// The request id.
        id: u32,
        /// Raw bytes; the protocol encodes them.
        data: Vec<u8>,
    },
    /// The client is authenticated as `user`.
    Success {
        /// The request id.
        id: u32,
        /// The user name as the client gave it.
        user: Vec<u8>,
        /// The server's last message (SCRAM's `v=`), when the client takes it here.
        final_data: Option<Vec<u8>>,
    },
    /// The exchange failed.
    Failure {
        /// The request id.
        id: u32,
        /// The user, when the exchange had named one.
        user: Option<Vec<u8>>,
        /// Why, for clients that act on it.
        code: Option<FailCode>,
        /// A text for the client's log.
        reason: Option<FailReason>,
    },
}

impl Answer {
    /// A failure with no code and no reason: what a wrong password gets.
    pub fn failure(id: u32, user: Option<Vec<u8>>) -> Answer {
        Answer::Failure {
            id,
            user,
            code: None,
            reason: None,
        }
    }
}

/// Dovecot's failure codes (`code=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailCode {
    /// The backend broke; try again later (`temp_fail`).
    TempFail,
    /// The account is disabled (`user_disabled`).
    UserDisabled,
    /// The password has expired (`pass_expired`).
    PassExpired,
    /// The client's data was not base64 (`invalid_base64`).
    InvalidBase64,
}

/// The texts a failure may carry (`reason=`), as Dovecot words them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    /// `AUTH` with an initial response that is not base64.
    InitialNotBase64,
    /// `CONT` with data that is not base64.
    ContinuedNotBase64,
    /// `CONT` for a request that is not (or no longer) there.
    TimedOut,
    /// `CONT` while the request waits for the backend.
    UnexpectedContinuation,
    /// The passdb's own words for a refused account (Dovecot's `reason` field, with
    /// `nologin`).
    Passdb(String),
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailReason::InitialNotBase64 => "Invalid base64 data in initial response",
            FailReason::ContinuedNotBase64 => "Invalid base64 data in continued response",
            FailReason::TimedOut => "Authentication request timed out",
            FailReason::UnexpectedContinuation => "Unexpected continuation",
            FailReason::Passdb(text) => text,
        })
    }
}
