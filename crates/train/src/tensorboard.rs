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
//! - `Summary.Image`: `height` 1, `width` 2, `colorspace` 3 (int32), `encoded_image_string` 4.
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
        let mut v = Vec::new();
        put_bytes(&mut v, 1, tag.as_bytes());
        put_float(&mut v, 2, value as f32);
        self.summary_event(step, &v)
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

    /// Pushes buffered events to the file (TensorBoard reads what is flushed).
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| io(&self.path, e))
    }

    fn summary_event(&mut self, step: i64, value: &[u8]) -> Result<()> {
        let mut summary = Vec::new();
        put_bytes(&mut summary, 1, value);
        let mut event = Vec::new();
        put_double(&mut event, 1, wall_time());
        put_varint_field(&mut event, 2, step as u64);
        put_bytes(&mut event, 5, &summary);
        self.record(&event)
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut frame = Vec::with_capacity(data.len() + 16);
        frame.extend_from_slice(&len);
        frame.extend_from_slice(&masked_crc(&len).to_le_bytes());
        frame.extend_from_slice(data);
        frame.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.out.write_all(&frame).map_err(|e| io(&self.path, e))
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
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
        // crc32c("a") = 0xc1d04330 (RFC 3720 polynomial); masked as in TensorFlow.
        let c = crc32c::crc32c(b"a");
        assert_eq!(c, 0xc1d0_4330);
        assert_eq!(
            masked_crc(b"a"),
            c.rotate_right(15).wrapping_add(0xa282_ead8)
        );
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
