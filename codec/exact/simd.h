// The vectorized kernels, compiled once per instruction set: Gemm and Gelu.
//
// C = bias + A B for row-major A (M x K), B (K x N), C (M x N), one output at a time in a
// fixed order: c[m][n] = (((bias[m] + a[m][0] b[0][n]) + a[m][1] b[1][n]) + ...), each product
// rounded, then each sum (built with -ffp-contract=off, so never fused). Vectors run across
// independent columns n only, so the lane width changes the speed, never a bit of the result.
// _kernels.cpp includes this file once per instruction set, inside a namespace (and a
// target region) of its own, after namespace dm (the scalar math); it includes nothing itself. The small loops are unrolled so
// that the accumulators live in registers.

template <typename T>
struct Gemm {
  static constexpr int LANES = VEC_BYTES / sizeof(T);
  typedef T V __attribute__((vector_size(VEC_BYTES)));
  static constexpr int MR = 4;  // rows per block (accumulators: MR x NV vectors)
  static constexpr int NV = 3;  // vectors per row block
  static constexpr int NR = NV * LANES;

  static inline V load(const T* p) {
    V v;
    __builtin_memcpy(&v, p, sizeof(V));
    return v;
  }
  static inline void store(T* p, V v) { __builtin_memcpy(p, &v, sizeof(V)); }
  static inline V splat(T x) {  // every lane x (also -0.0; adding x to a zero vector would not keep it)
    V v;
    #pragma GCC unroll 16
    for (int l = 0; l < LANES; ++l) v[l] = x;
    return v;
  }

  // Columns n0 .. n0 + NR of rows m0 .. m0 + R over k = k0 .. k1 - 1, B from `panel` (those
  // columns packed row after row, NR wide). The sums start from the bias at k0 = 0, else
  // from what C holds: storing a partial sum and reloading it changes no bit.
  template <int R>
  static inline void block(const T* A, const T* panel, const T* bias, T* C, long K, long N, long m0, long n0,
                           long k0, long k1) {
    V acc[R][NV];
    #pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      T b0 = bias ? bias[m0 + r] : T(0);
      #pragma GCC unroll 8
      for (int j = 0; j < NV; ++j)
        acc[r][j] = k0 == 0 ? splat(b0) : load(C + (m0 + r) * N + n0 + j * LANES);
    }
    const T* a[R];
    #pragma GCC unroll 8
    for (int r = 0; r < R; ++r) a[r] = A + (m0 + r) * K;
    for (long k = k0; k < k1; ++k) {
      V b[NV];
      #pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) b[j] = load(panel + k * NR + j * LANES);
      #pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        V ar = splat(a[r][k]);
        #pragma GCC unroll 8
        for (int j = 0; j < NV; ++j) acc[r][j] = acc[r][j] + ar * b[j];
      }
    }
    #pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
      #pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) store(C + (m0 + r) * N + n0 + j * LANES, acc[r][j]);
  }

  // the columns right of the last full block: one output at a time, the same operations
  template <typename Src>
  static inline void scalar(const T* A, const Src& src, const T* bias, T* C, long K, long N, long m, long n) {
    T acc = bias ? bias[m] : T(0);
    const T* a = A + m * K;
    for (long k = 0; k < K; ++k) acc = acc + a[k] * src(k, n);
    C[m * N + n] = acc;
  }

  // `pack` holds K * (N - N % NR) values: B packed panel by panel (K x NR each); this call
  // packs panels p_begin .. p_end - 1 (threads may take any split of them). B is any `src`
  // with src(k, n) = B[k][n] (a matrix, or patches gathered from an image).
  template <typename Src>
  static void pack_b(const Src& src, long K, T* pack, long p_begin, long p_end) {
    for (long n0 = p_begin * NR; n0 < p_end * NR; n0 += NR)
      for (long k = 0; k < K; ++k)
        for (long c = 0; c < NR; ++c) pack[n0 * K + k * NR + c] = src(k, n0 + c);
  }

  // Rows m_begin .. m_end - 1, panels p_begin .. p_end - 1 (columns NR * p ..) of C from the
  // packed B. Cache blocking (the order of the blocks changes no result): k runs in slices of
  // KC, so that a panel's slice stays in the L1 cache while every row block of a chunk passes,
  // and a chunk's share of A (CHUNK_BYTES) in the L2 cache while every panel passes. Outputs
  // are independent: threads may take any split of the rows or of the panels.
  static constexpr long KC = 512, CHUNK_BYTES = 256 * 1024;
  static void blocks(const T* A, const T* bias, T* C, long K, long N, const T* pack, long m_begin, long m_end,
                     long p_begin, long p_end) {
    long chunk = CHUNK_BYTES / (long)sizeof(T) / KC / MR * MR;
    for (long k0 = 0; k0 < K || k0 == 0; k0 += KC) {
      long k1 = k0 + KC < K ? k0 + KC : K;
      for (long m_lo = m_begin; m_lo < m_end; m_lo += chunk) {
        long m_hi = m_lo + chunk < m_end ? m_lo + chunk : m_end;
        for (long n0 = p_begin * NR; n0 < p_end * NR; n0 += NR) {
          const T* panel = pack + n0 * K;
          long m0 = m_lo;
          for (; m0 + MR <= m_hi; m0 += MR) block<MR>(A, panel, bias, C, K, N, m0, n0, k0, k1);
          for (; m0 < m_hi; ++m0) block<1>(A, panel, bias, C, K, N, m0, n0, k0, k1);
        }
      }
    }
  }

  // the columns right of the last full panel, rows m_begin .. m_end - 1
  template <typename Src>
  static void tail(const T* A, const Src& src, const T* bias, T* C, long K, long N, long m_begin, long m_end) {
    for (long m = m_begin; m < m_end; ++m)
      for (long n = N - N % NR; n < N; ++n) scalar(A, src, bias, C, K, N, m, n);
  }
};

