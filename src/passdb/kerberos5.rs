//! The Kerberos passdb (`-a kerberos5`), after Cyrus's `auth_krb5.c` (MIT Kerberos): a
//! password is right when the KDC gives `user@REALM` a ticket for it **and** that ticket
//! verifies against the host's keytab (`host/<this host>` by default), so that an answer
//! from a forged KDC logs nobody in. Through MIT's own libkrb5, so `KRB5_CONFIG` and
//! `KRB5_KTNAME` work as for every Kerberos program; on the `-n` pool, since it blocks.
//!
//! The same options as Cyrus's, from the `-O` file (else `/etc/saslauthd.conf` when it
//! exists, a file the LDAP passdb's keys may share): `krb5_keytab`, `krb5_verify_principal`
//! (default `host`), and `krb5_servername` (the host part of the verifying principal; default
//! this host's name). Replies as Cyrus's: a bare `OK`; `NO krb5_get_init_creds_password
//! failed` when no ticket was had, `NO krb5_verify_init_creds failed` for a ticket the keytab
//! cannot verify. Unlike it:
//! - the realm is not doubled (cyrus-sasl #832: Cyrus 2.1.28 appends the realm to a login
//!   that already has one, `alice@EXAMPLE.ORG@EXAMPLE.ORG`, so every `-r` login fails);
//! - a KDC that does not answer is a temporary failure within the reply deadline (Postfix's
//!   Dovecot mode: 454), not a wrong password, and is not throttled as one;
//! - a NUL in the password is refused without asking the KDC (Cyrus cuts it there);
//! - an unknown principal, or one the KDC refuses whatever the password (disabled, expired),
//!   costs the same string-to-key work as a wrong password, so that the reply's timing does
//!   not tell them apart (the KDC answers those at once).

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::Arc;

use super::{
    Access, Answer, CacheUse, Context, DefaultRealm, Module, Passdb, PassdbError, Query, Settings,
};
use crate::request::Printable;
use crate::secret::Password;
use crate::verdict::{PassdbKind, PassdbResult, Replies};

/// Cyrus's text when no ticket was had (a wrong password, an unknown user, a KDC that
/// refuses or does not answer).
const NO_TICKET: &str = "krb5_get_init_creds_password failed";

/// Debian's Cyrus's text for a ticket the keytab cannot verify.
const UNVERIFIED: &str = "krb5_verify_init_creds failed";

/// `-a kerberos5`.
pub(super) const MODULE: Module = Module {
    kind: PassdbKind {
        name: "kerberos5",
        replies: Replies {
            ok: "",
            failure: NO_TICKET,
            disabled: NO_TICKET,
            expired: NO_TICKET,
            error: NO_TICKET,
        },
    },
    about: Some(
        "a ticket from the KDC for user@REALM, verified against the host's keytab, as Cyrus's \
         auth_krb5 (MIT libkrb5; -O file: krb5_keytab, krb5_verify_principal)",
    ),
    open: |settings| Ok(Arc::new(Kerberos5::new(settings)?)),
    table: None,
};

/// The file Cyrus reads when `-O` names none.
const DEFAULT_CONF: &str = "/etc/saslauthd.conf";

/// MIT's default keytab, unless `KRB5_KTNAME` or krb5.conf says otherwise.
const DEFAULT_KEYTAB: &str = "/etc/krb5.keytab";

/// How long a ticket asked for lives: it is thrown away at once (Cyrus: 15 minutes too).
const TICKET_LIFE_SECS: i32 = 900;

/// The Kerberos passdb.
#[derive(Debug)]
pub(super) struct Kerberos5 {
    /// `krb5_keytab`: `None` is libkrb5's default (`KRB5_KTNAME`, else the system's).
    keytab: Option<CString>,
    /// `krb5_verify_principal`: the service of the principal tickets are verified with.
    verify_service: CString,
    /// `krb5_servername`: its host (`None`: this host's name, as libkrb5 canonicalizes it).
    verify_host: Option<CString>,
}

