//! `states/` is generated from the state machine (`gbds-notifier states`) and committed so
//! that a person can read it in review; these tests fail when it no longer matches the code.
//! (The command itself, writing and `--check`, is tested in `commands`.)

use std::path::Path;

/// Compares the directory with what `render()` produces now; `Err` names every stale, missing
/// or left-over file and says how to regenerate.
fn compare(dir: &Path, rendered: &[(String, String)]) -> Result<(), String> {
    let mut problems = Vec::new();
    for (name, text) in rendered {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(on_disk) if &on_disk == text => {}
            Ok(_) => problems.push(format!("{name} is stale")),
            Err(_) => problems.push(format!("{name} is missing")),
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !rendered.iter().any(|(n, _)| *n == name) {
                problems.push(format!("{name} is not generated any more (delete it)"));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}; run `cargo run -- states` and commit the result",
            dir.display(),
            problems.join(", ")
        ))
    }
}

#[test]
fn the_committed_states_directory_matches_the_state_machine() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("states");
    if let Err(why) = compare(&dir, &gbds_notifier::states::render()) {
        panic!("{why}");
    }
}

#[test]
fn the_rendered_table_lists_every_treatment_of_the_contract() {
    let rendered = gbds_notifier::states::render();
    let (_, table) = rendered
        .iter()
        .find(|(n, _)| n == "transitions.md")
        .expect("transitions.md is rendered");
    for row in [
        "| ENROLL | EXCEPTION | treatment SAME_FINGERS | FAILED |",
        "| ENROLL | EXCEPTION | treatment DIFFERENT_FINGERS | ENROLLED |",
        "| ENROLL | EXCEPTION | treatment MERGE_TRANSACTIONS | ENROLLED |",
        "| ENROLL | EXCEPTION | treatment RECOLLECT | FAILED |",
        "| UPDATE | EXCEPTION | treatment SAME_FINGERS | ENROLLED |",
        "| UPDATE | EXCEPTION | treatment DIFFERENT_FINGERS | FAILED |",
        "| UPDATE | EXCEPTION | treatment RECOLLECT | FAILED |",
        "| UPDATE | EXCEPTION | treatment INCORRECT_ENROLL | ENROLLED |",
    ] {
        assert!(table.contains(row), "missing row {row}");
    }
    let rows = |op: &str, needle: &str| {
        table
            .lines()
            .filter(|l| l.starts_with(&format!("| {op} |")) && l.contains(needle))
            .count()
    };
    assert_eq!(
        rows("ENROLL", "INCORRECT_ENROLL"),
        0,
        "INCORRECT_ENROLL is update-only"
    );
    assert_eq!(
        rows("UPDATE", "MERGE_TRANSACTIONS"),
        0,
        "MERGE_TRANSACTIONS is enroll-only"
    );
    assert_eq!(rows("SEARCH", "treatment"), 0, "a search is never treated");
    assert_eq!(rows("SEARCH", "review"), 0, "a search is never reviewed");
}
