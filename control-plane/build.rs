// The migrations are embedded by `sqlx::migrate!`, which cannot tell cargo to watch them on
// stable Rust: a changed migration alone would otherwise not rebuild the crate.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
