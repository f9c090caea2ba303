//! Test certificates made with openssl: a CA and server certificates it signs, for the TLS
//! tests of the directory and database passdbs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and a server certificate for `san` (openssl), in `dir`: (ca.pem, cert.pem, key.pem).
pub fn certificates(dir: &Path, name: &str, san: &str) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=Test CA",
        "-keyout",
        &path_str(&p("ca.key")),
        "-out",
        &path_str(&p("ca.pem")),
    ]);
    let (cert, key) = issue(dir, name, "ldap", &format!("subjectAltName={san}"));
    (p("ca.pem"), cert, key)
}

/// A key and a certificate for `/CN={cn}` with the extension lines `ext`, signed by the CA
/// [`certificates`] made for `name` in `dir`: (`{name}-{cn}-cert.pem`, its key).
pub fn issue(dir: &Path, name: &str, cn: &str, ext: &str) -> (PathBuf, PathBuf) {
    let p = |f: &str| dir.join(format!("{name}-{cn}-{f}"));
    let ca = |f: &str| path_str(&dir.join(format!("{name}-ca.{f}")));
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        &format!("/CN={cn}"),
        "-keyout",
        &path_str(&p("key.pem")),
        "-out",
        &path_str(&p("req.pem")),
    ]);
    std::fs::write(p("ext"), format!("{ext}\n")).unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path_str(&p("req.pem")),
        "-CA",
        &ca("pem"),
        "-CAkey",
        &ca("key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &path_str(&p("ext")),
        "-out",
        &path_str(&p("cert.pem")),
    ]);
    (p("cert.pem"), p("key.pem"))
}

/// `openssl ARGS`, which must succeed; its standard output.
pub fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}
