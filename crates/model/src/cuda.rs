//! GPU switches, statistics and CUDA graphs that tch's C API does not expose, from a small
//! C++ shim (`csrc/cuda_ext.cpp`, compiled against the same libtorch when it has CUDA).
//! Without CUDA every function is a harmless no-op (and [`CudaGraph::new`] says so), so
//! callers need no `cfg`. Autocast regions live in [`crate::autocast`] (re-exported here).
//!
//! Every shim entry point catches C++ exceptions and reports them by its return value, so no
//! exception unwinds into Rust: that, and the arguments each `unsafe` block names, is what
//! makes the calls sound.
use tch::Device;

pub use crate::autocast::{autocast, autocast_available, bf16_autocast, without_autocast};

#[cfg(gradstep_cuda_ext)]
mod ffi {
    extern "C" {
        pub fn gradstep_set_cudnn_tf32(allow: i32) -> i32;
        pub fn gradstep_cuda_peak_allocated(device: i32) -> i64;
        pub fn gradstep_cuda_allocated(device: i32) -> i64;
        pub fn gradstep_cuda_reset_peak(device: i32) -> i32;
        pub fn gradstep_cuda_empty_cache() -> i32;
    }
}

#[cfg(gradstep_cuda_graphs)]
mod graph_ffi {
    extern "C" {
        pub fn gradstep_graph_last_error() -> *const std::os::raw::c_char;
        pub fn gradstep_graph_new(device: i32) -> *mut std::ffi::c_void;
        pub fn gradstep_graph_free(graph: *mut std::ffi::c_void);
        pub fn gradstep_graph_enter_side_stream(graph: *mut std::ffi::c_void) -> i32;
        pub fn gradstep_graph_leave_side_stream(graph: *mut std::ffi::c_void) -> i32;
        pub fn gradstep_graph_capture_begin(graph: *mut std::ffi::c_void) -> i32;
        pub fn gradstep_graph_capture_end(graph: *mut std::ffi::c_void) -> i32;
        pub fn gradstep_graph_replay(graph: *mut std::ffi::c_void) -> i32;
    }
}

/// Why a [`CudaGraph`] could not be created, captured or replayed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CudaGraphError {
    /// CUDA graphs cannot run here: a CPU device, or a build without CUDA graphs.
    #[error("CUDA graphs are not available: {reason}")]
    Unavailable {
        /// What is missing.
        reason: String,
    },
    /// libtorch failed at one stage of the graph's life.
    #[error("CUDA graph {stage}: {message}")]
    Failed {
        /// `creation`, `side stream`, `capture begin`, `capture end` or `replay`.
        stage: &'static str,
        /// libtorch's message.
        message: String,
    },
    /// The captured closure itself failed; the capture was discarded.
    #[error("during CUDA graph capture: {message}")]
    Capture {
        /// The closure's error, as it displays.
        message: String,
    },
}

/// Lets cuDNN use TF32 for float32 convolutions (libtorch's default) or forbids it (strict
/// float32, for accuracy checks). Returns whether it took effect.
pub fn set_cudnn_tf32(allow: bool) -> bool {
    #[cfg(gradstep_cuda_ext)]
    {
        // SAFETY: a plain integer in; the shim catches every C++ exception (-1).
        tch::Cuda::is_available() && unsafe { ffi::gradstep_set_cudnn_tf32(i32::from(allow)) } == 0
    }
    #[cfg(not(gradstep_cuda_ext))]
    {
        let _ = allow;
        false
    }
}

fn cuda_index(device: Device) -> Option<i32> {
    match device {
        Device::Cuda(i) if tch::Cuda::is_available() => Some(i as i32),
        _ => None,
    }
}

/// Peak bytes held by tensors on a CUDA `device` since the last [`reset_peak`] (`None` on
/// the CPU or without the shim).
pub fn peak_allocated(device: Device) -> Option<u64> {
    let _i = cuda_index(device)?;
    #[cfg(gradstep_cuda_ext)]
    {
        // SAFETY: `_i` is a CUDA device index libtorch reported; the shim catches every C++
        // exception (-1, refused by `try_from`).
        u64::try_from(unsafe { ffi::gradstep_cuda_peak_allocated(_i) }).ok()
    }
    #[cfg(not(gradstep_cuda_ext))]
    None
}

/// Bytes currently held by tensors on a CUDA `device`.
pub fn allocated(device: Device) -> Option<u64> {
    let _i = cuda_index(device)?;
    #[cfg(gradstep_cuda_ext)]
    {
        // SAFETY: as in `peak_allocated`.
        u64::try_from(unsafe { ffi::gradstep_cuda_allocated(_i) }).ok()
    }
    #[cfg(not(gradstep_cuda_ext))]
    None
}

/// Starts a new peak-memory measurement on a CUDA `device`.
pub fn reset_peak(device: Device) {
    if let Some(_i) = cuda_index(device) {
        #[cfg(gradstep_cuda_ext)]
        // SAFETY: `_i` is a CUDA device index libtorch reported; the shim catches every C++
        // exception.
        unsafe {
            ffi::gradstep_cuda_reset_peak(_i);
        }
    }
}

/// Returns the CUDA caching allocator's unused blocks to the driver (no-op on the CPU).
pub fn empty_cache() {
    #[cfg(gradstep_cuda_ext)]
    if tch::Cuda::is_available() {
        // SAFETY: no arguments; the shim catches every C++ exception.
        unsafe {
            ffi::gradstep_cuda_empty_cache();
        }
    }
}

