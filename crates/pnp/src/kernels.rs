//! Blur kernels: the benchmark sets (`levin09.json`, `kernels12.json`), the generated uniform
//! and Gaussian kernels of the deblurring table, and user kernels from JSON, `.npy` or a gray PNG.
//!
//! A kernel `k` is stored row-major in MATLAB orientation (as the official GS-PnP code loads
//! the `.mat` files) and applied as a *convolution* `x ∗ k` (scipy `ndimage.convolve`,
//! `mode='wrap'`), centred on the pixel `(⌊h/2⌋, ⌊w/2⌋)`.
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use crate::error::{PnpError, Result};

pub(crate) mod npy;

/// A 2-D blur kernel, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    height: usize,
    width: usize,
    values: Vec<f64>,
    /// The sum of the values as given, before normalising.
    input_sum: f64,
}

impl Kernel {
    /// The largest kernel side accepted: the benchmark kernels are at most 27 pixels wide, and
    /// a bound lets a file's header be refused before its size is trusted.
    pub const MAX_SIDE: usize = 1024;

    /// A kernel from row-major values; they must be finite, non-negative and sum to a positive
    /// finite value, and each side is at most [`Kernel::MAX_SIDE`]. The kernel is normalised to
    /// sum 1.
    pub fn new(height: usize, width: usize, values: Vec<f64>) -> Result<Self> {
        check_size(height, width)?;
        if values.len() != height * width {
            return Err(PnpError::Invalid(format!(
                "kernel of {height}×{width} needs {} values, got {}",
                height * width,
                values.len()
            )));
        }
        if let Some((i, v)) = values
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite() || **v < 0.0)
        {
            return Err(PnpError::Invalid(format!(
                "kernel values must be finite and non-negative, entry {i} is {v}"
            )));
        }
        let sum: f64 = values.iter().sum();
        // Finite entries can still overflow their sum (9 × 1e308): every entry would then
        // normalise to 0, a kernel that erases the image.
        if !sum.is_finite() {
            return Err(PnpError::Invalid(format!(
                "kernel values sum to {sum}; scale them down"
            )));
        }
        if sum <= 0.0 {
            return Err(PnpError::Invalid("kernel sums to 0".into()));
        }
        Ok(Kernel {
            height,
            width,
            values: values.into_iter().map(|v| v / sum).collect(),
            input_sum: sum,
        })
    }

    /// The `n×n` uniform kernel (the deblurring table uses `n = 9`).
    pub fn uniform(n: usize) -> Result<Self> {
        Kernel::new(n, n, vec![1.0; n * n])
    }

    /// MATLAB `fspecial('gaussian', [size size], std)`: `exp(−(i² + j²)/(2 std²))` on a centred
    /// grid, entries below `eps·max` zeroed, normalised to sum 1 (the table uses 25, 1.6).
    pub fn gaussian(size: usize, std: f64) -> Result<Self> {
        if std.is_nan() || std <= 0.0 {
            return Err(PnpError::Invalid(format!(
                "Gaussian std must be > 0, got {std}"
            )));
        }
        let c = (size as f64 - 1.0) / 2.0;
        let mut v: Vec<f64> = (0..size * size)
            .map(|p| {
                let (i, j) = ((p / size) as f64 - c, (p % size) as f64 - c);
                (-(i * i + j * j) / (2.0 * std * std)).exp()
            })
            .collect();
        let max = v.iter().cloned().fold(0.0, f64::max);
        for x in v.iter_mut() {
            if *x < f64::EPSILON * max {
                *x = 0.0;
            }
        }
        Kernel::new(size, size, v)
    }

    /// Height (rows).
    pub fn height(&self) -> usize {
        self.height
    }

    /// Width (columns).
    pub fn width(&self) -> usize {
        self.width
    }

    /// The sum of the values as given, before [`Kernel::new`] normalised them to 1 (e.g.
    /// `255 · n` for a PNG kernel): users are told when a kernel file was not normalised.
    pub fn input_sum(&self) -> f64 {
        self.input_sum
    }

    /// Whether the values as given summed to 1 (to a relative `1e-4`, what a kernel written
    /// with 5 digits keeps).
    pub fn was_normalised(&self) -> bool {
        (self.input_sum - 1.0).abs() <= 1e-4
    }

    /// Row-major values (summing to 1).
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// The kernel as an `[h, w]` tensor.
    pub fn to_tensor(&self, kind: Kind, device: Device) -> Result<Tensor> {
        Ok(Tensor::f_from_slice(&self.values)?
            .f_view([self.height as i64, self.width as i64])?
            .f_to_kind(kind)?
            .f_to_device(device)?)
    }
}

