// Causal grouped-query attention over a KV cache, f32. Queries of T consecutive positions
// pos0 .. pos0+T-1 attend to cached keys/values at positions [lo, p] where lo = 0, or
// p - window + 1 with a sliding window (Mistral).
#pragma once

#include <cstdint>

namespace ao::kernels::cpu {

struct AttentionShape {
  int n_heads = 0;
  int n_kv_heads = 0;  // query head h reads kv head h / (n_heads / n_kv_heads)
  int head_dim = 0;
  int64_t capacity = 0;  // positions per kv head in the cache
  int window = 0;        // 0: attend to the whole prefix
};

// q: [T, n_heads, head_dim]; k_cache, v_cache: [n_kv_heads, capacity, head_dim] holding
// positions 0 .. pos0+T-1; out: [T, n_heads * head_dim]. Scale 1/sqrt(head_dim).
void attention_f32(const float* q, const float* k_cache, const float* v_cache, float* out,
                   int64_t T, int64_t pos0, const AttentionShape& s);
// Scalar reference with double accumulation, for tests.
void attention_f32_ref(const float* q, const float* k_cache, const float* v_cache, float* out,
                       int64_t T, int64_t pos0, const AttentionShape& s);

}  // namespace ao::kernels::cpu
