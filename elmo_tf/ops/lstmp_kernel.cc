// A fused projected LSTM (LSTMP) recurrence over a whole sequence, forward
// and backward, for CPU training (elmo_tf/ops/fused_lstmp.py builds and
// loads it; elmo_tf/layers/projected_lstm.py uses it when asked to).
//
// Why: at ELMo's training sizes on a CPU, a step of the recurrence is a
// few small matmuls and ~15 elementwise ops (and ~30 more in its gradient),
// each dispatched separately by TensorFlow's executor; their per-op cost,
// not the flops, dominates the training step (BENCHMARKS.md, "Where a
// training step's time goes"). Here one op runs all T steps and one op
// runs their gradient, with the elementwise math in vectorized Eigen arrays
// and the matmuls in Eigen, except each step's products with a whole
// weight, which run on weights packed once per call (f32mm below, AVX-512;
// or bf16mm under mixed_bfloat16).
//
// The math is ProjectedLSTM's (TF1 LSTMCell with num_proj, cell_clip,
// proj_clip, as bilm-tf), per step t, for a row whose keep[b, t] is 1:
//   z      = x[:, t] @ W_x + bias + h_prev @ W_h      (B, 4H), order i j f o
//   i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o);  j = tanh(z_j)
//   c_pre  = f * c_prev + i * j;   c = clip(c_pre, cell_clip)      (B, H)
//   h_pre  = (o * tanh(c)) @ W_p;  h = clip(h_pre, proj_clip)      (B, P)
// (with forget_bias added to z_f); a row whose keep is 0 carries h_prev
// and c_prev unchanged. kernel = [W_x; W_h], (I + P, 4H), is the layer's
// own variable, so its gradient needs no concat. With `reverse` the steps
// run from T-1 down to 0, each output staying at its own position. A clip
// of 0 is no clip; the clip's gradient passes where |x| <= clip, as
// tf.clip_by_value's.
//
// The input part x @ W_x + bias is in the op too (in float32 one matmul of all
// steps before the loop, its gradients two matmuls after it; in bfloat16 part
// of each step's product), so no TensorFlow op around the recurrence computes,
// or under mixed_bfloat16 casts, a (B, T, 4H) tensor. In float32 that matmul is
// Eigen on one thread, yet training is faster than with TensorFlow's oneDNN
// matmul on both cores before the op: the two directions' ops run side by side,
// and the (B, T, 4H) tensor no longer goes through memory and the graph.
//
// Layout: batch major, as the Keras layer holds them: x (B, T, I),
// keep (B, T) float 0/1, h_seq (B, T, P), c_seq (B, T, H); the per-step
// slices are strided Eigen maps, so nothing is transposed. Inputs and
// outputs are float32.
//
// With the attr bf16_matmuls (mixed_bfloat16 training) and a CPU with AMX
// or AVX512-BF16, every matmul reads bfloat16-rounded operands and
// accumulates in float32 (on the AMX tiles, else in VDPBF16PS dot
// products): the weights are rounded and packed once per call, the
// per-step operands (h, o * tanh(c), and their gradients) once per step.
// The elementwise math and the state stay float32. Without either (or at
// shapes the blocks do not fit: batch, input, cell or projection not a
// multiple of 32) the float32 Eigen matmuls run instead, which are at least
// as exact.

#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace elmo_tf {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

using Matrix =
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Stride = Eigen::OuterStride<>;
// Row b of a per-step slice is row b of the (B, T, D) tensor at step t.
using StepMap = Eigen::Map<Matrix, Eigen::Unaligned, Stride>;
using ConstStepMap = Eigen::Map<const Matrix, Eigen::Unaligned, Stride>;
using MatrixMap = Eigen::Map<Matrix>;
using ConstMatrixMap = Eigen::Map<const Matrix>;

// (B, D) view of step t of a (B, T, D) buffer.
inline StepMap Step(float* base, int t, int batch, int steps, int dim) {
  return StepMap(base + static_cast<int64_t>(t) * dim, batch, dim,
                 Stride(static_cast<int64_t>(steps) * dim));
}
inline ConstStepMap Step(const float* base, int t, int batch, int steps,
                         int dim) {
  return ConstStepMap(base + static_cast<int64_t>(t) * dim, batch, dim,
                      Stride(static_cast<int64_t>(steps) * dim));
}

// The clip as the forward applies it (0: none).
inline float Clip(float x, float clip) {
  return clip > 0 ? std::min(std::max(x, -clip), clip) : x;
}
// 1 where the clip's gradient passes (|x| <= clip, or no clip), else 0.
inline float ClipPass(float x, float clip) {
  return (clip <= 0 || std::fabs(x) <= clip) ? 1.0f : 0.0f;
}

// One batch row of a step's backward through the cell (H cells), from the
// gates g = [i j f o] (after their activations), tanh(c), dm = the gradient
// of m = o * tanh(c), dc = the cell state's incoming gradient (nullptr for
// a padded row: its dc goes around the step), c_pre and c_prev: dz = the
// gradient of the gates' pre-activations, dc_pre = the gradient passed to
// c_prev. Plain pointers marked __restrict, so that the compiler vectorizes
// the loop (through Eigen's strided maps it could not rule out aliasing
// between the ten arrays and ran it scalar: most of the gradient op's time
// under bfloat16 matmuls).
template <bool kHasDc>
inline void GateGradientsRowImpl(int H, float cell_clip,
                             const float* __restrict g,
                             const float* __restrict tanh_c,
                             const float* __restrict dm,
                             const float* __restrict dc,
                             const float* __restrict c_pre,
                             const float* __restrict c_prev,
                             float* __restrict dz,
                             float* __restrict dc_pre) {
  const float* __restrict gi = g;
  const float* __restrict gj = g + H;
  const float* __restrict gf = g + 2 * H;
  const float* __restrict go = g + 3 * H;
  float* __restrict dzi = dz;
  float* __restrict dzj = dz + H;
  float* __restrict dzf = dz + 2 * H;
  float* __restrict dzo = dz + 3 * H;
  // Then every value passes. (A bitwise | below, not ||: a load of c_pre
  // under a condition kept the loop scalar.)
  const bool no_clip = cell_clip <= 0;
  for (int k = 0; k < H; ++k) {
    const float i = gi[k], j = gj[k], f = gf[k], o = go[k], tc = tanh_c[k];
    const float dc_in = kHasDc ? dc[k] : 0.0f;
    const float dc_new = dc_in + dm[k] * o * (1.0f - tc * tc);
    const float dcp =
        (no_clip | (std::fabs(c_pre[k]) <= cell_clip)) ? dc_new : 0.0f;
    dzi[k] = dcp * j * i * (1.0f - i);
    dzj[k] = dcp * i * (1.0f - j * j);
    dzf[k] = dcp * c_prev[k] * f * (1.0f - f);
    dzo[k] = dm[k] * tc * o * (1.0f - o);
    dc_pre[k] = dcp * f;
  }
}

// sum[k] += row[k], k < n (the bias gradient, a step at a time while the
// step's dz is in cache).
inline void AddRow(int n, const float* __restrict row, float* __restrict sum) {
  for (int k = 0; k < n; ++k) sum[k] += row[k];
}

inline void GateGradientsRow(int H, float cell_clip, const float* g,
                             const float* tanh_c, const float* dm,
                             const float* dc, const float* c_pre,
                             const float* c_prev, float* dz, float* dc_pre) {
  if (dc != nullptr) {
    GateGradientsRowImpl<true>(H, cell_clip, g, tanh_c, dm, dc, c_pre, c_prev,
                               dz, dc_pre);
  } else {
    GateGradientsRowImpl<false>(H, cell_clip, g, tanh_c, dm, dc, c_pre,
                                c_prev, dz, dc_pre);
  }
}

