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
    let offered = mech::offered(Some(&names), true, "sasldb").expect("every mechanism");
    let context = mech::Context {
        host: "fuzz.example".into(),
        realm: "fuzz.example".into(),
        scram_iterations: mech::scram::ITERATIONS,
        secret: [7; 32],
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
            }),
            Step::Derive(derivation) => m.resume_keys(derivation.run()),
            Step::Success { .. } => {
                assert!(
                    matches!(name, "PLAIN" | "LOGIN"),
                    "{name} succeeded without the password"
                );
                return;
            }
            Step::VerifyPlain { .. } | Step::Fail(_) => return,
        };
    }
}

/// The shadow(5) parser.
pub fn shadow(data: &[u8]) {
    crate::passdb::fuzz_shadow(data);
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
