//! Finding a dataset's images: the roots are walked recursively (walkdir) and every PNG,
//! JPEG, BMP and TIFF file (by extension, case-insensitive) is taken, in sorted path order so
//! that the image indices, and hence the sampled patches, do not depend on the file system's
//! listing order.
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// The extensions taken as images.
pub const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

/// Files left out, each with the reason.
pub type Skipped = Vec<(PathBuf, String)>;

/// One image file of a dataset, with what the decode cache validates it by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFile {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, nanoseconds since the Unix epoch (0 when unknown).
    pub mtime_ns: u64,
}

/// Whether `path` has one of [`IMAGE_EXTENSIONS`].
pub fn is_image_path(path: &Path) -> bool {
    has_extension(path, &IMAGE_EXTENSIONS)
}

/// Whether `path`'s extension is one of `extensions` (lower case; the file's in any case).
fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.contains(&e.to_ascii_lowercase().as_str()))
}

/// The image files directly in `dir` (not in its sub-folders), sorted by path: the one
/// listing of a folder of test images (`eval`, `lipschitz`, the benchmarks). A folder that
/// cannot be read, or that holds no image, is an error naming it.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let files = list_files(dir, &IMAGE_EXTENSIONS)?;
    if files.is_empty() {
        return Err(DataError::file(
            dir,
            format!("no image ({}) in this folder", IMAGE_EXTENSIONS.join(", ")),
        ));
    }
    Ok(files)
}

/// The files directly in `dir` whose extension is one of `extensions` (lower case; matched
/// in any case), sorted by path; possibly none. A folder that cannot be read is an error
/// naming it. [`list_images`] is this with the image extensions and at least one file.
pub fn list_files(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| DataError::file(dir, format!("cannot read the image folder: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| has_extension(p, extensions))
        .collect();
    files.sort();
    Ok(files)
}

/// All image files under `roots`, sorted by path, plus the entries that could not be listed
/// (path and reason). A root that does not exist is an error; an empty result is not (the
/// caller decides, once it knows how many images decode).
pub fn scan(roots: &[PathBuf]) -> Result<(Vec<ImageFile>, Skipped)> {
    if roots.is_empty() {
        return Err(DataError::Invalid("the dataset has no roots".into()));
    }
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    for root in roots {
        if !root.exists() {
            return Err(DataError::file(root, "dataset root does not exist"));
        }
        for entry in walkdir::WalkDir::new(root).follow_links(true) {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let path = e.path().unwrap_or(root.as_path()).to_path_buf();
                    unreadable.push((path, format!("cannot list: {e}")));
                    continue;
                }
            };
            if !entry.file_type().is_file() || !is_image_path(entry.path()) {
                continue;
            }
            match entry.metadata() {
                Ok(m) => files.push(ImageFile {
                    path: entry.path().to_path_buf(),
                    size: m.len(),
                    mtime_ns: m
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_nanos() as u64),
                }),
                Err(e) => {
                    unreadable.push((entry.path().to_path_buf(), format!("cannot stat: {e}")))
                }
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    Ok((files, unreadable))
}
