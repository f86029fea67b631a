//! The one image loader and writer: files ↔ `[1, C, H, W]` float tensors on `[0, 1]`.
//!
//! Gray, RGBA (alpha dropped), 16-bit and palette images are converted to the requested
//! channel count: colour from gray replicates the channel; gray from colour uses the
//! `image` crate's luma, ITU-R BT.709 weights `0.2126 R + 0.7152 G + 0.0722 B`.
use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, GrayImage, ImageBuffer, ImageFormat, Rgb, RgbImage};
use tch::{Device, Kind, Tensor};

use crate::error::{DataError, Result};

/// Decodes `path` (PNG, JPEG, BMP, TIFF) into `[C, H, W]` floats on `[0, 1]`, row-major,
/// as a plain vector with its height and width.
pub fn decode(path: &Path, channels: i64) -> Result<(Vec<f32>, usize, usize)> {
    Ok(planar(&open(path)?, channels))
}

/// Decodes `path` into 8-bit pixels, interleaved `[H, W, C]` (C = `channels`, 1 or 3), with
/// its height and width: the form the patch sampler and its cache store. 16-bit images are
/// rounded to 8 bits, alpha is dropped, palettes are expanded.
pub fn decode_u8(path: &Path, channels: i64) -> Result<(Vec<u8>, usize, usize)> {
    let img = open(path)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = if channels == 1 {
        img.into_luma8().into_raw()
    } else {
        img.into_rgb8().into_raw()
    };
    Ok((raw, h, w))
}

/// Width and height of an image file from its header only (no pixel decoding).
pub fn dimensions(path: &Path) -> Result<(usize, usize)> {
    let (w, h) = image::ImageReader::open(path)
        .map_err(|e| DataError::file(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::file(path, e))?
        .into_dimensions()
        .map_err(|e| DataError::file(path, format!("cannot read the header: {e}")))?;
    Ok((w as usize, h as usize))
}

/// Reads and decodes `path`, refusing truncated PNG and JPEG files: the `image` crate
/// decodes a JPEG cut short without an error (the missing rows come out grey), so the
/// structure is checked first.
fn open(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| DataError::file(path, e))?;
    let mut reader = image::ImageReader::new(Cursor::new(bytes.as_slice()))
        .with_guessed_format()
        .map_err(|e| DataError::file(path, e))?;
    if reader.format().is_none() {
        // No magic number recognised: let the extension choose, as `ImageReader::open` does.
        if let Ok(format) = ImageFormat::from_path(path) {
            reader.set_format(format);
        }
    }
    let truncated = match reader.format() {
        Some(ImageFormat::Jpeg) => (!jpeg_is_complete(&bytes))
            .then_some("JPEG without an end-of-image marker after its last scan"),
        Some(ImageFormat::Png) => {
            (!png_is_complete(&bytes)).then_some("PNG ends before its IEND chunk")
        }
        _ => None,
    };
    if let Some(why) = truncated {
        return Err(corrupt(path, why));
    }
    reader.decode().map_err(|e| match e {
        image::ImageError::Decoding(_) | image::ImageError::IoError(_) => corrupt(path, e),
        _ => DataError::file(path, format!("cannot decode: {e}")),
    })
}

fn corrupt(path: &Path, why: impl std::fmt::Display) -> DataError {
    DataError::file(path, format!("truncated or corrupt image ({why})"))
}

/// Whether a JPEG stream ends: an end-of-image marker `FF D9` follows the last start-of-scan
/// `FF DA`. Inside entropy-coded data an `FF` byte is followed only by `00` or a restart
/// marker, so neither marker can appear there by accident; an `FF D9` of an embedded
/// thumbnail comes before the main image's scans, and data appended after the end marker
/// (a second image of a multi-picture file) is allowed.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let after_last_scan = bytes
        .windows(2)
        .rposition(|w| w == [0xFF, 0xDA])
        .map_or(0, |p| p + 2);
    bytes[after_last_scan..]
        .windows(2)
        .any(|w| w == [0xFF, 0xD9])
}

/// Whether a PNG file holds its whole chunk sequence, up to and including `IEND`
/// (chunk = 4-byte big-endian length, 4-byte type, data, 4-byte CRC).
fn png_is_complete(bytes: &[u8]) -> bool {
    let mut pos = 8; // the signature
    while let Some(header) = bytes.get(pos..pos + 8) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let Some(end) = pos.checked_add(12).and_then(|p| p.checked_add(len)) else {
            return false;
        };
        if end > bytes.len() {
            return false;
        }
        if &header[4..8] == b"IEND" {
            return true;
        }
        pos = end;
    }
    false
}

