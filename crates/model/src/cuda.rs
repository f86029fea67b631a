//! GPU switches, statistics and CUDA graphs that tch's C API does not expose, from a small
//! C++ shim (`csrc/cuda_ext.cpp`, compiled against the same libtorch when it has CUDA).
//! Without CUDA every function is a harmless no-op (and [`CudaGraph::new`] says so), so
//! callers need no `cfg`.
use tch::Device;

use crate::Precision;

#[cfg(gradstep_cuda_ext)]
mod ffi {
    extern "C" {
        pub fn gradstep_autocast_set_dtype(half: i32) -> i32;
        pub fn gradstep_autocast_region(enabled: i32) -> i32;
        pub fn gradstep_autocast_set_enabled(enabled: i32) -> i32;
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

/// Whether CUDA autocast can run here (a CUDA device and the shim): where it cannot,
/// [`autocast`] runs its closure in float32.
pub fn autocast_available() -> bool {
    #[cfg(gradstep_cuda_ext)]
    {
        // Asked at every network pass: libtorch's answer, once.
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(tch::Cuda::is_available)
    }
    #[cfg(not(gradstep_cuda_ext))]
    false
}

/// Runs `f` under CUDA autocast in `precision` (plainly for [`Precision::Fp32`], or where
/// [`autocast_available`] says no). Convolutions then run in bf16 or fp16 while parameters,
/// their gradients and autocast's float32 operations (reductions, `exp`, `softplus`) stay
/// float32. Regions do not nest: leaving one switches autocast off, so callers open one at a
/// single level (the denoiser's inference, or training's loss) and call the network inside
/// with [`Precision::Fp32`], which opens none.
pub fn autocast<T>(precision: Precision, f: impl FnOnce() -> T) -> T {
    #[cfg(gradstep_cuda_ext)]
    {
        let half = match precision {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(0),
            Precision::Fp16 => Some(1),
        };
        // The dtype is libtorch's global state: set on every entry, since the bf16 and fp16
        // regions may alternate (benchmarks).
        if let Some(half) = half.filter(|_| autocast_available()) {
            if unsafe { ffi::gradstep_autocast_set_dtype(half) } == 0 {
                unsafe { ffi::gradstep_autocast_region(1) };
                let out = f();
                unsafe { ffi::gradstep_autocast_region(0) };
                return out;
            }
        }
    }
    let _ = precision;
    f()
}

/// Runs `f` in float32 inside an [`autocast`] region (plainly outside one, or without CUDA).
pub fn without_autocast<T>(f: impl FnOnce() -> T) -> T {
    #[cfg(gradstep_cuda_ext)]
    if autocast_available() && unsafe { ffi::gradstep_autocast_set_enabled(0) } == 1 {
        let out = f();
        unsafe { ffi::gradstep_autocast_set_enabled(1) };
        return out;
    }
    f()
}

/// [`autocast`] in bfloat16 when `enabled` (training's switch: bf16 has float32's range,
/// so it needs no loss scaling), else plainly.
pub fn bf16_autocast<T>(enabled: bool, f: impl FnOnce() -> T) -> T {
    let precision = if enabled {
        Precision::Bf16
    } else {
        Precision::Fp32
    };
    autocast(precision, f)
}

/// Lets cuDNN use TF32 for float32 convolutions (libtorch's default) or forbids it (strict
/// float32, for accuracy checks). Returns whether it took effect.
pub fn set_cudnn_tf32(allow: bool) -> bool {
    #[cfg(gradstep_cuda_ext)]
    {
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
        u64::try_from(unsafe { ffi::gradstep_cuda_allocated(_i) }).ok()
    }
    #[cfg(not(gradstep_cuda_ext))]
    None
}

/// Starts a new peak-memory measurement on a CUDA `device`.
pub fn reset_peak(device: Device) {
    if let Some(_i) = cuda_index(device) {
        #[cfg(gradstep_cuda_ext)]
        unsafe {
            ffi::gradstep_cuda_reset_peak(_i);
        }
    }
}

/// Returns the CUDA caching allocator's unused blocks to the driver (no-op on the CPU).
pub fn empty_cache() {
    #[cfg(gradstep_cuda_ext)]
    if tch::Cuda::is_available() {
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
fn graph_error(what: &str) -> String {
    let msg = unsafe { std::ffi::CStr::from_ptr(gffi::gradstep_graph_last_error()) };
    format!("CUDA graph {what}: {}", msg.to_string_lossy())
}

impl CudaGraph {
    /// An empty graph for a CUDA `device`; an error on the CPU or without the shim.
    pub fn new(device: Device) -> std::result::Result<Self, String> {
        let Some(_i) = cuda_index(device) else {
            return Err(format!("CUDA graphs need a CUDA device, not {device:?}"));
        };
        #[cfg(gradstep_cuda_graphs)]
        {
            let handle = unsafe { gffi::gradstep_graph_new(_i) };
            if handle.is_null() {
                return Err(graph_error("creation"));
            }
            Ok(CudaGraph { handle })
        }
        #[cfg(not(gradstep_cuda_graphs))]
        Err("this build has no CUDA graphs (libtorch without CUDA, or no CUDA crt headers)".into())
    }

    /// Runs `f` on the graph's side stream (warm-up before capture), then makes the previous
    /// stream wait for it.
    pub fn on_side_stream<T>(&mut self, f: impl FnOnce() -> T) -> std::result::Result<T, String> {
        #[cfg(gradstep_cuda_graphs)]
        {
            if unsafe { gffi::gradstep_graph_enter_side_stream(self.handle) } != 0 {
                return Err(graph_error("side stream"));
            }
            let out = f();
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
    ) -> std::result::Result<T, String> {
        #[cfg(gradstep_cuda_graphs)]
        {
            let handle = self.handle;
            self.on_side_stream(|| {
                if unsafe { gffi::gradstep_graph_capture_begin(handle) } != 0 {
                    return Err(graph_error("capture begin"));
                }
                let out = f();
                // Ended in every case: a failed closure leaves an invalid capture behind.
                let ended = unsafe { gffi::gradstep_graph_capture_end(handle) };
                match out {
                    Err(e) => Err(format!("during CUDA graph capture: {e}")),
                    Ok(_) if ended != 0 => Err(graph_error("capture end")),
                    Ok(v) => Ok(v),
                }
            })?
        }
        #[cfg(not(gradstep_cuda_graphs))]
        {
            let _ = f;
            Err("this build has no CUDA graphs".into())
        }
    }

    /// Launches the captured work on the current stream.
    pub fn replay(&self) -> std::result::Result<(), String> {
        #[cfg(gradstep_cuda_graphs)]
        {
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
        let e = CudaGraph::new(Device::Cpu).unwrap_err();
        assert!(e.contains("CUDA"), "{e}");
        assert_eq!(peak_allocated(Device::Cpu), None);
        assert_eq!(allocated(Device::Cpu), None);
        // The no-ops must not fail either.
        reset_peak(Device::Cpu);
        empty_cache();
        assert_eq!(bf16_autocast(true, || 7), 7);
        assert_eq!(autocast(Precision::Fp16, || without_autocast(|| 8)), 8);
    }
}
