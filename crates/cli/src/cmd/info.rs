//! `gradstep info`: what libtorch sees on this machine.
use tch::Cuda;

/// Prints libtorch's version, CUDA / cuDNN status, the GPUs and the CPU threads.
pub fn run() -> anyhow::Result<()> {
    println!("gradstep {}", env!("CARGO_PKG_VERSION"));
    println!(
        "libtorch {}",
        option_env!("GRADSTEP_LIBTORCH_VERSION").unwrap_or("(unknown)")
    );
    println!("cpu threads: {}", tch::get_num_threads());
    let loaded = if cuda_backend_loaded() {
        "yes"
    } else {
        "no: CUDA cannot be used"
    };
    println!("libtorch_cuda loaded: {loaded}");
    if Cuda::is_available() {
        let n = Cuda::device_count();
        println!("cuda: available, {n} device(s)");
        for (i, name) in gradstep_bench::setup::gpu_names()
            .iter()
            .enumerate()
            .take(n as usize)
        {
            println!("  cuda:{i}: {name}");
        }
        if Cuda::cudnn_is_available() {
            println!("cudnn: available, version {}", tch::utils::version_cudnn());
        } else {
            println!("cudnn: not available");
        }
    } else {
        println!("cuda: not available: this machine runs on the CPU only");
    }
    Ok(())
}

/// Whether `libtorch_cuda.so` is mapped into this process (it is dropped at link time
/// unless forced, and then CUDA silently stays off).
pub fn cuda_backend_loaded() -> bool {
    std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains("libtorch_cuda.so"))
}
