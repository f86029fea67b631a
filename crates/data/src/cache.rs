//! The decode-once cache: every image of a dataset decoded once into 8-bit pixels and stored
//! in one memory-mapped file (memmap2), so that training cuts patches without decoding.
//!
//! **Layout** (`<cache_dir>/decoded-c<C>-<hash of the roots>.bin`): 64-byte header (magic
//! `GSDCACH1`, then the index's offset and length as little-endian `u64`), the pixels of each
//! image as interleaved `[H, W, C]` bytes one after the other, then a JSON index (per image:
//! path, size, mtime, height, width, offset; and the files that failed to decode, with why).
//!
//! **Validation**: the index must list exactly the files the scan found, with the same sizes
//! and modification times, and the same channel count; otherwise the cache is stale and is
//! rebuilt (written to a temporary file, then renamed over the old one: atomic).
//!
//! **Temporary files** (`<cache file stem>.tmp-<pid>`, as large as the cache): the writer
//! holds an exclusive [`crate::file_lock`] on its temporary file. A build that fails or is
//! stopped (the `stop` flag, set by the trainer's SIGINT / SIGTERM handler) removes it; one
//! whose process was killed (SIGKILL, power loss) leaves it, and the next
//! [`DecodedCache::open_or_build`] on the folder removes every such file that nobody holds
//! locked: its writer is dead, whichever host or PID it had.
//!
//! **Cost**: disk = `Σ H·W·C` bytes, i.e. the raw 8-bit pixels: ≈ 8.3 MB per 2040×1356 colour
//! image, ≈ 31 GB for the ~8,700-image standard set (CBSD400 0.2 GB, Waterloo ≈ 2.5 GB,
//! DIV2K 6.9 GB, Flickr2K ≈ 22 GB), 17.5 MB for the 13 scikit-image samples. Memory: the
//! file is mapped, not read: the OS pages in what patches touch and evicts under pressure,
//! so resident memory is bounded by the page cache, not by the dataset. Building decodes
//! `2 × threads` images at a time (≈ 17 MB each for 2K colour images).
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::Mmap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::ImageFile;
use crate::error::{DataError, Result};
use crate::file_lock::{try_lock_exclusive, TryLock};
use crate::image_io;

const MAGIC: &[u8; 8] = b"GSDCACH1";
const HEADER: u64 = 64;

/// One decoded image in the cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub file: ImageFile,
    pub h: usize,
    pub w: usize,
    /// Byte offset of the pixels in the cache file.
    pub offset: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Index {
    channels: i64,
    entries: Vec<Entry>,
    failed: Vec<(ImageFile, String)>,
}

/// An opened, validated cache.
pub(crate) struct DecodedCache {
    map: Mmap,
    pub entries: Vec<Entry>,
    channels: usize,
    /// Files that failed to decode when the cache was built (path, reason).
    pub failed: Vec<(PathBuf, String)>,
    /// Whether this call (re)built the file.
    pub rebuilt: bool,
}

impl DecodedCache {
    /// The 8-bit interleaved pixels of entry `i`.
    pub fn pixels(&self, i: usize) -> &[u8] {
        let e = &self.entries[i];
        let start = e.offset as usize;
        &self.map[start..start + e.h * e.w * self.channels]
    }

    /// Opens the cache of `files` under `dir`, building it when missing or stale; first
    /// removes the temporary files of dead builds in `dir`. A build stops at the next group
    /// of images once `stop` is set, removes its temporary file and returns
    /// [`DataError::Interrupted`].
    pub fn open_or_build(
        dir: &Path,
        roots: &[PathBuf],
        files: &[ImageFile],
        channels: i64,
        pool: &rayon::ThreadPool,
        stop: &AtomicBool,
    ) -> Result<DecodedCache> {
        std::fs::create_dir_all(dir).map_err(|e| DataError::file(dir, e))?;
        remove_dead_temporaries(dir)?;
        let key = roots.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, r| {
            let abs = std::fs::canonicalize(r).unwrap_or_else(|_| r.clone());
            abs.to_string_lossy()
                .bytes()
                .chain([0u8])
                .fold(h, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
        });
        let path = dir.join(format!("decoded-c{channels}-{key:016x}.bin"));
        if let Some(c) = Self::open_valid(&path, files, channels)? {
            return Ok(c);
        }
        Self::build(&path, files, channels, pool, stop)?;
        let mut c = Self::open_valid(&path, files, channels)?
            .ok_or_else(|| DataError::file(&path, "the cache just built does not validate"))?;
        c.rebuilt = true;
        Ok(c)
    }

