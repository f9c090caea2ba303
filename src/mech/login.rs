//! LOGIN: the server prompts `Username:` then `Password:`; an initial response is the user
//! name. Not standardised, but what Outlook and many old clients speak.

use super::{MechFailure, Step};
use crate::secret::Password;

/// The wire name.
pub(crate) const NAME: &str = "LOGIN";

/// Where the exchange stands.
#[derive(Debug, Default)]
pub(crate) enum Login {
    /// Nothing yet.
    #[default]
    AwaitUser,
    /// The user name is known.
    AwaitPassword(Vec<u8>),
}

impl Login {
    pub(crate) fn step(&mut self, input: Option<&[u8]>) -> Step {
        if input.is_some_and(|data| data.contains(&0)) {
            return Step::Fail(MechFailure::NulByte);
        }
        match std::mem::take(self) {
            Login::AwaitUser => match input {
                // No initial response, or an empty one: ask for the user name.
                None | Some([]) => Step::Challenge(b"Username:".to_vec()),
                Some(user) => {
                    *self = Login::AwaitPassword(user.to_vec());
                    Step::Challenge(b"Password:".to_vec())
                }
            },
            Login::AwaitPassword(user) => match input {
                None | Some([]) => Step::Fail(MechFailure::EmptyCredentials),
                Some(password) => Step::VerifyPlain {
                    user,
                    password: Password::new(password.to_vec()),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mech::describe;

    #[test]
    fn prompts_then_verifies() {
        let mut m = Login::default();
        assert_eq!(describe(m.step(None)), "challenge Username:");
        assert_eq!(describe(m.step(Some(b"alice"))), "challenge Password:");
        assert_eq!(describe(m.step(Some(b"secret"))), "verify alice secret");
    }

    #[test]
    fn initial_response_is_the_user() {
        let mut m = Login::default();
        assert_eq!(describe(m.step(Some(b"alice"))), "challenge Password:");
        assert_eq!(describe(m.step(Some(b"pw"))), "verify alice pw");
        let mut m = Login::default();
        assert_eq!(describe(m.step(Some(b""))), "challenge Username:");
    }

    #[test]
    fn bad_input_fails() {
        let mut m = Login::default();
        assert_eq!(describe(m.step(Some(b"ali\0ce"))), "fail");
        let mut m = Login::default();
        m.step(Some(b"alice"));
        assert_eq!(describe(m.step(Some(b""))), "fail");
    }
}
