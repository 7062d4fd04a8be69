// Max-pooling of the character CNN's convolution windows per token, with
// the position of each max, and its gradient (elmo_tf/ops/window_max.py
// builds and loads it; elmo_tf/layers/char_cnn.py uses it when asked to).
//
// Why: the encoder convolves a ragged set of windows per token (rows) and
// takes, per token and filter, the max over its windows. With
// tf.math.segment_max the gradient is TensorFlow's generic one: the max
// gathered back to every window, an equality test, a cast, a segment sum
// that counts ties, a division, a gather and a select, each over the whole
// (windows, filters) tensor; at the paper's `small` filters that is about
// 45 ms of op time per training step under mixed_bfloat16, whose segment
// ops are also 3x slower than float32's. Here the forward also records
// which window held each max, so the gradient is one pass that writes the
// incoming gradient there and zeros elsewhere.
//
//   features (W, F), T = float or bfloat16: one row per window, the windows
//     of a token contiguous, tokens in order;
//   rows (W,) int32: the token of each window, ascending, every token of
//     0 ... num_rows - 1 present;
//   pooled (num_rows, F) T: the max over each token's windows (exactly one
//     of the values: nothing is rounded);
//   argmax (num_rows, F) int32: the window that holds it, the first one
//     where several tie.
//   grad: d_features[argmax[r, f], f] = d_pooled[r, f], 0 elsewhere.
//
// Ties: TensorFlow's segment_max gradient splits the gradient evenly between
// tied windows; this one gives it all to the first. Both are gradients of
// the max (it is not differentiable at a tie). The encoder's only frequent
// ties are repeated identical windows (a window moved back to the last one
// of a short token), where both give the same gradient to the embeddings
// and the kernel.
//
// Work is sharded over tokens on TensorFlow's intra-op thread pool: each
// token's windows are one contiguous block of rows, read (forward) or
// written (gradient) by one thread only. The forward's loop is AVX-512
// intrinsics where the compiler targets it (-march=native), plain C++
// elsewhere: left to the auto-vectorizer, the compare-and-keep became
// branches and stack spills, slower than TensorFlow's segment_max in
// float32.

#include <atomic>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <functional>
#ifdef __AVX512BW__
#include <immintrin.h>
#endif
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/platform/threadpool.h"

namespace tensorflow {
namespace {

using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

// float32 view of a value: bfloat16 is the high half of a float32.
inline float ToFloat(float x) { return x; }
inline float ToFloat(bfloat16 x) {
  uint16_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float result;
  std::memcpy(&result, &wide, sizeof(result));
  return result;
}

// Back from a float32 that came from a T (exact: the low half is zero).
template <typename T>
inline T FromFloat(float x);
template <>
inline float FromFloat<float>(float x) { return x; }
template <>
inline bfloat16 FromFloat<bfloat16>(float x) {
  uint32_t wide;
  std::memcpy(&wide, &x, sizeof(wide));
  const uint16_t bits = static_cast<uint16_t>(wide >> 16);
  bfloat16 result;
  std::memcpy(&result, &bits, sizeof(result));
  return result;
}

// A float32 sum as T, rounded to nearest even (Eigen's bfloat16
// conversion).
template <typename T>
inline T Round(float x) {
  return static_cast<T>(x);
}

// offsets[r] ... offsets[r + 1] - 1: the windows of token r, from `rows`;
// an error naming the first window that breaks the contract.
Status TokenOffsets(const int32_t* rows, int64_t num_windows,
                    int64_t num_rows, std::vector<int64_t>* offsets) {
  offsets->assign(num_rows + 1, 0);
  int64_t previous = -1;
  for (int64_t w = 0; w < num_windows; ++w) {
    const int64_t row = rows[w];
    if (row < 0 || row >= num_rows) {
      return errors::InvalidArgument("rows[", w, "] = ", row,
                                     " is outside [0, num_rows = ", num_rows,
                                     ")");
    }
    if (row < previous) {
      return errors::InvalidArgument("rows must be ascending: rows[", w,
                                     "] = ", row, " follows ", previous);
    }
    if (row > previous + 1) {
      return errors::InvalidArgument("token ", previous + 1,
                                     " has no window (rows jumps from ",
                                     previous, " to ", row, " at ", w, ")");
    }
    previous = row;
    ++(*offsets)[row + 1];
  }
  if (previous != num_rows - 1) {
    return errors::InvalidArgument("token ", previous + 1,
                                   " has no window (num_rows = ", num_rows,
                                   ", the last window's row is ", previous,
                                   ")");
  }
  for (int64_t r = 0; r < num_rows; ++r) (*offsets)[r + 1] += (*offsets)[r];
  return OkStatus();
}

void ShardOverTokens(OpKernelContext* ctx, int64_t num_rows,
                     int64_t cost_per_token,
                     const std::function<void(int64_t, int64_t)>& work) {
  ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
      num_rows, cost_per_token, work);
}

Status ScalarRows(OpKernelContext* ctx, const Tensor& num_rows_tensor,
                  int64_t* num_rows) {
  if (!TensorShapeUtils::IsScalar(num_rows_tensor.shape())) {
    return errors::InvalidArgument("num_rows must be a scalar, got shape ",
                                   num_rows_tensor.shape().DebugString());
  }
  *num_rows = num_rows_tensor.scalar<int32_t>()();
  if (*num_rows < 0) {
    return errors::InvalidArgument("num_rows must be >= 0, got ", *num_rows);
  }
  return OkStatus();
}

REGISTER_OP("ElmoWindowMax")
    .Input("features: T")     // (W, F)
    .Input("rows: int32")     // (W,)
    .Input("num_rows: int32")  // ()
    .Output("pooled: T")      // (num_rows, F)
    .Output("argmax: int32")  // (num_rows, F)
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle features;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &features));
      ShapeHandle rows;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &rows));
      shape_inference::DimensionHandle num_rows;
      TF_RETURN_IF_ERROR(c->MakeDimForScalarInput(2, &num_rows));
      ShapeHandle out = c->Matrix(num_rows, c->Dim(features, 1));
      c->set_output(0, out);
      c->set_output(1, out);
      return OkStatus();
    });