// AVX512F present: the 512-bit registers and FMAs that both the float32
// (f32mm) and the AVX512-BF16 (bf16mm) matmuls below need.
bool Avx512fAvailable() {
  static const bool available = [] {
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    return (ebx & (1u << 16)) != 0;  // AVX512F
  }();
  return available;
}

// ---- bfloat16 matmuls: AMX tiles, or AVX512-BF16 dot products -------------
//
// C (M x N float32) (+)= A (M x K bfloat16) @ B (K x N bfloat16), with A
// row major (rows of K) and B "packed": column blocks of 16, and in each
// block pairs of consecutive rows interleaved (the VNNI layout TDPBF16PS
// and VDPBF16PS read), so that one 16 x 32 tile of B is 1 KiB of contiguous
// memory:
//   packed[n / 16][k / 2][n % 16][k % 2] = B[k][n].
// M, N and K are multiples of 32 (Usable() checks batch, input, cell and
// projection, so every operand here is), so nothing is padded.
// Where the CPU has AMX the products run on its tiles; where it has only
// AVX512-BF16 (AMD EPYC Zen 4 and later: bfloat16 dot products at about
// twice float32's FMA rate, no tiles) on 512-bit VDPBF16PS, the same
// operands and float32 sums. The functions carry their own target
// attributes: the file is built with -march=native, which lacks these on
// other CPUs, and they run only where GetBackend() said so.
namespace bf16mm {

using bf16 = uint16_t;

#define ELMO_TF_BF16_TARGET \
  __attribute__((target("avx512f,avx512bw,avx512bf16")))
#define ELMO_TF_AMX_TARGET \
  __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16")))

// AVX512F, AVX512BW and AVX512-BF16 present (no OS state to ask for: the
// zmm registers are enabled wherever AVX-512 is).
bool Avx512Bf16Available() {
  static const bool available = [] {
    if (!Avx512fAvailable()) return false;
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    if (!(ebx & (1u << 30))) return false;  // AVX512BW
    if (!__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return false;
    return (eax & (1u << 5)) != 0;  // AVX512_BF16
  }();
  return available;
}

// AVX512-BF16 (the conversions and packing below) and AMX-BF16 present,
// and the kernel grants this process the tile state (Linux hands it out on
// request only: arch_prctl).
bool AmxAvailable() {
  static const bool available = [] {
    if (!Avx512Bf16Available()) return false;
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    const bool amx_bf16 = edx & (1u << 22), amx_tile = edx & (1u << 24);
    if (!(amx_bf16 && amx_tile)) return false;
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) ==
           0;
  }();
  return available;
}

// Round to nearest even, as VCVTNEPS2BF16 does (NaN stays NaN).
inline bf16 ToBf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16>((u >> 16) | 64);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<bf16>(u >> 16);
}

// A buffer of bfloat16 (not zeroed).
inline std::unique_ptr<bf16[]> Buffer(int64_t n) {
  return std::unique_ptr<bf16[]>(new bf16[n]);
}

// dst (rows x cols, row stride dst_stride, default cols) = src (rows x
// cols, row stride src_stride); cols % 32 == 0.
ELMO_TF_BF16_TARGET void ConvertRows(const float* src, int64_t src_stride,
                                     int rows, int cols, bf16* dst,
                                     int64_t dst_stride = -1) {
  if (dst_stride < 0) dst_stride = cols;
  for (int r = 0; r < rows; ++r) {
    const float* s = src + r * src_stride;
    bf16* d = dst + r * dst_stride;
    for (int c = 0; c < cols; c += 32) {
      const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + c + 16),
                                             _mm512_loadu_ps(s + c));
      _mm512_storeu_si512(d + c, reinterpret_cast<const __m512i&>(v));
    }
  }
}

// Columns 0 .. rows - 1 of dst (cols x ld) = the transpose of src (rows x
// cols, row stride src_stride); rows % 32 == 0. For the narrow (B x P)
// operands of the weight gradients, a step at a time: each column of dst
// is 32 rows of src gathered (they stay in L1 across the columns).
ELMO_TF_BF16_TARGET void ConvertTransposed(const float* src,
                                           int64_t src_stride, int rows,
                                           int cols, bf16* dst, int64_t ld) {
  if (src_stride >= (int64_t{1} << 26)) {  // Gather offsets are int32.
    for (int r = 0; r < rows; ++r) {
      const float* s = src + r * src_stride;
      for (int c = 0; c < cols; ++c) dst[c * ld + r] = ToBf16(s[c]);
    }
    return;
  }
  const __m512i row_offsets = _mm512_mullo_epi32(
      _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
      _mm512_set1_epi32(static_cast<int>(src_stride)));
  for (int r = 0; r < rows; r += 32) {
    const float* s0 = src + r * src_stride;
    const float* s1 = s0 + 16 * src_stride;
    for (int c = 0; c < cols; ++c) {
      const __m512bh v =
          _mm512_cvtne2ps_pbh(_mm512_i32gather_ps(row_offsets, s1 + c, 4),
                              _mm512_i32gather_ps(row_offsets, s0 + c, 4));
      _mm512_storeu_si512(dst + c * ld + r,
                          reinterpret_cast<const __m512i&>(v));
    }
  }
}

// packed = B = src (k x n, row stride src_stride); k even, n % 16 == 0.
// With first_pair and total_pairs, src is rows 2 * first_pair ... of a B
// of 2 * total_pairs rows (so that B can be packed a block at a time).
ELMO_TF_BF16_TARGET void PackRows(const float* src, int64_t src_stride,
                                  int k, int n, bf16* packed,
                                  int64_t first_pair = 0,
                                  int64_t total_pairs = -1) {
  const int64_t pairs = k / 2;
  if (total_pairs < 0) total_pairs = pairs;
  // 16-bit lane 2i takes element i of row 2p, lane 2i + 1 element i of
  // row 2p + 1 (which cvtne2ps_pbh put in lane 16 + i).
  alignas(64) int16_t order[32];
  for (int l = 0; l < 32; ++l) order[l] = (l & 1) ? 16 + l / 2 : l / 2;
  const __m512i interleave = _mm512_load_si512(order);
  // 16 pairs (32 rows) at a time, column blocks outer: the stores of a
  // block are one contiguous KiB, and the 32 rows stay in cache across the
  // blocks. (Pairs outer wrote 64 bytes to a different page per block and
  // missed the TLB; blocks outer over all rows read a weight's whole
  // height per block.)
  for (int64_t p0 = 0; p0 < pairs; p0 += 16) {
    const int64_t p1 = std::min<int64_t>(p0 + 16, pairs);
    for (int nb = 0; nb < n / 16; ++nb) {
      bf16* out = packed + (nb * total_pairs + first_pair) * 32;
      for (int64_t p = p0; p < p1; ++p) {
        const float* even = src + 2 * p * src_stride + nb * 16;
        const __m512bh v = _mm512_cvtne2ps_pbh(
            _mm512_loadu_ps(even + src_stride), _mm512_loadu_ps(even));
        _mm512_storeu_si512(
            out + p * 32,
            _mm512_permutexvar_epi16(interleave,
                                     reinterpret_cast<const __m512i&>(v)));
      }
    }
  }
}

