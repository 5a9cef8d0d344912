//! Encryption at rest of token-cache entries: AES-256-GCM with a key ring.
//!
//! Every sealed entry starts with the id of the key that sealed it, so keys
//! can rotate: the first key of the ring seals, every key of the ring opens.
//! The associated data binds a ciphertext to its partition and cache key, so
//! an entry cannot be moved to another user's partition.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};

use crate::crypto::random_bytes;

/// Format version of sealed entries.
const FORMAT: u8 = 1;

/// Why a key ring could not be built or an entry not opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheKeyError {
    /// The key list is malformed.
    #[error("invalid cache key list: {0}")]
    Invalid(String),
    /// The entry was sealed with a key id the ring does not have.
    #[error("the entry was encrypted with key `{0}`, which is not configured")]
    UnknownKey(String),
    /// The entry is not a sealed entry, was tampered with, or is bound to another partition or key.
    #[error("the entry cannot be decrypted (tampered, truncated or misplaced)")]
    Undecryptable,
}

struct RingKey {
    id: String,
    key: LessSafeKey,
}

/// A ring of AES-256 keys; the first seals, all open.
///
/// ```
/// use idweb::CacheKeys;
/// let ring = CacheKeys::parse("k2:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=").unwrap();
/// assert_eq!(ring.current_key_id(), "k2");
/// let sealed = ring.seal(b"partition/key", b"secret");
/// assert_eq!(ring.open(b"partition/key", &sealed).unwrap(), b"secret");
/// assert!(ring.open(b"another/key", &sealed).is_err());
/// ```
pub struct CacheKeys {
    keys: Vec<RingKey>,
}

