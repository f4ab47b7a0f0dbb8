// Exact helpers shared by the rANS coder (codec/entropy/_rans.cpp) and the parameter kernels
// (codec/exact/_kernels.cpp): integer and bit operations only, so every CPU gives the same bits.
#pragma once
#include <cstdint>
#include <cstring>

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
}  // namespace detmath
