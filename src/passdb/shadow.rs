//! The shadow passdb (`-a shadow`), after Cyrus's `auth_shadow.c`: the user's entry from
//! `getspnam_r` (so every NSS source in nsswitch.conf works) or from a shadow(5) file
//! (`--shadow-file`, for chroots and tests), the hash checked by libxcrypt, then account
//! expiry and password ageing with Cyrus's rules and reply texts.
//!
//! Unlike Cyrus: an unknown user and a locked account cost one hash like everyone else (a
//! dummy yescrypt), so timing does not tell them apart; nothing about a hash is ever logged;
//! and with `-c` a cached success is tied to the current hash string, so a password change
//! takes effect on the very next request.

use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use super::{Access, Answer, Context, Module, Passdb, PassdbError, Query};
use crate::crypt;
use crate::request::Printable;
use crate::secret::Password;
use crate::verdict::{PassdbKind, PassdbResult, Replies, SuccessCache};

/// `-a shadow`.
pub(super) const MODULE: Module = Module {
    kind: PassdbKind {
        name: "shadow",
        // Cyrus answers "NO Invalid username" and "NO Incorrect password", which tells who
        // exists: ours says the same for both.
        replies: Replies {
            ok: "",
            failure: "authentication failed",
            disabled: "Account expired",
            expired: "Password expired",
            error: crate::verdict::INTERNAL_FAILURE,
        },
    },
    about: Some("shadow(5) entries through NSS, or --shadow-file; libxcrypt"),
    open: |settings| {
        let source = match &settings.shadow_file {
            Some(path) => ShadowSource::File(path.clone()),
            None => ShadowSource::System,
        };
        Ok(Arc::new(Shadow::new(source)?))
    },
    table: None,
};

/// Where entries come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShadowSource {
    /// `getspnam_r`, through NSS.
    System,
    /// A shadow(5) file, reread when it changes.
    File(PathBuf),
}

/// One shadow(5) entry: the fields the checks use. Days are days since 1970-01-01.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct ShadowEntry {
    /// The hash string (`$y$...`, `!...` for locked).
    pub hash: Zeroizing<String>,
    /// Last password change (`sp_lstchg`).
    pub last_change: Option<i64>,
    /// Maximum password age (`sp_max`).
    pub max_age: Option<i64>,
    /// Account expiry (`sp_expire`).
    pub expire: Option<i64>,
}

impl std::fmt::Debug for ShadowEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowEntry")
            .field("hash", &"<redacted>")
            .field("last_change", &self.last_change)
            .field("max_age", &self.max_age)
            .field("expire", &self.expire)
            .finish()
    }
}

/// A line of a shadow file that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SkippedLine {
    /// 1-based.
    pub line: usize,
    /// What is wrong with it.
    pub reason: &'static str,
}

const MAX_NAME: usize = 256;
const MAX_HASH: usize = 1024;

/// For the fuzz targets: parses shadow(5) text; every line is an entry or a skipped line.
pub(crate) fn fuzz_parse(text: &[u8]) {
    let (entries, skipped) = parse_shadow(text);
    let lines = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert!(entries.len() + skipped.len() <= lines);
}

/// Parses shadow(5) text. Malformed lines are skipped and reported, never fatal.
pub(super) fn parse_shadow(text: &[u8]) -> (HashMap<Vec<u8>, ShadowEntry>, Vec<SkippedLine>) {
    let mut entries = HashMap::new();
    let mut skipped = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let number = i + 1;
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok((name, entry)) => {
                entries.entry(name).or_insert(entry);
            }
            Err(reason) => skipped.push(SkippedLine {
                line: number,
                reason,
            }),
        }
    }
    (entries, skipped)
}

fn parse_line(line: &[u8]) -> Result<(Vec<u8>, ShadowEntry), &'static str> {
    if line.contains(&b'\r') {
        return Err("carriage return (CR/LF line end)");
    }
    if line.contains(&0) {
        return Err("NUL byte");
    }
    let fields: Vec<&[u8]> = line.split(|&b| b == b':').collect();
    if fields.len() != 9 {
        return Err("not 9 colon-separated fields");
    }
    let (name, hash) = (fields[0], fields[1]);
    if name.is_empty() {
        return Err("empty user name");
    }
    if name.len() > MAX_NAME {
        return Err("user name too long");
    }
    if hash.len() > MAX_HASH {
        return Err("password field too long");
    }
    let hash = std::str::from_utf8(hash).map_err(|_| "password field is not text")?;
    let day = |f: &[u8]| -> Result<Option<i64>, &'static str> {
        if f.is_empty() {
            return Ok(None);
        }
        let text = std::str::from_utf8(f).map_err(|_| "a day field is not a number")?;
        let n: i64 = text.parse().map_err(|_| "a day field is not a number")?;
        Ok(if n < 0 { None } else { Some(n) })
    };
    for f in &fields[3..8] {
        day(f)?;
    }
    Ok((
        name.to_vec(),
        ShadowEntry {
            hash: Zeroizing::new(hash.to_owned()),
            last_change: day(fields[2])?,
            max_age: day(fields[4])?,
            expire: day(fields[7])?,
        },
    ))
}

