//! Configuration: built-in defaults, then the TOML file, then `GBDS_*` environment variables;
//! validated into typed [`Settings`] before anything listens (CONTRACT §1).
//!
//! - `raw`: the file's shape, unknown keys refused; `env`: which variable sets which key.
//! - `defaults`: every default, by name; `duration`: "250ms", "5s", "2h"; `size`: "64MiB".
//! - `validate`: the raw shapes checked into `settings`, one section at a time.

pub mod defaults;
mod duration;
mod env;
mod error;
mod raw;
mod schedule;
mod settings;
mod size;
mod validate;

use std::path::Path;

pub use crate::secret::{Secret, TokenDigest};
pub use duration::parse_duration;
pub use env::{EnvKind, ENV_KEYS};
pub use error::ConfigError;
pub use settings::{
    AmqpInboundSettings, ApiSettings, ApiToken, DeliverySettings, LogFormat, RetentionSettings,
    Role, Settings, StoreSettings, SuccessRule,
};
pub use size::parse_size;

use raw::RawConfig;

/// Loads the file (if any), applies the environment, validates.
pub fn load(
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?,
        None => String::new(),
    };
    settings(&text, file, env)
}

/// A configuration file's text, with the environment applied over it, validated. Pure: reads
/// no file and touches nothing (the config fuzz target calls it).
pub fn from_text(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    settings(text, None, env)
}

/// `file` names where `text` came from, for its syntax errors.
fn settings(
    text: &str,
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let mut tree = text.parse::<toml::Table>().map_err(|e| match file {
        Some(path) => ConfigError(format!("{}: {e}", path.display())),
        None => ConfigError(e.to_string()),
    })?;
    env::apply(&mut tree, env)?;
    let raw: RawConfig = toml::Value::Table(tree)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError(e.message().to_owned()))?;
    validate::validate(raw)
}

impl Default for Settings {
    fn default() -> Self {
        validate::validate(RawConfig::default()).expect("the defaults are valid")
    }
}

#[cfg(test)]
mod tests;
