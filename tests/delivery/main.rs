//! Delivery under faults, operator actions, endpoints changed while notifications flow, crash
//! recovery and a model check of the state machine through the store: delivery never loses,
//! reorders or floods.

#[path = "../common/mod.rs"]
#[allow(dead_code)]
mod common;
#[path = "../it/harness.rs"]
#[allow(dead_code)]
mod harness;

mod crash;
mod endpoint_registry;
mod faults;
mod model;
mod operator;
mod receiver;
mod service;
