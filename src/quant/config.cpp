#include "ao/quant/config.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <regex>

#include "ao/core/error.h"
#include "ao/core/log.h"

namespace ao::quant {
namespace {

using json = nlohmann::ordered_json;

json typed(const std::string& type, json data) {
  return json{{"_type", type}, {"_data", std::move(data)}};
}
json versioned(const std::string& type, int version, json data) {
  return json{{"_type", type}, {"_version", version}, {"_data", std::move(data)}};
}
json torch_dtype(const std::string& name) { return typed("torch.dtype", name); }
json per_row() { return versioned("PerRow", 1, json{{"dim", -1}}); }
json per_group(int64_t g) { return versioned("PerGroup", 1, json{{"group_size", g}}); }

const char* mx_short(MxElement e) {
  switch (e) {
    case MxElement::fp8_e4m3:
      return "mxfp8";
    case MxElement::fp8_e5m2:
      return "mxfp8-e5m2";
    case MxElement::fp6_e2m3:
      return "mxfp6";
    case MxElement::fp6_e3m2:
      return "mxfp6-e3m2";
    case MxElement::fp4_e2m1:
      return "mxfp4";
  }
  return "";
}

std::string mx_torch_value(MxElement e) {
  const std::string n = mx_element_torch_name(e);
  return n.starts_with("fp6") ? "\"" + n + "\"" : "torch." + n;
}

[[noreturn]] void unknown_config(std::string_view text, const std::string& why) {
  std::string list;
  for (const auto& s : quant_config_spellings()) list += (list.empty() ? "" : ", ") + s;
  fail(
      "unknown quantization config '{}'{}; valid short names: {} (N/G/B are numbers); or TorchAO's "
      "spelling, e.g. "
      "Int4WeightOnlyConfig(group_size=128), Int8WeightOnlyConfig(), "
      "Int8DynamicActivationInt8WeightConfig(), "
      "Float8WeightOnlyConfig(), Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), "
      "IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32)), "
      "Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, "
      "weight_granularity=PerGroup(32)), "
      "MXDynamicActivationMXWeightConfig(activation_dtype=torch.float4_e2m1fn_x2, "
      "weight_dtype=torch.float4_e2m1fn_x2), "
      "NVFP4DynamicActivationNVFP4WeightConfig(), NVFP4WeightOnlyConfig()",
      text, why.empty() ? "" : " (" + why + ")", list);
}

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

// "a=1, granularity=PerGroup(32)" -> {{"a","1"}, {"granularity","PerGroup(32)"}}
std::vector<std::pair<std::string, std::string>> split_args(std::string_view text,
                                                            std::string_view args) {
  std::vector<std::pair<std::string, std::string>> out;
  int depth = 0;
  std::string cur;
  auto flush = [&] {
    const std::string a = trim(cur);
    cur.clear();
    if (a.empty()) return;
    const size_t eq = a.find('=');
    if (eq == std::string::npos)
      out.emplace_back("", a);
    else
      out.emplace_back(trim(a.substr(0, eq)), trim(a.substr(eq + 1)));
  };
  for (char c : args) {
    if (c == '(' || c == '[') ++depth;
    if (c == ')' || c == ']') --depth;
    if (c == ',' && depth == 0)
      flush();
    else
      cur += c;
  }
  AO_CHECK(depth == 0, "quantization config '{}': unbalanced parentheses", text);
  flush();
  return out;
}

int64_t parse_int(std::string_view text, const std::string& v) {
  try {
    size_t used = 0;
    const long long x = std::stoll(v, &used);
    if (used == v.size()) return x;
  } catch (...) {
  }
  unknown_config(text, "expected an integer, got '" + v + "'");
}

// granularity values: PerRow(), PerTensor(), PerAxis(0), PerGroup(32); returns group (0 = row), -1
// = tensor.
int64_t parse_granularity(std::string_view text, const std::string& v) {
  static const std::regex re(R"(^(PerRow|PerTensor|PerAxis|PerGroup)\((?:\w+=)?\s*(-?\d*)\s*\)$)");
  std::smatch m;
  if (!std::regex_match(v, m, re)) unknown_config(text, "unsupported granularity '" + v + "'");
  if (m[1] == "PerRow") return 0;
  if (m[1] == "PerTensor") return -1;
  if (m[1] == "PerAxis") {
    if (!m[2].str().empty() && m[2] != "0") unknown_config(text, "only PerAxis(0) is supported");
    return 0;
  }
  if (m[2].str().empty()) unknown_config(text, "PerGroup needs a group size");
  return parse_int(text, m[2]);
}

int parse_int_dtype(std::string_view text, const std::string& v) {
  static const std::regex re(R"(^(?:torch\.)?int([1-8])$)");
  std::smatch m;
  if (!std::regex_match(v, m, re))
    unknown_config(text, "weight_dtype must be torch.int1 .. torch.int8, got '" + v + "'");
  return std::stoi(m[1]);
}

MxElement parse_mx_dtype(std::string_view text, const std::string& v) {
  std::string s = v;
  if (s.starts_with("torch.")) s = s.substr(6);
  if (s.size() >= 2 && s.front() == '"') s = s.substr(1, s.size() - 2);
  if (s.size() >= 2 && s.front() == '\'') s = s.substr(1, s.size() - 2);
  for (MxElement e : {MxElement::fp8_e4m3, MxElement::fp8_e5m2, MxElement::fp6_e2m3,
                      MxElement::fp6_e3m2, MxElement::fp4_e2m1})
    if (s == mx_element_torch_name(e)) return e;
  unknown_config(text, "unsupported MX element dtype '" + v + "'");
}

Int4QparamsAlgorithm parse_int4_algorithm(std::string_view text, const std::string& v) {
  std::string s = v;
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (s.starts_with("int4chooseqparamsalgorithm.")) s = s.substr(27);
  if (s.size() >= 2 && (s.front() == '"' || s.front() == '\'')) s = s.substr(1, s.size() - 2);
  if (s == "tinygemm") return Int4QparamsAlgorithm::tinygemm;
  if (s == "hqq") return Int4QparamsAlgorithm::hqq;
  unknown_config(text,
                 "int4_choose_qparams_algorithm must be \"tinygemm\" or \"hqq\", got '" + v + "'");
}

bool parse_mapping_symmetric(std::string_view text, const std::string& v) {
  if (v == "MappingType.SYMMETRIC" || v == "SYMMETRIC") return true;
  if (v == "MappingType.ASYMMETRIC" || v == "ASYMMETRIC") return false;
  unknown_config(
      text,
      "mapping type must be MappingType.SYMMETRIC or MappingType.ASYMMETRIC, got '" + v + "'");
}

QuantConfig parse_torchao_form(std::string_view text, const std::string& name,
                               const std::string& args_text) {
  QuantConfig c;
  const auto args = split_args(text, args_text);
  auto reject_unknown = [&](std::initializer_list<const char*> allowed) {
    for (const auto& [k, v] : args) {
      bool ok = false;
      for (const char* a : allowed) ok |= k == a;
      if (!ok) {
        std::string list;
        for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
        unknown_config(text, fmt::format("{} does not take '{}'{}; it takes: {}", name,
                                         k.empty() ? v : k, k.empty() ? " (use key=value)" : "",
                                         list.empty() ? "no arguments" : list));
      }
    }
  };
  if (name == "Int4WeightOnlyConfig") {
    reject_unknown({"group_size", "int4_packing_format", "int4_choose_qparams_algorithm"});
    c.scheme = QuantScheme::int4_weight_only;
    c.group_size = 128;
    for (const auto& [k, v] : args) {
      if (k == "group_size") c.group_size = parse_int(text, v);
      if (k == "int4_packing_format") {
        if (v.find("TILE_PACKED_TO_4D") != std::string::npos ||
            v.find("tile_packed_to_4d") != std::string::npos)
          c.int4_tile_packed = true;
        else if (v.find("PLAIN") == std::string::npos && v.find("plain") == std::string::npos)
          throw NotSupported(
              fmt::format("{}: int4 packing format {} (plain and tile_packed_to_4d are)", text, v));
      }
      if (k == "int4_choose_qparams_algorithm") c.int4_algorithm = parse_int4_algorithm(text, v);
    }
    if (c.int4_algorithm == Int4QparamsAlgorithm::hqq && !c.int4_tile_packed) {
      // TorchAO asserts that HQQ goes with TILE_PACKED_TO_4D, its only layout for HQQ.
      const bool plain_asked = std::any_of(args.begin(), args.end(), [](const auto& kv) {
        return kv.first == "int4_packing_format";
      });
      if (plain_asked)
        throw NotSupported(fmt::format(
            "{}: HQQ qparams with the plain int4 layout (TorchAO supports HQQ only with "
            "int4_packing_format=\"tile_packed_to_4d\")",
            text));
      AO_INFO(
          "{}: HQQ implies int4_packing_format=\"tile_packed_to_4d\" (TorchAO's only layout for "
          "HQQ)",
          text);
      c.int4_tile_packed = true;
    }
  } else if (name == "Int8WeightOnlyConfig") {
    reject_unknown({"group_size", "granularity"});
    c.scheme = QuantScheme::int8_weight_only;
    for (const auto& [k, v] : args) {
      if (k == "group_size" && v != "None") c.group_size = parse_int(text, v);
      if (k == "granularity") {
        const int64_t g = parse_granularity(text, v);
        if (g < 0) unknown_config(text, "Int8WeightOnlyConfig takes PerRow() or PerGroup(g)");
        c.group_size = g;
      }
    }
  } else if (name == "Int8DynamicActivationInt8WeightConfig") {
    reject_unknown({"granularity"});
    c.scheme = QuantScheme::int8_dynamic;
    for (const auto& [k, v] : args)
      if (parse_granularity(text, v) != 0)
        unknown_config(text, "only PerRow() granularity is supported");
  } else if (name == "Float8WeightOnlyConfig") {
    reject_unknown({"weight_dtype"});
    c.scheme = QuantScheme::float8_weight_only;
    for (const auto& [k, v] : args)
      if (v != "torch.float8_e4m3fn")
        throw NotSupported(fmt::format("{}: weight dtype {}", text, v));
  } else if (name == "Float8DynamicActivationFloat8WeightConfig") {
    reject_unknown({"granularity", "activation_dtype", "weight_dtype"});
    c.scheme = QuantScheme::float8_dynamic;
    c.per_tensor = true;  // TorchAO's default granularity is PerTensor()
    for (const auto& [k, v] : args) {
      if (k == "granularity") {
        const int64_t g = parse_granularity(text, v);
        if (g > 0) unknown_config(text, "float8 granularity must be PerRow() or PerTensor()");
        c.per_tensor = g < 0;
      } else if (v != "torch.float8_e4m3fn") {
        throw NotSupported(fmt::format("{}: {} {}", text, k, v));
      }
    }
  } else if (name == "IntxWeightOnlyConfig") {
    reject_unknown({"weight_dtype", "granularity", "mapping_type"});
    c.scheme = QuantScheme::intx_weight_only;
    for (const auto& [k, v] : args) {
      if (k == "weight_dtype") c.bits = parse_int_dtype(text, v);
      if (k == "granularity") {
        c.group_size = parse_granularity(text, v);
        if (c.group_size < 0)
          unknown_config(text, "IntxWeightOnlyConfig takes PerAxis(0)/PerRow() or PerGroup(g)");
      }
      if (k == "mapping_type") c.symmetric = parse_mapping_symmetric(text, v);
    }
  } else if (name == "Int8DynamicActivationIntxWeightConfig") {
    reject_unknown({"weight_dtype", "weight_granularity", "weight_mapping_type"});
    c.scheme = QuantScheme::int8_dynamic_intx;
    c.group_size = 32;
    for (const auto& [k, v] : args) {
      if (k == "weight_dtype") c.bits = parse_int_dtype(text, v);
      if (k == "weight_granularity") {
        c.group_size = parse_granularity(text, v);
        if (c.group_size < 0)
          unknown_config(text, "weight_granularity must be PerAxis(0) or PerGroup(g)");
      }
      if (k == "weight_mapping_type") c.symmetric = parse_mapping_symmetric(text, v);
    }
  } else if (name == "MXDynamicActivationMXWeightConfig") {
    reject_unknown({"activation_dtype", "weight_dtype"});
    c.scheme = QuantScheme::mx_dynamic;
    std::optional<MxElement> act;
    for (const auto& [k, v] : args) {
      if (k == "weight_dtype") c.mx_element = parse_mx_dtype(text, v);
      if (k == "activation_dtype") act = parse_mx_dtype(text, v);
    }
    if (act && *act != c.mx_element)
      throw NotSupported(fmt::format("{}: activation and weight element types must match", text));
  } else if (name == "NVFP4DynamicActivationNVFP4WeightConfig") {
    reject_unknown({});
    c.scheme = QuantScheme::nvfp4_dynamic;
  } else if (name == "NVFP4WeightOnlyConfig") {
    reject_unknown({});
    c.scheme = QuantScheme::nvfp4_weight_only;
  } else {
    unknown_config(text, "");
  }
  return c;
}

}  // namespace

const std::vector<std::string>& quant_config_spellings() {
  static const std::vector<std::string> s = {"int8wo",
                                             "int8wo-gG",
                                             "int8dq",
                                             "int4wo-gG (G = 32, 64, 128, 256)",
                                             "int4wo-gG-tp (tinygemm layout)",
                                             "int4wo-gG-hqq (tinygemm layout, HQQ qparams)",
                                             "intxBwo[-gG][-asym] (B = 1..8)",
                                             "8daBw[-gG]",
                                             "fp8wo",
                                             "fp8dq-row",
                                             "fp8dq-tensor",
                                             "mxfp8",
                                             "mxfp6",
                                             "mxfp6-e3m2",
                                             "mxfp4",
                                             "nvfp4",
                                             "nvfp4wo"};
  return s;
}

QuantConfig parse_quant_config(std::string_view text_in) {
  const std::string text = trim(text_in);
  static const std::regex torchao(R"(^([A-Za-z0-9_]+Config)\s*\((.*)\)$)");
  std::smatch m;
  if (std::regex_match(text, m, torchao)) return parse_torchao_form(text, m[1], m[2]);
  QuantConfig c;
  static const std::regex int8wo(R"(^int8wo(?:-g(\d+))?$)"),
      int4wo(R"(^int4wo(?:-g(\d+))?(-tp)?(-hqq)?$)"),
      intx(R"(^intx([1-8])wo(?:-g(\d+))?(-asym)?$)"), da(R"(^8da([1-8])w(?:-g(\d+))?$)");
  auto group = [&](const std::ssub_match& s, int64_t dflt) {
    if (!s.matched) return dflt;
    const int64_t g = std::stoll(s.str());
    AO_CHECK(g > 0, "quantization config '{}': group size must be positive", text);
    return g;
  };
  if (std::regex_match(text, m, int8wo)) {
    c.scheme = QuantScheme::int8_weight_only;
    c.group_size = group(m[1], 0);
  } else if (text == "int8dq") {
    c.scheme = QuantScheme::int8_dynamic;
  } else if (std::regex_match(text, m, int4wo)) {
    c.scheme = QuantScheme::int4_weight_only;
    c.group_size = group(m[1], 128);
    c.int4_tile_packed = m[2].matched || m[3].matched;  // HQQ exists only in the tinygemm layout
    if (m[3].matched) c.int4_algorithm = Int4QparamsAlgorithm::hqq;
  } else if (std::regex_match(text, m, intx)) {
    c.scheme = QuantScheme::intx_weight_only;
    c.bits = std::stoi(m[1]);
    c.group_size = group(m[2], 0);
    c.symmetric = !m[3].matched;
  } else if (std::regex_match(text, m, da)) {
    c.scheme = QuantScheme::int8_dynamic_intx;
    c.bits = std::stoi(m[1]);
    c.group_size = group(m[2], 32);
  } else if (text == "fp8wo") {
    c.scheme = QuantScheme::float8_weight_only;
  } else if (text == "fp8dq-row" || text == "fp8dq") {
    c.scheme = QuantScheme::float8_dynamic;
  } else if (text == "fp8dq-tensor") {
    c.scheme = QuantScheme::float8_dynamic;
    c.per_tensor = true;
  } else if (text.starts_with("mxfp")) {
    c.scheme = QuantScheme::mx_dynamic;
    bool found = false;
    for (MxElement e : {MxElement::fp8_e4m3, MxElement::fp8_e5m2, MxElement::fp6_e2m3,
                        MxElement::fp6_e3m2, MxElement::fp4_e2m1})
      if (text == mx_short(e)) c.mx_element = e, found = true;
    if (!found) unknown_config(text, "");
  } else if (text == "nvfp4") {
    c.scheme = QuantScheme::nvfp4_dynamic;
  } else if (text == "nvfp4wo") {
    c.scheme = QuantScheme::nvfp4_weight_only;
  } else {
    unknown_config(text, "");
  }
  if (c.scheme == QuantScheme::int4_weight_only)
    AO_CHECK(c.group_size % 2 == 0, "quantization config '{}': int4 group size must be even", text);
  if (c.int4_tile_packed)
    AO_CHECK(c.group_size == 32 || c.group_size == 64 || c.group_size == 128 || c.group_size == 256,
             "quantization config '{}': the tile-packed (tinygemm) layout takes group sizes 32, "
             "64, 128, 256",
             text);
  return c;
}

std::string QuantConfig::short_name() const {
  const std::string g = group_size > 0 ? fmt::format("-g{}", group_size) : "";
  switch (scheme) {
    case QuantScheme::int8_weight_only:
      return "int8wo" + g;
    case QuantScheme::int8_dynamic:
      return "int8dq";
    case QuantScheme::int4_weight_only:
      if (int4_algorithm == Int4QparamsAlgorithm::hqq) return "int4wo" + g + "-hqq";
      return "int4wo" + g + (int4_tile_packed ? "-tp" : "");
    case QuantScheme::intx_weight_only:
      return fmt::format("intx{}wo{}{}", bits, g, symmetric ? "" : "-asym");
    case QuantScheme::int8_dynamic_intx:
      return fmt::format("8da{}w{}", bits, g);
    case QuantScheme::float8_weight_only:
      return "fp8wo";
    case QuantScheme::float8_dynamic:
      return per_tensor ? "fp8dq-tensor" : "fp8dq-row";
    case QuantScheme::mx_dynamic:
      return mx_short(mx_element);
    case QuantScheme::nvfp4_dynamic:
      return "nvfp4";
    case QuantScheme::nvfp4_weight_only:
      return "nvfp4wo";
  }
  return "";
}

std::string QuantConfig::torchao_string() const {
  const std::string gran = group_size > 0 ? fmt::format("PerGroup({})", group_size) : "PerAxis(0)";
  const std::string map = symmetric ? "MappingType.SYMMETRIC" : "MappingType.ASYMMETRIC";
  switch (scheme) {
    case QuantScheme::int8_weight_only:
      return group_size > 0
                 ? fmt::format("Int8WeightOnlyConfig(granularity=PerGroup({}))", group_size)
                 : "Int8WeightOnlyConfig()";
    case QuantScheme::int8_dynamic:
      return "Int8DynamicActivationInt8WeightConfig()";
    case QuantScheme::int4_weight_only:
      if (int4_algorithm == Int4QparamsAlgorithm::hqq)
        return fmt::format(
            "Int4WeightOnlyConfig(group_size={}, int4_packing_format=\"tile_packed_to_4d\", "
            "int4_choose_qparams_algorithm=\"hqq\")",
            group_size);
      return int4_tile_packed ? fmt::format(
                                    "Int4WeightOnlyConfig(group_size={}, "
                                    "int4_packing_format=\"tile_packed_to_4d\")",
                                    group_size)
                              : fmt::format("Int4WeightOnlyConfig(group_size={})", group_size);
    case QuantScheme::intx_weight_only:
      return fmt::format(
          "IntxWeightOnlyConfig(weight_dtype=torch.int{}, granularity={}, mapping_type={})", bits,
          gran, map);
    case QuantScheme::int8_dynamic_intx:
      return fmt::format(
          "Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int{}, weight_granularity={}, "
          "weight_mapping_type={})",
          bits, gran, map);
    case QuantScheme::float8_weight_only:
      return "Float8WeightOnlyConfig()";
    case QuantScheme::float8_dynamic:
      return fmt::format("Float8DynamicActivationFloat8WeightConfig(granularity={})",
                         per_tensor ? "PerTensor()" : "PerRow()");
    case QuantScheme::mx_dynamic:
      return fmt::format(
          "MXDynamicActivationMXWeightConfig(activation_dtype={0}, weight_dtype={0})",
          mx_torch_value(mx_element));
    case QuantScheme::nvfp4_dynamic:
      return "NVFP4DynamicActivationNVFP4WeightConfig()";
    case QuantScheme::nvfp4_weight_only:
      return "NVFP4WeightOnlyConfig()";
  }
  return "";
}

int64_t QuantConfig::k_block() const {
  switch (scheme) {
    case QuantScheme::mx_dynamic:
      return 32;
    case QuantScheme::nvfp4_dynamic:
    case QuantScheme::nvfp4_weight_only:
      return 16;
    case QuantScheme::int4_weight_only:
    case QuantScheme::int8_weight_only:
    case QuantScheme::intx_weight_only:
    case QuantScheme::int8_dynamic_intx:
      return group_size;
    default:
      return 0;
  }
}

json QuantConfig::to_torchao_json() const {
  const json gran =
      group_size > 0 ? per_group(group_size) : versioned("PerAxis", 1, json{{"axis", 0}});
  const json map = typed("MappingType", symmetric ? "SYMMETRIC" : "ASYMMETRIC");
  const json kp = typed("KernelPreference", "AUTO");
  switch (scheme) {
    case QuantScheme::int8_weight_only:
      return versioned("Int8WeightOnlyConfig", 2,
                       json{{"group_size", nullptr},
                            {"granularity", group_size > 0 ? per_group(group_size) : per_row()},
                            {"set_inductor_config", true}});
    case QuantScheme::int8_dynamic:
      return versioned("Int8DynamicActivationInt8WeightConfig", 2,
                       json{{"act_mapping_type", typed("MappingType", "SYMMETRIC")},
                            {"granularity", per_row()},
                            {"reduce_range", false},
                            {"set_inductor_config", true},
                            {"weight_only_decode", false}});
    case QuantScheme::int4_weight_only:
      return versioned(
          "Int4WeightOnlyConfig", 2,
          json{{"group_size", group_size},
               {"set_inductor_config", true},
               {"int4_packing_format",
                typed("Int4PackingFormat", int4_tile_packed ? "TILE_PACKED_TO_4D" : "PLAIN")},
               {"int4_choose_qparams_algorithm",
                typed("Int4ChooseQParamsAlgorithm",
                      int4_algorithm == Int4QparamsAlgorithm::hqq ? "HQQ" : "TINYGEMM")},
               {"int4_tile_packed_ntile", 8}});
    case QuantScheme::intx_weight_only:
      return versioned(
          "IntxWeightOnlyConfig", 2,
          json{{"weight_dtype", torch_dtype(fmt::format("int{}", bits))},
               {"granularity", gran},
               {"mapping_type", map},
               {"scale_dtype", nullptr},
               {"intx_packing_format", typed("IntxPackingFormat", "UNPACKED_TO_INT8")},
               {"intx_choose_qparams_algorithm", typed("IntxChooseQParamsAlgorithm", "AFFINE")}});
    case QuantScheme::int8_dynamic_intx:
      return versioned(
          "Int8DynamicActivationIntxWeightConfig", 2,
          json{{"weight_dtype", torch_dtype(fmt::format("int{}", bits))},
               {"weight_granularity", gran},
               {"weight_mapping_type", map},
               {"weight_scale_dtype", nullptr},
               {"act_mapping_type", typed("MappingType", "ASYMMETRIC")},
               {"intx_packing_format", typed("IntxPackingFormat", "UNPACKED_TO_INT8")},
               {"intx_choose_qparams_algorithm", typed("IntxChooseQParamsAlgorithm", "AFFINE")}});
    case QuantScheme::float8_weight_only:
      return versioned("Float8WeightOnlyConfig", 2,
                       json{{"weight_dtype", torch_dtype("float8_e4m3fn")},
                            {"set_inductor_config", true},
                            {"granularity", per_row()}});
    case QuantScheme::float8_dynamic: {
      const json g = per_tensor ? versioned("PerTensor", 1, json::object()) : per_row();
      return versioned("Float8DynamicActivationFloat8WeightConfig", 2,
                       json{{"activation_dtype", torch_dtype("float8_e4m3fn")},
                            {"weight_dtype", torch_dtype("float8_e4m3fn")},
                            {"granularity", json::array({g, g})},
                            {"packing_format", typed("Float8PackingFormat", "PLAIN")},
                            {"mm_config", versioned("Float8MMConfig", 1,
                                                    json{{"emulate", false},
                                                         {"use_fast_accum", true},
                                                         {"pad_inner_dim", false}})},
                            {"activation_value_lb", nullptr},
                            {"activation_value_ub", nullptr},
                            {"kernel_preference", kp},
                            {"set_inductor_config", true},
                            {"alg_id", 0}});
    }
    case QuantScheme::mx_dynamic: {
      const std::string n = mx_element_torch_name(mx_element);
      const json dt = n.starts_with("fp6") ? json(n) : torch_dtype(n);
      return versioned("MXDynamicActivationMXWeightConfig", 1,
                       json{{"block_size", 32},
                            {"activation_dtype", dt},
                            {"weight_dtype", dt},
                            {"kernel_preference", kp},
                            {"scaling_mode", typed("ScaleCalculationMode", "RCEIL")}});
    }
    case QuantScheme::nvfp4_dynamic:
      return versioned("NVFP4DynamicActivationNVFP4WeightConfig", 1,
                       json{{"use_triton_kernel", true},
                            {"use_dynamic_per_tensor_scale", true},
                            {"step", nullptr}});
    case QuantScheme::nvfp4_weight_only:
      return versioned("NVFP4WeightOnlyConfig", 1, json{{"use_dynamic_per_tensor_scale", true}});
  }
  return json();
}

QuantConfig quant_config_from_torchao_json(const nlohmann::json& j) {
  AO_CHECK(j.is_object() && j.contains("_type") && j["_type"].is_string(),
           "quantization_config: expected {{\"_type\": ..., \"_data\": ...}}, got {}", j.dump());
  const std::string type = j["_type"].get<std::string>();
  const nlohmann::json d = j.value("_data", nlohmann::json::object());
  auto gran_of = [](const nlohmann::json& g) -> int64_t {
    if (!g.is_object()) return 0;
    const std::string t = g.value("_type", "");
    if (t == "PerGroup") return g["_data"].value("group_size", int64_t(0));
    if (t == "PerTensor") return -1;
    return 0;
  };
  auto str_of = [](const nlohmann::json& v) {
    return v.is_object() && v.contains("_data") && v["_data"].is_string()
               ? v["_data"].get<std::string>()
               : (v.is_string() ? v.get<std::string>() : "");
  };
  QuantConfig c;
  if (type == "Int4WeightOnlyConfig") {
    c.scheme = QuantScheme::int4_weight_only;
    c.group_size = d.value("group_size", int64_t(128));
    const std::string packing =
        d.contains("int4_packing_format") ? str_of(d["int4_packing_format"]) : "PLAIN";
    c.int4_tile_packed = packing == "TILE_PACKED_TO_4D" || packing == "tile_packed_to_4d";
    if (d.contains("int4_choose_qparams_algorithm")) {
      const std::string alg = str_of(d["int4_choose_qparams_algorithm"]);
      c.int4_algorithm =
          parse_int4_algorithm("Int4WeightOnlyConfig int4_choose_qparams_algorithm", alg);
      if (c.int4_algorithm == Int4QparamsAlgorithm::hqq && !c.int4_tile_packed)
        throw NotSupported("Int4WeightOnlyConfig with HQQ qparams and packing format " + packing +
                           " (TorchAO pairs HQQ only with TILE_PACKED_TO_4D)");
    }
  } else if (type == "Int8WeightOnlyConfig") {
    c.scheme = QuantScheme::int8_weight_only;
    c.group_size = d.contains("granularity") ? std::max<int64_t>(0, gran_of(d["granularity"])) : 0;
  } else if (type == "Int8DynamicActivationInt8WeightConfig") {
    c.scheme = QuantScheme::int8_dynamic;
  } else if (type == "IntxWeightOnlyConfig" || type == "Int8DynamicActivationIntxWeightConfig") {
    const bool da = type != "IntxWeightOnlyConfig";
    c.scheme = da ? QuantScheme::int8_dynamic_intx : QuantScheme::intx_weight_only;
    const std::string wd = d.contains("weight_dtype") ? str_of(d["weight_dtype"]) : "int8";
    c.bits = wd.size() == 4 && wd.starts_with("int") ? wd[3] - '0' : 8;
    c.group_size = std::max<int64_t>(
        0, gran_of(d.value(da ? "weight_granularity" : "granularity", nlohmann::json())));
    c.symmetric = str_of(d.value(da ? "weight_mapping_type" : "mapping_type", nlohmann::json())) !=
                  "ASYMMETRIC";
  } else if (type == "Float8WeightOnlyConfig") {
    c.scheme = QuantScheme::float8_weight_only;
  } else if (type == "Float8DynamicActivationFloat8WeightConfig") {
    c.scheme = QuantScheme::float8_dynamic;
    const auto& g = d.value("granularity", nlohmann::json());
    c.per_tensor = gran_of(g.is_array() && !g.empty() ? g[0] : g) < 0;
  } else if (type == "MXDynamicActivationMXWeightConfig") {
    c.scheme = QuantScheme::mx_dynamic;
    const std::string w = d.contains("weight_dtype") ? str_of(d["weight_dtype"]) : "float8_e4m3fn";
    c.mx_element = parse_mx_dtype(w, w);
  } else if (type == "NVFP4DynamicActivationNVFP4WeightConfig") {
    c.scheme = QuantScheme::nvfp4_dynamic;
  } else if (type == "NVFP4WeightOnlyConfig") {
    c.scheme = QuantScheme::nvfp4_weight_only;
  } else {
    throw NotSupported("quantization config type " + type);
  }
  return c;
}

QTensorPtr quantize_weight(const Tensor& w, const QuantConfig& c, const std::string& fqn) {
  AO_CHECK(w.dim() == 2, "{}: only 2-D Linear weights can be quantized, got shape {}", fqn,
           shape_str(w.shape()));
  const int64_t K = w.size(1);
  int64_t g = c.group_size;
  const bool grouped =
      c.scheme == QuantScheme::int4_weight_only || c.scheme == QuantScheme::int8_weight_only ||
      c.scheme == QuantScheme::intx_weight_only || c.scheme == QuantScheme::int8_dynamic_intx;
  if (c.int4_tile_packed)  // pads K like TorchAO's from_hp
    return Int4TilePackedTo4dTensor::from_float(w, g, c.int4_algorithm);
  if (grouped && g > 0 && K % g != 0) {
    AO_WARN(
        "{}: group size {} does not divide K = {}; using one group per row (group size {}) for "
        "this weight",
        fqn, g, K, K);
    g = K;
  }
  switch (c.scheme) {
    case QuantScheme::int8_weight_only:
      return Int8Tensor::from_float(w, g, ActivationQuant::none);
    case QuantScheme::int8_dynamic:
      return Int8Tensor::from_float(w, 0, ActivationQuant::int8_symmetric_per_token);
    case QuantScheme::int4_weight_only:
      if (g % 2 != 0) {
        AO_WARN(
            "{}: int4 needs an even group size, K = {} is odd; keeping this weight in high "
            "precision",
            fqn, K);
        return nullptr;
      }
      return Int4Tensor::from_float(w, g);
    case QuantScheme::intx_weight_only:
      return IntxUnpackedToInt8Tensor::from_float(w, c.bits, g, c.symmetric, ActivationQuant::none);
    case QuantScheme::int8_dynamic_intx:
      return IntxUnpackedToInt8Tensor::from_float(w, c.bits, g, c.symmetric,
                                                  ActivationQuant::int8_asymmetric_per_token);
    case QuantScheme::float8_weight_only:
      return Float8Tensor::from_float(w, false, ActivationQuant::none);
    case QuantScheme::float8_dynamic:
      return Float8Tensor::from_float(
          w, c.per_tensor,
          c.per_tensor ? ActivationQuant::float8_per_tensor : ActivationQuant::float8_per_row);
    case QuantScheme::mx_dynamic:
    case QuantScheme::nvfp4_dynamic:
    case QuantScheme::nvfp4_weight_only: {
      const int64_t block = c.k_block();
      if (K % block != 0) {
        AO_WARN(
            "{}: K = {} is not a multiple of the {} block size {}; keeping this weight in high "
            "precision (as "
            "TorchAO skips it)",
            fqn, K, c.short_name(), block);
        return nullptr;
      }
      if (c.scheme == QuantScheme::mx_dynamic) return MXTensor::from_float(w, c.mx_element, true);
      return NVFP4Tensor::from_float(w, c.scheme == QuantScheme::nvfp4_dynamic);
    }
  }
  return nullptr;
}

// ---- plans ------------------------------------------------------------------------------

QuantPlan QuantPlan::single(const QuantConfig& c) {
  QuantPlan p;
  p.fallback = c;
  return p;
}

QuantPlan QuantPlan::from_json(const json& j, const std::string& context) {
  AO_CHECK(j.is_object(), "{}: expected a JSON object mapping module-name regexes to configs",
           context);
  QuantPlan p;
  for (const auto& [k, v] : j.items()) {
    AO_CHECK(v.is_null() || v.is_string(),
             "{}: value of '{}' must be a config string or null, got {}", context, k, v.dump());
    std::optional<QuantConfig> c;
    if (v.is_string()) {
      try {
        c = parse_quant_config(v.get<std::string>());
      } catch (const Error& e) {
        fail("{}: key '{}': {}", context, k, e.what());
      }
    }
    if (k == "default" || k == "_default") {
      p.fallback = c;
      continue;
    }
    const std::string pat = k.starts_with("re:") ? k.substr(3) : k;
    try {
      std::regex re(pat);
    } catch (const std::regex_error& e) {
      fail("{}: key '{}' is not a valid regular expression: {}", context, k, e.what());
    }
    p.rules.push_back({pat, c});
  }
  return p;
}

QuantPlan QuantPlan::from_file(const std::string& path) {
  std::ifstream f(path);
  AO_CHECK(f.good(), "{}: cannot open the quantization map", path);
  json j;
  try {
    j = json::parse(f);
  } catch (const std::exception& e) {
    fail("{}: invalid JSON: {}", path, e.what());
  }
  return from_json(j, path);
}

std::optional<QuantConfig> QuantPlan::config_for(const std::string& fqn) const {
  for (const auto& r : rules)
    if (std::regex_match(fqn, std::regex(r.pattern))) return r.config;
  static const std::regex head(R"((^|.*\.)(embed_tokens|lm_head|output|tok_embeddings|wte)$)");
  if (std::regex_match(fqn, head)) return std::nullopt;
  return fallback;
}

json QuantPlan::to_torchao_json() const {
  if (rules.empty()) return fallback ? fallback->to_torchao_json() : json(nullptr);
  json m = json::object();
  m["_default"] = fallback ? fallback->to_torchao_json() : json(nullptr);
  for (const auto& r : rules)
    m["re:" + r.pattern] = r.config ? r.config->to_torchao_json() : json(nullptr);
  return versioned("FqnToConfig", 1, json{{"fqn_to_config", m}, {"module_fqn_to_config", m}});
}

}  // namespace ao::quant
