// Quantization configs, named as TorchAO names them ("Int4WeightOnlyConfig(group_size=128)")
// with short CLI spellings ("int4wo-g128"), and the FQN-to-config plan that decides which
// Linear weight gets which config.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ao/quant/quantized_tensors.h"

namespace ao::quant {

enum class QuantScheme {
  int8_weight_only,    // Int8WeightOnlyConfig
  int8_dynamic,        // Int8DynamicActivationInt8WeightConfig
  int4_weight_only,    // Int4WeightOnlyConfig (plain Int4Tensor)
  intx_weight_only,    // IntxWeightOnlyConfig
  int8_dynamic_intx,   // Int8DynamicActivationIntxWeightConfig ("8da4w")
  float8_weight_only,  // Float8WeightOnlyConfig
  float8_dynamic,      // Float8DynamicActivationFloat8WeightConfig
  mx_dynamic,          // MXDynamicActivationMXWeightConfig
  nvfp4_dynamic,       // NVFP4DynamicActivationNVFP4WeightConfig
  nvfp4_weight_only,   // NVFP4WeightOnlyConfig
};

struct QuantConfig {
  QuantScheme scheme = QuantScheme::int8_weight_only;
  int64_t group_size = 0;   // 0 = per row (per output channel)
  int bits = 8;             // intx weight bits (1..8)
  bool symmetric = true;    // intx weight mapping
  bool per_tensor = false;  // float8 dynamic granularity (false = per row)
  MxElement mx_element = MxElement::fp8_e4m3;
  bool int4_tile_packed = false;  // Int4WeightOnlyConfig's TILE_PACKED_TO_4D (tinygemm) format
  // Int4WeightOnlyConfig's int4_choose_qparams_algorithm; hqq implies int4_tile_packed.
  Int4QparamsAlgorithm int4_algorithm = Int4QparamsAlgorithm::tinygemm;

  std::string torchao_string() const;  // "Int4WeightOnlyConfig(group_size=128)"
  std::string short_name() const;      // "int4wo-g128"
  // The config as transformers writes it into config.json (quant_type.default).
  nlohmann::ordered_json to_torchao_json() const;
  // Block along K the format needs (group size, MX 32, NVFP4 16); 0 = none.
  int64_t k_block() const;
};

// Parses a short spelling or a TorchAO constructor string; an unknown name throws an
// ao::Error that lists the valid spellings.
QuantConfig parse_quant_config(std::string_view text);
// Reads transformers' quant_type entry ({"_type": ..., "_data": ...}) back into a config.
QuantConfig quant_config_from_torchao_json(const nlohmann::json& j);
const std::vector<std::string>& quant_config_spellings();  // "int8wo", "int4wo-g128", ...

// Quantizes one Linear weight [N, K] (any float dtype). When the format's group does not
// divide K, int8/int4/intx fall back to one group per row (with a warning naming `fqn`),
// and MX/NVFP4 (fixed blocks) return nullptr: the caller keeps that weight in high precision.
QTensorPtr quantize_weight(const Tensor& w, const QuantConfig& c, const std::string& fqn);

// Which config each Linear gets. Rules are regular expressions over the module FQN
// ("model.layers.3.mlp.down_proj"), tried in order (std::regex_match, whole name); a rule
// with no config keeps the module in high precision. Modules no rule matches get `fallback`,
// except embeddings and the output head (embed_tokens, lm_head, output), which stay in high
// precision unless a rule names them.
struct QuantPlan {
  struct Rule {
    std::string pattern;
    std::optional<QuantConfig> config;
  };
  std::vector<Rule> rules;
  std::optional<QuantConfig> fallback;

  static QuantPlan single(const QuantConfig& c);
  // JSON: {"default": "int4wo-g128", "<regex>": "int8wo" | null, ...} (keys in file order).
  static QuantPlan from_json(const nlohmann::ordered_json& j, const std::string& context);
  static QuantPlan from_file(const std::string& path);
  std::optional<QuantConfig> config_for(const std::string& module_fqn) const;
  // transformers' quant_type.default: the single config, or an FqnToConfig.
  nlohmann::ordered_json to_torchao_json() const;
};

}  // namespace ao::quant
