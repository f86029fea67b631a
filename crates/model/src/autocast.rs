//! Autocast as a scope: [`AutocastGuard`] sets libtorch's autocast state on creation and puts
//! back the state it found when dropped, as PyTorch's `torch.autocast` context manager does.
//!
//! Regions therefore nest (an inner float32 operation inside a bf16 region, a denoiser's own
//! region inside training's), and a panic that unwinds through a region (sweeps catch the
//! panics of a failing point) closes it: later work never inherits autocast by accident.
//!
//! Written by hand because tch exposes only the deprecated CUDA-only switch
//! (`tch::autocast`, which logs a warning on every call and cannot restore a previous
//! dtype); the state is read and written through the shim (`csrc/cuda_ext.cpp`). Without the
//! shim (a libtorch without CUDA) every guard is a no-op and [`state`] says `None`.
//!
//! libtorch keeps the state per thread and per device type, so a guard must be dropped on
//! the thread that created it: it is neither `Send` nor `Sync`.
use std::marker::PhantomData;

use tch::Kind;

use crate::Precision;

#[cfg(gradstep_cuda_ext)]
mod ffi {
    extern "C" {
        pub fn gradstep_autocast_get(device: i32, enabled: *mut i32, dtype: *mut i32) -> i32;
        pub fn gradstep_autocast_enter(device: i32, enabled: i32, dtype: i32) -> i32;
        pub fn gradstep_autocast_exit(device: i32, enabled: i32, dtype: i32) -> i32;
        pub fn gradstep_autocast_set_enabled(device: i32, enabled: i32) -> i32;
    }
}

/// Which of libtorch's autocast states a guard acts on (one per device type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutocastDevice {
    /// CPU autocast (bf16 by default in libtorch).
    Cpu,
    /// CUDA autocast (fp16 by default in libtorch).
    Cuda,
}

impl AutocastDevice {
    /// The shim's code for this device type.
    #[cfg(gradstep_cuda_ext)]
    fn code(self) -> i32 {
        match self {
            AutocastDevice::Cpu => 0,
            AutocastDevice::Cuda => 1,
        }
    }
}

/// The autocast state of one device type: on or off, and the dtype its regions compute in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutocastState {
    /// Whether autocast is on.
    pub enabled: bool,
    /// The reduced precision of autocast's eligible operations (`BFloat16` or `Half`).
    pub dtype: Kind,
}

/// The current autocast state of `device` on this thread (`None` without the shim).
pub fn state(device: AutocastDevice) -> Option<AutocastState> {
    let (enabled, dtype) = raw_state(device)?;
    Some(AutocastState {
        enabled,
        dtype: kind_of(dtype)?,
    })
}

/// `(enabled, c10::ScalarType code)`, kept raw so that any dtype found is restored as is.
fn raw_state(device: AutocastDevice) -> Option<(bool, i32)> {
    #[cfg(gradstep_cuda_ext)]
    {
        let (mut enabled, mut dtype) = (0i32, 0i32);
        // SAFETY: the shim writes two `int`s through pointers to these live, aligned locals
        // and catches every C++ exception (it returns -1 instead, writing nothing).
        let rc = unsafe { ffi::gradstep_autocast_get(device.code(), &mut enabled, &mut dtype) };
        (rc == 0).then_some((enabled != 0, dtype))
    }
    #[cfg(not(gradstep_cuda_ext))]
    {
        let _ = device;
        None
    }
}

/// c10::ScalarType codes of the dtypes autocast uses (`c10/core/ScalarType.h`; tch keeps its
/// own mapping private).
const SCALAR_TYPES: [(i32, Kind); 4] = [
    (5, Kind::Half),
    (6, Kind::Float),
    (7, Kind::Double),
    (15, Kind::BFloat16),
];

/// The tch kind of a c10::ScalarType code.
fn kind_of(code: i32) -> Option<Kind> {
    SCALAR_TYPES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|&(_, k)| k)
}

/// The c10::ScalarType code of a reduced-precision kind.
#[cfg(gradstep_cuda_ext)]
fn code_of(kind: Kind) -> i32 {
    SCALAR_TYPES
        .iter()
        .find(|(_, k)| *k == kind)
        .map_or(15, |&(c, _)| c)
}

/// What a guard puts back when dropped.
#[derive(Debug)]
enum Restore {
    /// Nothing was changed (float32, no shim, or the change failed).
    Nothing,
    /// A region was entered: leave it, then restore `(enabled, dtype)`.
    Region {
        device: AutocastDevice,
        enabled: bool,
        dtype: i32,
    },
    /// Autocast was switched off inside a region: switch it back on.
    Enabled(AutocastDevice),
}

