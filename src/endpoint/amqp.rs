//! The RabbitMQ sink's destination: checks of its broker URL (which holds the broker's
//! password, so it is shown only redacted) and of its exchange name.

/// The URL with its password replaced by `***`, for logs, errors and the endpoints list.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<not a URL>".to_owned(),
    }
}

/// Checks a configured broker URL: `amqp://` or `amqps://` that the client can parse.
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
        return Err(format!(
            "{:?} must be an amqp:// or amqps:// URL",
            redact_url(url)
        ));
    }
    match url.parse::<lapin::uri::AMQPUri>() {
        Ok(_) => Ok(()),
        Err(why) => Err(format!(
            "{:?} is not an AMQP URL: {}",
            redact_url(url),
            why.replace(url, "<url>")
        )),
    }
}

/// Checks an exchange name: what RabbitMQ accepts, kept to characters that need no quoting.
pub fn check_exchange(exchange: &str) -> Result<(), String> {
    if exchange.is_empty()
        || exchange.len() > 127
        || !exchange
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err(format!(
            "{exchange:?} must be 1-127 letters, digits, '-', '_', '.' or ':'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_their_passwords_never_shown() {
        assert!(check_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        assert!(check_url("amqps://user:pw@broker.example:5671/prod").is_ok());
        let e = check_url("http://user:s3cret@host/").unwrap_err();
        assert!(e.contains("amqp://"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        assert!(check_url("not a url").is_err());
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
