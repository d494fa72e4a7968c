//! Every misuse the macros reject, with the message and span the user sees.
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test -p factum-codegen-tests --test ui`
//! and review them: each must point at the user's mistake and say what to do.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/event/*.rs");
    t.compile_fail("tests/ui/event_set/*.rs");
    t.compile_fail("tests/ui/aggregate/*.rs");
    t.compile_fail("tests/ui/upcast/*.rs");
    t.compile_fail("tests/ui/projection/*.rs");
    t.compile_fail("tests/ui/saga/*.rs");
}
