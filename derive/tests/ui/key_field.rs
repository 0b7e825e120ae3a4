// A key field must be an integer column other than the id.
#[derive(larder_derive::Entity)]
#[larder(table = tags, new = NewTag, changes = TagChanges)]
pub struct TextKey {
    pub id: i64,
    #[larder(key)]
    pub label: String,
}

#[derive(larder_derive::Entity)]
#[larder(table = tags, new = NewTag, changes = TagChanges)]
pub struct IdKey {
    #[larder(key)]
    pub id: i64,
}

fn main() {}
