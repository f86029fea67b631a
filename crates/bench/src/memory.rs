//! `gradstep bench memory`: how far one device goes, and what tiles cost in accuracy.
//!
//! 1. the largest GS training batch of 128² colour patches (fp32, and bf16 autocast on a GPU);
//! 2. the largest square image whose `∇g_σ` fits at once, gray and colour;
//! 3. tiles against the whole image at the largest colour size (PSNR of `D_σ` on a noisy
//!    natural image, mirrored out to that size), then an image 1.5× larger than fits, through
//!    [`Tiling::Auto`].
//!
//! Sizes are found by doubling until libtorch reports out-of-memory, then bisection; the time
//! and peak memory (the CUDA caching allocator's count) reported for a size are those of its
//! probe. They are not re-run: a size found at the edge of memory can fail a second run
//! (the first GPU run of this benchmark lost its bf16 search that way).
//! cuDNN's benchmark mode is off here: autotuning every probed shape took minutes at large
//! image sizes, and the workspace it picks would move the limits from run to run.
//! On the CPU the searches stop at small caps instead (nothing is allowed to exhaust RAM).
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use gradstep_data::noise::{add_noise, seeded};
use gradstep_data::{load_image, metrics};
use gradstep_model::tiling::{floor_to_tile_multiple, too_large_reason};
use gradstep_model::{
    cuda, Activation, Checkpoint, Drunet, DrunetConfig, GradientStepDenoiser, Graph, MemoryFormat,
    Precision, Sigma, Tiling,
};
use gradstep_train::{Adam, AdamConfig};
use tch::{Device, Kind, Tensor};

use crate::error::{BenchError, Result};
use crate::setup::{announce_device, gpu_names};
use crate::timing::{gib, sync};
use crate::train_step::{gs_step, SIGMA};

/// Options of `gradstep bench memory`.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct MemoryOptions {
    /// Largest training batch tried (default: 4096 on a GPU, 4 on the CPU).
    #[cfg_attr(feature = "clap", arg(long))]
    pub max_batch: Option<i64>,
    /// Largest image side tried (default: 32768 on a GPU, 96 on the CPU).
    #[cfg_attr(feature = "clap", arg(long))]
    pub max_side: Option<i64>,
    /// Tiny widths (8, 16, 32, 64) instead of the full model: for a quick CPU run.
    #[cfg_attr(feature = "clap", arg(long))]
    pub tiny: bool,
    /// Colour GS checkpoint for the tiles-vs-whole check (default: random weights, whose
    /// receptive field is less local than a trained denoiser's: a pessimistic check).
    #[cfg_attr(feature = "clap", arg(long))]
    pub checkpoint: Option<PathBuf>,
    /// Natural image for that check (default: the first CBSD68 image under
    /// $GRADSTEP_SHARED or ../shared, else datasets/samples/test/coffee.png).
    #[cfg_attr(feature = "clap", arg(long))]
    pub image: Option<PathBuf>,
    /// Overlap of the tiles, in pixels.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = gradstep_model::tiling::DEFAULT_OVERLAP))]
    pub overlap: i64,
}

/// The outcome of a size search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Largest {
    /// The largest size that fitted (`None`: not even the smallest).
    pub value: Option<i64>,
    /// Whether the search stopped at its cap without running out of memory.
    pub capped: bool,
    /// Sizes tried.
    pub probes: usize,
}

/// The largest multiple of `step` up to `cap` for which `fits` holds, assuming it is
/// monotone: doubling from `start`, then bisection between the last fit and the first failure.
pub fn largest_fitting(
    start: i64,
    step: i64,
    cap: i64,
    mut fits: impl FnMut(i64) -> Result<bool>,
) -> Result<Largest> {
    let round = |v: i64| (v / step) * step;
    let mut lo = 0;
    let mut hi = None;
    let mut probes = 0;
    let mut n = round(start.min(cap)).max(step);
    loop {
        probes += 1;
        if !fits(n)? {
            hi = Some(n);
            break;
        }
        lo = n;
        let next = round((n * 2).min(cap));
        if next <= n {
            break;
        }
        n = next;
    }
    while let Some(h) = hi {
        let mid = round((lo + h) / 2);
        if mid <= lo || mid >= h {
            break;
        }
        probes += 1;
        if fits(mid)? {
            lo = mid;
        } else {
            hi = Some(mid);
        }
    }
    Ok(Largest {
        value: (lo > 0).then_some(lo),
        capped: hi.is_none(),
        probes,
    })
}

