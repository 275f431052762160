// A TorchAO quantized checkpoint (written by quant::quantize_model) loads with its quantized
// Linear weights in place, and the KL tools measure how far it is from the base model.
#include <gtest/gtest.h>

#include "ao/core/mmap.h"
#include "ao/models/registry.h"
#include "ao/quant/checkpoint.h"
#include "ao/runtime/perplexity.h"
#include "test_util.h"

namespace ao {
namespace {

TEST(ModelQuantized, Int8CheckpointLoadsAndStaysCloseToBase) {
  AO_REQUIRE_SHARED_DATA();
  test::TempDir tmp;
  const std::string src = test::stories260k_dir() + "/stories260K.bin", out = tmp.file("int8");
  quant::quantize_model(io::open_model_files(src),
                        quant::QuantPlan::single(quant::parse_quant_config("int8wo")), out);
  auto base = models::load_model(src);
  auto q = models::load_model(out);
  int quantized = 0;
  for (const auto& [name, lin] : q.model->linears())
    quantized += lin->weight()->type_name() != "DenseWeight";
  EXPECT_EQ(quantized, 35);  // every Linear but the tied lm_head
  EXPECT_LT(q.model->weight_bytes(), base.model->weight_bytes() / 2);

  auto tok = models::load_model_tokenizer(base);
  const auto tokens = runtime::tokenize_paragraphs(
      *tok, read_text_file(test::shared_data_dir() + "/text/tinystories_valid_a.txt"), 20000);
  runtime::PerplexityOptions o;
  o.mode = runtime::PerplexityMode::bos_windows;
  o.ctx = 256;
  o.save_logprobs_path = tmp.file("base.lp");
  const auto rb = runtime::evaluate_perplexity(*base.model, tokens, o);
  o.save_logprobs_path.clear();
  o.kl_base_path = tmp.file("base.lp");
  const auto rq = runtime::evaluate_perplexity(*q.model, tokens, o);
  ASSERT_TRUE(rq.kl.has_value());
  EXPECT_NEAR(rq.kl->base_ppl, rb.ppl, 1e-6 * rb.ppl);
  EXPECT_GT(rq.kl->mean_kl, 0.0);
  EXPECT_LT(rq.kl->mean_kl, 0.01);
  EXPECT_GT(rq.kl->top1_agreement, 0.95);
  EXPECT_LT(std::abs(rq.kl->delta_ppl()), 0.05 * rb.ppl);
}

}  // namespace
}  // namespace ao
