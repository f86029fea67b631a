//! The model crate's build: the shared libtorch linking, plus `csrc/cuda_ext.cpp` (compiled
//! against the same libtorch's headers) when that libtorch has its CUDA backend.
#[path = "../../build-support/link_libtorch.rs"]
mod link_libtorch;

use std::path::Path;

fn main() {
    link_libtorch::main();
    println!("cargo::rustc-check-cfg=cfg(gradstep_cuda_ext)");
    println!("cargo:rerun-if-changed=csrc/cuda_ext.cpp");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    let lib = Path::new(&lib);
    let Some(torch) = lib.parent() else { return };
    let cuda_include = torch.parent().map(|sp| sp.join("nvidia/cu13/include"));
    let has_cuda =
        lib.join("libc10_cuda.so").exists() && cuda_include.as_ref().is_some_and(|p| p.exists());
    if !has_cuda {
        return;
    }
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .file("csrc/cuda_ext.cpp")
        .compile("gradstep_cuda_ext");
    println!("cargo:rustc-cfg=gradstep_cuda_ext");
}
