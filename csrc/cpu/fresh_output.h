// Large outputs allocated per call are first touched by the kernel: on Linux a fresh 48 MB tensor takes
// ~12,000 4 KiB page faults, most of a gather's time (perf.md "first-touch page faults"). Asking for
// transparent huge pages (MADV_HUGEPAGE, honoured where THP is "madvise" or "always") cuts that to a few
// dozen 2 MiB faults: a 48 MB first fill went from ~32 ms to ~10 ms on the development VM.
#pragma once
#include <ATen/ATen.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace v4_ascend::cpu {

constexpr int64_t kHugePage = int64_t{2} << 20;

// at::empty, with the whole 2 MiB pages inside a large (>= 4 MiB) allocation advised to be huge pages.
// Only a hint: where the kernel refuses it, the tensor is the same, with 4 KiB pages.
inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  auto out = at::empty(sizes, options);
#if defined(MADV_HUGEPAGE)
  if (out.nbytes() >= static_cast<size_t>(2 * kHugePage)) {
    const auto begin = reinterpret_cast<uintptr_t>(out.data_ptr());
    const uintptr_t first = (begin + kHugePage - 1) & ~static_cast<uintptr_t>(kHugePage - 1);
    const uintptr_t last = (begin + out.nbytes()) & ~static_cast<uintptr_t>(kHugePage - 1);
    if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  }
#endif
  return out;
}

}  // namespace v4_ascend::cpu
