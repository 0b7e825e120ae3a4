//! diesel's description of the blog tables (see `migrations/sqlite`).
#![allow(missing_docs)]

diesel::table! {
    users (id) {
        id -> BigInt,
        name -> Text,
        email -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    posts (id) {
        id -> BigInt,
        author_id -> BigInt,
        title -> Text,
        body -> Text,
        published -> Bool,
        version -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    comments (id) {
        id -> BigInt,
        post_id -> BigInt,
        author_id -> BigInt,
        body -> Text,
        created_at -> Timestamp,
    }
}

diesel::joinable!(posts -> users (author_id));
diesel::joinable!(comments -> posts (post_id));
diesel::allow_tables_to_appear_in_same_query!(users, posts, comments);

diesel::table! {
    /// The rendered front page and the fencing token of its last rebuild.
    front_page (id) {
        id -> BigInt,
        html -> Text,
        token -> BigInt,
    }
}