/// Milliseconds and peak bytes of one run.
type Cost = (f64, Option<u64>);

/// `Ok(Ok(cost))` if `run` succeeds, `Ok(Err(limit))` if the size was too large (see
/// [`too_large_reason`]), the error otherwise.
fn fits(
    device: Device,
    run: impl FnOnce() -> Result<()>,
) -> Result<std::result::Result<Cost, &'static str>> {
    match measure(device, run) {
        Ok(cost) => Ok(Ok(cost)),
        Err(e) => {
            sync(device);
            match too_large_reason(&e.chain_text()) {
                Some(limit) => {
                    cuda::empty_cache();
                    Ok(Err(limit))
                }
                None => Err(e),
            }
        }
    }
}

/// A size search's outcome: the limit, the cost of every probe that fitted, and what stopped
/// the smallest size that did not.
struct Searched {
    found: Largest,
    costs: BTreeMap<i64, Cost>,
    stopped_by: Option<&'static str>,
}

/// [`largest_fitting`] over [`fits`].
fn search(
    device: Device,
    (start, step, cap): (i64, i64, i64),
    mut run: impl FnMut(i64) -> Result<()>,
) -> Result<Searched> {
    let mut costs = BTreeMap::new();
    let mut failures = BTreeMap::new();
    let found = largest_fitting(start, step, cap, |v| match fits(device, || run(v))? {
        Ok(c) => {
            costs.insert(v, c);
            Ok(true)
        }
        Err(limit) => {
            failures.insert(v, limit);
            Ok(false)
        }
    })?;
    Ok(Searched {
        found,
        costs,
        stopped_by: failures.values().next().copied(),
    })
}

/// The [`Cost`] of one run of `run`, from an emptied cache and a reset peak.
fn measure(device: Device, run: impl FnOnce() -> Result<()>) -> Result<Cost> {
    cuda::empty_cache();
    cuda::reset_peak(device);
    sync(device);
    let t0 = Instant::now();
    run()?;
    sync(device);
    Ok((
        t0.elapsed().as_secs_f64() * 1e3,
        cuda::peak_allocated(device),
    ))
}

fn describe(l: &Largest, unit: &str, stopped_by: Option<&str>) -> String {
    let next = stopped_by.map_or(String::new(), |why| format!(" (larger: {why})"));
    match (l.value, l.capped) {
        (Some(v), true) => format!("≥ {v}{unit} (the cap; no out-of-memory)"),
        (Some(v), false) => format!("{v}{unit}{next}"),
        (None, _) => format!("none fits{next}"),
    }
}

fn architecture(tiny: bool, channels: i64) -> DrunetConfig {
    DrunetConfig {
        channels,
        ..crate::setup::architecture(tiny, Activation::Elu)
    }
}

/// `∇g_σ` of one `side²` image, reduced on the device (so that the work really happens).
fn grad_once(den: &GradientStepDenoiser, channels: i64, side: i64) -> Result<()> {
    let device = den.network().device();
    let x = Tensor::f_rand([1, channels, side, side], (Kind::Float, device))?;
    den.grad(&x, &Sigma::Scalar(25.0 / 255.0), Graph::Inference)?
        .f_sum(Kind::Float)?
        .f_double_value(&[])?;
    Ok(())
}

/// `img` mirrored out (seamlessly) to `side × side`.
fn mirrored(img: &Tensor, side: i64) -> Result<Tensor> {
    let tile = Tensor::f_cat(&[img.shallow_clone(), img.f_flip([2])?], 2)?;
    let tile = Tensor::f_cat(&[tile.shallow_clone(), tile.f_flip([3])?], 3)?;
    let s = tile.size();
    let (ry, rx) = ((side + s[2] - 1) / s[2], (side + s[3] - 1) / s[3]);
    Ok(tile
        .f_repeat([1, 1, ry, rx])?
        .f_narrow(2, 0, side)?
        .f_narrow(3, 0, side)?
        .f_contiguous()?)
}

