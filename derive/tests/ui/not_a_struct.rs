// entity! implements Entity from named fields: no enums, no tuple structs.
#[derive(larder_derive::Entity)]
#[larder(table = tags, new = NewTag, changes = TagChanges)]
pub enum Tag {
    Label(String),
}

#[derive(larder_derive::Entity)]
#[larder(table = tags, new = NewTag, changes = TagChanges)]
pub struct Pair(pub i64, pub String);

fn main() {}
