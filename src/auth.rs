//! The driver: from a decoded request to a verdict, through realm rules and the passdb, with
//! one log line per failure in Cyrus's format (`auth failure: [user=..] [service=..] ...`).

use crate::passdb::{Passdb, PassdbError, PassdbResult};
use crate::request::{AuthRequest, Printable};
use crate::secret::Password;

/// How realms are chosen, as Cyrus's saslauthd does.
#[derive(Debug, Clone)]
pub struct RealmPolicy {
    /// Used when the request's realm is empty: `--realm`, else the host name.
    pub default_realm: Vec<u8>,
    /// `-r`: a non-empty realm is appended to the login (`login@realm`), and still passed.
    pub combine: bool,
}

/// The result of one password check.
#[derive(Debug)]
pub enum Outcome {
    /// The request was refused before any lookup.
    Refused(Refusal),
    /// The passdb's verdict.
    Verdict(PassdbResult),
    /// The passdb broke.
    Error(PassdbError),
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

/// Checks passwords against one passdb.
#[derive(Debug)]
pub struct Authenticator {
    passdb: Passdb,
    realms: RealmPolicy,
}

impl Authenticator {
    /// Builds a driver over `passdb`.
    pub fn new(passdb: Passdb, realms: RealmPolicy) -> Self {
        Authenticator { passdb, realms }
    }

    /// The passdb in use.
    pub fn passdb(&self) -> &Passdb {
        &self.passdb
    }

    /// Checks a cleartext password (the saslauthd protocol's only operation).
    pub fn verify_plain(&self, request: &AuthRequest, password: &Password) -> Outcome {
        let outcome = self.check(request, password);
        self.log(request, &outcome);
        outcome
    }

    fn check(&self, request: &AuthRequest, password: &Password) -> Outcome {
        if request.login.is_empty() {
            return Outcome::Refused(Refusal::EmptyLogin);
        }
        if password.is_empty() {
            return Outcome::Refused(Refusal::EmptyPassword);
        }
        if request.login.contains(&0) || request.realm.contains(&0) {
            return Outcome::Refused(Refusal::NulByte);
        }
        let combined;
        let login: &[u8] = if self.realms.combine && !request.realm.is_empty() {
            combined = [&request.login[..], b"@", &request.realm[..]].concat();
            &combined
        } else {
            &request.login
        };
        let realm: &[u8] = if request.realm.is_empty() {
            &self.realms.default_realm
        } else {
            &request.realm
        };
        match self.passdb.verify_plain(login, realm, password) {
            Ok(result) => Outcome::Verdict(result),
            Err(e) => Outcome::Error(e),
        }
    }

    fn log(&self, request: &AuthRequest, outcome: &Outcome) {
        let user = Printable(&request.login);
        let service = Printable(&request.service);
        let realm = Printable(&request.realm);
        let mech = self.passdb.kind();
        let remote = request.client_addr.as_deref().map(Printable);
        let remote = remote
            .as_ref()
            .map(|r| format!(" [remote={r}]"))
            .unwrap_or_default();
        match outcome {
            Outcome::Verdict(PassdbResult::Ok) => tracing::debug!(
                "auth success: [user={user}] [service={service}] [realm={realm}] [mech={mech}]{remote}"
            ),
            Outcome::Verdict(result) => tracing::info!(
                "auth failure: [user={user}] [service={service}] [realm={realm}] [mech={mech}] \
                 [reason={}]{remote}",
                result.log_reason()
            ),
            Outcome::Refused(refusal) => tracing::info!(
                "auth failure: [user={user}] [service={service}] [realm={realm}] [mech={mech}] \
                 [reason={refusal:?}]{remote}"
            ),
            Outcome::Error(e) => tracing::error!(
                "auth error: [user={user}] [service={service}] [realm={realm}] [mech={mech}] \
                 [error={e}]{remote}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passdb::Memory;

    fn auth(combine: bool) -> Authenticator {
        let memory = Memory::new()
            .with_user("alice", "example.org", "secret")
            .with_user("bob", "myhost", "builder")
            .with_user("carol@example.org", "example.org", "combined");
        Authenticator::new(
            Passdb::Memory(memory),
            RealmPolicy {
                default_realm: b"myhost".to_vec(),
                combine,
            },
        )
    }

    fn check(a: &Authenticator, login: &str, password: &str, realm: &str) -> String {
        let request = AuthRequest {
            login: login.as_bytes().to_vec(),
            service: b"smtp".to_vec(),
            realm: realm.as_bytes().to_vec(),
            client_addr: None,
        };
        format!(
            "{:?}",
            a.verify_plain(&request, &Password::new(password.as_bytes().to_vec()))
        )
    }

    #[test]
    fn realms_and_refusals() {
        let a = auth(false);
        let rows = [
            ("alice", "secret", "example.org", "Verdict(Ok)"),
            ("alice", "wrong", "example.org", "Verdict(PasswordMismatch)"),
            ("alice", "secret", "", "Verdict(UserUnknown)"),
            ("alice@example.org", "secret", "", "Verdict(UserUnknown)"),
            ("bob", "builder", "", "Verdict(Ok)"),
            ("nobody", "x", "example.org", "Verdict(UserUnknown)"),
            ("", "x", "example.org", "Refused(EmptyLogin)"),
            ("alice", "", "example.org", "Refused(EmptyPassword)"),
            ("alice\0zz", "secret", "example.org", "Refused(NulByte)"),
        ];
        for (login, password, realm, want) in rows {
            assert_eq!(
                check(&a, login, password, realm),
                want,
                "{login:?}/{realm:?}"
            );
        }
    }

    #[test]
    fn combine_appends_a_non_empty_realm_only() {
        let a = auth(true);
        assert_eq!(check(&a, "carol", "combined", "example.org"), "Verdict(Ok)");
        assert_eq!(check(&a, "bob", "builder", ""), "Verdict(Ok)");
        assert_eq!(
            check(&a, "alice", "secret", "example.org"),
            "Verdict(UserUnknown)"
        );
    }
}