fn default_image() -> Option<PathBuf> {
    let shared = std::env::var_os("GRADSTEP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared"));
    gradstep_data::dataset::list_images(&shared.join("data/CBSD68"))
        .ok()
        .and_then(|files| files.into_iter().next())
        .or_else(|| Some(PathBuf::from("datasets/samples/test/coffee.png")).filter(|p| p.exists()))
}

/// Runs the benchmark on `device`, printing its rows.
pub fn run(a: &MemoryOptions, device: Device) -> Result<()> {
    announce_device(device, "; searches stop at small caps");
    let gpu = device.is_cuda();
    if gpu {
        tch::Cuda::cudnn_set_benchmark(false);
    }
    // The files of the tiles check (step 3) are read before the searches, which take minutes
    // on a GPU: a bad path or file fails at once. They wait on the CPU.
    let checkpoint = match &a.checkpoint {
        Some(p) => Some((Checkpoint::read(p)?, p.as_path())),
        None => None,
    };
    let source = a.image.clone().or_else(default_image);
    let natural = match &source {
        Some(p) => Some(load_image(p, 3, Device::Cpu)?),
        None => None,
    };
    let max_batch = a.max_batch.unwrap_or(if gpu { 4096 } else { 4 });
    let max_side = a.max_side.unwrap_or(if gpu { 32768 } else { 96 });
    let gpu_name = if let Device::Cuda(i) = device {
        gpu_names()
            .into_iter()
            .nth(i)
            .unwrap_or_else(|| "a CUDA device".into())
    } else {
        "the CPU".into()
    };
    // The layout every command uses by default on this device (channels-last on CUDA).
    let layout = MemoryFormat::default_for(device);
    let fresh = |channels: i64| -> Result<GradientStepDenoiser> {
        tch::manual_seed(0);
        let mut net = Drunet::new(&architecture(a.tiny, channels), device)?;
        net.set_memory_format(layout)?;
        Ok(GradientStepDenoiser::new(net))
    };
    println!(
        "memory limits of the {} model on {gpu_name} ({device:?}, {layout:?} layout)",
        if a.tiny { "tiny" } else { "full" }
    );
    let sigma = Sigma::Scalar(SIGMA);
    let mut summary = Vec::new();

    // 1. Training batch.
    let den = fresh(3)?;
    let precisions: &[(&str, bool)] = if gpu && cuda::autocast_available() {
        &[("fp32", false), ("bf16", true)]
    } else {
        &[("fp32", false)]
    };
    for &(label, bf16) in precisions {
        let params = den.network().var_store().variables().into_iter().collect();
        let mut adam = Adam::new(params, AdamConfig::default())?;
        let mut step = |b: i64| -> Result<()> {
            let xb = Tensor::f_rand([b, 3, 128, 128], (Kind::Float, device))?;
            let xi = xb.f_randn_like()?;
            let precision = if bf16 {
                Precision::Bf16
            } else {
                Precision::Fp32
            };
            gs_step(&den, &mut adam, &xb, &xi, SIGMA, precision)?;
            Ok(())
        };
        let Searched {
            found,
            costs,
            stopped_by,
        } = search(
            device,
            (16.min(max_batch), 8.min(max_batch), max_batch),
            &mut step,
        )?;
        let extra = match found.value.and_then(|b| Some((b, costs.get(&b)?))) {
            Some((b, &(ms, peak))) => {
                let mut note = format!("; step {ms:.1} ms, peak {}", gib(peak));
                if let (true, Some(&(ms16, peak16))) = (b > 16, costs.get(&16)) {
                    note += &format!(" (batch 16: {ms16:.1} ms, peak {})", gib(peak16));
                }
                note
            }
            None => String::new(),
        };
        println!(
            "largest GS training batch of 128² colour patches ({label}): {}{extra}  [{} probes]",
            describe(&found, "", stopped_by),
            found.probes
        );
        summary.push((format!("training batch, 128², {label}"), found, stopped_by));
    }
    drop(den);

    // 2. Largest single image.
    let mut colour_side = None;
    for channels in [1, 3] {
        let den = fresh(channels)?;
        let start = 512.min(max_side);
        let Searched {
            found,
            costs,
            stopped_by,
        } = search(device, (start, 64.min(max_side), max_side), |s| {
            grad_once(&den, channels, s)
        })?;
        let name = if channels == 1 { "gray" } else { "colour" };
        let extra = match found.value.and_then(|s| Some((s, costs.get(&s)?))) {
            Some((s, &(ms, peak))) => {
                let per_pixel = peak.map_or(String::new(), |p| {
                    format!(" ({:.0} bytes per pixel)", p as f64 / (s * s) as f64)
                });
                format!("; ∇g {ms:.1} ms, peak {}{per_pixel}", gib(peak))
            }
            None => String::new(),
        };
        println!(
            "largest {name} image for ∇g at once: {}{extra}  [{} probes]",
            describe(&found, "²", stopped_by),
            found.probes
        );
        if channels == 3 {
            colour_side = found.value.map(|v| (v, found.capped));
        }
        summary.push((format!("∇g image side, {name}"), found, stopped_by));
    }

    // 3. Tiles against the whole image, then beyond memory.
    let Some((limit, capped)) = colour_side else {
        println!("bench-memory: no colour image fitted; tile check skipped");
        return Ok(());
    };
    let mut den = match &checkpoint {
        Some((ckpt, p)) => {
            let mut den = ckpt.denoiser(device, Kind::Float, p)?;
            den.network_mut().set_memory_format(layout)?;
            den
        }
        None => fresh(3)?,
    };
    let natural = match natural {
        Some(img) => img.f_to_device(device)?,
        None => Tensor::f_rand([1, 3, 64, 64], (Kind::Float, device))?,
    };
    let weights = match &a.checkpoint {
        Some(p) => p.display().to_string(),
        None => "random weights".into(),
    };
    let image = match &source {
        Some(p) => p.display().to_string(),
        None => "a random image".into(),
    };
    let level = 25.0 / 255.0;
    let noisy_of =
        |clean: &Tensor| -> Result<Tensor> { Ok(add_noise(clean, &[level], &mut seeded(5, 0))?) };
    // A margin below the limit: the images themselves and the comparison's second result
    // also take memory.
    let side = if capped {
        limit
    } else {
        floor_to_tile_multiple(limit * 9 / 10)
    };
    let clean = mirrored(&natural, side)?;
    let noisy = noisy_of(&clean)?;
    let psnr = |d: &Tensor| -> Result<f64> { Ok(metrics::psnr(&d.f_clamp(0.0, 1.0)?, &clean)?[0]) };
    let tile = floor_to_tile_multiple(side / 2);
    let whole = den.denoise(&noisy, &sigma, Graph::Inference)?;
    den = den.with_tiling(Tiling::Fixed {
        tile,
        overlap: a.overlap,
    })?;
    let mut tiled = None;
    let (tiled_ms, tiled_peak) = measure(device, || {
        tiled = Some(den.denoise(&noisy, &sigma, Graph::Inference)?);
        Ok(())
    })?;
    let tiled = tiled.ok_or_else(|| BenchError::Failed("the tiled run gave no result".into()))?;
    let (pw, pt) = (psnr(&whole)?, psnr(&tiled)?);
    let max_diff = whole.f_sub(&tiled)?.f_abs()?.f_max()?.f_double_value(&[])?;
    drop((whole, tiled));
    println!(
        "tiles vs whole at {side}² ({image}, σ = 25, {weights}): whole {pw:.4} dB, tiles of {tile} + {} overlap {pt:.4} dB (|ΔPSNR| {:.4} dB, max |ΔD| {max_diff:.2e}); tiled {tiled_ms:.1} ms, peak {}",
        a.overlap,
        (pw - pt).abs(),
        gib(tiled_peak)
    );
    if capped {
        println!("beyond memory: skipped (the whole-image search stopped at its cap)");
    } else {
        let big = floor_to_tile_multiple(limit * 3 / 2);
        den = den.with_tiling(Tiling::Auto { overlap: a.overlap })?;
        let clean_big = mirrored(&natural, big)?;
        let noisy_big = noisy_of(&clean_big)?;
        drop(clean_big);
        let mut out = None;
        let (ms, peak) = measure(device, || {
            out = Some(den.denoise(&noisy_big, &sigma, Graph::Inference)?);
            Ok(())
        })?;
        println!(
            "beyond memory: a {big}² colour image through tiles ({}): {ms:.1} ms, peak {}",
            den.auto_tile()
                .map_or("whole image fitted".into(), |t| format!("auto tile {t}")),
            gib(peak)
        );
    }
    println!("| limit | value |");
    println!("|---|---|");
    for (name, l, why) in &summary {
        println!("| {name} | {} |", describe(l, "", *why));
    }
    println!("bench-memory tiles-vs-whole-dpsnr {:.5}", (pw - pt).abs());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_finds_the_boundary_with_few_probes() {
        let mut tried = Vec::new();
        let l = largest_fitting(16, 8, 4096, |b| {
            tried.push(b);
            Ok(b <= 200)
        })
        .unwrap();
        assert_eq!(l.value, Some(200));
        assert!(!l.capped);
        assert_eq!(l.probes, tried.len());
        assert!(l.probes <= 10, "{tried:?}");
    }

    #[test]
    fn search_reports_the_cap_and_the_nothing_fits_case() {
        let l = largest_fitting(16, 8, 100, |_| Ok(true)).unwrap();
        assert_eq!((l.value, l.capped), (Some(96), true));
        let l = largest_fitting(16, 8, 100, |_| Ok(false)).unwrap();
        assert_eq!(l.value, None);
        let l = largest_fitting(512, 64, 32768, |s| Ok(s <= 5000)).unwrap();
        assert_eq!(l.value, Some(4992));
        let e = largest_fitting(16, 8, 100, |_| Err(BenchError::Failed("bad shape".into())));
        assert!(e.is_err());
    }

    #[test]
    fn search_keeps_the_cost_of_each_probe_that_fitted_and_passes_other_errors() {
        let Searched {
            found,
            costs,
            stopped_by,
        } = search(Device::Cpu, (16, 8, 4096), |b| {
            if b > 120 {
                return Err(BenchError::Failed(
                    "Expected canUse32BitIndexMath(input) to be true, but got false".into(),
                ));
            }
            if b > 100 {
                return Err(BenchError::Failed(format!(
                    "CUDA out of memory. Tried to allocate {b} GiB"
                )));
            }
            Ok(())
        })
        .unwrap();
        assert_eq!((found.value, found.capped), (Some(96), false));
        // The reported size has its own probe's cost: nothing is re-run at the edge.
        assert!(
            costs.contains_key(&96) && costs.contains_key(&16),
            "{costs:?}"
        );
        assert!(costs.keys().all(|&b| b <= 100), "{costs:?}");
        assert!(costs.values().all(|&(ms, _)| ms >= 0.0));
        // What stopped the next size up is memory; far above, the index limit.
        assert_eq!(stopped_by, Some("out of memory"));
        let indexing = search(Device::Cpu, (16, 8, 4096), |b| {
            if b > 100 {
                return Err(BenchError::Failed(
                    "Expected canUse32BitIndexMath(input) to be true, but got false".into(),
                ));
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(indexing.found.value, Some(96));
        assert_eq!(indexing.stopped_by, Some("32-bit indexing"));
        assert!(describe(&indexing.found, "²", indexing.stopped_by).contains("32-bit indexing"));
        let e = search(Device::Cpu, (16, 8, 64), |_| {
            Err(BenchError::Failed("bad shape".into()))
        });
        assert!(e.is_err());
    }

    #[test]
    fn mirrored_images_have_the_size_asked_and_no_seams() {
        let img = Tensor::arange(12, (Kind::Float, Device::Cpu)).view([1, 1, 3, 4]);
        let m = mirrored(&img, 10).unwrap();
        assert_eq!(m.size(), vec![1, 1, 10, 10]);
        // Row 3 mirrors row 2, column 4 mirrors column 3.
        let at = |y, x| m.double_value(&[0, 0, y, x]);
        assert_eq!(at(3, 0), at(2, 0));
        assert_eq!(at(0, 4), at(0, 3));
    }
}
