// GELU followed by BatchNorm, fused into one TensorFlow CPU op and its gradient.
//
// ConvMixer follows every convolution with y = BatchNorm(GELU(z)). Written as
// separate Keras layers, that is a dozen passes over the activations per step;
// here it is two passes forward (statistics, then output) and two backward
// (sums, then input gradient). GELU is recomputed from `z` instead of stored.
//
// Layout: channels last. `z` is viewed as a (rows, channels) matrix; the
// per-channel statistics reduce over all rows (batch x height x width).
// Python side: convmixer_lib/fast/layers.py, which compiles this file on first use.

#define EIGEN_USE_THREADS
#include <algorithm>
#include <cmath>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"
#include "unsupported/Eigen/CXX11/Tensor"

using namespace tensorflow;

namespace {

constexpr int64_t kTileRows = 32;  // rows per tile: 32 x 256 floats = 32 KiB

// phi[i] = Phi(z[i]) = (1 + erf(z / sqrt(2))) / 2, vectorized by Eigen.
void StandardNormalCdf(const float* z, float* phi, int64_t n) {
  Eigen::TensorMap<Eigen::Tensor<const float, 1>> zt(z, n);
  Eigen::TensorMap<Eigen::Tensor<float, 1>> out(phi, n);
  out = (zt * 0.70710678118654752f).erf() * 0.5f + 0.5f;
}

// dens[i] = z[i] * pdf(z[i]): with Phi, the GELU derivative is Phi + z * pdf.
void ZTimesNormalPdf(const float* z, float* dens, int64_t n) {
  Eigen::TensorMap<Eigen::Tensor<const float, 1>> zt(z, n);
  Eigen::TensorMap<Eigen::Tensor<float, 1>> out(dens, n);
  out = zt * (zt * zt * -0.5f).exp() * 0.3989422804014327f;
}

int64_t NumChunks(OpKernelContext* ctx, int64_t rows) {
  int64_t threads = ctx->device()->tensorflow_cpu_worker_threads()->num_threads;
  return std::max<int64_t>(1, std::min<int64_t>(rows / kTileRows, 4 * threads));
}

// Splits the rows into NumChunks contiguous ranges, run in parallel, and each
// range into tiles of at most kTileRows rows. Calls fn(first_row, n, phi,
// scratch, chunk) for every tile, where phi[r * channels + c] = Phi(z) of the
// tile's row r and scratch is the thread's own kTileRows * channels floats.
template <typename Fn>
void ForEachTile(OpKernelContext* ctx, const float* z, int64_t rows, int64_t channels,
                 Fn fn) {
  const int64_t chunks = NumChunks(ctx, rows);
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  workers->ParallelFor(chunks, 1 << 20, [&](int64_t first, int64_t last) {
    std::vector<float> phi(kTileRows * channels), scratch(kTileRows * channels);
    for (int64_t chunk = first; chunk < last; ++chunk) {
      const int64_t end = rows * (chunk + 1) / chunks;
      for (int64_t r0 = rows * chunk / chunks; r0 < end; r0 += kTileRows) {
        const int64_t n = std::min(kTileRows, end - r0);
        StandardNormalCdf(z + r0 * channels, phi.data(), n * channels);
        fn(r0, n, phi.data(), scratch.data(), chunk);
      }
    }
  });
}

// Per-channel sums over all rows of two terms: terms(i, c, phi_i, &a, &b) sets
// element i's terms (i indexes z; phi_i = Phi(z[i])). Summed in float within a
// tile, in double across tiles; returns the sums of a in sum_a, of b in sum_b.
template <typename Terms>
void ChannelSums(OpKernelContext* ctx, const float* z, int64_t rows, int64_t channels,
                 Terms terms, std::vector<double>* sum_a, std::vector<double>* sum_b) {
  const int64_t C = channels;
  const int64_t chunks = NumChunks(ctx, rows);
  std::vector<double> partial(2 * C * chunks, 0.0);  // one (a, b) slot per chunk
  ForEachTile(ctx, z, rows, C, [&](int64_t r0, int64_t n, const float* phi,
                                   float* scratch, int64_t chunk) {
    float* tile_a = scratch;  // C floats
    float* tile_b = scratch + C;
    std::fill_n(scratch, 2 * C, 0.f);
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t c = 0; c < C; ++c) {
        float a, b;
        terms((r0 + r) * C + c, c, phi[r * C + c], &a, &b);
        tile_a[c] += a;
        tile_b[c] += b;
      }
    }
    double* slot = partial.data() + 2 * C * chunk;
    for (int64_t c = 0; c < C; ++c) {
      slot[c] += tile_a[c];
      slot[C + c] += tile_b[c];
    }
  });
  sum_a->assign(C, 0.0);
  sum_b->assign(C, 0.0);
  for (int64_t k = 0; k < chunks; ++k) {
    for (int64_t c = 0; c < C; ++c) {
      (*sum_a)[c] += partial[2 * C * k + c];
      (*sum_b)[c] += partial[2 * C * k + C + c];
    }
  }
}

