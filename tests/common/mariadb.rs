//! A throwaway MariaDB 10.11 from Debian's `mariadb-server` (unpacked by scripts/test.sh into
//! target/peers/mariadb, whose root `SASLAUTHD_RS_MARIADB` names, or installed):
//! `mariadb-install-db` into a temporary directory and `mariadbd` on a Unix socket there and a
//! loopback port, with the server's own defaults (latin1), stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn root() -> Option<PathBuf> {
    super::peer_root("SASLAUTHD_RS_MARIADB", "usr/sbin/mariadbd")
}

/// Whether MariaDB's programs are there.
pub fn available() -> bool {
    root().is_some()
}

/// A running MariaDB.
pub struct MariaDb {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Its Unix socket.
    pub socket: PathBuf,
    /// Its loopback port.
    pub port: u16,
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

impl MariaDb {
    /// A new server: `root` over the socket without a password.
    pub fn start() -> MariaDb {
        let base = root().unwrap().join("usr");
        let dir = tempfile::tempdir().unwrap();
        let mut install = Command::new(base.join("bin/mariadb-install-db"));
        install
            .arg("--no-defaults")
            .arg(format!("--basedir={}", base.display()))
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if is_root() {
            install.arg("--user=root");
        }
        super::checked(install.output().unwrap(), "mariadb-install-db");
        let mut db = MariaDb {
            socket: dir.path().join("mysqld.sock"),
            port: super::free_port(),
            dir,
            child: None,
        };
        db.run();
        db
    }

    /// Starts the server (again) on the same directory, socket and port.
    pub fn run(&mut self) {
        let base = root().unwrap().join("usr");
        let log = std::fs::File::create(self.dir.path().join("mariadbd.log")).unwrap();
        let mut command = Command::new(base.join("sbin/mariadbd"));
        command
            .arg("--no-defaults")
            .arg(format!("--basedir={}", base.display()))
            .arg(format!(
                "--datadir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--port={}", self.port))
            .arg(format!(
                "--lc-messages-dir={}",
                base.join("share/mysql").display()
            ))
            .args(["--bind-address=127.0.0.1", "--skip-log-bin"])
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("mariadbd.pid").display()
            ));
        if is_root() {
            command.arg("--user=root");
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        super::wait_for_port(self.port, Duration::from_secs(60), "mariadbd", || {
            self.log()
        });
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }

    /// Runs `sql` as root; panics on an error.
    pub fn sql(&self, sql: &str) {
        let base = root().unwrap().join("usr");
        let out = Command::new(base.join("bin/mariadb"))
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-u", "root", "-e", sql])
            .output()
            .unwrap();
        super::checked(out, &format!("mariadb: {sql}"));
    }

    /// Logs every statement from now on (the general log), for [`MariaDb::statements`].
    pub fn log_statements(&self) {
        let path = self.dir.path().join("general.log");
        self.sql(&format!(
            "SET GLOBAL general_log_file = '{}'; SET GLOBAL general_log = 1",
            path.display()
        ));
    }

    /// The statements logged since [`MariaDb::log_statements`].
    pub fn statements(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("general.log")).unwrap_or_default()
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mariadbd.log")).unwrap_or_default()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}
