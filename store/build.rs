//! Rebuild when a migration is added or changed: `sqlx::migrate!` embeds them at compile time,
//! and Cargo does not know to look at files outside this crate by itself.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
