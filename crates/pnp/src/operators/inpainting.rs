//! Inpainting: `A x = M ⊙ x` with a binary mask `M` (one per image, shared by the channels),
//! so `Aᵀ = A` and `prox_{τf}(v) = (τ M y + v) / (τ M + 1)`: kept pixels move towards `y`,
//! missing ones are left as they are (as `τ → ∞` this is the projection onto `{Mx = My}`).
use tch::{Device, Kind, Tensor};

use super::{cat, select0, tau_4d, LinearOperator};
use crate::error::{PnpError, Result};

/// A pixel mask.
#[derive(Debug)]
pub struct Inpainting {
    /// `M ∈ {0, 1}`, `[B or 1, 1, H, W]`.
    mask: Tensor,
}

impl Inpainting {
    /// A mask keeping each pixel with probability `keep`, drawn from `seed` on the host by a
    /// generator of its own ([`gradstep_data::observation_noise::random_mask`]): it does not
    /// depend on the device and is independent of the observation noise of the same seed.
    pub fn random(
        height: i64,
        width: i64,
        keep: f64,
        seed: i64,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        if !(0.0..=1.0).contains(&keep) {
            return Err(PnpError::Invalid(format!(
                "keep probability must be in [0, 1], got {keep}"
            )));
        }
        let mask = gradstep_data::observation_noise::random_mask(height, width, keep, seed)?
            .f_to_kind(kind)?
            .f_to_device(device)?;
        Ok(Inpainting { mask })
    }

    /// The same mask with the pixels of `hole` missing too: `M ← M ⊙ (1 − 1_hole)`, one
    /// rectangular block removed from every image of the batch (the large holes of the
    /// GS-PnP paper's Fig. 13). The block must lie inside the image.
    pub fn with_hole(self, hole: &Hole) -> Result<Self> {
        let s = self.mask.size();
        let (h, w) = (s[2], s[3]);
        if hole.x + hole.width > w || hole.y + hole.height > h {
            return Err(PnpError::Invalid(format!(
                "inpainting hole {hole} (x, y, width, height) reaches past the {h}×{w} image"
            )));
        }
        // A copy: the random mask may share its storage with another operator's.
        let mut mask = self.mask.f_zeros_like()?;
        mask.f_copy_(&self.mask)?;
        let _ = mask
            .f_narrow(2, hole.y, hole.height)?
            .f_narrow(3, hole.x, hole.width)?
            .f_fill_(0.0)?;
        Ok(Inpainting { mask })
    }

    /// A given mask `[B or 1, 1, H, W]` with values in `{0, 1}`.
    pub fn from_mask(mask: Tensor) -> Result<Self> {
        if mask.dim() != 4 || mask.size()[1] != 1 {
            return Err(PnpError::Invalid(format!(
                "mask must be [B, 1, H, W], got {:?}",
                mask.size()
            )));
        }
        Ok(Inpainting { mask })
    }

    /// The mask `M`.
    pub fn mask(&self) -> &Tensor {
        &self.mask
    }
}

/// A rectangular block of missing pixels: columns `x .. x + width`, rows `y .. y + height`
/// (pixels, from the upper left corner). Written and parsed as `X,Y,W,H`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hole {
    /// First missing column.
    pub x: i64,
    /// First missing row.
    pub y: i64,
    /// Number of missing columns (≥ 1).
    pub width: i64,
    /// Number of missing rows (≥ 1).
    pub height: i64,
}

impl std::fmt::Display for Hole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{},{},{}", self.x, self.y, self.width, self.height)
    }
}

impl std::str::FromStr for Hole {
    type Err = PnpError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            PnpError::Invalid(format!(
                "bad inpainting hole `{s}`: {why} (expected X,Y,W,H in pixels, e.g. 16,16,32,32)"
            ))
        };
        let v: Vec<i64> = s
            .split(',')
            .map(|p| p.trim().parse::<i64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad("not four integers"))?;
        let [x, y, width, height] = v[..] else {
            return Err(bad("not four integers"));
        };
        if x < 0 || y < 0 {
            return Err(bad("X and Y must be ≥ 0"));
        }
        if width < 1 || height < 1 {
            return Err(bad("W and H must be ≥ 1"));
        }
        Ok(Hole {
            x,
            y,
            width,
            height,
        })
    }
}