// packed = B = the transpose of src (n x k, row stride src_stride);
// n % 16 == 0, k % 32 == 0. For the weights' transposes in the gradient.
ELMO_TF_BF16_TARGET void PackTransposed(const float* src, int64_t src_stride,
                                        int n, int k, bf16* packed) {
  // 32 consecutive floats of a row of src, converted, are 16 (even, odd)
  // pairs in the 32-bit words, in order. For 16 rows (one column block of
  // B) the 16 x 16 words transposed are 16 pairs of B's rows, each 16
  // columns wide: 1 KiB of the packed block, stored contiguously.
  const int64_t pairs = k / 2;
  for (int nb = 0; nb < n / 16; ++nb) {
    for (int64_t kb = 0; kb < k; kb += 32) {
      __m512i r[16], t[16];
      for (int i = 0; i < 16; ++i) {
        const float* s = src + (nb * 16 + i) * src_stride + kb;
        const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + 16),
                                               _mm512_loadu_ps(s));
        r[i] = reinterpret_cast<const __m512i&>(v);
      }
      // Within each 128-bit lane L: words 4L .. 4L + 3 of every row.
      for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
      }
      // r[4j + c], lane L: word 4L + c of rows 4j .. 4j + 3.
      for (int j = 0; j < 16; j += 4) {
        r[j] = _mm512_unpacklo_epi64(t[j], t[j + 2]);
        r[j + 1] = _mm512_unpackhi_epi64(t[j], t[j + 2]);
        r[j + 2] = _mm512_unpacklo_epi64(t[j + 1], t[j + 3]);
        r[j + 3] = _mm512_unpackhi_epi64(t[j + 1], t[j + 3]);
      }
      __m512i* out = reinterpret_cast<__m512i*>(packed) +
                     nb * pairs + kb / 2;  // 16 words (one pair) each
      for (int c = 0; c < 4; ++c) {
        const __m512i v0 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x88);
        const __m512i v1 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xDD);
        const __m512i w0 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x88);
        const __m512i w1 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xDD);
        // Word 4L + c of all 16 rows, for lanes L = 0, 1, 2, 3.
        _mm512_storeu_si512(out + c, _mm512_shuffle_i32x4(v0, w0, 0x88));
        _mm512_storeu_si512(out + 4 + c, _mm512_shuffle_i32x4(v1, w1, 0x88));
        _mm512_storeu_si512(out + 8 + c, _mm512_shuffle_i32x4(v0, w0, 0xDD));
        _mm512_storeu_si512(out + 12 + c,
                            _mm512_shuffle_i32x4(v1, w1, 0xDD));
      }
    }
  }
}

// The tile shapes: 0-3 C (16 x 16 float32), 4-5 A (16 x 32 bfloat16), 6-7
// B (16 pairs x 16 columns). Per thread; the op configures them at the
// start of its Compute and releases them at the end.
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

ELMO_TF_AMX_TARGET void ConfigureTiles() {
  TileConfig config;
  std::memset(&config, 0, sizeof(config));
  config.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = 16;
    config.colsb[t] = 64;
  }
  // Not g++ 12's _tile_loadconfig: its asm declares that it reads only a
  // pointer's worth of the config, so the compiler may drop the stores to
  // rows and colsb as dead (it did: ldtilecfg faulted on a half-written
  // config). This operand is the whole 64-byte struct.
  asm volatile("ldtilecfg %0" : : "m"(config));
}

ELMO_TF_AMX_TARGET void ReleaseTiles() { _tile_release(); }

// C (m x n, row stride ldc) = (C +) A (m x k, contiguous) @ packed B.
// m, n, k multiples of 32. Blocks of 32 x 32 of C (four tiles), columns
// outer so that a block column of B stays in cache across rows.
ELMO_TF_AMX_TARGET void AmxGemm(int m, int n, int64_t k, const bf16* a,
                             const bf16* packed, float* c, int64_t ldc,
                             bool accumulate) {
  const int64_t pairs = k / 2;
  const int64_t c_bytes = ldc * 4, a_bytes = k * 2;
  for (int j = 0; j < n; j += 32) {
    const bf16* b0 = packed + (j / 16) * pairs * 32;
    const bf16* b1 = b0 + pairs * 32;
    for (int i = 0; i < m; i += 32) {
      float* c00 = c + i * ldc + j;
      float* c10 = c00 + 16 * ldc;
      if (accumulate) {
        _tile_loadd(0, c00, c_bytes);
        _tile_loadd(1, c00 + 16, c_bytes);
        _tile_loadd(2, c10, c_bytes);
        _tile_loadd(3, c10 + 16, c_bytes);
      } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
      }
      const bf16* a0 = a + i * k;
      const bf16* a1 = a0 + 16 * k;
      for (int64_t kk = 0; kk < k; kk += 32) {
        _tile_loadd(4, a0 + kk, a_bytes);
        _tile_loadd(5, a1 + kk, a_bytes);
        _tile_loadd(6, b0 + kk * 16, 64);  // pairs kk/2 .. kk/2 + 15
        _tile_loadd(7, b1 + kk * 16, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, c00, c_bytes);
      _tile_stored(1, c00 + 16, c_bytes);
      _tile_stored(2, c10, c_bytes);
      _tile_stored(3, c10 + 16, c_bytes);
    }
  }
}

// C (m x n, row stride ldc) = (C +) A (m x k, contiguous) @ packed B, on
// 512-bit VDPBF16PS: blocks of 8 rows x 32 columns of C held in 16 zmm
// accumulators over the whole k; per pair of k, the two 16-column vectors
// of B are loaded once and each row's pair of A is broadcast. Columns
// outer, so that a 32-column panel of B (k x 32 bfloat16: 16 KiB at
// k = 256) stays in L1 across the row blocks. m % 8 == 0, n % 32 == 0,
// k even (Usable() makes them multiples of 32).
ELMO_TF_BF16_TARGET void Avx512Gemm(int m, int n, int64_t k, const bf16* a,
                                    const bf16* packed, float* c,
                                    int64_t ldc, bool accumulate) {
  constexpr int kRows = 8;
  const int64_t pairs = k / 2;
  // Row r's pairs of A as 32-bit words: (a[r][2p], a[r][2p + 1]).
  const uint32_t* a_pairs = reinterpret_cast<const uint32_t*>(a);
  for (int j = 0; j < n; j += 32) {
    const bf16* b0 = packed + (j / 16) * pairs * 32;
    const bf16* b1 = b0 + pairs * 32;
    for (int i = 0; i < m; i += kRows) {
      __m512 acc0[kRows], acc1[kRows];
#pragma GCC unroll 8
      for (int r = 0; r < kRows; ++r) {
        float* c_row = c + (i + r) * ldc + j;
        acc0[r] = accumulate ? _mm512_loadu_ps(c_row) : _mm512_setzero_ps();
        acc1[r] =
            accumulate ? _mm512_loadu_ps(c_row + 16) : _mm512_setzero_ps();
      }
      const uint32_t* a_block = a_pairs + i * pairs;
      for (int64_t p = 0; p < pairs; ++p) {
        const __m512bh v0 = (__m512bh)_mm512_loadu_si512(b0 + p * 32);
        const __m512bh v1 = (__m512bh)_mm512_loadu_si512(b1 + p * 32);
#pragma GCC unroll 8
        for (int r = 0; r < kRows; ++r) {
          const __m512bh a_rp =
              (__m512bh)_mm512_set1_epi32(a_block[r * pairs + p]);
          acc0[r] = _mm512_dpbf16_ps(acc0[r], a_rp, v0);
          acc1[r] = _mm512_dpbf16_ps(acc1[r], a_rp, v1);
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < kRows; ++r) {
        float* c_row = c + (i + r) * ldc + j;
        _mm512_storeu_ps(c_row, acc0[r]);
        _mm512_storeu_ps(c_row + 16, acc1[r]);
      }
    }
  }
}

// Which instructions run the bfloat16 matmuls.
enum class Backend { kNone, kAmx, kAvx512Bf16 };

// The best the CPU offers, unless $ELMO_TF_LSTMP_BFLOAT16 asks for a
// lesser one ("avx512_bf16" on an AMX machine, or "none": float32), so
// that tests and benchmarks can run every path a CPU can. Read at each
// op call (cheap next to the op).
Backend GetBackend() {
  const Backend best = AmxAvailable()          ? Backend::kAmx
                       : Avx512Bf16Available() ? Backend::kAvx512Bf16
                                               : Backend::kNone;
  const char* asked = std::getenv("ELMO_TF_LSTMP_BFLOAT16");
  if (asked == nullptr) return best;
  if (std::strcmp(asked, "none") == 0) return Backend::kNone;
  if (std::strcmp(asked, "avx512_bf16") == 0 && Avx512Bf16Available())
    return Backend::kAvx512Bf16;
  return best;
}

const char* BackendName(Backend backend) {
  switch (backend) {
    case Backend::kAmx:
      return "amx";
    case Backend::kAvx512Bf16:
      return "avx512_bf16";
    case Backend::kNone:
      break;
  }
  return "none";
}

// Whether the bfloat16 path runs for these sizes (32 x 32 blocks).
inline bool Usable(Backend backend, bool requested, int batch, int input,
                   int cell, int proj) {
  return requested && backend != Backend::kNone && batch > 0 &&
         batch % 32 == 0 && input % 32 == 0 && cell % 32 == 0 &&
         proj % 32 == 0;
}

// Before and after an op's matmuls: the tiles are configured per thread
// (nothing to do for AVX512-BF16).
inline void Begin(Backend backend) {
  if (backend == Backend::kAmx) ConfigureTiles();
}
inline void End(Backend backend) {
  if (backend == Backend::kAmx) ReleaseTiles();
}

// C (m x n, row stride ldc) = (C +) A (m x k, contiguous) @ packed B.
inline void Gemm(Backend backend, int m, int n, int64_t k, const bf16* a,
                 const bf16* packed, float* c, int64_t ldc,
                 bool accumulate) {
  if (backend == Backend::kAmx) {
    AmxGemm(m, n, k, a, packed, c, ldc, accumulate);
  } else {
    Avx512Gemm(m, n, k, a, packed, c, ldc, accumulate);
  }
}

}  // namespace bf16mm

