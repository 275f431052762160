// Whole-model check of CudaEngine on stories260K (llama2.c checkpoint, read here directly)
// against a plain fp32 scalar forward written in this file: prefill logits, decode logits
// through the CUDA graph, greedy generation, and the quantized formats. Skipped without a GPU
// or without the model file.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "ao/core/error.h"
#include "ao/kernels/cuda/gemm_dequant.h"
#include "ao/runtime/cuda_engine.h"
#include "cuda_test_util.h"

namespace ao::cuda::testing {
namespace {

struct Stories {
  io::ModelConfig cfg;
  std::vector<std::vector<float>> store;  // owns the tensors
  std::vector<runtime::HostWeight> weights;
  // Views for the reference forward.
  const float *emb, *rms_final;
  std::vector<const float*> rms_att, rms_ffn, wq, wk, wv, wo, w1, w2, w3;
};

std::string model_path() {
  std::vector<std::string> c;
  if (const char* s = std::getenv("AO_SHARED"))
    c.push_back(std::string(s) + "/data/models/stories260K/stories260K.bin");
  c.push_back(std::string(AO_SOURCE_DIR) + "/../shared/data/models/stories260K/stories260K.bin");
  c.push_back(std::string(AO_SOURCE_DIR) + "/.gpu/shared/data/models/stories260K/stories260K.bin");
  for (auto& p : c)
    if (std::ifstream(p).good()) return p;
  return "";
}

bool load_stories(Stories& s) {
  const std::string path = model_path();
  if (path.empty()) return false;
  std::ifstream f(path, std::ios::binary);
  int32_t h[7];
  f.read(reinterpret_cast<char*>(h), sizeof(h));
  const int D = h[0], F = h[1], L = h[2], H = h[3], KV = h[4], V = std::abs(h[5]), S = h[6];
  const int hd = D / H;
  auto& c = s.cfg;
  c.architecture = "llama2.c";
  c.model_type = "llama2c";
  c.dim = D, c.hidden_dim = F, c.n_layers = L, c.n_heads = H, c.n_kv_heads = KV, c.head_dim = hd;
  c.vocab_size = V, c.max_seq_len = S, c.norm_eps = 1e-5f, c.rope_theta = 10000.f;
  c.rope_interleaved = true, c.tie_embeddings = h[5] > 0;
  auto read = [&](size_t n) {
    s.store.emplace_back(n);
    f.read(reinterpret_cast<char*>(s.store.back().data()), n * 4);
    return s.store.size() - 1;
  };
  // llama2.c order: token_embedding, rms_att[L], wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final.
  s.store.reserve(16);
  const size_t emb = read(size_t(V) * D), ra = read(size_t(L) * D), q = read(size_t(L) * D * D),
               k = read(size_t(L) * KV * hd * D), v = read(size_t(L) * KV * hd * D),
               o = read(size_t(L) * D * D), rf = read(size_t(L) * D), w1 = read(size_t(L) * F * D),
               w2 = read(size_t(L) * D * F), w3 = read(size_t(L) * F * D), fin = read(D);
  if (!f) return false;
  auto P = [&](size_t i, size_t off) { return s.store[i].data() + off; };
  s.emb = P(emb, 0);
  s.rms_final = P(fin, 0);
  auto add = [&](const std::string& name, const float* p, std::vector<int64_t> shape) {
    s.weights.push_back(runtime::HostWeight{name, p, DType::f32, shape});
  };
  add("model.embed_tokens.weight", s.emb, {V, D});
  add("model.norm.weight", s.rms_final, {D});
  for (int l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    s.rms_att.push_back(P(ra, size_t(l) * D));
    s.rms_ffn.push_back(P(rf, size_t(l) * D));
    s.wq.push_back(P(q, size_t(l) * D * D));
    s.wk.push_back(P(k, size_t(l) * KV * hd * D));
    s.wv.push_back(P(v, size_t(l) * KV * hd * D));
    s.wo.push_back(P(o, size_t(l) * D * D));
    s.w1.push_back(P(w1, size_t(l) * F * D));
    s.w2.push_back(P(w2, size_t(l) * D * F));
    s.w3.push_back(P(w3, size_t(l) * F * D));
    add(p + "input_layernorm.weight", s.rms_att[l], {D});
    add(p + "post_attention_layernorm.weight", s.rms_ffn[l], {D});
    add(p + "self_attn.q_proj.weight", s.wq[l], {D, D});
    add(p + "self_attn.k_proj.weight", s.wk[l], {KV * hd, D});
    add(p + "self_attn.v_proj.weight", s.wv[l], {KV * hd, D});
    add(p + "self_attn.o_proj.weight", s.wo[l], {D, D});
    add(p + "mlp.gate_proj.weight", s.w1[l], {F, D});
    add(p + "mlp.down_proj.weight", s.w2[l], {D, F});
    add(p + "mlp.up_proj.weight", s.w3[l], {F, D});
  }
  return true;
}

// Plain fp32 llama2.c forward; returns the logits after each token.
std::vector<std::vector<float>> reference_forward(const Stories& s, const std::vector<int>& toks) {
  const auto& c = s.cfg;
  const int D = c.dim, F = c.hidden_dim, H = c.n_heads, KV = c.n_kv_heads, hd = c.head_dim;
  const int V = c.vocab_size, T = static_cast<int>(toks.size());
  std::vector<std::vector<float>> kc(c.n_layers, std::vector<float>(T * KV * hd)),
      vc(c.n_layers, std::vector<float>(T * KV * hd));
  auto matvec = [](const float* w, const std::vector<float>& x, int n, int k) {
    std::vector<float> y(n);
    for (int i = 0; i < n; ++i) {
      double a = 0;
      for (int j = 0; j < k; ++j) a += double(w[size_t(i) * k + j]) * x[j];
      y[i] = float(a);
    }
    return y;
  };
  auto rmsnorm = [&](const std::vector<float>& x, const float* w) {
    double ss = 0;
    for (float v : x) ss += double(v) * v;
    const float inv = 1.f / std::sqrt(float(ss / x.size()) + c.norm_eps);
    std::vector<float> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
    return y;
  };
  std::vector<std::vector<float>> out;
  for (int t = 0; t < T; ++t) {
    std::vector<float> x(s.emb + size_t(toks[t]) * D, s.emb + size_t(toks[t] + 1) * D);
    for (int l = 0; l < c.n_layers; ++l) {
      auto xn = rmsnorm(x, s.rms_att[l]);
      auto q = matvec(s.wq[l], xn, H * hd, D);
      auto k = matvec(s.wk[l], xn, KV * hd, D);
      auto v = matvec(s.wv[l], xn, KV * hd, D);
      auto rope = [&](std::vector<float>& z, int heads) {
        for (int h = 0; h < heads; ++h)
          for (int i = 0; i < hd / 2; ++i) {
            const double ang = t * std::pow(10000.0, -2.0 * i / hd);
            const float cs = std::cos(ang), sn = std::sin(ang);
            float& a = z[h * hd + 2 * i];
            float& b = z[h * hd + 2 * i + 1];
            const float a2 = a * cs - b * sn, b2 = a * sn + b * cs;
            a = a2, b = b2;
          }
      };
      rope(q, H);
      rope(k, KV);
      std::copy(k.begin(), k.end(), kc[l].begin() + size_t(t) * KV * hd);
      std::copy(v.begin(), v.end(), vc[l].begin() + size_t(t) * KV * hd);
      std::vector<float> att(H * hd, 0.f);
      for (int h = 0; h < H; ++h) {
        const int kv = h / (H / KV);
        std::vector<double> sc(t + 1);
        double mx = -1e30;
        for (int j = 0; j <= t; ++j) {
          double d = 0;
          for (int i = 0; i < hd; ++i) d += q[h * hd + i] * kc[l][(size_t(j) * KV + kv) * hd + i];
          sc[j] = d / std::sqrt(double(hd));
          mx = std::max(mx, sc[j]);
        }
        double z = 0;
        for (auto& e : sc) z += (e = std::exp(e - mx));
        for (int i = 0; i < hd; ++i) {
          double a = 0;
          for (int j = 0; j <= t; ++j) a += sc[j] * vc[l][(size_t(j) * KV + kv) * hd + i];
          att[h * hd + i] = float(a / z);
        }
      }
      auto o = matvec(s.wo[l], att, D, H * hd);
      for (int i = 0; i < D; ++i) x[i] += o[i];
      xn = rmsnorm(x, s.rms_ffn[l]);
      auto g = matvec(s.w1[l], xn, F, D);
      auto u = matvec(s.w3[l], xn, F, D);
      for (int i = 0; i < F; ++i) g[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
      auto d = matvec(s.w2[l], g, D, F);
      for (int i = 0; i < D; ++i) x[i] += d[i];
    }
    out.push_back(matvec(s.emb, rmsnorm(x, s.rms_final), V, D));
  }
  return out;
}

const std::vector<int32_t> kGreedy = {1,   403, 407, 261, 378, 432, 383, 286,
                                      261, 376, 298, 315, 421, 395, 317, 426};
// A 40-token prompt: the greedy continuation's first ids, then arbitrary ones.
const std::vector<int> kTokens40 = {1,   403, 407, 261, 378, 432, 383, 286, 261, 376,
                                    298, 315, 421, 395, 317, 426, 338, 401, 396, 267,
                                    337, 410, 408, 419, 292, 411, 322, 265, 282, 295,
                                    433, 426, 385, 328, 432, 358, 394, 261, 370, 432};

class CudaEngineStories : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!ao_cuda_available()) GTEST_SKIP() << "no CUDA device";
    if (!load_stories(s_)) GTEST_SKIP() << "stories260K.bin not found";
  }
  Stories s_;
};

