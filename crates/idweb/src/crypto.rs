//! Small cryptographic helpers: randomness, hashing and sealed (encrypted and
//! authenticated) values for cookies.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest;
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `n` bytes from the operating system's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The system RNG failing is not recoverable and not caused by input.
    #[allow(clippy::expect_used)]
    aws_lc_rs::rand::fill(&mut buf).expect("the operating system's random number generator failed");
    buf
}

/// A random URL-safe string carrying 256 bits of entropy.
pub(crate) fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// base64url without padding.
pub(crate) fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Lower-case hexadecimal.
pub(crate) fn hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(data.len() * 2);
    for &b in data {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Seals small values (cookie contents) with AES-256-GCM under a key derived
/// from the cookie key. The purpose string is bound as associated data, so a
/// value sealed for one cookie cannot be replayed as another.
pub(crate) struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// Derives the sealing key from `ikm` (at least 64 bytes of key material) with HKDF-SHA256.
    pub(crate) fn new(ikm: &[u8]) -> Self {
        let prk = Salt::new(HKDF_SHA256, b"idweb cookie sealing").extract(ikm);
        // Both calls only fail for output lengths larger than HKDF allows; 32 bytes is fine.
        #[allow(clippy::expect_used)]
        let okm = prk
            .expand(&[b"idweb cookie v1"], &AES_256_GCM)
            .expect("HKDF output length is valid");
        let key = LessSafeKey::new(UnboundKey::from(okm));
        Self { key }
    }

    /// Encrypts and authenticates `plaintext` for `purpose`; returns base64url text.
    pub(crate) fn seal(&self, purpose: &str, plaintext: &[u8]) -> String {
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let mut buf = plaintext.to_vec();
        // Sealing only fails for inputs larger than GCM's limit (64 GiB).
        #[allow(clippy::expect_used)]
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(purpose.as_bytes()),
                &mut buf,
            )
            .expect("cookie payload within AES-GCM limits");
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&buf);
        b64url(&out)
    }

    /// Opens a value made by [`Sealer::seal`] for the same `purpose`;
    /// `None` when it was tampered with, made with another key, or for another purpose.
    pub(crate) fn open(&self, purpose: &str, sealed: &str) -> Option<Vec<u8>> {
        if sealed.len() > 8192 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_two_lower_case_digits_per_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let want: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&all), want);
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn seal_round_trips_and_binds_purpose() {
        let s = Sealer::new(&[7u8; 64]);
        let sealed = s.seal("session", b"abc");
        assert_eq!(s.open("session", &sealed).as_deref(), Some(&b"abc"[..]));
        assert_eq!(s.open("signin", &sealed), None);
        let other = Sealer::new(&[8u8; 64]);
        assert_eq!(other.open("session", &sealed), None);
    }

    #[test]
    fn tampered_or_garbage_values_do_not_open() {
        let s = Sealer::new(&[7u8; 64]);
        let sealed = s.seal("session", b"abc");
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(s.open("session", &b64url(&bytes)), None);
        for junk in ["", "!!!", "AAAA", &"A".repeat(10_000)] {
            assert_eq!(s.open("session", junk), None);
        }
    }

    #[test]
    fn random_tokens_differ() {
        assert_ne!(random_token(), random_token());
        assert_eq!(random_token().len(), 43);
    }
}
