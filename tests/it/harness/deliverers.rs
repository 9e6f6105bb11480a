//! Which services may deliver to which receiver: every service the harness started, and the
//! receiver ports that its configuration, or an endpoint created or changed through the
//! harness's `Api`, names (as `:<port>/`). A receiver asks here which services' records tell
//! whether it is still owed a POST. Services are known by their base URL.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

/// Base URLs by the receiver port they deliver to, latest last.
static BY_PORT: Mutex<BTreeMap<u16, Vec<String>>> = Mutex::new(BTreeMap::new());

/// Every service the harness started, with a handle that lives as long as it runs (held by
/// its `TestApp` or `ServiceProcess`).
static STARTED: Mutex<Vec<(String, Weak<()>)>> = Mutex::new(Vec::new());

/// Records that the service at `base` may deliver to every port `text` (a configuration file,
/// or an endpoint's JSON) names as `:<port>/`.
pub(super) fn serves(text: &str, base: &str) {
    let mut by_port = BY_PORT.lock().expect("services by port");
    for port in named_ports(text) {
        let bases = by_port.entry(port).or_default();
        if !bases.iter().any(|b| b == base) {
            bases.push(base.to_owned());
        }
    }
}

/// A receiver bound `port`: what was recorded for an earlier listener there is not its own.
pub(super) fn forget_port(port: u16) {
    BY_PORT.lock().expect("services by port").remove(&port);
}

/// The services recorded as delivering to `port`, latest last.
pub(super) fn at(port: u16) -> Vec<String> {
    let by_port = BY_PORT.lock().expect("services by port");
    by_port.get(&port).cloned().unwrap_or_default()
}

/// Records a service the harness started.
pub(super) fn started(base: &str, alive: &Arc<()>) {
    let mut all = STARTED.lock().expect("started services");
    all.retain(|(_, w)| w.strong_count() > 0);
    all.push((base.to_owned(), Arc::downgrade(alive)));
}

/// The services the harness started that still run, latest last.
pub(super) fn running() -> Vec<String> {
    let all = STARTED.lock().expect("started services");
    all.iter()
        .filter(|(_, alive)| alive.strong_count() > 0)
        .map(|(base, _)| base.clone())
        .collect()
}

/// The ports written as `:<port>/` in `text`.
fn named_ports(text: &str) -> Vec<u16> {
    text.split(':')
        .skip(1)
        .filter_map(|rest| {
            let digits = rest.split_once('/')?.0;
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse().ok())?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ports_named_in_urls_are_found_and_nothing_else() {
        let text = r#"url = "http://127.0.0.1:4567/notify" x = "a:b/c" y = "postgres://h:5432/db" z = ":99999/""#;
        assert_eq!(super::named_ports(text), vec![4567, 5432]);
    }
}
