//! [`ProcessGroup`]: one rank's handle on a c10d store and process group (Gloo or NCCL),
//! with the collectives data-parallel training needs (all-reduce of a few large flat
//! buckets, broadcast, barrier), each bounded by the timeout given at creation.
use std::ffi::{c_void, CStr, CString};
use std::path::PathBuf;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use tch::Tensor;

use crate::error::DistError;

mod ffi {
    use std::ffi::{c_char, c_void};
    extern "C" {
        pub fn gradstep_dist_last_error() -> *const c_char;
        pub fn gradstep_dist_quiet_logs();
        pub fn gradstep_dist_store_tcp(
            host: *const c_char,
            port: i32,
            is_server: i32,
            world: i32,
            timeout_ms: i64,
        ) -> *mut c_void;
        pub fn gradstep_dist_store_file(
            path: *const c_char,
            world: i32,
            timeout_ms: i64,
        ) -> *mut c_void;
        pub fn gradstep_dist_store_free(store: *mut c_void);
        pub fn gradstep_dist_store_set(
            store: *mut c_void,
            key: *const c_char,
            value: *const c_char,
        ) -> i32;
        pub fn gradstep_dist_store_check(
            store: *mut c_void,
            keys: *const *const c_char,
            count: i32,
        ) -> i32;
        pub fn gradstep_dist_group_new(
            store: *mut c_void,
            rank: i32,
            world: i32,
            backend: i32,
            timeout_ms: i64,
        ) -> *mut c_void;
        pub fn gradstep_dist_group_free(group: *mut c_void);
        pub fn gradstep_dist_all_reduce(
            group: *mut c_void,
            tensors: *const *mut c_void,
            count: i32,
            op: i32,
        ) -> i32;
        pub fn gradstep_dist_broadcast(
            group: *mut c_void,
            tensors: *const *mut c_void,
            count: i32,
            root: i32,
        ) -> i32;
        pub fn gradstep_dist_barrier(group: *mut c_void) -> i32;
    }
}

/// The message of the shim's last failure on this thread.
fn last_error() -> String {
    // SAFETY: the shim returns a pointer to its thread-local std::string's NUL-terminated
    // buffer, valid until the next shim call on this thread; it is copied at once.
    unsafe { CStr::from_ptr(ffi::gradstep_dist_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// The collective engine: NCCL for CUDA tensors, Gloo for CPU tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Gloo,
    Nccl,
}

impl Backend {
    /// NCCL on CUDA, Gloo on the CPU.
    pub fn for_device(device: tch::Device) -> Self {
        if device.is_cuda() {
            Backend::Nccl
        } else {
            Backend::Gloo
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }

    /// Whether this build can create it (NCCL needs a libtorch with CUDA).
    pub fn available(self) -> bool {
        match self {
            Backend::Gloo => true,
            Backend::Nccl => cfg!(gradstep_dist_nccl),
        }
    }
}

/// How an all-reduce combines the ranks' tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
    /// The sum divided by the world size.
    Average,
}

/// Where the ranks meet: rank 0 hosts a TCPStore, or all share a file (one machine or a
/// shared file system).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendezvous {
    Tcp { host: String, port: u16 },
    File(PathBuf),
}

impl std::fmt::Display for Rendezvous {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rendezvous::Tcp { host, port } => write!(f, "{host}:{port}"),
            Rendezvous::File(path) => write!(f, "{}", path.display()),
        }
    }
}

fn c_string(s: &str) -> Result<CString, DistError> {
    CString::new(s).map_err(|_| DistError::Nul(s.into()))
}

/// A c10d store handle, freed on drop.
struct Store {
    raw: NonNull<c_void>,
}

