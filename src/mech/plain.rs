//! PLAIN (RFC 4616): `authzid NUL authcid NUL password`.

use super::{MechFailure, Message, Step};
use crate::secret::Password;

/// The wire name.
pub(crate) const NAME: &str = "PLAIN";

/// PLAIN has a single step.
#[derive(Debug, Default)]
pub(crate) struct Plain;

impl Plain {
    pub(crate) fn step(&mut self, input: Option<&[u8]>) -> Step {
        // No initial response: an empty challenge asks for it.
        let Some(data) = input else {
            return Step::Challenge(Vec::new());
        };
        let mut parts = data.split(|&b| b == 0);
        let (Some(authzid), Some(authcid), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Step::Fail(MechFailure::Malformed(Message::PlainData));
        };
        if authcid.is_empty() || password.is_empty() {
            return Step::Fail(MechFailure::EmptyCredentials);
        }
        // Logging in as someone else needs master users, which we do not have; an authzid
        // equal to the authcid (doveadm always sends that) is the same as none.
        if !authzid.is_empty() && authzid != authcid {
            return Step::Fail(MechFailure::ForeignAuthzid);
        }
        Step::VerifyPlain {
            user: authcid.to_vec(),
            password: Password::new(password.to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: Option<&[u8]>) -> String {
        crate::mech::describe(Plain.step(input))
    }

    #[test]
    fn cases() {
        let rows: &[(Option<&[u8]>, &str)] = &[
            (None, "challenge "),
            (Some(b"\0alice\0secret"), "verify alice secret"),
            (Some(b"alice\0alice\0secret"), "verify alice secret"),
            (Some("\0dave\0Ünï".as_bytes()), "verify dave Ünï"),
            (
                Some(b"\0alice@example.org\0pw"),
                "verify alice@example.org pw",
            ),
            (Some(b"bob\0alice\0secret"), "fail"),
            (Some(b""), "fail"),
            (Some(b"\0alice"), "fail"),
            (Some(b"\0\0secret"), "fail"),
            (Some(b"\0alice\0"), "fail"),
            (Some(b"\0alice\0sec\0ret"), "fail"),
        ];
        for (input, want) in rows {
            assert_eq!(run(*input), *want, "{input:?}");
        }
    }
}