TEST_F(CudaEngineStories, PrefillAndGraphDecodeLogitsMatchCpuReference) {
  for (bool graph : {true, false}) {
    runtime::CudaEngineOptions opt;
    opt.max_seq_len = 256;
    opt.max_prefill = 32;  // prompt of 40 runs in two chunks
    opt.cuda_graph = graph;
    auto eng = runtime::CudaEngine::create_from_host(s_.cfg, s_.weights, opt);
    const std::vector<int>& toks = kTokens40;
    const int np = 34;
    auto ref = reference_forward(s_, toks);
    auto got = eng->prefill(std::vector<int32_t>(toks.begin(), toks.begin() + np));
    const double e0 = nmse(got, ref[np - 1]);
    std::printf("stories260K bf16 prefill logits NMSE %.3g (graph %d)\n", e0, graph);
    EXPECT_LT(e0, 5e-3);
    for (int t = np; t < static_cast<int>(toks.size()); ++t) {
      auto lg = eng->decode(toks[t]);
      const double e = nmse(lg, ref[t]);
      EXPECT_LT(e, 5e-3) << "decode position " << t;
      EXPECT_EQ(std::max_element(lg.begin(), lg.end()) - lg.begin(),
                std::max_element(ref[t].begin(), ref[t].end()) - ref[t].begin())
          << "argmax at position " << t;
    }
    EXPECT_EQ(eng->position(), static_cast<int>(toks.size()));
  }
}

