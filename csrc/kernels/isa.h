// Run-time ISA selection for hot loops, so the build stays -march-neutral: a kernel body is compiled
// (always_inline) into one function per target below and the caller dispatches on v4k::isa().
// Feature checks, not CPU-model checks: GCC's target_clones("arch=...") tests the CPU model and would
// pick the baseline body on an AMD CPU with AVX-512.
#pragma once

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

inline Isa isa() {
  static const Isa detected = [] {
#if V4K_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw"))
      return Isa::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
    return Isa::baseline;
  }();
  return detected;
}

// AVX512-BF16 (vdpbf16ps) on top of Isa::avx512. Kernels using it live in their own translation unit
// compiled for that target and are called only when this is true.
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
