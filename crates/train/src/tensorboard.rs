//! A small TensorBoard event-file writer: scalars and PNG images.
//!
//! Written by hand because the `tensorboard-rs` crate is unmaintained (last release 2020,
//! pinned to an old `protobuf` major and an old `image`), and the format needed here is
//! tiny: a file of TFRecords, each holding one hand-encoded protobuf `Event`.
//!
//! TFRecord framing (TensorFlow `record_writer.cc`), little-endian:
//! `u64 length · u32 masked_crc32c(length bytes) · data · u32 masked_crc32c(data)`, with
//! `masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8`.
//!
//! Protobuf messages (`tensorboard/compat/proto/{event,summary}.proto`), field numbers:
//! - `Event`: `wall_time` 1 (double), `step` 2 (int64), `file_version` 3 (string),
//!   `summary` 5 (message);
//! - `Summary`: `value` 1 (repeated `Value`);
//! - `Summary.Value`: `tag` 1 (string), `simple_value` 2 (float), `image` 4 (`Image`);
//! - `Summary.Image`: `height` 1, `width` 2, `colorspace` 3 (int32), `encoded_image_string` 4;
//! - `Summary.Value`: `tensor` 8 (`TensorProto`), `metadata` 9 (`SummaryMetadata`:
//!   `plugin_data` 1 = `{plugin_name 1, content 2}`), for plugin summaries;
//! - `TensorProto`: `dtype` 1 (`DT_STRING` = 7), `tensor_shape` 2 (empty: a scalar),
//!   `string_val` 8 — the text plugin (`plugin_name` `text`);
//! - the HParams plugin (`plugin_name` `hparams`, tags `_hparams_/experiment`,
//!   `_hparams_/session_start_info`, `_hparams_/session_end_info`) has as `content` a
//!   `HParamsPluginData` (`tensorboard/plugins/hparams/{plugin_data,api}.proto`): `version` 1,
//!   `experiment` 2 = `{hparam_infos 4 = [{name 1, type 4}], metric_infos 5 = [{name 1 =
//!   {group 1, tag 2}}]}`, `session_start_info` 3 = `{hparams 1: map<string,
//!   google.protobuf.Value>, start_time_secs 5}`, `session_end_info` 4 = `{status 1,
//!   end_time_secs 2}`; a `Value` is `number_value` 2 (double), `string_value` 3 or
//!   `bool_value` 4. HParams `DataType`: string 1, bool 2, float64 3; `Status`: success 1,
//!   failure 2, running 3.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tch::Tensor;

use crate::error::{Result, TrainError};

