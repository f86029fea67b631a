//! Tiled evaluation of `∇g_σ` for images that do not fit in GPU memory at once.
//!
//! `∇g_σ(x) = r − J_N(x)ᵀ r` with `r = x − N_σ(x)` is not local: every output pixel depends
//! on the input through DRUNet's receptive field, twice (once through `N`, once through
//! `J_Nᵀ`). It is, however, nearly local in practice, so each tile's *core* is computed on a
//! *window* that extends it by `overlap` pixels on every side (clipped at the image border)
//! and only the core is kept, as DPIR's `test_split` does for `N` alone.
//!
//! Tile cores and overlaps are multiples of 8, so every window starts on the 8-pixel grid of
//! the whole image: the stride-2 levels of the network see the same pixel phases as in the
//! whole-image pass, and the only difference is the truncated context at window edges.
//! `g_σ = ½‖r‖²` is summed over the cores, so `(g_σ, ∇g_σ)` stay consistent for GS-PnP's
//! objective and backtracking.
//!
//! [`Tiling::Auto`] runs the whole image and falls back to tiles only when libtorch reports
//! that it is too large (out of memory, or a kernel's 32-bit index limit: see
//! [`too_large_reason`]), halving the tile until it fits and remembering the size
//! that worked (so a PnP run pays for the search once, not at every iteration).
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// Tile cores and overlaps are multiples of this (the network's coarsest stride).
pub const TILE_MULTIPLE: i64 = 8;

/// `v` rounded down to a multiple of [`TILE_MULTIPLE`], at least one multiple.
pub fn floor_to_tile_multiple(v: i64) -> i64 {
    (v / TILE_MULTIPLE).max(1) * TILE_MULTIPLE
}

/// Default overlap: 32 pixels keeps the tiled `D_σ` within 0.01 dB PSNR of the whole-image
/// one on natural images (measured in `crates/model/tests/tiling.rs` and `docs/performance.md`).
pub const DEFAULT_OVERLAP: i64 = 32;

/// Smallest core [`Tiling::Auto`] tries before giving up.
pub const MIN_AUTO_TILE: i64 = 64;

/// How inference-time `∇g_σ` covers an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Tiling {
    /// The whole image in one pass (the default; exact).
    #[default]
    Whole,
    /// Square cores of `tile` pixels, each computed on a window extended by `overlap`.
    Fixed {
        /// Core side in pixels (multiple of 8).
        tile: i64,
        /// Context added on every side in pixels (multiple of 8).
        overlap: i64,
    },
    /// The whole image, then tiles halved from the image size on out-of-memory errors.
    Auto {
        /// Context added on every side in pixels (multiple of 8).
        overlap: i64,
    },
}

impl Tiling {
    /// Checks the sizes.
    pub fn validate(&self) -> Result<()> {
        let check = |name: &str, v: i64, min: i64| {
            if v < min || v % TILE_MULTIPLE != 0 {
                Err(ModelError::Invalid(format!(
                    "tiling {name} must be a multiple of {TILE_MULTIPLE} and at least {min}, got {v}"
                )))
            } else {
                Ok(())
            }
        };
        match *self {
            Tiling::Whole => Ok(()),
            Tiling::Fixed { tile, overlap } => {
                check("tile", tile, TILE_MULTIPLE)?;
                check("overlap", overlap, 0)
            }
            Tiling::Auto { overlap } => check("overlap", overlap, 0),
        }
    }
}

impl fmt::Display for Tiling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tiling::Whole => write!(f, "whole"),
            Tiling::Fixed { tile, overlap } => write!(f, "{tile}:{overlap}"),
            Tiling::Auto { overlap } => write!(f, "auto:{overlap}"),
        }
    }
}

/// `whole`, `auto`, `auto:OVERLAP`, `TILE` or `TILE:OVERLAP` (pixels; the overlap defaults
/// to [`DEFAULT_OVERLAP`]).
impl FromStr for Tiling {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            ModelError::Invalid(format!(
                "tiling `{s}`: expected whole, auto, auto:OVERLAP, TILE or TILE:OVERLAP"
            ))
        };
        let int = |v: &str| v.trim().parse::<i64>().map_err(|_| bad());
        let (head, overlap) = match s.split_once(':') {
            Some((h, o)) => (h.trim(), int(o)?),
            None => (s.trim(), DEFAULT_OVERLAP),
        };
        let tiling = match head {
            "whole" if !s.contains(':') => Tiling::Whole,
            "auto" => Tiling::Auto { overlap },
            _ => Tiling::Fixed {
                tile: int(head)?,
                overlap,
            },
        };
        tiling.validate()?;
        Ok(tiling)
    }
}

/// One tile along one axis: the core `[start, start + len)` is kept from the window
/// `[window_start, window_start + window_len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: i64,
    pub len: i64,
    pub window_start: i64,
    pub window_len: i64,
}

/// The tiles covering `[0, n)` with cores of `tile` and `overlap` of context on each side.
pub(crate) fn spans(n: i64, tile: i64, overlap: i64) -> Vec<Span> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let len = tile.min(n - start);
        let window_start = (start - overlap).max(0);
        let window_end = (start + len + overlap).min(n);
        out.push(Span {
            start,
            len,
            window_start,
            window_len: window_end - window_start,
        });
        start += tile;
    }
    out
}

