//! A throwaway PostgreSQL server from Debian's `postgresql-15` (unpacked by scripts/test.sh
//! into target/peers/postgresql, whose root `SASLAUTHD_RS_POSTGRESQL` names, or installed):
//! `initdb` into a temporary directory and `postgres` listening on a Unix socket there and a
//! loopback port, stopped and removed when dropped. PostgreSQL refuses to run as root: under
//! root it runs as `nobody`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where Debian puts PostgreSQL 15's programs, under the package's root.
const BIN: &str = "usr/lib/postgresql/15/bin";

fn bin() -> Option<PathBuf> {
    super::peer_root(
        "SASLAUTHD_RS_POSTGRESQL",
        "usr/lib/postgresql/15/bin/postgres",
    )
    .map(|root| root.join(BIN))
}

/// A running PostgreSQL.
pub struct Pg {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The directory its Unix socket is in (`host=` takes it).
    pub socket_dir: PathBuf,
    /// Its loopback port.
    pub port: u16,
}

/// Whether PostgreSQL's programs are installed.
pub fn available() -> bool {
    bin().is_some()
}

fn as_server(program: &str) -> Command {
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(bin().unwrap().join(program));
        command
    } else {
        Command::new(bin().unwrap().join(program))
    }
}

impl Pg {
    /// A new cluster (user `postgres`, trust authentication on the socket, password on the
    /// port), started.
    pub fn start() -> Pg {
        let dir = tempfile::tempdir().unwrap();
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        }
        let data = dir.path().join("data");
        let out = as_server("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "-N"])
            .output()
            .unwrap();
        super::checked(out, "initdb");
        let mut pg = Pg {
            socket_dir: dir.path().to_owned(),
            port: super::free_port(),
            dir,
            child: None,
        };
        pg.run();
        pg
    }

    /// Starts the server (again) on the same directory, socket and port.
    pub fn run(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("postgres.log")).unwrap();
        let child = as_server("postgres")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-k")
            .arg(&self.socket_dir)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-c", "fsync=off", "-c", "max_connections=40"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        // Its port and socket are there before the end of recovery, when a connection is
        // still refused ("the database system is starting up"); the log (new at each start)
        // says when it accepts them, on both.
        super::wait_until(
            Duration::from_secs(30),
            Duration::from_millis(20),
            || self.log().contains("ready to accept connections"),
            || self.log(),
        );
    }

    /// Stops the server (a fast shutdown: connections are closed).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            let _ = child.wait();
        }
    }

    /// Runs `sql` with psql as `postgres` on database `db`; panics on an error.
    pub fn psql(&self, db: &str, sql: &str) {
        let out = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"])
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .unwrap();
        super::checked(out, &format!("psql: {sql}"));
    }

    /// Runs `sql` with psql as `postgres` on database `db`: its rows, unaligned, one a line.
    pub fn query(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-q", "-t", "-A", "-U", "postgres", "-h"])
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .unwrap();
        let out = super::checked(out, &format!("psql: {sql}"));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Turns TLS on (a reload), with a certificate for 127.0.0.1 and localhost from a CA of
    /// its own (made with openssl): the CA's certificate, for `sslrootcert`.
    pub fn enable_tls(&self) -> PathBuf {
        let pki = self.dir.path().join("pki");
        let (ca, cert, key) = super::pki::certificates(&pki, "pg", "IP:127.0.0.1,DNS:localhost");
        // The server reads its certificate and key as its own user, and only a key that no
        // one else may read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if unsafe { libc::geteuid() } == 0 {
            for path in [&pki, &cert, &key] {
                std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
            }
        }
        for (name, value) in [("ssl_cert_file", &cert), ("ssl_key_file", &key)] {
            self.psql(
                "postgres",
                &format!("ALTER SYSTEM SET {name} = '{}'", value.display()),
            );
        }
        self.psql("postgres", "ALTER SYSTEM SET ssl = on");
        self.psql("postgres", "SELECT pg_reload_conf()");
        super::wait_until(
            Duration::from_secs(10),
            Duration::from_millis(50),
            || self.query("postgres", "SHOW ssl") == "on",
            || self.log(),
        );
        ca
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
    }
}