/// Appends events to one `events.out.tfevents.*` file of a run directory.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates a new event file in `dir` (created if needed) and writes the header event.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "gradstep".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}.{}",
            now.as_secs(),
            std::process::id(),
            now.subsec_nanos()
        ));
        let file = File::create(&path).map_err(|e| io(&path, e))?;
        let mut w = EventWriter {
            path,
            out: BufWriter::new(file),
        };
        let mut event = Vec::new();
        put_double(&mut event, 1, wall_time());
        put_bytes(&mut event, 3, b"brain.Event:2");
        w.record(&event)?;
        w.flush()?;
        Ok(w)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One scalar `value` under `tag` at `step`.
    pub fn scalar(&mut self, tag: &str, step: i64, value: f64) -> Result<()> {
        self.summary_event(step, &scalar_value(tag, value))
    }

    /// One image (`[C, H, W]` or `[1, C, H, W]`, values on `[0, 1]`, clipped) under `tag`,
    /// stored as PNG.
    pub fn image(&mut self, tag: &str, step: i64, image: &Tensor) -> Result<()> {
        let (png, height, width, channels) = encode_png(image)?;
        let mut img = Vec::new();
        put_varint_field(&mut img, 1, height as u64);
        put_varint_field(&mut img, 2, width as u64);
        put_varint_field(&mut img, 3, channels as u64);
        put_bytes(&mut img, 4, &png);
        let mut v = Vec::new();
        put_bytes(&mut v, 1, tag.as_bytes());
        put_bytes(&mut v, 4, &img);
        self.summary_event(step, &v)
    }

    /// A text summary (rendered as Markdown by TensorBoard's Text tab) under `tag`.
    pub fn text(&mut self, tag: &str, step: i64, markdown: &str) -> Result<()> {
        let mut tensor = Vec::new();
        put_varint_field(&mut tensor, 1, 7); // DT_STRING
        put_bytes(&mut tensor, 2, &[]);
        put_bytes(&mut tensor, 8, markdown.as_bytes());
        let mut v = Vec::new();
        put_bytes(&mut v, 1, tag.as_bytes());
        put_bytes(&mut v, 8, &tensor);
        put_bytes(&mut v, 9, &plugin_metadata("text", &[]));
        self.summary_event(step, &v)
    }

    /// Declares the run's hyper-parameters and the scalar tags that measure it, for the
    /// HParams tab (the experiment and the session start, at step 0).
    pub fn hparams_start(
        &mut self,
        hparams: &[(String, HParam)],
        metric_tags: &[&str],
    ) -> Result<()> {
        let mut experiment = Vec::new();
        for (name, value) in hparams {
            let mut info = Vec::new();
            put_bytes(&mut info, 1, name.as_bytes());
            put_varint_field(&mut info, 4, value.data_type());
            put_bytes(&mut experiment, 4, &info);
        }
        for tag in metric_tags {
            let mut metric_name = Vec::new();
            put_bytes(&mut metric_name, 2, tag.as_bytes());
            let mut info = Vec::new();
            put_bytes(&mut info, 1, &metric_name);
            put_bytes(&mut experiment, 5, &info);
        }
        self.hparams_summary("_hparams_/experiment", 2, &experiment)?;
        let mut start = Vec::new();
        for (name, value) in hparams {
            let mut entry = Vec::new();
            put_bytes(&mut entry, 1, name.as_bytes());
            put_bytes(&mut entry, 2, &value.encode());
            put_bytes(&mut start, 1, &entry);
        }
        put_double(&mut start, 5, wall_time());
        self.hparams_summary("_hparams_/session_start_info", 3, &start)
    }

    /// Ends the HParams session: `success` or failure (a stop by signal or an error).
    pub fn hparams_end(&mut self, success: bool) -> Result<()> {
        let mut end = Vec::new();
        put_varint_field(&mut end, 1, if success { 1 } else { 2 });
        put_double(&mut end, 2, wall_time());
        self.hparams_summary("_hparams_/session_end_info", 4, &end)?;
        self.flush()
    }

    fn hparams_summary(&mut self, tag: &str, field: u32, message: &[u8]) -> Result<()> {
        let mut content = Vec::new();
        put_bytes(&mut content, field, message);
        let mut v = Vec::new();
        put_bytes(&mut v, 1, tag.as_bytes());
        put_bytes(&mut v, 9, &plugin_metadata("hparams", &content));
        self.summary_event(0, &v)
    }

    /// Pushes buffered events to the file (TensorBoard reads what is flushed).
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| io(&self.path, e))
    }

    fn summary_event(&mut self, step: i64, value: &[u8]) -> Result<()> {
        self.record(&summary_event(wall_time(), step, value))
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        self.out
            .write_all(&tfrecord(data))
            .map_err(|e| io(&self.path, e))
    }
}

/// A `Summary.Value` holding the scalar `value` under `tag`.
fn scalar_value(tag: &str, value: f64) -> Vec<u8> {
    let mut v = Vec::new();
    put_bytes(&mut v, 1, tag.as_bytes());
    put_float(&mut v, 2, value as f32);
    v
}

/// An `Event` at `wall_time` and `step` whose summary holds the one encoded `value`.
fn summary_event(wall_time: f64, step: i64, value: &[u8]) -> Vec<u8> {
    let mut summary = Vec::new();
    put_bytes(&mut summary, 1, value);
    let mut event = Vec::new();
    put_double(&mut event, 1, wall_time);
    put_varint_field(&mut event, 2, step as u64);
    put_bytes(&mut event, 5, &summary);
    event
}

/// `data` framed as one TFRecord.
fn tfrecord(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut frame = Vec::with_capacity(data.len() + 16);
    frame.extend_from_slice(&len);
    frame.extend_from_slice(&masked_crc(&len).to_le_bytes());
    frame.extend_from_slice(data);
    frame.extend_from_slice(&masked_crc(data).to_le_bytes());
    frame
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

/// A hyper-parameter value for the HParams tab.
#[derive(Debug, Clone, PartialEq)]
pub enum HParam {
    /// A number.
    Number(f64),
    /// A string (lists and other JSON values are given as their JSON text).
    Text(String),
    /// A flag.
    Bool(bool),
}

impl HParam {
    fn data_type(&self) -> u64 {
        match self {
            HParam::Text(_) => 1,
            HParam::Bool(_) => 2,
            HParam::Number(_) => 3,
        }
    }

    /// As a `google.protobuf.Value`.
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            HParam::Number(x) => put_double(&mut v, 2, *x),
            HParam::Text(t) => put_bytes(&mut v, 3, t.as_bytes()),
            HParam::Bool(b) => put_varint_field(&mut v, 4, u64::from(*b)),
        }
        v
    }
}

