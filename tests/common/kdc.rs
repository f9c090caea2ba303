//! A throwaway MIT Kerberos KDC (`krb5-kdc`, `krb5-admin-server` for `kadmin.local`): its own
//! `krb5.conf`, `kdc.conf`, database and keytab in a temporary directory, on a loopback port.
//! Realm `EXAMPLE.ORG`; the keytab holds `host/<this host>`. Nothing reads `/etc/krb5.conf`:
//! every program gets `KRB5_CONFIG` and `KRB5_KDC_PROFILE` (see [`Kdc::env`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The realm.
pub const REALM: &str = "EXAMPLE.ORG";

/// Whether MIT's KDC and its admin tools are installed.
pub fn missing() -> Option<&'static str> {
    for program in [
        "/usr/sbin/krb5kdc",
        "/usr/sbin/kdb5_util",
        "/usr/sbin/kadmin.local",
    ] {
        if !Path::new(program).exists() {
            return Some("MIT Kerberos (krb5-kdc, krb5-admin-server)");
        }
    }
    None
}

/// A running KDC.
pub struct Kdc {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Its port (UDP and TCP).
    pub port: u16,
    /// The keytab with `host/<this host>`.
    pub keytab: PathBuf,
    /// The client configuration.
    pub krb5_conf: PathBuf,
}

impl Kdc {
    /// A KDC with the principals `(name, password, kadmin addprinc options)`.
    pub fn start(principals: &[(&str, &str, &str)]) -> Kdc {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = super::free_port();
        let krb5_conf = d.join("krb5.conf");
        std::fs::write(
            &krb5_conf,
            format!(
                "[libdefaults]\n  default_realm = {REALM}\n  dns_lookup_kdc = false\n  \
                 dns_lookup_realm = false\n  rdns = false\n  dns_canonicalize_hostname = false\n\
                 [realms]\n  {REALM} = {{\n    kdc = 127.0.0.1:{port}\n  }}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("kdc.conf"),
            format!(
                "[kdcdefaults]\n  kdc_ports = {port}\n  kdc_tcp_ports = {port}\n\
                 [realms]\n  {REALM} = {{\n    database_name = {db}\n    key_stash_file = {stash}\n    \
                 acl_file = {acl}\n    supported_enctypes = aes256-cts-hmac-sha1-96:normal\n  }}\n\
                 [logging]\n  kdc = FILE:{log}\n",
                db = d.join("principal").display(),
                stash = d.join("stash").display(),
                acl = d.join("kadm5.acl").display(),
                log = d.join("kdc.log").display(),
            ),
        )
        .unwrap();
        std::fs::write(d.join("kadm5.acl"), "").unwrap();
        let keytab = d.join("keytab");
        let mut kdc = Kdc {
            dir,
            child: None,
            port,
            keytab,
            krb5_conf,
        };
        kdc.run_tool(
            "/usr/sbin/kdb5_util",
            &["create", "-s", "-r", REALM, "-P", "master-pw"],
        );
        for (name, password, options) in principals {
            kdc.kadmin(&format!("addprinc -pw {password} {options} {name}"));
        }
        let host = format!("host/{}", host_name());
        kdc.kadmin(&format!("addprinc -randkey {host}"));
        kdc.kadmin(&format!("ktadd -k {} {host}", kdc.keytab.display()));
        kdc.run();
        kdc
    }

    /// `kadmin.local -q QUERY`, which must succeed.
    pub fn kadmin(&self, query: &str) {
        self.run_tool("/usr/sbin/kadmin.local", &["-q", query]);
    }

    fn run_tool(&self, program: &str, args: &[&str]) {
        let out = Command::new(program)
            .args(args)
            .envs(self.env())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("rror"),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The environment every Kerberos program of the test gets: this KDC's configuration,
    /// and its keytab as the default one.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("KRB5_CONFIG", self.krb5_conf.clone().into()),
            ("KRB5_KDC_PROFILE", self.dir.path().join("kdc.conf").into()),
            (
                "KRB5_KTNAME",
                format!("FILE:{}", self.keytab.display()).into(),
            ),
        ]
    }

    /// Starts the KDC (again).
    pub fn run(&mut self) {
        let child = Command::new("/usr/sbin/krb5kdc")
            .arg("-n")
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("kdc.err")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        super::wait_for_port(self.port, Duration::from_secs(20), "krb5kdc", || self.log());
    }

    /// Stops it.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::terminate(child);
        }
    }

    /// What it logged.
    pub fn log(&self) -> String {
        super::files_text(self.dir.path(), &["kdc.err", "kdc.log"])
    }
}

impl Drop for Kdc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// This host's name as libkrb5 makes `host/<name>` of it with `rdns` and
/// `dns_canonicalize_hostname` off: `gethostname()`, lowercased.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .to_lowercase()
}