TEST_F(CudaEngineStories, GreedyGenerationMatchesReferenceIds) {
  runtime::CudaEngineOptions opt;
  opt.max_seq_len = 512;
  auto eng = runtime::CudaEngine::create_from_host(s_.cfg, s_.weights, opt);
  std::vector<int32_t> streamed;
  auto out = eng->generate({1}, 15, runtime::SamplingParams{}, [&](int32_t t) {
    streamed.push_back(t);
    return true;
  });
  ASSERT_EQ(out.size(), 15u);
  EXPECT_EQ(streamed, out);
  EXPECT_EQ(std::vector<int32_t>(kGreedy.begin() + 1, kGreedy.end()), out);
  EXPECT_EQ(eng->position(), 15);
  // Stopping early from the callback.
  eng->reset();
  int n = 0;
  auto out2 = eng->generate({1}, 50, runtime::SamplingParams{}, [&](int32_t) { return ++n < 5; });
  EXPECT_EQ(out2.size(), 5u);
  // Sampling with a seed is reproducible.
  runtime::SamplingParams sp{0.8f, 40, 0.9f, 7};
  eng->reset();
  auto a = eng->generate({1}, 20, sp);
  eng->reset();
  auto b = eng->generate({1}, 20, sp);
  EXPECT_EQ(a, b);
}

TEST_F(CudaEngineStories, QuantizedFormatsStayClose) {
  std::vector<int> toks(kGreedy.begin(), kGreedy.end());
  auto ref = reference_forward(s_, toks);
  struct F {
    runtime::CudaWeightFormat f;
    double bound;
  };
  for (auto [f, bound] :
       {F{runtime::CudaWeightFormat::int8wo, 2e-2}, F{runtime::CudaWeightFormat::fp8_row, 1e-1},
        F{runtime::CudaWeightFormat::fp8_tensor, 1e-1},
        F{runtime::CudaWeightFormat::fp8dq_row, 1e-1},
        F{runtime::CudaWeightFormat::fp8dq_tensor, 1e-1}}) {
    runtime::CudaEngineOptions opt;
    opt.format = f;
    opt.max_seq_len = 64;
    auto eng = runtime::CudaEngine::create_from_host(s_.cfg, s_.weights, opt);
    auto got = eng->prefill(std::vector<int32_t>(toks.begin(), toks.end() - 1));
    const double e = nmse(got, ref[toks.size() - 2]);
    auto lg = eng->decode(toks.back());
    const double e2 = nmse(lg, ref.back());
    std::printf("stories260K %s logits NMSE prefill %.3g decode %.3g\n",
                runtime::cuda_weight_format_name(f, 0).c_str(), e, e2);
    EXPECT_LT(e, bound);
    EXPECT_LT(e2, bound);
  }
  // int4 needs K divisible by the group; stories260K's hidden size 172 is not.
  runtime::CudaEngineOptions opt;
  opt.format = runtime::CudaWeightFormat::int4wo;
  opt.group_size = 32;
  EXPECT_THROW(runtime::CudaEngine::create_from_host(s_.cfg, s_.weights, opt), ao::Error);
}

// All-position prefill logits (what `ao perplexity --device cuda` scores): every row against the
// fp32 reference; the last row against prefill()'s last-token GEMV; chunks of 16, 16 (cuBLAS) and
// 8 rows (GEMV) against one chunk of 40; and the same window after reset() from a cache that
// held other tokens. bf16, and int8wo (its lm_head dequantized to bf16 for the GEMM).
TEST_F(CudaEngineStories, PrefillAllLogitsMatchCpuReferenceAtEveryPosition) {
  const std::vector<int32_t> toks(kTokens40.begin(), kTokens40.end());
  const auto ref = reference_forward(s_, kTokens40);
  const size_t T = toks.size(), V = static_cast<size_t>(s_.cfg.vocab_size);
  auto row = [&](const std::vector<float>& all, size_t t) {
    return std::vector<float>(all.begin() + t * V, all.begin() + (t + 1) * V);
  };
  struct F {
    runtime::CudaWeightFormat f;
    double bound;         // vs the fp32 reference, per position (as the tests above)
    double last_row;      // last row vs the last-token GEMV: summation order (bf16), bf16-rounded
                          // dequantized lm_head in the GEMM (int8wo)
    double chunked;       // chunks of 16 + 16 + 8 vs one chunk of 40 (fp8dq: a GEMM vs GEMV
                          // rounding difference can flip a later layer's fp8 activation code)
    size_t argmax_slack;  // positions whose argmax may differ from the fp32 model's
  };
  // fp8dq-row: the GEMM rows are bf16 logits of the FP8 GEMM (TorchAO's numerics), the last
  // row's GEMV keeps f32. Against the fp32 model it carries fp8 activation noise (run 18:
  // worst NMSE 0.0254, argmax 37/40 — as the decode step in QuantizedFormatsStayClose, 0.0252;
  // last row vs GEMV 1.3e-6).
  for (auto [f, bound, last_row, chunked, argmax_slack] :
       {F{runtime::CudaWeightFormat::bf16, 5e-3, 1e-9, 1e-4, 1},
        F{runtime::CudaWeightFormat::int8wo, 2e-2, 1e-5, 1e-4, 1},
        F{runtime::CudaWeightFormat::fp8dq_row, 5e-2, 1e-2, 1e-2, 4}}) {
    const std::string name = runtime::cuda_weight_format_name(f, 0);
    std::vector<float> one_chunk;
    for (int max_prefill : {64, 16}) {
      SCOPED_TRACE(name + " max_prefill " + std::to_string(max_prefill));
      runtime::CudaEngineOptions opt;
      opt.format = f;
      opt.max_seq_len = 128;
      opt.max_prefill = max_prefill;
      auto eng = runtime::CudaEngine::create_from_host(s_.cfg, s_.weights, opt);
      std::vector<float> all(T * V, NAN);
      eng->prefill_all_logits(toks, all.data());
      EXPECT_EQ(eng->position(), static_cast<int>(T));
      double worst = 0;
      size_t argmax_same = 0;
      for (size_t t = 0; t < T; ++t) {
        const auto got = row(all, t);
        worst = std::max(worst, nmse(got, ref[t]));
        argmax_same += std::max_element(got.begin(), got.end()) - got.begin() ==
                       std::max_element(ref[t].begin(), ref[t].end()) - ref[t].begin();
      }
      std::printf(
          "stories260K %s all-position logits (chunks of %d): worst NMSE %.3g, argmax %zu/%zu\n",
          name.c_str(), max_prefill, worst, argmax_same, T);
      EXPECT_LT(worst, bound);
      EXPECT_GE(argmax_same, T - argmax_slack);  // a near-tie may flip
      if (max_prefill == 64)
        one_chunk = all;
      else
        EXPECT_LT(nmse(all, one_chunk), chunked) << "chunked vs one chunk";

      // Another window first, then the same one from an empty cache: identical logits.
      eng->reset();
      std::vector<int32_t> other(toks.rbegin(), toks.rend());
      std::vector<float> scratch(T * V);
      eng->prefill_all_logits(other, scratch.data());
      eng->reset();
      std::vector<float> again(T * V);
      eng->prefill_all_logits(toks, again.data());
      EXPECT_EQ(again, all) << "a window's logits depend on what the cache held before reset()";

      eng->reset();
      const auto last = eng->prefill(toks);
      const double e_last = nmse(row(all, T - 1), last);
      std::printf("  last row vs last-token logits: NMSE %.3g\n", e_last);
      EXPECT_LT(e_last, last_row);
    }
  }
}

