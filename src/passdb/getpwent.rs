//! The getpwent passdb (`-a getpwent`), after Cyrus's `auth_getpwent.c`: `crypt(3)` of the
//! password field that `getpwnam_r` returns, so every NSS source works (files, LDAP-backed
//! NSS, nss_wrapper in the tests). On a system with shadow passwords that field is `x` and
//! nothing matches, as with Cyrus: the log says so once at start, and points to `-a shadow`.
//!
//! Unlike Cyrus: an unknown user, a locked or an empty field costs one hash like everyone
//! else (a dummy yescrypt), and all of them get one reply (Cyrus answers `NO Username lookup
//! failure: ...` and `NO Incorrect password`, which tells who exists); an empty password
//! field never matches; with `-c` a cached success is tied to the field's current hash.

use std::sync::Arc;
use std::time::Instant;

use zeroize::Zeroizing;

use super::{Answer, Context, Module, Passdb, PassdbError, Query};
use crate::crypt;
use crate::request::Printable;
use crate::secret::Password;
use crate::verdict::{PassdbKind, PassdbResult, Replies, SuccessCache};

/// `-a getpwent`.
pub(super) const MODULE: Module = Module {
    kind: PassdbKind {
        name: "getpwent",
        replies: Replies {
            ok: "",
            failure: "authentication failed",
            disabled: "",
            expired: "",
            error: crate::verdict::INTERNAL_FAILURE,
        },
    },
    about: Some("the password field of passwd(5) entries through NSS (getpwnam_r); libxcrypt"),
    open: |_| Ok(Arc::new(Getpwent::new()?)),
    table: None,
};

/// The getpwent passdb.
#[derive(Debug)]
pub(super) struct Getpwent {
    /// What an unknown user's password is hashed against, so that the reply takes as long.
    dummy: String,
    /// Whether `root`'s entry had `x` for a password when the passdb opened.
    shadowed: bool,
}

impl Getpwent {
    fn new() -> Result<Getpwent, PassdbError> {
        let dummy = crypt::hash(b"a password nobody has", "$y$").ok_or(PassdbError::NoYescrypt)?;
        let shadowed = matches!(
            password_field(b"root"),
            Ok(Some(field)) if field.as_str() == "x"
        );
        Ok(Getpwent { dummy, shadowed })
    }

    /// The check, on the pool: NSS may ask the network, and a hash takes milliseconds.
    fn verify_plain(
        &self,
        q: &Query<'_>,
        password: &Password,
        cache: Option<&dyn SuccessCache>,
    ) -> Result<PassdbResult, PassdbError> {
        let field = password_field(q.authid).map_err(|source| PassdbError::Nss {
            user: Printable(q.authid).to_string(),
            source,
        })?;
        let Some(field) = field else {
            let _ = crypt::verify(password.expose(), &self.dummy);
            return Ok(PassdbResult::UserUnknown);
        };
        let slot: [&[u8]; 3] = [b"getpwent", q.authid, field.as_bytes()];
        if cache.is_some_and(|c| c.hit(&slot, password.expose(), Instant::now())) {
            tracing::debug!(
                "getpwent: cache hit for {}, hash not recomputed",
                Printable(q.authid)
            );
            return Ok(PassdbResult::Ok);
        }
        match crypt::verify(password.expose(), &field) {
            Some(true) => {
                if let Some(cache) = cache {
                    cache.insert(&slot, password.expose(), Instant::now());
                }
                Ok(PassdbResult::Ok)
            }
            Some(false) => Ok(PassdbResult::PasswordMismatch),
            // `x` (shadowed), locked, empty: never a match, at the same cost.
            None => {
                let _ = crypt::verify(password.expose(), &self.dummy);
                Ok(PassdbResult::PasswordMismatch)
            }
        }
    }
}

impl Passdb for Getpwent {
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
        let q = q.to_owned();
        Answer::blocking(move || self.verify_plain(&q.query(), &password, cache.as_deref()))
    }

    fn notices(&self) -> Vec<String> {
        if self.shadowed {
            vec![
                "getpwent: this system keeps its passwords in /etc/shadow (root's passwd entry \
                 says x): no password will match here; -a shadow reads them"
                    .into(),
            ]
        } else {
            Vec::new()
        }
    }
}

/// The password field of `user`'s passwd entry (`getpwnam_r`, through NSS); `None` when there
/// is no such user (or the name cannot be one).
fn password_field(user: &[u8]) -> std::io::Result<Option<Zeroizing<String>>> {
    let Ok(name) = std::str::from_utf8(user) else {
        return Ok(None);
    };
    if name.is_empty() || name.contains('\0') {
        return Ok(None);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(entry)) => Ok(Some(Zeroizing::new(
            entry.passwd.to_string_lossy().into_owned(),
        ))),
        Ok(None) => Ok(None),
        // "Not found" as some NSS modules say it (getpwnam_r(3): ENOENT, ESRCH, EBADF, EPERM;
        // nss_wrapper says ENOENT), as the shadow passdb reads getspnam_r's.
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ESRCH) => Ok(None),
        Err(errno) => Err(std::io::Error::from(errno)),
    }
}
