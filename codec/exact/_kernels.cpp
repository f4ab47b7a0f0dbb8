// Kernels whose results are the same bits on every CPU: the operations of the networks that
// compute the entropy coder's parameters (codec/exact/__init__.py runs those networks on them).
//
// Why they are exact everywhere: every output is computed by one fixed sequence of IEEE-754
// operations (+, -, *, /, comparisons, conversions), each correctly rounded on every x86-64
// and ARM CPU; the build uses -ffp-contract=off (no fused multiply-add) and no -ffast-math;
// SIMD runs across independent outputs only (never splitting one output's sum), so AVX2 and
// the SSE2 baseline give the same bits; exp, erf and tanh are our own code on those
// operations, not the C library's (whose results differ between versions and CPUs).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../detmath.h"

namespace py = pybind11;

// ------------------------------------------------------------------ deterministic math
namespace dm {
static constexpr double LN2_64_HI = 0x1.62e42fefa0000p-7;  // ln2/64, 36 bits: n * HI is exact
static constexpr double LN2_64_LO = 2.572804622327669e-14;  // ln2/64 - HI
static constexpr double INV_LN2_64 = 92.33248261689366;
static constexpr double SQRT1_2 = 0.7071067811865476;
static double EXP2_64[64];  // 2^(j/64)

using detmath::dfloor;
using detmath::pow2i;

static void init() {  // 2^(j/64) from the series of e^y, y = j ln2 / 64 < ln2: 25 terms reach 1e-25
  for (int j = 0; j < 64; ++j) {
    double y = (double)j * LN2_64_HI + (double)j * LN2_64_LO, s = 1.0, term = 1.0;
    for (int k = 1; k <= 25; ++k) {
      term = term * y / (double)k;
      s += term;
    }
    EXP2_64[j] = s;
  }
}

// e^x, relative error ~2e-16; 0 below -708, +inf above 709.
static inline double exp(double x) {
  if (x < -708.0) return 0.0;
  if (x > 709.0) return __builtin_inf();
  double n = dfloor(x * INV_LN2_64 + 0.5);
  double r = (x - n * LN2_64_HI) - n * LN2_64_LO;  // |r| <= ln2/128 (+ a rounding)
  double p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
  int ni = (int)n, j = ni & 63, e = (ni - j) / 64;
  return EXP2_64[j] * p * pow2i(e);
}

// e^x - 1 without cancellation near 0 (Taylor series below |x| = 0.35)
static inline double expm1(double x) {
  double a = x < 0 ? -x : x;
  if (a >= 0.35) return exp(x) - 1.0;
  double p = 1.0 / 87178291200.0;  // 1/14!
  static const double inv_fact[13] = {1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
                                      1.0 / 362880.0,     1.0 / 40320.0,     1.0 / 5040.0,     1.0 / 720.0,
                                      1.0 / 120.0,        1.0 / 24.0,        1.0 / 6.0,        0.5, 1.0};
  for (int i = 0; i < 13; ++i) p = inv_fact[i] + x * p;
  return x * p;
}

#include "erf_table.h"

// erf(x), absolute error ~1e-16: a polynomial per interval of width 1/4 (erf_table.h), 1 from |x| = 6
static inline double erf(double x) {
  double a = x < 0 ? -x : x, v = 1.0;
  if (a < 6.0) {  // not for NaN
    int i = (int)(a * 4.0);
    const double* c = ERF_POLY[i];
    double t = a - ((double)i + 0.5) * 0.25;
    v = c[ERF_DEGREE];
    for (int j = ERF_DEGREE - 1; j >= 0; --j) v = c[j] + t * v;
  }
  return x < 0 ? -v : v;
}

static inline double tanh(double x) {
  double a = x < 0 ? -x : x, v;
  if (a > 22.0) {
    v = 1.0;
  } else {
    double e = expm1(2.0 * a);
    v = e / (e + 2.0);
  }
  return x < 0 ? -v : v;
}

// the activations, in the order of operations PyTorch's CPU kernels use
static inline double gelu(double x) { return x * 0.5 * (1.0 + erf(x * SQRT1_2)); }
static inline double elu(double x) { return x > 0 ? x : expm1(x); }
static inline double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
}  // namespace dm

// ------------------------------------------------------------------ vector kernels, per ISA
#define VEC_BYTES 16
namespace isa_base {
#include "simd.h"
}
#undef VEC_BYTES

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX2_PATH 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2")
#endif
#define VEC_BYTES 32
namespace isa_avx2 {
#include "simd.h"
}
#undef VEC_BYTES
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

static bool use_avx2() {
#ifdef HAVE_AVX2_PATH
  static const bool yes = detmath::avx2_path("NEUROCODEC_EXACT_ISA");
  return yes;
#else
  return false;
#endif
}

