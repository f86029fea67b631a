// What tch's C API does not expose and gradstep needs on a GPU: the autocast precision
// (bf16 instead of fp16), cuDNN's TF32 switch, and the caching allocator's statistics.
// Every entry point catches C++ exceptions: nothing may unwind into Rust.
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
// The generic device-allocator interface: no CUDA headers needed (pip wheels lack some).
#include <c10/core/CachingDeviceAllocator.h>

#include <cstdint>

extern "C" {

// Makes CUDA autocast regions (tch::autocast) compute in bfloat16. Returns 0 on success.
int gradstep_autocast_use_bf16() {
  try {
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    return 0;
  } catch (...) {
    return -1;
  }
}

// Enters (enabled != 0) or leaves a CUDA autocast region, with the non-deprecated API
// (tch's `autocast` goes through deprecated calls that log a warning on every call).
// Returns whether autocast was enabled before, or -1.
int gradstep_autocast_region(int enabled) {
  try {
    bool before = at::autocast::is_autocast_enabled(at::kCUDA);
    if (enabled != 0) {
      at::autocast::set_autocast_enabled(at::kCUDA, true);
      at::autocast::increment_nesting();
    } else {
      if (at::autocast::decrement_nesting() == 0) {
        at::autocast::clear_cache();
      }
      at::autocast::set_autocast_enabled(at::kCUDA, false);
    }
    return before ? 1 : 0;
  } catch (...) {
    return -1;
  }
}

// cuDNN convolutions in TF32 (libtorch's default) or strict fp32. Returns 0 on success.
int gradstep_set_cudnn_tf32(int allow) {
  try {
    at::globalContext().setAllowTF32CuDNN(allow != 0);
    return 0;
  } catch (...) {
    return -1;
  }
}

// Peak bytes allocated by the CUDA caching allocator on `device` since the last reset, or -1.
int64_t gradstep_cuda_peak_allocated(int device) {
  try {
    auto stats = c10::getDeviceAllocator(c10::DeviceType::CUDA)->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
  } catch (...) {
    return -1;
  }
}

// Bytes currently allocated on `device`, or -1.
int64_t gradstep_cuda_allocated(int device) {
  try {
    auto stats = c10::getDeviceAllocator(c10::DeviceType::CUDA)->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].current;
  } catch (...) {
    return -1;
  }
}

// Resets the peak statistics of `device`. Returns 0 on success.
int gradstep_cuda_reset_peak(int device) {
  try {
    c10::getDeviceAllocator(c10::DeviceType::CUDA)->resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (...) {
    return -1;
  }
}

// Returns the caching allocator's unused blocks to the driver (after an out-of-memory probe,
// so that the next probe starts unfragmented). Returns 0 on success.
int gradstep_cuda_empty_cache() {
  try {
    c10::getDeviceAllocator(c10::DeviceType::CUDA)->emptyCache();
    return 0;
  } catch (...) {
    return -1;
  }
}
}