impl fmt::Debug for CacheKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("CacheKeys").field("key_ids", &ids).finish()
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl CacheKeys {
    /// Parses `KEY_ID:BASE64(32 bytes)[,KEY_ID:BASE64...]`; the first key seals.
    pub fn parse(list: &str) -> Result<Self, CacheKeyError> {
        let mut keys: Vec<RingKey> = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (id, b64) = item.split_once(':').ok_or_else(|| {
                CacheKeyError::Invalid(format!(
                    "`{}…` is not KEY_ID:BASE64",
                    item.chars().take(8).collect::<String>()
                ))
            })?;
            if !valid_id(id) {
                return Err(CacheKeyError::Invalid(format!(
                    "key id `{id}` must be 1 to 32 characters of A-Z a-z 0-9 - _"
                )));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(CacheKeyError::Invalid(format!(
                    "key id `{id}` appears twice"
                )));
            }
            let bytes = STANDARD
                .decode(b64)
                .or_else(|_| URL_SAFE.decode(b64))
                .or_else(|_| URL_SAFE_NO_PAD.decode(b64))
                .map_err(|_| CacheKeyError::Invalid(format!("key `{id}` is not valid base64")))?;
            keys.push(Self::ring_key(id, &bytes)?);
        }
        if keys.is_empty() {
            return Err(CacheKeyError::Invalid("no key given".into()));
        }
        Ok(Self { keys })
    }

    fn ring_key(id: &str, bytes: &[u8]) -> Result<RingKey, CacheKeyError> {
        if bytes.len() != 32 {
            return Err(CacheKeyError::Invalid(format!(
                "key `{id}` must be 32 bytes, it is {}",
                bytes.len()
            )));
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| {
            CacheKeyError::Invalid(format!("key `{id}` is not a valid AES-256 key"))
        })?;
        Ok(RingKey {
            id: id.to_string(),
            key: LessSafeKey::new(key),
        })
    }

    /// A ring with one fresh random key, for development.
    pub fn generate() -> Self {
        let id = format!("dev{}", crate::crypto::hex(&random_bytes::<3>()));
        let bytes = random_bytes::<32>();
        match Self::ring_key(&id, &bytes) {
            Ok(k) => Self { keys: vec![k] },
            // 32 random bytes are always a valid AES-256 key.
            Err(_) => unreachable!("32-byte key rejected"),
        }
    }

    /// The id of the key that seals.
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Seals `plaintext` with the current key, binding `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let current = &self.keys[0];
        let nonce = random_bytes::<NONCE_LEN>();
        let mut buf = plaintext.to_vec();
        // Sealing fails only beyond AES-GCM's 64 GiB message limit.
        #[allow(clippy::expect_used)]
        current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .expect("cache entry within AES-GCM limits");
        let mut out = Vec::with_capacity(2 + current.id.len() + NONCE_LEN + buf.len());
        out.push(FORMAT);
        out.push(current.id.len() as u8);
        out.extend_from_slice(current.id.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        out
    }

    /// The id of the key that sealed `sealed`, if it is a sealed entry.
    pub fn key_id_of(sealed: &[u8]) -> Option<&str> {
        let (&format, rest) = sealed.split_first()?;
        let (&len, rest) = rest.split_first()?;
        if format != FORMAT || rest.len() < len as usize {
            return None;
        }
        std::str::from_utf8(&rest[..len as usize]).ok()
    }

    /// Opens an entry sealed by any key of the ring, checking `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CacheKeyError> {
        let id = Self::key_id_of(sealed).ok_or(CacheKeyError::Undecryptable)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| CacheKeyError::UnknownKey(id.to_string()))?;
        let rest = &sealed[2 + id.len()..];
        if rest.len() < NONCE_LEN {
            return Err(CacheKeyError::Undecryptable);
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| CacheKeyError::Undecryptable)?;
        let mut buf = ct.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| CacheKeyError::Undecryptable)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const K2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

    #[test]
    fn rotation_old_keys_open_new_key_seals() {
        let old = CacheKeys::parse(&format!("k1:{K1}")).unwrap();
        let sealed_old = old.seal(b"aad", b"token");
        let rotated = CacheKeys::parse(&format!("k2:{K2},k1:{K1}")).unwrap();
        assert_eq!(rotated.open(b"aad", &sealed_old).unwrap(), b"token");
        let sealed_new = rotated.seal(b"aad", b"token");
        assert_eq!(CacheKeys::key_id_of(&sealed_new), Some("k2"));
        assert!(
            matches!(old.open(b"aad", &sealed_new), Err(CacheKeyError::UnknownKey(id)) if id == "k2")
        );
    }

    #[test]
    fn tampering_and_misplacement_are_detected() {
        let ring = CacheKeys::parse(&format!("k1:{K1}")).unwrap();
        let mut sealed = ring.seal(b"p1/key", b"token");
        assert!(ring.open(b"p2/key", &sealed).is_err());
        let last = sealed.len() - 1;
        sealed[last] ^= 0x01;
        assert!(ring.open(b"p1/key", &sealed).is_err());
        for junk in [
            &b""[..],
            b"\x01",
            b"\x01\x05k1",
            b"\x02\x02k1aaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(ring.open(b"p1/key", junk).is_err());
        }
    }

    #[test]
    fn parse_errors_are_clear_and_secret_free() {
        for (bad, needle) in [
            ("", "no key"),
            ("k1", "KEY_ID:BASE64"),
            ("k 1:AAAA", "key id"),
            ("k1:!!!", "base64"),
            ("k1:AAAA", "32 bytes"),
        ] {
            let e = CacheKeys::parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let dup = format!("k1:{K1},k1:{K2}");
        assert!(
            CacheKeys::parse(&dup)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let ring = CacheKeys::parse(&format!("k1:{K1}")).unwrap();
        assert!(!format!("{ring:?}").contains(K1));
    }

    #[test]
    fn generated_rings_work() {
        let ring = CacheKeys::generate();
        let sealed = ring.seal(b"a", b"b");
        assert_eq!(ring.open(b"a", &sealed).unwrap(), b"b");
    }
}
