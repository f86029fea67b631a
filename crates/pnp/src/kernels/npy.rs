//! A bounded reader of the `.npy` arrays users give as kernels (2-D) and observations (2-D or
//! 3-D `[H, W, C]`), and the writer of `restore`'s lossless `observed.npy`.
//!
//! Written here rather than taken from a crate: the `npy` readers on crates.io go through
//! `ndarray` and trust the header's shape, and the bounds below (checked before anything of
//! the claimed size is allocated) are the point of this module.
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
    let bytes = read_bounded(path, Kernel::MAX_SIDE * Kernel::MAX_SIDE)?;
    parse(&bytes)
}

/// Reads a float32 or float64 array of any rank whose shape `check_shape` accepts (it is
/// called before the values are read) and that holds at most `max_elements` values:
/// `(shape, row-major values)`. Every error is a reason to show after the file's name.
pub(crate) fn read_array(
    path: &Path,
    max_elements: usize,
    check_shape: impl Fn(&[usize]) -> Result<(), String>,
) -> Result<(Vec<usize>, Vec<f64>), String> {
    let bytes = read_bounded(path, max_elements)?;
    parse_array(&bytes, |shape| {
        check_shape(shape)?;
        let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        match n {
            Some(n) if n <= max_elements => Ok(()),
            _ => Err(format!(
                "shape {shape:?} holds more than {max_elements} values"
            )),
        }
    })
}

/// Writes `values` (row-major, of `shape`) as a version 1.0 little-endian float32 `.npy` file,
/// atomically.
pub(crate) fn write_f32(path: &Path, shape: &[usize], values: &[f32]) -> crate::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // NumPy pads the header with spaces and a newline so that the data starts at a multiple
    // of 64 bytes.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut bytes = MAGIC.to_vec();
    bytes.extend([1, 0]);
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in values {
        bytes.extend(v.to_le_bytes());
    }
    gradstep_model::write_atomic(path, &bytes)?;
    Ok(())
}

/// The bytes of `path`, refused when the file is larger than a `.npy` of `max_elements`
/// float64 values can be.
fn read_bounded(path: &Path, max_elements: usize) -> Result<Vec<u8>, String> {
    let max_file = MAGIC.len() + 6 + MAX_HEADER + max_elements * 8;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    // One byte more than allowed tells a file that is too large without reading all of it.
    file.take(max_file as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() > max_file {
        return Err(format!(
            "larger than this .npy may be ({max_file} bytes: {max_elements} float64 values)"
        ));
    }
    Ok(bytes)
}

/// Parses the bytes of a 2-D kernel `.npy` file (see [`read_2d`]).
fn parse(bytes: &[u8]) -> Result<(usize, usize, Vec<f64>), String> {
    let (shape, values) = parse_array(bytes, |shape| {
        let [height, width] = shape[..] else {
            return Err(format!("expected a 2-D array, got shape {shape:?}"));
        };
        super::check_size(height, width).map_err(|e| e.to_string())
    })?;
    Ok((shape[0], shape[1], values))
}

/// Parses the bytes of a `.npy` file whose shape `check_shape` accepts.
fn parse_array(
    bytes: &[u8],
    check_shape: impl Fn(&[usize]) -> Result<(), String>,
) -> Result<(Vec<usize>, Vec<f64>), String> {
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
    check_shape(&shape)?;
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
    let count: usize = shape.iter().product();
    let need = count * item;
    if data.len() != need {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        return Err(format!(
            "holds {} bytes of values, a {} {descr} array needs {need} (truncated or corrupt)",
            data.len(),
            dims.join("×")
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
        // Column-major: the entry of row-major index p, with multi-index (i_0, …, i_{n−1}),
        // is stored at Σ_k i_k · (d_0 ⋯ d_{k−1}).
        (0..count)
            .map(|p| {
                let (mut rest, mut at, mut stride) = (p, 0, 1);
                let mut index = vec![0; shape.len()];
                for (k, &d) in shape.iter().enumerate().rev() {
                    index[k] = rest % d;
                    rest /= d;
                }
                for (k, &d) in shape.iter().enumerate() {
                    at += index[k] * stride;
                    stride *= d;
                }
                stored[at]
            })
            .collect()
    } else {
        stored
    };
    Ok((shape, values))
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
    fn written_float32_arrays_read_back_exactly() {
        let dir = tempfile_dir();
        let path = dir.join("a.npy");
        let values: Vec<f32> = (0..24).map(|i| i as f32 * 0.37 - 1.5).collect();
        write_f32(&path, &[2, 4, 3], &values).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        // The data starts at a multiple of 64 bytes, as NumPy writes it.
        assert_eq!((bytes.len() - values.len() * 4) % 64, 0);
        let (shape, back) = read_array(&path, 100, |_| Ok(())).unwrap();
        assert_eq!(shape, vec![2, 4, 3]);
        let back: Vec<f32> = back.into_iter().map(|v| v as f32).collect();
        assert_eq!(back, values);
        let err = read_array(&path, 10, |_| Ok(())).unwrap_err();
        assert!(err.contains("holds more than 10 values"), "{err}");
        let err = read_array(&path, 100, |s| {
            (s.len() == 2).then_some(()).ok_or("not 2-D".into())
        })
        .unwrap_err();
        assert_eq!(err, "not 2-D");
        // Fortran order of a 3-D array: the first index varies fastest.
        let f = npy(
            "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 1, 2), }",
            &f64s(&[1., 3., 2., 4.]),
        );
        assert_eq!(
            parse_array(&f, |_| Ok(())).unwrap(),
            (vec![2, 1, 2], vec![1., 2., 3., 4.])
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("gradstep-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
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
