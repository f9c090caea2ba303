//! The wire protocols: pure decoding and encoding over bytes, in the shared words of
//! `request` and `verdict`. The sockets are `server`'s; the answers are `auth`'s.
//!
//! - [`saslauthd`]: Cyrus's `mux` socket (libsasl2 `pwcheck_method: saslauthd`, Postfix
//!   `smtpd_sasl_type = cyrus`, sendmail, Cyrus IMAP).
//! - `dovecot`: Dovecot's auth-client protocol (Postfix `smtpd_sasl_type = dovecot`).

pub(crate) mod dovecot;
pub mod saslauthd;
