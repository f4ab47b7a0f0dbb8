// neurocodec entropy coding core: rANS (64-bit state, 32-bit renormalization) with
// table mode (CompressAI-style quantized CDFs) and parametric mode (Gaussian, Laplace,
// generalized Gaussian, Gaussian mixture K=1..8) whose CDFs are computed on the fly.
//
// Determinism: the CDF path uses only IEEE +,-,*,/ and integer conversions (no libm
// transcendentals); every table is built at import time from our own series with the
// same operations. Build with -ffp-contract=off and without -march=native, so the same
// parameters give the same bytes on every machine and every thread count.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>
#ifdef __SSE2__
#include <emmintrin.h>
#include "../detmath.h"
#endif

namespace py = pybind11;

// the hot helpers are always inlined, also into the decoder's AVX2 copy (decode_avx2), where
// GCC does not inline functions of the baseline target by itself
#define NC_INLINE __attribute__((always_inline)) inline

namespace nc {

struct CodingError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ------------------------------------------------------------------ constants
#ifndef NC_PRECISION
#define NC_PRECISION 24
#endif
static constexpr int PRECISION = NC_PRECISION;
static constexpr uint64_t RANS_L = 1ull << 31;
static constexpr uint32_t ESC_FREQ = 1;  // frequency of the escape slot (last slot)
static constexpr int MEAN_FRAC_BITS = 16;
static constexpr double MEAN_SCALE = 1.0 / 65536.0;
static constexpr int SCALE_STEPS_PER_OCTAVE = 256;
static constexpr int SCALE_LOG2_MIN = -10;
static constexpr int SCALE_OCTAVES = 24;  // 2^-10 .. 2^14
static constexpr int N_SCALES = SCALE_OCTAVES * SCALE_STEPS_PER_OCTAVE + 1;
static constexpr int N_BETAS = 256;
static constexpr double BETA_MIN = 0.3, BETA_MAX = 4.0;
static constexpr int32_t WEIGHT_ONE = 65536;
static constexpr int MAX_K = 8;
static constexpr double GAUSS_TAIL = 6.5;   // support half-width in sigmas
static constexpr double LAPLACE_TAIL = 22.0;  // support half-width in scales
static constexpr double GG_TAIL_MASS = 1e-10;
static constexpr double LN2 = 0.69314718055994530942;
static constexpr double INV_LN2 = 1.44269504088896340736;

enum Family { GAUSSIAN = 0, LAPLACE = 1, GG = 2, GMM = 3 };

// ------------------------------------------------------------------ deterministic math
static inline double dabs(double x) { return x < 0 ? -x : x; }
using detmath::dfloor;
using detmath::pow2i;

static double exp2_slow(double x) {
  if (x < -1060.0) return 0.0;
  double n = dfloor(x + 0.5);
  double y = (x - n) * LN2;
  double s = 1.0, term = 1.0;
  for (int k = 1; k <= 20; ++k) {
    term = term * y / (double)k;
    s += term;
  }
  int e = (int)n;
  if (e < -1000) return s * pow2i(e + 100) * pow2i(-100);
  return s * pow2i(e);
}
static double log2_slow(double x) {  // x > 0 finite normal
  uint64_t b;
  std::memcpy(&b, &x, 8);
  int e = (int)((b >> 52) & 0x7ff) - 1023;
  uint64_t mb = (b & ((1ull << 52) - 1)) | (1023ull << 52);
  double m;
  std::memcpy(&m, &mb, 8);
  if (m > 1.41421356237309504880) {
    m *= 0.5;
    e += 1;
  }
  double s = (m - 1.0) / (m + 1.0), s2 = s * s, term = s, sum = 0.0;
  for (int k = 0; k < 40; ++k) {
    sum += term / (double)(2 * k + 1);
    term *= s2;
  }
  return 2.0 * sum * INV_LN2 + (double)e;
}
static inline double ln_slow(double x) { return log2_slow(x) * LN2; }

static double EXP2TAB[64];
static double LOG2C[128], INVC[128];

// 2^x for x <= 1000 (returns 0 below -1020); relative error ~1e-16.
static inline double exp2_fast(double x) {
  if (x < -1020.0) return 0.0;
  double n = dfloor(x * 64.0 + 0.5);
  int ni = (int)n;
  int j = ni & 63;
  int e = (ni - j) / 64;
  double y = (x - n * (1.0 / 64.0)) * LN2;
  double p = 1.0 + y * (1.0 + y * (0.5 + y * (1.0 / 6.0 + y * (1.0 / 24.0 + y * (1.0 / 120.0)))));
  return EXP2TAB[j] * p * pow2i(e);
}
// log2(x) for normal x > 0.
static inline double log2_fast(double x) {
  uint64_t b;
  std::memcpy(&b, &x, 8);
  int e = (int)((b >> 52) & 0x7ff) - 1023;
  int j = (int)((b >> 45) & 127);
  uint64_t mb = (b & ((1ull << 52) - 1)) | (1023ull << 52);
  double m;
  std::memcpy(&m, &mb, 8);
  double c = 1.0 + ((double)j + 0.5) * (1.0 / 128.0);
  double r = (m - c) * INVC[j];
  double l = r * (1.0 + r * (-0.5 + r * (1.0 / 3.0 + r * (-0.25 + r * (0.2 + r * (-1.0 / 6.0))))));
  return (double)e + LOG2C[j] + l * INV_LN2;
}

// ln Gamma(z) for z > 0 (init only).
static double lgamma_slow(double z) {
  double shift = 0.0;
  while (z < 12.0) {
    shift += ln_slow(z);
    z += 1.0;
  }
  double iz = 1.0 / z, iz2 = iz * iz;
  double ser = iz * (1.0 / 12.0 + iz2 * (-1.0 / 360.0 + iz2 * (1.0 / 1260.0 + iz2 * (-1.0 / 1680.0 + iz2 * (1.0 / 1188.0)))));
  return (z - 0.5) * ln_slow(z) - z + 0.91893853320467274178 + ser - shift;
}

// ------------------------------------------------------------------ CDF tables
// All standardized CDFs are F(z) = 0.5 + sign(z) * g(|z|) with g increasing from 0 to 0.5,
// g evaluated from piecewise cubic (Hermite) tables built from our own series.
// Gaussian: g(z) = Phi(z) - 0.5 on a grid of 1/32 over [0, 9); interval GZ_N is a
// sentinel (g = 0.5) so that evaluation is branch-free.
static constexpr int GZ_STEPS = 32;
static constexpr double GZ_MAX = 9.0;
static constexpr int GZ_N = (int)(GZ_MAX * GZ_STEPS);
alignas(32) static double GTAB[4 * (GZ_N + 1)];  // a row (c0..c3) per 32-byte block
// Laplace: g(z) = 0.5 - 0.5 exp(-z) over [0, 24), same layout.
static constexpr int LZ_STEPS = 32;
static constexpr double LZ_MAX = 24.0;
static constexpr int LZ_N = (int)(LZ_MAX * LZ_STEPS);
static double LTAB[4 * (LZ_N + 1)];

// Generalized Gaussian, shape beta_j: g_j(t) = 0.5 P(1/beta_j, t^beta_j).  The grid is
// float-like: each octave [2^e, 2^(e+1)) of t is split into 2^sbits uniform intervals,
// so the interval index comes from the bits of t (no logarithm at run time).  Octaves
// e_lo <= e < e_hi are tabulated; below, g = C0 t (relative error < 2^-24); above, 0.5.
struct GGInfo {
  int e_lo, e_hi, sbits, shift;
  double sinv;  // 2^-shift
  double C0;    // 0.5 / Gamma(1 + 1/beta) = g'(0)
  size_t off;   // offset (in doubles) into GGTAB
};
static std::vector<double> GGTAB;
static GGInfo GGI[N_BETAS];
static double BETAS[N_BETAS], GG_TMAX[N_BETAS];

// one row per scale code, everything a symbol's setup reads in one cache line
struct ScaleRow {
  double scale, inv;        // scale, 1 / scale
  int64_t w_gauss, w_laplace;  // support half-widths
};
static ScaleRow SC[N_SCALES];

static double erf_series(double x) {  // x >= 0, absolute error ~1e-16
  double x2 = x * x, term = x, sum = 0.0;
  for (int n = 0; n < 2000; ++n) {
    sum += term;
    term = term * 2.0 * x2 / (double)(2 * n + 3);
    if (term < 1e-18 * sum) break;
  }
  double v = 1.12837916709551257390 * exp2_slow(-x2 * INV_LN2) * sum;
  return v > 1.0 ? 1.0 : v;
}
// regularized lower incomplete gamma P(a, x) via the all-positive series;
// inv[n] = 1 / (a + n) precomputed (n < GAMMA_TERMS).
static constexpr int GAMMA_TERMS = 4000;
static double gammap_series(double a, double x, double lg_a1, const double* inv) {
  if (x <= 0) return 0.0;
  double term = 1.0, sum = 0.0;
  for (int n = 1; n < GAMMA_TERMS; ++n) {
    sum += term;
    term = term * x * inv[n];
    if (term < 1e-18 * sum) break;
  }
  double lpre = a * log2_fast(x) - (x + lg_a1) * INV_LN2;
  double v = exp2_fast(lpre) * sum;
  return v > 1.0 ? 1.0 : v;
}

static void hermite(double f0, double f1, double d0, double d1, double* c) {
  c[0] = f0;
  c[1] = d0;
  c[2] = 3.0 * (f1 - f0) - 2.0 * d0 - d1;
  c[3] = 2.0 * (f0 - f1) + d0 + d1;
}

static int iceil(double x) {
  int i = (int)x;
  return (double)i < x ? i + 1 : i;
}
static int ifloor(double x) {
  int i = (int)x;
  return (double)i > x ? i - 1 : i;
}

static bool g_initialized = false;
static void init_gauss_inverse();
static void init_tables() {
  if (g_initialized) return;
  for (int j = 0; j < 64; ++j) EXP2TAB[j] = exp2_slow((double)j / 64.0);
  for (int j = 0; j < 128; ++j) {
    double c = 1.0 + ((double)j + 0.5) / 128.0;
    LOG2C[j] = log2_slow(c);
    INVC[j] = 1.0 / c;
  }
  // Gaussian
  {
    const double h = 1.0 / GZ_STEPS;
    std::vector<double> f(GZ_N + 1), d(GZ_N + 1);
    for (int i = 0; i <= GZ_N; ++i) {
      double z = (double)i * h;
      f[i] = 0.5 * erf_series(z * 0.70710678118654752440);
      d[i] = 0.39894228040143267794 * exp2_slow(-0.5 * z * z * INV_LN2) * h;
    }
    for (int i = 0; i < GZ_N; ++i) hermite(f[i], f[i + 1], d[i], d[i + 1], &GTAB[4 * i]);
    GTAB[4 * GZ_N] = 0.5;
  }
  // Laplace
  {
    const double h = 1.0 / LZ_STEPS;
    std::vector<double> f(LZ_N + 1), d(LZ_N + 1);
    for (int i = 0; i <= LZ_N; ++i) {
      double e = 0.5 * exp2_slow(-(double)i * h * INV_LN2);
      f[i] = 0.5 - e;
      d[i] = e * h;
    }
    for (int i = 0; i < LZ_N; ++i) hermite(f[i], f[i + 1], d[i], d[i + 1], &LTAB[4 * i]);
    LTAB[4 * LZ_N] = 0.5;
  }
  // scales
  for (int i = 0; i < N_SCALES; ++i) {
    ScaleRow& r = SC[i];
    r.scale = exp2_slow((double)SCALE_LOG2_MIN + (double)i / SCALE_STEPS_PER_OCTAVE);
    r.inv = 1.0 / r.scale;
    r.w_gauss = (int64_t)(GAUSS_TAIL * r.scale) + 2;
    r.w_laplace = (int64_t)(LAPLACE_TAIL * r.scale) + 2;
  }
  // generalized Gaussian
  const double lb0 = log2_slow(BETA_MIN), lb1 = log2_slow(BETA_MAX);
  GGTAB.clear();
  for (int j = 0; j < N_BETAS; ++j) {
    double beta = exp2_slow(lb0 + (lb1 - lb0) * (double)j / (double)(N_BETAS - 1));
    if (j == 0) beta = BETA_MIN;
    if (j == N_BETAS - 1) beta = BETA_MAX;
    BETAS[j] = beta;
    double a = 1.0 / beta;
    double lg_a1 = lgamma_slow(a + 1.0);  // ln Gamma(a+1)
    std::vector<double> inva(GAMMA_TERMS);
    for (int n = 1; n < GAMMA_TERMS; ++n) inva[n] = 1.0 / (a + (double)n);
    GGInfo& I = GGI[j];
    I.C0 = 0.5 * exp2_slow(-lg_a1 * INV_LN2);
    I.sbits = beta <= 1.0 ? 4 : (beta <= 2.0 ? 5 : 6);
    I.shift = 52 - I.sbits;
    I.sinv = pow2i(-I.shift);
    int lo = ifloor(-24.0 / beta);
    I.e_lo = lo < -31 ? -31 : lo;
    I.e_hi = iceil(6.0 / beta);
    I.off = GGTAB.size();
    const int S = 1 << I.sbits;
    const int nint = (I.e_hi - I.e_lo) * S;
    std::vector<double> f(nint + 1), t(nint + 1), ex(nint + 1);
    double ttail = pow2i(I.e_hi);
    bool found = false;
    for (int i = 0; i <= nint; ++i) {
      int e = I.e_lo + i / S, q = i % S;
      t[i] = pow2i(e) * (1.0 + (double)q / (double)S);
      double x = exp2_fast(beta * log2_fast(t[i]));
      f[i] = 0.5 * gammap_series(a, x, lg_a1, inva.data());
      ex[i] = exp2_fast(-x * INV_LN2);  // g'(t) = C0 exp(-t^beta)
      if (!found && 0.5 - f[i] < GG_TAIL_MASS) {
        ttail = t[i];
        found = true;
      }
    }
    GG_TMAX[j] = ttail;
    GGTAB.resize(GGTAB.size() + 4 * (size_t)nint);
    double* tab = &GGTAB[I.off];
    for (int i = 0; i < nint; ++i) {
      double dt = t[i + 1] - t[i];
      hermite(f[i], f[i + 1], I.C0 * ex[i] * dt, I.C0 * ex[i + 1] * dt, &tab[4 * i]);
    }
  }
  init_gauss_inverse();
  g_initialized = true;
}

// ------------------------------------------------------------------ standardized CDFs
static inline double with_sign_of(double g, double z) {  // g >= 0: copysign(g, z), exact
  uint64_t bg, bz;
  std::memcpy(&bg, &g, 8);
  std::memcpy(&bz, &z, 8);
  bg |= bz & 0x8000000000000000ull;
  double r;
  std::memcpy(&r, &bg, 8);
  return r;
}
// min(a, b), max(a, b) of two numbers (no NaN here) without a branch: the compiler turns the plain
// ternary into a jump, which mispredicts wherever some mixture components saturate
static NC_INLINE double dmin(double a, double b) {
#ifdef __SSE2__
  return _mm_cvtsd_f64(_mm_min_sd(_mm_set_sd(a), _mm_set_sd(b)));
#else
  return a < b ? a : b;
#endif
}
static NC_INLINE double dmax(double a, double b) {
#ifdef __SSE2__
  return _mm_cvtsd_f64(_mm_max_sd(_mm_set_sd(a), _mm_set_sd(b)));
#else
  return a > b ? a : b;
#endif
}
static NC_INLINE double table_g(const double* tab, int steps, int n, double az) {
  double u = dmin(az * (double)steps, (double)n);  // clamp to the sentinel interval (also for huge az)
  int i = (int)u;
  double s = u - (double)i;
  const double* c = &tab[4 * i];
  return c[0] + s * (c[1] + s * (c[2] + s * c[3]));
}
// sign(z) g(|z|) from a table whose g(0) is +0.  fabs and copysign are single bit operations;
// they give the values of dabs / with_sign_of except that |-0| is +0, and g(+-0) is +0 either way.
static NC_INLINE double signed_g(const double* tab, int steps, int n, double z) {
  return std::copysign(table_g(tab, steps, n, std::fabs(z)), z);
}
static NC_INLINE double gauss_g(double z) { return signed_g(GTAB, GZ_STEPS, GZ_N, z); }
// gauss_g(z) from zs = GZ_STEPS z (a power of two, so zs has the bits of z * GZ_STEPS)
static NC_INLINE double gauss_gs(double zs) { return signed_g(GTAB, 1, GZ_N, zs); }
static inline double gauss_cdf(double z) { return 0.5 + gauss_g(z); }
#ifdef __SSE2__
// gauss_g at two points (the coder evaluates C(k) and C(k + 1) together): per lane the same
// IEEE operations in the same order as gauss_g, so the same values, in half the instructions
// zs = GZ_STEPS z (a power of two: the same bits as z * GZ_STEPS wherever it is computed)
static NC_INLINE __m128d gauss_g2s(__m128d zs) {
  const __m128d sign = _mm_set1_pd(-0.0);
  __m128d u = _mm_min_pd(_mm_andnot_pd(sign, zs), _mm_set1_pd((double)GZ_N));
  __m128i i = _mm_cvttpd_epi32(u);
  __m128d s = _mm_sub_pd(u, _mm_cvtepi32_pd(i));
  const double* p0 = &GTAB[4 * _mm_cvtsi128_si32(i)];
  const double* p1 = &GTAB[4 * _mm_cvtsi128_si32(_mm_shuffle_epi32(i, 1))];
  __m128d c0 = _mm_loadh_pd(_mm_load_sd(p0), p1), c1 = _mm_loadh_pd(_mm_load_sd(p0 + 1), p1 + 1);
  __m128d c2 = _mm_loadh_pd(_mm_load_sd(p0 + 2), p1 + 2), c3 = _mm_loadh_pd(_mm_load_sd(p0 + 3), p1 + 3);
  __m128d g = _mm_add_pd(c0, _mm_mul_pd(s, _mm_add_pd(c1, _mm_mul_pd(s, _mm_add_pd(c2, _mm_mul_pd(s, c3))))));
  return _mm_or_pd(g, _mm_and_pd(sign, zs));  // g >= 0: copysign
}
static NC_INLINE __m128d gauss_g2(__m128d z) { return gauss_g2s(_mm_mul_pd(z, _mm_set1_pd((double)GZ_STEPS))); }
#endif
// Four lanes as GCC vectors: one AVX2 operation each in the decoder's AVX2 copy.
typedef double V4 __attribute__((vector_size(32)));
typedef int64_t L4 __attribute__((vector_size(32)));
typedef int32_t I4 __attribute__((vector_size(16)));
// (functions taking or returning them are always inlined, so the baseline target's ABI for
// passing 32-byte vectors, which GCC warns about, never applies)
#pragma GCC diagnostic ignored "-Wpsabi"
#if defined(__clang__)
#define NC_SHUFFLE4(a, b, i0, i1, i2, i3) __builtin_shufflevector(a, b, i0, i1, i2, i3)
#else
#define NC_SHUFFLE4(a, b, i0, i1, i2, i3) __builtin_shuffle(a, b, (L4){i0, i1, i2, i3})
#endif
// gauss_gs at four points: per lane the IEEE operations of gauss_gs (the same values); the
// table rows are loaded whole and transposed
static NC_INLINE V4 gauss_g4s(V4 zs) {
  const L4 sign = {INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN};
  const V4 az = (V4)((L4)zs & ~sign);
  const V4 u = az < (double)GZ_N ? az : (double)GZ_N;  // min(az, GZ_N), as dmin
  const I4 i = __builtin_convertvector(u, I4);
  const V4 f = u - __builtin_convertvector(i, V4);
  V4 r0, r1, r2, r3;
  std::memcpy(&r0, &GTAB[4 * (uint32_t)i[0]], 32);
  std::memcpy(&r1, &GTAB[4 * (uint32_t)i[1]], 32);
  std::memcpy(&r2, &GTAB[4 * (uint32_t)i[2]], 32);
  std::memcpy(&r3, &GTAB[4 * (uint32_t)i[3]], 32);
  const V4 t0 = NC_SHUFFLE4(r0, r1, 0, 4, 2, 6), t1 = NC_SHUFFLE4(r0, r1, 1, 5, 3, 7);
  const V4 t2 = NC_SHUFFLE4(r2, r3, 0, 4, 2, 6), t3 = NC_SHUFFLE4(r2, r3, 1, 5, 3, 7);
  const V4 c0 = NC_SHUFFLE4(t0, t2, 0, 1, 4, 5), c2 = NC_SHUFFLE4(t0, t2, 2, 3, 6, 7);
  const V4 c1 = NC_SHUFFLE4(t1, t3, 0, 1, 4, 5), c3 = NC_SHUFFLE4(t1, t3, 2, 3, 6, 7);
  const V4 g = c0 + f * (c1 + f * (c2 + f * c3));
  return (V4)((L4)g | ((L4)zs & sign));  // g >= 0: copysign
}
#ifdef __SSE2__
// the arguments ka - 0.5 and kb - 0.5 of F(ka), F(kb)
static NC_INLINE __m128d edges2(int64_t ka, int64_t kb) {
  return _mm_sub_pd(_mm_set_pd((double)kb, (double)ka), _mm_set1_pd(0.5));
}
#endif
static inline double laplace_cdf(double z) { return 0.5 + signed_g(LTAB, LZ_STEPS, LZ_N, z); }
// z = x / alpha, beta index j
static inline double gg_cdf(double z, int j) {
  const GGInfo& I = GGI[j];
  double t = dabs(z), g;
  uint64_t b;
  std::memcpy(&b, &t, 8);
  int e = (int)(b >> 52) - 1023;
  if (e < I.e_lo) {
    g = t * I.C0;
  } else if (e >= I.e_hi) {
    g = 0.5;
  } else {
    uint64_t mant = b & ((1ull << 52) - 1);
    size_t i = ((size_t)(e - I.e_lo) << I.sbits) | (size_t)(mant >> I.shift);
    double s = (double)(int64_t)(mant & ((1ull << I.shift) - 1)) * I.sinv;
    const double* c = &GGTAB[I.off + 4 * i];
    g = c[0] + s * (c[1] + s * (c[2] + s * c[3]));
  }
  return 0.5 + with_sign_of(g, z);
}

// ------------------------------------------------------------------ decoder search start
// The decoder looks for the k with C(k) <= cf < C(k + 1).  Where its search starts changes
// only its speed, never its result (the search is exact from any start), so the start may
// come from an approximate inverse CDF: the standard Gaussian quantile z(u) at the centres
// u = (j + 0.5) / 2^QU_BITS of 4096 cells (our own g, inverted by bisection), looked up by the
// top bits of the slot cf without interpolation (the few symbols a cell's width puts one off
// cost a step of the search; interpolating measured no faster).
static constexpr int QU_BITS = 12;
// Gaussian symbols up to this scale start at the mode instead: most of them are there, and
// C(mode), C(mode + 1) do not depend on the coder's state, so they are computed while the
// previous symbol's state update is in flight, off the decoder's chain of dependent work
// (measured best among 0, 0.5, 1, 2, 4 on issue 37's scale ranges)
static constexpr double GAUSS_MODE_START = 1.0;
static double QU[1 << QU_BITS];
static void init_gauss_inverse() {
  const int n = 1 << QU_BITS;
  for (int j = 0; j < n; ++j) {
    double u = ((double)j + 0.5) / n;
    double t = u < 0.5 ? u : 1.0 - u;  // tail mass: 0.5 - g(|z|) = t
    double lo = 0.0, hi = GZ_MAX;
    for (int it = 0; it < 64; ++it) {
      double m = 0.5 * (lo + hi);
      if (0.5 - table_g(GTAB, GZ_STEPS, GZ_N, m) > t)
        lo = m;
      else
        hi = m;
    }
    QU[j] = u < 0.5 ? -0.5 * (lo + hi) : 0.5 * (lo + hi);
  }
}
// z with Phi(z) ~ (v + 0.5) / 2^prec for an integer v (clamped to [0, 2^prec))
static NC_INLINE double gauss_quantile(int64_t v, int prec) {
  const int64_t vmax = ((int64_t)1 << prec) - 1;
  v = v < 0 ? 0 : (v > vmax ? vmax : v);
  return QU[v >> (prec - QU_BITS)];
}
// the integer nearest to x (ties to even), for |x| < 2^51: a start, so any rounding would do
static NC_INLINE double nearest(double x) {
  const double big = 6755399441055744.0;  // 1.5 * 2^52
  return (x + big) - big;
}
static NC_INLINE int64_t nearest_int(double x) { return (int64_t)nearest(x); }

// ------------------------------------------------------------------ per-symbol models
struct Ctx {
  int prec;
  uint32_t M;      // 1 << prec
  uint32_t esc;    // M - ESC_FREQ, start of the escape slot
  int64_t wmax;    // max support half-width
};
static Ctx make_ctx(int prec) {
  Ctx c;
  c.prec = prec;
  c.M = 1u << prec;
  c.esc = c.M - ESC_FREQ;
  c.wmax = ((int64_t)c.M / 16 - 1) / 2;
  return c;
}

struct SymBase {
  int64_t lo, hi, mode;
  double R;  // M - ESC_FREQ - (hi - lo + 1)
};
static NC_INLINE int64_t mode_of(int32_t mean_code) { return ((int64_t)mean_code + 32768) >> 16; }
static NC_INLINE void finish_support(SymBase& s, int64_t lo, int64_t hi, const Ctx& c) {
  if (s.mode - lo > c.wmax) lo = s.mode - c.wmax;
  if (hi - s.mode > c.wmax) hi = s.mode + c.wmax;
  s.lo = lo;
  s.hi = hi;
  s.R = (double)(c.esc - (uint32_t)(hi - lo + 1));
}
static NC_INLINE uint32_t quant(double F, double R) {
  double v = F * R;
  v = v > 0.0 ? v : 0.0;
  v = v < R ? v : R;
  return (uint32_t)(int64_t)v;
}

struct GaussModel {
  const int32_t *mean, *scale;
  inline void prefetch(size_t) const {}
  struct Sym : SymBase {
    double mu, inv, scale;
  };
  inline void setup(size_t i, Sym& s, const Ctx& c) const {
    s.mu = (double)mean[i] * MEAN_SCALE;
    s.mode = mode_of(mean[i]);
    const ScaleRow& r = SC[scale[i]];
    s.inv = r.inv;
    s.scale = r.scale;
    int64_t W = r.w_gauss;
    finish_support(s, s.mode - W, s.mode + W, c);
  }
  inline double F(const Sym& s, int64_t k) const { return gauss_cdf(((double)k - 0.5 - s.mu) * s.inv); }
#ifdef __SSE2__
  // F(ka) and F(kb) in one pass (identical operations to two F calls)
  inline void F2(const Sym& s, int64_t ka, int64_t kb, double& f0, double& f1) const {
    __m128d z = _mm_mul_pd(_mm_sub_pd(edges2(ka, kb), _mm_set1_pd(s.mu)), _mm_set1_pd(s.inv));
    __m128d f = _mm_add_pd(_mm_set1_pd(0.5), gauss_g2(z));
    f0 = _mm_cvtsd_f64(f);
    f1 = _mm_cvtsd_f64(_mm_unpackhi_pd(f, f));
  }
#endif
  // decoder: where the search for cf's symbol starts, and whether C(start - 1), C(start + 2)
  // are evaluated with C(start), C(start + 1) (see decode_impl)
  static constexpr bool START_WINDOW = false;
  inline int64_t start(const Sym& s, uint32_t cf, const Ctx& c) const {
    if (s.scale <= GAUSS_MODE_START) return s.mode;
    // cf less the leaky part C(k) - M F(k) = k - lo of symbols near the mode
    return nearest_int(s.mu + gauss_quantile((int64_t)cf - (s.mode - s.lo), c.prec) * s.scale);
  }
};
struct LaplaceModel {
  const int32_t *mean, *scale;
  inline void prefetch(size_t) const {}
  struct Sym : SymBase {
    double mu, inv;
  };
  inline void setup(size_t i, Sym& s, const Ctx& c) const {
    s.mu = (double)mean[i] * MEAN_SCALE;
    s.mode = mode_of(mean[i]);
    const ScaleRow& r = SC[scale[i]];
    s.inv = r.inv;
    int64_t W = r.w_laplace;
    finish_support(s, s.mode - W, s.mode + W, c);
  }
  inline double F(const Sym& s, int64_t k) const { return laplace_cdf(((double)k - 0.5 - s.mu) * s.inv); }
  static constexpr bool START_WINDOW = false;
  inline int64_t start(const Sym& s, uint32_t, const Ctx&) const { return s.mode; }
};
struct GGModel {
  const int32_t *mean, *scale, *beta;
  inline void prefetch(size_t) const {}
  struct Sym : SymBase {
    double mu, inv;
    int bj;
  };
  inline void setup(size_t i, Sym& s, const Ctx& c) const {
    s.mu = (double)mean[i] * MEAN_SCALE;
    s.mode = mode_of(mean[i]);
    int si = scale[i];
    s.inv = SC[si].inv;
    s.bj = beta[i];
    double w = GG_TMAX[s.bj] * SC[si].scale;
    int64_t W = w > 1e12 ? (int64_t)1e12 : (int64_t)w + 2;
    finish_support(s, s.mode - W, s.mode + W, c);
  }
  inline double F(const Sym& s, int64_t k) const { return gg_cdf(((double)k - 0.5 - s.mu) * s.inv, s.bj); }
  static constexpr bool START_WINDOW = false;
  inline int64_t start(const Sym& s, uint32_t, const Ctx&) const { return s.mode; }
};
// K (2..8) is a template parameter so that the component loops unroll.  Components with a
// zero weight stay in the sums with weight 0: they add exact zeros, which leaves every
// F (= 0.5 + the sum) bit-identical to skipping them, and no branch depends on the weights.
// The sums start at the first term rather than at 0.0: 0.0 + t differs from t only for
// t = -0, and a sum that differs only in the sign of a zero gives the same 0.5 + sum.
// The inverse scales are stored times GZ_STEPS (exact), which saves gauss_g's multiply.
template <int K>
struct GMMModel {
  const int32_t *weight, *mean, *scale;
  inline void prefetch(size_t) const {}
  struct Sym : SymBase {
    double w[K], mu[K], inv[K], sd[K];  // w: normalized weights; inv: GZ_STEPS / scale; sd: scales
  };
  // support: union of the components' supports (clipped around the mode of the heaviest one)
  NC_INLINE void setup(size_t i, Sym& s, const Ctx& c) const {
    const int32_t* wc = weight + i * K;
    const int32_t* mc = mean + i * K;
    const int32_t* sc = scale + i * K;
    int64_t wsum = 0, lo = INT64_MAX, hi = INT64_MIN;
    int32_t best = 0;  // only a positive weight can be the heaviest
    int64_t mode = 0;
    for (int q = 0; q < K; ++q) {
      bool on = wc[q] > 0;
      int64_t m = mode_of(mc[q]);
      const ScaleRow& r = SC[sc[q]];
      int64_t W = r.w_gauss;
      lo = on ? std::min(lo, m - W) : lo;
      hi = on ? std::max(hi, m + W) : hi;
      wsum += wc[q];
      bool better = wc[q] > best;
      best = better ? wc[q] : best;
      mode ^= (mode ^ m) & -(int64_t)better;  // better ? m : mode, without a branch
      s.w[q] = (double)wc[q];
      s.mu[q] = (double)mc[q] * MEAN_SCALE;
      s.inv[q] = r.inv * (double)GZ_STEPS;
      s.sd[q] = r.scale;
    }
    s.mode = mode;
    double invW = 1.0 / (double)wsum;
    for (int q = 0; q < K; ++q) s.w[q] *= invW;
    finish_support(s, lo, hi, c);
  }
  NC_INLINE double F(const Sym& s, int64_t k) const {
    double x = (double)k - 0.5, acc;
    int q;
#ifdef __SSE2__
    // two components at a time; the sum still runs over them in order
    for (q = 0; q + 1 < K; q += 2) {
      __m128d z = _mm_mul_pd(_mm_sub_pd(_mm_set1_pd(x), _mm_loadu_pd(&s.mu[q])), _mm_loadu_pd(&s.inv[q]));
      __m128d t = _mm_mul_pd(_mm_loadu_pd(&s.w[q]), gauss_g2s(z));
      acc = q == 0 ? _mm_cvtsd_f64(t) : acc + _mm_cvtsd_f64(t);
      acc += _mm_cvtsd_f64(_mm_unpackhi_pd(t, t));
    }
#else
    acc = s.w[0] * gauss_gs((x - s.mu[0]) * s.inv[0]);
    q = 1;
#endif
    for (; q < K; ++q) acc += s.w[q] * gauss_gs((x - s.mu[q]) * s.inv[q]);
    return 0.5 + acc;
  }
  // F(ka) and F(kb) in one pass (identical operations to two F calls)
  NC_INLINE void F2(const Sym& s, int64_t ka, int64_t kb, double& f0, double& f1) const {
    F2x(s, (double)ka - 0.5, (double)kb - 0.5, f0, f1);
  }
  // F at the edges x0 = ka - 0.5 and x1 = kb - 0.5
  NC_INLINE void F2x(const Sym& s, double x0, double x1, double& f0, double& f1) const {
#ifdef __SSE2__
    __m128d x = _mm_set_pd(x1, x0), acc;
    for (int q = 0; q < K; ++q) {
      __m128d z = _mm_mul_pd(_mm_sub_pd(x, _mm_set1_pd(s.mu[q])), _mm_set1_pd(s.inv[q]));
      __m128d t = _mm_mul_pd(_mm_set1_pd(s.w[q]), gauss_g2s(z));
      acc = q == 0 ? t : _mm_add_pd(acc, t);
    }
    __m128d f = _mm_add_pd(_mm_set1_pd(0.5), acc);
    f0 = _mm_cvtsd_f64(f);
    f1 = _mm_cvtsd_f64(_mm_unpackhi_pd(f, f));
#else
    double a0 = 0.0, a1 = 0.0;
    for (int q = 0; q < K; ++q) {
      double t0 = s.w[q] * gauss_gs((x0 - s.mu[q]) * s.inv[q]), t1 = s.w[q] * gauss_gs((x1 - s.mu[q]) * s.inv[q]);
      a0 = q == 0 ? t0 : a0 + t0;
      a1 = q == 0 ? t1 : a1 + t1;
    }
    f0 = 0.5 + a0;
    f1 = 0.5 + a1;
#endif
  }
  // decoder: C(k0 - 1 .. k0 + 2) in four lanes, k0d = (double)k0; per lane the operations of F2x
  // and cum_of, so the values of cum
  NC_INLINE void cum4(const Sym& s, double k0d, int64_t k0, const Ctx& c, uint32_t C[4]) const {
    const V4 x = k0d + (V4){-1.5, -0.5, 0.5, 1.5};
    V4 acc;
    for (int q = 0; q < K; ++q) {
      const V4 t = s.w[q] * gauss_g4s((x - s.mu[q]) * s.inv[q]);
      acc = q == 0 ? t : acc + t;
    }
    V4 v = (0.5 + acc) * s.R;  // quant, per lane
    v = v > 0.0 ? v : 0.0;
    v = v < s.R ? v : s.R;
    // cum_of per lane, d = k - lo (int32: supports span under 2^24 symbols)
    const I4 d = (int32_t)(k0 - s.lo) + (I4){-1, 0, 1, 2};
    I4 cv = __builtin_convertvector(v, I4) + d;
    cv = d <= 0 ? 0 : cv;
    cv = d > (int32_t)(s.hi - s.lo) ? (int32_t)c.esc : cv;
    std::memcpy(C, &cv, 16);
  }
  // decoder: the quantile at cf of the Gaussian with the mixture's mean and variance (the
  // moments do not depend on the coder's state).  It is a rougher start than a Gaussian's,
  // so the symbols next to it are evaluated too.  Measured on issue 37's data: faster than
  // starting at the heaviest component's mode for scales 0.11-16, as fast for 0.11-1.
  static constexpr bool START_WINDOW = true;
  NC_INLINE double start(const Sym& s, uint32_t cf, const Ctx& c) const {
    double m = 0.0, v = 0.0;
    for (int q = 0; q < K; ++q) m += s.w[q] * s.mu[q];
    for (int q = 0; q < K; ++q) {
      double d = s.mu[q] - m;
      v += s.w[q] * (s.sd[q] * s.sd[q] + d * d);
    }
    double sd = std::sqrt(v);
    // clamped to the support as a double: the decoder's chain of dependent work never leaves
    // the floating-point unit between cf and C(start)
    const double k = nearest(m + gauss_quantile((int64_t)cf - (s.mode - s.lo), c.prec) * sd);
    return dmin(dmax(k, (double)s.lo), (double)s.hi);
  }
};

// cumulative frequency of symbol k, lo <= k <= hi + 1
template <class Model>
static NC_INLINE uint32_t cum(const Model& mdl, const typename Model::Sym& s, int64_t k, const Ctx& c) {
  if (k <= s.lo) return 0;
  if (k > s.hi) return c.esc;
  return quant(mdl.F(s, k), s.R) + (uint32_t)(k - s.lo);
}
// C(k) from F(k)
static NC_INLINE uint32_t cum_of(const SymBase& s, int64_t k, double F, const Ctx& c) {
  return k <= s.lo ? 0 : (k > s.hi ? c.esc : quant(F, s.R) + (uint32_t)(k - s.lo));
}
template <class M, class = void>
struct HasF2 : std::false_type {};
template <class M>
struct HasF2<M, std::void_t<decltype(&M::F2)>> : std::true_type {};
// C(k) and C(k + 1) together
template <class Model>
static NC_INLINE void cum2(const Model& mdl, const typename Model::Sym& s, int64_t ka, int64_t kb, const Ctx& c,
                           uint32_t& ca, uint32_t& cb) {
  if constexpr (HasF2<Model>::value) {
    double fa, fb;
    mdl.F2(s, ka, kb, fa, fb);
    ca = cum_of(s, ka, fa, c);
    cb = cum_of(s, kb, fb, c);
  } else {
    ca = cum(mdl, s, ka, c);
    cb = cum(mdl, s, kb, c);
  }
}

// ------------------------------------------------------------------ rANS primitives
struct Enc {
  uint64_t x = RANS_L;
  std::vector<uint32_t> out;
  inline void put(uint32_t start, uint32_t freq, int prec) {
    uint64_t x_max = ((RANS_L >> prec) << 32) * freq;
    if (x >= x_max) {
      out.push_back((uint32_t)x);
      x >>= 32;
    }
    x = ((x / freq) << prec) + (x % freq) + start;
  }
  inline void put_bits(uint32_t v, int nbits) { put(v, 1, nbits); }
  // escape payload: value v (relative to the support's origin), decoded after the slot
  inline void put_escape_payload(int64_t v) {
    uint64_t u = v >= 0 ? (uint64_t)v * 2 : (uint64_t)(-v) * 2 - 1;
    int nb = 0;
    while (nb < 64 && (u >> nb) != 0) ++nb;
    // decoder reads: nb (6 bits), then the low nb-1 bits in chunks of 16 from the lsb
    int rem = nb > 0 ? nb - 1 : 0;
    int nchunks = (rem + 15) / 16;
    for (int ci = nchunks - 1; ci >= 0; --ci) {
      int shift = ci * 16;
      int cbits = std::min(16, rem - shift);
      put_bits((uint32_t)((u >> shift) & ((1u << cbits) - 1)), cbits);
    }
    put_bits((uint32_t)nb, 6);
  }
  // flush: end the stream with the state (the first words the decoder reads); otherwise the
  // state carries over into the part of a chain that is coded next (and decoded before)
  std::vector<uint32_t> finish(bool flush) {
    if (flush) {
      out.push_back((uint32_t)(x >> 32));
      out.push_back((uint32_t)x);
    }
    std::reverse(out.begin(), out.end());
    return std::move(out);
  }
};

// a state carried between the parts of a chain: 0 (none: start at RANS_L / read the
// stream's own flushed state) or a valid rANS state
static uint64_t checked_carry(uint64_t carry) {
  if (carry != 0 && (carry < RANS_L || carry >= (RANS_L << 32))) throw CodingError("invalid carried rANS state");
  return carry;
}

struct Dec {
  uint64_t x;
  const uint32_t* w;
  size_t nw, pos;
  // carry == 0: the stream starts with its flushed state; else it continues a chain.  (Every
  // member is inlined, so that the decoders keep the state in a register.)
  NC_INLINE Dec(const uint32_t* w_, size_t nw_, uint64_t carry) : w(w_), nw(nw_) {
    if (checked_carry(carry)) {
      x = carry;
      pos = 0;
      return;
    }
    if (nw < 2) throw CodingError("truncated stream (shorter than the 8-byte rANS state)");
    x = (uint64_t)w[0] | ((uint64_t)w[1] << 32);
    pos = 2;
    if (x < RANS_L) throw CodingError("corrupt stream (invalid rANS state)");
  }
  // the throw lives out of line so that advance stays small enough to inline
  [[noreturn]] static void read_past_end() { throw CodingError("truncated or corrupt stream (read past the end)"); }
  NC_INLINE void advance(uint32_t start, uint32_t freq, uint32_t cf, int prec) {
    x = (uint64_t)freq * (x >> prec) + cf - start;
    if (x < RANS_L) {
      if (pos >= nw) read_past_end();
      x = (x << 32) | w[pos++];
    }
  }
  NC_INLINE uint32_t get_bits(int nbits) {
    uint32_t v = (uint32_t)(x & ((1ull << nbits) - 1));
    advance(v, 1, v, nbits);
    return v;
  }
  NC_INLINE int64_t get_escape_payload() {
    int nb = (int)get_bits(6);
    if (nb > 40) throw CodingError("corrupt stream (bad escape length)");
    if (nb == 0) return 0;
    int rem = nb - 1;
    uint64_t u = 0;
    for (int shift = 0; shift < rem; shift += 16) {
      int cbits = std::min(16, rem - shift);
      u |= (uint64_t)get_bits(cbits) << shift;
    }
    u |= 1ull << rem;
    return (u & 1) ? -(int64_t)((u + 1) / 2) : (int64_t)(u / 2);
  }
  // every word must be read; the last part of a chain (final) ends where the encoder began
  NC_INLINE void check_end(bool final) const {
    if (pos != nw || (final && x != RANS_L)) throw CodingError("corrupt or truncated stream (final state mismatch)");
  }
};

static NC_INLINE int32_t checked_symbol(int64_t k) {
  if (k < INT32_MIN || k > INT32_MAX) throw CodingError("corrupt stream (escaped value out of int32 range)");
  return (int32_t)k;
}

template <class Model>
static std::vector<uint32_t> encode_impl(const Model& mdl, const int32_t* sym, size_t n, const Ctx& c,
                                         uint64_t& state, bool flush) {
  // pass 1 (independent per symbol, so loads and CDF evaluations overlap) computes the
  // intervals of a block; pass 2 runs the rANS state chain over them in reverse.
  Enc enc;
  if (checked_carry(state)) enc.x = state;
  enc.out.reserve(n / 4 + 16);
  constexpr size_t B = 2048;
  uint32_t starts[B], freqs[B];
  int64_t escv[B];
  typename Model::Sym s;
  size_t end = n;
  while (end > 0) {
    size_t beg = end >= B ? end - B : 0;
    for (size_t ii = beg; ii < end; ++ii) {
      mdl.setup(ii, s, c);
      int64_t k = sym[ii];
      size_t o = ii - beg;
      freqs[o] = 0;
      if (k >= s.lo && k <= s.hi) {
        uint32_t c0, c1;
        cum2(mdl, s, k, k + 1, c, c0, c1);
        starts[o] = c0;
        freqs[o] = c1 > c0 ? c1 - c0 : 0;
      }
      escv[o] = k - s.lo;
    }
    for (size_t ii = end; ii-- > beg;) {
      size_t o = ii - beg;
      if (freqs[o]) {
        enc.put(starts[o], freqs[o], c.prec);
      } else {
        enc.put_escape_payload(escv[o]);
        enc.put(c.esc, ESC_FREQ, c.prec);
      }
    }
    end = beg;
  }
  state = enc.x;
  return enc.finish(flush);
}

// C(k - 1 .. k + 2) of a mixture, kd = (double)k; VEC4: in four lanes (the AVX2 decoder)
template <bool VEC4, class Model>
static NC_INLINE void window4(const Model& mdl, const typename Model::Sym& s, double kd, int64_t k, const Ctx& c,
                              uint32_t C[4]) {
  if constexpr (VEC4) {
    mdl.cum4(s, kd, k, c, C);
  } else {
    double f[4];
    mdl.F2x(s, kd - 1.5, kd - 0.5, f[0], f[1]);
    mdl.F2x(s, kd + 0.5, kd + 1.5, f[2], f[3]);
    for (int j = 0; j < 4; ++j) C[j] = cum_of(s, k - 1 + j, f[j], c);
  }
}

// VEC4: mixtures evaluate their windows in four lanes (the AVX2 copy)
template <class Model, bool VEC4>
static NC_INLINE void decode_body(const Model& mdl, const uint32_t* w, size_t nw, int32_t* out, size_t n,
                                  const Ctx& c, uint64_t& state, bool final) {
  Dec dec(w, nw, state);
  typename Model::Sym s;
  const uint32_t mask = c.M - 1;
  for (size_t i = 0; i < n; ++i) {
    if (i + 1 < n) mdl.prefetch(i + 1);
    mdl.setup(i, s, c);
    uint32_t cf = (uint32_t)(dec.x & mask);
    if (cf >= c.esc) {
      dec.advance(c.esc, ESC_FREQ, cf, c.prec);
      out[i] = checked_symbol(s.lo + dec.get_escape_payload());
      continue;
    }
    // search from the model's start at cf (its approximate inverse CDF, or the mode), with
    // C(k0) and C(k0 + 1) evaluated together; invariant C(a) <= cf < C(b)
    int64_t k0;
    uint32_t c0, c1;
    if constexpr (Model::START_WINDOW) {
      // C(k0 - 1) and C(k0 + 2) as well (in parallel): a start one symbol off costs no search.
      // The edges come from the start as a double (the same values as (double)k - 0.5).
      const double k0d = mdl.start(s, cf, c);
      k0 = (int64_t)k0d;
      uint32_t C[4];
      window4<VEC4>(mdl, s, k0d, k0, c, C);
      const uint32_t cm = C[0], cp = C[3];
      c0 = C[1];
      c1 = C[2];
      if (__builtin_expect(cf >= cm && cf < cp, 1)) {
        // symbol k0 - 1 + g0 + g1 (g1 implies g0); masks rather than branches, which the
        // position of cf in the window would mispredict
        const uint32_t g0 = -(uint32_t)(cf >= c0), g1 = -(uint32_t)(cf >= c1);
        const uint32_t ca = cm + (g0 & (c0 - cm)) + (g1 & (c1 - c0)), cb = c0 + (g0 & (c1 - c0)) + (g1 & (cp - c1));
        dec.advance(ca, cb - ca, cf, c.prec);
        out[i] = (int32_t)(k0 - 1 - (int32_t)g0 - (int32_t)g1);
        continue;
      }
      // the four symbols next to the window on cf's side, W[j] = C(b + j), then the search
      // beyond them (from k0 = b + 3 upward, or from k0 = b downward)
      const bool up = cf >= cp;
      const int64_t b = up ? k0 + 2 : k0 - 5;
      uint32_t W[5];
      window4<VEC4>(mdl, s, up ? k0d + 4.0 : k0d - 4.0, up ? k0 + 4 : k0 - 4, c, up ? W + 1 : W);
      W[up ? 0 : 4] = up ? cp : cm;
      if (cf >= W[0] && cf < W[4]) {
        const int j = (cf >= W[1]) + (cf >= W[2]) + (cf >= W[3]);  // symbol b + j
        dec.advance(W[j], W[j + 1] - W[j], cf, c.prec);
        out[i] = (int32_t)(b + j);
        continue;
      }
      k0 = up ? b + 3 : b;
      c0 = up ? W[3] : W[0];
      c1 = up ? W[4] : W[0];
    } else {
      k0 = std::min(std::max(mdl.start(s, cf, c), s.lo), s.hi);
      cum2(mdl, s, k0, k0 + 1, c, c0, c1);
    }
    int64_t a, b;
    uint32_t ca, cb;
    if (cf >= c1) {
      a = k0 + 1;
      ca = c1;
      int64_t step = 2;
      for (;;) {
        b = k0 + step;
        if (b > s.hi) {
          b = s.hi + 1;
          cb = c.esc;
          break;
        }
        cb = cum(mdl, s, b, c);
        if (cb > cf) break;
        a = b;
        ca = cb;
        step <<= 1;
      }
    } else if (cf >= c0) {
      a = k0;
      ca = c0;
      b = k0 + 1;
      cb = c1;
    } else {
      b = k0;
      cb = c0;
      int64_t step = 1;
      for (;;) {
        a = k0 - step;
        if (a <= s.lo) {
          a = s.lo;
          ca = 0;
          break;
        }
        ca = cum(mdl, s, a, c);
        if (ca <= cf) break;
        b = a;
        cb = ca;
        step <<= 1;
      }
    }
    while (b - a > 1) {
      int64_t m = a + (b - a) / 2;
      uint32_t cm = cum(mdl, s, m, c);
      if (cm <= cf) {
        a = m;
        ca = cm;
      } else {
        b = m;
        cb = cm;
      }
    }
    dec.advance(ca, cb - ca, cf, c.prec);
    out[i] = (int32_t)a;
  }
  dec.check_end(final);
  state = dec.x;
}

// x86-64 builds target SSE2; mixtures are decoded by a copy of the decoder compiled for AVX2
// where the CPU has it (the same IEEE operations, so the same symbols)
#if defined(__x86_64__)
#define NC_AVX2_DECODER 1
template <class Model>
__attribute__((target("avx2"))) static void decode_avx2(const Model& mdl, const uint32_t* w, size_t nw, int32_t* out,
                                                      size_t n, const Ctx& c, uint64_t& state, bool final) {
  decode_body<Model, true>(mdl, w, nw, out, n, c, state, final);
}
static bool use_avx2() {
  static const bool yes = detmath::avx2_path("NEUROCODEC_RANS_ISA");
  return yes;
}
#endif
template <class Model>
static void decode_impl(const Model& mdl, const uint32_t* w, size_t nw, int32_t* out, size_t n, const Ctx& c,
                        uint64_t& state, bool final) {
#ifdef NC_AVX2_DECODER
  if constexpr (Model::START_WINDOW)
    if (use_avx2()) return decode_avx2(mdl, w, nw, out, n, c, state, final);
#endif
  decode_body<Model, false>(mdl, w, nw, out, n, c, state, final);
}

// ------------------------------------------------------------------ stream plumbing
struct StreamIn {
  const int32_t* sym = nullptr;  // encode: symbols; decode: output
  int32_t* out = nullptr;
  size_t n = 0;
  const int32_t* p[3] = {nullptr, nullptr, nullptr};
  int K = 1;
  std::vector<uint32_t> words;  // encode output / decode input
  uint64_t state = 0;           // in: carried state (0: none); out: the state after coding
  bool edge = true;             // encode: flush the state; decode: must end at RANS_L
};

static void validate_stream(int fam, const StreamIn& st) {
  const size_t n = st.n;
  auto check_scale = [&](const int32_t* sc, size_t cnt) {
    for (size_t i = 0; i < cnt; ++i)
      if (sc[i] < 0 || sc[i] >= N_SCALES)
        throw CodingError("scale code out of range [0, " + std::to_string(N_SCALES) + "): " + std::to_string(sc[i]));
  };
  if (fam == GAUSSIAN || fam == LAPLACE) {
    check_scale(st.p[1], n);
  } else if (fam == GG) {
    check_scale(st.p[1], n);
    for (size_t i = 0; i < n; ++i)
      if (st.p[2][i] < 0 || st.p[2][i] >= N_BETAS)
        throw CodingError("beta code out of range [0, " + std::to_string(N_BETAS) + "): " + std::to_string(st.p[2][i]));
  } else if (fam == GMM) {
    if (st.K < 1 || st.K > MAX_K) throw CodingError("mixture size K must be in 1..8");
    check_scale(st.p[2], n * st.K);
    const int32_t* w = st.p[0];
    for (size_t i = 0; i < n; ++i) {
      int64_t sum = 0;
      for (int q = 0; q < st.K; ++q) {
        int32_t v = w[i * st.K + q];
        if (v < 0 || v > WEIGHT_ONE) throw CodingError("weight code out of range [0, 65536]: " + std::to_string(v));
        sum += v;
      }
      if (sum == 0) throw CodingError("all mixture weight codes of a symbol are zero");
    }
  } else {
    throw CodingError("unknown family");
  }
}

template <int K, class Go>
static void with_gmm(const StreamIn& st, Go&& go) {
  if constexpr (K <= MAX_K) {
    if (st.K != K) return with_gmm<K + 1>(st, go);
    GMMModel<K> m;
    m.weight = st.p[0];
    m.mean = st.p[1];
    m.scale = st.p[2];
    go(m);
  }
}

// Calls go(model) with the family's model over a stream's parameter arrays; the one place
// that maps (family, K) to a model, shared by coding and the CDF introspection helper.
template <class Go>
static void with_model(int fam, const StreamIn& st, Go&& go) {
  if (fam == GAUSSIAN || (fam == GMM && st.K == 1)) {
    // K = 1 mixtures are exactly Gaussians (same bytes)
    GaussModel m;
    m.mean = fam == GMM ? st.p[1] : st.p[0];
    m.scale = fam == GMM ? st.p[2] : st.p[1];
    go(m);
  } else if (fam == LAPLACE) {
    LaplaceModel m;
    m.mean = st.p[0];
    m.scale = st.p[1];
    go(m);
  } else if (fam == GG) {
    GGModel m;
    m.mean = st.p[0];
    m.scale = st.p[1];
    m.beta = st.p[2];
    go(m);
  } else {
    with_gmm<2>(st, go);
  }
}

static void run_stream(int fam, StreamIn& st, bool encode, const Ctx& c) {
  auto go = [&](const auto& mdl) {
    if (encode)
      st.words = encode_impl(mdl, st.sym, st.n, c, st.state, st.edge);
    else
      decode_impl(mdl, st.words.data(), st.words.size(), st.out, st.n, c, st.state, st.edge);
  };
  with_model(fam, st, go);
}

// Codes the streams one after another: a tile's streams form one chain (each starts from the
// state the previous one left), and the image pipeline's threads work elsewhere (bands).
static void run_all(std::vector<StreamIn>& streams, bool encode, int fam, const Ctx& c) {
  for (size_t i = 0; i < streams.size(); ++i) {
    try {
      run_stream(fam, streams[i], encode, c);
    } catch (const std::exception& e) {
      throw CodingError("stream " + std::to_string(i) + ": " + (*e.what() ? e.what() : "coding error"));
    }
  }
}

using IArr = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

static int nparams(int fam) { return fam == GAUSSIAN || fam == LAPLACE ? 2 : 3; }

static Ctx checked_ctx(int prec) {
  if (prec < 12 || prec > 28) throw CodingError("precision must be in [12, 28]");
  return make_ctx(prec);
}

static std::vector<StreamIn> collect(int fam, const std::vector<std::vector<IArr>>& params, const std::vector<size_t>& ns,
                                     const std::vector<int>& Ks) {
  if (fam < 0 || fam > 3) throw CodingError("unknown family");
  std::vector<StreamIn> streams(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    StreamIn& st = streams[i];
    st.n = ns[i];
    st.K = Ks[i];
    if ((int)params[i].size() != nparams(fam)) throw CodingError("wrong number of parameter arrays");
    for (int q = 0; q < nparams(fam); ++q) {
      size_t expect = st.n * ((fam == GMM) ? (size_t)st.K : 1);
      if ((size_t)params[i][q].size() != expect) throw CodingError("parameter array has the wrong size");
      st.p[q] = params[i][q].data();
    }
  }
  return streams;
}

static std::vector<uint32_t> bytes_to_words(const py::bytes& b) {
  char* ptr;
  Py_ssize_t len;
  if (PyBytes_AsStringAndSize(b.ptr(), &ptr, &len) != 0) throw py::error_already_set();
  if (len % 4 != 0) throw CodingError("corrupt stream (length is not a multiple of 4 bytes)");
  std::vector<uint32_t> w((size_t)len / 4);
  for (size_t i = 0; i < w.size(); ++i) {
    const unsigned char* p = (const unsigned char*)ptr + 4 * i;
    w[i] = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
  }
  return w;
}
static py::bytes words_to_bytes(const std::vector<uint32_t>& w) {
  std::string s(w.size() * 4, '\0');
  for (size_t i = 0; i < w.size(); ++i) {
    s[4 * i] = (char)(w[i] & 255);
    s[4 * i + 1] = (char)((w[i] >> 8) & 255);
    s[4 * i + 2] = (char)((w[i] >> 16) & 255);
    s[4 * i + 3] = (char)((w[i] >> 24) & 255);
  }
  return py::bytes(s);
}

// states: the carried state of each stream (0: none); edge: flush the states. Returns
// (bytes, state after coding) per stream.
py::list py_encode_param_le(int fam, std::vector<IArr> syms, std::vector<std::vector<IArr>> params, std::vector<int> Ks,
                            int prec, std::vector<uint64_t> states, bool edge) {
  Ctx c = checked_ctx(prec);
  if (syms.size() != params.size() || Ks.size() != params.size() || states.size() != params.size())
    throw CodingError("list lengths differ");
  std::vector<size_t> ns;
  for (auto& s : syms) ns.push_back((size_t)s.size());
  std::vector<StreamIn> streams = collect(fam, params, ns, Ks);
  for (size_t i = 0; i < syms.size(); ++i) {
    streams[i].sym = syms[i].data();
    streams[i].state = states[i];
    streams[i].edge = edge;
  }
  {
    py::gil_scoped_release rel;
    for (auto& st : streams) validate_stream(fam, st);
    run_all(streams, true, fam, c);
  }
  py::list out;
  for (auto& st : streams) out.append(py::make_tuple(words_to_bytes(st.words), st.state));
  return out;
}

// states: the carried state of each stream (0: none, the stream starts with its own);
// edge: each stream must end at the encoder's initial state. Returns (symbols, state) per stream.
py::list py_decode_param(int fam, std::vector<py::bytes> datas, std::vector<std::vector<IArr>> params,
                         std::vector<size_t> ns, std::vector<int> Ks, int prec, std::vector<uint64_t> states,
                         bool edge) {
  Ctx c = checked_ctx(prec);
  if (datas.size() != params.size() || Ks.size() != params.size() || ns.size() != params.size() ||
      states.size() != params.size())
    throw CodingError("list lengths differ");
  std::vector<StreamIn> streams = collect(fam, params, ns, Ks);
  std::vector<IArr> outs;
  for (size_t i = 0; i < datas.size(); ++i) {
    streams[i].state = states[i];
    streams[i].edge = edge;
    streams[i].words = bytes_to_words(datas[i]);
    outs.emplace_back(IArr((py::ssize_t)ns[i]));
    streams[i].out = outs.back().mutable_data();
  }
  {
    py::gil_scoped_release rel;
    for (auto& st : streams) validate_stream(fam, st);
    run_all(streams, false, fam, c);
  }
  py::list out;
  for (size_t i = 0; i < outs.size(); ++i) out.append(py::make_tuple(outs[i], streams[i].state));
  return out;
}

// ------------------------------------------------------------------ table mode
struct Tables {
  const int32_t* cdfs;
  size_t L;
  const int32_t *lengths, *offsets;
  size_t T;
};

static void validate_tables(const Tables& t, const int32_t* idx, size_t n, int prec) {
  const int64_t M = 1ll << prec;
  for (size_t j = 0; j < t.T; ++j) {
    int32_t len = t.lengths[j];
    if (len < 2 || (size_t)len > t.L)
      throw CodingError("cdf_length[" + std::to_string(j) + "] = " + std::to_string(len) + " is out of [2, " +
                        std::to_string(t.L) + "]");
    const int32_t* cdf = t.cdfs + j * t.L;
    if (cdf[0] != 0) throw CodingError("cdf " + std::to_string(j) + " does not start at 0");
    if (cdf[len - 1] != M)
      throw CodingError("cdf " + std::to_string(j) + " does not end at 2^precision = " + std::to_string(M));
    for (int32_t v = 1; v < len; ++v)
      if (cdf[v] < cdf[v - 1]) throw CodingError("cdf " + std::to_string(j) + " is not monotone");
    if (cdf[len - 1] <= cdf[len - 2]) throw CodingError("cdf " + std::to_string(j) + ": escape slot has zero frequency");
  }
  for (size_t i = 0; i < n; ++i)
    if (idx[i] < 0 || (size_t)idx[i] >= t.T)
      throw CodingError("index " + std::to_string(idx[i]) + " out of range [0, " + std::to_string(t.T) + ")");
}

static Tables make_tables(const IArr& cdfs, const IArr& lengths, const IArr& offsets) {
  if (cdfs.ndim() != 2) throw CodingError("cdfs must be a 2-D int32 array [T, L]");
  Tables t;
  t.T = (size_t)cdfs.shape(0);
  t.L = (size_t)cdfs.shape(1);
  if ((size_t)lengths.size() != t.T || (size_t)offsets.size() != t.T)
    throw CodingError("cdf_lengths and offsets must have one entry per cdf");
  t.cdfs = cdfs.data();
  t.lengths = lengths.data();
  t.offsets = offsets.data();
  return t;
}

// state and edge as for py_encode_param_le; returns (bytes, state after coding)
py::tuple py_encode_table(IArr symbols, IArr indexes, IArr cdfs, IArr lengths, IArr offsets, int prec, uint64_t state,
                          bool edge) {
  Ctx c = checked_ctx(prec);
  if (symbols.size() != indexes.size()) throw CodingError("symbols and indexes differ in size");
  Tables t = make_tables(cdfs, lengths, offsets);
  const int32_t* sym = symbols.data();
  const int32_t* idx = indexes.data();
  size_t n = (size_t)symbols.size();
  std::vector<uint32_t> words;
  {
    py::gil_scoped_release rel;
    validate_tables(t, idx, n, prec);
    Enc enc;
    if (checked_carry(state)) enc.x = state;
    enc.out.reserve(n / 4 + 16);
    for (size_t ii = n; ii-- > 0;) {
      int32_t j = idx[ii];
      const int32_t* cdf = t.cdfs + (size_t)j * t.L;
      int64_t maxv = t.lengths[j] - 2;
      int64_t v = (int64_t)sym[ii] - t.offsets[j];
      if (v >= 0 && v < maxv && cdf[v + 1] > cdf[v]) {
        enc.put((uint32_t)cdf[v], (uint32_t)(cdf[v + 1] - cdf[v]), c.prec);
        continue;
      }
      enc.put_escape_payload(v);
      enc.put((uint32_t)cdf[maxv], (uint32_t)(cdf[maxv + 1] - cdf[maxv]), c.prec);
    }
    state = enc.x;
    words = enc.finish(edge);
  }
  return py::make_tuple(words_to_bytes(words), state);
}

// state and edge as for py_decode_param; returns (symbols, state)
py::tuple py_decode_table(py::bytes data, IArr indexes, IArr cdfs, IArr lengths, IArr offsets, int prec, uint64_t state,
                          bool edge) {
  Ctx c = checked_ctx(prec);
  Tables t = make_tables(cdfs, lengths, offsets);
  std::vector<uint32_t> w = bytes_to_words(data);
  const int32_t* idx = indexes.data();
  size_t n = (size_t)indexes.size();
  IArr out((py::ssize_t)n);
  int32_t* o = out.mutable_data();
  std::string err;
  {
    py::gil_scoped_release rel;
    try {
      validate_tables(t, idx, n, prec);
      Dec dec(w.data(), w.size(), state);
      const uint32_t mask = c.M - 1;
      for (size_t i = 0; i < n; ++i) {
        int32_t j = idx[i];
        const int32_t* cdf = t.cdfs + (size_t)j * t.L;
        int32_t maxv = t.lengths[j] - 2;
        uint32_t cf = (uint32_t)(dec.x & mask);
        // largest v in [0, maxv] with cdf[v] <= cf
        int32_t a = 0, b = maxv + 1;  // cdf[a] <= cf < cdf[b]
        while (b - a > 1) {
          int32_t m = a + (b - a) / 2;
          if ((uint32_t)cdf[m] <= cf)
            a = m;
          else
            b = m;
        }
        dec.advance((uint32_t)cdf[a], (uint32_t)(cdf[a + 1] - cdf[a]), cf, c.prec);
        int64_t v = a;
        if (a == maxv) v = dec.get_escape_payload();
        o[i] = checked_symbol(v + t.offsets[j]);
      }
      dec.check_end(edge);
      state = dec.x;
    } catch (const std::exception& e) {
      err = e.what();
    }
  }
  if (!err.empty()) throw CodingError(err);
  return py::make_tuple(out, state);
}

// ------------------------------------------------------------------ introspection helpers
static py::array_t<double> vec_to_array(const double* p, size_t n) {
  py::array_t<double> a((py::ssize_t)n);
  std::memcpy(a.mutable_data(), p, n * sizeof(double));
  return a;
}

static py::array_t<double> scale_column(double ScaleRow::*col) {
  py::array_t<double> a(N_SCALES);
  for (int i = 0; i < N_SCALES; ++i) a.mutable_data()[i] = SC[i].*col;
  return a;
}

// quantized cumulative frequencies C(k) for k = lo..hi+1 of one symbol (for tests/tools)
py::tuple py_symbol_cdf(int fam, std::vector<IArr> params, int K, int prec) {
  Ctx c = checked_ctx(prec);
  std::vector<std::vector<IArr>> pl{params};
  std::vector<StreamIn> streams = collect(fam, pl, {1}, {K});
  validate_stream(fam, streams[0]);
  std::vector<uint32_t> cdf;
  int64_t lo = 0, mode = 0;
  auto go = [&](const auto& mdl) {
    typename std::decay_t<decltype(mdl)>::Sym s;
    mdl.setup(0, s, c);
    lo = s.lo;
    mode = s.mode;
    for (int64_t k = s.lo; k <= s.hi + 1; ++k) cdf.push_back(cum(mdl, s, k, c));
    cdf.push_back(c.M);
  };
  StreamIn& st = streams[0];
  with_model(fam, st, go);
  py::array_t<int64_t> a((py::ssize_t)cdf.size());
  for (size_t i = 0; i < cdf.size(); ++i) a.mutable_data()[i] = cdf[i];
  return py::make_tuple(lo, mode, a);
}

py::array_t<double> py_std_cdf(int fam, py::array_t<double, py::array::c_style | py::array::forcecast> z, int bj) {
  if (fam == GG && (bj < 0 || bj >= N_BETAS)) throw CodingError("beta code out of range");
  py::array_t<double> out(z.size());
  const double* zp = z.data();
  double* o = out.mutable_data();
  for (py::ssize_t i = 0; i < z.size(); ++i) {
    if (fam == GAUSSIAN)
      o[i] = gauss_cdf(zp[i]);
    else if (fam == LAPLACE)
      o[i] = laplace_cdf(zp[i]);
    else
      o[i] = gg_cdf(zp[i], bj);
  }
  return out;
}

}  // namespace nc