// ---- float32 per-step matmuls: AVX-512 FMAs on weights packed once -------
//
// A step's products have B rows (32 at ELMo's batch) against a whole
// weight: z += h_prev @ W_h, h_pre = m @ W_p, and in the gradient
// dm = dh_pre @ W_p^T, dh = dz @ W_h^T. Eigen packs the weight again at
// every call, so each step copied all of it for 32 rows of work: at the
// paper's `original` size (W_h 512 x 16,384) the per-step matmuls ran at
// ~50-70 GFLOP/s of one core's ~105 (BENCHMARKS.md, twenty-second
// sitting). Here each weight (or its transpose) is packed once per op
// call, and every step reads it in place:
//   packed[n / 32][k][n % 32] = B[k][n]
// (panels of 32 columns, each k x 32 contiguous). C (m x n, row stride ldc)
// (+)= A (m x k, row stride lda) @ B in blocks of 8 rows x 32 columns held
// in 16 zmm accumulators; k in blocks of kDepth, so that a panel's block
// stays in L2 across the row blocks. Each C element sums its k products in
// order, one FMA each, so results differ from Eigen's in the last bits.
// m % 8 == 0, n % 32 == 0 (Usable()). The float32 matmuls
// over all B * T rows (the input part, the weight gradients) stay Eigen's,
// which packs once per call anyway.
namespace f32mm {

#define ELMO_TF_AVX512_TARGET __attribute__((target("avx512f")))

// Whether the packed path runs: AVX-512, shapes that fit the blocks, and
// not turned off by $ELMO_TF_LSTMP_FLOAT32=eigen (for A/B runs and tests;
// read at each op call).
inline bool Usable(int batch, int cell, int proj) {
  const char* asked = std::getenv("ELMO_TF_LSTMP_FLOAT32");
  if (asked != nullptr && std::strcmp(asked, "eigen") == 0) return false;
  return Avx512fAvailable() && batch > 0 && batch % 8 == 0 &&
         cell % 32 == 0 && proj % 32 == 0;
}

inline std::unique_ptr<float[]> Buffer(int64_t n) {
  return std::unique_ptr<float[]>(new float[n]);
}

// packed = B = src (k x n, row stride src_stride).
inline void PackRows(const float* src, int64_t src_stride, int k, int n,
                     float* packed) {
  for (int j = 0; j < n; j += 32) {
    float* out = packed + static_cast<int64_t>(j) * k;
    for (int kk = 0; kk < k; ++kk) {
      std::memcpy(out + static_cast<int64_t>(kk) * 32,
                  src + kk * src_stride + j, 32 * sizeof(float));
    }
  }
}

// packed = B = the transpose of src (n x k, row stride src_stride): panel
// j holds src's rows j .. j + 31 side by side, read 16 columns at a time
// (32 rows x 16 floats stay in L1 while they are scattered into place).
inline void PackTransposed(const float* src, int64_t src_stride, int n,
                           int k, float* packed) {
  for (int j = 0; j < n; j += 32) {
    float* out = packed + static_cast<int64_t>(j) * k;
    for (int k0 = 0; k0 < k; k0 += 16) {
      const int k1 = std::min(k0 + 16, k);
      for (int c = 0; c < 32; ++c) {
        const float* row = src + (j + c) * src_stride;
        for (int kk = k0; kk < k1; ++kk) out[kk * 32 + c] = row[kk];
      }
    }
  }
}

ELMO_TF_AVX512_TARGET void Gemm(int m, int n, int k, const float* a,
                                int64_t lda, const float* packed, float* c,
                                int64_t ldc, bool accumulate) {
  constexpr int kRows = 8;
  // 256 rows of a 32-column panel: 32 KiB, in L2 across the row blocks.
  constexpr int kDepth = 256;
  for (int k0 = 0; k0 < k; k0 += kDepth) {
    const int k1 = std::min(k0 + kDepth, k);
    const bool add_to_c = accumulate || k0 > 0;
    for (int j = 0; j < n; j += 32) {
      const float* panel = packed + static_cast<int64_t>(j) * k;
      for (int i = 0; i < m; i += kRows) {
        __m512 acc0[kRows], acc1[kRows];
#pragma GCC unroll 8
        for (int r = 0; r < kRows; ++r) {
          float* c_row = c + (i + r) * ldc + j;
          acc0[r] = add_to_c ? _mm512_loadu_ps(c_row) : _mm512_setzero_ps();
          acc1[r] =
              add_to_c ? _mm512_loadu_ps(c_row + 16) : _mm512_setzero_ps();
        }
        const float* a_block = a + i * lda;
        for (int kk = k0; kk < k1; ++kk) {
          const __m512 b0 = _mm512_loadu_ps(panel + kk * 32);
          const __m512 b1 = _mm512_loadu_ps(panel + kk * 32 + 16);
#pragma GCC unroll 8
          for (int r = 0; r < kRows; ++r) {
            const __m512 a_rk = _mm512_set1_ps(a_block[r * lda + kk]);
            acc0[r] = _mm512_fmadd_ps(a_rk, b0, acc0[r]);
            acc1[r] = _mm512_fmadd_ps(a_rk, b1, acc1[r]);
          }
        }
#pragma GCC unroll 8
        for (int r = 0; r < kRows; ++r) {
          float* c_row = c + (i + r) * ldc + j;
          _mm512_storeu_ps(c_row, acc0[r]);
          _mm512_storeu_ps(c_row + 16, acc1[r]);
        }
      }
    }
  }
}

}  // namespace f32mm

struct Dims {
  int batch, steps, input, cell, proj;
};

