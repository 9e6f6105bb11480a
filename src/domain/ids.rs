//! Parse-don't-validate identifiers: a `Tguid` or `Uguid` exists only if it is well formed.

use std::fmt;

/// Longest identifier accepted (CONTRACT §4).
const MAX_LEN: usize = 128;

/// Why an identifier was refused; the message names the rule that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("{0} is longer than 128 characters")]
    TooLong(&'static str),
    #[error("{0} may only hold printable ASCII characters, without spaces or '/'")]
    BadCharacter(&'static str),
}

fn check(what: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty(what));
    }
    if s.len() > MAX_LEN {
        return Err(IdError::TooLong(what));
    }
    // '!'..='~' is printable ASCII without the space; '/' would break the URL paths.
    if !s.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'/') {
        return Err(IdError::BadCharacter(what));
    }
    Ok(())
}

/// A transaction's global id, as the back office names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tguid(String);

impl Tguid {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check("tguid", s).map(|()| Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tguid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of an unsolved latent matched by a transaction (REVERSE_LATENT_MATCH).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Uguid(String);

impl Uguid {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check("uguid", s).map(|()| Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tguid_of_printable_ascii_is_accepted() {
        assert_eq!(Tguid::parse("tg-1_A.b:c").unwrap().as_str(), "tg-1_A.b:c");
        assert!(Tguid::parse(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn empty_long_spaced_slashed_or_non_ascii_ids_are_refused() {
        assert_eq!(Tguid::parse(""), Err(IdError::Empty("tguid")));
        assert_eq!(
            Tguid::parse(&"x".repeat(129)),
            Err(IdError::TooLong("tguid"))
        );
        for bad in ["a b", "a/b", "a\nb", "añb", "a\u{7f}b", "\t"] {
            assert_eq!(
                Tguid::parse(bad),
                Err(IdError::BadCharacter("tguid")),
                "{bad:?}"
            );
        }
        assert_eq!(Uguid::parse("u 1"), Err(IdError::BadCharacter("uguid")));
    }
}
