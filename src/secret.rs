//! Values that must never show themselves: endpoint secrets, credentials and broker URLs
//! (`Secret`), kept apart so that every layer can hold one without reaching into another.

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
