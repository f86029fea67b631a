//! gradstep's checkpoint format: one safetensors file that describes itself.
//!
//! Tensors:
//! - `model.<name>`: the network weights, `<name>` as in deepinv (`m_head.weight`, …);
//! - any other name: sections added by other crates (e.g. the optimizer's moments).
//!
//! Metadata (string → string, the safetensors header's `__metadata__`):
//! - `format` = `gradstep-checkpoint`, `format_version` = `1`;
//! - `model`: JSON [`ModelDescription`] (kind and architecture): loading needs no flags;
//! - `provenance`: JSON, free-form (source file, command, step, …);
//! - `section.<name>`: JSON sections added by other crates (e.g. `section.training`).
//!
//! Every file is written atomically: to a temporary file in the same directory, flushed to
//! disk, then renamed over the destination, so a crash leaves either the old or the new file.
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::config::{DenoiserKind, DrunetConfig};
use crate::drunet::Drunet;
use crate::error::{ModelError, Result};
use crate::gradient_step::GradientStepDenoiser;

/// The `format` metadata value of our checkpoints.
pub const FORMAT: &str = "gradstep-checkpoint";
/// The `format_version` this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Prefix of the network weights among a checkpoint's tensors.
pub const MODEL_PREFIX: &str = "model.";

/// What a checkpoint holds: enough to rebuild the denoiser without any flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDescription {
    /// GS or Prox denoiser.
    pub kind: DenoiserKind,
    /// The network's architecture.
    pub architecture: DrunetConfig,
}

/// A checkpoint in memory: description, provenance, extra sections and all tensors.
#[derive(Debug)]
pub struct Checkpoint {
    /// Kind and architecture.
    pub model: ModelDescription,
    /// Where the weights come from (free-form JSON).
    pub provenance: serde_json::Value,
    /// Extra JSON sections, by name (e.g. `training`).
    pub sections: BTreeMap<String, serde_json::Value>,
    /// Every tensor, by name; the weights are under [`MODEL_PREFIX`].
    pub tensors: BTreeMap<String, Tensor>,
}

/// The section where `gradstep lipschitz --record` keeps its result: `max` is the largest
/// estimate of `‖∇²g_σ‖₂` over its images and noise levels (a Prox denoiser needs it < 1).
pub const LIPSCHITZ_SECTION: &str = "lipschitz";

impl Checkpoint {
    /// The largest recorded `‖∇²g_σ‖₂` estimate ([`LIPSCHITZ_SECTION`]), if one was recorded.
    pub fn recorded_lipschitz_max(&self) -> Option<f64> {
        self.sections.get(LIPSCHITZ_SECTION)?.get("max")?.as_f64()
    }

    /// A checkpoint of `denoiser`'s current weights (copied to the CPU).
    pub fn from_denoiser(
        denoiser: &GradientStepDenoiser,
        kind: DenoiserKind,
        provenance: serde_json::Value,
    ) -> Result<Self> {
        let net = denoiser.network();
        let mut tensors = BTreeMap::new();
        for (name, t) in net.var_store().variables() {
            tensors.insert(
                format!("{MODEL_PREFIX}{name}"),
                t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?,
            );
        }
        Ok(Checkpoint {
            model: ModelDescription {
                kind,
                architecture: net.config().clone(),
            },
            provenance,
            sections: BTreeMap::new(),
            tensors,
        })
    }

    /// Rebuilds the denoiser on `device` in `kind` precision. Every weight of the declared
    /// architecture must be present with its shape, and no other `model.` tensor may be.
    pub fn denoiser(
        &self,
        device: Device,
        kind: Kind,
        path: &Path,
    ) -> Result<GradientStepDenoiser> {
        let weights = self
            .tensors
            .iter()
            .filter_map(|(k, t)| {
                k.strip_prefix(MODEL_PREFIX)
                    .map(|n| (n.to_string(), t.shallow_clone()))
            })
            .collect();
        let net = load_weights(&self.model.architecture, weights, device, kind, path)?;
        Ok(GradientStepDenoiser::new(net))
    }

