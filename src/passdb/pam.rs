//! The PAM passdb (`-a pam`), after Cyrus's `auth_pam.c`: the PAM service is the request's
//! service (`smtp` from Postfix, `imap` from Cyrus IMAP) unless `--pam-service` names one;
//! `pam_authenticate` then `pam_acct_mgmt`, both `PAM_SILENT`; the conversation answers
//! echo-off prompts with the password and echo-on prompts with the user name, and never
//! prints. `PAM_RHOST` carries the client's address when the request has one (Cyrus master).
//!
//! Each transaction runs whole on one thread of the daemon's bounded blocking pool.

use std::ffi::{CStr, CString};
use std::sync::Arc;
use std::time::Instant;

use pam_client::{ConversationHandler, ErrorCode, Flag};
use zeroize::Zeroizing;

use super::{Answer, Context, Module, Passdb, PassdbError, Query};
use crate::request::Printable;
use crate::secret::Password;
use crate::verdict::{PassdbKind, PassdbResult, Replies, SuccessCache};

/// `-a pam`.
pub(super) const MODULE: Module = Module {
    kind: PassdbKind {
        name: "pam",
        // Cyrus's texts: a failed pam_authenticate, and a failed pam_acct_mgmt (which runs
        // only after the password was right).
        replies: Replies {
            ok: "",
            failure: "PAM auth error",
            disabled: "PAM acct error",
            expired: "PAM acct error",
            error: crate::verdict::INTERNAL_FAILURE,
        },
    },
    about: Some("a PAM stack: the request's service, or --pam-service"),
    open: |settings| Ok(Arc::new(Pam::new(settings.pam_service.clone()))),
    table: None,
};

/// The PAM passdb.
#[derive(Debug)]
pub struct Pam {
    service: Option<String>,
}

/// The non-interactive conversation.
struct Conversation {
    user: String,
    password: Zeroizing<Vec<u8>>,
}

impl ConversationHandler for Conversation {
    fn prompt_echo_on(&mut self, _prompt: &CStr) -> Result<CString, ErrorCode> {
        CString::new(self.user.as_bytes()).map_err(|_| ErrorCode::CONV_ERR)
    }

    fn prompt_echo_off(&mut self, _prompt: &CStr) -> Result<CString, ErrorCode> {
        // A password holding NUL cannot be given to PAM; it fails as a wrong one would.
        CString::new(self.password.as_slice()).map_err(|_| ErrorCode::CONV_ERR)
    }

    fn text_info(&mut self, msg: &CStr) {
        tracing::debug!("PAM info for {}: {}", self.user, msg.to_string_lossy());
    }

    fn error_msg(&mut self, msg: &CStr) {
        tracing::debug!("PAM message for {}: {}", self.user, msg.to_string_lossy());
    }
}

/// Which call a PAM result came from: the two map to different verdicts and replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Authenticate,
    AcctMgmt,
}

/// Maps a PAM error onto a verdict, as Dovecot's passdb-pam does; `Err` for PAM or a module
/// that broke (service file unreadable, module missing, backend unreachable).
fn verdict(stage: Stage, code: ErrorCode) -> Option<PassdbResult> {
    Some(match (stage, code) {
        (_, ErrorCode::USER_UNKNOWN) => PassdbResult::UserUnknown,
        (
            Stage::Authenticate,
            ErrorCode::AUTH_ERR | ErrorCode::MAXTRIES | ErrorCode::CRED_INSUFFICIENT,
        ) => PassdbResult::PasswordMismatch,
        (_, ErrorCode::NEW_AUTHTOK_REQD | ErrorCode::AUTHTOK_EXPIRED | ErrorCode::CRED_EXPIRED) => {
            PassdbResult::PassExpired
        }
        (_, ErrorCode::ACCT_EXPIRED) => PassdbResult::UserDisabled,
        (Stage::AcctMgmt, ErrorCode::PERM_DENIED | ErrorCode::AUTH_ERR) => {
            PassdbResult::UserDisabled
        }
        _ => return None,
    })
}

impl Pam {
    /// A PAM passdb; `service` overrides the request's service as the PAM service name.
    pub fn new(service: Option<String>) -> Pam {
        Pam { service }
    }

    /// The verdict from the cache alone (no PAM call): tried on the reactor before the check
    /// goes to the blocking pool. PAM cannot be asked whether a password changed, so a
    /// success is remembered by service and user until the cache's TTL.
    fn verify_cached(
        &self,
        q: &Query<'_>,
        password: &Password,
        cache: &dyn SuccessCache,
    ) -> Option<PassdbResult> {
        let service = self.service_for(q);
        let user = std::str::from_utf8(q.authid).ok()?;
        let slot: [&[u8]; 3] = [b"pam", service.as_bytes(), user.as_bytes()];
        if !cache.hit(&slot, password.expose(), Instant::now()) {
            return None;
        }
        tracing::debug!("pam: cache hit for {user} (service {service}), PAM not asked");
        Some(PassdbResult::Ok)
    }

