// Sampler, generation loop, perplexity windows and the KL-divergence tools.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <span>

#include "ao/core/error.h"
#include "ao/models/registry.h"
#include "ao/quant/dense_weight.h"
#include "ao/runtime/bench.h"
#include "ao/runtime/generate.h"
#include "ao/runtime/perplexity.h"
#include "ao/runtime/sampler.h"
#include "kernels/cpu/elementwise.h"
#include "test_util.h"

#ifdef AO_WITH_CUDA
bool ao_cuda_available();  // src/core/device_cuda.cu
#endif

namespace ao::runtime {
namespace {

const std::string kQwen = test::fixtures_dir() + "/hf/qwen2";

TEST(RuntimeSampler, GreedyIsArgmaxAndPenaltyApplies) {
  std::vector<float> l = {0.1f, 2.0f, 1.9f, -1.0f};
  Sampler g(SamplerParams::greedy());
  EXPECT_EQ(g.sample(l, {}), 1);
  SamplerParams p = SamplerParams::greedy();
  p.repeat_penalty = 1.5f;  // 2.0 / 1.5 < 1.9
  Sampler pen(p);
  std::vector<float> l2 = {0.1f, 2.0f, 1.9f, -1.0f};
  const int32_t hist[] = {1};
  EXPECT_EQ(pen.sample(l2, hist), 2);
}

TEST(RuntimeSampler, SeedReproducibleAndFiltersRespected) {
  std::vector<float> base(50);
  for (int i = 0; i < 50; ++i) base[i] = std::sin(i * 1.3f) * 3;
  SamplerParams p;
  p.temperature = 1.0f, p.top_k = 0, p.top_p = 1.0f, p.min_p = 0.0f, p.seed = 7;
  auto draw = [&](SamplerParams q, int n) {
    Sampler s(q);
    std::vector<int32_t> out;
    for (int i = 0; i < n; ++i) {
      auto l = base;
      out.push_back(s.sample(l, {}));
    }
    return out;
  };
  EXPECT_EQ(draw(p, 200), draw(p, 200));
  // top-k 3: only the three largest logits ever come out.
  SamplerParams k3 = p;
  k3.top_k = 3;
  std::vector<int32_t> order(50);
  for (int i = 0; i < 50; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int a, int b) { return base[a] > base[b]; });
  for (int32_t t : draw(k3, 300)) EXPECT_TRUE(t == order[0] || t == order[1] || t == order[2]) << t;
  // top-k 1 is greedy whatever the temperature.
  SamplerParams k1 = p;
  k1.top_k = 1, k1.temperature = 5.0f;
  for (int32_t t : draw(k1, 20)) EXPECT_EQ(t, order[0]);
  // min-p 1: only the most likely token survives.
  SamplerParams mp = p;
  mp.min_p = 1.0f;
  for (int32_t t : draw(mp, 20)) EXPECT_EQ(t, order[0]);
  // Frequencies follow the softmax at temperature 1.
  std::vector<float> two = {0.0f, std::log(3.0f)};  // p = 0.25, 0.75
  Sampler s(p);
  int ones = 0;
  for (int i = 0; i < 4000; ++i) {
    auto l = two;
    ones += s.sample(l, {}) == 1;
  }
  EXPECT_NEAR(ones / 4000.0, 0.75, 0.03);
}

TEST(RuntimeSampler, RejectsBadParameters) {
  SamplerParams p;
  p.top_p = 0;
  EXPECT_THROW(Sampler{p}, Error);
  p = SamplerParams();
  p.min_p = 2;
  EXPECT_THROW(Sampler{p}, Error);
  p = SamplerParams();
  p.top_p = 3;
  EXPECT_THROW(Sampler{p}, Error);
}

TEST(RuntimeGenerate, StopsAtStopTokenAndStreams) {
  auto m = models::load_model(kQwen);
  GenerateOptions o;
  o.sampler = SamplerParams::greedy();
  o.max_new_tokens = 10;
  const std::vector<int32_t> prompt = {0, 5, 9};
  const auto full = generate(*m.model, prompt, o);
  ASSERT_EQ(full.tokens.size(), 10u);
  EXPECT_EQ(full.stats.stop_reason, "length");
  o.stop_tokens = {full.tokens[4]};
  std::vector<int32_t> streamed;
  const auto cut =
      generate(*m.model, prompt, o, [&](int32_t t) { return streamed.push_back(t), true; });
  const auto first =
      std::find(full.tokens.begin(), full.tokens.end(), full.tokens[4]) - full.tokens.begin();
  EXPECT_EQ(cut.tokens, std::vector<int32_t>(full.tokens.begin(), full.tokens.begin() + first));
  EXPECT_EQ(streamed, cut.tokens);
  EXPECT_EQ(cut.stats.stop_reason, "stop_token");
}

TEST(RuntimeGenerate, StopsAtEndOfContext) {
  models::LoadOptions lo;
  lo.context = 6;
  auto m = models::load_model(kQwen, lo);
  GenerateOptions o;
  o.sampler = SamplerParams::greedy();
  o.max_new_tokens = 50;
  const std::vector<int32_t> prompt = {0, 5};
  const auto r = generate(*m.model, prompt, o);
  EXPECT_EQ(r.tokens.size(), 5u);  // positions 2..5 fed back, the 5th token sampled from position 5
  EXPECT_EQ(r.stats.stop_reason, "context");
}

// Perplexity equals the NLL computed by hand from all-position logits.
TEST(RuntimePerplexity, WindowsScoreTheRightTokens) {
  auto m = models::load_model(kQwen);
  std::vector<int32_t> toks(70);
  for (int i = 0; i < 70; ++i) toks[i] = 2 + (i * 37) % 380;
  const int64_t V = m.model->vocab_size();
  auto nll_of = [&](std::vector<int32_t> input, int64_t first) {
    std::vector<float> logits(input.size() * V);
    m.model->reset();
    m.model->forward(input.data(), int64_t(input.size()), logits.data(), true);
    double s = 0;
    for (size_t j = first; j + 1 < input.size(); ++j) {
      kernels::cpu::log_softmax_f32(&logits[j * V], &logits[j * V], V);
      s -= logits[j * V + input[j + 1]];
    }
    return s;
  };
  // bos-windows, ctx 16: 4 full windows of 15 tokens, the last 10 tokens dropped.
  PerplexityOptions o;
  o.mode = PerplexityMode::bos_windows;
  o.ctx = 16;
  auto r = evaluate_perplexity(*m.model, toks, o);
  double expect = 0;
  for (int w = 0; w < 4; ++w) {
    std::vector<int32_t> in = {0};
    in.insert(in.end(), toks.begin() + w * 15, toks.begin() + (w + 1) * 15);
    expect += nll_of(in, 0);
  }
  EXPECT_EQ(r.n_tokens, 60);
  EXPECT_NEAR(r.nll_sum, expect, 1e-3);
  // llama mode, ctx 16: 4 chunks, BOS replaces each chunk's first token, second half scored.
  o.mode = PerplexityMode::llama;
  r = evaluate_perplexity(*m.model, toks, o);
  expect = 0;
  for (int c = 0; c < 4; ++c) {
    std::vector<int32_t> in(toks.begin() + c * 16, toks.begin() + (c + 1) * 16);
    in[0] = 0;
    expect += nll_of(in, 8);
  }
  EXPECT_EQ(r.n_tokens, 4 * 7);
  EXPECT_NEAR(r.nll_sum, expect, 1e-3);
  EXPECT_NEAR(r.ppl, std::exp(expect / 28), 1e-3);
}

TEST(RuntimePerplexity, KlAgainstSavedBase) {
  test::TempDir tmp;
  auto m = models::load_model(kQwen);
  std::vector<int32_t> toks(100);
  for (int i = 0; i < 100; ++i) toks[i] = 2 + (i * 53) % 380;
  PerplexityOptions o;
  o.ctx = 32;
  o.save_logprobs_path = tmp.file("base.lp");
  const auto base = evaluate_perplexity(*m.model, toks, o);
  o.save_logprobs_path.clear();
  o.kl_base_path = tmp.file("base.lp");
  const auto same = evaluate_perplexity(*m.model, toks, o);
  ASSERT_TRUE(same.kl.has_value());
  EXPECT_LT(same.kl->mean_kl, 1e-6);
  EXPECT_EQ(same.kl->top1_agreement, 1.0);
  EXPECT_NEAR(same.kl->base_ppl, base.ppl, 1e-9 * base.ppl);
  EXPECT_NEAR(same.kl->delta_ppl(), 0.0, 1e-9);
  // Damage a layer: KL grows, PPL moves, agreement drops.
  auto& lin = *m.model->linears()[3].second;
  Tensor w = lin.weight()->dequantize().clone();
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] *= (i % 3 == 0) ? -1.0f : 1.0f;
  lin.set_weight(std::make_shared<quant::DenseWeight>(w));
  const auto hurt = evaluate_perplexity(*m.model, toks, o);
  EXPECT_GT(hurt.kl->mean_kl, 1e-3);
  EXPECT_LT(hurt.kl->top1_agreement, 1.0);
  EXPECT_NE(hurt.kl->delta_ppl(), 0.0);
  EXPECT_NEAR(hurt.kl->ppl, hurt.ppl, 1e-9 * hurt.ppl);
  // A base of another run shape is refused.
  o.ctx = 16;
  EXPECT_THROW(evaluate_perplexity(*m.model, toks, o), Error);
}