    /// Writes the checkpoint atomically to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("format_version".to_string(), FORMAT_VERSION.to_string());
        meta.insert("model".to_string(), to_json(&self.model)?);
        meta.insert("provenance".to_string(), to_json(&self.provenance)?);
        for (name, value) in &self.sections {
            meta.insert(format!("section.{name}"), to_json(value)?);
        }
        write_safetensors(path, &self.tensors, meta)
    }

    /// Reads a checkpoint written by [`Checkpoint::write`]. Any other file (a PyTorch
    /// pickle, a truncated file, a safetensors file without our metadata) is refused with
    /// an error naming the file and the problem.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(|e| ModelError::io(path, e))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| {
            let reason = if looks_like_pytorch(&bytes) {
                "a PyTorch checkpoint, not a gradstep one: convert it with `gradstep import` first"
                    .to_string()
            } else {
                // E.g. a checkpoint cut short by a full disk or a copy that did not finish.
                format!("truncated or corrupt safetensors file ({e})")
            };
            ModelError::checkpoint(path, reason)
        })?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| ModelError::checkpoint(path, format!("corrupt safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        match meta.get("format").map(String::as_str) {
            Some(FORMAT) => {}
            _ => {
                return Err(ModelError::checkpoint(
                    path,
                    "no gradstep metadata (`format`); for deepinv / GS-PnP weights use `gradstep import`",
                ))
            }
        }
        let version = meta
            .get("format_version")
            .map(String::as_str)
            .unwrap_or("?");
        if version != FORMAT_VERSION.to_string() {
            return Err(ModelError::checkpoint(
                path,
                format!("format version {version}, this gradstep reads {FORMAT_VERSION}"),
            ));
        }
        let model: ModelDescription = from_json(&meta, "model", path)?;
        model
            .architecture
            .validate()
            .map_err(|e| ModelError::checkpoint(path, format!("metadata `model`: {e}")))?;
        let provenance = from_json(&meta, "provenance", path)?;
        let mut sections = BTreeMap::new();
        for (key, value) in &meta {
            if let Some(name) = key.strip_prefix("section.") {
                let v = serde_json::from_str(value).map_err(|e| {
                    ModelError::checkpoint(path, format!("metadata `{key}` is not JSON: {e}"))
                })?;
                sections.insert(name.to_string(), v);
            }
        }
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            tensors.insert(name.clone(), tensor_from_view(&view, path, &name)?);
        }
        Ok(Checkpoint {
            model,
            provenance,
            sections,
            tensors,
        })
    }
}

/// Writes `tensors` with `metadata` as a safetensors file, atomically ([`write_atomic`]).
pub fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let mut raw = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        raw.push((name.clone(), RawTensor::from_tensor(t, path, name)?));
    }
    let bytes = safetensors::serialize(raw, Some(metadata))
        .map_err(|e| ModelError::checkpoint(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, &bytes)
}

/// Builds a network of `config` and fills it with `weights` (names without prefix), checking
/// that the key sets match exactly and every shape agrees.
pub(crate) fn load_weights(
    config: &DrunetConfig,
    weights: BTreeMap<String, Tensor>,
    device: Device,
    kind: Kind,
    path: &Path,
) -> Result<Drunet> {
    let mut net = Drunet::new(config, device)?;
    if kind != Kind::Float {
        net.var_store_mut().set_kind(kind);
    }
    let vars = net.var_store().variables();
    let mut names: Vec<_> = vars.keys().cloned().collect();
    names.sort();
    for name in &names {
        let Some(src) = weights.get(name) else {
            return Err(ModelError::weight(path, name, "missing"));
        };
        let dst = &vars[name];
        if src.size() != dst.size() {
            return Err(ModelError::weight(
                path,
                name,
                format!(
                    "shape {:?}, the architecture needs {:?}",
                    src.size(),
                    dst.size()
                ),
            ));
        }
        let mut dst = dst.shallow_clone();
        tch::no_grad(|| dst.f_copy_(src))?;
    }
    if let Some(extra) = weights.keys().find(|k| !vars.contains_key(*k)) {
        return Err(ModelError::weight(
            path,
            extra,
            "not part of the architecture",
        ));
    }
    Ok(net)
}