static void gelu_any(const double* x, double* y, long n) {
#ifdef HAVE_AVX2_PATH
  if (use_avx2()) return isa_avx2::Gelu::run(x, y, n);
#endif
  isa_base::Gelu::run(x, y, n);
}

// Work is split over threads only from these sizes on (a thread costs tens of microseconds to
// start; 2^20 multiply-adds take about 150, 2^16 GELUs about 1000).
static constexpr long PARALLEL_MACS = 1L << 20, PARALLEL_ITEMS = 1L << 16;

// fn(begin, end) over [0, n) on up to `threads` threads (the calling one among them): runs of
// `align` x k items, about 4 per thread, taken in turn by whichever thread is free, so that a
// thread slowed by another process takes fewer. Every output is computed by the same
// operations whichever run holds it, so the bits never depend on the threads.
template <typename F>
static void in_parts(long n, long threads, long align, F fn) {
  if (threads <= 1 || n <= align) return fn(0L, n);
  long step = std::max(1L, n / align / (4 * threads)) * align;
  std::atomic<long> next{0};
  auto take = [&] {
    for (long b; (b = next.fetch_add(step)) < n;) fn(b, std::min(n, b + step));
  };
  std::vector<std::thread> pool;
  for (long t = 1; t < std::min(threads, (n + step - 1) / step); ++t) pool.emplace_back(take);
  take();
  for (auto& t : pool) t.join();
}

// B of a product: a row-major K x N matrix, or the patches of a zero-padded image x (the
// columns of a convolution, never built): B[k][n] = x[k_offset[k] + n_offset[n]], k running
// over (input channel, kernel row, kernel column) and n over the output positions.
template <typename T>
struct Matrix {
  const T* B;
  long N;
  T operator()(long k, long n) const { return B[k * N + n]; }
};
template <typename T>
struct Patches {
  const T* x;
  const int64_t *k_offset, *n_offset;
  T operator()(long k, long n) const { return x[k_offset[k] + n_offset[n]]; }
};

// C = bias + A B on up to `threads` threads. Wide products (the convolutions' many positions)
// split their columns: each thread packs and multiplies its own panels of B against all of A,
// so B passes through the caches once (split by rows, every run streamed all of B: 1.5-1.6x on
// two threads for mlic-medium's products). Others split their rows, B packed first.
template <typename T, typename G, typename Src>
static void gemm_on(const T* A, const Src& src, const T* bias, T* C, long M, long K, long N, int threads) {
  std::vector<T> pack((size_t)(K * N));
  long panels = N / G::NR, parallel = M * K * N >= PARALLEL_MACS ? threads : 1;
  if (parallel > 1 && panels >= 4 * parallel) {
    in_parts(panels, parallel, 1, [&](long p0, long p1) {
      G::pack_b(src, K, pack.data(), p0, p1);
      G::blocks(A, bias, C, K, N, pack.data(), 0, M, p0, p1);
    });
    in_parts(M, N % G::NR ? parallel : 1, G::MR, [&](long m0, long m1) { G::tail(A, src, bias, C, K, N, m0, m1); });
    return;
  }
  G::pack_b(src, K, pack.data(), 0, panels);
  in_parts(M, parallel, G::MR, [&](long m0, long m1) {
    G::blocks(A, bias, C, K, N, pack.data(), m0, m1, 0, panels);
    G::tail(A, src, bias, C, K, N, m0, m1);
  });
}

template <typename T, typename Src>
static void gemm_any(const T* A, const Src& src, const T* bias, T* C, long M, long K, long N, int threads) {
#ifdef HAVE_AVX2_PATH
  if (use_avx2()) return gemm_on<T, isa_avx2::Gemm<T>>(A, src, bias, C, M, K, N, threads);
#endif
  gemm_on<T, isa_base::Gemm<T>>(A, src, bias, C, M, K, N, threads);
}

// ------------------------------------------------------------------ bindings
template <typename T>
using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;

// bias + A B for `src`, N columns; A must be M x K, bias None or M values
template <typename T, typename Src>
static Array<T> product(const char* what, Array<T>& a, long K, long N, py::object bias, Src src, int threads) {
  if (threads < 1) throw std::invalid_argument(std::string(what) + ": threads must be >= 1");
  if (a.ndim() != 2 || a.shape(1) != K) throw std::invalid_argument(std::string(what) + ": A must be M x K");
  long M = a.shape(0);
  Array<T> bias_arr;
  const T* pb = nullptr;
  if (!bias.is_none()) {
    bias_arr = bias.cast<Array<T>>();
    if (bias_arr.ndim() != 1 || bias_arr.shape(0) != M)
      throw std::invalid_argument(std::string(what) + ": bias must have M entries");
    pb = bias_arr.data();
  }
  Array<T> c({M, N});
  const T* pa = a.data();
  T* pc = c.mutable_data();
  {
    py::gil_scoped_release release;
    gemm_any<T>(pa, src, pb, pc, M, K, N, threads);
  }
  return c;
}