/// Checks that `path`'s extension names a format [`save_image`] writes (`.png`, `.jpg` /
/// `.jpeg`, `.bmp`, `.tif` / `.tiff`), so that a command can refuse it before its work.
pub fn check_output_format(path: &Path) -> Result<ImageFormat> {
    match ImageFormat::from_path(path) {
        Ok(format) if format.writing_enabled() => Ok(format),
        _ => {
            let ext = path
                .extension()
                .map(|e| format!("extension `.{}`", e.to_string_lossy()))
                .unwrap_or_else(|| "no extension".into());
            Err(DataError::file(
                path,
                format!(
                    "unknown image format: {ext} (expected .png, .jpg, .jpeg, .bmp, .tif or .tiff)"
                ),
            ))
        }
    }
}

/// `img` as planar `[C, H, W]` floats on `[0, 1]`.
pub fn planar(img: &DynamicImage, channels: i64) -> (Vec<f32>, usize, usize) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if channels == 1 {
        let g = img.to_luma32f();
        (g.into_raw(), h, w)
    } else {
        let rgb = img.to_rgb32f();
        let raw = rgb.as_raw();
        let mut out = vec![0f32; 3 * h * w];
        for (i, px) in raw.chunks_exact(3).enumerate() {
            out[i] = px[0];
            out[h * w + i] = px[1];
            out[2 * h * w + i] = px[2];
        }
        (out, h, w)
    }
}

/// Loads an image as a `[1, C, H, W]` float32 tensor on `[0, 1]` on `device`.
/// `channels` must be 1 (gray) or 3 (colour).
pub fn load_image(path: &Path, channels: i64, device: Device) -> Result<Tensor> {
    if channels != 1 && channels != 3 {
        return Err(DataError::Invalid(format!(
            "channels must be 1 or 3, got {channels}"
        )));
    }
    let (data, h, w) = decode(path, channels)?;
    Ok(Tensor::f_from_slice(&data)?
        .f_view([1, channels, h as i64, w as i64])?
        .f_to_device(device)?)
}

/// A `[1, C, H, W]` or `[C, H, W]` tensor (C = 1 or 3) as an 8-bit image: values clipped
/// to `[0, 1]` and rounded. The one conversion used for files, PNG bytes and logs.
pub fn to_u8_image(image: &Tensor) -> Result<DynamicImage> {
    let t = if image.dim() == 4 {
        image.f_squeeze_dim(0)?
    } else {
        image.shallow_clone()
    };
    let s = t.size();
    if s.len() != 3 || (s[0] != 1 && s[0] != 3) {
        return Err(DataError::Invalid(format!(
            "cannot make an image of a tensor of shape {:?} (expected [1, C, H, W] or [C, H, W], C = 1 or 3)",
            image.size()
        )));
    }
    let (c, h, w) = (s[0], s[1] as u32, s[2] as u32);
    let bytes = t
        .f_detach()?
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_clamp(0.0, 1.0)?
        .f_mul_scalar(255.0)?
        .f_round()?
        .f_to_kind(Kind::Uint8)?
        .f_permute([1, 2, 0])?
        .f_contiguous()?;
    let raw = Vec::<u8>::try_from(&bytes.f_flatten(0, -1)?)?;
    Ok(if c == 1 {
        DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, raw).expect("size matches"))
    } else {
        let img: RgbImage = ImageBuffer::<Rgb<u8>, _>::from_raw(w, h, raw).expect("size matches");
        DynamicImage::ImageRgb8(img)
    })
}

/// PNG bytes of an image tensor (see [`to_u8_image`]).
pub fn encode_png(image: &Tensor) -> Result<Vec<u8>> {
    let img = to_u8_image(image)?;
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| DataError::Invalid(format!("PNG encoding failed: {e}")))?;
    Ok(png.into_inner())
}

/// Writes a `[1, C, H, W]` or `[C, H, W]` tensor (values clipped to `[0, 1]`, rounded to
/// 8 bits) to `path`; the format follows the extension (PNG recommended: lossless).
pub fn save_image(path: &Path, image: &Tensor) -> Result<()> {
    let format = check_output_format(path)?;
    let dynimg = to_u8_image(image)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| DataError::file(dir, e))?;
    }
    dynimg
        .save_with_format(path, format)
        .map_err(|e| DataError::file(path, e))
}
