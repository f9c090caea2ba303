//! Property tests over the same decoders and state machines the fuzz targets run
//! (`saslauthd_rs::fuzzing`; `fuzz/` runs them coverage-guided): arbitrary input never
//! panics, round trips return what went in, and no exchange succeeds without the password.

use proptest::prelude::*;
use saslauthd_rs::fuzzing;
use saslauthd_rs::protocol::saslauthd::{decode_request, encode_request, MAX_FIELD_LEN};

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn saslauthd_requests_round_trip(
        login in proptest::collection::vec(any::<u8>(), 0..300),
        password in proptest::collection::vec(any::<u8>(), 0..300),
        service in proptest::collection::vec(any::<u8>(), 0..40),
        realm in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let frame = encode_request(&login, &password, &service, &realm, None).unwrap();
        match decode_request(&frame) {
            Ok(Some((request, pw))) => {
                prop_assert_eq!(&request.login, &login);
                prop_assert_eq!(&request.service, &service);
                prop_assert_eq!(&request.realm, &realm);
                prop_assert_eq!(pw.expose(), &password[..]);
            }
            // Over the decoder's field limits: refused, never half-decoded.
            Err(_) => prop_assert!(
                [&login, &password, &service, &realm].iter().any(|f| f.len() > MAX_FIELD_LEN)
            ),
            Ok(None) => prop_assert!(false, "a whole frame is incomplete"),
        }
        fuzzing::saslauthd_request(&frame);
        // Every prefix is incomplete or refused, never a request.
        for cut in [0, 1, frame.len() / 2, frame.len().saturating_sub(1)] {
            prop_assert!(!matches!(decode_request(&frame[..cut]), Ok(Some(_))) || cut == frame.len());
        }
    }

    #[test]
    fn saslauthd_decoder_takes_anything(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzzing::saslauthd_request(&data);
    }

    #[test]
    fn dovecot_parser_takes_anything(
        lines in proptest::collection::vec("[A-Z]{0,6}\t[0-9]{0,4}\t[ -~\t\u{1}]{0,60}", 0..12),
        raw in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut text = String::from("VERSION\t1\t0\nCPID\t1\n");
        for line in &lines {
            text.push_str(line);
            text.push('\n');
        }
        fuzzing::dovecot_lines(text.as_bytes());
        fuzzing::dovecot_lines(&raw);
    }

    #[test]
    fn no_mechanism_succeeds_without_the_password(
        which in 0u8..6,
        steps in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..4),
    ) {
        let mut data = vec![which];
        for (i, step) in steps.iter().enumerate() {
            if i > 0 {
                data.push(0xff);
            }
            data.extend(step.iter().map(|&b| if b == 0xff { 0xfe } else { b }));
        }
        fuzzing::mechanism(&data);
    }

    #[test]
    fn shadow_parser_takes_anything(
        lines in proptest::collection::vec("[a-z]{0,8}(:[ -~]{0,20}){0,10}", 0..10),
    ) {
        fuzzing::shadow(lines.join("\n").as_bytes());
    }

    #[test]
    fn imap_responses_and_login_commands(
        lines in proptest::collection::vec("([*+]|saslauthd|a1) (OK|NO|BAD|BYE|CAPABILITY|3)( \\[[A-Z ]{0,12}\\])?[ -~]{0,30}(\r\n|\n|)", 0..6),
        user in proptest::collection::vec(any::<u8>(), 0..20),
        password in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        fuzzing::imap(lines.concat().as_bytes());
        let mut login = user.iter().map(|&b| if b == 0xff { 0xfe } else { b }).collect::<Vec<u8>>();
        login.push(0xff);
        login.extend_from_slice(&password);
        fuzzing::imap(&login);
    }
}

/// The sasldb readers on every fixture with bytes flipped: records or an error, and a
/// Berkeley DB file that reads writes back to itself.
#[test]
fn sasldb_readers_on_damaged_fixtures() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sasldb");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        ..ProptestConfig::default()
    });
    for (tag, name) in [
        (0u8, "sasldb2-bdb-hash"),
        (1, "sasldb2-lmdb"),
        (2, "sasldb2-gdbm"),
    ] {
        let base = std::fs::read(dir.join(name)).unwrap();
        let flips = proptest::collection::vec((0..base.len(), any::<u8>()), 0..8);
        runner
            .run(&flips, |flips| {
                let mut data = vec![tag];
                data.extend_from_slice(&base);
                for (at, byte) in flips {
                    data[at + 1] = byte;
                }
                fuzzing::sasldb(&data);
                Ok(())
            })
            .unwrap();
    }
}
