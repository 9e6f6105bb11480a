//! The endpoint URLs the REST API takes, as one grammar: published as a pattern in the OpenAPI
//! document (`PATTERN`) and checked here by hand (`fits`), so that a URL the document allows is
//! one the service takes, and a URL it does not allow is refused. `http://` or `https://`; a
//! host name (labels that start with a letter, none an IDNA `xn--` label) or a dotted IPv4
//! address; a port 1–65535; a path and a query of URL characters (or `%XX`). No user info, no
//! fragment, no IPv6 literal: the configuration file takes any http(s) URL with a host.

/// A host name label: a letter first, then letters, digits, `_` and `-`; never `xn--…`.
macro_rules! label {
    () => {
        "(?:[A-WYZa-wyz][A-Za-z0-9_-]*|[Xx](?:[A-Ma-mO-Zo-z0-9_-][A-Za-z0-9_-]*|[Nn](?:[A-Za-z0-9_][A-Za-z0-9_-]*|-(?:[A-Za-z0-9_][A-Za-z0-9_-]*)?)?)?)"
    };
}

/// One number of a dotted IPv4 address: 0–255 without leading zeros.
macro_rules! octet {
    () => {
        "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
    };
}

/// A character of a path segment (and of a query, which also takes `/` and `?`).
macro_rules! pchar {
    () => {
        "(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})"
    };
}

/// The grammar as an ECMA-262 pattern (what JSON Schema's `pattern` is).
pub const PATTERN: &str = concat!(
    "^[hH][tT][tT][pP][sS]?://",
    "(?:",
    label!(),
    "(?:\\.",
    label!(),
    ")*|",
    octet!(),
    "(?:\\.",
    octet!(),
    "){3})",
    "(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?",
    "(?:/",
    pchar!(),
    "*)*",
    "(?:\\?(?:",
    pchar!(),
    "|[/?])*)?$"
);

/// Whether `url` is in the grammar of `PATTERN`.
pub fn fits(url: &str) -> bool {
    let Some(rest) = strip_scheme(url) else {
        return false;
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if !(is_ipv4(host) || is_host_name(host)) || port.is_some_and(|p| !is_port(p)) {
        return false;
    }
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    url_characters(path, "/") && query.is_none_or(|q| url_characters(q, "/?"))
}

fn strip_scheme(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")).then_some(rest)
}

fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.split('.').all(|label| {
            let mut chars = label.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && !label
                    .get(..4)
                    .is_some_and(|p| p.eq_ignore_ascii_case("xn--"))
        })
}

/// A decimal number in `low..=high`, written without leading zeros.
fn is_number_in(text: &str, low: u32, high: u32) -> bool {
    !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'))
        && text.parse::<u32>().is_ok_and(|n| (low..=high).contains(&n))
}

fn is_ipv4(host: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() == 4 && parts.iter().all(|p| is_number_in(p, 0, 255))
}

fn is_port(port: &str) -> bool {
    is_number_in(port, 1, 65_535)
}

/// Whether `text` is URL characters (`pchar`, or one of `extra`), every `%` starting `%XX`.
fn url_characters(text: &str, extra: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            if !bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
            {
                return false;
            }
            i += 3;
            continue;
        }
        if !(b.is_ascii_alphanumeric()
            || b"._~!$&'()*+,;=:@-".contains(&b)
            || extra.as_bytes().contains(&b))
        {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests;
