//! Values that must never show themselves: endpoint secrets, credentials and broker URLs
//! (`Secret`), and API tokens, kept only as digests (`TokenDigest`). Apart from the modules
//! that use them, so that every layer can hold one without reaching into another.

use std::fmt;

use serde::Deserialize;

/// A secret that never shows itself in `Debug` output, logs or errors.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself; call only where it is used (signing, comparing).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The SHA-256 of an API token: all the service keeps of it, and what it compares.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(token.as_bytes()).into())
    }
    /// From 64 hex digits (either case), as `sha256sum` prints them.
    pub fn from_hex(hex_digits: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_digits.trim(), &mut out).ok()?;
        Some(Self(out))
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest of a guessable token is as good as the token: show nothing of it.
        f.write_str("TokenDigest(***)")
    }
}
