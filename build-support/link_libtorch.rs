//! Build script shared by every gradstep crate that produces binaries or tests.
//!
//! Why: rustc links with `--as-needed`, which drops `libtorch.so` / `libtorch_cuda.so`
//! because no Rust symbol refers to them directly. Without them CUDA silently stays
//! off. We force them into the dynamic section and add an rpath to the libtorch that
//! torch-sys built against, so binaries run without `LD_LIBRARY_PATH`.
//! `DEP_TCH_LIBTORCH_LIB` is exported by torch-sys (`links = "tch"`) to its direct
//! dependents, which is why each of these crates lists torch-sys itself.
use std::path::Path;

pub fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    let lib = Path::new(&lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
    // torch/version.py beside torch/lib: `__version__ = '2.11.0+cu130'`.
    if let Some(version) = lib
        .parent()
        .and_then(|torch| std::fs::read_to_string(torch.join("version.py")).ok())
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("__version__ = ")
                    .map(|v| v.trim_matches(['\'', '"']).to_string())
            })
        })
    {
        println!("cargo:rustc-env=GRADSTEP_LIBTORCH_VERSION={version}");
    }
    // Lets the binaries find the Python of the same venv (checkpoint import, TensorBoard).
    if let Some(venv) = lib.ancestors().find(|p| p.join("bin/python").exists()) {
        println!(
            "cargo:rustc-env=GRADSTEP_BUILD_PYTHON={}",
            venv.join("bin/python").display()
        );
    }
}