/// Why libtorch refused an input as too large for the device at once, if it did: "out of
/// memory", or "32-bit indexing" (cuDNN's convolutions of a single image refuse tensors of
/// 2³¹ elements or more, e.g. 64 channels of a 5,800² image, which on a large card comes
/// before memory runs out). Either way, smaller tiles run.
pub fn too_large_reason(message: &str) -> Option<&'static str> {
    // CUDA's caching allocator says "CUDA out of memory"; the CPU allocator
    // "DefaultCPUAllocator: can't allocate memory".
    if message.contains("out of memory") || message.contains("can't allocate memory") {
        Some("out of memory")
    } else if ["32BitIndexMath", "32-bit index", "INT_MAX"]
        .iter()
        .any(|n| message.contains(n))
    {
        Some("32-bit indexing")
    } else {
        None
    }
}

/// Whether a libtorch error refused the input as too large ([`too_large_reason`]).
pub fn is_too_large(e: &ModelError) -> bool {
    match e {
        ModelError::Torch(t) => too_large_reason(&t.to_string()).is_some(),
        _ => false,
    }
}

/// The first core side, halving from `start` (rounded down to a multiple of 8) down to
/// `min`, for which `run` is not refused as too large. Other errors are returned at once.
pub(crate) fn halve_until_fits<T>(
    start: i64,
    min: i64,
    mut run: impl FnMut(i64) -> Result<T>,
) -> Result<(i64, T)> {
    let mut tile = floor_to_tile_multiple(start);
    loop {
        match run(tile) {
            Ok(v) => return Ok((tile, v)),
            Err(e) if is_too_large(&e) && tile / 2 >= min => {
                tile = floor_to_tile_multiple(tile / 2);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_each_pixel_once_and_windows_stay_inside() {
        for &(n, tile, overlap) in &[(100, 32, 16), (64, 64, 8), (7, 64, 32), (257, 48, 0)] {
            let s = spans(n, tile, overlap);
            let mut next = 0;
            for sp in &s {
                assert_eq!(sp.start, next);
                assert!(sp.window_start <= sp.start && sp.window_start >= 0);
                assert!(sp.window_start + sp.window_len >= sp.start + sp.len);
                assert!(sp.window_start + sp.window_len <= n);
                assert_eq!(sp.window_start % TILE_MULTIPLE, 0);
                next = sp.start + sp.len;
            }
            assert_eq!(next, n);
        }
        let s = spans(100, 32, 16);
        assert_eq!(s.len(), 4);
        assert_eq!((s[1].window_start, s[1].window_len), (16, 64));
        assert_eq!((s[3].start, s[3].len, s[3].window_len), (96, 4, 20));
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!("whole".parse::<Tiling>().unwrap(), Tiling::Whole);
        assert_eq!(
            "auto".parse::<Tiling>().unwrap(),
            Tiling::Auto {
                overlap: DEFAULT_OVERLAP
            }
        );
        assert_eq!(
            "512:64".parse::<Tiling>().unwrap(),
            Tiling::Fixed {
                tile: 512,
                overlap: 64
            }
        );
        let t = "auto:16".parse::<Tiling>().unwrap();
        assert_eq!(t.to_string().parse::<Tiling>().unwrap(), t);
        for bad in ["", "whole:8", "500", "512:7", "abc", "0", "-8"] {
            assert!(bad.parse::<Tiling>().is_err(), "{bad}");
        }
        let json: Tiling = serde_json::from_str(r#"{"fixed":{"tile":256,"overlap":32}}"#).unwrap();
        assert_eq!(
            json,
            Tiling::Fixed {
                tile: 256,
                overlap: 32
            }
        );
    }

    fn oom() -> ModelError {
        ModelError::Torch(tch::TchError::Torch(
            "CUDA out of memory. Tried to allocate 2.00 GiB".into(),
        ))
    }

    #[test]
    fn halving_stops_at_the_first_size_that_fits() {
        let mut tried = Vec::new();
        let (tile, v) = halve_until_fits(1000, 64, |t| {
            tried.push(t);
            if t > 200 {
                Err(oom())
            } else {
                Ok(t * 2)
            }
        })
        .unwrap();
        assert_eq!((tile, v), (120, 240));
        assert_eq!(tried, vec![1000, 496, 248, 120]);
    }

    #[test]
    fn the_index_limit_counts_as_too_large_like_out_of_memory() {
        let index = "Expected canUse32BitIndexMath(input) && canUse32BitIndexMath(output) to be true, but got false.";
        assert_eq!(too_large_reason(index), Some("32-bit indexing"));
        assert_eq!(
            too_large_reason("CUDA out of memory. Tried to allocate 2.12 GiB"),
            Some("out of memory")
        );
        assert_eq!(too_large_reason("Expected 4-dimensional input"), None);
        let mut tried = Vec::new();
        let (tile, ()) = halve_until_fits(1024, 64, |t| {
            tried.push(t);
            if t > 300 {
                Err(ModelError::Torch(tch::TchError::Torch(index.into())))
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!((tile, tried), (256, vec![1024, 512, 256]));
    }

    #[test]
    fn halving_gives_up_below_the_minimum_and_passes_other_errors() {
        let r = halve_until_fits(256, 64, |_| Err::<(), _>(oom()));
        assert!(r.is_err_and(|e| matches!(&e, ModelError::Torch(t)
            if too_large_reason(&t.to_string()) == Some("out of memory"))));
        let mut calls = 0;
        let r = halve_until_fits(256, 64, |_| {
            calls += 1;
            Err::<(), _>(ModelError::Invalid("bad shape".into()))
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
