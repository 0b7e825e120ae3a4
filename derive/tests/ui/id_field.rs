// The primary key is an `id: i64` field (BIGINT).
#[derive(larder_derive::Entity)]
#[larder(table = tags, new = NewTag, changes = TagChanges)]
pub struct NoId {
    pub tag_id: i64,
}

#[derive(larder_derive::Entity)]
#[larder(table = tags, new = NewTag, changes = TagChanges)]
pub struct NarrowId {
    pub id: i32,
}

#[derive(larder_derive::Entity)]
#[larder(table = tags, new = NewTag, changes = TagChanges)]
pub struct OptionalId {
    pub id: Option<i64>,
}

fn main() {}