    /// The cache at `path` if it exists and matches `files`; `None` when missing or stale.
    fn open_valid(path: &Path, files: &[ImageFile], channels: i64) -> Result<Option<Self>> {
        let Ok(f) = File::open(path) else {
            return Ok(None);
        };
        // SAFETY: the file is only ever replaced by rename, never modified in place, so the
        // mapped bytes do not change under us (a concurrent truncation by another program
        // is the one case memmap2 cannot guard against).
        let Ok(map) = (unsafe { Mmap::map(&f) }) else {
            return Ok(None);
        };
        let Some(index) = read_index(&map) else {
            return Ok(None);
        };
        let mut listed: Vec<&ImageFile> = index.entries.iter().map(|e| &e.file).collect();
        listed.extend(index.failed.iter().map(|(f, _)| f));
        listed.sort_by(|a, b| a.path.cmp(&b.path));
        let c = channels as usize;
        let fits = index
            .entries
            .iter()
            .all(|e| e.offset as usize + e.h * e.w * c <= map.len());
        if index.channels != channels || !fits || listed.len() != files.len() {
            return Ok(None);
        }
        if listed.iter().zip(files).any(|(a, b)| *a != b) {
            return Ok(None);
        }
        Ok(Some(DecodedCache {
            map,
            entries: index.entries,
            channels: c,
            failed: index
                .failed
                .into_iter()
                .map(|(f, why)| (f.path, why))
                .collect(),
            rebuilt: false,
        }))
    }

    fn build(
        path: &Path,
        files: &[ImageFile],
        channels: i64,
        pool: &rayon::ThreadPool,
        stop: &AtomicBool,
    ) -> Result<()> {
        let tmp = path.with_extension(format!("{TEMP_INFIX}{}", std::process::id()));
        let io = |e: std::io::Error| DataError::file(&tmp, e);
        // Removed on every early return (error or stop); disarmed by the final rename.
        let mut guard = TempFile(Some(tmp.clone()));
        let mut out = BufWriter::new(create_locked(&tmp).map_err(io)?);
        out.write_all(&[0u8; HEADER as usize]).map_err(io)?;
        let mut index = Index {
            channels,
            entries: Vec::new(),
            failed: Vec::new(),
        };
        let mut offset = HEADER;
        let chunk = 2 * pool.current_num_threads().max(1);
        for group in files.chunks(chunk) {
            if stop.load(Ordering::SeqCst) {
                drop(out);
                drop(guard);
                return Err(DataError::Interrupted(format!(
                    "interrupted while building the decode cache {}: its partial file {} was removed",
                    path.display(),
                    tmp.display()
                )));
            }
            let decoded: Vec<_> = pool.install(|| {
                group
                    .par_iter()
                    .map(|f| image_io::decode_u8(&f.path, channels))
                    .collect()
            });
            for (f, d) in group.iter().zip(decoded) {
                match d {
                    Ok((px, h, w)) => {
                        out.write_all(&px).map_err(io)?;
                        index.entries.push(Entry {
                            file: f.clone(),
                            h,
                            w,
                            offset,
                        });
                        offset += px.len() as u64;
                    }
                    Err(e) => index.failed.push((f.clone(), reason(&e))),
                }
            }
        }
        let json = serde_json::to_vec(&index).map_err(|e| DataError::file(&tmp, e))?;
        out.write_all(&json).map_err(io)?;
        let mut f = out.into_inner().map_err(|e| io(e.into_error()))?;
        f.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&offset.to_le_bytes());
        header.extend_from_slice(&(json.len() as u64).to_le_bytes());
        f.write_all(&header).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|e| DataError::file(path, e))?;
        guard.0 = None;
        // The lock goes with the file, now under its final name.
        drop(f);
        Ok(())
    }
}