Status CheckInputs(OpKernelContext* ctx, const Tensor& z, int64_t* rows,
                   int64_t* channels, std::initializer_list<int> vectors) {
  if (z.dims() < 1 || z.dim_size(z.dims() - 1) == 0) {
    return errors::InvalidArgument("z must have a non-empty last (channel) axis, got shape ",
                                   z.shape().DebugString());
  }
  *channels = z.dim_size(z.dims() - 1);
  *rows = z.NumElements() / *channels;
  for (int i : vectors) {
    const Tensor& v = ctx->input(i);
    if (v.dims() != 1 || v.dim_size(0) != *channels) {
      return errors::InvalidArgument("input ", i, " must have shape [", *channels,
                                     "], got ", v.shape().DebugString());
    }
  }
  return OkStatus();
}

}  // namespace

REGISTER_OP("GeluBatchNorm")
    .Input("z: float")
    .Input("gamma: float")
    .Input("beta: float")
    .Input("mean: float")
    .Input("variance: float")
    .Output("y: float")
    .Output("batch_mean: float")
    .Output("batch_variance: float")
    .Attr("epsilon: float")
    .Attr("is_training: bool")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      c->set_output(2, c->input(1));
      return OkStatus();
    })
    .Doc(R"doc(
y = gamma * (g - mean) / sqrt(variance + epsilon) + beta with g = GELU(z) (exact,
erf form). Training: mean and the biased variance are those of g over all axes
but the last, returned as batch_mean and batch_variance; the mean and variance
inputs are ignored. Inference: the mean and variance inputs are used and
returned unchanged.
)doc");

REGISTER_OP("GeluBatchNormGrad")
    .Input("dy: float")
    .Input("z: float")
    .Input("gamma: float")
    .Input("mean: float")
    .Input("variance: float")
    .Output("dz: float")
    .Output("dgamma: float")
    .Output("dbeta: float")
    .Attr("epsilon: float")
    .Attr("is_training: bool")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(2));
      return OkStatus();
    })
    .Doc(R"doc(
Gradient of GeluBatchNorm; mean and variance are its batch_mean and
batch_variance outputs.
)doc");

class GeluBatchNormOp : public OpKernel {
 public:
  explicit GeluBatchNormOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("is_training", &is_training_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& z_in = ctx->input(0);
    int64_t rows, C;
    OP_REQUIRES_OK(ctx, CheckInputs(ctx, z_in, &rows, &C, {1, 2, 3, 4}));
    const float* z = z_in.flat<float>().data();
    const float* gamma = ctx->input(1).flat<float>().data();
    const float* beta = ctx->input(2).flat<float>().data();
    Tensor *y_out, *mean_out, *var_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, z_in.shape(), &y_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(1).shape(), &mean_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(1).shape(), &var_out));
    float* mean = mean_out->flat<float>().data();
    float* var = var_out->flat<float>().data();

    if (is_training_) {
      OP_REQUIRES(ctx, rows > 0,
                  errors::InvalidArgument("batch statistics need a non-empty z, got shape ",
                                          z_in.shape().DebugString()));
      // Pass 1: sums of d and d^2 per channel, d = g - origin, g = GELU(z).
      // Shifting by the first row's g keeps E[d^2] - E[d]^2 accurate when a
      // channel's mean is large against its spread.
      std::vector<float> origin(C);
      StandardNormalCdf(z, origin.data(), C);
      for (int64_t c = 0; c < C; ++c) origin[c] *= z[c];
      std::vector<double> sum, sum_sq;
      ChannelSums(
          ctx, z, rows, C,
          [&](int64_t i, int64_t c, float phi, float* a, float* b) {
            const float d = z[i] * phi - origin[c];
            *a = d;
            *b = d * d;
          },
          &sum, &sum_sq);
      for (int64_t c = 0; c < C; ++c) {
        const double m = sum[c] / rows;
        mean[c] = static_cast<float>(origin[c] + m);
        var[c] = static_cast<float>(std::max(0.0, sum_sq[c] / rows - m * m));
      }
    } else {
      std::copy_n(ctx->input(3).flat<float>().data(), C, mean);
      std::copy_n(ctx->input(4).flat<float>().data(), C, var);
    }

    // Pass 2: y = g * scale + shift.
    std::vector<float> scale(C), shift(C);
    for (int64_t c = 0; c < C; ++c) {
      scale[c] = gamma[c] / std::sqrt(var[c] + epsilon_);
      shift[c] = beta[c] - mean[c] * scale[c];
    }
    float* y = y_out->flat<float>().data();
    ForEachTile(ctx, z, rows, C, [&](int64_t r0, int64_t n, const float* phi, float*, int64_t) {
      const float* zt = z + r0 * C;
      float* yt = y + r0 * C;
      for (int64_t r = 0; r < n; ++r) {
        for (int64_t c = 0; c < C; ++c) {
          yt[r * C + c] = zt[r * C + c] * phi[r * C + c] * scale[c] + shift[c];
        }
      }
    });
  }

 private:
  float epsilon_;
  bool is_training_;
};

