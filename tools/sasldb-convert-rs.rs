//! `sasldb-convert-rs`: copy a sasldb2 file into another format, every record byte for byte.
//!
//! ```text
//! sasldb-convert-rs [--to lmdb|bdb|gdbm] [--replace] SOURCE DEST
//! sasldb-convert-rs --to lmdb|bdb|gdbm --in-place FILE
//! ```
//!
//! Every key and value is copied as it is: `userPassword`, `authPassword`, `cmusaslsecretOTP`
//! and anything else, even keys that are not `authid NUL realm NUL property`. The new file
//! appears whole or not at all (written beside its path, fsynced and renamed), and is read back
//! and compared with the source before the tool says it is done. Without `--to` the new file
//! gets the format the host's libsasl2 reads. `--in-place` replaces the file with its
//! conversion, keeping its mode, owner and group; a running saslauthd-rs serves the new file
//! on its next request.

use std::path::PathBuf;
use std::process::ExitCode;

use saslauthd_rs::getopt::{self, Spec};
use saslauthd_rs::sasldb::{self, host, Key, Kind, Store};
use saslauthd_rs::tools::exit;

const SPEC: Spec<'static> = Spec {
    options: saslauthd_rs::tools::options::SASLDB_CONVERT,
};

fn usage(program: &str) -> String {
    format!(
        "{program}: usage: {program} [--to lmdb|bdb|gdbm] [--replace] SOURCE DEST\n\
         \x20      {program} --to lmdb|bdb|gdbm --in-place FILE\n\
         \t--to FORMAT\tthe new file's format (default: what the host's libsasl2 reads)\n\
         \t--replace\treplace DEST if it exists (keeping its mode, owner and group)\n\
         \t--in-place\treplace FILE with its conversion\n\
         \t-v\tprint the version and exit\n"
    )
}

fn main() -> ExitCode {
    let program = getopt::program_name("sasldb-convert-rs");
    match run(&program) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Some(message)) => {
            eprintln!("{program}: {message}");
            ExitCode::from(exit::FAIL)
        }
        Err(None) => {
            eprint!("{}", usage(&program));
            ExitCode::from(exit::FAIL)
        }
    }
}

fn run(program: &str) -> Result<(), Option<String>> {
    let parsed = SPEC
        .parse(std::env::args_os().skip(1))
        .map_err(|e| Some(format!("{e}\n{}", usage(program))))?;
    let (mut to, mut replace, mut in_place) = (None::<Kind>, false, false);
    for opt in &parsed.opts {
        match opt.name.as_str() {
            "v" | "version" => {
                eprintln!("{program}: saslauthd-rs {}", env!("CARGO_PKG_VERSION"));
                return Ok(());
            }
            "to" => {
                let name = opt.value.clone().unwrap_or_default();
                to = Some(
                    name.to_string_lossy()
                        .parse()
                        .map_err(|e: sasldb::UnknownKind| Some(e.to_string()))?,
                );
            }
            "replace" => replace = true,
            "in-place" => in_place = true,
            _ => return Err(None),
        }
    }
    let (source, dest) = match (in_place, parsed.operands.as_slice()) {
        (true, [file]) if to.is_some() => (PathBuf::from(file), PathBuf::from(file)),
        (true, _) => {
            return Err(Some(format!(
                "--in-place takes --to and one file\n{}",
                usage(program)
            )))
        }
        (false, [source, dest]) => (PathBuf::from(source), PathBuf::from(dest)),
        (false, _) => return Err(None),
    };
    let kind = to.unwrap_or_else(|| host::new_file_kind().kind);
    let failed = |e: sasldb::SasldbError| Some(e.to_string());
    let from = Store::open_for_listing(&source).map_err(failed)?;
    let from_kind = from.kind();
    let records = from.records().map_err(failed)?;
    drop(from);
    Store::create(&dest, kind, &records, replace || in_place).map_err(failed)?;
    // Read the new file back: every record, byte for byte.
    let mut copied = Store::open_for_listing(&dest)
        .and_then(|s| s.records())
        .map_err(failed)?;
    let mut want = records;
    want.sort_by(|a, b| a.0.cmp(&b.0));
    copied.sort_by(|a, b| a.0.cmp(&b.0));
    if copied != want {
        return Err(Some(format!(
            "{}: the new file does not hold what {} holds; do not use it",
            dest.display(),
            source.display()
        )));
    }
    let users: std::collections::BTreeSet<(&[u8], &[u8])> = want
        .iter()
        .filter_map(|(k, _)| Key::parse(k).map(|k| (k.authid, k.realm)))
        .collect();
    println!(
        "{}: {} records of {} users, {from_kind} -> {kind}{}",
        dest.display(),
        want.len(),
        users.len(),
        if in_place { " (in place)" } else { "" }
    );
    Ok(())
}
