//! `-a pam` under Debian's pam_wrapper with its pam_matrix module: no system user is created
//! and `/etc/pam.d` is never read or touched (PAM_WRAPPER_SERVICE_DIR points PAM at a service
//! directory of the test's own).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::{peer, Daemon};

/// pam_wrapper picks its runtime directory (`/tmp/pam.<c>`) when it is loaded, with a
/// check-then-create race between processes that start at the same moment; every start of a
/// process under pam_wrapper in this file holds this lock until that process is listening.
pub static START: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub const MODULES: &str = "/usr/lib/x86_64-linux-gnu/pam_wrapper";
pub const SECURITY: &str = "/usr/lib/x86_64-linux-gnu/security";

pub struct PamFixture {
    pub dir: tempfile::TempDir,
}

impl PamFixture {
    /// `sasl-test` checks against a pam_matrix passdb; `other` denies; with `with_other`
    /// false, there is no `other` service at all.
    pub fn new(with_other: bool) -> Option<PamFixture> {
        if !Path::new(MODULES).join("pam_matrix.so").exists() {
            peer("libpam_wrapper.so")?;
        }
        let dir = tempfile::tempdir().unwrap();
        let services = dir.path().join("services");
        std::fs::create_dir(&services).unwrap();
        let fixture = PamFixture { dir };
        fixture.set_passdb(
            "alice:wonderland:sasl-test\nbob:builder:other-service\ncarol:pw:sasl-test\n",
        );
        let matrix = format!(
            "{MODULES}/pam_matrix.so passdb={}",
            fixture.passdb().display()
        );
        let stack: String = ["auth", "account", "password", "session"]
            .iter()
            .map(|t| format!("{t} required {matrix}\n"))
            .collect();
        std::fs::write(services.join("sasl-test"), stack).unwrap();
        if with_other {
            let deny: String = ["auth", "account", "password", "session"]
                .iter()
                .map(|t| format!("{t} required {SECURITY}/pam_deny.so\n"))
                .collect();
            std::fs::write(services.join("other"), deny).unwrap();
        }
        Some(fixture)
    }

    pub fn passdb(&self) -> PathBuf {
        self.dir.path().join("passdb")
    }

    pub fn set_passdb(&self, text: &str) {
        // Written whole and renamed, so a PAM call never reads half a file.
        let tmp = self.dir.path().join("passdb.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.passdb()).unwrap();
    }

    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("LD_PRELOAD", "libpam_wrapper.so".into()),
            ("PAM_WRAPPER", "1".into()),
            (
                "PAM_WRAPPER_SERVICE_DIR",
                self.dir.path().join("services").into(),
            ),
        ]
    }

    pub fn daemon(&self, extra: &[&str]) -> Daemon {
        let mut args: Vec<OsString> = vec!["-a".into(), "pam".into()];
        args.extend(extra.iter().map(OsString::from));
        let _start = START.lock().unwrap_or_else(|e| e.into_inner());
        Daemon::spawn(tempfile::tempdir().unwrap(), &args, &self.env())
    }
}