/// The entry of `user` through NSS (`getspnam_r`); `Ok(None)` if there is none. nix has no
/// shadow interface, so this is one of the few places that call C directly.
#[allow(unsafe_code)]
pub(super) fn getspnam(user: &[u8]) -> std::io::Result<Option<ShadowEntry>> {
    let name = CString::new(user).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut buf = Zeroizing::new(vec![0 as c_char; 1024]);
    loop {
        // SAFETY: zeroed spwd is a valid out-parameter; getspnam_r fills it with pointers
        // into `buf`, which outlives every use below.
        let mut sp: libc::spwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::spwd = std::ptr::null_mut();
        // SAFETY: all pointers are valid; the buffer length is its real length.
        let rc = unsafe {
            libc::getspnam_r(
                name.as_ptr(),
                &mut sp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            let bigger = buf.len() * 2;
            buf.resize(bigger, 0);
            continue;
        }
        if rc != 0 && rc != libc::ENOENT {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Ok(None);
        }
        // c_long is i64 on 64-bit Linux but not everywhere.
        #[allow(clippy::useless_conversion)]
        let day = |v: libc::c_long| if v < 0 { None } else { Some(i64::from(v)) };
        // SAFETY: on success sp_pwdp points to a NUL-terminated string in `buf`.
        let hash = unsafe { CStr::from_ptr(sp.sp_pwdp) }
            .to_string_lossy()
            .into_owned();
        return Ok(Some(ShadowEntry {
            hash: Zeroizing::new(hash),
            last_change: day(sp.sp_lstchg),
            max_age: day(sp.sp_max),
            expire: day(sp.sp_expire),
        }));
    }
}

type Entries = Arc<HashMap<Vec<u8>, ShadowEntry>>;

/// What tells one version of a shadow file from another: device, inode, mtime (s, ns), size.
type FileVersion = (u64, u64, i64, i64, u64);

/// The shadow passdb.
pub struct Shadow {
    source: ShadowSource,
    file: Mutex<Option<(FileVersion, Entries)>>,
    dummy: String,
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Shadow {
    /// Opens the source and checks that it can be read: the daemon must not start if it
    /// would answer every request with "no" (not root, not in group shadow).
    pub fn new(source: ShadowSource) -> Result<Shadow, PassdbError> {
        let dummy = crypt::hash(b"a password nobody has", "$y$").ok_or(PassdbError::NoYescrypt)?;
        let shadow = Shadow {
            source,
            file: Mutex::new(None),
            dummy,
        };
        match &shadow.source {
            // Loaded on the first request, when logging is up, so that skipped lines are
            // reported; here only whether it can be read at all.
            ShadowSource::File(path) => {
                std::fs::File::open(path).map_err(|source| PassdbError::Unreadable {
                    path: path.clone(),
                    source,
                    hint: "",
                })?;
            }
            ShadowSource::System => {
                // Probing getspnam_r("root") proves nothing: nss-systemd makes up entries
                // for root and nobody for anyone. The files source is what needs the rights.
                getspnam(b"root").map_err(PassdbError::NoShadowEntries)?;
                match std::fs::File::open("/etc/shadow") {
                    Err(source) if source.kind() == std::io::ErrorKind::PermissionDenied => {
                        return Err(PassdbError::Unreadable {
                            path: PathBuf::from("/etc/shadow"),
                            source,
                            hint: " (run as root or in group shadow, or use --shadow-file)",
                        })
                    }
                    _ => {}
                }
            }
        }
        Ok(shadow)
    }

    /// The entries of the file at `path`, read again when it has changed.
    fn entries(&self, path: &Path) -> std::io::Result<Entries> {
        let id = version(path)?;
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, entries)) = file.as_ref() {
            if *known == id {
                return Ok(Arc::clone(entries));
            }
        }
        let text = Zeroizing::new(std::fs::read(path)?);
        let (entries, skipped) = parse_shadow(&text);
        for s in &skipped {
            tracing::warn!("{}: line {} skipped: {}", path.display(), s.line, s.reason);
        }
        let entries = Arc::new(entries);
        *file = Some((id, Arc::clone(&entries)));
        Ok(entries)
    }

    fn lookup(&self, user: &[u8]) -> Result<Option<ShadowEntry>, PassdbError> {
        match &self.source {
            ShadowSource::System => getspnam(user).map_err(|source| PassdbError::Nss {
                user: Printable(user).to_string(),
                source,
            }),
            ShadowSource::File(path) => Ok(self
                .entries(path)
                .map_err(|source| PassdbError::ShadowFile {
                    path: path.clone(),
                    source,
                })?
                .get(user)
                .cloned()),
        }
    }

    /// The entries of a shadow file as already read, when it has not changed since (a
    /// `stat`, no read): what a check on the reactor may use.
    fn entries_read(&self, path: &Path) -> Option<Entries> {
        let id = version(path).ok()?;
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let (known, entries) = file.as_ref()?;
        (*known == id).then(|| Arc::clone(entries))
    }

    /// The verdict from the cache alone, when the entry can be had without blocking (a
    /// shadow file already read): tried on the reactor before the check goes to the pool.
    /// `None`: ask [`Shadow::verify_plain`].
    /// `Err(())`: the cache could not be asked here (no file, or it changed since it was
    /// read); `Ok(None)`: it was asked, and missed.
    fn verify_cached(
        &self,
        q: &Query<'_>,
        password: &Password,
        cache: &dyn SuccessCache,
    ) -> Result<Option<PassdbResult>, ()> {
        let ShadowSource::File(path) = &self.source else {
            return Err(());
        };
        let entries = self.entries_read(path).ok_or(())?;
        Ok(entries
            .get(q.authid)
            .and_then(|entry| cached_verdict(entry, q, password, cache)))
    }

    pub(crate) fn verify_plain(
        &self,
        q: &Query<'_>,
        password: &Password,
        cache: Option<&dyn SuccessCache>,
        ask_cache: bool,
    ) -> Result<PassdbResult, PassdbError> {
        let Some(entry) = self.lookup(q.authid)? else {
            let _ = crypt::verify(password.expose(), &self.dummy);
            return Ok(PassdbResult::UserUnknown);
        };
        let cached = cache.filter(|_| ask_cache);
        if let Some(verdict) = cached.and_then(|cache| cached_verdict(&entry, q, password, cache)) {
            return Ok(verdict);
        }
        let password = password.expose();
        match crypt::verify(password, &entry.hash) {
            Some(true) => {}
            Some(false) => return Ok(PassdbResult::PasswordMismatch),
            None => {
                // Locked, empty or unusable hash: never a match, at the same cost.
                let _ = crypt::verify(password, &self.dummy);
                return Ok(PassdbResult::PasswordMismatch);
            }
        }
        let verdict = account_state(&entry);
        if let (Some(cache), PassdbResult::Ok) = (cache, verdict) {
            cache.insert(&slot(&entry, q), password, Instant::now());
        }
        Ok(verdict)
    }
}

