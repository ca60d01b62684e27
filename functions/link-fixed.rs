//! The build script of every function crate: links its Lambda binary at a fixed address
//! (`-no-pie`). A position-independent executable carries a relocation for every pointer in
//! its static data (about 0.8 MB of `.rela.dyn` in orchestrate), which a binary that Lambda
//! starts once per execution environment never needs. docs/BENCHMARKS.md has the sizes.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
