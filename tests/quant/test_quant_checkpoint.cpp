// Configs, plans, TorchAO checkpoints (write, read back, reject bad ones) and `ao quantize`.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "ao/core/error.h"
#include "ao/io/model_files.h"
#include "ao/io/safetensors.h"
#include "ao/quant/checkpoint.h"

using namespace ao;
using namespace ao::quant;
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

const std::string kStories =
    std::string(AO_SOURCE_DIR) + "/../shared/data/models/stories260K/stories260K.bin";

fs::path fresh_dir(const std::string& name) {
  const fs::path p =
      fs::temp_directory_path() / ("ao_quant_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(QuantConfig, ParsesShortAndTorchAOSpellings) {
  EXPECT_EQ(parse_quant_config("int4wo-g128").torchao_string(),
            "Int4WeightOnlyConfig(group_size=128)");
  EXPECT_EQ(parse_quant_config("Int4WeightOnlyConfig(group_size=64)").short_name(), "int4wo-g64");
  EXPECT_EQ(parse_quant_config("Int8WeightOnlyConfig()").short_name(), "int8wo");
  EXPECT_EQ(parse_quant_config("Int8DynamicActivationInt8WeightConfig()").short_name(), "int8dq");
  EXPECT_EQ(parse_quant_config("Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())")
                .short_name(),
            "fp8dq-row");
  EXPECT_EQ(parse_quant_config("Float8DynamicActivationFloat8WeightConfig()").short_name(),
            "fp8dq-tensor");
  EXPECT_EQ(
      parse_quant_config("IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))")
          .short_name(),
      "intx4wo-g32");
  EXPECT_EQ(parse_quant_config("Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, "
                               "weight_granularity=PerGroup(32))")
                .short_name(),
            "8da4w-g32");
  EXPECT_EQ(parse_quant_config(
                "MXDynamicActivationMXWeightConfig(activation_dtype=torch.float4_e2m1fn_x2, "
                "weight_dtype=torch.float4_e2m1fn_x2)")
                .short_name(),
            "mxfp4");
  for (const char* s : {"int8wo", "int8wo-g64", "int8dq", "int4wo-g32", "intx3wo-g64-asym",
                        "8da4w-g32", "fp8wo", "fp8dq-row", "fp8dq-tensor", "mxfp8", "mxfp6",
                        "mxfp4", "nvfp4", "nvfp4wo", "int4wo-g32-tp", "int4wo-g64-hqq"}) {
    const QuantConfig c = parse_quant_config(s);
    EXPECT_EQ(c.short_name(), s == std::string("8da4w-g32") ? "8da4w-g32" : s);
    // TorchAO string and transformers JSON both read back to the same config.
    EXPECT_EQ(parse_quant_config(c.torchao_string()).short_name(), c.short_name())
        << c.torchao_string();
    EXPECT_EQ(quant_config_from_torchao_json(nlohmann::json::parse(c.to_torchao_json().dump()))
                  .short_name(),
              c.short_name());
  }
}

TEST(QuantConfig, Int4HqqSpellingsAndJson) {
  const QuantConfig c = parse_quant_config("int4wo-g128-hqq");
  EXPECT_EQ(c.int4_algorithm, Int4QparamsAlgorithm::hqq);
  EXPECT_TRUE(c.int4_tile_packed);
  EXPECT_EQ(c.torchao_string(),
            "Int4WeightOnlyConfig(group_size=128, int4_packing_format=\"tile_packed_to_4d\", "
            "int4_choose_qparams_algorithm=\"hqq\")");
  EXPECT_EQ(parse_quant_config(c.torchao_string()).short_name(), "int4wo-g128-hqq");
  // TorchAO only pairs HQQ with the tile-packed layout; without a packing format we imply it.
  EXPECT_EQ(parse_quant_config("Int4WeightOnlyConfig(group_size=64, "
                               "int4_choose_qparams_algorithm=Int4ChooseQParamsAlgorithm.HQQ)")
                .short_name(),
            "int4wo-g64-hqq");
  EXPECT_NE(error_of([] {
              parse_quant_config(
                  "Int4WeightOnlyConfig(int4_packing_format=\"plain\", "
                  "int4_choose_qparams_algorithm=\"hqq\")");
            }).find("only with"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_quant_config("Int4WeightOnlyConfig(int4_choose_qparams_algorithm=\"gptq\")");
            }).find("must be \"tinygemm\" or \"hqq\""),
            std::string::npos);
  // config.json as TorchAO's config_to_dict writes it (enum or plain string both read back).
  const json j = c.to_torchao_json();
  EXPECT_EQ(j["_data"]["int4_choose_qparams_algorithm"],
            json({{"_type", "Int4ChooseQParamsAlgorithm"}, {"_data", "HQQ"}}));
  EXPECT_EQ(j["_data"]["int4_packing_format"]["_data"], "TILE_PACKED_TO_4D");
  EXPECT_EQ(quant_config_from_torchao_json(nlohmann::json::parse(j.dump())).short_name(),
            "int4wo-g128-hqq");
  const auto torchao_strings = nlohmann::json::parse(
      R"({"_type": "Int4WeightOnlyConfig", "_version": 2, "_data": {"group_size": 128, "set_inductor_config": true, "int4_packing_format": "tile_packed_to_4d", "int4_choose_qparams_algorithm": "hqq", "int4_tile_packed_ntile": 8}})");
  EXPECT_EQ(quant_config_from_torchao_json(torchao_strings).short_name(), "int4wo-g128-hqq");
}

