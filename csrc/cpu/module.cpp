// The v4_ascend._C Python module: kernel descriptions, call counters and the detected CPU ISA.
// The kernels themselves register with TORCH_LIBRARY_IMPL(v4_ascend, CPU, ...) in their own files.
#include <torch/extension.h>

#include "cpu/registry.h"
#include "kernels/isa.h"

namespace v4_ascend::cpu {

std::map<std::string, KernelEntry>& kernel_registry() {
  static std::map<std::string, KernelEntry> registry;
  return registry;
}

KernelEntry& describe_kernel(const std::string& op, const std::string& description) {
  KernelEntry& entry = kernel_registry()[op];
  entry.description = description;
  return entry;
}

const char* cpu_isa() { return v4k::isa_name(v4k::isa()); }

}  // namespace v4_ascend::cpu

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace v4_ascend::cpu;
  m.doc() = "v4_ascend C++ CPU kernels (registered for the CPU dispatch key on import)";
  m.def("kernel_info", [] {
    std::map<std::string, std::string> info;
    for (auto& [op, entry] : kernel_registry()) info[op] = entry.description;
    return info;
  }, "op name -> description of its C++ CPU kernel");
  m.def("kernel_calls", [] {
    std::map<std::string, int64_t> calls;
    for (auto& [op, entry] : kernel_registry()) calls[op] = entry.calls.load();
    return calls;
  }, "op name -> number of calls served by the C++ kernel");
  m.def("cpu_isa", &cpu_isa, "vector ISA the kernels use: the widest detected, unless V4_ASCEND_CPU_ISA lowers it");
  m.def("cpu_isa_detected", [] { return v4k::isa_name(v4k::detected_isa()); }, "widest vector ISA of this CPU");
}
