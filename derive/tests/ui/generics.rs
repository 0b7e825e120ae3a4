// Entities are concrete 'static types: no type, lifetime or where clause.
#[derive(larder_derive::Entity)]
#[larder(table = tags, new = NewTag, changes = TagChanges)]
pub struct Tag<L> {
    pub id: i64,
    pub label: L,
}

#[derive(larder_derive::Entity)]
#[larder(table = tags, new = NewTag, changes = TagChanges)]
pub struct Borrowed<'a> {
    pub id: i64,
    pub label: &'a str,
}

fn main() {}
