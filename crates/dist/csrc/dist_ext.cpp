// What tch's C API does not expose and data-parallel training needs: PyTorch's own
// distributed runtime, c10d, as shipped inside libtorch (TCPStore / FileStore and
// ProcessGroupGloo in libtorch_cpu.so, ProcessGroupNCCL in libtorch_cuda.so). No socket,
// ring or reduction is written here: every entry point forwards to c10d.
//
// Every entry point catches C++ exceptions (nothing may unwind into Rust) and keeps the
// message, without c10's backtrace, for `gradstep_dist_last_error`.
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <c10/util/Logging.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#ifdef GRADSTEP_DIST_NCCL
// Defined in dist_nccl.cpp (compiled only against a libtorch with CUDA).
c10::intrusive_ptr<c10d::Backend> gradstep_make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int world,
    std::chrono::milliseconds timeout);
#endif

namespace {
thread_local std::string last_error;

// The message of an exception: c10's without its C++ backtrace, first line only where
// the rest is a stack (c10 appends "Exception raised from ..." to `what()`).
void remember(const std::exception& e) {
  if (auto c10_error = dynamic_cast<const c10::Error*>(&e)) {
    last_error = c10_error->what_without_backtrace();
  } else {
    last_error = e.what();
  }
  auto cut = last_error.find("\nException raised from");
  if (cut != std::string::npos) {
    last_error.resize(cut);
  }
  while (!last_error.empty() && (last_error.back() == '\n' || last_error.back() == ' ')) {
    last_error.pop_back();
  }
}

template <class F>
int guarded(F f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    remember(e);
    return -1;
  } catch (...) {
    last_error = "unknown C++ exception";
    return -1;
  }
}

struct Store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct Group {
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

}  // namespace

extern "C" {

const char* gradstep_dist_last_error() { return last_error.c_str(); }

// c10d logs every retry and timeout to stderr with a C++ stack; gradstep reports the
// failure itself in one line, so c10's log keeps only fatal messages (unless the user set
// TORCH_CPP_LOG_LEVEL, which the Rust side checks before calling this).
void gradstep_dist_quiet_logs() { FLAGS_caffe2_log_level = 3; }

// A TCPStore at host:port; `is_server` hosts it (rank 0). Workers are not awaited here: the
// Rust side checks who joined so that it can name a missing rank. NULL on failure.
void* gradstep_dist_store_tcp(const char* host, int port, int is_server, int world,
                              int64_t timeout_ms) {
  Store* out = nullptr;
  guarded([&] {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = false;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    out = new Store{store};
  });
  return out;
}

// A FileStore on `path` shared by `world` processes. NULL on failure.
void* gradstep_dist_store_file(const char* path, int world, int64_t timeout_ms) {
  Store* out = nullptr;
  guarded([&] {
    auto store = c10::make_intrusive<c10d::FileStore>(std::string(path), world);
    store->setTimeout(std::chrono::milliseconds(timeout_ms));
    out = new Store{store};
  });
  return out;
}

void gradstep_dist_store_free(void* store) { delete static_cast<Store*>(store); }

int gradstep_dist_store_set(void* store, const char* key, const char* value) {
  return guarded([&] {
    std::string v(value);
    static_cast<Store*>(store)->store->set(std::string(key),
                                           std::vector<uint8_t>(v.begin(), v.end()));
  });
}

// 1 when every key exists, 0 when one does not, -1 on failure (an unreachable store).
int gradstep_dist_store_check(void* store, const char* const* keys, int count) {
  int present = 0;
  int rc = guarded([&] {
    std::vector<std::string> names(keys, keys + count);
    present = static_cast<Store*>(store)->store->check(names) ? 1 : 0;
  });
  return rc == 0 ? present : -1;
}

// A process group on `store` (backend 0 = Gloo, 1 = NCCL); every rank must call it. NULL on
// failure.
void* gradstep_dist_group_new(void* store, int rank, int world, int backend,
                              int64_t timeout_ms) {
  Group* out = nullptr;
  guarded([&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    // A prefix of its own, so that the rendezvous keys the Rust side writes cannot collide.
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(
        backend == 0 ? "gloo" : "nccl", static_cast<Store*>(store)->store);
    c10::intrusive_ptr<c10d::Backend> made;
    if (backend == 0) {
      auto options = c10d::ProcessGroupGloo::Options::create_default(timeout);
      made = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, world, options);
    } else {
#ifdef GRADSTEP_DIST_NCCL
      made = gradstep_make_nccl(prefixed, rank, world, timeout);
#else
      throw std::runtime_error("this build of gradstep has no NCCL (libtorch without CUDA)");
#endif
    }
    out = new Group{made, timeout};
  });
  return out;
}

void gradstep_dist_group_free(void* group) { delete static_cast<Group*>(group); }

// All-reduces `count` tensors in place, one c10d call each (a call's tensors must share a
// size in Gloo), all issued before the first wait: op 0 = sum, 1 = max, 2 = average (a sum
// divided by the world size: Gloo has no AVG). Blocks until done or the group's timeout.
int gradstep_dist_all_reduce(void* group, at::Tensor** tensors, int count, int op) {
  return guarded([&] {
    auto g = static_cast<Group*>(group);
    c10d::AllreduceOptions opts;
    opts.reduceOp = op == 1 ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
    opts.timeout = g->timeout;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (int i = 0; i < count; ++i) {
      std::vector<at::Tensor> one{*tensors[i]};
      works.push_back(g->backend->allreduce(one, opts));
    }
    for (auto& work : works) {
      work->wait(g->timeout);
    }
    if (op == 2) {
      for (int i = 0; i < count; ++i) {
        tensors[i]->div_(g->backend->getSize());
      }
    }
  });
}

// Broadcasts `count` tensors in place from `root`, one c10d call each.
int gradstep_dist_broadcast(void* group, at::Tensor** tensors, int count, int root) {
  return guarded([&] {
    auto g = static_cast<Group*>(group);
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = g->timeout;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (int i = 0; i < count; ++i) {
      std::vector<at::Tensor> one{*tensors[i]};
      works.push_back(g->backend->broadcast(one, opts));
    }
    for (auto& work : works) {
      work->wait(g->timeout);
    }
  });
}

int gradstep_dist_barrier(void* group) {
  return guarded([&] {
    auto g = static_cast<Group*>(group);
    c10d::BarrierOptions opts;
    opts.timeout = g->timeout;
    auto work = g->backend->barrier(opts);
    work->wait(g->timeout);
  });
}

}  // extern "C"
