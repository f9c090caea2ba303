//! Throwaway OpenLDAP servers for the tests: Debian's slapd (unpacked under target/peers by
//! scripts/test.sh, `SASLAUTHD_RS_SLAPD`), each with its own slapd.conf, database and ldapi
//! socket in a temporary directory and a 127.0.0.1 port, loaded with `ldapadd`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The directory tree every server holds.
pub const SUFFIX: &str = "dc=example,dc=org";
pub const PEOPLE: &str = "ou=people,dc=example,dc=org";
pub const ADMIN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PW: &str = "adminpw";
/// The DN saslauthd searches as; it may read userPassword (for `custom`).
pub const SEARCHER: &str = "cn=saslauthd,dc=example,dc=org";
pub const SEARCHER_PW: &str = "searchpw";

/// Where slapd is: the unpacked package's root, or the system's.
fn root() -> Option<PathBuf> {
    super::peer_root("SASLAUTHD_RS_SLAPD", "usr/sbin/slapd")
}

/// Whether the tests can run (slapd and ldap-utils); a missing peer fails under
/// SASLAUTHD_RS_REQUIRE_PEERS=1.
pub fn available() -> bool {
    let ok = root().is_some() && super::peer("ldapadd").is_some();
    if !ok && std::env::var("SASLAUTHD_RS_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("slapd or ldap-utils missing (SASLAUTHD_RS_REQUIRE_PEERS=1)");
    }
    if !ok {
        eprintln!("SKIPPED: slapd or ldap-utils not available");
    }
    ok
}

/// A running slapd.
pub struct Slapd {
    child: Option<Child>,
    pub dir: PathBuf,
    pub port: u16,
    /// The ldaps:// port, with TLS.
    pub ldaps_port: u16,
    pub ldapi: PathBuf,
    conf: PathBuf,
    /// slapd's -d level: 0, or 256 (stats: every operation in slapd.log).
    debug: &'static str,
}

/// `ldapi://` with the socket path percent-encoded, as libldap and ldap3 take it.
pub fn ldapi_url(path: &Path) -> String {
    format!(
        "ldapi://{}/",
        path.display().to_string().replace('/', "%2F")
    )
}

impl Slapd {
    /// Starts a server in `dir` (created) with the base entries and the `users`
    /// (uid, userPassword value, mail); `tls` adds TLS with these (CA, certificate, key).
    pub fn start(
        dir: &Path,
        users: &[(&str, &str, &str)],
        tls: Option<(&Path, &Path, &Path)>,
    ) -> Slapd {
        Self::start_with(dir, users, tls, false)
    }

    /// The same with the ppolicy overlay: an account is locked after two wrong passwords.
    pub fn start_with_lockout(dir: &Path, users: &[(&str, &str, &str)]) -> Slapd {
        Self::start_with(dir, users, None, true)
    }

    /// The same with the syncprov overlay: the server offers its changes (RFC 4533), as a
    /// replicated directory's servers do.
    pub fn start_with_syncprov(dir: &Path, users: &[(&str, &str, &str)]) -> Slapd {
        Self::start_with(dir, users, None, false).with_syncprov()
    }

    /// This server restarted with the syncprov overlay on top of what it has (the password
    /// policy, say).
    pub fn with_syncprov(self) -> Slapd {
        let root = root().unwrap();
        let modules = root.join("usr/lib/ldap");
        self.reconfigured(|conf| {
            format!(
                "modulepath {}\nmoduleload syncprov\n{conf}overlay syncprov\n",
                modules.display()
            )
        })
    }

    /// This server restarted with `acl` (an `access to` line) ahead of the catch-all one.
    pub fn with_acl(self, acl: &str) -> Slapd {
        self.reconfigured(|conf| {
            let all = "access to * by * read\n";
            conf.replacen(all, &format!("{acl}\n{all}"), 1)
        })
    }

