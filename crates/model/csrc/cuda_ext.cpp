// What tch's C API does not expose and gradstep needs on a GPU: autocast regions (CPU or
// CUDA, bf16 or fp16, saved and restored), cuDNN's TF32 switch, the caching allocator's
// statistics, and CUDA graphs (capture on a side stream, replay).
// Every entry point catches C++ exceptions: nothing may unwind into Rust.
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
// The generic device-allocator interface.
#include <c10/core/CachingDeviceAllocator.h>

#include <cstdint>
#include <exception>
#include <string>

#ifdef GRADSTEP_CUDA_GRAPHS
// CUDA graphs and streams: these need the CUDA runtime headers (nvidia/cu13/include, plus
// the crt/ headers of the nvidia-cuda-crt wheel), so build.rs compiles them only when found.
// Only exported functions are called (no inline CUDA runtime calls, such as those of
// CUDAEvent or CUDAStreamGuard), so the binary needs no direct link to libcudart.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <optional>

namespace {
// A CUDA graph with the side stream it is captured on (capture is illegal on the default
// stream). `previous` is the stream to restore while the side stream is current.
struct Graph {
  at::cuda::CUDAGraph graph;
  // The side stream, taken from the pool once: warm-up and capture use the same one.
  std::optional<c10::cuda::CUDAStream> side;
  std::optional<c10::cuda::CUDAStream> previous;
  c10::DeviceIndex device = 0;
};
}  // namespace
#endif

namespace {
// The message of the last exception caught by an entry point (read by the graph errors).
thread_local std::string last_error;

int fail(const std::exception& e) {
  last_error = e.what();
  return -1;
}

int fail_unknown() {
  last_error = "unknown C++ exception";
  return -1;
}

// Runs `f`, turning any exception into -1 and its message into `last_error`: nothing may
// unwind into Rust.
template <class F>
int guarded(F f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    return fail(e);
  } catch (...) {
    return fail_unknown();
  }
}

// The device type of autocast state `device` (0 CPU, anything else CUDA).
c10::DeviceType autocast_device(int device) {
  return device == 0 ? c10::DeviceType::CPU : c10::DeviceType::CUDA;
}

// The caching allocator's aggregate "allocated bytes" statistic on `device`.
c10::CachingAllocator::Stat allocated_bytes(int device) {
  auto stats = c10::getDeviceAllocator(c10::DeviceType::CUDA)
                   ->getDeviceStats(static_cast<c10::DeviceIndex>(device));
  return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
}
}  // namespace

