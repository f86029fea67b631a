//! Timing on a device: wait for its queue, the median of repeated runs, memory sizes.
use std::time::Instant;

use tch::Device;

use crate::error::Result;

/// Waits for the device to finish its queued work.
pub fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Median milliseconds of `f` over `reps` runs after `warm` warm-ups.
pub fn time_ms(
    device: Device,
    warm: usize,
    reps: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<f64> {
    let mut ts = Vec::with_capacity(reps);
    for i in 0..warm + reps {
        sync(device);
        let t0 = Instant::now();
        f()?;
        sync(device);
        if i >= warm {
            ts.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    ts.sort_by(f64::total_cmp);
    Ok(ts[ts.len() / 2])
}

/// Bytes as GiB, or `n/a` (CPU, or no CUDA statistics).
pub fn gib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".to_string(), |b| {
        format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
    })
}