Status CheckShapes(const Tensor& x, const Tensor& keep, const Tensor& h0,
                   const Tensor& c0, const Tensor& kernel,
                   const Tensor& projection, Dims* dims) {
  if (x.dims() != 3)
    return InvalidArgument("x must be (batch, time, input), got ",
                           x.shape().DebugString());
  if (projection.dims() != 2)
    return InvalidArgument("projection must be (cell, projection), got ",
                           projection.shape().DebugString());
  dims->batch = x.dim_size(0);
  dims->steps = x.dim_size(1);
  dims->input = x.dim_size(2);
  dims->cell = projection.dim_size(0);
  dims->proj = projection.dim_size(1);
  const Dims& d = *dims;
  if (keep.shape() != TensorShape({d.batch, d.steps}))
    return InvalidArgument("keep must be (batch, time) = (", d.batch, ", ",
                           d.steps, "), got ", keep.shape().DebugString());
  if (kernel.shape() != TensorShape({d.input + d.proj, 4 * d.cell}))
    return InvalidArgument(
        "kernel must be (input + projection, 4 * cell) = (", d.input, " + ",
        d.proj, ", ", 4 * d.cell, "), got ", kernel.shape().DebugString());
  if (h0.shape() != TensorShape({d.batch, d.proj}))
    return InvalidArgument("h0 must be (batch, projection), got ",
                           h0.shape().DebugString());
  if (c0.shape() != TensorShape({d.batch, d.cell}))
    return InvalidArgument("c0 must be (batch, cell), got ",
                           c0.shape().DebugString());
  return Status();
}

}  // namespace

REGISTER_OP("ElmoLstmpSequence")
    .Input("x: float")           // (B, T, I)
    .Input("keep: float")        // (B, T): 1 real step, 0 carry the state
    .Input("h0: float")          // (B, P)
    .Input("c0: float")          // (B, H)
    .Input("kernel: float")      // (I + P, 4H): rows [x; h], gates i j f o
    .Input("bias: float")        // (4H), without the forget bias
    .Input("projection: float")  // (H, P)
    .Attr("cell_clip: float = 0.0")
    .Attr("proj_clip: float = 0.0")
    .Attr("forget_bias: float = 0.0")
    .Attr("reverse: bool = false")
    .Attr("bf16_matmuls: bool = false")
    .Output("h_seq: float")    // (B, T, P): state h after each step
    .Output("c_seq: float")    // (B, T, H): state c after each step
    .Output("gates: float")    // (B, T, 4H): i, j, f, o after activation
    .Output("c_pre: float")    // (B, T, H): cell before its clip
    .Output("h_pre: float")    // (B, T, P): projection before its clip
    .Output("h_last: float")   // (B, P): state after the last step read
    .Output("c_last: float")   // (B, H)   (h0, c0 when T = 0)
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x, projection;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(6), 2, &projection));
      DimensionHandle batch = c->Dim(x, 0);
      DimensionHandle steps = c->Dim(x, 1);
      DimensionHandle cell = c->Dim(projection, 0);
      DimensionHandle proj = c->Dim(projection, 1);
      DimensionHandle gates;
      TF_RETURN_IF_ERROR(c->Multiply(cell, 4, &gates));
      c->set_output(0, c->MakeShape({batch, steps, proj}));
      c->set_output(1, c->MakeShape({batch, steps, cell}));
      c->set_output(2, c->MakeShape({batch, steps, gates}));
      c->set_output(3, c->MakeShape({batch, steps, cell}));
      c->set_output(4, c->MakeShape({batch, steps, proj}));
      c->set_output(5, c->MakeShape({batch, proj}));
      c->set_output(6, c->MakeShape({batch, cell}));
      return Status();
    });

class ElmoLstmpSequenceOp : public OpKernel {
 public:
  explicit ElmoLstmpSequenceOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("cell_clip", &cell_clip_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("proj_clip", &proj_clip_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("forget_bias", &forget_bias_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("reverse", &reverse_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bf16_matmuls", &bf16_matmuls_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& keep = ctx->input(1);
    const Tensor& h0 = ctx->input(2);
    const Tensor& c0 = ctx->input(3);
    const Tensor& kernel = ctx->input(4);
    const Tensor& bias = ctx->input(5);
    const Tensor& projection = ctx->input(6);
    Dims d;
    OP_REQUIRES_OK(ctx, CheckShapes(x, keep, h0, c0, kernel, projection, &d));
    const int B = d.batch, T = d.steps, I = d.input, H = d.cell, P = d.proj;
    OP_REQUIRES(ctx, bias.shape() == TensorShape({4 * H}),
                InvalidArgument("bias must be (4 * cell) = (", 4 * H,
                                "), got ", bias.shape().DebugString()));
    Tensor *h_seq, *c_seq, *gates, *c_pre, *h_pre;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, T, P}), &h_seq));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, T, H}), &c_seq));
    OP_REQUIRES_OK(ctx,
                   ctx->allocate_output(2, TensorShape({B, T, 4 * H}), &gates));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({B, T, H}), &c_pre));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({B, T, P}), &h_pre));
    Tensor *h_last, *c_last;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, TensorShape({B, P}), &h_last));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(6, TensorShape({B, H}), &c_last));

    const float* keep_data = keep.flat<float>().data();
    const float* kernel_data = kernel.flat<float>().data();
    ConstMatrixMap w_x_m(kernel_data, I, 4 * H);
    ConstMatrixMap w_h_m(kernel_data + static_cast<int64_t>(I) * 4 * H, P,
                         4 * H);
    ConstMatrixMap w_p_m(projection.flat<float>().data(), H, P);
    // The bias, with the forget bias added to the f block: (1, 4H).
    Eigen::RowVectorXf gate_bias =
        Eigen::Map<const Eigen::RowVectorXf>(bias.flat<float>().data(), 4 * H);
    gate_bias.segment(2 * H, H).array() += forget_bias_;

    Matrix m(B, H);  // o * tanh(c) of the step: (B, H)
    // bfloat16 (AMX or AVX512-BF16): the weights packed once; per step
    // [x, h_prev] (B, I + P) and m (B, H) rounded into a_xh, a_m, and
    // z = [x, h_prev] @ [W_x; W_h] is one product whose sums stay in the
    // tiles or registers (an input matmul of all steps first, as float32
    // does, stores all of z and loads it back step by step: slower on AMX).
    const bf16mm::Backend backend = bf16mm::GetBackend();
    const bool use_bf16 =
        bf16mm::Usable(backend, bf16_matmuls_, B, I, H, P) && T > 0;
    std::unique_ptr<bf16mm::bf16[]> w_packed, w_p_packed, a_xh, a_m;
    // float32 (no bfloat16 matmuls): W_h and W_p packed once for the steps'
    // products (f32mm), where AVX-512 runs them.
    const bool use_f32 = !use_bf16 && f32mm::Usable(B, H, P);
    std::unique_ptr<float[]> w_h_f32, w_p_f32;
    if (use_bf16) {
      w_packed = bf16mm::Buffer(static_cast<int64_t>(I + P) * 4 * H);
      bf16mm::PackRows(kernel_data, 4 * H, I + P, 4 * H, w_packed.get());
      w_p_packed = bf16mm::Buffer(static_cast<int64_t>(H) * P);
      bf16mm::PackRows(w_p_m.data(), P, H, P, w_p_packed.get());
      a_xh = bf16mm::Buffer(static_cast<int64_t>(B) * (I + P));
      a_m = bf16mm::Buffer(static_cast<int64_t>(B) * H);
      bf16mm::Begin(backend);
    } else if (T > 0) {
      // float32: the pre-activations' input part of every step, x @ W_x in
      // one matmul, into `gates`; each step adds h's part, then the bias
      // with the activations (while the step's z is in cache).
      const int64_t rows = static_cast<int64_t>(B) * T;
      MatrixMap(gates->flat<float>().data(), rows, 4 * H).noalias() =
          ConstMatrixMap(x.flat<float>().data(), rows, I) * w_x_m;
      if (use_f32) {
        w_h_f32 = f32mm::Buffer(static_cast<int64_t>(P) * 4 * H);
        f32mm::PackRows(w_h_m.data(), 4 * H, P, 4 * H, w_h_f32.get());
        w_p_f32 = f32mm::Buffer(static_cast<int64_t>(H) * P);
        f32mm::PackRows(w_p_m.data(), P, H, P, w_p_f32.get());
      }
    }
    const float* h_prev_base = h0.flat<float>().data();
    const float* c_prev_base = c0.flat<float>().data();
    int64_t prev_stride_h = P, prev_stride_c = H;  // h0, c0 are (B, D)
    for (int n = 0; n < T; ++n) {
      const int t = reverse_ ? T - 1 - n : n;
      ConstStepMap h_prev(h_prev_base, B, P, Stride(prev_stride_h));
      ConstStepMap c_prev(c_prev_base, B, H, Stride(prev_stride_c));
      StepMap z = Step(gates->flat<float>().data(), t, B, T, 4 * H);
      if (use_bf16) {
        bf16mm::ConvertRows(
            x.flat<float>().data() + static_cast<int64_t>(t) * I,
            static_cast<int64_t>(T) * I, B, I, a_xh.get(), I + P);
        bf16mm::ConvertRows(h_prev_base, prev_stride_h, B, P, a_xh.get() + I,
                            I + P);
        bf16mm::Gemm(backend, B, 4 * H, I + P, a_xh.get(), w_packed.get(),
                     z.data(), static_cast<int64_t>(T) * 4 * H,
                     /*accumulate=*/false);
      } else if (use_f32) {
        f32mm::Gemm(B, 4 * H, P, h_prev.data(), prev_stride_h, w_h_f32.get(),
                    z.data(), static_cast<int64_t>(T) * 4 * H,
                    /*accumulate=*/true);
      } else {
        z.noalias() += h_prev * w_h_m;
      }
      StepMap cp = Step(c_pre->flat<float>().data(), t, B, T, H);
      StepMap hp = Step(h_pre->flat<float>().data(), t, B, T, P);
      StepMap c_out = Step(c_seq->flat<float>().data(), t, B, T, H);
      StepMap h_out = Step(h_seq->flat<float>().data(), t, B, T, P);
      // The bias and the activations in place: i, f, o sigmoid; j tanh.
      z.rowwise() += gate_bias;
      z.leftCols(H) = z.leftCols(H).array().logistic();
      z.middleCols(H, H) = z.middleCols(H, H).array().tanh();
      z.rightCols(2 * H) = z.rightCols(2 * H).array().logistic();
      cp = z.middleCols(2 * H, H).cwiseProduct(c_prev) +
           z.leftCols(H).cwiseProduct(z.middleCols(H, H));
      for (int b = 0; b < B; ++b) {
        for (int k = 0; k < H; ++k) c_out(b, k) = Clip(cp(b, k), cell_clip_);
      }
      m = z.rightCols(H).cwiseProduct(
          Matrix(c_out.array().tanh().matrix()));
      if (use_bf16) {
        bf16mm::ConvertRows(m.data(), H, B, H, a_m.get());
        bf16mm::Gemm(backend, B, P, H, a_m.get(), w_p_packed.get(), hp.data(),
                     static_cast<int64_t>(T) * P, /*accumulate=*/false);
      } else if (use_f32) {
        f32mm::Gemm(B, P, H, m.data(), H, w_p_f32.get(), hp.data(),
                    static_cast<int64_t>(T) * P, /*accumulate=*/false);
      } else {
        hp.noalias() = m * w_p_m;
      }
      for (int b = 0; b < B; ++b) {
        if (keep_data[b * T + t] != 0.0f) {
          for (int k = 0; k < P; ++k) h_out(b, k) = Clip(hp(b, k), proj_clip_);
        } else {  // Padding: carry the state.
          h_out.row(b) = h_prev.row(b);
          c_out.row(b) = c_prev.row(b);
        }
      }
      h_prev_base = h_seq->flat<float>().data() + static_cast<int64_t>(t) * P;
      c_prev_base = c_seq->flat<float>().data() + static_cast<int64_t>(t) * H;
      prev_stride_h = static_cast<int64_t>(T) * P;
      prev_stride_c = static_cast<int64_t>(T) * H;
    }
    if (use_bf16) bf16mm::End(backend);
    MatrixMap(h_last->flat<float>().data(), B, P) =
        ConstStepMap(h_prev_base, B, P, Stride(prev_stride_h));
    MatrixMap(c_last->flat<float>().data(), B, H) =
        ConstStepMap(c_prev_base, B, H, Stride(prev_stride_c));
  }

 private:
  float cell_clip_, proj_clip_, forget_bias_;
  bool reverse_, bf16_matmuls_;
};

