// Bookkeeping shared by the CPU kernels: what each kernel is (for backend_report) and how often
// it ran (so tests can prove that the C++ kernel, not the reference, served a call).
#pragma once
#include <atomic>
#include <map>
#include <string>

namespace v4_ascend::cpu {

struct KernelEntry {
  std::string description;
  std::atomic<int64_t> calls{0};
};

std::map<std::string, KernelEntry>& kernel_registry();

// Registers `op` once at load time; returns the entry whose counter the kernel bumps per call.
KernelEntry& describe_kernel(const std::string& op, const std::string& description);

// The widest vector ISA this CPU supports, as the kernels see it: "avx512", "avx2" or "baseline".
const char* cpu_isa();

}  // namespace v4_ascend::cpu