// Prefill with the quantized weights dequantized in 128-row chunks (DequantGemm; stories260K's
// lm_head of 512 rows in 4, gate_up's 344 in 3, the rest in one): the all-position logits of
// int8wo are those of the whole-weight dequantization up to cuBLAS's summation order for the
// narrower GEMMs.
TEST_F(CudaEngineStories, PrefillDequantChunksMatchTheWholeWeight) {
  const std::vector<int32_t> toks(kTokens40.begin(), kTokens40.end());
  const size_t V = static_cast<size_t>(s_.cfg.vocab_size);
  const cuda::DequantGemmTuning saved = cuda::dequant_gemm_tuning();
  std::vector<float> whole;
  for (const int64_t chunk_bytes : {0, 128 * 64 * 2}) {
    cuda::DequantGemmTuning t;
    t.chunk_bytes = chunk_bytes;
    cuda::set_dequant_gemm_tuning(t);
    runtime::CudaEngineOptions opt;
    opt.format = runtime::CudaWeightFormat::int8wo;
    opt.max_seq_len = 64;
    opt.max_prefill = 64;
    auto eng = runtime::CudaEngine::create_from_host(s_.cfg, s_.weights, opt);
    std::vector<float> all(toks.size() * V, NAN);
    eng->prefill_all_logits(toks, all.data());
    for (float v : all) ASSERT_TRUE(std::isfinite(v));
    if (t.chunk_bytes == 0) {
      whole = all;
      continue;
    }
    const double e = nmse(all, whole);
    std::printf("stories260K int8wo prefill, 128-row chunks vs the whole weight: NMSE %.3g\n", e);
    EXPECT_LT(e, 1e-9);
  }
  cuda::set_dequant_gemm_tuning(saved);
}

// fp8 weights and per-token fp8 activations: the prefill (activation quantizer + cuBLASLt FP8
// GEMM for chunks of more than 8 tokens, the GEMV for the rest) and the decode step (GEMV with
// the quantization fused) compute the same per-token numerics, so their logits agree up to
// summation order (which can flip an fp8 rounding now and then); both stay near the fp32 model.
TEST_F(CudaEngineStories, Fp8DynamicActivationPrefillMatchesDecode) {
  std::vector<int> toks(kGreedy.begin(), kGreedy.end());
  for (int t : {261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338})
    toks.push_back(t);
  const int n = static_cast<int>(toks.size());  // 30
  const auto ref = reference_forward(s_, toks);
  const std::vector<int32_t> ids(toks.begin(), toks.end());
  runtime::CudaEngineOptions opt;
  opt.format = runtime::CudaWeightFormat::fp8dq_row;
  opt.max_seq_len = 64;
  // Chunks of 11 tokens: 11 and 11 through the FP8 GEMM, the last 8 through the GEMV.
  opt.max_prefill = 11;
  auto eng = runtime::CudaEngine::create_from_host(s_.cfg, s_.weights, opt);
  const auto prefilled = eng->prefill(ids);
  eng->reset();
  std::vector<float> decoded = eng->prefill({ids[0]});
  for (int t = 1; t < n; ++t) decoded = eng->decode(ids[t]);
  const double e = nmse(prefilled, decoded);
  const double ep = nmse(prefilled, ref.back()), ed = nmse(decoded, ref.back());
  std::printf("stories260K fp8dq-row: prefill vs decode logits NMSE %.3g; vs fp32 %.3g / %.3g\n", e,
              ep, ed);
  EXPECT_LT(e, 1e-2);
  EXPECT_LT(ep, 1e-1);
  EXPECT_LT(ed, 1e-1);
  EXPECT_EQ(std::max_element(prefilled.begin(), prefilled.end()) - prefilled.begin(),
            std::max_element(decoded.begin(), decoded.end()) - decoded.begin());
}

