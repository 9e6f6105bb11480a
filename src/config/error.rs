//! Why a configuration was refused: one message that names the key (or variable) and what is
//! wrong with its value, never the value of a secret.

use std::fmt;

/// A configuration problem, naming the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("config: {0}")]
pub struct ConfigError(pub String);

/// Refuses `key`, saying `what` is wrong with it.
pub(super) fn err<T>(key: impl fmt::Display, what: impl fmt::Display) -> Result<T, ConfigError> {
    Err(ConfigError(format!("{key}: {what}")))
}
