//! GPU switches and statistics that tch's C API does not expose, from a small C++ shim
//! (`csrc/cuda_ext.cpp`, compiled against the same libtorch when it has CUDA). Without
//! CUDA every function is a harmless no-op, so callers need no `cfg`.
use tch::Device;

#[cfg(gradstep_cuda_ext)]
mod ffi {
    extern "C" {
        pub fn gradstep_autocast_use_bf16() -> i32;
        pub fn gradstep_autocast_region(enabled: i32) -> i32;
        pub fn gradstep_set_cudnn_tf32(allow: i32) -> i32;
        pub fn gradstep_cuda_peak_allocated(device: i32) -> i64;
        pub fn gradstep_cuda_allocated(device: i32) -> i64;
        pub fn gradstep_cuda_reset_peak(device: i32) -> i32;
        pub fn gradstep_cuda_empty_cache() -> i32;
    }
}

/// Makes CUDA autocast regions ([`tch::autocast`]) compute in bfloat16 (fp32's range, so
/// no loss scaling) instead of float16. Returns whether it took effect.
pub fn autocast_use_bf16() -> bool {
    #[cfg(gradstep_cuda_ext)]
    {
        tch::Cuda::is_available() && unsafe { ffi::gradstep_autocast_use_bf16() } == 0
    }
    #[cfg(not(gradstep_cuda_ext))]
    false
}

/// Runs `f` with CUDA autocast in bfloat16 when `enabled` (and CUDA is there), else plainly.
/// Convolutions then run in bf16 while parameters and their gradients stay float32.
pub fn bf16_autocast<T>(enabled: bool, f: impl FnOnce() -> T) -> T {
    #[cfg(gradstep_cuda_ext)]
    if enabled && autocast_use_bf16() {
        unsafe { ffi::gradstep_autocast_region(1) };
        let out = f();
        unsafe { ffi::gradstep_autocast_region(0) };
        return out;
    }
    let _ = enabled;
    f()
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
