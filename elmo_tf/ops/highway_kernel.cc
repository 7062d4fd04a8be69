// The elementwise part of a highway layer (relu transform) as one op, and
// its gradient as one more (elmo_tf/ops/highway_gate.py builds and loads
// it; elmo_tf/layers/highway.py uses it when asked to).
//
// Why: around its two matmuls, a highway layer is ten TensorFlow ops (two
// bias adds, sigmoid, relu, the gated mix) and about as many in the
// gradient, each a pass over an (N, D) tensor; at the paper's `small` size
// (D = 2048) they cost about 15 ms of op time per training step in float32
// and 20 ms under mixed_bfloat16, whose elementwise ops TensorFlow runs
// 2-3x slower than float32's. Here each pass is one loop over the rows that
// reads each input once, computing in float32 whatever T is.
//
//   carry_z, transform_z, x (N, D), T = float or bfloat16: x @ W_carry and
//     x @ W_transform without their biases, and x;
//   carry_bias, transform_bias (D,) float32 (the variables as they are);
//   y (N, D) T = g * relu(a) + (1 - g) * x, with g = sigmoid(carry_z +
//     carry_bias) and a = transform_z + transform_bias.
//   grad, from d_y (N, D) T: d_carry_z = d_y * (relu(a) - x) * g * (1 - g),
//     d_transform_z = d_y * g where a > 0 (else 0), d_x = d_y * (1 - g) (the
//     direct path; the matmuls' part is added by their own gradients), and
//     the biases' gradients, the column sums of d_carry_z and
//     d_transform_z, summed in float32.
//
// Under bfloat16 the math is float32 with the inputs as given and the
// outputs rounded once, where TensorFlow's ops round after every op: not
// bit for bit the same numbers, closer to float32's. In float32, the same
// numbers up to the order of float operations (sigmoid is Eigen's
// logistic, as TensorFlow's).

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tensorflow {
namespace {

using shape_inference::InferenceContext;
using Array = Eigen::Array<float, Eigen::Dynamic, 1>;
using ArrayMap = Eigen::Map<Array>;
using ConstArrayMap = Eigen::Map<const Array>;

// out = the n bfloat16 values of `in` as float32 (exact: bfloat16 is the
// high half of a float32).
inline void Widen(const bfloat16* in, int64_t n, float* out) {
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(in);
  uint32_t* wide = reinterpret_cast<uint32_t*>(out);
  for (int64_t i = 0; i < n; ++i) wide[i] = static_cast<uint32_t>(bits[i]) << 16;
}

// The rows of an (N, D) input of T as float32, one at a time: float rows
// in place, bfloat16 rows widened into one buffer that every row reuses.
template <typename T>
class FloatRows {
 public:
  FloatRows(const T* data, int64_t dim) : data_(data), dim_(dim) {
    if (!std::is_same<T, float>::value) buffer_.resize(dim);
  }

  ConstArrayMap Row(int64_t r) {
    return ConstArrayMap(AsFloat(data_ + r * dim_), dim_);
  }

 private:
  const float* AsFloat(const float* row) { return row; }
  const float* AsFloat(const bfloat16* row) {
    Widen(row, dim_, buffer_.data());
    return buffer_.data();
  }

  const T* data_;
  int64_t dim_;
  std::vector<float> buffer_;
};

// A float32 row stored as T, rounded to nearest even for bfloat16 (NaN
// stays NaN).
inline void StoreRow(const float* values, int64_t n, float* out) {
  std::memcpy(out, values, n * sizeof(float));
}
inline void StoreRow(const float* values, int64_t n, bfloat16* out) {
  const uint32_t* wide = reinterpret_cast<const uint32_t*>(values);
  uint16_t* bits = reinterpret_cast<uint16_t*>(out);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = wide[i];
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const bool is_nan = (u & 0x7fffffffu) > 0x7f800000u;
    bits[i] = static_cast<uint16_t>(is_nan ? ((u >> 16) | 64u) : rounded);
  }
}

Status CheckInputs(OpKernelContext* ctx, int first_matrix, int n_matrices,
                   int64_t* rows, int64_t* dim) {
  const Tensor& z = ctx->input(first_matrix);
  if (z.dims() != 2) {
    return errors::InvalidArgument("expected (rows, dim) inputs, got ",
                                   z.shape().DebugString());
  }
  *rows = z.dim_size(0);
  *dim = z.dim_size(1);
  for (int i = first_matrix; i < first_matrix + n_matrices; ++i) {
    if (ctx->input(i).shape() != z.shape()) {
      return errors::InvalidArgument(
          "input ", i, " must be shaped as input ", first_matrix, " ",
          z.shape().DebugString(), ", got ",
          ctx->input(i).shape().DebugString());
    }
  }
  for (int i = first_matrix + n_matrices; i < first_matrix + n_matrices + 2;
       ++i) {
    if (ctx->input(i).shape() != TensorShape({*dim})) {
      return errors::InvalidArgument("bias input ", i, " must be (", *dim,
                                     "), got ",
                                     ctx->input(i).shape().DebugString());
    }
  }
  return OkStatus();
}

REGISTER_OP("ElmoHighwayGate")
    .Input("carry_z: T")             // (N, D)
    .Input("transform_z: T")         // (N, D)
    .Input("x: T")                   // (N, D)
    .Input("carry_bias: float")      // (D)
    .Input("transform_bias: float")  // (D)
    .Output("y: T")                  // (N, D)
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return OkStatus();
    });