    /// This server restarted with `line`, a global directive (`TLSVerifyClient demand`).
    pub fn with_global(self, line: &str) -> Slapd {
        self.reconfigured(|conf| format!("{line}\n{conf}"))
    }

    /// This server restarted on its slapd.conf as `change` rewrites it.
    fn reconfigured(mut self, change: impl FnOnce(String) -> String) -> Slapd {
        let conf = std::fs::read_to_string(&self.conf).unwrap();
        std::fs::write(&self.conf, change(conf)).unwrap();
        self.restart();
        self
    }

    fn start_with(
        dir: &Path,
        users: &[(&str, &str, &str)],
        tls: Option<(&Path, &Path, &Path)>,
        lockout: bool,
    ) -> Slapd {
        let root = root().expect("slapd");
        std::fs::create_dir_all(dir.join("db")).unwrap();
        let (port, ldaps_port) = (super::free_port(), super::free_port());
        let schema = root.join("etc/ldap/schema");
        let mut conf = String::new();
        for s in ["core", "cosine", "inetorgperson", "nis"] {
            conf += &format!("include {}/{s}.schema\n", schema.display());
        }
        if lockout {
            conf += &format!(
                "modulepath {}\nmoduleload ppolicy\n",
                root.join("usr/lib/ldap").display()
            );
        }
        conf += &format!(
            "modulepath {}\nmoduleload back_mdb\npidfile {}\nargsfile {}\n",
            root.join("usr/lib/ldap").display(),
            dir.join("slapd.pid").display(),
            dir.join("slapd.args").display()
        );
        if let Some((ca, cert, key)) = tls {
            conf += &format!(
                "TLSCACertificateFile {}\nTLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                ca.display(),
                cert.display(),
                key.display()
            );
        }
        conf += &format!(
            "database mdb\nmaxsize 10485760\nsuffix \"{SUFFIX}\"\nrootdn \"{ADMIN}\"\nrootpw {ADMIN_PW}\n\
             directory {}\n\
             access to attrs=userPassword by dn.exact=\"{SEARCHER}\" read by self write by anonymous auth by * none\n\
             access to * by * read\n",
            dir.join("db").display()
        );
        if lockout {
            // ppolicy_use_lockout: the server says accountLocked (otherwise it only refuses).
            conf += &format!(
                "overlay ppolicy\nppolicy_default \"cn=lockout,{SUFFIX}\"\nppolicy_use_lockout\n"
            );
        }
        let conf_path = dir.join("slapd.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut slapd = Slapd {
            child: None,
            dir: dir.to_owned(),
            port,
            ldaps_port,
            ldapi: dir.join("ldapi"),
            conf: conf_path,
            debug: "0",
        };
        slapd.launch(tls.is_some());
        let mut ldif = format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
             dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: {SEARCHER}\nobjectClass: simpleSecurityObject\nobjectClass: organizationalRole\ncn: saslauthd\nuserPassword: {SEARCHER_PW}\n\n"
        );
        if lockout {
            ldif += &format!(
                "dn: cn=lockout,{SUFFIX}\nobjectClass: person\nobjectClass: pwdPolicy\ncn: lockout\nsn: lockout\n\
                 pwdAttribute: userPassword\npwdLockout: TRUE\npwdMaxFailure: 2\npwdLockoutDuration: 0\n\n"
            );
        }
        for (uid, password, mail) in users {
            ldif += &user_ldif(uid, password, mail);
        }
        slapd.add(&ldif);
        slapd
    }

    fn launch(&mut self, tls: bool) {
        let root = root().unwrap();
        let mut urls = format!("ldap://127.0.0.1:{}/ {}", self.port, ldapi_url(&self.ldapi));
        if tls {
            urls += &format!(" ldaps://127.0.0.1:{}/", self.ldaps_port);
        }
        let log = std::fs::File::create(self.dir.join("slapd.log")).unwrap();
        let child = Command::new(root.join("usr/sbin/slapd"))
            .env("LD_LIBRARY_PATH", root.join("usr/lib/x86_64-linux-gnu"))
            .arg("-f")
            .arg(&self.conf)
            .args(["-h", &urls, "-d", self.debug])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start slapd");
        self.child = Some(child);
        super::wait_for_port(self.port, Duration::from_secs(10), "slapd", || self.log());
    }

    /// With operations logged: how many binds as `dn` slapd has seen.
    pub fn binds_as(&self, dn: &str) -> usize {
        self.log()
            .matches(&format!("BIND dn=\"{dn}\" method="))
            .count()
    }

    /// Logs every operation from now on (restarts slapd with -d 256).
    pub fn log_operations(&mut self) {
        self.debug = "256";
        self.restart();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default()
    }

    /// `ldap://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}/", self.port)
    }

    /// ldapadd as the root DN, over ldapi.
    pub fn add(&self, ldif: &str) {
        self.ldif("ldapadd", ldif);
    }

    /// ldapmodify as the root DN (`changetype:` records).
    pub fn modify(&self, ldif: &str) {
        self.ldif("ldapmodify", ldif);
    }

    fn ldif(&self, program: &str, ldif: &str) {
        ldif_as(program, &ldapi_url(&self.ldapi), ADMIN, ADMIN_PW, ldif);
    }

    /// ldappasswd as the root DN: `uid`'s password becomes `new`.
    pub fn passwd(&self, uid: &str, new: &str) {
        let out = Command::new("ldappasswd")
            .args([
                "-x",
                "-H",
                &ldapi_url(&self.ldapi),
                "-D",
                ADMIN,
                "-w",
                ADMIN_PW,
                "-s",
                new,
            ])
            .arg(format!("uid={uid},{PEOPLE}"))
            .output()
            .unwrap();
        super::checked(out, "ldappasswd");
    }

    fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on our child's pid.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// SIGSTOP: the server accepts connections (the kernel does) and answers nothing.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Stops it (SIGTERM, waited for).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: as above.
            unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and database.
    pub fn restart(&mut self) {
        self.stop();
        let tls =
            std::fs::read_to_string(&self.conf).is_ok_and(|c| c.contains("TLSCertificateFile"));
        self.launch(tls);
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `program` (ldapadd, ldapmodify) on `url` bound as `dn`, fed `ldif`; it must succeed.
pub fn ldif_as(program: &str, url: &str, dn: &str, password: &str, ldif: &str) {
    let out = super::run_with_stdin(
        Command::new(program).args(["-x", "-H", url, "-D", dn, "-w", password]),
        ldif.as_bytes(),
    );
    super::checked(out, program);
}

/// An inetOrgPerson under ou=people.
pub fn user_ldif(uid: &str, password: &str, mail: &str) -> String {
    // Values that are not plain text go base64 (`::`), as LDIF requires.
    let attr = |name: &str, value: &str| {
        let plain = value.bytes().all(|b| (0x20..0x7f).contains(&b))
            && !value.starts_with([' ', ':', '<'])
            && !value.ends_with(' ');
        if plain {
            format!("{name}: {value}\n")
        } else {
            use base64::Engine;
            format!(
                "{name}:: {}\n",
                base64::engine::general_purpose::STANDARD.encode(value)
            )
        }
    };
    let rdn = uid
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('+', "\\+")
        .replace('"', "\\\"")
        .replace('<', "\\<")
        .replace('>', "\\>")
        .replace(';', "\\;")
        .replace('=', "\\=");
    let mut out = attr("dn", &format!("uid={rdn},{PEOPLE}"));
    out += "objectClass: inetOrgPerson\n";
    out += &attr("uid", uid);
    out += &attr("cn", uid);
    out += &attr("sn", uid);
    out += &attr("mail", mail);
    out += &attr("userPassword", password);
    out.push('\n');
    out
}
