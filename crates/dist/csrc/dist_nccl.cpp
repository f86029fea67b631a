// ProcessGroupNCCL (in libtorch_cuda.so): compiled only when libtorch has CUDA and the
// venv has the CUDA and NCCL headers (build.rs checks), kept apart from dist_ext.cpp so
// that a CPU-only libtorch builds the rest.
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <chrono>

c10::intrusive_ptr<c10d::Backend> gradstep_make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int world,
    std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
}