TEST(CudaEngineSynthetic, BenchRunsOnSmallShape) {
  AO_SKIP_WITHOUT_GPU();
  io::ModelConfig c = runtime::CudaEngine::synthetic_config("llama3-1b");
  c.n_layers = 2;
  // fp8dq-tensor's prefill of 3 tokens goes through the FP8 GEMM (the GEMV takes per-tensor
  // activation scaling only for batches of 1, 2, 4 and 8).
  for (const char* f : {"bf16", "int4wo-g128", "int8wo", "fp8-row", "fp8dq-row", "fp8dq-tensor"}) {
    runtime::CudaEngineOptions opt;
    opt.format = runtime::parse_cuda_weight_format(f, &opt.group_size);
    opt.max_seq_len = 96;
    opt.max_prefill = 64;
    auto eng = runtime::CudaEngine::create_synthetic(c, opt);
    auto r = eng->bench(64, 16, 1);
    EXPECT_GT(r.pp_tok_s, 0);
    EXPECT_GT(r.tg_tok_s, 0);
    // Prefill + decode logits are finite.
    auto lg = eng->prefill({1, 2, 3});
    for (float v : lg) ASSERT_TRUE(std::isfinite(v)) << f;
  }
}

// llama3-70b's shape is known to the CUDA engine; weights past the device's free memory (here its
// 80 layers made 800: 1.4 TB in bf16, 0.36 TB in int4) are refused before any is filled, with a
// message that names the format and the GiB needed and free (a failed cudaMalloc part-way would
// say neither). Device memory is not compared before and after: ctest runs other processes on the
// same GPU at once.
TEST(CudaEngineSynthetic, WeightsPastTheFreeMemoryAreRefusedUpFront) {
  AO_SKIP_WITHOUT_GPU();
  io::ModelConfig c = runtime::CudaEngine::synthetic_config("llama3-70b");
  EXPECT_EQ(c.dim, 8192);
  EXPECT_EQ(c.hidden_dim, 28672);
  EXPECT_EQ(c.n_layers, 80);
  EXPECT_EQ(c.n_heads, 64);
  EXPECT_EQ(c.n_kv_heads, 8);
  c.n_layers = 800;
  for (const char* f : {"bf16", "int4wo-g128"}) {
    runtime::CudaEngineOptions opt;
    opt.format = runtime::parse_cuda_weight_format(f, &opt.group_size);
    opt.max_seq_len = 64;
    opt.max_prefill = 16;
    try {
      runtime::CudaEngine::create_synthetic(c, opt);
      ADD_FAILURE() << f << ": 800 layers of llama3-70b accepted";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("GiB"), std::string::npos) << m;
      EXPECT_NE(m.find("free"), std::string::npos) << m;
      EXPECT_NE(m.find(f), std::string::npos) << m;
    }
  }
  // The engine is usable afterwards: what the refused ones took was given back.
  c.n_layers = 1, c.dim = 256, c.hidden_dim = 512, c.n_heads = 2, c.n_kv_heads = 1;
  c.head_dim = 128, c.vocab_size = 1000;
  runtime::CudaEngineOptions opt;
  opt.max_seq_len = 16;
  opt.max_prefill = 8;
  auto eng = runtime::CudaEngine::create_synthetic(c, opt);
  for (float v : eng->prefill({1, 2, 3})) ASSERT_TRUE(std::isfinite(v));
}

// The prefill scratch of a quantized model is at most DequantGemmTuning's chunk (256 MB), not
// the lm_head's whole bf16 copy: llama3-1b's lm_head (128256 x 2048, 525 MB in bf16) goes in 2
// chunks, gate_up (16384 x 2048, 67 MB) whole. A bf16 model has none.
TEST(CudaEngineSynthetic, PrefillScratchStaysAtTheChunkSize) {
  AO_SKIP_WITHOUT_GPU();
  io::ModelConfig c = runtime::CudaEngine::synthetic_config("llama3-1b");
  c.n_layers = 1;
  const int64_t chunk = int64_t{256} << 20;
  ASSERT_EQ(cuda::dequant_gemm_tuning().chunk_bytes, chunk);
  struct F {
    const char* name;
    WeightFormat wf;
    int group;
  };
  for (const F f : {F{"int8wo", WeightFormat::int8, 0}, F{"int4wo-g128", WeightFormat::int4, 128},
                    F{"bf16", WeightFormat::bf16, 0}}) {
    runtime::CudaEngineOptions opt;
    opt.format = runtime::parse_cuda_weight_format(f.name, &opt.group_size);
    opt.max_seq_len = 64;
    opt.max_prefill = 32;
    auto eng = runtime::CudaEngine::create_synthetic(c, opt);
    const int64_t kp = cuda::gemv_padded_k(f.wf, c.vocab_size, c.dim, f.group);
    const auto plan = cuda::plan_dequant_chunks(c.vocab_size, kp, chunk);
    EXPECT_EQ(plan.count, 2) << f.name;
    const size_t want = f.wf == WeightFormat::bf16 ? 0 : size_t(plan.rows * kp * 2);
    // int4 and int8 weights on the fused GEMMs need no copy for prefill; the f32 all-position
    // logits still take the lm_head's copy, allocated on the first call.
    const bool fused = f.wf != WeightFormat::bf16 && cuda::fused_gemm_available();
    EXPECT_EQ(eng->prefill_scratch_bytes(), fused ? 0 : want) << f.name;
    EXPECT_LE(eng->prefill_scratch_bytes(), size_t(chunk)) << f.name;
    // The all-position logits of 20 tokens take the chunked lm_head: finite.
    std::vector<int32_t> toks(20);
    for (int i = 0; i < 20; ++i) toks[i] = 1000 + 37 * i;
    std::vector<float> all(toks.size() * static_cast<size_t>(c.vocab_size), NAN);
    eng->prefill_all_logits(toks, all.data());
    for (float v : all) ASSERT_TRUE(std::isfinite(v)) << f.name;
    EXPECT_EQ(eng->prefill_scratch_bytes(), want) << f.name;
  }
}

