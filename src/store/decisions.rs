//! The decision notes of the transition log: a reviewer's `decision_id` (idempotency, scoped to
//! its transaction) and comment, kept beside the transition they explain. Run by the writer.

use rusqlite::{params, Connection, OptionalExtension};

use super::DecisionNote;

/// Whether `note`'s decision_id was used before on transaction `tx`: `Some(true)` with the
/// same body (a repeat), `Some(false)` with another one, `None` if never (or no id).
pub(super) fn earlier_use(
    conn: &Connection,
    tx: i64,
    note: &DecisionNote,
) -> rusqlite::Result<Option<bool>> {
    let Some((id, fingerprint)) = &note.decision_id else {
        return Ok(None);
    };
    let seen: Option<String> = conn
        .prepare_cached("SELECT fingerprint FROM decisions WHERE tx = ?1 AND decision_id = ?2")?
        .query_row(params![tx, id], |r| r.get(0))
        .optional()?;
    Ok(seen.map(|f| &f == fingerprint))
}

/// Keeps `note` beside the transition `transition_id` of transaction `tx` (nothing when empty).
pub(super) fn record(
    conn: &Connection,
    tx: i64,
    transition_id: i64,
    note: &DecisionNote,
) -> rusqlite::Result<()> {
    if note.decision_id.is_none() && note.comment.is_none() {
        return Ok(());
    }
    let (id, fingerprint) = note.decision_id.clone().unzip();
    conn.prepare_cached(
        "INSERT INTO decisions (transition_id, tx, decision_id, fingerprint, comment)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![transition_id, tx, id, fingerprint, note.comment])?;
    Ok(())
}