// The forward's inner loop: the max over rows first ... last - 1 (row
// stride F) of `width` columns, and the first row holding it. Blocks of
// filters keep their running max and argmax in registers while the token's
// windows stream past (windows inner), so each value is loaded once and
// each result stored once, and several independent compare/blend chains
// are in flight.
#ifdef __AVX512BW__
// 4 vectors of 16 filters per block.
constexpr int64_t kBlock = 64;

inline __m512 Load16(const float* p, __mmask16 m) {
  return _mm512_maskz_loadu_ps(m, p);
}
inline __m512 Load16(const bfloat16* p, __mmask16 m) {
  const __m256i half = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
}
inline void Store16(float* p, __mmask16 m, __m512 v) {
  _mm512_mask_storeu_ps(p, m, v);
}
inline void Store16(bfloat16* p, __mmask16 m, __m512 v) {
  // The high halves: exact, as every value came from a bfloat16.
  const __m256i half = _mm512_cvtepi32_epi16(
      _mm512_srli_epi32(_mm512_castps_si512(v), 16));
  _mm256_mask_storeu_epi16(p, m, half);
}

template <typename T>
inline void MaxOfColumns(const T* in, int64_t F, int64_t first, int64_t last,
                         int64_t width, T* pooled, int32_t* argmax) {
  constexpr int kVectors = kBlock / 16;
  __mmask16 mask[kVectors];
  for (int v = 0; v < kVectors; ++v) {
    const int64_t left = width - 16 * v;
    mask[v] = left >= 16 ? 0xFFFF
                         : left <= 0 ? 0 : static_cast<__mmask16>(
                                                (1u << left) - 1);
  }
  __m512 best[kVectors];
  __m512i at[kVectors];
  const __m512i first_row = _mm512_set1_epi32(static_cast<int32_t>(first));
  for (int v = 0; v < kVectors; ++v) {
    best[v] = Load16(in + first * F + 16 * v, mask[v]);
    at[v] = first_row;
  }
  for (int64_t w = first + 1; w < last; ++w) {
    const T* row = in + w * F;
    const __m512i window = _mm512_set1_epi32(static_cast<int32_t>(w));
    for (int v = 0; v < kVectors; ++v) {
      const __m512 value = Load16(row + 16 * v, mask[v]);
      const __mmask16 greater =
          _mm512_cmp_ps_mask(value, best[v], _CMP_GT_OQ);
      best[v] = _mm512_mask_mov_ps(best[v], greater, value);
      at[v] = _mm512_mask_mov_epi32(at[v], greater, window);
    }
  }
  for (int v = 0; v < kVectors; ++v) {
    Store16(pooled + 16 * v, mask[v], best[v]);
    _mm512_mask_storeu_epi32(argmax + 16 * v, mask[v], at[v]);
  }
}
#else
constexpr int64_t kBlock = 8;