impl LinearOperator for Inpainting {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_mul(&self.mask)?)
    }

    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        Ok(y.f_mul(&self.mask)?)
    }

    fn prox_data(&self, v: &Tensor, y: &Tensor, tau: &Tensor) -> Result<Tensor> {
        let tm = self.mask.f_mul(&tau_4d(tau, v)?)?;
        Ok(tm.f_mul(y)?.f_add(v)?.f_div(&tm.f_add_scalar(1.0)?)?)
    }

    fn observation_shape(&self, image: &[i64]) -> Vec<i64> {
        image.to_vec()
    }

    fn select(&self, index: &Tensor) -> Result<Self> {
        Ok(Inpainting {
            mask: select0(&self.mask, index)?,
        })
    }

    fn concat(ops: &[&Self]) -> Result<Self> {
        Ok(Inpainting {
            mask: cat(ops.iter().map(|o| &o.mask).collect())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::testing::{adjointness_gap, prox_residual};

    #[test]
    fn adjointness() {
        let op = Inpainting::random(7, 9, 0.5, 1, Kind::Double, Device::Cpu).unwrap();
        let gap = adjointness_gap(&op, &[2, 3, 7, 9]);
        assert!(gap < 1e-12, "gap {gap}");
    }

    #[test]
    fn prox_optimality_and_projection() {
        let op = Inpainting::random(7, 9, 0.5, 1, Kind::Double, Device::Cpu).unwrap();
        let r = prox_residual(&op, &[2, 3, 7, 9], &[0.4, 2.0]);
        assert!(r < 1e-5, "residual {r}");
        // τ → ∞: the projection: kept pixels equal y, missing ones keep v.
        let v = Tensor::rand([1, 3, 7, 9], (Kind::Double, Device::Cpu));
        let y = Tensor::rand([1, 3, 7, 9], (Kind::Double, Device::Cpu));
        let z = op.prox_data(&v, &y, &Tensor::from_slice(&[1e12])).unwrap();
        let m = op.mask();
        let want: Tensor = m * &y + (1.0 - m) * &v;
        let err = (z - want).abs().max().double_value(&[]);
        assert!(err < 1e-5, "projection error {err}");
        let kept = m.mean(Kind::Double).double_value(&[]);
        assert!((0.2..0.8).contains(&kept), "kept fraction {kept}");
    }

    #[test]
    fn a_hole_removes_its_block_and_keeps_the_random_mask_elsewhere() {
        let random = Inpainting::random(12, 16, 0.5, 3, Kind::Double, Device::Cpu).unwrap();
        let before = random.mask().copy();
        let hole: Hole = "4,2,8,5".parse().unwrap();
        let holed = random.with_hole(&hole).unwrap();
        let m = holed.mask();
        // Inside the block (rows 2..7, columns 4..12) nothing is kept.
        let inside = m.narrow(2, 2, 5).narrow(3, 4, 8);
        assert_eq!(inside.abs().sum(Kind::Double).double_value(&[]), 0.0);
        // Outside it the random mask is untouched: M_hole = M_random ⊙ (1 − block).
        let block = Tensor::zeros([1, 1, 12, 16], (Kind::Double, Device::Cpu));
        let _ = block.narrow(2, 2, 5).narrow(3, 4, 8).fill_(1.0);
        let want: Tensor = &before * (1.0 - &block);
        let diff = (m - want).abs().max().double_value(&[]);
        assert_eq!(diff, 0.0);
        // The random mask kept some pixels inside the block, so the hole removed them.
        let had = before.narrow(2, 2, 5).narrow(3, 4, 8).sum(Kind::Double);
        assert!(had.double_value(&[]) > 0.0);
        // keep = 1: exactly the block is missing.
        let full = Inpainting::random(12, 16, 1.0, 3, Kind::Double, Device::Cpu)
            .unwrap()
            .with_hole(&hole)
            .unwrap();
        let missing: Tensor = 1.0 - full.mask();
        let missing = missing.sum(Kind::Double).double_value(&[]);
        assert_eq!(missing, 40.0);
    }

    #[test]
    fn a_hole_outside_the_image_or_malformed_is_refused() {
        let op = || Inpainting::random(12, 16, 0.5, 3, Kind::Double, Device::Cpu).unwrap();
        let e = op().with_hole(&"10,2,8,5".parse().unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "inpainting hole 10,2,8,5 (x, y, width, height) reaches past the 12×16 image"
        );
        assert!(op().with_hole(&"0,8,16,5".parse().unwrap()).is_err());
        assert!(op().with_hole(&"0,7,16,5".parse().unwrap()).is_ok());
        for bad in ["1,2,3", "1,2,3,4,5", "a,2,3,4", "-1,2,3,4", "1,2,0,4", ""] {
            let e = bad.parse::<Hole>().unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("bad inpainting hole `{bad}`")),
                "{e}"
            );
        }
        assert_eq!("1, 2,3,4".parse::<Hole>().unwrap().to_string(), "1,2,3,4");
    }
}