/// A check answered on the reactor when the cache knows it; otherwise on the pool: NSS may
/// ask the network, and a yescrypt hash takes milliseconds.
impl Passdb for Shadow {
    fn kind(&self) -> PassdbKind {
        MODULE.kind
    }

    fn verify(
        self: Arc<Self>,
        q: &Query<'_>,
        password: Password,
        cx: &Context<'_>,
    ) -> Answer<PassdbResult> {
        let cache = cx.cache.cloned();
        let mut ask_cache = true;
        if let Some(cache) = &cache {
            match self.verify_cached(q, &password, cache.as_ref()) {
                Ok(Some(verdict)) => return Answer::Now(Ok(verdict)),
                // Asked here: the pool's call does not ask again, and records a success.
                Ok(None) => ask_cache = false,
                Err(()) => {}
            }
        }
        let q = q.to_owned();
        Answer::blocking(move || {
            self.verify_plain(&q.query(), &password, cache.as_deref(), ask_cache)
        })
    }

    fn access(&self) -> Access {
        Access {
            files: match &self.source {
                ShadowSource::File(path) => vec![path.clone()],
                ShadowSource::System => Vec::new(),
            },
            group_names: vec!["shadow"],
            ..Access::default()
        }
    }
}

/// What tells one version of a file from another.
fn version(path: &Path) -> std::io::Result<FileVersion> {
    let meta = std::fs::metadata(path)?;
    Ok((
        meta.dev(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.len(),
    ))
}

/// The cache slot of a check: the user and the entry's current hash, so that a changed
/// password is another slot.
fn slot<'a>(entry: &'a ShadowEntry, q: &'a Query) -> [&'a [u8]; 3] {
    [b"shadow", q.authid, entry.hash.as_bytes()]
}