// GELU of n doubles: LANES values at a time by dm::gelu's operations lane by lane (erf's
// polynomial picked per lane), the rest one at a time by dm::gelu itself.
struct Gelu {
  static constexpr int LANES = VEC_BYTES / sizeof(double);
  typedef double V __attribute__((vector_size(VEC_BYTES)));

  static inline V splat(double x) {
    V v;
    #pragma GCC unroll 16
    for (int l = 0; l < LANES; ++l) v[l] = x;
    return v;
  }

  static inline V erf(V x) {
    V a = x < splat(0.0) ? -x : x, t;
    int row[LANES];
    #pragma GCC unroll 16
    for (int l = 0; l < LANES; ++l) {
      row[l] = a[l] < 6.0 ? (int)(a[l] * 4.0) : 0;  // lanes from 6 (or NaN) are 1 below
      t[l] = a[l] - ((double)row[l] + 0.5) * 0.25;
    }
    V v;
    #pragma GCC unroll 16
    for (int l = 0; l < LANES; ++l) v[l] = dm::ERF_POLY[row[l]][dm::ERF_DEGREE];
    for (int j = dm::ERF_DEGREE - 1; j >= 0; --j) {
      V c;
      #pragma GCC unroll 16
      for (int l = 0; l < LANES; ++l) c[l] = dm::ERF_POLY[row[l]][j];
      v = c + t * v;
    }
    v = a < splat(6.0) ? v : splat(1.0);
    return x < splat(0.0) ? -v : v;
  }

  static void run(const double* x, double* y, long n) {
    long i = 0;
    for (; i + LANES <= n; i += LANES) {
      V v;
      __builtin_memcpy(&v, x + i, sizeof(V));
      V r = v * splat(0.5) * (splat(1.0) + erf(v * splat(dm::SQRT1_2)));
      __builtin_memcpy(y + i, &r, sizeof(V));
    }
    for (; i < n; ++i) y[i] = dm::gelu(x[i]);
  }
};
