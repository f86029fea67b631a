//! A bounded reader of the 2-D `.npy` arrays users give as kernels.
//!
//! tch's `Tensor::read_npy` trusts the header: a header claiming a 100 000 × 100 000 array
//! made it allocate 80 GB (a C++ out-of-memory error with its backtrace), and a claimed shape
//! larger than the data is copied from past the end of the buffer. Here the file's size, the
//! header's length and the shape are bounded, and the data must fill the shape exactly,
//! before anything of the claimed size is allocated.
//!
//! Format (NumPy's `NEP 1`): the magic `\x93NUMPY`, a version `(major, minor)`, the header's
//! length (2 bytes little-endian for version 1, 4 bytes for versions 2 and 3), the header (a
//! Python dict literal: `{'descr': '<f8', 'fortran_order': False, 'shape': (9, 9), }`), then
//! the raw values.
use std::io::Read;
use std::path::Path;

use super::Kernel;

const MAGIC: &[u8] = b"\x93NUMPY";
/// NumPy pads headers to a multiple of 64 bytes; real ones are under 200.
const MAX_HEADER: usize = 64 * 1024;

/// Reads a 2-D float32 or float64 array: `(height, width, row-major values)`. Every error is
/// a reason to show after the file's name.
pub(super) fn read_2d(path: &Path) -> Result<(usize, usize, Vec<f64>), String> {
    let max_file = MAGIC.len() + 6 + MAX_HEADER + Kernel::MAX_SIDE * Kernel::MAX_SIDE * 8;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    // One byte more than allowed tells a file that is too large without reading all of it.
    file.take(max_file as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() > max_file {
        return Err(format!(
            "larger than any kernel .npy may be ({max_file} bytes: {0}×{0} float64 values)",
            Kernel::MAX_SIDE
        ));
    }
    parse(&bytes)
}

/// Parses the bytes of a `.npy` file (see [`read_2d`]).
fn parse(bytes: &[u8]) -> Result<(usize, usize, Vec<f64>), String> {
    if !bytes.starts_with(MAGIC) {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    if bytes.len() < MAGIC.len() + 4 {
        return Err("truncated .npy header".into());
    }
    let major = bytes[MAGIC.len()];
    let len_at = MAGIC.len() + 2;
    let (header_len, header_at) = match major {
        1 => (
            u16::from_le_bytes([bytes[len_at], bytes[len_at + 1]]) as usize,
            len_at + 2,
        ),
        2 | 3 => {
            let b = bytes
                .get(len_at..len_at + 4)
                .ok_or("truncated .npy header")?;
            (
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
                len_at + 4,
            )
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    if header_len > MAX_HEADER {
        return Err(format!(
            ".npy header of {header_len} bytes (at most {MAX_HEADER})"
        ));
    }
    let data_at = header_at + header_len;
    let header = bytes
        .get(header_at..data_at)
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;

    let descr = quoted(value_of(header, "descr")?)?;
    let fortran_order = match value_of(header, "fortran_order")? {
        v if v.starts_with("False") => false,
        v if v.starts_with("True") => true,
        v => return Err(format!("bad fortran_order `{v}` in the .npy header")),
    };
    let shape = tuple(value_of(header, "shape")?)?;
    let [height, width] = shape[..] else {
        return Err(format!("expected a 2-D array, got shape {shape:?}"));
    };
    super::check_size(height, width).map_err(|e| e.to_string())?;
    let item = match descr {
        "<f4" => 4,
        "<f8" => 8,
        other => {
            return Err(format!(
                "dtype `{other}` is not supported (save the kernel as float32 or float64)"
            ))
        }
    };
    let data = &bytes[data_at..];
    let need = height * width * item;
    if data.len() != need {
        return Err(format!(
            "holds {} bytes of values, a {height}×{width} {descr} array needs {need} (truncated or corrupt)",
            data.len()
        ));
    }
    let stored: Vec<f64> = if item == 4 {
        data.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect()
    };
    let values = if fortran_order {
        // Column-major: entry (i, j) is stored at j·height + i.
        (0..height * width)
            .map(|p| stored[(p % width) * height + p / width])
            .collect()
    } else {
        stored
    };
    Ok((height, width, values))
}

/// The text after `'key':` in the header dict (up to the end of the header); the key must
/// appear exactly once, so that no second `shape` can differ from the one checked.
fn value_of<'a>(header: &'a str, key: &str) -> Result<&'a str, String> {
    let patterns = [format!("'{key}'"), format!("\"{key}\"")];
    let found: Vec<usize> = patterns
        .iter()
        .flat_map(|p| header.match_indices(p.as_str()).map(|(i, m)| i + m.len()))
        .collect();
    let [after] = found[..] else {
        return Err(format!(
            "the .npy header has {} `{key}` keys, expected one",
            found.len()
        ));
    };
    header[after..]
        .trim_start()
        .strip_prefix(':')
        .map(str::trim_start)
        .ok_or_else(|| format!("no value for `{key}` in the .npy header"))
}

/// The string literal at the start of `text` (`'<f8'`).
fn quoted(text: &str) -> Result<&str, String> {
    let bad = || format!("bad descr in the .npy header: {text}");
    let quote = text.chars().next().filter(|c| *c == '\'' || *c == '"');
    let quote = quote.ok_or_else(bad)?;
    let rest = &text[1..];
    rest.find(quote).map(|end| &rest[..end]).ok_or_else(bad)
}

/// The tuple of sizes at the start of `text` (`(9, 9)`, `(81,)`).
fn tuple(text: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("bad shape in the .npy header: {text}");
    let inner = text.strip_prefix('(').ok_or_else(bad)?;
    let inner = &inner[..inner.find(')').ok_or_else(bad)?];
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend([1, 0]);
        b.extend((header.len() as u16).to_le_bytes());
        b.extend(header.as_bytes());
        b.extend(data);
        b
    }

    fn f64s(v: &[f64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_c_and_fortran_order_float32_and_float64() {
        let c = npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
            &f64s(&[1., 2., 3., 4., 5., 6.]),
        );
        assert_eq!(parse(&c).unwrap(), (2, 3, vec![1., 2., 3., 4., 5., 6.]));
        // The same matrix stored column by column.
        let f = npy(
            "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }",
            &f64s(&[1., 4., 2., 5., 3., 6.]),
        );
        assert_eq!(parse(&f).unwrap(), (2, 3, vec![1., 2., 3., 4., 5., 6.]));
        let data: Vec<u8> = [0.5f32, 0.25]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let s = npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }",
            &data,
        );
        assert_eq!(parse(&s).unwrap(), (1, 2, vec![0.5, 0.25]));
    }

    #[test]
    fn refuses_hostile_headers_before_allocating() {
        let huge = npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 100000), }",
            &f64s(&[1.0; 4]),
        );
        let err = parse(&huge).unwrap_err();
        assert!(
            err.contains("100000×100000") && err.contains("1024"),
            "{err}"
        );
        // A shape within bounds but larger than the data.
        let short = npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (9, 9), }",
            &f64s(&[1.0; 4]),
        );
        let err = parse(&short).unwrap_err();
        assert!(
            err.contains("holds 32 bytes") && err.contains("648"),
            "{err}"
        );
        // A second shape key that another parser might read instead.
        let twice = npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), 'shape': (9, 9)}",
            &f64s(&[1.0; 4]),
        );
        assert!(parse(&twice).unwrap_err().contains("2 `shape` keys"));
        let ints = npy(
            "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }",
            &[0; 32],
        );
        assert!(parse(&ints).unwrap_err().contains("`<i8` is not supported"));
        assert!(parse(b"\x93NUMPY\x01").unwrap_err().contains("truncated"));
        assert!(parse(b"PK\x03\x04").unwrap_err().contains("not a .npy"));
    }
}