class GeluBatchNormGradOp : public OpKernel {
 public:
  explicit GeluBatchNormGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("is_training", &is_training_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& z_in = ctx->input(1);
    int64_t rows, C;
    OP_REQUIRES_OK(ctx, CheckInputs(ctx, z_in, &rows, &C, {2, 3, 4}));
    OP_REQUIRES(ctx, ctx->input(0).shape() == z_in.shape(),
                errors::InvalidArgument("dy and z must have the same shape, got ",
                                        ctx->input(0).shape().DebugString(), " and ",
                                        z_in.shape().DebugString()));
    const float* dy = ctx->input(0).flat<float>().data();
    const float* z = z_in.flat<float>().data();
    const float* gamma = ctx->input(2).flat<float>().data();
    const float* mean = ctx->input(3).flat<float>().data();
    const float* var = ctx->input(4).flat<float>().data();
    Tensor *dz_out, *dgamma_out, *dbeta_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, z_in.shape(), &dz_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(2).shape(), &dgamma_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(2).shape(), &dbeta_out));
    std::vector<float> inv_std(C);
    for (int64_t c = 0; c < C; ++c) inv_std[c] = 1.f / std::sqrt(var[c] + epsilon_);

    // Pass 1: dbeta = sum(dy), dgamma = sum(dy * g_hat), g_hat = (g - mean) * inv_std.
    std::vector<double> sum_dy, sum_dy_ghat;
    ChannelSums(
        ctx, z, rows, C,
        [&](int64_t i, int64_t c, float phi, float* a, float* b) {
          *a = dy[i];
          *b = dy[i] * (z[i] * phi - mean[c]) * inv_std[c];
        },
        &sum_dy, &sum_dy_ghat);
    float* dgamma = dgamma_out->flat<float>().data();
    float* dbeta = dbeta_out->flat<float>().data();
    // dz = dg * GELU'(z), dg = a * (dy - b - g_hat * d) per channel; in
    // inference the statistics are constants and b = d = 0.
    std::vector<float> a(C), b(C), d(C);
    for (int64_t c = 0; c < C; ++c) {
      dbeta[c] = static_cast<float>(sum_dy[c]);
      dgamma[c] = static_cast<float>(sum_dy_ghat[c]);
      a[c] = gamma[c] * inv_std[c];
      b[c] = is_training_ ? static_cast<float>(sum_dy[c] / rows) : 0.f;
      d[c] = is_training_ ? static_cast<float>(sum_dy_ghat[c] / rows) : 0.f;
    }

    // Pass 2: the input gradient.
    float* dz = dz_out->flat<float>().data();
    ForEachTile(ctx, z, rows, C, [&](int64_t r0, int64_t n, const float* phi, float* dens,
                                     int64_t) {
      ZTimesNormalPdf(z + r0 * C, dens, n * C);
      for (int64_t r = 0; r < n; ++r) {
        for (int64_t c = 0; c < C; ++c) {
          const int64_t t = r * C + c, i = r0 * C + t;
          const float g_hat = (z[i] * phi[t] - mean[c]) * inv_std[c];
          dz[i] = a[c] * (dy[i] - b[c] - g_hat * d[c]) * (phi[t] + dens[t]);
        }
      }
    });
  }

 private:
  float epsilon_;
  bool is_training_;
};

REGISTER_KERNEL_BUILDER(Name("GeluBatchNorm").Device(DEVICE_CPU), GeluBatchNormOp);
REGISTER_KERNEL_BUILDER(Name("GeluBatchNormGrad").Device(DEVICE_CPU), GeluBatchNormGradOp);
