//! `saslpasswd2-rs`: set or delete a user's password in a sasldb2 file, with the flags,
//! prompts, messages and exit codes of Cyrus's `saslpasswd2` (`utils/saslpasswd.c`).
//!
//! The file keeps its format (Berkeley DB hash, GDBM or LMDB). A new file gets the format the
//! host's libsasl2 reads, unless `--format` (or `sasldb_format` in the `--config` file) says
//! otherwise, so that Postfix's `auxprop` reads what this tool writes.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use saslauthd_rs::getopt::{self, Spec};
use saslauthd_rs::sasldb::{self, host, Kind, OpenMode, Part, Store};
use saslauthd_rs::tools::{self, exit, ReadPasswordError, SasldbSettings};

const SPEC: Spec<'static> = Spec {
    options: tools::options::SASLPASSWD2,
};

fn usage(program: &str) -> String {
    format!(
        "{notice}{program}: usage: {program} [-v] [-c [-p] [-n]] [-d] [-a appname] [-f sasldb] [-u DOM] userid\n\
         \t-p\tpipe mode -- no prompt, password read on stdin\n\
         \t-c\tcreate -- ask mechs to create the account\n\
         \t-d\tdisable -- ask mechs to disable/delete the account\n\
         \t-n\tno userPassword -- don't set plaintext userPassword property\n\
         \t  \t                   (only set mechanism-specific secrets)\n\
         \t-f sasldb\tuse given file as sasldb\n\
         \t-a appname\tuse appname as application name\n\
         \t-u DOM\tuse DOM for user domain\n\
         \t-v\tprint version numbers and exit\n",
        notice = tools::NOTICE
    )
}

fn main() -> ExitCode {
    let program = getopt::program_name("saslpasswd2-rs");
    ExitCode::from(match run(&program) {
        Ok(()) => exit::OK,
        Err(Failure::Usage(None)) => {
            eprint!("{}", usage(&program));
            exit::FAIL
        }
        Err(Failure::Usage(Some(message))) => {
            eprint!("{program}: {message}\n{}", usage(&program));
            exit::FAIL
        }
        Err(Failure::Exit(code, message)) => {
            eprintln!("{program}: {message}");
            code
        }
    })
}

enum Failure {
    Usage(Option<String>),
    Exit(u8, String),
}

