//! `testsaslauthd-rs -u user -p password [-r realm] [-s service] [-f socket] [-R n] [-a addr]`:
//! send requests to a saslauthd socket and print `N: OK "Success."` or
//! `N: NO "authentication failed"`, with the output and exit codes of Cyrus's
//! `testsaslauthd` (0 when the last attempt succeeded, 255 otherwise, 1 for usage).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use saslauthd_rs::client::{self, Query};
use saslauthd_rs::getopt::{self, Spec};

const SPEC: Spec<'static> = Spec {
    options: saslauthd_rs::tools::options::TESTSASLAUTHD,
};

/// How long to wait for the daemon (Cyrus's client waits for ever).
const TIMEOUT: Duration = Duration::from_secs(30);

fn usage(program: &str) -> String {
    format!(
        "{program}: usage: {program} -u username -p password\n\
         \x20             [-r realm] [-s servicename]\n\
         \x20             [-f socket path] [-R repeatnum] [-a clientaddr]\n"
    )
}

fn main() -> ExitCode {
    let program = getopt::program_name("testsaslauthd-rs");
    let parsed = match SPEC.parse(std::env::args_os().skip(1)) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprint!("{program}: {e}\n{}", usage(&program));
            return ExitCode::from(1);
        }
    };
    let (mut user, mut password) = (None, None);
    let (mut realm, mut service) = (Vec::new(), b"imap".to_vec());
    let mut socket = client::default_socket();
    let mut repeat: u64 = 1;
    let mut client_addr = None;
    if parsed.opts.iter().any(|o| o.name == "version") {
        eprintln!(
            "{program}: saslauthd-rs {} (compatible with Cyrus SASL 2.1.28 testsaslauthd)",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    for opt in &parsed.opts {
        let value = opt.bytes_value().to_vec();
        match opt.name.as_str() {
            "u" => user = Some(value),
            "p" => password = Some(value),
            "r" => realm = value,
            "s" => service = value,
            "f" => socket = PathBuf::from(opt.value.clone().unwrap_or_default()),
            "a" => client_addr = Some(value),
            "R" => match opt
                .str_value()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                Some(n) if n > 0 => repeat = n,
                _ => {
                    eprint!("{program}: -R needs a positive number\n{}", usage(&program));
                    return ExitCode::from(1);
                }
            },
            _ => {
                eprint!("{}", usage(&program));
                return ExitCode::from(1);
            }
        }
    }
    let (Some(user), Some(password)) = (user, password) else {
        eprint!("{}", usage(&program));
        return ExitCode::from(1);
    };
    if !parsed.operands.is_empty() {
        eprint!("{}", usage(&program));
        return ExitCode::from(1);
    }
    let query = Query {
        login: &user,
        password: &password,
        service: &service,
        realm: &realm,
        client_addr: client_addr.as_deref(),
    };
    let mut stdout = std::io::stdout();
    let mut last_ok = false;
    for attempt in 0..repeat {
        print!("{attempt}: ");
        let _ = stdout.flush();
        match client::query(&socket, &query, TIMEOUT) {
            Ok(body) if client::is_ok(&body) => {
                println!("OK \"Success.\"");
                last_ok = true;
            }
            Ok(_) => {
                println!("NO \"authentication failed\"");
                last_ok = false;
            }
            Err(e) => {
                eprintln!("{e}");
                last_ok = false;
            }
        }
    }
    let _ = stdout.flush();
    ExitCode::from(if last_ok { 0 } else { 255 })
}
