//! Finds the CUDA runtime headers that the venv's pip wheels installed beside torch, for the
//! C++ shims that include CUDA headers (crates/model's CUDA graphs, crates/dist's NCCL).
//!
//! Why a search: the wheel's folder name follows the CUDA major version (`nvidia/cu13/include`
//! for CUDA 13, `nvidia/cuda_runtime/include` for the CUDA 12 wheels), so a fixed path breaks
//! on the next torch. The marker is `cuda_runtime_api.h`; `CUDA_HOME`/`CUDA_PATH` (a system
//! toolkit) is the fallback.
use std::path::{Path, PathBuf};

/// The directory holding `cuda_runtime_api.h` for the libtorch whose `lib/` folder is
/// `torch_lib` (`…/site-packages/torch/lib`), or `None` when there is none.
pub fn cuda_include_dir(torch_lib: &Path) -> Option<PathBuf> {
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=CUDA_PATH");
    let site_packages = torch_lib.parent()?.parent()?;
    let nvidia = site_packages.join("nvidia");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&nvidia)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("include"))
        .collect();
    // Newest CUDA first (cu13 before cu12); `cuda_runtime` (CUDA 12 layout) after them.
    candidates.sort();
    candidates.reverse();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(home) = std::env::var(var) {
            candidates.push(Path::new(&home).join("include"));
        }
    }
    candidates
        .into_iter()
        .find(|dir| dir.join("cuda_runtime_api.h").exists())
}

/// The venv's NCCL headers (`nvidia/nccl/include/nccl.h`), when installed.
#[allow(dead_code)] // Used by crates/dist only.
pub fn nccl_include_dir(torch_lib: &Path) -> Option<PathBuf> {
    let dir = torch_lib.parent()?.parent()?.join("nvidia/nccl/include");
    dir.join("nccl.h").exists().then_some(dir)
}