/// Refuses an empty kernel or one with a side over [`Kernel::MAX_SIDE`].
fn check_size(height: usize, width: usize) -> Result<()> {
    if height == 0 || width == 0 || height > Kernel::MAX_SIDE || width > Kernel::MAX_SIDE {
        return Err(PnpError::Invalid(format!(
            "kernel of {height}×{width}: each side must be 1 to {}",
            Kernel::MAX_SIDE
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KernelFile {
    #[allow(dead_code)]
    source: Option<String>,
    #[allow(dead_code)]
    layout: Option<String>,
    kernels: Vec<KernelEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KernelEntry {
    #[allow(dead_code)]
    index: Option<usize>,
    height: usize,
    width: usize,
    #[allow(dead_code)]
    sum: Option<f64>,
    values: Vec<Vec<f64>>,
}

/// Loads every kernel of a kernel JSON file
/// (`{"kernels": [{"index", "height", "width", "sum", "values": [[row], …]}]}`).
pub fn load_kernel_set(path: &Path) -> Result<Vec<Kernel>> {
    let text = std::fs::read_to_string(path).map_err(|e| PnpError::file(path, e))?;
    let file: KernelFile = serde_json::from_str(&text)
        .map_err(|e| PnpError::file(path, format!("bad kernel JSON: {e}")))?;
    file.kernels
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            if e.values.len() != e.height || e.values.iter().any(|r| r.len() != e.width) {
                return Err(PnpError::file(
                    path,
                    format!("kernel {i}: values are not {}×{}", e.height, e.width),
                ));
            }
            Kernel::new(e.height, e.width, e.values.concat())
                .map_err(|err| PnpError::file(path, format!("kernel {i}: {err}")))
        })
        .collect()
}

/// Loads one user kernel, normalised to sum 1: a kernel JSON holding exactly one kernel, a 2-D
/// `.npy` array, or a gray PNG.
pub fn load_kernel_file(path: &Path) -> Result<Kernel> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "json" => {
            let mut set = load_kernel_set(path)?;
            if set.len() != 1 {
                return Err(PnpError::file(
                    path,
                    format!(
                        "holds {} kernels; a user kernel file must hold one",
                        set.len()
                    ),
                ));
            }
            Ok(set.remove(0))
        }
        "npy" => {
            let (h, w, v) = npy::read_2d(path).map_err(|e| PnpError::file(path, e))?;
            Kernel::new(h, w, v).map_err(|e| PnpError::file(path, e))
        }
        "png" => {
            // The header's size first: a kernel image is never large, decoding one may be.
            let (w, h) = gradstep_data::image_io::dimensions(path)?;
            check_size(h, w).map_err(|e| PnpError::file(path, e))?;
            let (v, h, w) = gradstep_data::image_io::decode(path, 1)?;
            Kernel::new(h, w, v.into_iter().map(f64::from).collect())
                .map_err(|e| PnpError::file(path, e))
        }
        _ => Err(PnpError::file(
            path,
            "unknown kernel format (expected .json, .npy or .png)",
        )),
    }
}

/// Which kernel to use, as written on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSpec {
    /// `levin:i`: motion kernel `i` (0–7) of `levin09.json`.
    Levin(usize),
    /// `uniform`: the 9×9 uniform kernel.
    Uniform,
    /// `gaussian`: the 25×25 Gaussian of std 1.6.
    Gaussian,
    /// `k12:i`: kernel `i` (0–11) of `kernels12.json` (super-resolution).
    Kernels12(usize),
    /// `file:PATH`: a user kernel.
    File(PathBuf),
}

impl FromStr for KernelSpec {
    type Err = PnpError;
    fn from_str(s: &str) -> Result<Self> {
        let index = |v: &str| {
            v.parse::<usize>()
                .map_err(|_| PnpError::Invalid(format!("bad kernel index in `{s}`")))
        };
        match s {
            "uniform" => Ok(KernelSpec::Uniform),
            "gaussian" => Ok(KernelSpec::Gaussian),
            _ => {
                if let Some(v) = s.strip_prefix("levin:") {
                    Ok(KernelSpec::Levin(index(v)?))
                } else if let Some(v) = s.strip_prefix("k12:") {
                    Ok(KernelSpec::Kernels12(index(v)?))
                } else if let Some(v) = s.strip_prefix("file:") {
                    Ok(KernelSpec::File(PathBuf::from(v)))
                } else {
                    Err(PnpError::Invalid(format!(
                        "unknown kernel `{s}` (expected levin:I, uniform, gaussian, k12:I or file:PATH)"
                    )))
                }
            }
        }
    }
}

impl std::fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelSpec::Levin(i) => write!(f, "levin:{i}"),
            KernelSpec::Uniform => write!(f, "uniform"),
            KernelSpec::Gaussian => write!(f, "gaussian"),
            KernelSpec::Kernels12(i) => write!(f, "k12:{i}"),
            KernelSpec::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

impl KernelSpec {
    /// Whether it is one of the deblurring table's generated kernels (uniform, Gaussian),
    /// which have reference defaults of their own.
    pub fn is_generated(&self) -> bool {
        matches!(self, KernelSpec::Uniform | KernelSpec::Gaussian)
    }

    /// Expands a comma-separated list where `levin:a-b` and `k12:a-b` denote ranges.
    pub fn parse_list(s: &str) -> Result<Vec<KernelSpec>> {
        let mut out = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let range = ["levin:", "k12:"].iter().find_map(|p| {
                let rest = item.strip_prefix(p)?;
                let (a, b) = rest.split_once('-')?;
                Some((*p, a.parse::<usize>().ok()?, b.parse::<usize>().ok()?))
            });
            match range {
                Some((p, a, b)) if a <= b => {
                    for i in a..=b {
                        out.push(format!("{p}{i}").parse()?);
                    }
                }
                Some(_) => return Err(PnpError::Invalid(format!("empty kernel range `{item}`"))),
                None => out.push(item.parse()?),
            }
        }
        Ok(out)
    }

    /// The kernel itself; the benchmark sets are read from `kernel_dir`
    /// (`levin09.json`, `kernels12.json`).
    pub fn load(&self, kernel_dir: &Path) -> Result<Kernel> {
        let pick = |file: &str, i: usize| -> Result<Kernel> {
            let path = kernel_dir.join(file);
            if !path.exists() {
                return Err(PnpError::file(
                    &path,
                    "not found: the benchmark kernels are read from the shared data's kernels/ folder (`--kernel-dir` or `$GRADSTEP_SHARED` on the command line, `settings.kernel_dir` in a sweep)",
                ));
            }
            let mut set = load_kernel_set(&path)?;
            if i >= set.len() {
                return Err(PnpError::file(
                    &path,
                    format!("has {} kernels, index {i} requested", set.len()),
                ));
            }
            Ok(set.swap_remove(i))
        };
        match self {
            KernelSpec::Levin(i) => pick("levin09.json", *i),
            KernelSpec::Kernels12(i) => pick("kernels12.json", *i),
            KernelSpec::Uniform => Kernel::uniform(9),
            KernelSpec::Gaussian => Kernel::gaussian(25, 1.6),
            KernelSpec::File(p) => load_kernel_file(p),
        }
    }
}
