//! A client of the Dovecot auth-client socket for the tests, and the mechanisms run through
//! it (PLAIN, CRAM-MD5, SCRAM).

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use saslauthd_rs::client::AuthClient;
use saslauthd_rs::mech::{ScramClient, ScramHash};

/// The library's auth client, where every step is expected to work.
pub struct Client {
    pub inner: AuthClient,
    pub handshake: String,
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        let inner = AuthClient::connect(path, Duration::from_secs(10)).unwrap();
        let handshake = inner.handshake().to_owned();
        Client { inner, handshake }
    }

    /// As Postfix does: VERSION 1 0 and CPID.
    pub fn postfix(path: &Path) -> Client {
        let mut c = Client::connect(path);
        c.send("VERSION\t1\t0\nCPID\t4242\n");
        c
    }

    pub fn send(&mut self, text: &str) {
        self.inner.send(text).unwrap();
    }

    pub fn line_bytes(&mut self) -> Vec<u8> {
        self.inner.line_bytes().unwrap()
    }

    pub fn line(&mut self) -> String {
        self.inner.line().unwrap()
    }

    /// Whether the server closed the connection (EOF within 5 s).
    pub fn closed(&mut self) -> bool {
        self.inner.closed(Duration::from_secs(5))
    }
}

pub fn plain(user: &str, password: &str) -> String {
    B64.encode(format!("\0{user}\0{password}"))
}

/// One PLAIN login on a new connection to the socket at `path`, as Postfix sends it; the
/// reply line.
pub fn plain_reply(path: &Path, user: &str, password: &str) -> String {
    let mut c = Client::postfix(path);
    c.send(&format!(
        "AUTH\t1\tPLAIN\tservice=smtp\tresp={}\n",
        plain(user, password)
    ));
    c.line()
}

/// CRAM-MD5 through the Dovecot socket; the final reply line.
pub fn cram(c: &mut Client, id: u32, user: &str, password: &str) -> String {
    // An initial response is ignored: the challenge comes first.
    c.send(&format!(
        "AUTH\t{id}\tCRAM-MD5\tservice=smtp\tresp={}\n",
        B64.encode("ignored")
    ));
    let line = c.line();
    let challenge = line
        .strip_prefix(&format!("CONT\t{id}\t"))
        .unwrap()
        .trim_end();
    let challenge = B64.decode(challenge).unwrap();
    assert!(
        challenge.starts_with(b"<") && challenge.ends_with(b">"),
        "{challenge:?}"
    );
    let digest = saslauthd_rs::mech::cram_md5::digest_hex(password.as_bytes(), &challenge);
    let response = [user.as_bytes(), b" ", &digest].concat();
    c.send(&format!("CONT\t{id}\t{}\n", B64.encode(response)));
    c.line()
}

/// SCRAM-SHA-1/-256 through the Dovecot socket, checking the server signature; the final
/// reply (`OK\tID\tuser=...` or the failure line).
pub fn scram(
    c: &mut Client,
    id: u32,
    sha256: bool,
    user: &str,
    password: &str,
    final_resp_ok: bool,
) -> String {
    let hash = if sha256 {
        ScramHash::Sha256
    } else {
        ScramHash::Sha1
    };
    let mut client = ScramClient::new(hash, user, password);
    let mech = hash.name();
    let flag = if final_resp_ok { "\tfinal-resp-ok" } else { "" };
    c.send(&format!(
        "AUTH\t{id}\t{mech}\tservice=smtp{flag}\tresp={}\n",
        B64.encode(client.first(&format!("cnonce{id}")))
    ));
    let line = c.line();
    let server_first = line
        .strip_prefix(&format!("CONT\t{id}\t"))
        .expect(&line)
        .trim_end();
    let server_first = String::from_utf8(B64.decode(server_first).unwrap()).unwrap();
    let (last, expected_v) = client.last(&server_first).unwrap();
    c.send(&format!("CONT\t{id}\t{}\n", B64.encode(last)));
    let reply = c.line();
    if let Some(ok) = reply.strip_prefix(&format!("OK\t{id}\t")) {
        let v = ok
            .trim_end()
            .split('\t')
            .find_map(|f| f.strip_prefix("resp="))
            .unwrap();
        assert_eq!(
            B64.decode(v).unwrap(),
            expected_v.as_bytes(),
            "server signature"
        );
        return format!("OK\t{id}\t{}", ok.trim_end().split('\t').next().unwrap());
    }
    if let Some(data) = reply.strip_prefix(&format!("CONT\t{id}\t")) {
        assert_eq!(
            B64.decode(data.trim_end()).unwrap(),
            expected_v.as_bytes(),
            "server signature"
        );
        c.send(&format!("CONT\t{id}\t\n"));
        return c.line().trim_end().to_owned();
    }
    reply.trim_end().to_owned()
}

/// DIGEST-MD5 through the Dovecot socket as Postfix runs it (no final-resp-ok), with `realm`
/// named or (`None`) the one the server offers, checking the server's `rspauth`; the final
/// reply line.
pub fn digest(c: &mut Client, id: u32, user: &str, realm: Option<&str>, password: &str) -> String {
    c.send(&format!("AUTH\t{id}\tDIGEST-MD5\tservice=smtp\tnologin\n"));
    let line = c.line();
    let challenge = line
        .strip_prefix(&format!("CONT\t{id}\t"))
        .expect(&line)
        .trim_end();
    let challenge = B64.decode(challenge).unwrap();
    let (response, rspauth) = saslauthd_rs::mech::digest_md5::client_response(
        &challenge,
        user,
        realm,
        password.as_bytes(),
        "smtp/mail.example.org",
    )
    .expect("a challenge that parses");
    c.send(&format!("CONT\t{id}\t{}\n", B64.encode(response)));
    let reply = c.line();
    if let Some(data) = reply.strip_prefix(&format!("CONT\t{id}\t")) {
        assert_eq!(B64.decode(data.trim_end()).unwrap(), rspauth, "rspauth");
        c.send(&format!("CONT\t{id}\t\n"));
        return c.line();
    }
    reply
}