REGISTER_KERNEL_BUILDER(Name("ElmoLstmpSequence").Device(DEVICE_CPU),
                        ElmoLstmpSequenceOp);

REGISTER_OP("ElmoLstmpSequenceGrad")
    .Input("x: float")           // (B, T, I)
    .Input("keep: float")        // (B, T)
    .Input("h0: float")          // (B, P)
    .Input("c0: float")          // (B, H)
    .Input("kernel: float")      // (I + P, 4H)
    .Input("projection: float")  // (H, P)
    .Input("h_seq: float")       // (B, T, P)  forward outputs
    .Input("c_seq: float")       // (B, T, H)
    .Input("gates: float")       // (B, T, 4H)
    .Input("c_pre: float")       // (B, T, H)
    .Input("h_pre: float")       // (B, T, P)
    .Input("d_h_seq: float")     // (B, T, P)  gradients of h_seq, c_seq
    .Input("d_c_seq: float")     // (B, T, H)
    .Input("d_h_last: float")    // (B, P)  gradients of h_last, c_last
    .Input("d_c_last: float")    // (B, H)
    .Attr("cell_clip: float = 0.0")
    .Attr("proj_clip: float = 0.0")
    .Attr("reverse: bool = false")
    .Attr("bf16_matmuls: bool = false")
    .Output("d_x: float")           // (B, T, I)
    .Output("d_h0: float")          // (B, P)
    .Output("d_c0: float")          // (B, H)
    .Output("d_kernel: float")      // (I + P, 4H)
    .Output("d_bias: float")        // (4H)
    .Output("d_projection: float")  // (H, P)
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(3));
      c->set_output(3, c->input(4));
      ShapeHandle kernel;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 2, &kernel));
      c->set_output(4, c->Vector(c->Dim(kernel, 1)));
      c->set_output(5, c->input(5));
      return Status();
    });