impl Kerberos5 {
    fn new(settings: &Settings) -> Result<Kerberos5, PassdbError> {
        let conf = match settings.options.first() {
            Some(path) => Some(PathBuf::from(path)),
            None => Path::new(DEFAULT_CONF)
                .exists()
                .then(|| PathBuf::from(DEFAULT_CONF)),
        };
        let mut passdb = Kerberos5 {
            keytab: None,
            verify_service: c"host".to_owned(),
            verify_host: None,
        };
        if let Some(path) = conf {
            let text =
                std::fs::read_to_string(&path).map_err(|source| PassdbError::Unreadable {
                    path: path.clone(),
                    source,
                    hint: "",
                })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                // saslauthd.conf's `key: value`; other passdbs' keys may share the file.
                let Some((key, value)) = line.split_once(':') else {
                    continue;
                };
                let value = value.trim();
                let c = |v: &str| {
                    CString::new(v).map_err(|_| {
                        PassdbError::Settings(format!(
                            "{}, line {}: {key}: a NUL in the value",
                            path.display(),
                            n + 1
                        ))
                    })
                };
                match key.trim() {
                    "krb5_keytab" => passdb.keytab = Some(c(value)?),
                    "krb5_verify_principal" => passdb.verify_service = c(value)?,
                    "krb5_servername" => passdb.verify_host = Some(c(value)?),
                    _ => {}
                }
            }
        }
        // The library must be usable at all: a broken krb5.conf stops the start.
        Krb5::new().map_err(|e| PassdbError::Settings(format!("Kerberos: {e}")))?;
        Ok(passdb)
    }

    /// The principal asked for: the login, and `@realm` unless the login has a realm
    /// already (with `-r` it is `login@realm`, which Cyrus's appends the realm to again; and
    /// a login with its own realm comes with the realm joined once more).
    fn principal(q: &Query<'_>) -> Vec<u8> {
        // -r joined a login that had its realm to the realm again: the login's stands.
        let joined = [&b"@"[..], q.realm].concat();
        if let Some(login) = q.authid.strip_suffix(&joined[..]) {
            if !q.realm.is_empty() && login.contains(&b'@') {
                return login.to_vec();
            }
        }
        if q.realm.is_empty() || q.authid.contains(&b'@') {
            q.authid.to_vec()
        } else {
            [q.authid, b"@", q.realm].concat()
        }
    }

    /// The check, on the pool.
    fn check(&self, principal: &[u8], password: &Password) -> Result<PassdbResult, PassdbError> {
        let who = Printable(principal).to_string();
        let (Ok(name), Ok(secret)) = (
            CString::new(principal),
            CString::new(password.expose().to_vec()),
        ) else {
            // A NUL: no principal has one, and a password cannot carry one to the KDC.
            return Ok(PassdbResult::PasswordMismatch);
        };
        let secret = zeroize::Zeroizing::new(secret.into_bytes_with_nul());
        let k = Krb5::new().map_err(|e| error(&who, e.to_string()))?;
        let client = k
            .parse_name(&name)
            .map_err(|e| error(&who, e.to_string()))?;
        let mut creds = match k.initial_creds(&client, &secret) {
            Ok(creds) => creds,
            Err(code) => {
                if code == code::C_PRINCIPAL_UNKNOWN || refused(code) {
                    string_to_key_cost(principal, &secret);
                }
                return verdict(&k, &who, code);
            }
        };
        let verified = k.verify(
            &mut creds,
            self.verify_host.as_deref(),
            &self.verify_service,
            self.keytab.as_deref(),
        );
        k.free_creds(&mut creds);
        match verified {
            Ok(()) => Ok(PassdbResult::Ok),
            // A ticket the keytab cannot verify: a forged KDC, or a host without its key.
            Err(e) => Err(PassdbError::Kerberos {
                principal: who,
                reply: UNVERIFIED,
                message: format!(
                    "the KDC's ticket could not be verified against the keytab ({e}); \
                     is {}/<this host> in {}?",
                    self.verify_service.to_string_lossy(),
                    self.keytab
                        .as_deref()
                        .map_or("the default keytab".into(), |k| k.to_string_lossy())
                ),
            }),
        }
    }
}

