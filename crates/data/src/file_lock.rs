//! Advisory whole-file locks (`flock(2)`), the one locking primitive of gradstep: the run
//! lock of `gradstep train` and the decode cache's temporary file use it.
//!
//! An `flock` lock belongs to the open file: it is released when the file is closed or its
//! process dies, whatever the cause (SIGKILL, OOM killer), so a lock never outlives its
//! holder and no stale lock has to be broken by hand. Files are opened close-on-exec by the
//! standard library, so a child process does not inherit a lock. On NFS, Linux maps `flock`
//! to POSIX locks held by the server; file systems without lock support (e.g. Lustre mounted
//! without `-o flock`) give an error, which callers treat as "no locking available".
use std::fs::File;
use std::io;

/// Outcome of [`try_lock_exclusive`].
#[derive(Debug)]
pub enum TryLock {
    /// The lock is ours until the file is closed.
    Acquired,
    /// Another open file (this process or another) holds it.
    HeldElsewhere,
    /// The file system cannot lock (the error says why).
    Unsupported(io::Error),
}

/// Tries to take an exclusive lock on `file` without waiting.
pub fn try_lock_exclusive(file: &File) -> TryLock {
    imp::try_lock_exclusive(file)
}

#[cfg(unix)]
mod imp {
    use std::fs::File;
    use std::io;
    use std::os::unix::io::AsRawFd;

    use super::TryLock;

    pub fn try_lock_exclusive(file: &File) -> TryLock {
        loop {
            // SAFETY: `flock` only reads the descriptor, which `file` keeps open for the
            // duration of the call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return TryLock::Acquired;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) => return TryLock::HeldElsewhere,
                _ => return TryLock::Unsupported(err),
            }
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use std::fs::File;
    use std::io;

    use super::TryLock;

    pub fn try_lock_exclusive(_file: &File) -> TryLock {
        TryLock::Unsupported(io::Error::new(
            io::ErrorKind::Unsupported,
            "file locks are implemented for Unix only",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_file_cannot_take_the_lock_until_the_first_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = File::create(&path).unwrap();
        assert!(matches!(try_lock_exclusive(&first), TryLock::Acquired));
        let second = File::open(&path).unwrap();
        assert!(matches!(
            try_lock_exclusive(&second),
            TryLock::HeldElsewhere
        ));
        drop(first);
        assert!(matches!(try_lock_exclusive(&second), TryLock::Acquired));
    }
}