/// Writes `bytes` to `path` atomically: temporary file in the same directory, `fsync`,
/// rename, then `fsync` of the directory so the rename itself is durable.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| ModelError::checkpoint(path, "not a file path"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}{ATOMIC_TEMP_MARK}{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        ModelError::io(path, e)
    })
}

/// `.<name>.tmp-<pid>`: the temporary file of [`write_atomic`].
const ATOMIC_TEMP_MARK: &str = ".tmp-";

/// Whether `file_name` is a temporary file of [`write_atomic`] (`.<name>.tmp-<pid>`), as a
/// process killed mid-write leaves behind.
pub fn is_write_atomic_temp(file_name: &str) -> bool {
    file_name.starts_with('.')
        && file_name
            .rsplit_once(ATOMIC_TEMP_MARK)
            .is_some_and(|(name, pid)| {
                name.len() > 1 && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
            })
}

/// Whether `bytes` start like a file `torch.save` writes: a zip archive (PyTorch ≥ 1.6) or
/// a pickle (protocol 2 or later: `0x80`, protocol number).
fn looks_like_pytorch(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || matches!(bytes, [0x80, 2..=5, ..])
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(ModelError::Serialise)
}

fn from_json<T: serde::de::DeserializeOwned>(
    meta: &HashMap<String, String>,
    key: &str,
    path: &Path,
) -> Result<T> {
    let s = meta
        .get(key)
        .ok_or_else(|| ModelError::checkpoint(path, format!("metadata `{key}` missing")))?;
    serde_json::from_str(s)
        .map_err(|e| ModelError::checkpoint(path, format!("metadata `{key}`: {e}")))
}

/// A tensor's bytes for safetensors.
struct RawTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl RawTensor {
    fn from_tensor(t: &Tensor, path: &Path, name: &str) -> Result<Self> {
        let t = t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?;
        let kind = t.f_kind()?;
        let dtype = match kind {
            Kind::Float => Dtype::F32,
            Kind::Double => Dtype::F64,
            Kind::Half => Dtype::F16,
            Kind::BFloat16 => Dtype::BF16,
            Kind::Int64 => Dtype::I64,
            Kind::Int => Dtype::I32,
            Kind::Uint8 => Dtype::U8,
            other => {
                return Err(ModelError::weight(
                    path,
                    name,
                    format!("cannot store dtype {other:?}"),
                ))
            }
        };
        let numel = t.numel();
        let mut data = vec![0u8; numel * kind.elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel)?;
        Ok(RawTensor {
            dtype,
            shape: t.size().iter().map(|&d| d as usize).collect(),
            data,
        })
    }
}

impl View for RawTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// The bytes of `path`, refused without reading when it holds more than `max_bytes`
/// (`limit` names that bound in the error).
///
/// The length is checked on the open file and the read stops after `max_bytes + 1` bytes, so
/// a file that grows meanwhile (or a device like `/dev/zero`) cannot exhaust memory either.
pub(crate) fn read_bounded(path: &Path, max_bytes: u64, limit: &str) -> Result<Vec<u8>> {
    let too_big = |len: u64| {
        ModelError::checkpoint(
            path,
            format!("{len} bytes, more than {limit} of {max_bytes} bytes"),
        )
    };
    let file = fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
    if len > max_bytes {
        return Err(too_big(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ModelError::io(path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// A tch tensor from a safetensors view (copied).
pub(crate) fn tensor_from_view(
    view: &safetensors::tensor::TensorView<'_>,
    path: &Path,
    name: &str,
) -> Result<Tensor> {
    let kind = match view.dtype() {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        other => {
            return Err(ModelError::weight(
                path,
                name,
                format!("unsupported dtype {other:?}"),
            ))
        }
    };
    // libtorch allocates the shape, then copies `numel × element size` bytes from the
    // slice without looking at its length: the two must agree before anything is allocated.
    let bytes = view
        .shape()
        .iter()
        .try_fold(kind.elt_size_in_bytes(), |n, &d| n.checked_mul(d));
    if bytes != Some(view.data().len()) {
        return Err(ModelError::weight(
            path,
            name,
            format!(
                "shape {:?} does not match its {} bytes of data",
                view.shape(),
                view.data().len()
            ),
        ));
    }
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    Ok(Tensor::f_from_data_size(view.data(), &shape, kind)?)
}
