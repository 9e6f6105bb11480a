//! Property-based fuzzing (proptest) of request parsing, the API and the state machine.
