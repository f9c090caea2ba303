//! Bad input at volume: idle clients and garbage, bounded in count and time. The daemon must
//! answer or close each connection, never crash, and keep serving the others.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{Daemon, Rng, USERS};

fn raise_fd_limit(wanted: u64) {
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max.min(wanted.max(lim.rlim_cur));
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        assert!(
            lim.rlim_cur >= wanted,
            "need {wanted} open files, the hard limit is {}",
            lim.rlim_max
        );
    }
}

#[test]
fn ten_thousand_idle_connections() {
    raise_fd_limit(10_500);
    let d = Daemon::start(USERS, &["--timeout", "60", "--max-connections", "12000"]);
    let start = Instant::now();
    let mut idle = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        idle.push(UnixStream::connect(&d.socket).unwrap());
        if i % 2500 == 2499 {
            assert_eq!(
                d.ask("alice", "secret", "smtp", "example.org"),
                "OK",
                "after {} idle",
                i + 1
            );
        }
    }
    assert_eq!(d.ask("alice", "secret", "smtp", "example.org"), "OK");
    assert_eq!(d.ask("alice", "wrong", "smtp", "example.org"), "NO");
    drop(idle);
    assert!(start.elapsed() < Duration::from_secs(60));
    assert_eq!(d.ask("alice", "secret", "smtp", "example.org"), "OK");
}

#[test]
fn garbage_gets_a_defined_reply_or_a_close() {
    let d = Daemon::start(USERS, &["--timeout", "2"]);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let allowed: [&[u8]; 5] = [
        b"",
        b"\x00\x02NO",
        b"\x00\x03NO ",
        b"\x00\x16NO NULL login received",
        b"\x00\x19NO NULL password received",
    ];
    for round in 0..2000 {
        let len = (rng.next() % 1400) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Some rounds start like a real frame, so the decoder goes deeper.
        if round % 3 == 0 && len > 4 {
            bytes[0] = 0;
            bytes[1] = (rng.next() % 40) as u8;
        }
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        assert!(
            allowed.contains(&reply.as_slice()),
            "round {round}: {reply:?}"
        );
    }
    assert_eq!(d.ask("alice", "secret", "smtp", "example.org"), "OK");
}
