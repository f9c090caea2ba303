//! saslauthd-rs: a drop-in replacement for Cyrus SASL's `saslauthd` and its tools.
//!
//! # Layout
//!
//! The request path, the same for both protocols from the driver down:
//!
//! ```text
//! socket ─► server::{saslauthd,dovecot}   socket loops: framing, deadlines, connection bounds
//!         ─► protocol::{saslauthd,dovecot} pure codecs: bytes ⇄ request::*, verdict::*
//!         ─► auth (the driver)             realm rules, cache, pool, penalty, one log line
//!              ─► auth::handler            Dovecot only: the request table, CONT, CANCEL
//!                   ─► mech::*             sans-I/O SASL state machines, returning Steps
//!              ─► passdb::*                sasldb, shadow, pam, memory
//!                   ─► sasldb              the sasldb2 file format (LMDB)
//!         ◄─ verdict ─► protocol encodes   OK / NO reason; OK / FAIL / CONT
//! ```
//!
//! - [`server`]: the listeners: sockets, connection bounds, accept back-off, shutdown;
//!   [`server::saslauthd`] and [`server::dovecot`] are the per-protocol socket loops.
//! - [`protocol`]: the wire codecs, [`protocol::saslauthd`] and `protocol::dovecot`.
//! - [`auth`]: the driver, [`auth::Authenticator`]: one password check for both protocols,
//!   credential lookups and key derivations for the mechanisms, the failure delay
//!   (`auth::penalty`), the blocking pool, the credential cache; `auth::handler` is the
//!   Dovecot protocol's request table and mech ⇄ passdb loop.
//! - [`mech`]: PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1/-256 as state machines.
//! - [`passdb`]: the credential backends; [`crypt`] is libxcrypt beside them.
//! - [`sasldb`]: the sasldb2 format (keys `authid\0realm\0property`) in LMDB.
//! - Shared words, used by every part and using none of them: [`request`] (the request, the
//!   peer, user@realm splitting), [`secret`] (passwords and stored secrets: zeroized,
//!   redacted, compared in constant time), [`verdict`] (what was decided).
//!
//! Around it: [`cli`] and [`config`] (flags and TOML), [`process`] (pid lock, detaching,
//! signals, logging; [`log_writer`] writes the lines), [`client`] (the client side of both protocols), [`getopt`] (the Cyrus
//! tools' command lines), [`tools`] (what the tool binaries share).

#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, unreachable_pub)]

pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod crypt;
#[doc(hidden)]
pub mod fuzzing;
pub mod getopt;
pub mod hmac_md5;
pub mod log_writer;
pub mod manual;
pub mod mech;
pub mod metrics;
pub mod passdb;
pub mod pool;
pub mod process;
pub mod protocol;
pub mod request;
pub mod sasldb;
pub mod scram_keys;
pub mod secret;
pub mod server;
pub mod systemd;
pub mod tools;
pub mod verdict;