PYBIND11_MODULE(_rans, m) {
  using namespace nc;
  init_tables();
  m.doc() = "neurocodec rANS entropy coder (table and parametric modes)";
  static py::exception<CodingError> exc(m, "CodingError", PyExc_ValueError);
  m.attr("PRECISION") = PRECISION;
  m.attr("MEAN_FRAC_BITS") = MEAN_FRAC_BITS;
  m.attr("SCALE_STEPS_PER_OCTAVE") = SCALE_STEPS_PER_OCTAVE;
  m.attr("SCALE_LOG2_MIN") = SCALE_LOG2_MIN;
  m.attr("N_SCALES") = N_SCALES;
  m.attr("N_BETAS") = N_BETAS;
  m.attr("BETA_MIN") = BETA_MIN;
  m.attr("BETA_MAX") = BETA_MAX;
  m.attr("WEIGHT_ONE") = WEIGHT_ONE;
  m.attr("MAX_K") = MAX_K;
  m.attr("ESC_FREQ") = ESC_FREQ;
  m.attr("GAUSS_TAIL") = GAUSS_TAIL;
  m.attr("GZ_STEPS") = GZ_STEPS;
  m.attr("GZ_MAX") = GZ_MAX;
  m.def("scale_table", []() { return scale_column(&ScaleRow::scale); });
  m.def("inv_scale_table", []() { return scale_column(&ScaleRow::inv); });
  m.def("beta_table", []() { return vec_to_array(BETAS, N_BETAS); });
  m.def("gauss_table", []() {
    py::array_t<double> a({(py::ssize_t)GZ_N + 1, (py::ssize_t)4});
    std::memcpy(a.mutable_data(), GTAB, sizeof(GTAB));
    return a;
  });
  m.def("gauss_halfwidth_table", []() {
    py::array_t<int64_t> a(N_SCALES);
    for (int i = 0; i < N_SCALES; ++i) a.mutable_data()[i] = SC[i].w_gauss;
    return a;
  });
  m.attr("RANS_L") = RANS_L;
  m.def("encode_param", &py_encode_param_le, py::arg("family"), py::arg("symbols"), py::arg("params"), py::arg("K"),
        py::arg("precision"), py::arg("states"), py::arg("edge"));
  m.def("decode_param", &py_decode_param, py::arg("family"), py::arg("datas"), py::arg("params"), py::arg("sizes"),
        py::arg("K"), py::arg("precision"), py::arg("states"), py::arg("edge"));
  m.def("encode_table", &py_encode_table, py::arg("symbols"), py::arg("indexes"), py::arg("cdfs"),
        py::arg("cdf_lengths"), py::arg("offsets"), py::arg("precision"), py::arg("state"), py::arg("edge"));
  m.def("decode_table", &py_decode_table, py::arg("data"), py::arg("indexes"), py::arg("cdfs"),
        py::arg("cdf_lengths"), py::arg("offsets"), py::arg("precision"), py::arg("state"), py::arg("edge"));
  m.def("symbol_cdf", &py_symbol_cdf, py::arg("family"), py::arg("params"), py::arg("K"), py::arg("precision"));
  m.def("std_cdf", &py_std_cdf, py::arg("family"), py::arg("z"), py::arg("beta_code") = 0);
}