template <typename T>
inline void MaxOfColumns(const T* in, int64_t F, int64_t first, int64_t last,
                         int64_t width, T* pooled, int32_t* argmax) {
  for (int64_t k = 0; k < width; ++k) {
    float best = ToFloat(in[first * F + k]);
    int32_t at = static_cast<int32_t>(first);
    for (int64_t w = first + 1; w < last; ++w) {
      const float value = ToFloat(in[w * F + k]);
      if (value > best) {
        best = value;
        at = static_cast<int32_t>(w);
      }
    }
    pooled[k] = FromFloat<T>(best);
    argmax[k] = at;
  }
}
#endif  // __AVX512BW__

template <typename T>
class ElmoWindowMaxOp : public OpKernel {
 public:
  explicit ElmoWindowMaxOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& features = ctx->input(0);
    const Tensor& rows = ctx->input(1);
    OP_REQUIRES(ctx, TensorShapeUtils::IsMatrix(features.shape()),
                errors::InvalidArgument(
                    "features must be (windows, filters), got shape ",
                    features.shape().DebugString()));
    const int64_t num_windows = features.dim_size(0);
    const int64_t num_filters = features.dim_size(1);
    OP_REQUIRES(ctx,
                TensorShapeUtils::IsVector(rows.shape()) &&
                    rows.dim_size(0) == num_windows,
                errors::InvalidArgument(
                    "rows must be (windows,) = (", num_windows,
                    ",), got shape ", rows.shape().DebugString()));
    int64_t num_rows;
    OP_REQUIRES_OK(ctx, ScalarRows(ctx, ctx->input(2), &num_rows));
    std::vector<int64_t> offsets;
    OP_REQUIRES_OK(ctx, TokenOffsets(rows.flat<int32_t>().data(),
                                     num_windows, num_rows, &offsets));
    Tensor* pooled = nullptr;
    Tensor* argmax = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, TensorShape({num_rows, num_filters}), &pooled));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            1, TensorShape({num_rows, num_filters}), &argmax));
    const T* in = features.flat<T>().data();
    T* out = pooled->flat<T>().data();
    int32_t* where = argmax->flat<int32_t>().data();
    const int64_t F = num_filters;
    const int64_t mean_windows = num_rows ? num_windows / num_rows + 1 : 1;
    ShardOverTokens(
        ctx, num_rows, mean_windows * F * 4,
        [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r) {
            const int64_t first = offsets[r], last = offsets[r + 1];
            for (int64_t f = 0; f < F; f += kBlock) {
              MaxOfColumns(in + f, F, first, last, std::min(kBlock, F - f),
                           out + r * F + f, where + r * F + f);
            }
          }
        });
  }
};

REGISTER_OP("ElmoWindowMaxGrad")
    .Input("d_pooled: T")      // (num_rows, F)
    .Input("argmax: int32")    // (num_rows, F)
    .Input("rows: int32")      // (W,)
    .Output("d_features: T")   // (W, F)
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle d_pooled;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &d_pooled));
      ShapeHandle rows;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &rows));
      c->set_output(0, c->Matrix(c->Dim(rows, 0), c->Dim(d_pooled, 1)));
      return OkStatus();
    });