template <typename T>
class HighwayGateOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* ctx) override {
    int64_t rows, dim;
    OP_REQUIRES_OK(ctx, CheckInputs(ctx, 0, 3, &rows, &dim));
    Tensor* y;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &y));
    FloatRows<T> carry_z(ctx->input(0).flat<T>().data(), dim);
    FloatRows<T> transform_z(ctx->input(1).flat<T>().data(), dim);
    FloatRows<T> x(ctx->input(2).flat<T>().data(), dim);
    ConstArrayMap carry_bias(ctx->input(3).flat<float>().data(), dim);
    ConstArrayMap transform_bias(ctx->input(4).flat<float>().data(), dim);
    T* out = y->flat<T>().data();
    Array gate(dim), y_row(dim);
    for (int64_t r = 0; r < rows; ++r) {
      const ConstArrayMap xr = x.Row(r);
      gate = (carry_z.Row(r) + carry_bias).logistic();
      y_row = xr + gate * ((transform_z.Row(r) + transform_bias).max(0.0f) -
                           xr);
      StoreRow(y_row.data(), dim, out + r * dim);
    }
  }
};

REGISTER_OP("ElmoHighwayGateGrad")
    .Input("d_y: T")                 // (N, D)
    .Input("carry_z: T")             // (N, D)
    .Input("transform_z: T")         // (N, D)
    .Input("x: T")                   // (N, D)
    .Input("carry_bias: float")      // (D)
    .Input("transform_bias: float")  // (D)
    .Output("d_carry_z: T")          // (N, D)
    .Output("d_transform_z: T")      // (N, D)
    .Output("d_x: T")                // (N, D), the direct path only
    .Output("d_carry_bias: float")   // (D)
    .Output("d_transform_bias: float")  // (D)
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      for (int i = 0; i < 3; ++i) c->set_output(i, c->input(0));
      c->set_output(3, c->input(4));
      c->set_output(4, c->input(5));
      return OkStatus();
    });

