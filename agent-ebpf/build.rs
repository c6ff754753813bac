//! Rebuild the programs when bpf-linker changes: it does the final codegen.
fn main() {
    let linker =
        which::which("bpf-linker").expect("bpf-linker not on PATH: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", linker.display());
}
