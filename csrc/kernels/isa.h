// Run-time ISA selection for hot loops, so the build stays -march-neutral: a kernel body is compiled
// (always_inline) into one function per target below and the caller dispatches on v4k::isa().
// Feature checks, not CPU-model checks: GCC's target_clones("arch=...") tests the CPU model and would
// pick the baseline body on an AMD CPU with AVX-512. V4_ASCEND_CPU_ISA=avx512|avx2|baseline lowers the
// level (read once per process), so that every body can be tested on the widest CPU.
#pragma once
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#define V4K_INLINE __attribute__((always_inline)) inline
#if defined(__x86_64__) && defined(__GNUC__)
#define V4K_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx2,fma")))
#define V4K_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define V4K_X86 1
#else
#define V4K_TARGET_AVX512
#define V4K_TARGET_AVX2
#define V4K_X86 0
#endif

namespace v4k {

enum class Isa { baseline, avx2, avx512 };

// The environment variable that lowers the ISA chosen at run time (tests run every body on one CPU).
constexpr const char* kIsaVariable = "V4_ASCEND_CPU_ISA";

inline const char* isa_name(Isa isa) {
  return isa == Isa::avx512 ? "avx512" : isa == Isa::avx2 ? "avx2" : "baseline";
}

// The widest level this CPU supports (AVX-512 means F, VL, BW and DQ: every AVX-512 body may use them).
inline Isa detected_isa() {
#if V4K_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::baseline;
}

// `detected`, or the level named by `request` (null or empty: none) when that is not wider; an unknown
// name or a level the CPU lacks throws std::invalid_argument naming the variable.
inline Isa choose_isa(Isa detected, const char* request) {
  if (request == nullptr || *request == '\0') return detected;
  for (Isa level : {Isa::baseline, Isa::avx2, Isa::avx512}) {
    if (std::strcmp(request, isa_name(level)) != 0) continue;
    if (level > detected)
      throw std::invalid_argument(std::string(kIsaVariable) + "=" + request + ": this CPU only supports " +
                                  isa_name(detected) + " (the variable can only lower the ISA)");
    return level;
  }
  throw std::invalid_argument(std::string(kIsaVariable) + "=" + request +
                              ": unknown ISA, expected avx512, avx2 or baseline");
}

// The level every dispatching kernel uses: detected once per process, lowered by V4_ASCEND_CPU_ISA.
inline Isa isa() {
  static const Isa chosen = choose_isa(detected_isa(), std::getenv(kIsaVariable));
  return chosen;
}

// AVX512-BF16 (vdpbf16ps) next to the AVX-512 level of isa() (which includes DQ): the bf16 kernels compiled
// in their own translation units for that ISA are called only when this holds.
inline bool has_avx512_bf16() {
  static const bool found = [] {
#if V4K_X86
    return isa() == Isa::avx512 && __builtin_cpu_supports("avx512bf16");
#else
    return false;
#endif
  }();
  return found;
}

}  // namespace v4k

// Defines `name(params)` dispatching to `body(args)` compiled for AVX-512, AVX2+FMA and the baseline.
#define V4K_DISPATCH(ret, name, body, params, args)                     \
  V4K_TARGET_AVX512 inline ret name##_avx512 params { return body args; } \
  V4K_TARGET_AVX2 inline ret name##_avx2 params { return body args; }     \
  inline ret name##_baseline params { return body args; }                \
  inline ret name params {                                               \
    switch (v4k::isa()) {                                                \
      case v4k::Isa::avx512: return name##_avx512 args;                  \
      case v4k::Isa::avx2: return name##_avx2 args;                      \
      default: return name##_baseline args;                              \
    }                                                                    \
  }
