//! Exporting a checkpoint's network for PyTorch, the inverse of [`crate::import`].
//!
//! deepinv's `GSDRUNet` and the official GS-PnP Lightning module (`GradMatch`) both hold the
//! DRUNet as `student_grad.model`, so their state dicts name a weight
//! `student_grad.model.m_head.weight`; a plain DRUNet state dict uses `m_head.weight`. With one
//! residual block per scale deepinv's `sequential` collapses the body to that block, whose
//! weights are then `m_body.res.0.weight` (not `m_body.0.res.0.weight`).
use std::collections::BTreeMap;

use tch::Tensor;

use crate::checkpoint::{Checkpoint, MODEL_PREFIX};
use crate::config::{Activation, DrunetConfig};
use crate::import::DEEPINV_PREFIX;

/// The layout of an exported state dict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// deepinv `GSDRUNet(...).load_state_dict(sd, strict=True)`: keys `student_grad.model.*`.
    Deepinv,
    /// The official GS-PnP Lightning checkpoint: `{"state_dict": {student_grad.model.*},
    /// "hyper_parameters": {...}}`, also read by deepinv's `GSDRUNet(pretrained=path)`.
    Lightning,
    /// A DRUNet state dict: `m_head.weight`, … (deepinv's `DRUNet` / the official `UNetRes`).
    StateDict,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "deepinv" => Ok(ExportFormat::Deepinv),
            "lightning" => Ok(ExportFormat::Lightning),
            "state-dict" => Ok(ExportFormat::StateDict),
            _ => Err(format!(
                "unknown export format `{s}` (expected deepinv, lightning or state-dict)"
            )),
        }
    }
}

/// deepinv's name of our weight `name` for an architecture with `blocks` blocks per scale.
pub fn deepinv_key(name: &str, blocks: usize) -> String {
    match name.strip_prefix("m_body.0.") {
        Some(rest) if blocks == 1 => format!("m_body.{rest}"),
        _ => name.to_string(),
    }
}

/// deepinv's / the official code's `act_mode` letter of an activation.
pub fn act_mode(activation: Activation) -> &'static str {
    match activation {
        Activation::Elu => "E",
        Activation::Softplus => "s",
        Activation::Relu => "R",
    }
}

/// The network's weights of `ckpt` under the names of `format`.
pub fn exported_state_dict(ckpt: &Checkpoint, format: ExportFormat) -> BTreeMap<String, Tensor> {
    let blocks = ckpt.model.architecture.blocks;
    let prefix = match format {
        ExportFormat::Deepinv | ExportFormat::Lightning => DEEPINV_PREFIX,
        ExportFormat::StateDict => "",
    };
    ckpt.tensors
        .iter()
        .filter_map(|(k, t)| {
            k.strip_prefix(MODEL_PREFIX).map(|name| {
                (
                    format!("{prefix}{}", deepinv_key(name, blocks)),
                    t.shallow_clone(),
                )
            })
        })
        .collect()
}

/// The keyword arguments of deepinv's `GSDRUNet` (and the official `GradMatch`
/// hyper-parameters) that rebuild `config`.
pub fn deepinv_arguments(config: &DrunetConfig) -> serde_json::Value {
    serde_json::json!({
        "in_channels": config.channels,
        "out_channels": config.channels,
        "nc": config.widths,
        "nb": config.blocks,
        "act_mode": act_mode(config.activation),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_single_block_body_collapses() {
        assert_eq!(
            deepinv_key("m_body.0.res.0.weight", 1),
            "m_body.res.0.weight"
        );
        assert_eq!(
            deepinv_key("m_body.0.res.0.weight", 2),
            "m_body.0.res.0.weight"
        );
        assert_eq!(
            deepinv_key("m_down1.0.res.0.weight", 1),
            "m_down1.0.res.0.weight"
        );
    }
}
