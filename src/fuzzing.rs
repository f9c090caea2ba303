//! Entry points for the fuzz targets (`fuzz/`) and the property tests (`tests/properties.rs`):
//! each takes arbitrary bytes, runs one decoder or state machine on them, and panics only when
//! a property breaks (a round trip that does not return what went in, an exchange that
//! succeeds without the password). Not an API.

use zeroize::Zeroizing;

use crate::mech::{self, Mechanism, Step};
use crate::protocol::{dovecot, saslauthd};
use crate::secret::Credentials;

/// The saslauthd request decoder; a decoded request, encoded again, decodes to itself.
pub fn saslauthd_request(data: &[u8]) {
    let Ok(Some((request, password))) = saslauthd::decode_request(data) else {
        return;
    };
    let again = saslauthd::encode_request(
        &request.login,
        password.expose(),
        &request.service,
        &request.realm,
        None,
    )
    .expect("decoded fields fit a frame");
    let (decoded, password_again) = saslauthd::decode_request(&again)
        .expect("an encoded request decodes")
        .expect("whole");
    assert_eq!(
        (&decoded.login, &decoded.service, &decoded.realm),
        (&request.login, &request.service, &request.realm)
    );
    assert_eq!(password_again.expose(), password.expose());
}

/// The Dovecot line parser and session: every line of `data`, as a client's.
pub fn dovecot_lines(data: &[u8]) {
    let mut session = dovecot::Session::new();
    for line in data.split(|&b| b == b'\n') {
        let _ = dovecot::parse_line(line, 1);
        let _ = session.read(line);
    }
}

/// Every mechanism's server side: the first byte picks it, the rest (split at 0xff) is the
/// client's steps. An exchange that needs the password never succeeds: the fuzzer cannot know
/// the random challenge's answer.
pub fn mechanism(data: &[u8]) {
    let names: Vec<&'static str> = mech::all_names_list().collect();
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let name = names[usize::from(which) % names.len()];
    let offered = mech::offered(Some(&names), true, true, "sasldb").expect("every mechanism");
    let context = mech::Context {
        host: "fuzz.example".into(),
        realm: "fuzz.example".into(),
        scram_iterations: mech::scram::ITERATIONS,
        secret: [7; 32],
        oauth: mech::oauth::ErrorInfo::default(),
    };
    let mut m = Mechanism::start(name, &offered, &context, b"smtp").expect("offered");
    let mut inputs = rest.split(|&b| b == 0xff);
    let mut step = m.step(inputs.next());
    for _ in 0..16 {
        step = match step {
            Step::Challenge(_) => match inputs.next() {
                Some(input) => m.step(Some(input)),
                None => return,
            },
            Step::LookupCredentials { .. } => m.resume_credentials(&Credentials {
                plaintext: Some(Zeroizing::new(b"the password".to_vec())),
                auth_password: None,
                digest_md5: None,
                cram_md5: None,
            }),
            Step::Derive(derivation) => m.resume_keys(derivation.run()),
            Step::Success { .. } => {
                assert!(
                    matches!(name, "PLAIN" | "LOGIN"),
                    "{name} succeeded without the password"
                );
                return;
            }
            // A token is refused: the error challenge, then the client's answer to it.
            Step::VerifyToken { .. } => {
                m.resume_token(Err(crate::verdict::TokenRefusal::Signature))
            }
            Step::VerifyPlain { .. } | Step::Fail(_) => return,
        };
    }
}

/// The shadow(5) parser.
pub fn shadow(data: &[u8]) {
    crate::passdb::fuzz_shadow(data);
}

/// `-a rimap`'s IMAP side: every response in `data` read as the passdb reads a server's (each
/// one takes at least a byte and no more than there is); and `data` split at the first 0xff
/// into a login and a password, the LOGIN command made of them holds them whole and ends
/// where it says it does: a CR LF appears only after a literal's announcement and at the end,
/// so no value can start a command of its own.
pub fn imap(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((_, used))) = crate::passdb::fuzz_imap_response(rest) {
        assert!(used > 0 && used <= rest.len());
        rest = &rest[used..];
    }
    let (user, password) = match memchr::memchr(0xff, data) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    for literal_plus in [false, true] {
        let Some(pieces) = crate::passdb::fuzz_imap_login(user, password, literal_plus) else {
            assert!(user.contains(&0) || password.contains(&0));
            continue;
        };
        let command: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        let mut at = 0;
        let mut literals = Vec::new();
        loop {
            let end = at + memchr::memmem::find(&command[at..], b"\r\n").expect("a CR LF");
            let line = &command[at..end];
            at = end + 2;
            if at == command.len() {
                break;
            }
            // Not the end: the line announces a literal of N bytes, which follow.
            let open = memchr::memrchr(b'{', line).expect("a literal's announcement");
            let digits = line[open + 1..line.len() - 1]
                .strip_suffix(b"+")
                .unwrap_or(&line[open + 1..line.len() - 1]);
            assert_eq!(line.last(), Some(&b'}'));
            let n: usize = std::str::from_utf8(digits).unwrap().parse().unwrap();
            literals.push(command[at..at + n].to_vec());
            at += n;
        }
        assert_eq!(
            pieces.len(),
            if literal_plus { 1 } else { literals.len() + 1 }
        );
        for value in [user, password] {
            let quotable = value
                .iter()
                .all(|&b| (0x20..0x7f).contains(&b) || b == b'\t');
            assert!(quotable || literals.iter().any(|l| l == value));
        }
    }
}

/// A sasldb2 reader: `b` Berkeley DB (read, written back, read again), `l` LMDB, `g` GDBM,
/// chosen by the first byte.
pub fn sasldb(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let kind = match which % 3 {
        0 => crate::sasldb::Kind::BerkeleyDb,
        1 => crate::sasldb::Kind::Lmdb,
        _ => crate::sasldb::Kind::Gdbm,
    };
    crate::sasldb::fuzz_read(kind, bytes);
}
