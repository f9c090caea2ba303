//! Do-nothing servers of both protocols, for the benchmarks: they frame requests as a real
//! server must and answer success without checking anything, on the runtime saslauthd-rs has
//! by default (one thread, the accept loop a task on it) and with a task per connection, as
//! it does. What they reach is the limit this machine allows the protocol, generator included
//! (`benches/compare-*.sh` runs them in the same run as the real servers).
//!
//! `dovecot-threads` is the other kind of do-nothing server: a thread per connection, blocking
//! reads and writes, no runtime at all. On a machine with spare cores it is the faster of the
//! two (every connection's thread runs on any core), so it is the harder bar for a server on
//! one runtime thread.
//!
//! ```text
//! cargo run --release --example null-server -- saslauthd /tmp/null/mux
//! cargo run --release --example null-server -- dovecot /tmp/null/auth
//! cargo run --release --example null-server -- dovecot-threads /tmp/null/auth-threads
//! ```
//!
//! Loopback Unix sockets only; it runs until killed. Never a server for real use: it says
//! yes to everyone.

use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Whether `buf` holds four whole length-prefixed fields (the saslauthd request).
fn whole_request(buf: &[u8]) -> bool {
    let mut at = 0;
    for _ in 0..4 {
        let Some(prefix) = buf.get(at..at + 2) else {
            return false;
        };
        at += 2 + usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        if at > buf.len() {
            return false;
        }
    }
    true
}

async fn saslauthd(mut stream: UnixStream) {
    let mut buf = [0u8; 1290];
    let mut filled = 0;
    while !whole_request(&buf[..filled]) {
        match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        if filled == buf.len() {
            return;
        }
    }
    let _ = stream.write_all(b"\x00\x02OK").await;
}

const HANDSHAKE: &[u8] = b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t1\nCUID\t1\n\
    COOKIE\t00000000000000000000000000000000\nDONE\n";

async fn dovecot(mut stream: UnixStream) {
    if stream.write_all(HANDSHAKE).await.is_err() {
        return;
    }
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(256);
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut start = 0;
        while let Some(len) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + len];
            start += len + 1;
            if let Some(rest) = line.strip_prefix(b"AUTH\t") {
                let id = rest.split(|&b| b == b'\t').next().unwrap_or_default();
                out.extend_from_slice(b"OK\t");
                out.extend_from_slice(id);
                out.extend_from_slice(b"\tuser=x\n");
            }
        }
        buf.drain(..start);
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        buf.reserve(4096);
    }
}

/// The Dovecot protocol, a thread per connection: read what has come, answer every whole
/// `AUTH` line in it with one write.
fn dovecot_blocking(mut stream: std::os::unix::net::UnixStream) {
    use std::io::{Read, Write};
    if stream.write_all(HANDSHAKE).is_err() {
        return;
    }
    let mut buf = vec![0u8; 8192];
    let mut filled = 0;
    let mut out: Vec<u8> = Vec::with_capacity(256);
    loop {
        if filled == buf.len() {
            return;
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        let mut start = 0;
        while let Some(len) = buf[start..filled].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + len];
            if let Some(rest) = line.strip_prefix(b"AUTH\t") {
                let id = rest.split(|&b| b == b'\t').next().unwrap_or_default();
                out.extend_from_slice(b"OK\t");
                out.extend_from_slice(id);
                out.extend_from_slice(b"\tuser=x\n");
            }
            start += len + 1;
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if !out.is_empty() {
            if stream.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
    }
}

fn threads(path: &std::path::Path) {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path).expect("bind");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || dovecot_blocking(stream));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(protocol), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: null-server saslauthd|dovecot|dovecot-threads SOCKET");
        std::process::exit(1);
    };
    let path = PathBuf::from(path);
    let dovecot_protocol = match protocol.as_str() {
        "saslauthd" => false,
        "dovecot" => true,
        "dovecot-threads" => return threads(&path),
        other => {
            eprintln!("null-server: unknown protocol {other}");
            std::process::exit(1);
        }
    };
    // saslauthd-rs's default runtime: one thread, the accept loop a task on it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        let accept = async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if dovecot_protocol {
                    tokio::spawn(dovecot(stream));
                } else {
                    tokio::spawn(saslauthd(stream));
                }
            }
        };
        tokio::spawn(accept)
            .await
            .expect("the accept loop ends only with the process")
    })
}