TEST(QuantConfig, UnknownNamesListTheValidOnes) {
  const std::string e = error_of([] { parse_quant_config("int3wo"); });
  EXPECT_NE(e.find("unknown quantization config 'int3wo'"), std::string::npos) << e;
  EXPECT_NE(e.find("int4wo-gG"), std::string::npos) << e;
  EXPECT_NE(e.find("Int4WeightOnlyConfig(group_size=128)"), std::string::npos) << e;
  const std::string e2 = error_of([] { parse_quant_config("Int4WeightOnlyConfig(group=32)"); });
  EXPECT_NE(e2.find("does not take 'group'"), std::string::npos) << e2;
  EXPECT_NE(error_of([] { parse_quant_config("FooConfig()"); }).find("unknown quantization config"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_quant_config("int4wo-g33"); }).find("even"), std::string::npos);
}

TEST(QuantConfig, GroupSizesThatDoNotDivideKAreErrorsOrExplicitFallbacks) {
  const Tensor w = Tensor::full({8, 172}, 0.5f);
  EXPECT_NE(error_of([&] { Int4Tensor::from_float(w, 32); }).find("divide K = 172"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              Int8Tensor::from_float(w, 64, ActivationQuant::none);
            }).find("does not divide"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              MXTensor::from_float(w, MxElement::fp4_e2m1, true);
            }).find("multiple of the block size 32"),
            std::string::npos);
  // Through a config: one group per row (warning), MX keeps the weight dense (nullptr).
  const QTensorPtr q = quantize_weight(w, parse_quant_config("int4wo-g32"), "mlp.down_proj");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->attributes()["block_size"], json::array({1, 172}));
  EXPECT_FALSE(quantize_weight(w, parse_quant_config("mxfp4"), "mlp.down_proj"));
}

TEST(QuantPlan, RegexRulesDefaultsAndHighPrecisionHeads) {
  const QuantPlan p = QuantPlan::from_json(
      json::parse(
          R"({"default": "int4wo-g32", "model\\.layers\\.0\\..*": "int8wo", ".*down_proj": null, "lm_head": "int8wo"})"),
      "map");
  EXPECT_EQ(p.config_for("model.layers.0.mlp.up_proj")->short_name(), "int8wo");
  EXPECT_FALSE(p.config_for("model.layers.1.mlp.down_proj"));
  EXPECT_EQ(p.config_for("model.layers.1.mlp.up_proj")->short_name(), "int4wo-g32");
  EXPECT_EQ(p.config_for("lm_head")->short_name(), "int8wo");
  EXPECT_FALSE(p.config_for("model.embed_tokens"));
  EXPECT_FALSE(QuantPlan::single(parse_quant_config("int8wo")).config_for("lm_head"));
  EXPECT_EQ(p.to_torchao_json()["_type"], "FqnToConfig");
  EXPECT_NE(error_of([] {
              QuantPlan::from_json(json::parse(R"({"(": "int8wo"})"), "m.json");
            }).find("regular expression"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              QuantPlan::from_json(json::parse(R"({"x": "int9wo"})"), "m.json");
            }).find("m.json: key 'x'"),
            std::string::npos);
}

class QuantCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kStories)) GTEST_SKIP() << "stories260K not found at " << kStories;
  }
};

TEST_F(QuantCheckpoint, WritesTorchAOLayoutAndLoadsItBack) {
  const fs::path dir = fresh_dir("roundtrip");
  const io::ModelFiles in = io::open_model_files(kStories);
  for (const char* c : {"int4wo-g32", "int8dq", "8da4w", "fp8dq-row", "mxfp4", "nvfp4"}) {
    const fs::path out = dir / c;
    const QuantizeSummary s =
        quantize_model(in, QuantPlan::single(parse_quant_config(c)), out.string());
    EXPECT_GT(s.quantized, 0) << c;
    EXPECT_LT(s.bytes_after, s.bytes_before) << c;
    // Nothing but the final folder is left behind.
    for (const auto& e : fs::directory_iterator(dir))
      EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos);
    const io::ModelFiles m = io::open_model_files(out.string());
    EXPECT_TRUE(is_torchao_checkpoint(m));
    EXPECT_TRUE(fs::exists(out / "tok512.bin"));
    const auto& qc = m.config->raw["quantization_config"];
    EXPECT_EQ(qc["quant_method"], "torchao");
    EXPECT_EQ(quant_config_from_torchao_json(qc["quant_type"]["default"]).short_name(),
              parse_quant_config(c).short_name());
    const QuantizedWeights w = load_quantized_weights(m);
    EXPECT_EQ(static_cast<int>(w.linears.size()), s.quantized) << c;
    for (const auto& [fqn, q] : w.linears) {
      // Same values as quantizing the source again (v_proj is not permuted for HF RoPE).
      if (fqn.find("v_proj") == std::string::npos) continue;
      Tensor src;
      for (const auto& t : in.tensors)
        if (t.name == fqn + ".weight") src = t.tensor;
      const QTensorPtr again = quantize_weight(src, parse_quant_config(c), fqn);
      const Tensor a = q->dequantize(), b = again->dequantize();
      EXPECT_EQ(0, std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes())) << c << " " << fqn;
    }
    EXPECT_EQ(m.config->raw["model_type"], "llama");
    EXPECT_EQ(w.dense.size() + w.linears.size(), in.tensors.size());
  }
  fs::remove_all(dir);
}

// `ao quantize` of a bf16 model writes Int4Tensor scale and zero_point as BF16, as TorchAO
// does (from_hp keeps them in the weight's dtype), and counts them as 2 bytes in bits/weight.
TEST_F(QuantCheckpoint, Bf16ModelWritesBf16Int4ScaleAndZero) {
  const fs::path dir = fresh_dir("bf16_int4");
  io::ModelFiles in = io::open_model_files(kStories);
  in.format = "safetensors";  // a bf16 safetensors model: no llama2.c q/k permutation (f32)
  for (auto& t : in.tensors) t.tensor = t.tensor.to(DType::bf16);
  const QuantizeSummary s =
      quantize_model(in, QuantPlan::single(parse_quant_config("int4wo-g32")), (dir / "q").string());
  ASSERT_GT(s.quantized, 0);
  for (const auto& r : s.rows) {
    if (r.format != "Int4Tensor") continue;
    const int64_t N = r.shape[0], K = r.shape[1], g = K % 32 == 0 ? 32 : K;
    EXPECT_EQ(r.bytes_after, N * K / 2 + 2 * 2 * N * (K / g)) << r.name;
  }
  const auto f = io::SafetensorsFile::open((dir / "q" / "model.safetensors").string());
  int checked = 0;
  for (const auto& e : f.entries()) {
    if (!e.name.ends_with("._weight_scale") && !e.name.ends_with("._weight_zero_point")) continue;
    EXPECT_EQ(f.tensor(e.name).dtype(), DType::bf16) << e.name;
    ++checked;
  }
  EXPECT_EQ(checked, 2 * s.quantized);
  // The stored bytes are from_float's of the bf16 weight.
  const std::string fqn = "model.layers.0.mlp.up_proj";
  Tensor src;
  for (const auto& t : in.tensors)
    if (t.name == fqn + ".weight") src = t.tensor;
  const auto again = Int4Tensor::from_float(src, 32);
  for (const char* name : {"scale", "zero_point"}) {
    const Tensor a = f.tensor(fqn + "._weight_" + name), b = again->data(name);
    ASSERT_EQ(a.nbytes(), b.nbytes()) << name;
    EXPECT_EQ(0, std::memcmp(a.data_ptr(), b.data_ptr(), b.nbytes())) << name;
  }
  fs::remove_all(dir);
}

