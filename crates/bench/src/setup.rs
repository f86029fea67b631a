//! What every benchmark sets up the same way: the benchmarked network and the device.
use gradstep_model::{Activation, DrunetConfig};
use tch::Device;

/// The benchmarked network: the paper's widths (64…512), or the tiny ones (8…64) that keep a
/// CPU run short.
pub fn architecture(tiny: bool, activation: Activation) -> DrunetConfig {
    if tiny {
        DrunetConfig::tiny(activation)
    } else {
        DrunetConfig {
            activation,
            ..Default::default()
        }
    }
}

/// Prepares `device` for timing: cuDNN's autotuning on a GPU (as the anchor does), or a
/// plain note that the timings are CPU ones (`cpu_hint` says how to keep them short).
pub fn announce_device(device: Device, cpu_hint: &str) {
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    } else {
        println!(
            "note: no GPU in use: timing on the CPU ({} threads){cpu_hint}",
            tch::get_num_threads()
        );
    }
}

/// The names of the visible GPUs, from `nvidia-smi` (libtorch's C API does not expose device
/// properties); none without it.
pub fn gpu_names() -> Vec<String> {
    std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}