// A 2048-token prompt in one prefill chunk (CudaEngineOptions::max_prefill's default) and in
// chunks of 512: the same logits up to summation order (int4 weights, dequantized once per chunk).
// Then the all-position logits of a 600-token window and of the 2048-token one on the same
// engine (the logits buffer grows): the last row matches the last-token logits of prefill().
TEST(CudaEngineSynthetic, LongPromptInOneChunkMatchesChunksOf512) {
  AO_SKIP_WITHOUT_GPU();
  io::ModelConfig c = runtime::CudaEngine::synthetic_config("llama3-1b");
  c.n_layers = 2;
  const int T = 2048;
  std::vector<int32_t> toks(T);
  for (int i = 0; i < T; ++i) toks[i] = (7919 * i + 13) % 128000;
  EXPECT_EQ(runtime::CudaEngineOptions{}.max_prefill, 2048);
  std::vector<float> last[2];
  std::unique_ptr<runtime::CudaEngine> one;
  for (int chunk : {2048, 512}) {
    runtime::CudaEngineOptions opt;
    opt.format = runtime::parse_cuda_weight_format("int4wo-g128", &opt.group_size);
    opt.max_seq_len = T + 16;
    opt.max_prefill = chunk;
    auto eng = runtime::CudaEngine::create_synthetic(c, opt);
    last[chunk == 512] = eng->prefill(toks);
    for (float v : last[chunk == 512]) ASSERT_TRUE(std::isfinite(v)) << chunk;
    if (chunk == 2048) one = std::move(eng);
  }
  const double e = nmse(last[1], last[0]);
  std::printf("llama3-1b x2 int4, 2048 tokens: chunks of 512 vs one chunk, last logits NMSE %.3g\n", e);
  EXPECT_LT(e, 1e-3);
  const size_t V = static_cast<size_t>(c.vocab_size);
  for (int n : {600, T}) {
    one->reset();
    const std::vector<int32_t> window(toks.begin(), toks.begin() + n);
    std::vector<float> all(static_cast<size_t>(n) * V, NAN);
    one->prefill_all_logits(window, all.data());
    const std::vector<float> row(all.end() - static_cast<std::ptrdiff_t>(V), all.end());
    one->reset();
    const double er = nmse(row, one->prefill(window));
    std::printf("  %d-token window: last all-position row vs prefill(): NMSE %.3g\n", n, er);
    EXPECT_LT(er, 1e-4) << n;
  }
}

// CudaEngine::recapture(): the decode graph takes the launch choices of the tuning in force at
// its capture. Re-captured under another GEMV tuning (bf16 off the TMA kernel) and attention
// order, the step runs the other kernels (the capture's eager step reports its last GEMV) and
// gives the same logits within rounding; re-captured back, the original logits bit for bit.
TEST(CudaEngineSynthetic, RecaptureTakesTheTuningInForce) {
  AO_SKIP_WITHOUT_GPU();
  int dev = 0, major = 0;
  AO_CUDA_CHECK(cudaGetDevice(&dev));
  AO_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  io::ModelConfig c = runtime::CudaEngine::synthetic_config("llama3-1b");
  c.n_layers = 2;
  runtime::CudaEngineOptions opt;
  opt.max_seq_len = 32;
  opt.max_prefill = 8;
  const GemvTuning saved = gemv_tuning();
  auto eng = runtime::CudaEngine::create_synthetic(c, opt);
  auto step = [&] {
    eng->reset();
    eng->prefill({1, 2, 3});
    return eng->decode(4);
  };
  const auto a = step();
  EXPECT_EQ(last_gemv_launch().tma, major >= 9);
  GemvTuning t = saved;
  t.tma_bf16 = false;
  set_gemv_tuning(t);
  set_attention_tuning(AttentionTuning{false});
  eng->recapture();
  EXPECT_FALSE(last_gemv_launch().tma);
  const auto b = step();
  set_gemv_tuning(saved);
  set_attention_tuning({});
  eng->recapture();
  const auto a2 = step();
  ASSERT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(std::isfinite(b[i])) << i;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(a[i]) * a[i];
  }
  EXPECT_LT(num / den, 1e-4);
  EXPECT_EQ(a, a2);
}