    fn service_for(&self, q: &Query<'_>) -> String {
        match &self.service {
            Some(service) => service.clone(),
            None => String::from_utf8_lossy(q.service).into_owned(),
        }
    }

    /// One PAM transaction; `cache` records a success.
    fn verify_plain(
        &self,
        q: &Query<'_>,
        password: &Password,
        cache: Option<&dyn SuccessCache>,
    ) -> Result<PassdbResult, PassdbError> {
        let service = self.service_for(q);
        // PAM takes C strings; a user name that is not UTF-8 cannot exist in it.
        let Ok(user) = std::str::from_utf8(q.authid) else {
            return Ok(PassdbResult::UserUnknown);
        };
        let password = password.expose();
        let slot: [&[u8]; 3] = [b"pam", service.as_bytes(), user.as_bytes()];
        let now = Instant::now();
        let conversation = Conversation {
            user: user.to_owned(),
            password: Zeroizing::new(password.to_vec()),
        };
        let broke = |call: &'static str, source: pam_client::Error| PassdbError::Pam {
            call,
            service: service.clone(),
            user: Printable(user.as_bytes()).to_string(),
            source,
        };
        let mut ctx = pam_client::Context::new(&service, Some(user), conversation)
            .map_err(|e| broke("pam_start", e))?;
        if let Some(host) = q.peer.host() {
            ctx.set_rhost(Some(&host))
                .map_err(|e| broke("pam_set_item(PAM_RHOST)", e))?;
        }
        if let Err(e) = ctx.authenticate(Flag::SILENT) {
            return match verdict(Stage::Authenticate, e.code()) {
                Some(v) => Ok(v),
                None => Err(broke("pam_authenticate", e)),
            };
        }
        if let Err(e) = ctx.acct_mgmt(Flag::SILENT) {
            return match verdict(Stage::AcctMgmt, e.code()) {
                Some(v) => Ok(v),
                None => Err(broke("pam_acct_mgmt", e)),
            };
        }
        if let Some(cache) = cache {
            cache.insert(&slot, password, now);
        }
        Ok(PassdbResult::Ok)
    }
}

/// A cache hit is answered on the reactor; a PAM transaction runs whole on the pool (modules
/// sleep on failure, and may wait on the network).
impl Passdb for Pam {
    fn kind(&self) -> PassdbKind {
        MODULE.kind
    }

    fn verify(
        self: Arc<Self>,
        q: &Query<'_>,
        password: Password,
        cx: &Context<'_>,
    ) -> Answer<PassdbResult> {
        let cache = cx.cache.cloned();
        if let Some(cache) = &cache {
            if let Some(verdict) = self.verify_cached(q, &password, cache.as_ref()) {
                return Answer::Now(Ok(verdict));
            }
        }
        let q = q.to_owned();
        Answer::blocking(move || self.verify_plain(&q.query(), &password, cache.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_by_stage() {
        use PassdbResult::*;
        let rows = [
            (
                Stage::Authenticate,
                ErrorCode::AUTH_ERR,
                Some(PasswordMismatch),
            ),
            (
                Stage::Authenticate,
                ErrorCode::USER_UNKNOWN,
                Some(UserUnknown),
            ),
            (
                Stage::Authenticate,
                ErrorCode::MAXTRIES,
                Some(PasswordMismatch),
            ),
            (Stage::Authenticate, ErrorCode::AUTHINFO_UNAVAIL, None),
            (Stage::Authenticate, ErrorCode::SYSTEM_ERR, None),
            (Stage::Authenticate, ErrorCode::ABORT, None),
            (Stage::AcctMgmt, ErrorCode::PERM_DENIED, Some(UserDisabled)),
            (Stage::AcctMgmt, ErrorCode::ACCT_EXPIRED, Some(UserDisabled)),
            (
                Stage::AcctMgmt,
                ErrorCode::NEW_AUTHTOK_REQD,
                Some(PassExpired),
            ),
            (Stage::AcctMgmt, ErrorCode::USER_UNKNOWN, Some(UserUnknown)),
            (Stage::AcctMgmt, ErrorCode::SERVICE_ERR, None),
        ];
        for (stage, code, want) in rows {
            assert_eq!(verdict(stage, code), want, "{stage:?} {code:?}");
        }
    }
}