// The driver with a model that is only a window_logits function (how the CUDA engine plugs in):
// the windows it is fed, and uniform logits giving PPL = vocabulary size.
TEST(RuntimePerplexity, PluggableWindowLogits) {
  std::vector<std::vector<int32_t>> fed;
  PerplexityModel m;
  m.vocab_size = 10;
  m.context_size = 8;
  m.bos_id = 1;
  m.window_logits = [&](std::span<const int32_t> input, float* logits) {
    fed.emplace_back(input.begin(), input.end());
    std::fill(logits, logits + input.size() * 10, 0.5f);
  };
  std::vector<int32_t> toks(20);
  for (int i = 0; i < 20; ++i) toks[i] = 2 + i % 8;
  PerplexityOptions o;
  o.mode = PerplexityMode::bos_windows;
  o.ctx = 8;
  const auto r = evaluate_perplexity(m, toks, o);
  ASSERT_EQ(fed.size(), 2u);  // 2 full windows of 7; the last 6 tokens are dropped
  EXPECT_EQ(fed[1], std::vector<int32_t>({1, 9, 2, 3, 4, 5, 6}));
  EXPECT_EQ(r.n_tokens, 14);
  EXPECT_NEAR(r.ppl, 10.0, 1e-5);  // f32 log-softmax
  o.ctx = 9;
  EXPECT_THROW(evaluate_perplexity(m, toks, o), Error);  // beyond the model's context
}