template <typename T>
class ElmoWindowMaxGradOp : public OpKernel {
 public:
  explicit ElmoWindowMaxGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& d_pooled = ctx->input(0);
    const Tensor& argmax = ctx->input(1);
    const Tensor& rows = ctx->input(2);
    OP_REQUIRES(ctx, TensorShapeUtils::IsMatrix(d_pooled.shape()),
                errors::InvalidArgument(
                    "d_pooled must be (num_rows, filters), got shape ",
                    d_pooled.shape().DebugString()));
    OP_REQUIRES(ctx, argmax.shape() == d_pooled.shape(),
                errors::InvalidArgument(
                    "argmax must have d_pooled's shape ",
                    d_pooled.shape().DebugString(), ", got ",
                    argmax.shape().DebugString()));
    OP_REQUIRES(ctx, TensorShapeUtils::IsVector(rows.shape()),
                errors::InvalidArgument("rows must be (windows,), got shape ",
                                        rows.shape().DebugString()));
    const int64_t num_rows = d_pooled.dim_size(0);
    const int64_t F = d_pooled.dim_size(1);
    const int64_t num_windows = rows.dim_size(0);
    std::vector<int64_t> offsets;
    OP_REQUIRES_OK(ctx, TokenOffsets(rows.flat<int32_t>().data(),
                                     num_windows, num_rows, &offsets));
    Tensor* d_features = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, TensorShape({num_windows, F}), &d_features));
    const T* d_in = d_pooled.flat<T>().data();
    const int32_t* where = argmax.flat<int32_t>().data();
    T* d_out = d_features->flat<T>().data();
    // Every (token, filter) writes one window of that token's own block, so
    // the tokens' blocks are disjoint; a bad argmax is an error, not a
    // write elsewhere.
    std::atomic<bool> out_of_block{false};
    const int64_t mean_windows = num_rows ? num_windows / num_rows + 1 : 1;
    ShardOverTokens(
        ctx, num_rows, mean_windows * F * 2,
        [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r) {
            const int64_t first = offsets[r], last = offsets[r + 1];
            std::memset(static_cast<void*>(d_out + first * F), 0,
                        (last - first) * F * sizeof(T));
            const int32_t* at = where + r * F;
            const T* d_row = d_in + r * F;
            for (int64_t f = 0; f < F; ++f) {
              const int64_t w = at[f];
              if (w < first || w >= last) {
                out_of_block = true;
                continue;
              }
              d_out[w * F + f] = d_row[f];
            }
          }
        });
    OP_REQUIRES(ctx, !out_of_block,
                errors::InvalidArgument(
                    "argmax names a window outside its token's windows: it "
                    "must be ElmoWindowMax's argmax for these rows"));
  }
};

// The windows' character embeddings, with a gradient that sums straight
// into the (small) table. tf.gather's gradient is IndexedSlices of one row
// per character of every window (28 per window at the paper's filters,
// ~110k rows of 16 per step), which TensorFlow then sums into the table
// with an UnsortedSegmentSum, about 2.5 ms per table at the end of the
// backward pass, where nothing else runs beside it; here it is one
// 16-float add per character.
//
//   table (V, D) T; ids (W, K) int32, each in [0, V);
//   windows (W, K * D) T: row w = table[ids[w, 0]], ..., table[ids[w, K-1]];
//   grad: d_table (V, D) T = sum over (w, k) of d_windows[w, k*D:(k+1)*D]
//     into row ids[w, k], summed in float32 and rounded once.
REGISTER_OP("ElmoWindowEmbeddings")
    .Input("table: T")  // (V, D)
    .Input("ids: int32")  // (W, K)
    .Output("windows: T")  // (W, K * D)
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle table, ids;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &table));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &ids));
      shape_inference::DimensionHandle width;
      TF_RETURN_IF_ERROR(
          c->Multiply(c->Dim(ids, 1), c->Dim(table, 1), &width));
      c->set_output(0, c->Matrix(c->Dim(ids, 0), width));
      return OkStatus();
    });

REGISTER_OP("ElmoWindowEmbeddingsGrad")
    .Input("d_windows: T")  // (W, K * D)
    .Input("ids: int32")  // (W, K)
    .Input("num_ids: int32")  // (): V
    .Output("d_table: T")  // (V, D)
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle d_windows, ids;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &d_windows));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &ids));
      shape_inference::DimensionHandle num_ids, dim;
      TF_RETURN_IF_ERROR(c->MakeDimForScalarInput(2, &num_ids));
      TF_RETURN_IF_ERROR(
          c->Divide(c->Dim(d_windows, 1), c->Dim(ids, 1), true, &dim));
      c->set_output(0, c->Matrix(num_ids, dim));
      return OkStatus();
    });

