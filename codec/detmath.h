// Exact helpers shared by the rANS coder (codec/entropy/_rans.cpp) and the parameter kernels
// (codec/exact/_kernels.cpp): integer and bit operations only, so every CPU gives the same bits,
// and the choice between each module's AVX2 and baseline paths (which give the same bits).
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

namespace detmath {
static inline double dfloor(double x) {  // |x| < 2^62
  double t = (double)(int64_t)x;
  return t > x ? t - 1.0 : t;
}
static inline double pow2i(int e) {  // 2^e, e in [-1022, 1023]
  uint64_t b = (uint64_t)(int64_t)(e + 1023) << 52;
  double d;
  std::memcpy(&d, &b, 8);
  return d;
}
#if defined(__x86_64__)
// Whether to take a module's AVX2 path (the same bits as its baseline path, only faster): the
// CPU has AVX2 and the environment variable `force` is not "baseline" (for testing the other).
static inline bool avx2_path(const char* force) {
  const char* value = std::getenv(force);
  if (value && std::string(value) == "baseline") return false;
  return (bool)__builtin_cpu_supports("avx2");
}
#endif
}  // namespace detmath