fn error(who: &str, message: impl Into<String>) -> PassdbError {
    PassdbError::Kerberos {
        principal: who.to_owned(),
        reply: NO_TICKET,
        message: message.into(),
    }
}

/// MIT's com_err codes the verdicts come from (`krb5_err.h`).
mod code {
    const BASE: i32 = -1_765_328_384; // KRB5KDC_ERR_NONE
    pub(super) const NAME_EXP: i32 = BASE + 1;
    pub(super) const C_PRINCIPAL_UNKNOWN: i32 = BASE + 6;
    pub(super) const POLICY: i32 = BASE + 12;
    pub(super) const CLIENT_REVOKED: i32 = BASE + 18;
    pub(super) const KEY_EXP: i32 = BASE + 23;
    pub(super) const PREAUTH_FAILED: i32 = BASE + 24;
    pub(super) const BAD_INTEGRITY: i32 = BASE + 31; // KRB5KRB_AP_ERR_BAD_INTEGRITY
}

/// Whether the KDC refused `code` whatever the password (before any key was tried).
fn refused(code: i32) -> bool {
    matches!(
        code,
        code::NAME_EXP | code::POLICY | code::CLIENT_REVOKED | code::KEY_EXP
    )
}

/// The work a wrong password costs the client, done for an unknown principal and the
/// refusals the KDC gives before any key is tried, so that their replies take as long: two AES string-to-keys
/// (PBKDF2-HMAC-SHA1, 4096 rounds each, RFC 3962's default), as libkrb5 derives the key for
/// the KDC's reply and again for its pre-authenticated retry (a wrong password measured 5.9
/// ms against a throwaway KDC, an unknown user 0.9 ms without this, 3.3 ms with one).
fn string_to_key_cost(principal: &[u8], password: &[u8]) {
    for _ in 0..2 {
        let mut key = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, principal, 4096, &mut key);
        std::hint::black_box(&key);
    }
}

/// The verdict for the KDC's refusal `code`.
fn verdict(k: &Krb5, who: &str, code: i32) -> Result<PassdbResult, PassdbError> {
    use code::*;
    match code {
        C_PRINCIPAL_UNKNOWN => Ok(PassdbResult::UserUnknown),
        PREAUTH_FAILED | BAD_INTEGRITY => Ok(PassdbResult::PasswordMismatch),
        // The KDC says these whatever the password: told to the log only, answered as a
        // wrong password, so that nobody learns an account's state without its password.
        code if refused(code) => {
            tracing::info!(
                "kerberos5: the KDC refuses {who} whatever the password: {}",
                k.message(code)
            );
            Ok(PassdbResult::PasswordMismatch)
        }
        _ => Err(error(who, k.message(code))),
    }
}

impl Passdb for Kerberos5 {
    fn kind(&self) -> PassdbKind {
        MODULE.kind
    }

    fn verify(
        self: Arc<Self>,
        q: &Query<'_>,
        password: Password,
        _: &Context<'_>,
    ) -> Answer<PassdbResult> {
        let principal = Kerberos5::principal(q);
        Answer::blocking(move || self.check(&principal, &password))
    }

    fn access(&self) -> Access {
        // The keytab must stay readable after --user: the one named, else libkrb5's default.
        let named = self
            .keytab
            .as_deref()
            .map(|k| k.to_string_lossy().into_owned())
            .or_else(|| std::env::var("KRB5_KTNAME").ok());
        let file = match named {
            Some(name) => ["FILE:", "WRFILE:"]
                .iter()
                .find_map(|p| name.strip_prefix(p))
                .map(str::to_owned)
                .or_else(|| (!name.contains(':')).then_some(name)),
            None => Some(DEFAULT_KEYTAB.to_owned()),
        };
        Access {
            files: file.map(PathBuf::from).into_iter().collect(),
            ..Access::default()
        }
    }