/// A CUDA graph: work captured once on a side stream, then replayed with one launch.
///
/// What a captured closure may do: launch kernels on fixed-shape tensors that outlive the
/// graph (inputs are refreshed by writing into them before [`CudaGraph::replay`]). What it
/// may not: read anything back to the host (`double_value`, `to_vec`, a host branch on a
/// device value), use host numbers that change between replays (they are baked in), or
/// allocate tensors it expects to see again outside (they live in the graph's private
/// memory pool). Warm up with [`CudaGraph::on_side_stream`] first: cuDNN's autotuning and
/// libtorch's lazy allocations must not happen during capture.
#[derive(Debug)]
pub struct CudaGraph {
    #[cfg(gradstep_cuda_graphs)]
    handle: *mut std::ffi::c_void,
}

#[cfg(gradstep_cuda_graphs)]
use graph_ffi as gffi;

#[cfg(gradstep_cuda_graphs)]
fn graph_error(stage: &'static str) -> CudaGraphError {
    // SAFETY: the shim returns a pointer to its thread-local `std::string`'s NUL-terminated
    // buffer, valid until the next failing shim call on this thread; it is copied out at once.
    let message = unsafe { std::ffi::CStr::from_ptr(gffi::gradstep_graph_last_error()) };
    CudaGraphError::Failed {
        stage,
        message: message.to_string_lossy().into_owned(),
    }
}

impl CudaGraph {
    /// An empty graph for a CUDA `device`; an error on the CPU or without the shim.
    pub fn new(device: Device) -> std::result::Result<Self, CudaGraphError> {
        let Some(_i) = cuda_index(device) else {
            return Err(CudaGraphError::Unavailable {
                reason: format!("they need a CUDA device, not {device:?}"),
            });
        };
        #[cfg(gradstep_cuda_graphs)]
        {
            // SAFETY: `_i` is a CUDA device index libtorch reported; the shim catches every
            // C++ exception and returns null then, which is checked.
            let handle = unsafe { gffi::gradstep_graph_new(_i) };
            if handle.is_null() {
                return Err(graph_error("creation"));
            }
            Ok(CudaGraph { handle })
        }
        #[cfg(not(gradstep_cuda_graphs))]
        Err(CudaGraphError::Unavailable {
            reason: "this build has none (libtorch without CUDA, or no CUDA crt headers)".into(),
        })
    }

    /// Runs `f` on the graph's side stream (warm-up before capture), then makes the previous
    /// stream wait for it.
    pub fn on_side_stream<T>(
        &mut self,
        f: impl FnOnce() -> T,
    ) -> std::result::Result<T, CudaGraphError> {
        #[cfg(gradstep_cuda_graphs)]
        {
            // SAFETY: `self.handle` is the non-null graph `new` created, freed only by `Drop`
            // (so alive while `&mut self` is); the shim catches every C++ exception.
            if unsafe { gffi::gradstep_graph_enter_side_stream(self.handle) } != 0 {
                return Err(graph_error("side stream"));
            }
            let out = f();
            // SAFETY: as above.
            if unsafe { gffi::gradstep_graph_leave_side_stream(self.handle) } != 0 {
                return Err(graph_error("side stream"));
            }
            Ok(out)
        }
        #[cfg(not(gradstep_cuda_graphs))]
        Ok(f())
    }

    /// Captures the kernels `f` launches (they do not run now). If `f` itself fails, the
    /// capture is ended and discarded and the error returned; the graph must not be replayed.
    pub fn capture<T, E: std::fmt::Display>(
        &mut self,
        f: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<T, CudaGraphError> {
        #[cfg(gradstep_cuda_graphs)]
        {
            let handle = self.handle;
            self.on_side_stream(|| {
                // SAFETY: `handle` is this graph's live handle (`&mut self` is held for the
                // whole capture); the shim catches every C++ exception.
                if unsafe { gffi::gradstep_graph_capture_begin(handle) } != 0 {
                    return Err(graph_error("capture begin"));
                }
                let out = f();
                // Ended in every case: a failed closure leaves an invalid capture behind.
                // SAFETY: as above.
                let ended = unsafe { gffi::gradstep_graph_capture_end(handle) };
                match out {
                    Err(e) => Err(CudaGraphError::Capture {
                        message: e.to_string(),
                    }),
                    Ok(_) if ended != 0 => Err(graph_error("capture end")),
                    Ok(v) => Ok(v),
                }
            })?
        }
        #[cfg(not(gradstep_cuda_graphs))]
        {
            let _ = f;
            Err(CudaGraphError::Unavailable {
                reason: "this build has none".into(),
            })
        }
    }

    /// Launches the captured work on the current stream.
    pub fn replay(&self) -> std::result::Result<(), CudaGraphError> {
        #[cfg(gradstep_cuda_graphs)]
        {
            // SAFETY: `self.handle` is this graph's live handle; the shim catches every C++
            // exception (replaying a graph never captured is such an exception).
            if unsafe { gffi::gradstep_graph_replay(self.handle) } != 0 {
                return Err(graph_error("replay"));
            }
        }
        Ok(())
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        #[cfg(gradstep_cuda_graphs)]
        // SAFETY: `self.handle` came from `gradstep_graph_new` and is freed here only, once;
        // the shim swallows any C++ exception of the destructor.
        unsafe {
            gffi::gradstep_graph_free(self.handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_gpu_graphs_refuse_and_statistics_are_absent() {
        let e = CudaGraph::new(Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("CUDA"), "{e}");
        assert_eq!(peak_allocated(Device::Cpu), None);
        assert_eq!(allocated(Device::Cpu), None);
        // The no-ops must not fail either.
        reset_peak(Device::Cpu);
        empty_cache();
        assert_eq!(bf16_autocast(true, || 7), 7);
        assert_eq!(
            autocast(crate::Precision::Fp16, || without_autocast(|| 8)),
            8
        );
    }
}
