//! The two names every command and configuration shares: the restoration [`Task`] and the PnP
//! [`Algorithm`]. `restore`, `eval`, sweep configs (`configs/sweeps/*.json`), the algorithm
//! defaults ([`crate::AlgorithmConfig::reference`]) and the degradations all use these; they
//! are written in kebab-case in JSON and on the command line (`deblur`, `prox-drsdiff`).
//!
//! With the `clap` feature they are also `clap::ValueEnum`s, so the CLI parses them without
//! a second list of names.
use serde::{Deserialize, Serialize};

use crate::error::{PnpError, Result};

/// A restoration task: which degradation `A` the observation `y = A x + ν n` went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Deblurring `y = k ∗ x + ν n` (circular convolution by a kernel `k`).
    Deblur,
    /// Super-resolution `y = (k ∗ x)↓s + ν n` (blur, then keeping every `s`-th pixel).
    Sr,
    /// Inpainting `y = M ⊙ x + M ⊙ ν n` with a binary mask `M` (1 = known pixel).
    Inpaint,
    /// Denoising `y = x + ν n`.
    Denoise,
}

impl Task {
    /// Every task, in the order of the command line's help.
    pub const ALL: [Task; 4] = [Task::Deblur, Task::Sr, Task::Inpaint, Task::Denoise];

    /// The name used in configs and on the command line (`deblur`, `sr`, `inpaint`, `denoise`).
    pub fn name(self) -> &'static str {
        match self {
            Task::Deblur => "deblur",
            Task::Sr => "sr",
            Task::Inpaint => "inpaint",
            Task::Denoise => "denoise",
        }
    }

    /// Whether the degradation blurs, so that a kernel is needed (deblurring, super-resolution).
    pub fn blurs(self) -> bool {
        matches!(self, Task::Deblur | Task::Sr)
    }
}

/// A PnP algorithm (the names of `gradstep restore --algorithm` and of sweep configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// GS-PnP: `x_{k+1} = prox_{τf}(x_k − τλ∇g_σ(x_k))` with backtracking.
    GsPgd,
    /// Prox-PnP-PGD: `x⁺ = D^α(x − λ∇f(x))`.
    ProxPgd,
    /// Prox-PnP-DRS: `y = D^α(x)`, `z = prox_{λf}(2y − x)`, `x⁺ = x + z − y`.
    ProxDrs,
    /// Prox-PnP-DRSdiff: `y = prox_{λf}(x)`, `z = D^α(2y − x)`, `x⁺ = x + z − y`.
    #[serde(rename = "prox-drsdiff")]
    #[cfg_attr(feature = "clap", value(name = "prox-drsdiff"))]
    ProxDrsDiff,
    /// PnP-HQS with a decreasing σ schedule (DPIR-style baseline).
    Hqs,
}

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::GsPgd,
        Algorithm::ProxPgd,
        Algorithm::ProxDrs,
        Algorithm::ProxDrsDiff,
        Algorithm::Hqs,
    ];

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::GsPgd => "gs-pgd",
            Algorithm::ProxPgd => "prox-pgd",
            Algorithm::ProxDrs => "prox-drs",
            Algorithm::ProxDrsDiff => "prox-drsdiff",
            Algorithm::Hqs => "hqs",
        }
    }

    /// Whether it is one of the Prox-PnP algorithms (relaxation `α`, a proximal denoiser).
    pub fn is_prox(self) -> bool {
        matches!(
            self,
            Algorithm::ProxPgd | Algorithm::ProxDrs | Algorithm::ProxDrsDiff
        )
    }
}

/// Parses one of `names` (the `name()` of `all`), or says which names exist.
fn parse_name<T: Copy>(what: &str, s: &str, all: &[T], name: fn(T) -> &'static str) -> Result<T> {
    all.iter().copied().find(|v| name(*v) == s).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|v| name(*v)).collect();
        PnpError::Invalid(format!(
            "unknown {what} `{s}` (expected {})",
            names.join(", ")
        ))
    })
}

impl std::str::FromStr for Task {
    type Err = PnpError;
    fn from_str(s: &str) -> Result<Self> {
        parse_name("task", s, &Task::ALL, Task::name)
    }
}

impl std::str::FromStr for Algorithm {
    type Err = PnpError;
    fn from_str(s: &str) -> Result<Self> {
        parse_name("algorithm", s, &Algorithm::ALL, Algorithm::name)
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for t in Task::ALL {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.name()));
            assert_eq!(t.name().parse::<Task>().unwrap(), t);
        }
        for a in Algorithm::ALL {
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.name()));
            assert_eq!(serde_json::from_str::<Algorithm>(&json).unwrap(), a);
            assert_eq!(a.name().parse::<Algorithm>().unwrap(), a);
        }
        let e = "prox-drs-diff"
            .parse::<Algorithm>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown algorithm `prox-drs-diff`"), "{e}");
        assert!(e.contains("prox-drsdiff"), "{e}");
    }
}