extern "C" {

// Autocast is libtorch's per-thread state, one per device type: `device` 0 is the CPU, 1 CUDA.
// The three calls below are what PyTorch's `torch.autocast` context manager does on
// `__enter__` / `__exit__`, with the non-deprecated API (tch's `autocast` goes through
// deprecated calls that log a warning on every call).

// Writes whether autocast is on for `device` and the c10::ScalarType code of its dtype.
// Returns 0, or -1 (nothing written).
int gradstep_autocast_get(int device, int* enabled, int* dtype) {
  return guarded([&] {
    auto type = autocast_device(device);
    bool on = at::autocast::is_autocast_enabled(type);
    auto kind = at::autocast::get_autocast_dtype(type);
    *enabled = on ? 1 : 0;
    *dtype = static_cast<int>(kind);
  });
}

// Enters a region: autocast on (enabled != 0) or off for `device`, computing in the
// c10::ScalarType `dtype`, one nesting level deeper. Returns 0, or -1 (nothing changed).
int gradstep_autocast_enter(int device, int enabled, int dtype) {
  return guarded([&] {
    auto type = autocast_device(device);
    auto kind = static_cast<at::ScalarType>(dtype);
    at::autocast::set_autocast_dtype(type, kind);
    at::autocast::set_autocast_enabled(type, enabled != 0);
    at::autocast::increment_nesting();
  });
}

// Leaves a region entered by `gradstep_autocast_enter`: one level up (the cast-weight cache
// is cleared when the outermost region closes), then `enabled` and `dtype` as they were
// before it. Returns 0, or -1.
int gradstep_autocast_exit(int device, int enabled, int dtype) {
  return guarded([&] {
    auto type = autocast_device(device);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(type, enabled != 0);
    at::autocast::set_autocast_dtype(type, static_cast<at::ScalarType>(dtype));
  });
}

// Switches autocast on or off for `device` leaving the nesting level and the cache alone (a
// float32 operation in the middle of a region). Returns whether it was on, or -1.
int gradstep_autocast_set_enabled(int device, int enabled) {
  try {
    auto type = autocast_device(device);
    bool before = at::autocast::is_autocast_enabled(type);
    at::autocast::set_autocast_enabled(type, enabled != 0);
    return before ? 1 : 0;
  } catch (...) {
    return -1;
  }
}

// cuDNN convolutions in TF32 (libtorch's default) or strict fp32. Returns 0 on success.
int gradstep_set_cudnn_tf32(int allow) {
  return guarded([&] { at::globalContext().setAllowTF32CuDNN(allow != 0); });
}

// Peak bytes allocated by the CUDA caching allocator on `device` since the last reset, or -1.
int64_t gradstep_cuda_peak_allocated(int device) {
  try {
    return allocated_bytes(device).peak;
  } catch (...) {
    return -1;
  }
}

// Bytes currently allocated on `device`, or -1.
int64_t gradstep_cuda_allocated(int device) {
  try {
    return allocated_bytes(device).current;
  } catch (...) {
    return -1;
  }
}

// Resets the peak statistics of `device`. Returns 0 on success.
int gradstep_cuda_reset_peak(int device) {
  return guarded([&] {
    c10::getDeviceAllocator(c10::DeviceType::CUDA)
        ->resetPeakStats(static_cast<c10::DeviceIndex>(device));
  });
}

// Returns the caching allocator's unused blocks to the driver (after an out-of-memory probe,
// so that the next probe starts unfragmented). Returns 0 on success.
int gradstep_cuda_empty_cache() {
  return guarded([] { c10::getDeviceAllocator(c10::DeviceType::CUDA)->emptyCache(); });
}

#ifdef GRADSTEP_CUDA_GRAPHS
// The message of the last failed graph call on this thread.
const char* gradstep_graph_last_error() { return last_error.c_str(); }

// A new, empty graph for `device`, or null.
void* gradstep_graph_new(int device) {
  try {
    auto* g = new Graph();
    g->device = static_cast<c10::DeviceIndex>(device);
    return g;
  } catch (const std::exception& e) {
    fail(e);
    return nullptr;
  } catch (...) {
    fail_unknown();
    return nullptr;
  }
}

void gradstep_graph_free(void* handle) {
  try {
    delete static_cast<Graph*>(handle);
  } catch (...) {
  }
}

// Makes a side stream current on this thread, after all queued work (a device-wide
// synchronisation: this happens once per warm-up or capture, not per replay). Warm-up
// (cuDNN autotuning, lazy allocations) and capture run there.
int gradstep_graph_enter_side_stream(void* handle) {
  return guarded([&] {
    auto* g = static_cast<Graph*>(handle);
    if (g->previous) {
      return;
    }
    c10::cuda::device_synchronize();
    if (!g->side) {
      g->side = c10::cuda::getStreamFromPool(false, g->device);
    }
    g->previous = c10::cuda::getCurrentCUDAStream(g->device);
    c10::cuda::setCurrentCUDAStream(*g->side);
  });
}

// Waits for the side stream's work and restores the previous stream.
int gradstep_graph_leave_side_stream(void* handle) {
  return guarded([&] {
    auto* g = static_cast<Graph*>(handle);
    if (!g->previous) {
      return;
    }
    c10::cuda::device_synchronize();
    c10::cuda::setCurrentCUDAStream(*g->previous);
    g->previous.reset();
  });
}

int gradstep_graph_capture_begin(void* handle) {
  return guarded([&] { static_cast<Graph*>(handle)->graph.capture_begin(); });
}

int gradstep_graph_capture_end(void* handle) {
  return guarded([&] { static_cast<Graph*>(handle)->graph.capture_end(); });
}

// Launches the captured work on the current stream.
int gradstep_graph_replay(void* handle) {
  return guarded([&] { static_cast<Graph*>(handle)->graph.replay(); });
}
#endif
}
