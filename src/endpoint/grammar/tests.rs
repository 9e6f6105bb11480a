//! The hand-written check against the published pattern: the same URLs, and every one of them
//! a URL the service can parse.

use proptest::prelude::*;

use super::{fits, PATTERN};

fn pattern() -> regex::Regex {
    regex::Regex::new(PATTERN).expect("the published pattern compiles")
}

#[test]
fn the_usual_endpoint_urls_fit_and_the_others_do_not() {
    for url in [
        "http://127.0.0.1:9000/notify",
        "https://hooks.example.com/gbds/notify?tenant=a&x=%2F",
        "HTTPS://back-office_1.internal:65535/",
        "http://10.0.0.1",
        "http://x.io/a*/(b)/~c@d:e;f=g",
        "http://xn-a.io/",
    ] {
        assert!(fits(url), "{url} should fit");
        assert!(pattern().is_match(url), "{url} should match the pattern");
    }
    for url in [
        "ftp://x.io/",
        "http://",
        "http://user:pw@x.io/",
        "http://[::1]:8080/",
        "http://x.io/#frag",
        "http://x.io:0/",
        "http://x.io:65536/",
        "http://x.io:080/",
        "http://256.0.0.1/",
        "http://01.2.3.4/",
        "http://1.2.3/",
        "http://1x.io/",
        "http://x..io/",
        "http://xn--zz.io/",
        "http://x.io/a b",
        "http://x.io/%zz",
        "http://x.io/\\",
    ] {
        assert!(!fits(url), "{url} should not fit");
        assert!(
            !pattern().is_match(url),
            "{url} should not match the pattern"
        );
    }
}

proptest! {
    #[test]
    fn every_url_of_the_pattern_fits_and_parses_as_an_http_url_with_a_host(
        url in proptest::string::string_regex(&PATTERN[1..PATTERN.len() - 1]).unwrap()
    ) {
        prop_assert!(fits(&url), "{url}");
        let parsed = crate::endpoint::check_url(&url);
        prop_assert!(parsed.is_ok(), "{url}: {parsed:?}");
    }

    #[test]
    fn the_check_and_the_pattern_agree_on_any_string_of_url_characters(
        url in "(http|HTTPS|ftp|https)://[a-zA-Z0-9.:/?%@_~\\-xn\\[\\]#]{0,24}"
    ) {
        prop_assert_eq!(fits(&url), pattern().is_match(&url), "{}", url);
    }
}