impl Store {
    fn set(&self, key: &str) -> Result<(), String> {
        let key = c_string(key).map_err(|e| e.to_string())?;
        // SAFETY: live store handle; both strings are valid NUL-terminated for the call.
        let rc =
            unsafe { ffi::gradstep_dist_store_set(self.raw.as_ptr(), key.as_ptr(), c"1".as_ptr()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(last_error())
        }
    }

    /// The ranks whose key in `keys` (indexed by rank) is not in the store.
    fn missing(&self, keys: &[String]) -> Result<Vec<usize>, String> {
        let mut missing = Vec::new();
        for (rank, key) in keys.iter().enumerate() {
            let key = c_string(key).map_err(|e| e.to_string())?;
            let list = [key.as_ptr()];
            // SAFETY: live store handle; `list` holds one valid C string for the call.
            match unsafe { ffi::gradstep_dist_store_check(self.raw.as_ptr(), list.as_ptr(), 1) } {
                1 => {}
                0 => missing.push(rank),
                _ => return Err(last_error()),
            }
        }
        Ok(missing)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: the handle came from the shim and is freed once, here.
        unsafe { ffi::gradstep_dist_store_free(self.raw.as_ptr()) }
    }
}

/// One rank's membership in a data-parallel run.
pub struct ProcessGroup {
    group: NonNull<c_void>,
    /// Dropped after `group` (fields drop after `Drop::drop`), which holds its own reference.
    store: Store,
    rank: usize,
    world_size: usize,
    backend: Backend,
    timeout: Duration,
}

// SAFETY: the store and the process group are c10d objects owned only by this handle; c10d
// allows using them from any thread (one at a time, which `&mut`-free methods on a non-Sync
// type guarantee).
unsafe impl Send for ProcessGroup {}

/// Store keys of the join and fault checks (c10d's own keys live under the backend's prefix).
fn join_key(rank: usize) -> String {
    format!("gradstep/join/{rank}")
}
fn fault_key(rank: usize) -> String {
    format!("gradstep/fault/{rank}")
}

impl ProcessGroup {
    /// Joins the run as `rank` of `world_size`: creates (rank 0) or reaches the store, waits
    /// until every rank has joined (naming those that did not within `timeout`), then
    /// creates the `backend` process group. Every collective is bounded by `timeout`.
    pub fn new(
        rendezvous: &Rendezvous,
        rank: usize,
        world_size: usize,
        backend: Backend,
        timeout: Duration,
    ) -> Result<Self, DistError> {
        if !backend.available() {
            return Err(DistError::NcclUnavailable);
        }
        if std::env::var_os("TORCH_CPP_LOG_LEVEL").is_none() {
            // SAFETY: sets an int flag of c10's logging; no arguments.
            unsafe { ffi::gradstep_dist_quiet_logs() };
        }
        let at = rendezvous.to_string();
        let timeout_ms = timeout.as_millis().min(i64::MAX as u128) as i64;
        let raw = match rendezvous {
            Rendezvous::Tcp { host, port } => {
                let host = c_string(host)?;
                // SAFETY: `host` is a valid NUL-terminated string for the call's duration.
                unsafe {
                    ffi::gradstep_dist_store_tcp(
                        host.as_ptr(),
                        i32::from(*port),
                        i32::from(rank == 0),
                        world_size as i32,
                        timeout_ms,
                    )
                }
            }
            Rendezvous::File(path) => {
                let path = c_string(&path.to_string_lossy())?;
                // SAFETY: `path` is a valid NUL-terminated string for the call's duration.
                unsafe {
                    ffi::gradstep_dist_store_file(path.as_ptr(), world_size as i32, timeout_ms)
                }
            }
        };
        let store = Store {
            raw: NonNull::new(raw).ok_or_else(|| DistError::Rendezvous {
                at: at.clone(),
                message: last_error(),
            })?,
        };
        join(&store, &at, rank, world_size, timeout)?;
        // SAFETY: `store` is a live store handle from the shim.
        let group = unsafe {
            ffi::gradstep_dist_group_new(
                store.raw.as_ptr(),
                rank as i32,
                world_size as i32,
                i32::from(backend == Backend::Nccl),
                timeout_ms,
            )
        };
        let group = NonNull::new(group).ok_or_else(|| DistError::Group {
            backend: backend.name(),
            rank,
            world: world_size,
            message: last_error(),
        })?;
        Ok(ProcessGroup {
            group,
            store,
            rank,
            world_size,
            backend,
            timeout,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// After a failed collective: which ranks stopped answering. Every surviving rank leaves
    /// a key in the store; the ranks without one after a grace period (at most 10 s, within
    /// the timeout) are dead or hung. If the store itself is gone, rank 0 (its host) is.
    fn diagnose(&self, op: &'static str, message: String) -> DistError {
        let lost = |missing| DistError::RankLost {
            op,
            rank: self.rank,
            missing,
            message: message.clone(),
        };
        if self.store.set(&fault_key(self.rank)).is_err() {
            return lost(vec![0]);
        }
        let keys: Vec<String> = (0..self.world_size).map(fault_key).collect();
        let deadline = Instant::now() + self.timeout.min(Duration::from_secs(10));
        loop {
            match self.store.missing(&keys) {
                Err(_) => return lost(vec![0]),
                Ok(missing) if missing.is_empty() => {
                    return DistError::Collective {
                        op,
                        rank: self.rank,
                        message,
                    }
                }
                Ok(missing) if Instant::now() >= deadline => return lost(missing),
                Ok(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// All-reduces `tensors` in place (every rank passes tensors of the same shapes, dtypes
    /// and device, in the same order). Pass a few large flat buckets: each tensor is one
    /// c10d call, all issued before the first wait.
    pub fn all_reduce(&self, tensors: &[Tensor], op: ReduceOp) -> Result<(), DistError> {
        let code = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Max => 1,
            ReduceOp::Average => 2,
        };
        let list: Vec<*mut c_void> = tensors.iter().map(|t| t.as_ptr() as *mut c_void).collect();
        // SAFETY: live group handle; `list` holds `tensors.len()` pointers to at::Tensor
        // objects that `tensors` keeps alive for the call; the shim copies the handles
        // (sharing storage) and reduces in place.
        let rc = unsafe {
            ffi::gradstep_dist_all_reduce(
                self.group.as_ptr(),
                list.as_ptr(),
                list.len() as i32,
                code,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(self.diagnose("all-reduce", last_error()))
        }
    }

    /// Overwrites `tensors` on every rank with rank `root`'s.
    pub fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<(), DistError> {
        let list: Vec<*mut c_void> = tensors.iter().map(|t| t.as_ptr() as *mut c_void).collect();
        // SAFETY: as in `all_reduce`.
        let rc = unsafe {
            ffi::gradstep_dist_broadcast(
                self.group.as_ptr(),
                list.as_ptr(),
                list.len() as i32,
                root as i32,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(self.diagnose("broadcast", last_error()))
        }
    }

    /// Waits until every rank reaches this point (or the timeout).
    pub fn barrier(&self) -> Result<(), DistError> {
        // SAFETY: live group handle.
        let rc = unsafe { ffi::gradstep_dist_barrier(self.group.as_ptr()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(self.diagnose("barrier", last_error()))
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: the handle came from the shim and is freed once, here, before its store.
        unsafe { ffi::gradstep_dist_group_free(self.group.as_ptr()) }
    }
}

/// Announces `rank` in the store and waits for the others, naming the ranks still missing
/// at the timeout.
fn join(
    store: &Store,
    at: &str,
    rank: usize,
    world_size: usize,
    timeout: Duration,
) -> Result<(), DistError> {
    let failed = |message| DistError::Rendezvous {
        at: at.into(),
        message,
    };
    store.set(&join_key(rank)).map_err(failed)?;
    let keys: Vec<String> = (0..world_size).map(join_key).collect();
    let deadline = Instant::now() + timeout;
    loop {
        let missing = store.missing(&keys).map_err(failed)?;
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(DistError::RanksMissing {
                at: at.into(),
                missing,
                world: world_size,
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
