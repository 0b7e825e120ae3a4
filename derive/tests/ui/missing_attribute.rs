// Without #[larder(...)] the derive does not know the table.
#[derive(larder_derive::Entity)]
pub struct Tag {
    pub id: i64,
    pub label: String,
}

fn main() {}
