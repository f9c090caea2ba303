//! The wire protocols. Each is pure encoding and decoding over bytes; the connections in
//! `server.rs` own the sockets and buffers.
//!
//! - [`saslauthd`]: Cyrus's `mux` socket (libsasl2 `pwcheck_method: saslauthd`, Postfix
//!   `smtpd_sasl_type = cyrus`, sendmail, Cyrus IMAP).

pub mod dovecot;
pub mod saslauthd;