/// The leaves of a JSON object as hyper-parameters named by their dotted paths
/// (`optimizer.lr`); arrays and nulls become their JSON text.
pub fn flatten_hparams(config: &serde_json::Value) -> Vec<(String, HParam)> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, HParam)>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&name, v, out);
                }
            }
            serde_json::Value::Number(n) => out.push((
                prefix.to_string(),
                HParam::Number(n.as_f64().unwrap_or(f64::NAN)),
            )),
            serde_json::Value::Bool(b) => out.push((prefix.to_string(), HParam::Bool(*b))),
            serde_json::Value::String(s) => out.push((prefix.to_string(), HParam::Text(s.clone()))),
            other => out.push((prefix.to_string(), HParam::Text(other.to_string()))),
        }
    }
    let mut out = Vec::new();
    walk("", config, &mut out);
    out
}

/// `SummaryMetadata { plugin_data { plugin_name, content } }`.
fn plugin_metadata(plugin: &str, content: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    put_bytes(&mut data, 1, plugin.as_bytes());
    if !content.is_empty() {
        put_bytes(&mut data, 2, content);
    }
    let mut meta = Vec::new();
    put_bytes(&mut meta, 1, &data);
    meta
}

fn io(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::Io(path.to_path_buf(), e)
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// TFRecord's masked CRC32C.
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    put_varint(out, u64::from(field) << 3);
    put_varint(out, v);
}

fn put_double(out: &mut Vec<u8>, field: u32, v: f64) {
    put_varint(out, (u64::from(field) << 3) | 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_float(out: &mut Vec<u8>, field: u32, v: f32) {
    put_varint(out, (u64::from(field) << 3) | 5);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(field) << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// PNG bytes, height, width and channel count of an image tensor on `[0, 1]`.
fn encode_png(image: &Tensor) -> Result<(Vec<u8>, u32, u32, u32)> {
    let s = image.size();
    let png = gradstep_data::image_io::encode_png(image)?;
    let (c, h, w) = (
        s[s.len() - 3] as u32,
        s[s.len() - 2] as u32,
        s[s.len() - 1] as u32,
    );
    Ok((png, h, w, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_matches_tensorflow_vector() {
        // crc32c("a") = 0xc1d04330 (RFC 3720 polynomial).
        let c = crc32c::crc32c(b"a");
        assert_eq!(c, 0xc1d0_4330);
        // The CRC-32C check value, and TensorBoard's own `masked_crc32c`
        // (`tensorboard.compat.tensorflow_stub.pywrap_tensorflow`) of three inputs.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
        assert_eq!(masked_crc(b"a"), 0x28e4_6e78);
        assert_eq!(masked_crc(b""), 0xa282_ead8);
    }

    /// A whole TFRecord, byte for byte, as TensorBoard 2.21 writes it:
    /// `RecordWriter(buf).write(Event(wall_time=1700000000.5, step=42,
    /// summary=Summary(value=[Value(tag="train/loss", simple_value=0.25)])).SerializeToString())`.
    #[test]
    fn a_scalar_event_is_the_record_tensorboard_writes() {
        const TENSORBOARD: &str = "200000000000000029eda950 \
            0900002040fc54d941102a2a130a110a0a747261696e2f6c6f7373150000803e \
            01be611b";
        let record = tfrecord(&summary_event(
            1_700_000_000.5,
            42,
            &scalar_value("train/loss", 0.25),
        ));
        let hex: String = record.iter().map(|b| format!("{b:02x}")).collect();
        let want: String = TENSORBOARD.split_whitespace().collect();
        assert_eq!(hex, want);
    }

    #[test]
    fn varints_encode_as_protobuf() {
        let mut v = Vec::new();
        put_varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
        let mut f = Vec::new();
        put_float(&mut f, 2, 1.0);
        assert_eq!(f, [0x15, 0x00, 0x00, 0x80, 0x3f]);
    }
}
