//! HMAC-MD5 from its two stored MD5 states (RFC 2104 §4: "the intermediate results ... may be
//! precomputed"), which is what Dovecot's `{CRAM-MD5}` scheme stores instead of a password:
//! the MD5 state after the key's inner pad, and after its outer pad. CRAM-MD5 can be answered
//! from them, and a password checked against them, without the cleartext.
//!
//! MD5's block function is written here because no well-kept crate exposes MD5's state
//! between blocks (RustCrypto's `md-5` keeps it private); it is checked against that crate's
//! digests in the tests.

use zeroize::Zeroize;

/// MD5's initial state (RFC 1321 §3.3).
const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// Per-step left rotations.
const S: [u32; 16] = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];

/// `floor(abs(sin(i + 1)) * 2^32)`.
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

/// MD5's block function.
fn compress(state: &mut [u32; 4], block: &[u8; 64]) {
    let mut m = [0u32; 16];
    for (word, bytes) in m.iter_mut().zip(block.chunks_exact(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    for i in 0..64 {
        let (f, g) = match i / 16 {
            0 => ((b & c) | (!b & d), i),
            1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
            2 => (b ^ c ^ d, (3 * i + 5) % 16),
            _ => (c ^ (b | !d), (7 * i) % 16),
        };
        let f = f.wrapping_add(a).wrapping_add(K[i]).wrapping_add(m[g]);
        a = d;
        d = c;
        c = b;
        b = b.wrapping_add(f.rotate_left(S[(i / 16) * 4 + i % 4]));
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d]) {
        *s = s.wrapping_add(v);
    }
    m.zeroize();
}

/// The MD5 digest of `data`, hashed on from `state`, which has taken `before` bytes (whole
/// blocks) already.
fn finish(mut state: [u32; 4], before: u64, data: &[u8]) -> [u8; 16] {
    let mut blocks = data.chunks_exact(64);
    for block in &mut blocks {
        compress(&mut state, block.try_into().expect("64 bytes"));
    }
    let rest = blocks.remainder();
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let len = if rest.len() < 56 { 64 } else { 128 };
    let bits = (before + data.len() as u64).wrapping_mul(8);
    tail[len - 8..len].copy_from_slice(&bits.to_le_bytes());
    for block in tail[..len].chunks_exact(64) {
        compress(&mut state, block.try_into().expect("64 bytes"));
    }
    tail.zeroize();
    let mut out = [0u8; 16];
    for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// HMAC-MD5 with a key, as its two intermediate states.
#[derive(Clone, PartialEq, Eq)]
pub struct HmacMd5Contexts {
    inner: [u32; 4],
    outer: [u32; 4],
}

impl Drop for HmacMd5Contexts {
    fn drop(&mut self) {
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

impl std::fmt::Debug for HmacMd5Contexts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacMd5Contexts(<redacted>)")
    }
}

impl HmacMd5Contexts {
    /// The states for `key` (a password).
    pub fn from_key(key: &[u8]) -> HmacMd5Contexts {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            use md5::Digest;
            block[..16].copy_from_slice(&md5::Md5::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let pad = |byte: u8| {
            let mut padded = block;
            padded.iter_mut().for_each(|b| *b ^= byte);
            let mut state = INIT;
            compress(&mut state, &padded);
            padded.zeroize();
            state
        };
        let contexts = HmacMd5Contexts {
            inner: pad(0x36),
            outer: pad(0x5c),
        };
        block.zeroize();
        contexts
    }

    /// Dovecot's 32 bytes (`hmac_md5_get_cram_context`): the outer state, then the inner,
    /// each word little-endian.
    pub fn from_dovecot(bytes: &[u8; 32]) -> HmacMd5Contexts {
        let word = |i: usize| {
            u32::from_le_bytes([
                bytes[4 * i],
                bytes[4 * i + 1],
                bytes[4 * i + 2],
                bytes[4 * i + 3],
            ])
        };
        HmacMd5Contexts {
            outer: [word(0), word(1), word(2), word(3)],
            inner: [word(4), word(5), word(6), word(7)],
        }
    }

    /// The same 32 bytes.
    pub fn to_dovecot(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (bytes, word) in out
            .chunks_exact_mut(4)
            .zip(self.outer.iter().chain(&self.inner))
        {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// HMAC-MD5 of `message`.
    pub fn mac(&self, message: &[u8]) -> [u8; 16] {
        let inner = finish(self.inner, 64, message);
        finish(self.outer, 64, &inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use md5::{Digest, Md5};

    #[test]
    fn the_block_function_is_md5s() {
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            assert_eq!(finish(INIT, 0, &data)[..], Md5::digest(&data)[..], "{len}");
        }
    }

    #[test]
    fn hmac_from_contexts_is_hmac_md5() {
        for key in [&b"tanstaaftanstaaf"[..], b"", &[0x41; 64], &[0x42; 100]] {
            let contexts = HmacMd5Contexts::from_key(key);
            let again = HmacMd5Contexts::from_dovecot(&contexts.to_dovecot());
            for message in [
                &b"<1896.697170952@postoffice.example.net>"[..],
                b"",
                &[7; 200],
            ] {
                let mut mac = <Hmac<Md5> as Mac>::new_from_slice(key).unwrap();
                mac.update(message);
                let want = mac.finalize().into_bytes();
                assert_eq!(contexts.mac(message)[..], want[..]);
                assert_eq!(again.mac(message)[..], want[..]);
            }
        }
    }

    #[test]
    fn dovecots_cram_md5_value() {
        // `doveadm pw -s CRAM-MD5 -p secret` (Dovecot 2.3.19).
        let contexts = HmacMd5Contexts::from_key(b"secret");
        assert_eq!(
            hex::encode(contexts.to_dovecot()),
            "cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56"
        );
    }
}