template <typename T>
static Array<T> gemm(Array<T> a, Array<T> b, py::object bias, int threads) {
  if (b.ndim() != 2) throw std::invalid_argument("gemm: B must be K x N");
  return product<T>("gemm", a, b.shape(0), b.shape(1), bias, Matrix<T>{b.data(), (long)b.shape(1)}, threads);
}

using Offsets = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

// bias + A P, P[k][n] = x[k_offset[k] + n_offset[n]]: a convolution's product with its patches
// without building them (each output the same operations as gemm with the built patches)
static Array<double> patches_gemm(Array<double> a, Array<double> x, Offsets k_offset, Offsets n_offset,
                                  py::object bias, int threads) {
  long K = (long)k_offset.size(), N = (long)n_offset.size(), size = (long)x.size();
  const int64_t *ko = k_offset.data(), *no = n_offset.data();
  int64_t k_lo = K ? *std::min_element(ko, ko + K) : 0, k_hi = K ? *std::max_element(ko, ko + K) : 0;
  int64_t n_lo = N ? *std::min_element(no, no + N) : 0, n_hi = N ? *std::max_element(no, no + N) : 0;
  if (K && N && (k_lo + n_lo < 0 || k_hi + n_hi >= size))
    throw std::invalid_argument("patches_gemm: offsets outside x");
  return product<double>("patches_gemm", a, K, N, bias, Patches<double>{x.data(), ko, no}, threads);
}

using Doubles = Array<double>;

static Doubles like(const Doubles& x) { return Doubles(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim())); }

template <double (*F)(double)>
static Doubles elementwise(Doubles x, int threads) {
  Doubles y = like(x);
  const double* px = x.data();
  double* py_ = y.mutable_data();
  long n = (long)x.size();
  {
    py::gil_scoped_release release;
    in_parts(n, n >= PARALLEL_ITEMS ? threads : 1, 1, [&](long b, long e) {
      for (long i = b; i < e; ++i) py_[i] = F(px[i]);
    });
  }
  return y;
}

static Doubles gelu(Doubles x, int threads) {
  Doubles y = like(x);
  const double* px = x.data();
  double* py_ = y.mutable_data();
  long n = (long)x.size();
  {
    py::gil_scoped_release release;
    // runs of whole vectors: each value takes the vector path exactly where it would unsplit
    in_parts(n, n >= PARALLEL_ITEMS ? threads : 1, 8, [&](long b, long e) { gelu_any(px + b, py_ + b, e - b); });
  }
  return y;
}

PYBIND11_MODULE(_kernels, m) {
  dm::init();
  m.doc() = "CPU-independent kernels for the networks that compute the coder's parameters (float64)";
  // float32 too, only to compare the speed (codec.exact's docstring); pybind11 first tries every
  // overload without conversion, so each dtype finds its own
  m.def("gemm", &gemm<double>, py::arg("a"), py::arg("b"), py::arg("bias") = py::none(), py::arg("threads") = 1,
        "bias[:, None] + a @ b, each output summed in the order k = 0, 1, ... (a: M x K, b: K x N), "
        "on up to `threads` threads (the same bits on any number)");
  m.def("gemm", &gemm<float>, py::arg("a"), py::arg("b"), py::arg("bias") = py::none(), py::arg("threads") = 1);
  m.def("patches_gemm", &patches_gemm, py::arg("a"), py::arg("x"), py::arg("k_offset"), py::arg("n_offset"),
        py::arg("bias") = py::none(), py::arg("threads") = 1,
        "bias[:, None] + a @ P with P[k, n] = x.flat[k_offset[k] + n_offset[n]], bit for bit gemm(a, P)");
  m.def("gelu", &gelu, py::arg("x"), py::arg("threads") = 1, "x/2 (1 + erf(x / sqrt 2)) elementwise (PyTorch's nn.GELU())");
  m.def("elu", &elementwise<dm::elu>, py::arg("x"), py::arg("threads") = 1, "x if x > 0 else e^x - 1, elementwise");
  m.def("sigmoid", &elementwise<dm::sigmoid>, py::arg("x"), py::arg("threads") = 1, "1 / (1 + e^-x) elementwise");
  m.def("tanh", &elementwise<dm::tanh>, py::arg("x"), py::arg("threads") = 1, "tanh elementwise");
  m.def("exp", &elementwise<dm::exp>, py::arg("x"), py::arg("threads") = 1, "e^x elementwise");
  m.def("erf", &elementwise<dm::erf>, py::arg("x"), py::arg("threads") = 1, "erf elementwise");
  m.def("isa", [] { return use_avx2() ? "avx2" : "baseline"; },
        "the vector width in use (NEUROCODEC_EXACT_ISA=baseline forces the narrowest): the results do not depend on it");
}
