//! With the `serde` feature, entities serialize (for JSON responses) and the
//! `New*` and `*Changes` types deserialize (from request bodies).
#![cfg(feature = "serde")]

use larder_blog::prelude::*;
use larder_blog::{NewUser, User, UserChanges};

#[test]
fn a_new_user_from_json_is_stored_and_its_row_serializes() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        larder_blog::open(&format!("sqlite://{}", dir.path().join("s.db").display())).unwrap();
    let new: NewUser = serde_json::from_str(r#"{"name":"ann","email":"ann@example.org"}"#).unwrap();
    let ann = store.users().create(new).unwrap();
    let json = serde_json::to_value(&*ann).unwrap();
    assert_eq!(json["name"], "ann");
    assert_eq!(json["id"], ann.id);
    assert!(json["created_at"].is_string(), "{json}");

    let changes: UserChanges = serde_json::from_str(r#"{"name":"Ann","email":null}"#).unwrap();
    let renamed: std::sync::Arc<User> = store.users().update(ann.id, changes).unwrap();
    assert_eq!(renamed.name, "Ann");
    assert_eq!(renamed.email, "ann@example.org");
}