// The decode step's int4 o projection with its x as the attention's int4 digits
// (AttentionTuning::o_digits, on by default where the kernels take it: head_dim 128 here)
// against the same engine re-captured with the bf16 hand-over: the same greedy tokens and logits
// within the fp32 sums' rounding, over positions in one attention split and in several; and
// bit for bit on a replay. Off for head_dim 64 (llama3-1b's).
TEST(CudaEngineSynthetic, OProjectionTakesTheAttentionsInt4Digits) {
  AO_SKIP_WITHOUT_GPU();
  AttentionTuningReset reset;
  TuningReset gemv_reset;
  int dev = 0, major = 0;
  AO_CUDA_CHECK(cudaGetDevice(&dev));
  AO_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  if (major < 9) GTEST_SKIP() << "no TMA kernel before sm_90";
  io::ModelConfig c = runtime::CudaEngine::synthetic_config("llama3-1b");
  {
    runtime::CudaEngineOptions opt;
    opt.format = runtime::parse_cuda_weight_format("int4wo-g128", &opt.group_size);
    opt.max_seq_len = 16;
    io::ModelConfig c64 = c;
    c64.n_layers = 1;
    EXPECT_FALSE(runtime::CudaEngine::create_synthetic(c64, opt)->o_takes_int4_digits());
  }
  c.n_layers = 2, c.n_heads = 16, c.n_kv_heads = 4, c.head_dim = 128;
  runtime::CudaEngineOptions opt;
  opt.format = runtime::parse_cuda_weight_format("int4wo-g128", &opt.group_size);
  opt.max_seq_len = 320;
  opt.max_prefill = 64;
  auto eng = runtime::CudaEngine::create_synthetic(c, opt);
  ASSERT_TRUE(eng->o_takes_int4_digits());
  std::vector<int32_t> prompt(150);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 7919) % 1000);
  // Greedy decode steps after the prompt (positions 150..., several attention splits) and after
  // a short one (one split).
  auto steps = [&](size_t plen) {
    eng->reset();
    std::vector<float> lg = eng->prefill({prompt.begin(), prompt.begin() + plen});
    std::vector<std::vector<float>> out;
    for (int s = 0; s < 6; ++s) {
      const int32_t t = static_cast<int32_t>(std::max_element(lg.begin(), lg.end()) - lg.begin());
      lg = eng->decode(t);
      out.push_back(lg);
    }
    return out;
  };
  for (size_t plen : {size_t(150), size_t(5)}) {
    set_attention_tuning({});
    eng->recapture();
    ASSERT_TRUE(eng->o_takes_int4_digits());
    const auto dig = steps(plen), dig2 = steps(plen);
    cuda::AttentionTuning off;
    off.o_digits = false;
    set_attention_tuning(off);
    eng->recapture();
    EXPECT_FALSE(eng->o_takes_int4_digits());
    const auto plain = steps(plen);
    EXPECT_EQ(eng->o_max_blocks(), 0) << "o without the digits keeps every SM";
    // The o projection on every SM (GemvTuning::decode_o_spare_sms_int4 = 0): the same logits.
    cuda::GemvTuning every = cuda::gemv_tuning();
    every.decode_o_spare_sms_int4 = 0;
    cuda::set_gemv_tuning(every);
    set_attention_tuning({});
    eng->recapture();
    EXPECT_EQ(eng->o_max_blocks(), 0);
    const auto every_sm = steps(plen);
    every.decode_o_blocks = 7;  // an explicit cap wins
    cuda::set_gemv_tuning(every);
    EXPECT_EQ(eng->o_max_blocks(), 7);
    cuda::set_gemv_tuning({});  // (gemv_reset restores it too if an assertion ends the test)
    int sms = 0;
    AO_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    EXPECT_EQ(eng->o_max_blocks(), sms - cuda::GemvTuning{}.decode_o_spare_sms_int4)
        << "the default: the digits o on SMs - decode_o_spare_sms_int4 blocks";
    for (size_t s = 0; s < dig.size(); ++s) {
      EXPECT_EQ(dig[s], dig2[s]) << "replay, step " << s;
      EXPECT_EQ(dig[s], every_sm[s]) << "o on every SM, step " << s;
      double num = 0, den = 0;
      for (size_t i = 0; i < dig[s].size(); ++i) {
        ASSERT_TRUE(std::isfinite(dig[s][i]));
        num += (double(dig[s][i]) - plain[s][i]) * (double(dig[s][i]) - plain[s][i]);
        den += double(plain[s][i]) * plain[s][i];
      }
      EXPECT_LT(num / den, 1e-5) << "prompt " << plen << ", step " << s;
      EXPECT_EQ(std::max_element(dig[s].begin(), dig[s].end()) - dig[s].begin(),
                std::max_element(plain[s].begin(), plain[s].end()) - plain[s].begin())
          << "prompt " << plen << ", step " << s;
    }
  }
}

