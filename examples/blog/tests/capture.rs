//! The blog's migrations hold exactly what larder's trigger generator writes,
//! so the generator is what the blog (and any application) runs.

use larder::{capture_sql, Backend};

#[test]
fn blog_migrations_install_the_generated_triggers() {
    let migrations = [
        (
            Backend::Sqlite,
            include_str!("../migrations/sqlite/2026-11-25-000002_blog_capture/up.sql"),
        ),
        (
            Backend::Postgres,
            include_str!("../migrations/postgres/2026-11-25-000002_blog_capture/up.sql"),
        ),
        (
            Backend::Mysql,
            include_str!("../migrations/mysql/2026-11-25-000002_blog_capture/up.sql"),
        ),
    ];
    let tags = include_str!("../examples/tags_migrations/2026-11-24-100000_tags/up.sql");
    assert!(tags.contains(&capture_sql(Backend::Sqlite, "tags").unwrap().up));
    for (backend, up) in migrations {
        for table in ["users", "posts", "comments"] {
            let sql = capture_sql(backend, table).unwrap();
            assert!(up.contains(&sql.up), "{backend:?} {table}");
        }
    }
}
