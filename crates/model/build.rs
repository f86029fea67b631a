//! The model crate's build: the shared libtorch linking, plus `csrc/cuda_ext.cpp` (compiled
//! against the same libtorch's headers) when that libtorch has its CUDA backend.
#[path = "../../build-support/cuda_include.rs"]
mod cuda_include;
#[path = "../../build-support/link_libtorch.rs"]
mod link_libtorch;
#[path = "../../build-support/torch_shim.rs"]
mod torch_shim;

use std::path::Path;

fn main() {
    link_libtorch::main();
    println!("cargo::rustc-check-cfg=cfg(gradstep_cuda_ext)");
    println!("cargo::rustc-check-cfg=cfg(gradstep_cuda_graphs)");
    println!("cargo:rerun-if-changed=csrc/cuda_ext.cpp");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    let lib = Path::new(&lib);
    let Some(torch) = lib.parent() else { return };
    if !lib.join("libc10_cuda.so").exists() {
        return;
    }
    let Some(cuda_include) = cuda_include::cuda_include_dir(lib) else {
        return;
    };
    // CUDA graphs need the runtime headers' crt/ and nv/ parts (the nvidia-cuda-crt and
    // nvidia-cuda-cccl wheels, which scripts/setup-libtorch.sh installs); without them the
    // rest of the shim still builds.
    let needed = [
        cuda_include.join("crt/host_config.h"),
        cuda_include.join("nv/target"),
    ];
    let missing: Vec<_> = needed.iter().filter(|p| !p.exists()).collect();
    let graphs = missing.is_empty();
    let mut build = torch_shim::shim_build(torch);
    build.file("csrc/cuda_ext.cpp");
    if graphs {
        build
            .include(&cuda_include)
            .define("GRADSTEP_CUDA_GRAPHS", None);
    }
    build.compile("gradstep_cuda_ext");
    println!("cargo:rustc-cfg=gradstep_cuda_ext");
    if graphs {
        // The graph and stream entry points live in these two.
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-cfg=gradstep_cuda_graphs");
    } else {
        println!(
            "cargo:warning=no {}: CUDA graphs are left out of this build",
            missing[0].display()
        );
    }
}
