//! The dist crate's build: the shared libtorch linking, plus `csrc/dist_ext.cpp` (c10d's
//! stores and ProcessGroupGloo, compiled against the same libtorch's headers) and, when that
//! libtorch has CUDA and the venv has the CUDA and NCCL headers, `csrc/dist_nccl.cpp`.
//!
//! libtorch's wheel ships c10d's headers but not Gloo's, which `ProcessGroupGloo.hpp`
//! includes: `third_party/gloo` holds those headers (unchanged, BSD licence, see its
//! README). Only pointers to Gloo's types appear in the class layout, so the headers need not
//! match the exact Gloo commit libtorch was built from.
#[path = "../../build-support/cuda_include.rs"]
mod cuda_include;
#[path = "../../build-support/link_libtorch.rs"]
mod link_libtorch;
#[path = "../../build-support/torch_shim.rs"]
mod torch_shim;

use std::path::Path;

fn main() {
    link_libtorch::main();
    println!("cargo::rustc-check-cfg=cfg(gradstep_dist_nccl)");
    println!("cargo:rerun-if-changed=csrc/dist_ext.cpp");
    println!("cargo:rerun-if-changed=csrc/dist_nccl.cpp");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys exports DEP_TCH_LIBTORCH_LIB: the dist shim needs libtorch's headers");
    let lib = Path::new(&lib);
    let torch = lib.parent().expect("libtorch's lib/ has a parent");
    let cuda = lib.join("libtorch_cuda.so").exists();
    let nccl_headers = cuda_include::cuda_include_dir(lib).zip(cuda_include::nccl_include_dir(lib));
    let mut build = torch_shim::shim_build(torch);
    build
        .include("third_party/gloo")
        .define("USE_C10D_GLOO", None)
        .file("csrc/dist_ext.cpp");
    match (cuda, nccl_headers) {
        (true, Some((cuda_include, nccl_include))) => {
            build
                .include(cuda_include)
                .include(nccl_include)
                .define("USE_C10D_NCCL", None)
                .define("USE_CUDA", None)
                .define("GRADSTEP_DIST_NCCL", None)
                .file("csrc/dist_nccl.cpp");
            println!("cargo:rustc-cfg=gradstep_dist_nccl");
            println!("cargo:rustc-link-lib=dylib=c10_cuda");
            println!("cargo:rustc-link-lib=dylib=torch_cuda");
        }
        (true, None) => println!(
            "cargo:warning=libtorch has CUDA but the venv lacks the CUDA or NCCL headers: \
             the NCCL backend is left out of this build"
        ),
        (false, _) => {}
    }
    build.compile("gradstep_dist_ext");
}