/// A cache hit for this entry's current hash: the account checks still run (the entry is
/// fresh), the hash is not recomputed.
fn cached_verdict(
    entry: &ShadowEntry,
    q: &Query<'_>,
    password: &Password,
    cache: &dyn SuccessCache,
) -> Option<PassdbResult> {
    if !cache.hit(&slot(entry, q), password.expose(), Instant::now()) {
        return None;
    }
    tracing::debug!(
        "shadow: cache hit for {}, hash not recomputed",
        Printable(q.authid)
    );
    Some(account_state(entry))
}

/// Account expiry and password ageing, as Cyrus's auth_shadow.c, checked after the password
/// (so these verdicts reveal nothing to a client that does not know it).
fn account_state(entry: &ShadowEntry) -> PassdbResult {
    let today = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 86400)
        .unwrap_or(0) as i64;
    if entry.expire.is_some_and(|expire| today > expire) {
        return PassdbResult::UserDisabled;
    }
    if let (Some(changed), Some(max)) = (entry.last_change, entry.max_age) {
        if changed + max < today {
            return PassdbResult::PassExpired;
        }
    }
    PassdbResult::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shadow_and_skips_bad_lines_by_number() {
        let long = "n".repeat(300);
        let text = format!(
            "alice:$6$salt$hash:19000:0:99999:7:::\n\
             bob:!$y$locked:19000:0:99999:7:::\r\n\
             carol:x:19000\n\
             \n\
             dave:*:19000:0:99999:7::20000:\n\
             {long}:x:1:0:99999:7:::\n\
             erin:x:soon:0:99999:7:::\n\
             frank::::::::\n"
        );
        let (entries, skipped) = parse_shadow(text.as_bytes());
        let mut names: Vec<&[u8]> = entries.keys().map(Vec::as_slice).collect();
        names.sort();
        assert_eq!(names, [&b"alice"[..], b"dave", b"frank"]);
        assert_eq!(entries[&b"dave".to_vec()].expire, Some(20000));
        assert_eq!(entries[&b"alice".to_vec()].last_change, Some(19000));
        assert_eq!(entries[&b"frank".to_vec()].max_age, None);
        let lines: Vec<(usize, &str)> = skipped.iter().map(|s| (s.line, s.reason)).collect();
        assert_eq!(
            lines,
            [
                (2, "carriage return (CR/LF line end)"),
                (3, "not 9 colon-separated fields"),
                (6, "user name too long"),
                (7, "a day field is not a number"),
            ]
        );
    }

    #[test]
    fn getspnam_finds_root_or_nothing() {
        // Reads, never writes; root exists on every system, alice should not.
        if nix::unistd::geteuid().is_root() {
            assert!(getspnam(b"root").unwrap().is_some());
        }
        assert!(getspnam(b"no-such-user-saslauthd-rs").unwrap().is_none());
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    /// A slot's parts and the password.
    type Remembered = (Vec<Vec<u8>>, Vec<u8>);

    /// Records slots as they are inserted; hits what it holds.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Remembered>>);

    impl SuccessCache for Recorder {
        fn hit(&self, slot: &[&[u8]], password: &[u8], _: Instant) -> bool {
            let slot: Vec<Vec<u8>> = slot.iter().map(|p| p.to_vec()).collect();
            self.0.lock().unwrap().contains(&(slot, password.to_vec()))
        }

        fn insert(&self, slot: &[&[u8]], password: &[u8], _: Instant) {
            let slot = slot.iter().map(|p| p.to_vec()).collect();
            self.0.lock().unwrap().push((slot, password.to_vec()));
        }
    }

    #[test]
    fn a_success_is_cached_under_the_current_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shadow");
        let hash = crypt::hash(b"pw", "$6$").unwrap();
        std::fs::write(&path, format!("alice:{hash}:19000:0:99999:7:::\n")).unwrap();
        let cache = Recorder::default();
        let shadow = Shadow::new(ShadowSource::File(path)).unwrap();
        let (peer, password) = (Default::default(), Password::new(b"pw".to_vec()));
        let q = Query {
            authid: b"alice",
            realm: b"",
            service: b"smtp",
            peer: &peer,
        };
        assert_eq!(
            shadow
                .verify_plain(&q, &password, Some(&cache), true)
                .unwrap(),
            PassdbResult::Ok
        );
        assert_eq!(cache.0.lock().unwrap().len(), 1);
        assert_eq!(cache.0.lock().unwrap()[0].0[2], hash.as_bytes());
        assert_eq!(
            shadow.verify_cached(&q, &password, &cache),
            Ok(Some(PassdbResult::Ok))
        );
        assert_eq!(
            shadow
                .verify_plain(&q, &password, Some(&cache), true)
                .unwrap(),
            PassdbResult::Ok
        );
    }
}
