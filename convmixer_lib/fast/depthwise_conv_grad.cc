// The filter gradient of ConvMixer's depthwise convolutions as a TensorFlow CPU op.
//
//   dw[a, b, c] = sum_{n, i, j} x[n, i + a - pad, j + b - pad, c] * dy[n, i, j, c]
//
// for y[n, i, j, c] = sum_{a, b} x[n, i + a - pad, j + b - pad, c] * w[a, b, c]:
// stride 1, zeros outside the image, channels last, pad = (k - 1) / 2 for
// Keras' "same" padding. TensorFlow's own CPU kernel for this gradient takes
// several times as long as the forward convolution; the forward pass and the
// input gradient stay TensorFlow's. Python side: convmixer_lib/fast/layers.py.

#define EIGEN_USE_THREADS
#include <algorithm>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

using namespace tensorflow;

namespace {

constexpr int kBlock = 64;  // channels summed in registers at once

struct Shape {
  int64_t n, h, w, c, k, pad;
};

// dw[a, b, c] = sum_{n, i, j} x[n, i + a - pad, j + b - pad, c] * dy[n, i, j, c].
// For one output row i and one kernel row a, the dy row and the x row it meets
// stay in the L1 cache while every kernel column b and channel block sums over
// the row; each chunk of images sums into its own (k, k, c) slot, added last.
void FilterGrad(OpKernelContext* ctx, const float* x, const float* dy, float* dw,
                const Shape& s) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  const int64_t taps = s.k * s.k;
  const int64_t chunks = std::min<int64_t>(
      s.n, 2 * ctx->device()->tensorflow_cpu_worker_threads()->num_threads);
  std::vector<float> partial(chunks * taps * s.c, 0.f);
  workers->ParallelFor(chunks, s.n / chunks * s.h * s.w * s.c * taps * 2,
                       [&](int64_t first, int64_t last) {
    for (int64_t chunk = first; chunk < last; ++chunk) {
      float* slot = partial.data() + chunk * taps * s.c;
      for (int64_t n = s.n * chunk / chunks; n < s.n * (chunk + 1) / chunks; ++n) {
        for (int64_t i = 0; i < s.h; ++i) {
          const float* dy_row = dy + (n * s.h + i) * s.w * s.c;
          for (int64_t a = std::max<int64_t>(0, s.pad - i);
               a < std::min<int64_t>(s.k, s.h + s.pad - i); ++a) {
            const float* x_row = x + (n * s.h + i + a - s.pad) * s.w * s.c;
            for (int64_t c0 = 0; c0 < s.c; c0 += kBlock) {
              const int64_t cb = std::min<int64_t>(kBlock, s.c - c0);
              for (int64_t b = 0; b < s.k; ++b) {
                const int64_t j0 = std::max<int64_t>(0, s.pad - b);
                const int64_t j1 = std::min<int64_t>(s.w, s.w + s.pad - b);
                float* out = slot + (a * s.k + b) * s.c + c0;
                const float* xp = x_row + (b - s.pad) * s.c + c0;
                const float* dyp = dy_row + c0;
                if (cb == kBlock) {
                  float acc[kBlock];
                  for (int64_t q = 0; q < kBlock; ++q) acc[q] = out[q];
                  for (int64_t j = j0; j < j1; ++j) {
#pragma GCC unroll 64
                    for (int64_t q = 0; q < kBlock; ++q) acc[q] += xp[j * s.c + q] * dyp[j * s.c + q];
                  }
                  for (int64_t q = 0; q < kBlock; ++q) out[q] = acc[q];
                } else {
                  for (int64_t j = j0; j < j1; ++j) {
                    for (int64_t q = 0; q < cb; ++q) out[q] += xp[j * s.c + q] * dyp[j * s.c + q];
                  }
                }
              }
            }
          }
        }
      }
    }
  });
  std::fill_n(dw, taps * s.c, 0.f);
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const float* slot = partial.data() + chunk * taps * s.c;
    for (int64_t t = 0; t < taps * s.c; ++t) dw[t] += slot[t];
  }
}

Status ReadShape(OpKernelContext* ctx, const Tensor& x, const Tensor& w, int pad, Shape* s) {
  if (x.dims() != 4) {
    return errors::InvalidArgument("x must be 4-D (batch, height, width, channels), got ",
                                   x.shape().DebugString());
  }
  if (w.dims() != 3 || w.dim_size(0) != w.dim_size(1) || w.dim_size(2) != x.dim_size(3)) {
    return errors::InvalidArgument("w must have shape (k, k, ", x.dim_size(3), "), got ",
                                   w.shape().DebugString());
  }
  if (pad < 0 || pad >= w.dim_size(0)) {
    return errors::InvalidArgument("pad must be in [0, k), got ", pad);
  }
  *s = {x.dim_size(0), x.dim_size(1), x.dim_size(2), x.dim_size(3), w.dim_size(0), pad};
  return OkStatus();
}

}  // namespace

REGISTER_OP("ConvMixerDepthwiseConvFilterGrad")
    .Input("x: float")
    .Input("dy: float")
    .Input("w: float")
    .Output("dw: float")
    .Attr("pad: int")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(2));
      return OkStatus();
    })
    .Doc(R"doc(
dw[a, b, c] = sum_{n, i, j} x[n, i + a - pad, j + b - pad, c] * dy[n, i, j, c]: the
gradient with respect to w of a depthwise convolution (stride 1, channel
multiplier 1, zeros outside x) whose output gradient is dy; w gives only its shape.
)doc");

class DepthwiseConvFilterGradOp : public OpKernel {
 public:
  explicit DepthwiseConvFilterGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pad", &pad_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& dy = ctx->input(1);
    const Tensor& w = ctx->input(2);
    Shape s;
    OP_REQUIRES_OK(ctx, ReadShape(ctx, x, w, pad_, &s));
    OP_REQUIRES(ctx, dy.shape() == x.shape(),
                errors::InvalidArgument("dy and x must have the same shape, got ",
                                        dy.shape().DebugString(), " and ",
                                        x.shape().DebugString()));
    Tensor* dw;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, w.shape(), &dw));
    if (x.NumElements() == 0) {
      std::fill_n(dw->flat<float>().data(), w.NumElements(), 0.f);
      return;
    }
    FilterGrad(ctx, x.flat<float>().data(), dy.flat<float>().data(), dw->flat<float>().data(), s);
  }

 private:
  int pad_;
};

REGISTER_KERNEL_BUILDER(Name("ConvMixerDepthwiseConvFilterGrad").Device(DEVICE_CPU),
                        DepthwiseConvFilterGradOp);
