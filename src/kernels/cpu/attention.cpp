#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ao/core/parallel.h"
#include "kernels/cpu/matmul.h"

namespace ao::kernels::cpu {
namespace {

int64_t first_visible(int64_t p, int window) {
  return window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
}

}  // namespace

void attention_f32(const float* q, const float* k_cache, const float* v_cache, float* out,
                   int64_t T, int64_t pos0, const AttentionShape& s) {
  const int64_t hd = s.head_dim, H = s.n_heads, group = s.n_heads / s.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // One task per (token, head), about 4 * visible * head_dim flops each; >= 4 Mflop per thread.
  const int64_t tasks = T * H;
  const int64_t grain =
      std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(1, (pos0 + (T + 1) / 2) * hd));
  parallel_for(0, tasks, grain, [&](int64_t b, int64_t e) {
    std::vector<float> scores(static_cast<size_t>(pos0 + T));
    for (int64_t task = b; task < e; ++task) {
      const int64_t t = task / H, h = task % H, p = pos0 + t, lo = first_visible(p, s.window);
      const float* qh = q + (t * H + h) * hd;
      const float* K = k_cache + (h / group) * s.capacity * hd;
      const float* V = v_cache + (h / group) * s.capacity * hd;
      float mx = -INFINITY;
      for (int64_t j = lo; j <= p; ++j) {
        const float sc = dot_f32(qh, K + j * hd, hd) * scale;
        scores[j] = sc;
        mx = std::max(mx, sc);
      }
      float sum = 0.0f;
      for (int64_t j = lo; j <= p; ++j) {
        scores[j] = std::exp(scores[j] - mx);
        sum += scores[j];
      }
      const float inv = 1.0f / sum;
      float* o = out + (t * H + h) * hd;
      std::fill(o, o + hd, 0.0f);
      for (int64_t j = lo; j <= p; ++j) axpy_f32(scores[j] * inv, V + j * hd, o, hd);
    }
  });
}

void attention_f32_ref(const float* q, const float* k_cache, const float* v_cache, float* out,
                       int64_t T, int64_t pos0, const AttentionShape& s) {
  const int64_t hd = s.head_dim, H = s.n_heads, group = s.n_heads / s.n_kv_heads;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t p = pos0 + t, lo = first_visible(p, s.window);
      const float* qh = q + (t * H + h) * hd;
      const float* K = k_cache + (h / group) * s.capacity * hd;
      const float* V = v_cache + (h / group) * s.capacity * hd;
      std::vector<double> w(static_cast<size_t>(p + 1), 0.0);
      double mx = -INFINITY, sum = 0.0;
      for (int64_t j = lo; j <= p; ++j) {
        double d = 0.0;
        for (int64_t i = 0; i < hd; ++i) d += double(qh[i]) * K[j * hd + i];
        w[j] = d / std::sqrt(double(hd));
        mx = std::max(mx, w[j]);
      }
      for (int64_t j = lo; j <= p; ++j) sum += (w[j] = std::exp(w[j] - mx));
      for (int64_t i = 0; i < hd; ++i) {
        double acc = 0.0;
        for (int64_t j = lo; j <= p; ++j) acc += w[j] / sum * V[j * hd + i];
        out[(t * H + h) * hd + i] = static_cast<float>(acc);
      }
    }
}

}  // namespace ao::kernels::cpu
