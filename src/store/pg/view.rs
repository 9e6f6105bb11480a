//! What a batch sees of its writer (`View`), and the leases this instance holds (`Held`).

use std::collections::HashMap;

use crate::domain::UpdateLabel;
use crate::endpoint::{Endpoint, Snapshot};
use crate::store::leases::Leases;

/// A lease this instance holds, as a result must quote it.
#[derive(Debug, Clone)]
pub(super) struct Held {
    /// The generation it was leased under: a result counts only under it.
    pub gen: i64,
    pub tguid: String,
    pub endpoint: String,
}

/// What a batch sees of its writer.
pub(super) struct View<'a> {
    pub instance: &'a str,
    pub update_label: UpdateLabel,
    /// The endpoints as last published, and their version.
    pub endpoints: &'a Snapshot,
    pub version: i64,
    pub configured: &'a [Endpoint],
    pub leases: &'a Leases,
    pub held: &'a HashMap<i64, Held>,
    /// Whether a dispatcher takes what is handed over (else nothing is leased at insert).
    pub handoff_open: bool,
    pub lease_ms: i64,
}