TEST_F(QuantCheckpoint, RefusesAlreadyQuantizedInputsAndExistingOutputs) {
  const fs::path dir = fresh_dir("refuse");
  const io::ModelFiles in = io::open_model_files(kStories);
  quantize_model(in, QuantPlan::single(parse_quant_config("int8wo")), (dir / "q").string());
  const io::ModelFiles q = io::open_model_files((dir / "q").string());
  const std::string e = error_of([&] {
    quantize_model(q, QuantPlan::single(parse_quant_config("int4wo-g32")), (dir / "qq").string());
  });
  EXPECT_NE(e.find("already a TorchAO-quantized checkpoint"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir / "qq"));
  const std::string e2 = error_of([&] {
    quantize_model(in, QuantPlan::single(parse_quant_config("int8wo")), (dir / "q").string());
  });
  EXPECT_NE(e2.find("already exists"), std::string::npos) << e2;
  EXPECT_TRUE(fs::exists(dir / "q" / "model.safetensors"));
  fs::remove_all(dir);
}

// Rewrites model.safetensors of a quantized folder through `edit` (tensors, metadata).
void tamper(const fs::path& folder,
            const std::function<void(std::vector<io::NamedTensor>&,
                                     std::map<std::string, std::string>&)>& edit) {
  const auto f = io::SafetensorsFile::open((folder / "model.safetensors").string());
  std::vector<io::NamedTensor> t;
  for (const auto& e : f.entries()) t.push_back({e.name, f.tensor(e.name).clone()});
  auto meta = f.metadata();
  edit(t, meta);
  io::save_safetensors((folder / "model.safetensors").string(), t, meta);
}

TEST_F(QuantCheckpoint, MetadataThatDisagreesWithTensorsIsAClearError) {
  const fs::path dir = fresh_dir("tamper");
  const io::ModelFiles in = io::open_model_files(kStories);
  const std::string wname = "model.layers.0.mlp.down_proj";
  struct Case {
    const char* what;
    std::function<void(std::vector<io::NamedTensor>&, std::map<std::string, std::string>&)> edit;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"scale shape",
       [&](auto& t, auto&) {
         for (auto& x : t)
           if (x.name == wname + "._weight_scale") x.tensor = Tensor::zeros({3, 64}, DType::f32);
       },
       "has shape [3, 64] but the metadata implies"},
      {"missing tensor",
       [&](auto& t, auto&) {
         std::erase_if(t, [&](const auto& x) { return x.name == wname + "._weight_zero_point"; });
       },
       "declared in metadata but missing"},
      {"stray tensor",
       [&](auto& t, auto&) {
         t.push_back({wname + "._weight_bogus", Tensor::zeros({1}, DType::f32)});
       },
       "not declared in _tensor_data_names"},
      {"unknown type",
       [&](auto&, auto& m) {
         auto j = json::parse(m[wname + ".weight"]);
         j["_type"] = "Int3Tensor";
         m[wname + ".weight"] = j.dump();
       },
       "tensor type 'Int3Tensor'"},
      {"group",
       [&](auto&, auto& m) {
         auto j = json::parse(m[wname + ".weight"]);
         j["_data"]["block_size"] = json::array({1, 30});
         m[wname + ".weight"] = j.dump();
       },
       "does not divide the weight's K = 172"},
      {"dtype",
       [&](auto& t, auto&) {
         for (auto& x : t)
           if (x.name == wname + "._weight_qdata") x.tensor = x.tensor.to(DType::f32);
       },
       "has dtype f32, expected i8"},
      {"undescribed",
       [&](auto& t, auto&) {
         t.push_back({"extra.weight", Tensor::zeros({2}, DType::f32)});
       },
       "not described by the TorchAO metadata"},
  };
  for (const auto& c : cases) {
    const fs::path out = dir / c.what;
    quantize_model(in, QuantPlan::single(parse_quant_config("int4wo-g32")), out.string());
    if (std::string(c.what) != "unknown type") {
      // int4 on down_proj: rebuild with int8wo so that zero_point is int8 and the edits apply.
      fs::remove_all(out);
      quantize_model(in, QuantPlan::single(parse_quant_config("int8wo")), out.string());
    }
    tamper(out, c.edit);
    const std::string e =
        error_of([&] { load_quantized_weights(io::open_model_files(out.string())); });
    EXPECT_NE(e.find(c.expect), std::string::npos) << c.what << ": " << e;
  }
  fs::remove_all(dir);
}