Status CheckIds(const Tensor& ids, int64_t num_ids) {
  if (!TensorShapeUtils::IsMatrix(ids.shape())) {
    return errors::InvalidArgument("ids must be (windows, width), got shape ",
                                   ids.shape().DebugString());
  }
  const int32_t* id = ids.flat<int32_t>().data();
  for (int64_t i = 0; i < ids.NumElements(); ++i) {
    if (id[i] < 0 || id[i] >= num_ids) {
      return errors::InvalidArgument("ids[", i / ids.dim_size(1), ", ",
                                     i % ids.dim_size(1), "] = ", id[i],
                                     " is not in [0, ", num_ids, ")");
    }
  }
  return OkStatus();
}

template <typename T>
class ElmoWindowEmbeddingsOp : public OpKernel {
 public:
  explicit ElmoWindowEmbeddingsOp(OpKernelConstruction* ctx)
      : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& table = ctx->input(0);
    const Tensor& ids = ctx->input(1);
    OP_REQUIRES(ctx, TensorShapeUtils::IsMatrix(table.shape()),
                errors::InvalidArgument("table must be (ids, dim), got shape ",
                                        table.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckIds(ids, table.dim_size(0)));
    const int64_t D = table.dim_size(1);
    const int64_t W = ids.dim_size(0), K = ids.dim_size(1);
    Tensor* windows = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({W, K * D}),
                                             &windows));
    const T* rows = table.flat<T>().data();
    const int32_t* id = ids.flat<int32_t>().data();
    T* out = windows->flat<T>().data();
    for (int64_t i = 0; i < W * K; ++i) {
      std::memcpy(static_cast<void*>(out + i * D), rows + id[i] * D,
                  D * sizeof(T));
    }
  }
};

template <typename T>
class ElmoWindowEmbeddingsGradOp : public OpKernel {
 public:
  explicit ElmoWindowEmbeddingsGradOp(OpKernelConstruction* ctx)
      : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& d_windows = ctx->input(0);
    const Tensor& ids = ctx->input(1);
    const Tensor& num_ids_t = ctx->input(2);
    OP_REQUIRES(ctx, TensorShapeUtils::IsScalar(num_ids_t.shape()),
                errors::InvalidArgument("num_ids must be a scalar"));
    const int64_t V = num_ids_t.scalar<int32_t>()();
    OP_REQUIRES_OK(ctx, CheckIds(ids, V));
    const int64_t W = ids.dim_size(0), K = ids.dim_size(1);
    OP_REQUIRES(ctx, TensorShapeUtils::IsMatrix(d_windows.shape()) &&
                         d_windows.dim_size(0) == W && K > 0 &&
                         d_windows.dim_size(1) % K == 0,
                errors::InvalidArgument(
                    "d_windows must be (windows, width * dim) for ids ",
                    ids.shape().DebugString(), ", got ",
                    d_windows.shape().DebugString()));
    const int64_t D = d_windows.dim_size(1) / K;
    std::vector<float> sums(V * D, 0.0f);
    const T* d = d_windows.flat<T>().data();
    const int32_t* id = ids.flat<int32_t>().data();
    for (int64_t i = 0; i < W * K; ++i) {
      float* sum = sums.data() + id[i] * D;
      const T* row = d + i * D;
      for (int64_t j = 0; j < D; ++j) sum[j] += ToFloat(row[j]);
    }
    Tensor* d_table = nullptr;
    OP_REQUIRES_OK(ctx,
                   ctx->allocate_output(0, TensorShape({V, D}), &d_table));
    T* out = d_table->flat<T>().data();
    for (int64_t i = 0; i < V * D; ++i) out[i] = Round<T>(sums[i]);
  }
};

// Every op of this file, for float and bfloat16.
#define REGISTER(OP, KERNEL)                                               \
  REGISTER_KERNEL_BUILDER(                                                 \
      Name(OP).Device(DEVICE_CPU).TypeConstraint<float>("T"),              \
      KERNEL<float>);                                                      \
  REGISTER_KERNEL_BUILDER(                                                 \
      Name(OP).Device(DEVICE_CPU).TypeConstraint<bfloat16>("T"),           \
      KERNEL<bfloat16>);
REGISTER("ElmoWindowEmbeddings", ElmoWindowEmbeddingsOp)
REGISTER("ElmoWindowEmbeddingsGrad", ElmoWindowEmbeddingsGradOp)
REGISTER("ElmoWindowMax", ElmoWindowMaxOp)
REGISTER("ElmoWindowMaxGrad", ElmoWindowMaxGradOp)
#undef REGISTER

}  // namespace
}  // namespace tensorflow