/// `<stem>.tmp-<pid>`: the temporary file of a build (see the module doc).
const TEMP_INFIX: &str = "tmp-";

/// Removes the file it names when dropped (a build's temporary file on an early return);
/// `None` once the file has been renamed into place.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Creates (truncating) `tmp` and locks it. A cleaner in another process may lock and
/// remove the new file between the two steps; then the path no longer names the file we
/// hold, and we create it again.
fn create_locked(tmp: &Path) -> std::io::Result<File> {
    loop {
        let f = File::create(tmp)?;
        match try_lock_exclusive(&f) {
            TryLock::Acquired => {}
            // Only the same PID on another host sharing the folder can hold this name.
            TryLock::HeldElsewhere => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    "another process is writing this temporary file",
                ))
            }
            // No locking on this file system: nothing can remove the file under us either.
            TryLock::Unsupported(_) => return Ok(f),
        }
        let ours = f.metadata()?;
        match std::fs::metadata(tmp) {
            Ok(now) if same_file(&now, &ours) => return Ok(f),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    true
}

/// Whether `name` is a build's temporary file: `decoded-c<C>-<key>.tmp-<pid>`.
fn is_build_temporary(name: &str) -> bool {
    name.starts_with("decoded-c")
        && name
            .rsplit_once(&format!(".{TEMP_INFIX}"))
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the temporary files in `dir` whose writer is dead: those nobody holds locked
/// (a file that cannot be removed is reported, not fatal). On a file system without locks
/// nothing is removed (a live writer cannot be told apart).
fn remove_dead_temporaries(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::file(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !is_build_temporary(&name.to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let Ok(f) = File::open(&path) else { continue };
        if let TryLock::Acquired = try_lock_exclusive(&f) {
            let mb = f.metadata().map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
            // Not fatal: in a shared folder the file may be another user's to remove.
            match std::fs::remove_file(&path) {
                Ok(()) => eprintln!(
                    "gradstep-data: removed {} ({mb:.1} MB), left by a cache build that was killed",
                    path.display()
                ),
                Err(e) => eprintln!(
                    "gradstep-data: warning: cannot remove {} ({mb:.1} MB), left by a cache build that was killed: {e}",
                    path.display()
                ),
            }
        }
    }
    Ok(())
}

/// The reason of a per-file error, without repeating the path.
pub(crate) fn reason(e: &DataError) -> String {
    match e {
        DataError::File { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

fn read_index(map: &[u8]) -> Option<Index> {
    if map.len() < HEADER as usize || &map[..8] != MAGIC {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(map[i..i + 8].try_into().expect("8 bytes")) as usize;
    let (at, len) = (word(8), word(16));
    let end = at.checked_add(len)?;
    if end > map.len() {
        return None;
    }
    serde_json::from_slice(&map[at..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_build_temporaries_nobody_holds_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("decoded-c3-00000000000000aa.tmp-4194301");
        let live = dir.path().join("decoded-c3-00000000000000bb.tmp-4194302");
        let other = [
            "decoded-c3-00000000000000aa.bin",
            "decoded-c3-00000000000000aa.tmp-12x",
            "notes.tmp-12",
        ];
        std::fs::write(&dead, b"partial").unwrap();
        let held = create_locked(&live).unwrap();
        for name in other {
            std::fs::write(dir.path().join(name), b"keep").unwrap();
        }
        remove_dead_temporaries(dir.path()).unwrap();
        assert!(!dead.exists(), "the dead build's file is removed");
        assert!(live.exists(), "a file a live build holds is kept");
        for name in other {
            assert!(dir.path().join(name).exists(), "{name} is not ours");
        }
        drop(held);
        remove_dead_temporaries(dir.path()).unwrap();
        assert!(!live.exists(), "once its writer is gone, it is removed");
    }
}
