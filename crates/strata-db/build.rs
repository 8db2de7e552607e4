// `sqlx::migrate!` embeds the migration files at compile time, but cargo
// does not know it reads them: without this, adding a migration would leave
// an incremental build with the old set.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
