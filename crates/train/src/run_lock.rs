//! One trainer per run folder: an exclusive lock on `<run>/.lock`, taken before anything in
//! the folder is written or pruned.
//!
//! Two `gradstep train` on one run (a requeued Slurm job whose old process still runs, a
//! typo) would interleave checkpoints, and one's pruning would delete a file the other
//! needs. The second one is refused with the PID and host the first wrote into the lock
//! file. The lock is an `flock` ([`gradstep_data::file_lock`]): the kernel releases it when
//! its process dies, however it dies, so a requeued job gets it as soon as the old process
//! has exited; the lock file itself stays (removing it would let two processes lock two
//! different files).
//!
//! Under the lock no other trainer of this run is alive, so the temporary files of
//! [`gradstep_model::write_atomic`] found in the run folder were left by a killed one and
//! are removed.
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use gradstep_data::file_lock::{try_lock_exclusive, TryLock};

use crate::error::{Result, TrainError};

/// Name of the lock file in the run folder.
pub(crate) const LOCK_FILE: &str = ".lock";

/// The held lock (released when dropped or when the process dies).
pub(crate) struct RunLock {
    /// `None` where the file system cannot lock (the trainer warned).
    _file: Option<File>,
}

impl RunLock {
    /// Creates `run_dir` if needed and locks it; also returns the messages to print (a
    /// warning when the file system cannot lock, the stale files removed). Refused with
    /// [`TrainError::InUse`] when another process holds the lock: then nothing is written.
    pub fn acquire(run_dir: &Path, subdirs: &[&Path]) -> Result<(RunLock, Vec<String>)> {
        let io = |p: &Path, e| TrainError::Io(p.to_path_buf(), e);
        std::fs::create_dir_all(run_dir).map_err(|e| io(run_dir, e))?;
        let path = run_dir.join(LOCK_FILE);
        // Not truncated on open: the holder's PID is read from it when we lose.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        match try_lock_exclusive(&file) {
            TryLock::Acquired => {}
            TryLock::HeldElsewhere => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(TrainError::InUse(in_use_message(run_dir, &path, &holder)));
            }
            TryLock::Unsupported(e) => {
                let warning = format!(
                    "warning: cannot lock {} ({e}): nothing keeps a second trainer off this run",
                    path.display()
                );
                return Ok((RunLock { _file: None }, vec![warning]));
            }
        }
        let holder = format!("pid {} host {}\n", std::process::id(), hostname());
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(holder.as_bytes()))
            .map_err(|e| io(&path, e))?;
        let mut messages = Vec::new();
        for dir in std::iter::once(run_dir).chain(subdirs.iter().copied()) {
            for removed in remove_atomic_temporaries(dir)? {
                messages.push(format!(
                    "removed {}, left by a trainer that was killed while writing it",
                    removed.display()
                ));
            }
        }
        Ok((RunLock { _file: Some(file) }, messages))
    }
}

/// The refusal: the run folder, and the holder as its lock file names it.
fn in_use_message(run_dir: &Path, lock: &Path, holder: &str) -> String {
    let mut words = holder.split_whitespace();
    let who = match (words.next(), words.next(), words.next(), words.next()) {
        (Some("pid"), Some(pid), Some("host"), Some(host)) => format!("PID {pid} on host {host}"),
        // The holder has the lock but has not written its name yet.
        _ => "another process".to_string(),
    };
    format!(
        "{} is in use: {who} is training in it (it holds {}); wait for it to end or stop it, or choose another run name",
        run_dir.display(),
        lock.display()
    )
}

/// Removes the temporary files of [`gradstep_model::write_atomic`] in `dir` (none when
/// `dir` does not exist); their paths.
fn remove_atomic_temporaries(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::Io(dir.to_path_buf(), e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::Io(dir.to_path_buf(), e))?;
        if !gradstep_model::is_write_atomic_temp(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        std::fs::remove_file(&path).map_err(|e| TrainError::Io(path.clone(), e))?;
        removed.push(path);
    }
    removed.sort();
    Ok(removed)
}

/// This machine's name (`?` when it cannot be read).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; gethostname writes at most
    // that many and we read up to the first NUL (or the whole buffer) only.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "?".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    if name.is_empty() {
        "?".into()
    } else {
        // One word, so that the lock file parses back.
        name.replace(char::is_whitespace, "_")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_released_with_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let (first, _) = RunLock::acquire(&run, &[]).unwrap();
        let text = std::fs::read_to_string(run.join(LOCK_FILE)).unwrap();
        assert_eq!(
            text,
            format!("pid {} host {}\n", std::process::id(), hostname())
        );
        let err = match RunLock::acquire(&run, &[]) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a second lock on one run folder was granted"),
        };
        let want = format!("PID {} on host {}", std::process::id(), hostname());
        assert!(err.contains(&want), "{err}");
        assert!(err.contains(&run.display().to_string()), "{err}");
        drop(first);
        assert!(RunLock::acquire(&run, &[]).is_ok());
    }

    #[test]
    fn only_write_atomic_temporaries_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let ckpts = run.join("checkpoints");
        std::fs::create_dir_all(&ckpts).unwrap();
        let stale = [
            run.join(".config.json.tmp-4194301"),
            ckpts.join(".step-00000004.safetensors.tmp-12"),
        ];
        let kept = [
            ckpts.join("step-00000004.safetensors"),
            ckpts.join(".step-00000004.safetensors.tmp-x1"),
            run.join("notes.tmp-12"),
        ];
        for p in stale.iter().chain(&kept) {
            std::fs::write(p, b"x").unwrap();
        }
        let (_lock, messages) = RunLock::acquire(&run, &[&ckpts]).unwrap();
        assert_eq!(messages.len(), 2, "{messages:?}");
        for p in &stale {
            assert!(!p.exists(), "{} is left", p.display());
        }
        for p in &kept {
            assert!(p.exists(), "{} was removed", p.display());
        }
    }
}