// An int4 engine whose K are multiples of 256 but not of 1024 (Qwen2.5-7B's 3584, here 1280 and
// 2304) stores its rows padded to 256 on sm_90 (gemv_padded_k, GemvTuning::tma_int4_pad_256):
// fewer weight bytes per token by exactly the padding, and against the same weights padded to
// 1024 (the layout before: other kernels in the prefill, and at batch 1 x staged as fp16) the
// same logits within rounding, for a prefill of 5 tokens (the batch-5 GEMV) and 6 decode steps.
TEST(CudaEngineSynthetic, Int4RowsPaddedTo256MatchThe1024Layout) {
  AO_SKIP_WITHOUT_GPU();
  TuningReset gemv_reset;
  io::ModelConfig c = runtime::CudaEngine::synthetic_config("qwen2.5-7b");
  c.n_layers = 2, c.dim = 1280, c.hidden_dim = 2304, c.n_heads = 10, c.n_kv_heads = 2;
  c.head_dim = 128, c.vocab_size = 5000;
  runtime::CudaEngineOptions opt;
  opt.format = runtime::parse_cuda_weight_format("int4wo-g128", &opt.group_size);
  opt.max_seq_len = 64;
  opt.max_prefill = 16;
  auto run = [&](bool pad256) {
    GemvTuning t;
    t.tma_int4_pad_256 = pad256;
    set_gemv_tuning(t);
    auto eng = runtime::CudaEngine::create_synthetic(c, opt);
    std::vector<std::vector<float>> out{eng->prefill({11, 22, 33, 44, 55})};
    for (int s = 0; s < 6; ++s) out.push_back(eng->decode(100 + 37 * s));
    return std::make_pair(eng->weight_bytes_per_token(), out);
  };
  const auto [bytes256, lg256] = run(true);
  const auto [bytes1024, lg1024] = run(false);
  int dev = 0, major = 0;
  AO_CUDA_CHECK(cudaGetDevice(&dev));
  AO_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  // int4 g128 bytes of n rows stored at kp: the nibbles and a 4-byte word (bf16 scale and
  // zero) per group, for whole tiles of 16 rows (int4_scale_rows).
  auto int4_bytes = [](int64_t n, int64_t kp) {
    return n * kp / 2 + int4_scale_rows(n) * (kp / 128) * 4;
  };
  const int64_t D = c.dim, F = c.hidden_dim, qkv = (c.n_heads + 2 * c.n_kv_heads) * c.head_dim;
  int64_t saved = 0;
  for (const auto& [n, k] : std::vector<std::pair<int64_t, int64_t>>{
           {qkv, D}, {D, c.n_heads * c.head_dim}, {2 * F, D}, {D, F}})
    saved += c.n_layers * (int4_bytes(n, (k + 1023) / 1024 * 1024) - int4_bytes(n, k));
  saved += int4_bytes(c.vocab_size, (D + 1023) / 1024 * 1024) - int4_bytes(c.vocab_size, D);
  EXPECT_EQ(static_cast<int64_t>(bytes1024) - static_cast<int64_t>(bytes256),
            major >= 9 ? saved : 0);
  ASSERT_EQ(lg256.size(), lg1024.size());
  for (size_t s = 0; s < lg256.size(); ++s) {
    double num = 0, den = 0;
    for (size_t i = 0; i < lg256[s].size(); ++i) {
      ASSERT_TRUE(std::isfinite(lg256[s][i])) << "step " << s;
      num += (double(lg256[s][i]) - lg1024[s][i]) * (double(lg256[s][i]) - lg1024[s][i]);
      den += double(lg1024[s][i]) * lg1024[s][i];
    }
    // (1.2-1.7e-5 measured: the 1024 layout's K is padded, so its o projection does not take
    // the attention's digits and its batch-1 x is staged as fp16, not as exact digits.)
    EXPECT_LT(num / den, 1e-4) << "step " << s;
  }
}

// int4 weights in groups of 64 and 32 decode on the TMA kernel on sm_90 (batch 1: a second group
// in the integer mma's spare columns, docs/CUDA.md lab note 99): an engine with head_dim 128
// (whose o projection would take the attention's digits in groups of 128) keeps a bf16 hand-over
// for o, its decode step ends on the TMA kernel, and its logits match the same engine on the
// register-ring kernels (GemvTuning::tma_int4 off: x staged as fp16) within rounding, for a
// prefill of 5 tokens and 6 decode steps; a replay gives the same bits.
TEST(CudaEngineSynthetic, Int4Groups64And32DecodeOnTheTmaKernel) {
  AO_SKIP_WITHOUT_GPU();
  TuningReset gemv_reset;
  int dev = 0, major = 0;
  AO_CUDA_CHECK(cudaGetDevice(&dev));
  AO_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  io::ModelConfig c = runtime::CudaEngine::synthetic_config("llama3-1b");
  c.n_layers = 2, c.n_heads = 16, c.n_kv_heads = 4, c.head_dim = 128, c.vocab_size = 6000;
  for (const char* fmt : {"int4wo-g64", "int4wo-g32"}) {
    runtime::CudaEngineOptions opt;
    opt.format = runtime::parse_cuda_weight_format(fmt, &opt.group_size);
    opt.max_seq_len = 64;
    opt.max_prefill = 16;
    auto eng = runtime::CudaEngine::create_synthetic(c, opt);
    EXPECT_FALSE(eng->o_takes_int4_digits()) << fmt;
    auto run = [&] {
      eng->reset();
      std::vector<std::vector<float>> out{eng->prefill({11, 22, 33, 44, 55})};
      for (int s = 0; s < 6; ++s) out.push_back(eng->decode(100 + 37 * s));
      return out;
    };
    set_gemv_tuning({});
    eng->recapture();
    EXPECT_EQ(last_gemv_launch().tma, major >= 9) << fmt << ": the step's last GEMV (lm_head)";
    const auto tma = run(), tma2 = run();
    GemvTuning off;
    off.tma_int4 = false;
    set_gemv_tuning(off);
    eng->recapture();
    EXPECT_FALSE(last_gemv_launch().tma) << fmt;
    const auto ring = run();
    ASSERT_EQ(tma.size(), ring.size());
    for (size_t s = 0; s < tma.size(); ++s) {
      EXPECT_EQ(tma[s], tma2[s]) << fmt << " replay, step " << s;
      double num = 0, den = 0;
      for (size_t i = 0; i < tma[s].size(); ++i) {
        ASSERT_TRUE(std::isfinite(tma[s][i])) << fmt << " step " << s;
        num += (double(tma[s][i]) - ring[s][i]) * (double(tma[s][i]) - ring[s][i]);
        den += double(ring[s][i]) * ring[s][i];
      }
      EXPECT_LT(num / den, 1e-4) << fmt << " step " << s;
    }
  }
}

}  // namespace
}  // namespace ao::cuda::testing