// --device and --cuda-format: bad combinations are errors before anything loads; --device cuda
// says why it cannot run (no CUDA in the build, or no GPU on the machine).
TEST(RuntimeCli, PerplexityDeviceFlags) {
  AO_REQUIRE_SHARED_DATA();
  const std::string args = " -m " + test::stories260k_dir() + "/stories260K.bin -f " +
                           test::shared_data_dir() + "/text/tinystories_valid_a.txt --chunks 1";
  auto r = test::run_ao("perplexity --cuda-format int8wo" + args);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("--cuda-format applies only with --device cuda"), std::string::npos)
      << r.out;
  r = test::run_ao("generate --cuda-format int8wo -n 1 -m " + test::stories260k_dir() +
                   "/stories260K.bin");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("--cuda-format applies only with --device cuda"), std::string::npos)
      << r.out;
  r = test::run_ao("perplexity --device tpu" + args);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("--device must be cpu or cuda"), std::string::npos) << r.out;
#ifndef AO_WITH_CUDA
  r = test::run_ao("perplexity --device cuda" + args);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("this build has no CUDA"), std::string::npos) << r.out;
#else
  if (!ao_cuda_available()) {
    r = test::run_ao("perplexity --device cuda" + args);
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.out.find("no CUDA GPU is visible"), std::string::npos) << r.out;
  }
  r = test::run_ao("perplexity --device cuda --cuda-format int3" + args);
  EXPECT_EQ(r.exit_code, 1) << r.out;
#endif
}

TEST(RuntimePerplexity, KlDivergenceOfKnownDistributions) {
  const std::vector<float> p = {std::log(0.5f), std::log(0.5f)},
                           q = {std::log(0.25f), std::log(0.75f)};
  EXPECT_NEAR(kl_divergence(p, q), 0.5 * std::log(2.0) + 0.5 * std::log(0.5 / 0.75), 1e-6);
  EXPECT_NEAR(kl_divergence(p, p), 0.0, 1e-7);
}

TEST(RuntimeBench, RowsAndPrinters) {
  auto m = models::load_model(kQwen);
  BenchOptions o;
  o.n_prompt = {8};
  o.n_gen = {4};
  o.repetitions = 2;
  const auto rows = bench_cpu(*m.model, "qwen2-tiny", o);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].test, "pp8");
  EXPECT_EQ(rows[1].test, "tg4");
  EXPECT_GT(rows[0].tps_mean, 0);
  const std::string md = bench_markdown(rows);
  EXPECT_NE(md.find("| model | size | params | backend | threads | test | t/s |"),
            std::string::npos);
  EXPECT_NE(md.find("| qwen2-tiny |"), std::string::npos);
  EXPECT_EQ(bench_json(rows)[1]["n_gen"], 4);
}

TEST(RuntimeCli, GeneratePerplexityBench) {
  AO_REQUIRE_SHARED_DATA();
  const std::string model = test::stories260k_dir() + "/stories260K.bin";
  auto g = test::run_ao("generate -m " + model + " -p '' -n 256 --temp 0");
  ASSERT_EQ(g.exit_code, 0) << g.out;
  EXPECT_EQ(g.out.rfind("Once upon a time, there was a little girl named Lily.", 0), 0u) << g.out;
  EXPECT_NE(g.out.find("decode: 256 tokens"), std::string::npos) << g.out;
  auto p = test::run_ao("perplexity --json --chunks 20 --protocol paragraphs -m " + model + " -f " +
                        test::shared_data_dir() + "/text/tinystories_valid_a.txt");
  ASSERT_EQ(p.exit_code, 0) << p.out;
  EXPECT_NE(p.out.find("\"tokens\": 5100"), std::string::npos) << p.out;
  auto b = test::run_ao("bench --json -m " + model + " -p 16 -n 4 -r 1");
  ASSERT_EQ(b.exit_code, 0) << b.out;
  EXPECT_NE(b.out.find("\"test\": \"tg4\""), std::string::npos) << b.out;
}

}  // namespace
}  // namespace ao::runtime
