//! saslauthd-rs: a drop-in replacement for Cyrus SASL's `saslauthd` and its tools.
//!
//! # Layout
//!
//! The request path, one module per step:
//!
//! - [`server`]: the `mux` listener, connection bounds, deadlines, shutdown.
//! - [`protocol`]: pure decoding and encoding of the wire ([`protocol::saslauthd`]).
//! - [`request`]: [`request::AuthRequest`], what a protocol hands on.
//! - [`auth`]: the driver: realm rules, the passdb call, Cyrus-style log lines.
//! - [`passdb`]: credential backends ([`passdb::Sasldb`], [`passdb::Memory`]).
//! - [`sasldb`]: the sasldb2 file format (keys `authid\0realm\0property`) in LMDB.
//! - [`secret`]: passwords: zeroized, redacted, compared in constant time.
//!
//! Around it: [`cli`] and [`config`] (flags and TOML), [`process`] (pid lock, detaching,
//! logging), [`client`] (the protocol's client side), [`getopt`] (the Cyrus tools' command
//! lines), [`tools`] (what the tool binaries share).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, unreachable_pub)]

pub mod auth;
pub mod cache;
pub mod cli;
pub mod client;
pub mod config;
pub mod crypt;
pub mod getopt;
pub mod mech;
pub mod passdb;
pub mod penalty;
pub mod pool;
pub mod process;
pub mod protocol;
pub mod random;
pub mod request;
pub mod sasldb;
pub mod secret;
pub mod server;
pub mod server_dovecot;
pub mod tools;
