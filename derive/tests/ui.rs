//! The derive's misuses as rustc reports them, spans included: each
//! `tests/ui/*.rs` must fail to compile with its `.stderr` exactly.
//! `TRYBUILD=overwrite cargo test -p larder-derive --test ui` rewrites them.

#[test]
fn misuses_are_refused_with_clear_errors() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
