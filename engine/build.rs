// `sqlx::migrate!` embeds the migrations at compile time, but on stable Rust cargo does not
// know it read them: without this, a new migration file is not compiled in until something
// else in the crate changes (what `sqlx migrate build-script` writes).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