fn run(program: &str) -> Result<(), Failure> {
    let parsed = SPEC
        .parse(std::env::args_os().skip(1))
        .map_err(|e| Failure::Usage(Some(e.to_string())))?;
    let (mut pipe, mut create, mut disable, mut no_plain) = (false, false, false, false);
    let mut path: Option<PathBuf> = None;
    let mut format: Option<Kind> = None;
    let mut user_domain: Option<OsString> = None;
    let mut settings = SasldbSettings::default();
    let mut version = false;
    for opt in parsed.opts.iter().filter(|o| o.name == "config") {
        let file = PathBuf::from(opt.value.clone().unwrap_or_default());
        settings =
            SasldbSettings::load(&file).map_err(|e| Failure::Exit(exit::FAIL, e.to_string()))?;
    }
    for opt in &parsed.opts {
        match opt.name.as_str() {
            "v" | "version" => version = true,
            "p" => pipe = true,
            "c" => create = true,
            "d" => disable = true,
            "n" => no_plain = true,
            "f" => path = Some(PathBuf::from(opt.value.clone().unwrap_or_default())),
            "format" => {
                let name = opt.value.clone().unwrap_or_default();
                format = Some(
                    name.to_string_lossy()
                        .parse()
                        .map_err(|e: sasldb::UnknownKind| Failure::Usage(Some(e.to_string())))?,
                );
            }
            "config" => {}
            "u" => user_domain = opt.value.clone(),
            "a" => {
                if opt.bytes_value().contains(&b'/') {
                    return Err(Failure::Exit(
                        exit::FAIL,
                        "appname must not contain /".into(),
                    ));
                }
            }
            _ => return Err(Failure::Usage(None)), // -h, -?
        }
    }
    let path = path
        .or(settings.path)
        .unwrap_or_else(|| PathBuf::from(sasldb::DEFAULT_PATH));
    if version {
        eprintln!(
            "{}{program}: saslauthd-rs {} (compatible with Cyrus SASL 2.1.28 saslpasswd2)\n{}",
            tools::NOTICE,
            env!("CARGO_PKG_VERSION"),
            tools::describe_sasldb(&path, format.or(settings.format))
        );
        return Ok(());
    }
    let new_format = format
        .or(settings.format)
        .unwrap_or_else(|| host::new_file_kind().kind);
    if create && disable {
        return Err(Failure::Usage(Some(
            "-c and -d cannot be used together".into(),
        )));
    }
    let [userid] = parsed.operands.as_slice() else {
        return Err(Failure::Usage(None));
    };
    let userid = userid.as_bytes();
    // The realm: `user@realm` (split at the first `@`, as Cyrus's _plug_parseuser) wins, then
    // a non-empty -u, then the host name.
    let (authid, realm) = match userid.iter().position(|&b| b == b'@') {
        Some(at) => (&userid[..at], userid[at + 1..].to_vec()),
        None => match user_domain.filter(|d| !d.is_empty()) {
            Some(domain) => (userid, domain.as_bytes().to_vec()),
            None => {
                let host = saslauthd_rs::request::host_name().map_err(|e| {
                    Failure::Exit(exit::FAIL, format!("generic failure: gethostname: {e}"))
                })?;
                (userid, host)
            }
        },
    };
    let bad_param = |e: sasldb::SasldbError| {
        Failure::Exit(exit::BADPARAM, format!("invalid parameter supplied: {e}"))
    };
    sasldb::check_part(Part::Authid, authid).map_err(bad_param)?;
    sasldb::check_part(Part::Realm, &realm).map_err(bad_param)?;

    let db_failure = |e: sasldb::SasldbError| Failure::Exit(exit::FAIL, e.to_string());
    if disable {
        let mut store = Store::open_creating(&path, new_format).map_err(db_failure)?;
        store.delete_user(authid, &realm).map_err(db_failure)?;
        return Ok(());
    }
    // Check the file before asking for a password, so a wrong path or a Berkeley DB file is
    // reported before the user types anything; create it only once the password is good.
    Store::check(&path, OpenMode::ReadWrite).map_err(db_failure)?;
    let password = read_new_password(pipe || !tools::stdin_is_tty())?;
    if password.is_empty() {
        return Err(Failure::Exit(
            exit::BADPARAM,
            "invalid parameter supplied: the password is empty".into(),
        ));
    }
    if password.len() > sasldb::CYRUS_SASLAUTHD_MAX_VALUE {
        eprintln!(
            "{program}: warning: a password over {} bytes cannot be checked by Cyrus's own \
             saslauthd (saslauthd-rs has no such limit)",
            sasldb::CYRUS_SASLAUTHD_MAX_VALUE
        );
    }
    let mut store = Store::open_creating(&path, new_format).map_err(db_failure)?;
    let plain = if no_plain { None } else { Some(&password[..]) };
    store
        .set_password(authid, &realm, plain)
        .map_err(db_failure)?;
    Ok(())
}

fn read_new_password(pipe: bool) -> Result<zeroize::Zeroizing<Vec<u8>>, Failure> {
    let failed = |e: ReadPasswordError| Failure::Exit(exit::BADPARAM, e.to_string());
    if pipe {
        return tools::read_password_pipe(&mut std::io::stdin().lock()).map_err(failed);
    }
    let first = tools::read_password_tty("Password: ").map_err(failed)?;
    let again = tools::read_password_tty("Again (for verification): ").map_err(failed)?;
    if !saslauthd_rs::secret::secrets_equal(&first, &again) {
        return Err(Failure::Exit(
            exit::BADPARAM,
            "passwords don't match; aborting".into(),
        ));
    }
    Ok(first)
}
