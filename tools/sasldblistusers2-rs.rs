//! `sasldblistusers2-rs [-v] [[-f] FILE] [--json]`: list the users of a sasldb2 file, one
//! `authid@realm: property` line per record, as Cyrus's `sasldblistusers2` prints them.
//! Values (passwords) are never printed.
//!
//! Unlike Cyrus, which exits 0 when it cannot read the file, this exits 1 with a message.
//! Every format is read (Berkeley DB hash, GDBM, LMDB); `-v` names the file's.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use saslauthd_rs::getopt::{self, Spec};
use saslauthd_rs::sasldb::{self, Key, Store};
use saslauthd_rs::tools::{self, exit};

const SPEC: Spec<'static> = Spec {
    options: tools::options::SASLDBLISTUSERS2,
};

fn usage(program: &str) -> String {
    format!(
        "{notice}{program}: usage: {program} [-v] [[-f] sasldb] [--json]\n\
         \t-f sasldb\tuse given file as sasldb\n\
         \t-v\tprint version numbers and exit\n\
         \t--json\tprint a JSON array of {{\"authid\", \"realm\", \"property\"}} objects\n",
        notice = tools::NOTICE
    )
}

fn main() -> ExitCode {
    let program = getopt::program_name("sasldblistusers2-rs");
    let parsed = match SPEC.parse(std::env::args_os().skip(1)) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprint!("{program}: {e}\n{}", usage(&program));
            return ExitCode::from(exit::FAIL);
        }
    };
    let mut path: Option<PathBuf> = None;
    let mut json = false;
    let mut version = false;
    for opt in &parsed.opts {
        match opt.name.as_str() {
            "v" | "version" => version = true,
            "f" => path = opt.value.clone().map(PathBuf::from),
            "json" => json = true,
            _ => {
                eprint!("{}", usage(&program));
                return ExitCode::from(exit::FAIL);
            }
        }
    }
    match (path.is_some(), parsed.operands.as_slice()) {
        (_, []) => {}
        (false, [file]) => path = Some(PathBuf::from(file)),
        _ => {
            eprint!("{program}: too many arguments\n{}", usage(&program));
            return ExitCode::from(exit::FAIL);
        }
    }
    let path = path.unwrap_or_else(|| PathBuf::from(sasldb::DEFAULT_PATH));
    if version {
        eprintln!(
            "{}{program}: saslauthd-rs {} (compatible with Cyrus SASL 2.1.28 sasldblistusers2)\n{}",
            tools::NOTICE,
            env!("CARGO_PKG_VERSION"),
            tools::describe_sasldb(&path, None)
        );
        return ExitCode::SUCCESS;
    }
    let entries = match Store::open_for_listing(&path).and_then(|s| s.keys()) {
        Ok(entries) => entries,
        Err(e) => {
            eprintln!("{program}: listusers failed: {e}");
            return ExitCode::from(exit::FAIL);
        }
    };
    let mut keys = Vec::with_capacity(entries.len());
    for entry in &entries {
        match Key::parse(&entry.key) {
            Some(key) => keys.push(key),
            // Cyrus loops for ever here; we name the key and go on.
            None => eprintln!(
                "{program}: skipping a malformed key ({} bytes, not authid\\0realm\\0property): {}",
                entry.key.len(),
                saslauthd_rs::request::Printable(&entry.key)
            ),
        }
    }
    let mut out = io::stdout().lock();
    let written = if json {
        write_json(&mut out, &keys)
    } else {
        write_lines(&mut out, &keys)
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: cannot write the list: {e}");
            ExitCode::from(exit::FAIL)
        }
    }
}

fn write_lines(out: &mut impl Write, keys: &[Key<'_>]) -> io::Result<()> {
    for key in keys {
        writeln!(out, "{key}")?;
    }
    Ok(())
}

fn write_json(out: &mut impl Write, keys: &[Key<'_>]) -> io::Result<()> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let list: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| {
            serde_json::json!({
                "authid": text(k.authid),
                "realm": text(k.realm),
                "property": text(k.property),
            })
        })
        .collect();
    serde_json::to_writer_pretty(&mut *out, &list)?;
    writeln!(out)
}