TEST_F(QuantCheckpoint, CliQuantizesAndRejectsBadInput) {
  const char* exe = std::getenv("AO_EXE");
  const std::string ao = exe ? exe : std::string(AO_BINARY_DIR) + "/ao";
  const fs::path dir = fresh_dir("cli");
  const std::string out = (dir / "q").string();
  EXPECT_EQ(0, std::system((ao + " quantize " + kStories + " " + out + " --config int4wo-g32 > " +
                            (dir / "log").string() + " 2>&1")
                               .c_str()));
  std::ifstream log(dir / "log");
  const std::string text((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(text.find("| tensors | quantized |"), std::string::npos) << text;
  EXPECT_NE(text.find("group size 32 does not divide K = 172"), std::string::npos) << text;
  EXPECT_NE(0, std::system((ao + " quantize " + kStories + " " + (dir / "bad").string() +
                            " --config int3wo > " + (dir / "log2").string() + " 2>&1")
                               .c_str()));
  std::ifstream log2(dir / "log2");
  const std::string text2((std::istreambuf_iterator<char>(log2)), {});
  EXPECT_NE(text2.find("valid short names"), std::string::npos) << text2;
  EXPECT_FALSE(fs::exists(dir / "bad"));
  // ao info rebuilds every quantized weight and lists it; --dump-dequantized for interop scripts.
  const std::string dump = (dir / "deq.safetensors").string();
  EXPECT_EQ(0, std::system((ao + " info " + out + " --no-tensors --dump-dequantized " + dump +
                            " > " + (dir / "info").string() + " 2>&1")
                               .c_str()));
  std::ifstream info(dir / "info");
  const std::string text3((std::istreambuf_iterator<char>(info)), {});
  EXPECT_NE(text3.find("quantization_config: {"), std::string::npos) << text3;
  EXPECT_NE(text3.find("\"quant_method\":\"torchao\""), std::string::npos) << text3;
  EXPECT_NE(text3.find("| model.layers.4.mlp.down_proj | Int4Tensor(shape=[64, 172]"),
            std::string::npos)
      << text3;
  EXPECT_NE(text3.find("quantized Linear weights: 35"), std::string::npos) << text3;
  const io::SafetensorsFile deq = io::SafetensorsFile::open(dump);
  EXPECT_TRUE(deq.contains("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_TRUE(deq.contains("model.layers.0.self_attn.q_proj.linear_m16"));
  // Dumping a model that is not quantized is an error, and nothing is written.
  const std::string dump2 = (dir / "deq2.safetensors").string();
  EXPECT_NE(0, std::system((ao + " info " + kStories + " --dump-dequantized " + dump2 + " > " +
                            (dir / "log3").string() + " 2>&1")
                               .c_str()));
  std::ifstream log3(dir / "log3");
  const std::string text4((std::istreambuf_iterator<char>(log3)), {});
  EXPECT_NE(text4.find("not a TorchAO-quantized checkpoint"), std::string::npos) << text4;
  EXPECT_FALSE(fs::exists(dump2));
  fs::remove_all(dir);
}

}  // namespace