    fn default_realm(&self) -> DefaultRealm {
        // An empty realm is krb5.conf's default_realm (or --realm), never the host name.
        DefaultRealm::Own(None)
    }

    fn cache_use(&self) -> CacheUse {
        CacheUse::Useless(
            "-c: a KDC's answer cannot be tied to the key it stores, so a remembered success \
             could outlive a password change; every login asks the KDC",
        )
    }
}

/// The few libkrb5 calls the passdb makes (MIT's `krb5.h`). Bound by hand: no maintained
/// crate offers MIT's password-and-keytab calls (`krb5_get_init_creds_password`,
/// `krb5_verify_init_creds`); the GSSAPI crates cannot take a password.
#[allow(non_camel_case_types)]
mod ffi {
    use std::ffi::{c_char, c_int, c_void};

    pub(super) type krb5_error_code = i32;
    pub(super) type krb5_context = *mut c_void;
    pub(super) type krb5_principal = *mut c_void;
    pub(super) type krb5_keytab = *mut c_void;
    pub(super) type krb5_get_init_creds_opt = c_void;

    /// `krb5_creds`, left opaque: 120 bytes on LP64, filled and freed by the library.
    #[repr(C, align(8))]
    pub(super) struct krb5_creds(pub(super) [u8; 256]);

    /// `krb5_verify_init_creds_opt`.
    #[repr(C)]
    pub(super) struct krb5_verify_init_creds_opt {
        pub(super) flags: i32,
        pub(super) ap_req_nofail: c_int,
    }

    /// `KRB5_NT_SRV_HST`.
    pub(super) const NT_SRV_HST: i32 = 3;

    #[link(name = "krb5")]
    extern "C" {
        pub(super) fn krb5_init_context(context: *mut krb5_context) -> krb5_error_code;
        pub(super) fn krb5_free_context(context: krb5_context);
        pub(super) fn krb5_parse_name(
            context: krb5_context,
            name: *const c_char,
            principal: *mut krb5_principal,
        ) -> krb5_error_code;
        pub(super) fn krb5_free_principal(context: krb5_context, principal: krb5_principal);
        pub(super) fn krb5_get_init_creds_opt_alloc(
            context: krb5_context,
            opt: *mut *mut krb5_get_init_creds_opt,
        ) -> krb5_error_code;
        pub(super) fn krb5_get_init_creds_opt_free(
            context: krb5_context,
            opt: *mut krb5_get_init_creds_opt,
        );
        pub(super) fn krb5_get_init_creds_opt_set_tkt_life(
            opt: *mut krb5_get_init_creds_opt,
            lifetime: i32,
        );
        pub(super) fn krb5_get_init_creds_password(
            context: krb5_context,
            creds: *mut krb5_creds,
            client: krb5_principal,
            password: *const c_char,
            prompter: *const c_void,
            data: *mut c_void,
            start_time: i32,
            in_tkt_service: *const c_char,
            options: *mut krb5_get_init_creds_opt,
        ) -> krb5_error_code;
        pub(super) fn krb5_free_cred_contents(context: krb5_context, creds: *mut krb5_creds);
        pub(super) fn krb5_sname_to_principal(
            context: krb5_context,
            hostname: *const c_char,
            sname: *const c_char,
            kind: i32,
            principal: *mut krb5_principal,
        ) -> krb5_error_code;
        pub(super) fn krb5_kt_resolve(
            context: krb5_context,
            name: *const c_char,
            keytab: *mut krb5_keytab,
        ) -> krb5_error_code;
        pub(super) fn krb5_kt_default(
            context: krb5_context,
            keytab: *mut krb5_keytab,
        ) -> krb5_error_code;
        pub(super) fn krb5_kt_close(context: krb5_context, keytab: krb5_keytab) -> krb5_error_code;
        pub(super) fn krb5_verify_init_creds_opt_init(opt: *mut krb5_verify_init_creds_opt);
        pub(super) fn krb5_verify_init_creds_opt_set_ap_req_nofail(
            opt: *mut krb5_verify_init_creds_opt,
            nofail: c_int,
        );
        pub(super) fn krb5_verify_init_creds(
            context: krb5_context,
            creds: *mut krb5_creds,
            server: krb5_principal,
            keytab: krb5_keytab,
            ccache: *mut c_void,
            options: *mut krb5_verify_init_creds_opt,
        ) -> krb5_error_code;
        pub(super) fn krb5_get_error_message(
            context: krb5_context,
            code: krb5_error_code,
        ) -> *const c_char;
        pub(super) fn krb5_free_error_message(context: krb5_context, msg: *const c_char);
    }
}