class ElmoLstmpSequenceGradOp : public OpKernel {
 public:
  explicit ElmoLstmpSequenceGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("cell_clip", &cell_clip_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("proj_clip", &proj_clip_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("reverse", &reverse_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bf16_matmuls", &bf16_matmuls_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& keep = ctx->input(1);
    const Tensor& h0 = ctx->input(2);
    const Tensor& c0 = ctx->input(3);
    const Tensor& kernel = ctx->input(4);
    const Tensor& projection = ctx->input(5);
    const Tensor& h_seq = ctx->input(6);
    const Tensor& c_seq = ctx->input(7);
    const Tensor& gates = ctx->input(8);
    const Tensor& c_pre = ctx->input(9);
    const Tensor& h_pre = ctx->input(10);
    const Tensor& d_h_seq = ctx->input(11);
    const Tensor& d_c_seq = ctx->input(12);
    const Tensor& d_h_last = ctx->input(13);
    const Tensor& d_c_last = ctx->input(14);
    Dims d;
    OP_REQUIRES_OK(ctx, CheckShapes(x, keep, h0, c0, kernel, projection, &d));
    const int B = d.batch, T = d.steps, I = d.input, H = d.cell, P = d.proj;
    for (const Tensor* t : {&h_seq, &h_pre, &d_h_seq})
      OP_REQUIRES(ctx, t->shape() == TensorShape({B, T, P}),
                  InvalidArgument("expected (", B, ", ", T, ", ", P, "), got ",
                                  t->shape().DebugString()));
    for (const Tensor* t : {&c_seq, &c_pre, &d_c_seq})
      OP_REQUIRES(ctx, t->shape() == TensorShape({B, T, H}),
                  InvalidArgument("expected (", B, ", ", T, ", ", H, "), got ",
                                  t->shape().DebugString()));
    OP_REQUIRES(ctx, gates.shape() == TensorShape({B, T, 4 * H}),
                InvalidArgument("gates must be (", B, ", ", T, ", ", 4 * H,
                                "), got ", gates.shape().DebugString()));
    OP_REQUIRES(ctx, d_h_last.shape() == h0.shape() &&
                         d_c_last.shape() == c0.shape(),
                InvalidArgument("d_h_last, d_c_last must be shaped as h0, c0"));
    Tensor *d_x, *d_h0, *d_c0, *d_kernel, *d_bias, *d_projection;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &d_x));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, h0.shape(), &d_h0));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, c0.shape(), &d_c0));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, kernel.shape(), &d_kernel));
    OP_REQUIRES_OK(ctx,
                   ctx->allocate_output(4, TensorShape({4 * H}), &d_bias));
    OP_REQUIRES_OK(ctx,
                   ctx->allocate_output(5, projection.shape(), &d_projection));
    float* d_kernel_data = d_kernel->flat<float>().data();
    MatrixMap dw_x(d_kernel_data, I, 4 * H);
    MatrixMap dw_h(d_kernel_data + static_cast<int64_t>(I) * 4 * H, P, 4 * H);
    MatrixMap dw_p(d_projection->flat<float>().data(), H, P);
    Eigen::Map<Eigen::RowVectorXf> d_bias_v(d_bias->flat<float>().data(),
                                            4 * H);
    MatrixMap dh_carry(d_h0->flat<float>().data(), B, P);  // ends as d_h0
    MatrixMap dc_carry(d_c0->flat<float>().data(), B, H);  // ends as d_c0
    // The final state's gradient enters at the last step read.
    dh_carry = ConstMatrixMap(d_h_last.flat<float>().data(), B, P);
    dc_carry = ConstMatrixMap(d_c_last.flat<float>().data(), B, H);
    if (B == 0 || T == 0) {
      d_x->flat<float>().setZero();
      d_kernel->flat<float>().setZero();
      d_bias_v.setZero();
      dw_p.setZero();
      return;
    }

    const float* keep_data = keep.flat<float>().data();
    const float* kernel_data = kernel.flat<float>().data();
    ConstMatrixMap w_x_m(kernel_data, I, 4 * H);
    ConstMatrixMap w_h_m(kernel_data + static_cast<int64_t>(I) * 4 * H, P,
                         4 * H);
    ConstMatrixMap w_p_m(projection.flat<float>().data(), H, P);
    Matrix dh(B, P), dc(B, H), tanh_c(B, H), dm(B, H), dc_pre(B, H);
    const int64_t rows = static_cast<int64_t>(B) * T;  // a multiple of 32
    // bfloat16 (AMX or AVX512-BF16): the weights' transposes packed once; per
    // step dh_pre (B, P) and dz (B, 4H) rounded into a_dh_pre, a_dz. The weight
    // gradients' operands are gathered step by step while they are in cache,
    // their B * T rows ordered step major (row t * B + b; any order does for a
    // sum over rows, and this one makes each step's rows whole bfloat16 pairs):
    // [x; h_prev]^T and dh_pre^T (I + P or P x B * T) as A, and m (B * T x H)
    // and dz (B * T x 4H) packed as B. In bfloat16, d_projection^T = dh_pre^T m
    // (P x H) is computed, so that only the narrow operands are transposed, and
    // d_kernel = [x; h_prev]^T dz is one matmul.
    const bf16mm::Backend backend = bf16mm::GetBackend();
    const bool use_bf16 = bf16mm::Usable(backend, bf16_matmuls_, B, I, H, P);
    // dz, the gradient of the pre-activations; m = o * tanh(c); and the
    // gradient of h_pre, per step. In float32 they go into (B, T, D)
    // buffers, and each weight gradient is one matmul over all B * T rows
    // after the loop (a sum over steps of (B x D) products would be T
    // small matmuls). In bfloat16 the packed operands above keep them, so one
    // (B, D) buffer each is reused by every step and stays in cache.
    const int buffer_steps = use_bf16 ? 1 : T;
    Tensor dz_all_t, m_all_t, dh_pre_all_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT,
                                           TensorShape({B, buffer_steps,
                                                        4 * H}),
                                           &dz_all_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(
                            tensorflow::DT_FLOAT,
                            TensorShape({B, buffer_steps, H}), &m_all_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(
                            tensorflow::DT_FLOAT,
                            TensorShape({B, buffer_steps, P}), &dh_pre_all_t));
    float* dz_all = dz_all_t.flat<float>().data();
    float* m_all = m_all_t.flat<float>().data();
    float* dh_pre_all = dh_pre_all_t.flat<float>().data();
    // Step t's (B, D) rows of one of those buffers.
    auto buffer_step = [&](float* base, int t, int dim) {
      return use_bf16 ? StepMap(base, B, dim, Stride(dim))
                     : Step(base, t, B, T, dim);
    };
    std::unique_ptr<bf16mm::bf16[]> w_p_t_packed, w_h_t_packed, w_x_t_packed,
        a_dh_pre, a_dz, xh_t, dh_pre_t, m_packed, dz_packed;
    if (use_bf16) {
      w_p_t_packed = bf16mm::Buffer(static_cast<int64_t>(P) * H);
      bf16mm::PackTransposed(w_p_m.data(), P, H, P, w_p_t_packed.get());
      w_h_t_packed = bf16mm::Buffer(static_cast<int64_t>(4) * H * P);
      bf16mm::PackTransposed(w_h_m.data(), 4 * H, P, 4 * H, w_h_t_packed.get());
      w_x_t_packed = bf16mm::Buffer(static_cast<int64_t>(4) * H * I);
      bf16mm::PackTransposed(w_x_m.data(), 4 * H, I, 4 * H, w_x_t_packed.get());
      a_dh_pre = bf16mm::Buffer(static_cast<int64_t>(B) * P);
      a_dz = bf16mm::Buffer(static_cast<int64_t>(B) * 4 * H);
      xh_t = bf16mm::Buffer((I + P) * rows);  // x^T rows, then h_prev^T
      dh_pre_t = bf16mm::Buffer(P * rows);
      m_packed = bf16mm::Buffer(rows * H);
      dz_packed = bf16mm::Buffer(rows * 4 * H);
      bf16mm::Begin(backend);
    }
    // float32 (no bfloat16 matmuls): W_p^T and W_h^T packed once for the
    // steps' products (f32mm), where AVX-512 runs them.
    const bool use_f32 = !use_bf16 && f32mm::Usable(B, H, P);
    std::unique_ptr<float[]> w_p_t_f32, w_h_t_f32;
    if (use_f32) {
      w_p_t_f32 = f32mm::Buffer(static_cast<int64_t>(P) * H);
      f32mm::PackTransposed(w_p_m.data(), P, H, P, w_p_t_f32.get());
      w_h_t_f32 = f32mm::Buffer(static_cast<int64_t>(4) * H * P);
      f32mm::PackTransposed(w_h_m.data(), 4 * H, P, 4 * H, w_h_t_f32.get());
    }
    d_bias_v.setZero();
    for (int n = T - 1; n >= 0; --n) {
      const int t = reverse_ ? T - 1 - n : n;
      // The state before step t: h0/c0 for the first step in reading order.
      const bool first = n == 0;
      const int t_prev = reverse_ ? t + 1 : t - 1;
      ConstStepMap h_prev =
          first ? ConstStepMap(h0.flat<float>().data(), B, P, Stride(P))
                : Step(h_seq.flat<float>().data(), t_prev, B, T, P);
      ConstStepMap c_prev =
          first ? ConstStepMap(c0.flat<float>().data(), B, H, Stride(H))
                : Step(c_seq.flat<float>().data(), t_prev, B, T, H);
      ConstStepMap g = Step(gates.flat<float>().data(), t, B, T, 4 * H);
      ConstStepMap cp = Step(c_pre.flat<float>().data(), t, B, T, H);
      ConstStepMap hp = Step(h_pre.flat<float>().data(), t, B, T, P);
      ConstStepMap c_out = Step(c_seq.flat<float>().data(), t, B, T, H);
      StepMap dz = buffer_step(dz_all, t, 4 * H);

      dh = Step(d_h_seq.flat<float>().data(), t, B, T, P) + dh_carry;
      dc = Step(d_c_seq.flat<float>().data(), t, B, T, H) + dc_carry;
      StepMap dh_pre = buffer_step(dh_pre_all, t, P);
      StepMap m = buffer_step(m_all, t, H);
      for (int b = 0; b < B; ++b) {
        const bool kept = keep_data[b * T + t] != 0.0f;
        for (int k = 0; k < P; ++k)
          dh_pre(b, k) = kept ? dh(b, k) * ClipPass(hp(b, k), proj_clip_) : 0;
      }
      // For kept rows c_out is clip(c_pre); padded rows' values are unused
      // (their dh_pre and dc_new are zero).
      tanh_c = c_out.array().tanh();
      m = g.rightCols(H).cwiseProduct(tanh_c);
      if (use_bf16) {
        bf16mm::ConvertRows(dh_pre.data(), dh_pre.outerStride(), B, P,
                            a_dh_pre.get());
        bf16mm::Gemm(backend, B, H, P, a_dh_pre.get(), w_p_t_packed.get(),
                     dm.data(), H, /*accumulate=*/false);
      } else if (use_f32) {
        f32mm::Gemm(B, H, P, dh_pre.data(), dh_pre.outerStride(),
                    w_p_t_f32.get(), dm.data(), H, /*accumulate=*/false);
      } else {
        dm.noalias() = dh_pre * w_p_m.transpose();
      }
      for (int b = 0; b < B; ++b) {
        const bool kept = keep_data[b * T + t] != 0.0f;
        GateGradientsRow(H, cell_clip_, &g(b, 0), &tanh_c(b, 0), &dm(b, 0),
                         kept ? &dc(b, 0) : nullptr, &cp(b, 0),
                         &c_prev(b, 0), &dz(b, 0), &dc_pre(b, 0));
      }
      for (int b = 0; b < B; ++b) AddRow(4 * H, &dz(b, 0), d_bias_v.data());
      // Kept rows: the gradient through the step. Padded rows (dz = 0,
      // dc_pre = 0) pass the gradient of the carried state on as it is.
      if (use_bf16) {
        bf16mm::ConvertRows(dz.data(), dz.outerStride(), B, 4 * H, a_dz.get());
        bf16mm::Gemm(backend, B, P, 4 * H, a_dz.get(), w_h_t_packed.get(),
                     dh_carry.data(), P, /*accumulate=*/false);
        // The input's gradient of this step: dz @ W_x^T.
        bf16mm::Gemm(backend, B, I, 4 * H, a_dz.get(), w_x_t_packed.get(),
                     d_x->flat<float>().data() + static_cast<int64_t>(t) * I,
                     static_cast<int64_t>(T) * I, /*accumulate=*/false);
        // This step's rows of the weight gradients' operands.
        const int64_t first_row = static_cast<int64_t>(t) * B;
        bf16mm::ConvertTransposed(
            x.flat<float>().data() + static_cast<int64_t>(t) * I,
            static_cast<int64_t>(T) * I, B, I, xh_t.get() + first_row, rows);
        bf16mm::ConvertTransposed(h_prev.data(), h_prev.outerStride(), B, P,
                                  xh_t.get() + I * rows + first_row, rows);
        bf16mm::ConvertTransposed(dh_pre.data(), dh_pre.outerStride(), B, P,
                                  dh_pre_t.get() + first_row, rows);
        bf16mm::PackRows(m.data(), m.outerStride(), B, H, m_packed.get(),
                         first_row / 2, rows / 2);
        bf16mm::PackRows(dz.data(), dz.outerStride(), B, 4 * H, dz_packed.get(),
                         first_row / 2, rows / 2);
      } else if (use_f32) {
        f32mm::Gemm(B, P, 4 * H, dz.data(), dz.outerStride(), w_h_t_f32.get(),
                    dh_carry.data(), P, /*accumulate=*/false);
      } else {
        dh_carry.noalias() = dz * w_h_m.transpose();
      }
      dc_carry = dc_pre;
      for (int b = 0; b < B; ++b) {
        if (keep_data[b * T + t] == 0.0f) {
          dh_carry.row(b) = dh.row(b);
          dc_carry.row(b) = dc.row(b);
        }
      }
    }
    if (use_bf16) {
      Matrix dw_p_t(P, H);
      bf16mm::Gemm(backend, P, H, rows, dh_pre_t.get(), m_packed.get(),
                   dw_p_t.data(), H, /*accumulate=*/false);
      dw_p = dw_p_t.transpose();
      // d_kernel = [dw_x; dw_h] = [x; h_prev]^T dz.
      bf16mm::Gemm(backend, I + P, 4 * H, rows, xh_t.get(), dz_packed.get(),
                   d_kernel_data, 4 * H, /*accumulate=*/false);
      bf16mm::End(backend);
      return;
    }
    ConstMatrixMap dz_rows(dz_all, rows, 4 * H);
    // The input's gradient and W_x's, over all B * T rows at once.
    MatrixMap(d_x->flat<float>().data(), rows, I).noalias() =
        dz_rows * w_x_m.transpose();
    dw_x.noalias() =
        ConstMatrixMap(x.flat<float>().data(), rows, I).transpose() * dz_rows;
    // d_w_p = sum over steps of m^T dh_pre: one (H x BT) (BT x P) matmul.
    dw_p.noalias() = ConstMatrixMap(m_all, rows, H).transpose() *
                     ConstMatrixMap(dh_pre_all, rows, P);
    // d_w_h = sum over steps of h_prev^T dz, with h_prev of row (b, t) the
    // state before step t: h_seq shifted by one step in reading order, h0
    // at the first step read.
    Tensor h_prev_all_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT,
                                           TensorShape({B, T, P}),
                                           &h_prev_all_t));
    float* h_prev_all = h_prev_all_t.flat<float>().data();
    const float* h_seq_data = h_seq.flat<float>().data();
    const float* h0_data = h0.flat<float>().data();
    for (int b = 0; b < B; ++b) {
      for (int t = 0; t < T; ++t) {
        const bool first = reverse_ ? t == T - 1 : t == 0;
        const float* src =
            first ? h0_data + static_cast<int64_t>(b) * P
                  : h_seq_data + (static_cast<int64_t>(b) * T +
                                  (reverse_ ? t + 1 : t - 1)) * P;
        std::copy(src, src + P,
                  h_prev_all + (static_cast<int64_t>(b) * T + t) * P);
      }
    }
    dw_h.noalias() = ConstMatrixMap(h_prev_all, rows, P).transpose() * dz_rows;
  }

 private:
  float cell_clip_, proj_clip_;
  bool reverse_, bf16_matmuls_;
};

REGISTER_KERNEL_BUILDER(Name("ElmoLstmpSequenceGrad").Device(DEVICE_CPU),
                        ElmoLstmpSequenceGradOp);

// What runs bf16_matmuls in this process (CPU and kernel support): a scalar
// string, "amx", "avx512_bf16" or "none" (float32 matmuls), for tests and
// benchmarks to report.
REGISTER_OP("ElmoLstmpBfloat16Backend")
    .Output("backend: string")
    .SetIsStateful()
    .SetShapeFn(::tensorflow::shape_inference::ScalarShape);

class ElmoLstmpBfloat16BackendOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    Tensor* backend;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &backend));
    backend->scalar<::tensorflow::tstring>()() =
        bf16mm::BackendName(bf16mm::GetBackend());
  }
};

REGISTER_KERNEL_BUILDER(Name("ElmoLstmpBfloat16Backend").Device(DEVICE_CPU),
                        ElmoLstmpBfloat16BackendOp);

}  // namespace elmo_tf
