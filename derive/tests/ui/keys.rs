// Unknown, missing and repeated keys, and values entity! could not take.
#[derive(larder_derive::Entity)]
#[larder(table = tags, new = NewTag, changes = TagChanges, cache = true)]
pub struct Unknown {
    pub id: i64,
}

#[derive(larder_derive::Entity)]
#[larder(table = tags, changes = TagChanges)]
pub struct Missing {
    pub id: i64,
}

#[derive(larder_derive::Entity)]
#[larder(table = tags, new = NewTag, changes = TagChanges)]
#[larder(new = NewTag)]
pub struct Twice {
    pub id: i64,
}

#[derive(larder_derive::Entity)]
#[larder(table = schema::tags<i64>, new = NewTag, changes = TagChanges)]
pub struct NotAModule {
    pub id: i64,
}

#[derive(larder_derive::Entity)]
#[larder(table = tags, new = NewTag, changes = TagChanges, deleted_with = [posts])]
pub struct UnquotedParent {
    pub id: i64,
}

fn main() {}
