//! One training patch: where it is cut, how it is transformed, and the cutting itself.
//!
//! A patch of side `P` is the crop `A = x[y..y+P, x..x+P]` of an image, mapped by one of the
//! 8 elements of the dihedral group D₄: `T = rot90ᵏ ∘ flipₕᶠ` (first an optional left–right
//! mirror, then `k` quarter turns counter-clockwise, as `numpy.rot90` / `torch.rot90` on the
//! (H, W) axes). In indices, with `B = f ? A[:, ::-1] : A`, the patch is `C = rot90ᵏ(B)`:
//! `k=0: C[r,c] = B[r,c]`, `k=1: B[c, P−1−r]`, `k=2: B[P−1−r, P−1−c]`, `k=3: B[P−1−c, r]`.
//!
//! Images smaller than the patch are **padded by reflection** (mirror without repeating the
//! edge, numpy's `reflect` mode, applied as often as needed), not skipped: small images
//! still contribute, and the padding keeps local image statistics.
//!
//! The cut is hand-written (one pass from 8-bit interleaved pixels to the planar patch)
//! because it is the sampler's inner loop: no crate does crop + dihedral map + reflection
//! padding + HWC→CHW in one pass without intermediate copies.
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A dihedral transform `rot90ᵏ ∘ flipₕᶠ` (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dihedral {
    /// Counter-clockwise quarter turns, 0–3.
    pub quarter_turns: u8,
    /// Left–right mirror, applied before the turns.
    pub mirror: bool,
}

impl Dihedral {
    /// The identity.
    pub const IDENTITY: Dihedral = Dihedral {
        quarter_turns: 0,
        mirror: false,
    };

    /// The transforms allowed by the two switches: both → all 8; flips only → identity,
    /// left–right, up–down (`rot90² ∘ flipₕ`) and both flips (`rot90²`); rotations only →
    /// the 4 quarter turns; neither → the identity.
    pub fn allowed(flips: bool, rotations: bool) -> Vec<Dihedral> {
        let d = |quarter_turns, mirror| Dihedral {
            quarter_turns,
            mirror,
        };
        match (flips, rotations) {
            (true, true) => (0..8).map(|t| d(t % 4, t >= 4)).collect(),
            (true, false) => vec![d(0, false), d(0, true), d(2, true), d(2, false)],
            (false, true) => (0..4).map(|k| d(k, false)).collect(),
            (false, false) => vec![Dihedral::IDENTITY],
        }
    }

    /// The crop index `(i, j)` shown at patch index `(r, c)`, for side `p`.
    fn source(self, r: usize, c: usize, p: usize) -> (usize, usize) {
        let (i, j) = match self.quarter_turns & 3 {
            0 => (r, c),
            1 => (c, p - 1 - r),
            2 => (p - 1 - r, p - 1 - c),
            _ => (p - 1 - c, r),
        };
        (i, if self.mirror { p - 1 - j } else { j })
    }
}

/// Where and how one patch is cut: image index, top-left corner, transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PatchSpec {
    /// Index of the image in the sampler's (sorted) image list.
    pub image: usize,
    /// Top row of the crop.
    pub y: usize,
    /// Left column of the crop.
    pub x: usize,
    /// The dihedral transform applied to the crop.
    pub transform: Dihedral,
}

/// SplitMix64 finaliser: a fixed, platform-independent mixing of 64-bit words, used to derive
/// the seed of each epoch and each patch from `(seed, epoch, slot)`.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A generator that depends only on the given words (never on threads or timing).
pub(crate) fn rng_for(words: &[u64]) -> ChaCha8Rng {
    let s = words.iter().fold(0u64, |acc, &w| mix(acc ^ mix(w)));
    ChaCha8Rng::seed_from_u64(s)
}

/// The corner and transform of a patch of side `p` on an `h × w` image, drawn from `rng`:
/// corners uniform over the valid positions (only 0 along a side shorter than `p`),
/// transform uniform over `allowed`.
pub(crate) fn draw(
    rng: &mut ChaCha8Rng,
    image: usize,
    (h, w): (usize, usize),
    p: usize,
    allowed: &[Dihedral],
) -> PatchSpec {
    let y = rng.gen_range(0..=h.saturating_sub(p));
    let x = rng.gen_range(0..=w.saturating_sub(p));
    let transform = *allowed.choose(rng).unwrap_or(&Dihedral::IDENTITY);
    PatchSpec {
        image,
        y,
        x,
        transform,
    }
}

/// Index `i` of an axis of length `n` reflected into `0..n` (numpy `reflect`, periodic).
pub(crate) fn reflect(i: usize, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = i % period;
    if m < n {
        m
    } else {
        period - m
    }
}

/// Cuts `spec` out of `pixels` (8-bit, interleaved `[h, w, ch]`) into `out`, planar
/// `[ch, p, p]` floats `v/255` on `[0, 1]` (`out.len() == ch·p·p`), reflecting at the borders
/// where the image is smaller than the patch. Converting here, on the sampler's threads,
/// leaves the consumer only a copy into a tensor.
pub(crate) fn cut(
    pixels: &[u8],
    (h, w, ch): (usize, usize, usize),
    spec: &PatchSpec,
    p: usize,
    out: &mut [f32],
) {
    debug_assert_eq!(out.len(), ch * p * p);
    let row_off: Vec<usize> = (0..p).map(|i| reflect(spec.y + i, h) * w * ch).collect();
    let col_off: Vec<usize> = (0..p).map(|j| reflect(spec.x + j, w) * ch).collect();
    let plane = p * p;
    let to_unit: [f32; 256] = std::array::from_fn(|v| v as f32 / 255.0);
    for r in 0..p {
        // along an output row the crop index moves by a constant step (the map is affine)
        let (i0, j0) = spec.transform.source(r, 0, p);
        let (i1, j1) = if p > 1 {
            spec.transform.source(r, 1, p)
        } else {
            (i0, j0)
        };
        let (di, dj) = (i1 as isize - i0 as isize, j1 as isize - j0 as isize);
        for c in 0..p {
            let i = (i0 as isize + di * c as isize) as usize;
            let j = (j0 as isize + dj * c as isize) as usize;
            let src = row_off[i] + col_off[j];
            let dst = r * p + c;
            for k in 0..ch {
                out[k * plane + dst] = to_unit[pixels[src + k] as usize];
            }
        }
    }
}
