//! The configuration file: TOML parsing, then validation into `Settings`, with environment
//! variables set from the same input (the part after a line `#env`, `NAME=value` per line).
//!
//! Properties: nothing panics; a refusal names what is wrong; and what is accepted keeps the
//! promises validation makes (limits above zero, the lease longer than a request, one
//! endpoint per id).

#![no_main]

use gbds_notifier::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, env) = text.split_once("\n#env\n").unwrap_or((text, ""));
    let vars: Vec<(&str, &str)> = env.lines().filter_map(|l| l.split_once('=')).collect();
    let lookup = |name: &str| {
        vars.iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    };
    match config::from_text(file, lookup) {
        Err(e) => assert!(!e.to_string().trim().is_empty()),
        Ok(s) => {
            assert!(!s.api.header_read_timeout.is_zero());
            assert!(!s.api.request_timeout.is_zero());
            assert!(!s.api.body_read_timeout.is_zero());
            assert!(s.api.body_memory_budget > 0);
            assert!(s.api.max_concurrent_requests >= 1);
            assert!(s.delivery.lease > s.delivery.request_timeout);
            assert!((0.0..=1.0).contains(&s.delivery.jitter));
            assert!(s.delivery.endpoint_concurrency >= 1 && s.delivery.max_in_flight >= 1);
            let mut ids: Vec<&str> = s.endpoints.iter().map(|e| e.id.as_str()).collect();
            let n = ids.len();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), n, "two endpoints with one id");
        }
    }
});
