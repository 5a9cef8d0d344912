//! Newtypes for secrets: redacted `Debug`, explicit access, constant-time comparison.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A secret string (client secret, token, key material).
///
/// Its `Debug` output is redacted and it has no `Display`: reading it takes an
/// explicit call to [`Secret::secret`], which makes every use visible in review.
/// Its memory is overwritten with zeros when the last clone is dropped:
/// clones share one buffer (cloning a token on the request path copies
/// nothing), and that buffer is zeroized once, when no clone is left.
///
/// ```
/// use idweb::Secret;
/// let s = Secret::new("hunter2");
/// assert_eq!(format!("{s:?}"), "Secret([redacted])");
/// assert_eq!(s.secret(), "hunter2");
/// ```
#[derive(Clone)]
pub struct Secret(Arc<Zeroized>);

/// The one buffer of a [`Secret`] and its clones, zeroized on drop.
struct Zeroized(String);

impl Drop for Zeroized {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Arc::new(Zeroized(value.into())))
    }

    /// The secret value. Never log it.
    pub fn secret(&self) -> &str {
        &self.0.0
    }

    /// Whether `self` and `other` are clones of one secret (the same buffer):
    /// a cheap check that implies equal contents.
    pub(crate) fn same_buffer(&self, other: &Secret) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.secret())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(self.secret().as_bytes(), other.secret().as_bytes())
    }
}

impl Eq for Secret {}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // aws-lc-rs compares in time independent of the contents (lengths are not secret here).
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new("top-secret-value");
        let shown = format!("{s:?} {:?}", vec![s.clone()]);
        assert!(!shown.contains("top-secret-value"), "{shown}");
    }

    #[test]
    fn equality_compares_contents() {
        assert_eq!(Secret::new("a"), Secret::new("a"));
        assert_ne!(Secret::new("a"), Secret::new("b"));
        assert_ne!(Secret::new("a"), Secret::new("ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
