//! crypt(3) through the system's libxcrypt: the one place hashes are computed for the shadow
//! passdb. libxcrypt knows every scheme the system writes (yescrypt, gost-yescrypt, scrypt,
//! bcrypt, sha512-crypt, sha256-crypt, md5-crypt, DES), so nothing here decides by prefix.
//! libxcrypt has no Rust binding that exposes `crypt_rn`, so this is one of the few modules
//! that call C directly.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

#[link(name = "crypt")]
unsafe extern "C" {
    fn crypt_rn(
        phrase: *const c_char,
        setting: *const c_char,
        data: *mut c_void,
        size: c_int,
    ) -> *mut c_char;
    fn crypt_gensalt_rn(
        prefix: *const c_char,
        count: libc::c_ulong,
        rbytes: *const c_char,
        nrbytes: c_int,
        output: *mut c_char,
        output_size: c_int,
    ) -> *mut c_char;
}

/// `sizeof(struct crypt_data)` in libxcrypt 4 (`/usr/include/crypt.h`).
const CRYPT_DATA_SIZE: usize = 32768;

/// Whether `password` hashes to `stored`. `None` when `stored` is not a hash libxcrypt can
/// check (locked, empty, unknown scheme): such a hash never matches. The comparison is in
/// constant time and the scratch area is wiped.
pub fn verify(password: &[u8], stored: &str) -> Option<bool> {
    // Locked ("!..."), disabled ("*..."), and empty hashes never match, whatever crypt says.
    if stored.is_empty() || stored.starts_with('!') || stored.starts_with('*') {
        return None;
    }
    let computed = crypt(password, &CString::new(stored).ok()?)?;
    Some(computed.len() == stored.len() && bool::from(computed.as_bytes().ct_eq(stored.as_bytes())))
}

/// Hashes `password` with a fresh random salt for the scheme `prefix` (`$y$`, `$6$`, ...),
/// at libxcrypt's default cost. `None` if libxcrypt refuses the scheme.
pub fn hash(password: &[u8], prefix: &str) -> Option<String> {
    let prefix = CString::new(prefix).ok()?;
    let mut setting = [0 as c_char; 256];
    // SAFETY: `prefix` is NUL-terminated; a NULL rbytes asks libxcrypt for its own random
    // bytes; `setting` is writable for the size given.
    let out = unsafe {
        crypt_gensalt_rn(
            prefix.as_ptr(),
            0,
            std::ptr::null(),
            0,
            setting.as_mut_ptr(),
            256,
        )
    };
    if out.is_null() {
        return None;
    }
    // SAFETY: on success the setting is a NUL-terminated string in `setting`.
    let setting = unsafe { CStr::from_ptr(setting.as_ptr()) };
    crypt(password, setting).map(|h| h.to_string())
}

/// One `crypt_rn` call: `password` hashed with `setting`, in a scratch area that is wiped.
/// `None` if the password holds a NUL (crypt could only see the part before it) or libxcrypt
/// refuses the setting.
fn crypt(password: &[u8], setting: &CStr) -> Option<Zeroizing<String>> {
    if password.contains(&0) {
        return None;
    }
    let mut phrase = Zeroizing::new(Vec::with_capacity(password.len() + 1));
    phrase.extend_from_slice(password);
    phrase.push(0);
    let mut data = Zeroizing::new(vec![0u8; CRYPT_DATA_SIZE]);
    // SAFETY: both strings are NUL-terminated and live across the call; `data` is a writable
    // buffer of CRYPT_DATA_SIZE bytes, the size libxcrypt is told.
    let out = unsafe {
        crypt_rn(
            phrase.as_ptr().cast(),
            setting.as_ptr(),
            data.as_mut_ptr().cast(),
            CRYPT_DATA_SIZE as c_int,
        )
    };
    if out.is_null() {
        return None;
    }
    // SAFETY: on success crypt_rn returns a NUL-terminated string inside `data`, still alive.
    let computed = unsafe { CStr::from_ptr(out) }.to_str().ok()?;
    Some(Zeroizing::new(computed.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_round_trips() {
        for prefix in ["$y$", "$gy$", "$7$", "$2b$", "$6$", "$5$", "$1$"] {
            let stored = hash(b"s3cret pass", prefix).unwrap_or_else(|| panic!("{prefix}"));
            assert!(stored.starts_with(prefix), "{stored}");
            assert_eq!(verify(b"s3cret pass", &stored), Some(true), "{stored}");
            assert_eq!(verify(b"s3cret pasS", &stored), Some(false), "{stored}");
            assert_eq!(verify(b"", &stored), Some(false), "{stored}");
            assert_eq!(verify(b"s3cret\0pass", &stored), None, "{stored}");
            assert_eq!(verify(b"s3cret pass", &format!("!{stored}")), None);
        }
        // Traditional DES: the first 8 bytes count, as crypt(3) always did.
        assert_eq!(verify(b"password", "sa3tHJ3/KuYvI"), Some(true));
        assert_eq!(verify(b"passwore", "sa3tHJ3/KuYvI"), Some(false));
    }

    #[test]
    fn locked_and_empty_never_match() {
        for stored in ["", "!", "*", "!!", "x", "*NP*"] {
            assert_eq!(verify(b"", stored), None, "{stored:?}");
            assert_eq!(verify(b"anything", stored), None, "{stored:?}");
        }
    }
}