/// A libkrb5 call that failed, in the library's words.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {message}")]
struct KrbError {
    call: &'static str,
    message: String,
}

/// A libkrb5 context (one per check: contexts are not shared between threads), freed on
/// drop.
struct Krb5(ffi::krb5_context);

/// A principal of a context.
struct Principal<'a> {
    k: &'a Krb5,
    p: ffi::krb5_principal,
}

// The calls into libkrb5, each with what makes it sound.
#[allow(unsafe_code)]
impl Drop for Principal<'_> {
    fn drop(&mut self) {
        // SAFETY: `p` came from this context and is freed once.
        unsafe { ffi::krb5_free_principal(self.k.0, self.p) }
    }
}

// The calls into libkrb5, each with what makes it sound.
#[allow(unsafe_code)]
impl Krb5 {
    fn new() -> Result<Krb5, KrbError> {
        let mut context = ptr::null_mut();
        // SAFETY: a pointer to a pointer the library sets.
        let code = unsafe { ffi::krb5_init_context(&mut context) };
        if code != 0 {
            return Err(KrbError {
                call: "krb5_init_context (is krb5.conf readable?)",
                message: format!("error {code}"),
            });
        }
        Ok(Krb5(context))
    }

    /// `call` failed with `code`.
    fn failed(&self, call: &'static str, code: i32) -> KrbError {
        KrbError {
            call,
            message: self.message(code),
        }
    }

    /// The library's words for `code`.
    fn message(&self, code: i32) -> String {
        // SAFETY: the context is live; the message is freed with the matching call.
        unsafe {
            let msg = ffi::krb5_get_error_message(self.0, code);
            if msg.is_null() {
                return format!("Kerberos error {code}");
            }
            let text = CStr::from_ptr(msg).to_string_lossy().into_owned();
            ffi::krb5_free_error_message(self.0, msg);
            format!("{text} ({code})")
        }
    }

