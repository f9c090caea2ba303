//! A throwaway Dovecot 2.3 running only its auth service (`protocols = none`, no network
//! listener), from its own configuration in a temporary directory: the peer the SQL passdb
//! is compared with, request for request. Its passdb is given as a `passdb { }` block.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Whether Dovecot and its SQL drivers are installed.
pub fn missing() -> Option<&'static str> {
    if Command::new("dovecot").arg("--version").output().is_err() {
        return Some("dovecot (dovecot-core)");
    }
    let driver = |name: &str| {
        Path::new("/usr/lib/dovecot/modules")
            .join(format!("libdriver_{name}.so"))
            .exists()
    };
    if !driver("sqlite") || !driver("pgsql") || !driver("mysql") {
        return Some("Dovecot's SQL drivers (dovecot-sqlite, dovecot-pgsql, dovecot-mysql)");
    }
    None
}

/// A running Dovecot auth service.
pub struct DovecotAuth {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Its auth-client socket.
    pub socket: PathBuf,
}

impl DovecotAuth {
    /// Dovecot with `passdb` (the block's body: `driver = sql`, `args = FILE`) and PLAIN and
    /// LOGIN; the failure delay off.
    pub fn start(passdb: &str) -> DovecotAuth {
        DovecotAuth::start_offering(
            passdb,
            "plain login cram-md5 digest-md5 scram-sha-1 scram-sha-256",
        )
    }

    /// The same, offering `mechanisms` (Dovecot's `auth_mechanisms`).
    pub fn start_offering(passdb: &str, mechanisms: &str) -> DovecotAuth {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("run")).unwrap();
        std::fs::create_dir(d.join("state")).unwrap();
        let socket = d.join("auth");
        let conf = d.join("dovecot.conf");
        let mut listeners = String::new();
        for (service, names) in [
            ("imap-login", &["imap", "imaps"][..]),
            ("pop3-login", &["pop3", "pop3s"][..]),
            ("submission-login", &["submission"][..]),
        ] {
            listeners += &format!("service {service} {{\n");
            for name in names {
                listeners += &format!("  inet_listener {name} {{\n    port = 0\n  }}\n");
            }
            listeners += "}\n";
        }
        std::fs::write(
            &conf,
            format!(
                "protocols = none\nbase_dir = {run}\nstate_dir = {state}\nlog_path = {log}\n\
                 ssl = no\ndisable_plaintext_auth = no\nauth_mechanisms = {mechanisms}\n\
                 auth_failure_delay = 0\npassdb {{\n{passdb}\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home=/tmp\n}}\n\
                 service auth {{\n  unix_listener {socket} {{\n    mode = 0666\n  }}\n}}\n{listeners}",
                run = d.join("run").display(),
                state = d.join("state").display(),
                log = d.join("dovecot.log").display(),
                socket = socket.display(),
            ),
        )
        .unwrap();
        let child = Command::new("dovecot")
            .args(["-F", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("dovecot.err")).unwrap())
            .spawn()
            .unwrap();
        let auth = DovecotAuth {
            dir,
            child: Some(child),
            socket,
        };
        super::wait_until(
            Duration::from_secs(20),
            Duration::from_millis(20),
            || auth.socket.exists(),
            || auth.log(),
        );
        auth
    }

    /// What it logged.
    pub fn log(&self) -> String {
        super::files_text(self.dir.path(), &["dovecot.err", "dovecot.log"])
    }
}

impl Drop for DovecotAuth {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            super::terminate(child);
        }
    }
}
