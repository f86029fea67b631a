//! The `cc` set-up every C++ shim of the workspace compiles with (crates/model's CUDA shim,
//! crates/dist's c10d shim): C++17 against the headers of the libtorch being linked, with its
//! C++11 ABI, so that the shims' objects match libtorch's.
use std::path::Path;

/// A `cc::Build` for a shim against the libtorch at `torch` (`…/site-packages/torch`); the
/// caller adds its sources, defines and extra include folders.
pub fn shim_build(torch: &Path) -> cc::Build {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1");
    build
}
