//! What an HTTP endpoint receives: the GBDS body as it is, or that body wrapped in a
//! CloudEvent, and the check of the CloudEvents `source` attribute those events carry.

/// What an HTTP endpoint receives (`format` in its settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The CONTRACT §3 body as it is, `application/json`.
    #[default]
    Gbds,
    /// That body as `data` of a structured-mode CloudEvent.
    CloudEvents,
}

impl Format {
    /// Every format (the API's document lists them).
    pub const ALL: &'static [Format] = &[Format::Gbds, Format::CloudEvents];

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "gbds" => Ok(Format::Gbds),
            "cloudevents" => Ok(Format::CloudEvents),
            other => Err(format!("{other:?} is not \"gbds\" or \"cloudevents\"")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Gbds => "gbds",
            Format::CloudEvents => "cloudevents",
        }
    }
}

/// Checks a configured `source`: CloudEvents requires a non-empty URI-reference.
pub fn check_cloudevents_source(source: &str) -> Result<(), String> {
    if source.is_empty()
        || source
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"<>\\^`{|}".contains(c))
    {
        return Err(format!(
            "{source:?} must be a non-empty URI-reference such as \"urn:gbds-notifier\" or \"https://gbds.example/notifier\""
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_read_by_their_names_and_nothing_else() {
        for f in [Format::Gbds, Format::CloudEvents] {
            assert_eq!(Format::parse(f.as_str()), Ok(f));
        }
        assert!(Format::parse("xml").unwrap_err().contains("cloudevents"));
    }

    #[test]
    fn the_source_must_be_a_non_empty_uri_reference() {
        assert!(check_cloudevents_source("urn:gbds-notifier").is_ok());
        assert!(check_cloudevents_source("https://gbds.example/notifier").is_ok());
        assert!(check_cloudevents_source("/gbds/notifier").is_ok());
        assert!(check_cloudevents_source("").is_err());
        assert!(check_cloudevents_source("has space").is_err());
        assert!(check_cloudevents_source("a\"b").is_err());
    }
}