/// An autocast region, open while the guard lives (see the module doc). Dropping it, by the
/// end of its scope or by a panic unwinding, restores the state found at creation.
#[derive(Debug)]
#[must_use = "the region closes as soon as the guard is dropped"]
pub struct AutocastGuard {
    restore: Restore,
    /// libtorch's autocast state is thread-local: the guard stays on its thread.
    _not_send: PhantomData<*const ()>,
}

impl AutocastGuard {
    fn with(restore: Restore) -> Self {
        AutocastGuard {
            restore,
            _not_send: PhantomData,
        }
    }

    /// Opens a region of `device` computing in `precision`: bf16 or fp16 switch autocast on
    /// with that dtype; [`Precision::Fp32`] opens none (the state around it stays, so a
    /// float32 caller inside a region keeps the region's precision).
    pub fn enter(device: AutocastDevice, precision: Precision) -> Self {
        let dtype = match precision {
            Precision::Fp32 => return Self::with(Restore::Nothing),
            Precision::Bf16 => Kind::BFloat16,
            Precision::Fp16 => Kind::Half,
        };
        Self::with(enter_region(device, dtype).unwrap_or(Restore::Nothing))
    }

    /// A CUDA region in `precision` where CUDA autocast can run ([`autocast_available`]), no
    /// region elsewhere: what the denoiser opens around its passes.
    pub fn cuda(precision: Precision) -> Self {
        if autocast_available() {
            Self::enter(AutocastDevice::Cuda, precision)
        } else {
            Self::with(Restore::Nothing)
        }
    }

    /// Switches `device`'s autocast off for the guard's lifetime, leaving the region's
    /// nesting and cast cache alone (a float32 operation in the middle of a region).
    pub fn disabled(device: AutocastDevice) -> Self {
        Self::with(disable(device).unwrap_or(Restore::Nothing))
    }
}

#[cfg(gradstep_cuda_ext)]
fn enter_region(device: AutocastDevice, dtype: Kind) -> Option<Restore> {
    let (enabled, previous) = raw_state(device)?;
    // SAFETY: plain integers in; the shim catches every C++ exception and changes nothing
    // when it fails (-1). The region is left by `Drop`, on this thread (the guard is !Send).
    let rc = unsafe { ffi::gradstep_autocast_enter(device.code(), 1, code_of(dtype)) };
    (rc == 0).then_some(Restore::Region {
        device,
        enabled,
        dtype: previous,
    })
}

#[cfg(not(gradstep_cuda_ext))]
fn enter_region(_: AutocastDevice, _: Kind) -> Option<Restore> {
    None
}

#[cfg(gradstep_cuda_ext)]
fn disable(device: AutocastDevice) -> Option<Restore> {
    // SAFETY: plain integers in and out; the shim catches every C++ exception (-1).
    let before = unsafe { ffi::gradstep_autocast_set_enabled(device.code(), 0) };
    // Only a region that was on is switched back on.
    (before == 1).then_some(Restore::Enabled(device))
}

#[cfg(not(gradstep_cuda_ext))]
fn disable(_: AutocastDevice) -> Option<Restore> {
    None
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        #[cfg(gradstep_cuda_ext)]
        match self.restore {
            Restore::Nothing => {}
            Restore::Region {
                device,
                enabled,
                dtype,
            } => {
                // SAFETY: plain integers in; the shim catches every C++ exception. The
                // region being left was entered by this guard on this thread.
                unsafe {
                    ffi::gradstep_autocast_exit(device.code(), i32::from(enabled), dtype);
                }
            }
            Restore::Enabled(device) => {
                // SAFETY: plain integers in; the shim catches every C++ exception.
                unsafe {
                    ffi::gradstep_autocast_set_enabled(device.code(), 1);
                }
            }
        }
    }
}

/// Whether CUDA autocast can run here (a CUDA device and the shim): where it cannot,
/// [`AutocastGuard::cuda`] opens no region and the work runs in float32.
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

/// Runs `f` inside [`AutocastGuard::cuda`]`(precision)`. Convolutions then run in bf16 or
/// fp16 while parameters, their gradients and autocast's float32 operations (reductions,
/// `exp`, `softplus`) stay float32.
pub fn autocast<T>(precision: Precision, f: impl FnOnce() -> T) -> T {
    let _region = AutocastGuard::cuda(precision);
    f()
}

/// Runs `f` with CUDA autocast off (in float32 inside a region, plainly outside one).
pub fn without_autocast<T>(f: impl FnOnce() -> T) -> T {
    let _float32 = if autocast_available() {
        AutocastGuard::disabled(AutocastDevice::Cuda)
    } else {
        AutocastGuard::with(Restore::Nothing)
    };
    f()
}

/// [`autocast`] in bfloat16 when `enabled` (bf16 has float32's range, so it needs no loss
/// scaling), else plainly.
pub fn bf16_autocast<T>(enabled: bool, f: impl FnOnce() -> T) -> T {
    let precision = if enabled {
        Precision::Bf16
    } else {
        Precision::Fp32
    };
    autocast(precision, f)
}