template <typename T>
class HighwayGateGradOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* ctx) override {
    int64_t rows, dim;
    OP_REQUIRES_OK(ctx, CheckInputs(ctx, 0, 4, &rows, &dim));
    const TensorShape& shape = ctx->input(0).shape();
    Tensor *d_carry_z_t, *d_transform_z_t, *d_x_t, *d_carry_bias_t,
        *d_transform_bias_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, shape, &d_carry_z_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, shape, &d_transform_z_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, shape, &d_x_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({dim}),
                                             &d_carry_bias_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({dim}),
                                             &d_transform_bias_t));
    FloatRows<T> d_y(ctx->input(0).flat<T>().data(), dim);
    FloatRows<T> carry_z(ctx->input(1).flat<T>().data(), dim);
    FloatRows<T> transform_z(ctx->input(2).flat<T>().data(), dim);
    FloatRows<T> x(ctx->input(3).flat<T>().data(), dim);
    ConstArrayMap carry_bias(ctx->input(4).flat<float>().data(), dim);
    ConstArrayMap transform_bias(ctx->input(5).flat<float>().data(), dim);
    T* d_carry_z = d_carry_z_t->flat<T>().data();
    T* d_transform_z = d_transform_z_t->flat<T>().data();
    T* d_x = d_x_t->flat<T>().data();
    ArrayMap d_carry_bias(d_carry_bias_t->flat<float>().data(), dim);
    ArrayMap d_transform_bias(d_transform_bias_t->flat<float>().data(), dim);
    d_carry_bias.setZero();
    d_transform_bias.setZero();
    Array gate(dim), a(dim), dzc(dim), dzt(dim), dx(dim);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t offset = r * dim;
      const ConstArrayMap dy = d_y.Row(r);
      const ConstArrayMap xr = x.Row(r);
      gate = (carry_z.Row(r) + carry_bias).logistic();
      a = transform_z.Row(r) + transform_bias;
      dzc = dy * (a.max(0.0f) - xr) * gate * (1.0f - gate);
      dzt = (a > 0.0f).select(dy * gate, 0.0f);
      dx = dy * (1.0f - gate);
      d_carry_bias += dzc;
      d_transform_bias += dzt;
      StoreRow(dzc.data(), dim, d_carry_z + offset);
      StoreRow(dzt.data(), dim, d_transform_z + offset);
      StoreRow(dx.data(), dim, d_x + offset);
    }
  }
};

// Casts between float32 and bfloat16 for the highway kernels under
// mixed_bfloat16 (4M values each at the paper's size, cast every step and
// their gradients cast back): TensorFlow's Cast took 2.2-4.7 ms for 4M
// float32 values on the machines of BENCHMARKS.md, these loops (which the
// compiler vectorizes) about half of that. Rounding to nearest even, NaN
// stays NaN: the same values as tf.cast.
REGISTER_OP("ElmoCastToBfloat16")
    .Input("x: float")
    .Output("y: bfloat16")
    .SetShapeFn(shape_inference::UnchangedShape);

class CastToBfloat16Op : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    Tensor* y;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    StoreRow(x.flat<float>().data(), x.NumElements(),
             y->flat<bfloat16>().data());
  }
};

REGISTER_OP("ElmoCastToFloat")
    .Input("x: bfloat16")
    .Output("y: float")
    .SetShapeFn(shape_inference::UnchangedShape);

class CastToFloatOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    Tensor* y;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    Widen(x.flat<bfloat16>().data(), x.NumElements(),
          y->flat<float>().data());
  }
};

REGISTER_KERNEL_BUILDER(Name("ElmoCastToBfloat16").Device(DEVICE_CPU),
                        CastToBfloat16Op);
REGISTER_KERNEL_BUILDER(Name("ElmoCastToFloat").Device(DEVICE_CPU),
                        CastToFloatOp);

#define REGISTER(T)                                                      \
  REGISTER_KERNEL_BUILDER(                                               \
      Name("ElmoHighwayGate").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
      HighwayGateOp<T>);                                                 \
  REGISTER_KERNEL_BUILDER(Name("ElmoHighwayGateGrad")                    \
                              .Device(DEVICE_CPU)                        \
                              .TypeConstraint<T>("T"),                   \
                          HighwayGateGradOp<T>);
REGISTER(float)
REGISTER(bfloat16)
#undef REGISTER

}  // namespace
}  // namespace tensorflow
