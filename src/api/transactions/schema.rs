//! How the document describes the transactions routes' request fields whose rules live in
//! `transactions` (labels, decision ids, comments, the two shapes of an event).

use utoipa::openapi::schema::{
    AdditionalProperties, Object, ObjectBuilder, OneOfBuilder, Schema, Type,
};

use super::super::openapi::{id, one_of, text_or_null};
use super::{MAX_COMMENT, NON_OUTCOME_EVENTS};

/// A free-text label (`reviewer`, `event_id`, `decision_id`): 1–128 characters, none a control
/// character (`char::is_control`: U+0000–U+001F and U+007F–U+009F).
pub fn label_or_null() -> Object {
    text_or_null("^[^\\u0000-\\u001f\\u007f-\\u009f]*$", 1, 128)
}

/// A decision's `comment`: at most `MAX_COMMENT` characters, no control character but line
/// breaks and tabs.
pub fn comment_or_null() -> Object {
    text_or_null(
        "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$",
        0,
        MAX_COMMENT,
    )
}

/// An event body: `type`, with `uguid` on REVERSE_LATENT_MATCH and on no other type, and an
/// optional `event_id`. Two shapes, as `parse_event` reads them.
pub fn event_request() -> Schema {
    let latent = NON_OUTCOME_EVENTS[2];
    let shape = |kinds: Vec<&str>, uguid: Object, required: &[&str]| {
        let mut object = ObjectBuilder::new()
            .property("type", one_of(kinds))
            .property("uguid", uguid)
            .property("event_id", label_or_null())
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        for field in required {
            object = object.required(*field);
        }
        object.build()
    };
    let others = super::event_types()
        .into_iter()
        .filter(|t| *t != latent)
        .collect();
    Schema::OneOf(
        OneOfBuilder::new()
            .item(shape(vec![latent], id(), &["type", "uguid"]))
            .item(shape(
                others,
                ObjectBuilder::new().schema_type(Type::Null).build(),
                &["type"],
            ))
            .build(),
    )
}
