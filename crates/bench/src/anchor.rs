//! The PyTorch anchor (`anchor_deepinv.py`), run by a benchmark in the same call so that
//! both sides are timed on the same machine at the same moment.
use std::path::Path;
use std::process::Command;

use tch::Device;

use crate::error::{BenchError, Result};

/// Runs `anchor_deepinv.py MODE --device D [extra…]` and returns its `anchor <metric> <value>` lines.
pub fn run_anchor(
    python: &Path,
    anchor: &Path,
    mode: &str,
    device: Device,
    extra: &[String],
) -> Result<Vec<(String, f64)>> {
    let dev = match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    };
    let out = Command::new(python)
        .arg(anchor)
        .arg(mode)
        .args(["--device", &dev])
        .args(extra)
        .output()
        .map_err(|e| {
            BenchError::Anchor(format!(
                "cannot run {} {}: {e}",
                python.display(),
                anchor.display()
            ))
        })?;
    if !out.status.success() {
        return Err(BenchError::Anchor(format!(
            "{} {mode} failed: {}",
            anchor.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            match (it.next(), it.next(), it.next().map(str::parse::<f64>)) {
                (Some("anchor"), Some(k), Some(Ok(v))) => Some((k.to_string(), v)),
                _ => None,
            }
        })
        .collect())
}

/// The value of `metric` among the anchor's lines.
pub fn metric(lines: &[(String, f64)], metric: &str) -> Option<f64> {
    lines.iter().find(|(n, _)| n == metric).map(|(_, v)| *v)
}