    fn parse_name(&self, name: &CStr) -> Result<Principal<'_>, KrbError> {
        let mut p = ptr::null_mut();
        // SAFETY: a C string and a pointer the library sets.
        let code = unsafe { ffi::krb5_parse_name(self.0, name.as_ptr(), &mut p) };
        if code != 0 {
            return Err(self.failed("krb5_parse_name", code));
        }
        Ok(Principal { k: self, p })
    }

    /// A ticket for `client` with `password` (NUL-terminated), or the KDC's (or the
    /// library's) error code.
    fn initial_creds(
        &self,
        client: &Principal<'_>,
        password: &[u8],
    ) -> Result<ffi::krb5_creds, i32> {
        let mut opt = ptr::null_mut();
        // SAFETY: the options are allocated, set and freed here; `creds` is zeroed memory
        // larger than the library's `krb5_creds`, which it fills; the password is a C
        // string that outlives the call.
        unsafe {
            let code = ffi::krb5_get_init_creds_opt_alloc(self.0, &mut opt);
            if code != 0 {
                return Err(code);
            }
            ffi::krb5_get_init_creds_opt_set_tkt_life(opt, TICKET_LIFE_SECS);
            let mut creds = ffi::krb5_creds([0; 256]);
            let code = ffi::krb5_get_init_creds_password(
                self.0,
                &mut creds,
                client.p,
                password.as_ptr().cast::<c_char>(),
                ptr::null(),
                ptr::null_mut(),
                0,
                ptr::null(),
                opt,
            );
            ffi::krb5_get_init_creds_opt_free(self.0, opt);
            if code != 0 {
                return Err(code);
            }
            Ok(creds)
        }
    }

    /// Checks that `creds` is a ticket the keytab's key for `service/host` can read.
    fn verify(
        &self,
        creds: &mut ffi::krb5_creds,
        host: Option<&CStr>,
        service: &CStr,
        keytab: Option<&CStr>,
    ) -> Result<(), KrbError> {
        // SAFETY: every pointer is the library's or a live C string; each object is freed
        // once, after its last use.
        unsafe {
            let mut server = ptr::null_mut();
            let code = ffi::krb5_sname_to_principal(
                self.0,
                host.map_or(ptr::null(), CStr::as_ptr),
                service.as_ptr(),
                ffi::NT_SRV_HST,
                &mut server,
            );
            if code != 0 {
                return Err(self.failed("krb5_sname_to_principal", code));
            }
            let server = Principal { k: self, p: server };
            let mut kt = ptr::null_mut();
            let code = match keytab {
                Some(name) => ffi::krb5_kt_resolve(self.0, name.as_ptr(), &mut kt),
                None => ffi::krb5_kt_default(self.0, &mut kt),
            };
            if code != 0 {
                return Err(self.failed("krb5_kt_resolve (the keytab)", code));
            }
            let mut opt = ffi::krb5_verify_init_creds_opt {
                flags: 0,
                ap_req_nofail: 0,
            };
            ffi::krb5_verify_init_creds_opt_init(&mut opt);
            // No key in the keytab is a failure, never a pass (libkrb5's default lets it pass).
            ffi::krb5_verify_init_creds_opt_set_ap_req_nofail(&mut opt, 1 as c_int);
            let code =
                ffi::krb5_verify_init_creds(self.0, creds, server.p, kt, ptr::null_mut(), &mut opt);
            ffi::krb5_kt_close(self.0, kt);
            if code != 0 {
                return Err(self.failed("krb5_verify_init_creds", code));
            }
            Ok(())
        }
    }

    fn free_creds(&self, creds: &mut ffi::krb5_creds) {
        // SAFETY: creds the library filled, freed once.
        unsafe { ffi::krb5_free_cred_contents(self.0, creds) }
    }
}

// The calls into libkrb5, each with what makes it sound.
#[allow(unsafe_code)]
impl Drop for Krb5 {
    fn drop(&mut self) {
        // SAFETY: the context is freed once, after every object made from it.
        unsafe { ffi::krb5_free_context(self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Peer;

    #[test]
    fn the_realm_is_added_once() {
        let peer = Peer::default();
        let q = |authid: &'static [u8], realm: &'static [u8]| Query {
            authid,
            realm,
            service: b"smtp",
            peer: &peer,
        };
        let p = |q: Query<'_>| String::from_utf8(Kerberos5::principal(&q)).unwrap();
        assert_eq!(p(q(b"alice", b"")), "alice");
        assert_eq!(p(q(b"alice", b"EXAMPLE.ORG")), "alice@EXAMPLE.ORG");
        // -r made it login@realm: not alice@EXAMPLE.ORG@EXAMPLE.ORG (cyrus-sasl #832).
        assert_eq!(
            p(q(b"alice@EXAMPLE.ORG", b"EXAMPLE.ORG")),
            "alice@EXAMPLE.ORG"
        );
    }
}
