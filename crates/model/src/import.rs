//! Importing foreign state dicts (deepinv `GSDRUNet`, the official GS-PnP / Prox-PnP
//! checkpoints): find the network's key prefix, infer the architecture from the shapes,
//! and load with the same exact key and shape checks as our own checkpoints.
//!
//! Sizes are bounded before anything is allocated ([`MAX_IMPORT_BYTES`],
//! [`MAX_IMPORT_ELEMENTS`]), and deepinv's names for one block per scale are accepted.
//!
//! The published Lightning checkpoints name weights `student_grad.model.m_head.weight`,
//! deepinv's state dicts the same; other wrappers use other prefixes. The prefix is taken
//! from the key that ends in `m_head.weight` (`student_grad.model.` preferred if several).
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{load_weights, read_bounded, tensor_from_view};
use crate::config::{Activation, DrunetConfig};
use crate::error::{ModelError, Result};
use crate::gradient_step::GradientStepDenoiser;

/// The prefix of the official checkpoints and deepinv.
pub const DEEPINV_PREFIX: &str = "student_grad.model.";

/// At most this many elements in all are imported from one file: 16 times the published
/// models' 17,010,624 parameters (colour GS-DRUNet, widths 64–512, 2 blocks), 1 GiB as
/// float32. A file above it is refused before its tensors are allocated.
pub const MAX_IMPORT_ELEMENTS: u64 = 1 << 28;

/// At most this many bytes of safetensors are read for an import: the elements of
/// [`MAX_IMPORT_ELEMENTS`] as float32 plus 16 MiB for the header.
pub const MAX_IMPORT_BYTES: u64 = 4 * MAX_IMPORT_ELEMENTS + (16 << 20);

/// Every tensor and the metadata of a safetensors file of at most [`MAX_IMPORT_BYTES`]
/// bytes and [`MAX_IMPORT_ELEMENTS`] elements (a larger file is refused unread).
pub fn read_safetensors(
    path: &Path,
) -> Result<(BTreeMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = read_bounded(path, MAX_IMPORT_BYTES, "the import limit")?;
    parse_safetensors(&bytes, path)
}

/// Every tensor and the metadata of safetensors `bytes` (read from `path`, which errors
/// name), if they hold at most [`MAX_IMPORT_ELEMENTS`] elements.
pub fn parse_safetensors(
    bytes: &[u8],
    path: &Path,
) -> Result<(BTreeMap<String, Tensor>, HashMap<String, String>)> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| {
        ModelError::checkpoint(path, format!("not a readable safetensors file: {e}"))
    })?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| ModelError::checkpoint(path, format!("corrupt safetensors file: {e}")))?;
    let elements = st
        .tensors()
        .iter()
        .map(|(_, view)| {
            view.shape()
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
                .unwrap_or(u64::MAX)
        })
        .fold(0u64, u64::saturating_add);
    if elements > MAX_IMPORT_ELEMENTS {
        return Err(ModelError::checkpoint(
            path,
            format!(
                "its tensors hold {elements} elements, more than the import limit of {MAX_IMPORT_ELEMENTS}"
            ),
        ));
    }
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        out.insert(name.clone(), tensor_from_view(&view, path, &name)?);
    }
    Ok((out, header.metadata().clone().unwrap_or_default()))
}

/// The network's weights of a foreign state dict, with the prefix removed.
pub fn strip_prefix(
    tensors: BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<BTreeMap<String, Tensor>> {
    let heads: Vec<&String> = tensors
        .keys()
        .filter(|k| k.ends_with("m_head.weight"))
        .collect();
    let prefix = match heads.as_slice() {
        [] => {
            return Err(ModelError::weight(
                path,
                "m_head.weight",
                "missing: not a DRUNet state dict",
            ))
        }
        [one] => one.trim_end_matches("m_head.weight").to_string(),
        many => {
            let pref = format!("{DEEPINV_PREFIX}m_head.weight");
            if many.iter().any(|k| **k == pref) {
                DEEPINV_PREFIX.to_string()
            } else {
                return Err(ModelError::checkpoint(
                    path,
                    format!("several networks in one file: {many:?}"),
                ));
            }
        }
    };
    Ok(tensors
        .into_iter()
        .filter_map(|(k, t)| k.strip_prefix(prefix.as_str()).map(|n| (n.to_string(), t)))
        .collect())
}

/// deepinv's `sequential` returns a lone module itself instead of a one-element
/// `Sequential`, so with one block per scale (`nb=1`) the body's only ResBlock is named
/// `m_body.res.*`, not `m_body.0.res.*` (every other stage also holds a resampling
/// convolution and keeps its indices). Those names become ours; with any block index
/// present under `m_body` nothing is renamed, and a stray key is reported by the loader.
fn expand_lone_body_block(weights: BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    if weights.keys().any(|k| k.starts_with("m_body.0.")) {
        return weights;
    }
    weights
        .into_iter()
        .map(|(k, t)| match k.strip_prefix("m_body.res.") {
            Some(rest) => (format!("m_body.0.res.{rest}"), t),
            None => (k, t),
        })
        .collect()
}

/// Infers channels, widths and blocks per scale from the weights' names and shapes.
pub fn infer_architecture(
    weights: &BTreeMap<String, Tensor>,
    activation: Activation,
    path: &Path,
) -> Result<DrunetConfig> {
    let shape = |key: &str| -> Result<Vec<i64>> {
        weights
            .get(key)
            .map(|t| t.size())
            .ok_or_else(|| ModelError::weight(path, key, "missing"))
    };
    let head = shape("m_head.weight")?;
    if head.len() != 4 || head[1] < 2 {
        return Err(ModelError::weight(
            path,
            "m_head.weight",
            format!("shape {head:?} is not [w, C + 1, 3, 3]"),
        ));
    }
    let blocks = (0..)
        .take_while(|i| weights.contains_key(&format!("m_down1.{i}.res.0.weight")))
        .count();
    if blocks == 0 {
        return Err(ModelError::weight(
            path,
            "m_down1.0.res.0.weight",
            "missing",
        ));
    }
    let mut widths = [head[0], 0, 0, 0];
    for level in 1..4 {
        let key = format!("m_down{level}.{blocks}.weight");
        let s = shape(&key)?;
        if s.len() != 4 || s[1] != widths[level - 1] {
            return Err(ModelError::weight(
                path,
                key,
                format!("shape {s:?} does not follow width {}", widths[level - 1]),
            ));
        }
        widths[level] = s[0];
    }
    let config = DrunetConfig {
        channels: head[1] - 1,
        widths,
        blocks,
        activation,
    };
    config
        .validate()
        .map_err(|e| ModelError::weight(path, "m_head.weight", e.to_string()))?;
    Ok(config)
}

/// A denoiser from a foreign state dict (prefix detected, architecture inferred, every key
/// and shape checked).
pub fn denoiser_from_state_dict(
    tensors: BTreeMap<String, Tensor>,
    activation: Activation,
    device: Device,
    kind: Kind,
    path: &Path,
) -> Result<GradientStepDenoiser> {
    let weights = expand_lone_body_block(strip_prefix(tensors, path)?);
    let config = infer_architecture(&weights, activation, path)?;
    Ok(GradientStepDenoiser::new(load_weights(
        &config, weights, device, kind, path,
    )?))
}
