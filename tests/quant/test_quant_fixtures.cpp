// Bit-exactness against TorchAO: each fixture (scripts/fixtures/make_quant_fixtures.py) holds
// a weight, TorchAO's flattened quantized tensors and metadata, its dequantization, and for
// dynamic-activation types its quantize-dequantize of an activation.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "ao/core/dtype.h"
#include "ao/io/model_files.h"
#include "ao/io/safetensors.h"
#include "ao/quant/checkpoint.h"
#include "ao/quant/quantized_tensors.h"

using namespace ao;
using namespace ao::quant;

namespace {

struct FixtureCase {
  const char* file;
  std::function<QTensorPtr(const Tensor&)> quantize;
};

const std::vector<FixtureCase>& fixture_cases() {
  static const std::vector<FixtureCase> c = {
      {"int8_row",
       [](const Tensor& w) { return Int8Tensor::from_float(w, 0, ActivationQuant::none); }},
      {"int8_g32",
       [](const Tensor& w) { return Int8Tensor::from_float(w, 32, ActivationQuant::none); }},
      {"int8dq",
       [](const Tensor& w) {
         return Int8Tensor::from_float(w, 0, ActivationQuant::int8_symmetric_per_token);
       }},
      {"int4_g32", [](const Tensor& w) { return Int4Tensor::from_float(w, 32); }},
      {"int4_g96", [](const Tensor& w) { return Int4Tensor::from_float(w, 96); }},
      // bf16 weight: TorchAO keeps scale and zero_point in bf16 (checked dtype and bytes).
      {"int4_g32_bf16", [](const Tensor& w) { return Int4Tensor::from_float(w, 32); }},
      {"intx4_g32_sym",
       [](const Tensor& w) {
         return IntxUnpackedToInt8Tensor::from_float(w, 4, 32, true, ActivationQuant::none);
       }},
      {"intx3_g32_asym",
       [](const Tensor& w) {
         return IntxUnpackedToInt8Tensor::from_float(w, 3, 32, false, ActivationQuant::none);
       }},
      {"intx2_row",
       [](const Tensor& w) {
         return IntxUnpackedToInt8Tensor::from_float(w, 2, 0, true, ActivationQuant::none);
       }},
      {"8da4w_g32",
       [](const Tensor& w) {
         return IntxUnpackedToInt8Tensor::from_float(w, 4, 32, true,
                                                     ActivationQuant::int8_asymmetric_per_token);
       }},
      {"fp8_row",
       [](const Tensor& w) {
         return Float8Tensor::from_float(w, false, ActivationQuant::float8_per_row);
       }},
      {"fp8_tensor",
       [](const Tensor& w) {
         return Float8Tensor::from_float(w, true, ActivationQuant::float8_per_tensor);
       }},
      {"mxfp8", [](const Tensor& w) { return MXTensor::from_float(w, MxElement::fp8_e4m3, true); }},
      {"mxfp6_e2m3",
       [](const Tensor& w) { return MXTensor::from_float(w, MxElement::fp6_e2m3, true); }},
      {"mxfp6_e3m2",
       [](const Tensor& w) { return MXTensor::from_float(w, MxElement::fp6_e3m2, true); }},
      {"mxfp4", [](const Tensor& w) { return MXTensor::from_float(w, MxElement::fp4_e2m1, true); }},
      {"nvfp4", [](const Tensor& w) { return NVFP4Tensor::from_float(w, true); }},
  };
  return c;
}

io::SafetensorsFile open_fixture(const std::string& name) {
  return io::SafetensorsFile::open(std::string(AO_SOURCE_DIR) + "/tests/fixtures/quant/" + name +
                                   ".safetensors");
}

// Largest |a - b| relative to max |b| (0 when equal).
double max_rel_diff(const Tensor& a, const Tensor& b) {
  const Tensor x = a.contiguous().to(DType::f32), y = b.contiguous().to(DType::f32);
  double d = 0, m = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    d = std::max(d, std::fabs(double(x.data<float>()[i]) - double(y.data<float>()[i])));
    m = std::max(m, std::fabs(double(y.data<float>()[i])));
  }
  return m > 0 ? d / m : d;
}

class QuantFixture : public ::testing::TestWithParam<FixtureCase> {};

TEST_P(QuantFixture, QuantizedDataIsBitExact) {
  const auto f = open_fixture(GetParam().file);
  const QTensorPtr q = GetParam().quantize(f.tensor("w"));
  const auto meta = nlohmann::ordered_json::parse(f.metadata().at("layer.weight"));
  EXPECT_EQ(q->type_name(), meta["_type"].get<std::string>());
  std::vector<std::string> names;
  for (const auto& d : q->data()) names.push_back(d.name);
  EXPECT_EQ(names, meta["_tensor_data_names"].get<std::vector<std::string>>());
  for (const auto& d : q->data()) {
    const Tensor ref = f.tensor("layer._weight_" + d.name);
    ASSERT_EQ(d.tensor.shape(), ref.shape()) << d.name;
    ASSERT_EQ(d.tensor.dtype(), ref.dtype()) << d.name;
    const auto* a = static_cast<const uint8_t*>(d.tensor.contiguous().data_ptr());
    const auto* b = static_cast<const uint8_t*>(ref.data_ptr());
    int64_t mismatches = 0, first = -1;
    for (size_t i = 0; i < ref.nbytes(); ++i)
      if (a[i] != b[i]) mismatches++, first = first < 0 ? int64_t(i) : first;
    EXPECT_EQ(mismatches, 0) << GetParam().file << " " << d.name << ": first differing byte "
                             << first;
  }
}

TEST_P(QuantFixture, LoadsTorchAOTensorsAndDequantizesAsTorchAO) {
  const auto f = open_fixture(GetParam().file);
  const auto meta = nlohmann::ordered_json::parse(f.metadata().at("layer.weight"));
  const QTensorTypeInfo* info = find_qtensor_type(meta["_type"].get<std::string>());
  ASSERT_NE(info, nullptr);
  std::vector<io::NamedTensor> data;
  for (const auto& n : meta["_tensor_data_names"])
    data.push_back({n, f.tensor("layer._weight_" + n.get<std::string>())});
  const QTensorPtr q = info->load(GetParam().file, data, meta["_data"]);
  EXPECT_LE(max_rel_diff(q->dequantize(), f.tensor("deq")), 1e-6) << GetParam().file;
  if (f.contains("xq")) {
    // The fixture's tensor may carry no activation settings; ours (from the config) does.
    const QTensorPtr ours = GetParam().quantize(f.tensor("w"));
    ASSERT_TRUE(ours->quantizes_activation());
    Tensor x = f.tensor("x").clone();
    ours->quantize_activation(x.data<float>(), x.size(0));
    EXPECT_LE(max_rel_diff(x, f.tensor("xq")), 1e-6)
        << GetParam().file << ": dynamic activation quantization";
  }
}

INSTANTIATE_TEST_SUITE_P(QuantTorchAO, QuantFixture, ::testing::ValuesIn(fixture_cases()),
                         [](const auto& info) {
                           std::string n = info.param.file;
                           for (char& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

}  // namespace

namespace {

// Int4TilePackedTo4dTensor against the tinygemm ops on CUDA
// (scripts/fixtures/make_tile_packed_fixtures.py): packing bit-exact, dequantization and
// linear as the CUDA kernel computes them (bf16 output, hence the tolerance).
class QuantTilePacked : public ::testing::TestWithParam<std::pair<const char*, int64_t>> {};

TEST_P(QuantTilePacked, MatchesTinygemm) {
  const auto f = open_fixture(GetParam().first);
  const int64_t g = GetParam().second;
  const Tensor w = f.tensor("w");
  const auto q = Int4TilePackedTo4dTensor::from_float(w, g);
  for (const char* name : {"qdata", "scale_and_zero"}) {
    const Tensor ref = f.tensor(name);
    ASSERT_EQ(q->data(name).shape(), ref.shape()) << name;
    EXPECT_EQ(0, std::memcmp(q->data(name).data_ptr(), ref.data_ptr(), ref.nbytes())) << name;
  }
  const QTensorPtr loaded =
      find_qtensor_type("Int4TilePackedTo4dTensor")
          ->load(GetParam().first,
                 {{"qdata", f.tensor("qdata")}, {"scale_and_zero", f.tensor("scale_and_zero")}},
                 nlohmann::ordered_json{{"block_size", {1, g}}, {"shape", w.shape()}});
  EXPECT_LE(max_rel_diff(loaded->dequantize(), f.tensor("deq")), 4e-3);
  const Tensor x = f.tensor("x");
  Tensor y = Tensor::empty({x.size(0), w.size(0)}, DType::f32);
  loaded->linear(x.data<float>(), x.size(0), y.data<float>());
  EXPECT_LE(max_rel_diff(y, f.tensor("y")), 1e-2);
}

INSTANTIATE_TEST_SUITE_P(
    QuantTinygemm, QuantTilePacked,
    ::testing::Values(std::make_pair("int4_tile_packed_44_96_32", int64_t(32)),
                      std::make_pair("int4_tile_packed_24_256_128", int64_t(128)),
                      std::make_pair("int4_tile_packed_64_172_32", int64_t(32)),
                      std::make_pair("int4_tile_packed_20_1100_64", int64_t(64))),
    [](const auto& info) { return std::string(info.param.first).substr(17); });

}  // namespace

namespace {

// The whole Int4TilePackedTo4dTensor.from_hp output (qdata + scale_and_zero) of TorchAO 0.18
// on an H200 for int4_choose_qparams_algorithm "hqq" and "tinygemm", group 128, 16x1024 bf16
// (tests/fixtures/formats/hqq_cuda.safetensors, scripts/fixtures/make_tile_pack_fixtures.py).
// from_hp refuses to run without a CUDA device, so this is TorchAO's only HQQ int4 path.
TEST(QuantTilePackedHqq, MatchesTorchAoFromHpOnCuda) {
  const auto f = io::SafetensorsFile::open(std::string(AO_SOURCE_DIR) +
                                           "/tests/fixtures/formats/hqq_cuda.safetensors");
  const Tensor w = f.tensor("w");
  ASSERT_EQ(w.dtype(), DType::bf16);
  for (const auto alg : {Int4QparamsAlgorithm::hqq, Int4QparamsAlgorithm::tinygemm}) {
    const std::string pre = std::string("e2e_") + int4_qparams_algorithm_name(alg) + "_g128";
    SCOPED_TRACE(pre);
    const auto q = Int4TilePackedTo4dTensor::from_float(w, 128, alg);
    for (const char* name : {"qdata", "scale_and_zero"}) {
      const Tensor ref = f.tensor(pre + "." + name);
      ASSERT_EQ(q->data(name).shape(), ref.shape()) << name;
      ASSERT_EQ(q->data(name).dtype(), ref.dtype()) << name;
      EXPECT_EQ(0, std::memcmp(q->data(name).data_ptr(), ref.data_ptr(), ref.nbytes())) << name;
    }
  }
}

}  // namespace

namespace {

// The int8 x int8 decode kernel against TorchAO's F.linear on CPU
// (scripts/fixtures/make_int8_linear_fixtures.py, K = 200, M = 1, 3, 8): Int8dq is TorchAO's
// integer path (int32 dot products, then x_scale, then w_scale) and must match bit for bit;
// 8da4w is a quantize-dequantize + f32 F.linear in TorchAO, so only float rounding differs.
TEST(QuantInt8Int8, MatchesTorchAoLinear) {
  const auto f = open_fixture("int8_linear");
  const Tensor w = f.tensor("w");
  const auto dq = Int8Tensor::from_float(w, 0, ActivationQuant::int8_symmetric_per_token);
  ASSERT_EQ(0, std::memcmp(dq->data("qdata").data_ptr(), f.tensor("int8dq.qdata").data_ptr(),
                           f.tensor("int8dq.qdata").nbytes()));
  const auto da = IntxUnpackedToInt8Tensor::from_float(w, 4, 40, true,
                                                       ActivationQuant::int8_asymmetric_per_token);
  for (int64_t M : {1, 3, 8}) {
    SCOPED_TRACE(M);
    const Tensor x = f.tensor("x_m" + std::to_string(M));
    Tensor y = Tensor::empty({M, w.size(0)}, DType::f32);
    dq->linear(x.data<float>(), M, y.data<float>());
    const Tensor ref = f.tensor("int8dq.y_m" + std::to_string(M));
    int differ = 0;
    for (int64_t i = 0; i < y.numel(); ++i) differ += y.data<float>()[i] != ref.data<float>()[i];
    EXPECT_EQ(differ, 0) << "of " << y.numel() << " int8dq outputs differ from TorchAO";
    da->linear(x.data<float>(), M, y.data<float>());
    EXPECT_LE(max_rel_diff(y, f.tensor("8da4w.y_m" + std::to_string(M))), 1e-6);
  }
}

// Int4Tensor of a bf16 (or f16) weight: TorchAO's from_hp quantizes with the fp32 scale and
// min (int4_row_quantize_zp), then keeps scale and zero_point in the weight's dtype. Checked
// against that rule written out here: q from fp32 values, scale and zero_point bf16 (f16)
// tensors holding the rounded s and zero bit for bit, and the dequantization q s + zero with
// them.
TEST(QuantInt4, Bf16WeightKeepsBf16ScaleAndZero) {
  const int64_t N = 6, K = 256, g = 64;
  for (const DType dt : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(dt));
    const auto round = [dt](float v) { return dt == DType::bf16 ? f32_to_bf16(v) : f32_to_f16(v); };
    const auto widen = [dt](uint16_t v) {
      return dt == DType::bf16 ? bf16_to_f32(v) : f16_to_f32(v);
    };
    Tensor w = Tensor::empty({N, K}, dt);
    for (int64_t i = 0; i < N * K; ++i)
      w.data<uint16_t>()[i] = round(0.3f * std::sin(0.37f * float(i)) + 0.05f * float(i % 7));
    const auto q = Int4Tensor::from_float(w, g);
    ASSERT_EQ(q->data("scale").dtype(), dt);
    ASSERT_EQ(q->data("zero_point").dtype(), dt);
    EXPECT_EQ(q->nbytes(), size_t(N * K / 2 + 2 * 2 * N * (K / g)));  // 2-byte scales and zeros
    const Tensor sc = q->data("scale").contiguous(), zp = q->data("zero_point").contiguous();
    const Tensor deq = q->dequantize().contiguous().to(DType::f32);
    const auto* qd = static_cast<const uint8_t*>(q->data("qdata").data_ptr());
    int changed = 0;  // groups whose fp32 s is no bf16/f16 value (so the rounding is exercised)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t gi = 0; gi < K / g; ++gi) {
        float mn = INFINITY, mx = -INFINITY;
        for (int64_t k = gi * g; k < (gi + 1) * g; ++k) {
          const float v = widen(w.data<uint16_t>()[n * K + k]);
          mn = std::min(mn, v), mx = std::max(mx, v);
        }
        const float s = std::max(mx - mn, 1e-6f) / 15.f;
        const uint16_t sb = round(s), zb = round(mn + 8.f * s);
        changed += widen(sb) != s;
        ASSERT_EQ(sc.data<uint16_t>()[gi * N + n], sb) << n << " " << gi;
        ASSERT_EQ(zp.data<uint16_t>()[gi * N + n], zb) << n << " " << gi;
        for (int64_t k = gi * g; k < (gi + 1) * g; ++k) {
          const float v = widen(w.data<uint16_t>()[n * K + k]);
          const int want = int(std::clamp(std::nearbyint((v - mn) / s), 0.f, 15.f)) - 8;
          const uint8_t byte = qd[(n * K + k) / 2];
          const int got = (int((k % 2 == 0 ? byte : byte >> 4) & 15) ^ 8) - 8;
          ASSERT_EQ(got, want) << n << " " << k;
          EXPECT_NEAR(deq.data<float>()[n * K + k], float(want) * widen(sb) + widen(zb),
                      1e-6f * (1.f + std::fabs(widen(zb))));
        }
      }
    EXPECT_GT(changed, 0);
  }
  // An f32 weight keeps f32 scale and zero_point (as TorchAO's from_hp of an f32 weight).
  const auto q32 = Int4Tensor::from_float(Tensor::full({4, 64}, 0.5f), 32);
  EXPECT_EQ(q32->data("scale").dtype(), DType::f32);
  EXPECT_EQ(q32->data("zero_point").dtype(), DType::f32);
}

// The same rule against TorchAO itself (fixture int4_g32_bf16: the int4_g32 weight cast to
// bf16, TorchAO's Int4Tensor with bf16 scale and zero_point; also a row of the QuantFixture
// table). Every data tensor must have TorchAO's dtype and bytes: qdata i8, scale and
// zero_point bf16, bit for bit. The f32 rule on the same values must differ (the rounding is
// exercised). Both dequantizations (ours, and TorchAO's tensors loaded, which keep bf16) must
// match the fixture's.
TEST(QuantInt4, Bf16WeightMatchesTorchAoFixture) {
  const auto f = open_fixture("int4_g32_bf16");
  const Tensor w = f.tensor("w");
  ASSERT_EQ(w.dtype(), DType::bf16);
  const auto q = Int4Tensor::from_float(w, 32);
  const auto q_f32 = Int4Tensor::from_float(w.to(DType::f32), 32);  // the same values, f32 rule
  const auto meta = nlohmann::ordered_json::parse(f.metadata().at("layer.weight"));
  EXPECT_EQ(q->metadata()["_data"], meta["_data"]);
  std::vector<io::NamedTensor> data;
  int differ_f32 = 0;  // scales/zeros where the f32 rule would not match (rounding exercised)
  for (const char* name : {"qdata", "scale", "zero_point"}) {
    const Tensor ref = f.tensor(std::string("layer._weight_") + name);
    data.push_back({name, ref});
    ASSERT_EQ(q->data(name).shape(), ref.shape()) << name;
    ASSERT_EQ(q->data(name).dtype(), ref.dtype()) << name;
    if (std::string(name) != "qdata") ASSERT_EQ(ref.dtype(), DType::bf16) << name;
    EXPECT_EQ(0, std::memcmp(q->data(name).contiguous().data_ptr(), ref.data_ptr(), ref.nbytes()))
        << name;
    if (std::string(name) == "qdata") continue;
    const Tensor want = ref.to(DType::f32);
    const Tensor unrounded = q_f32->data(name).contiguous().to(DType::f32);
    for (int64_t i = 0; i < want.numel(); ++i)
      differ_f32 += unrounded.data<float>()[i] != want.data<float>()[i];
  }
  EXPECT_GT(differ_f32, 0);
  EXPECT_LE(max_rel_diff(q->dequantize(), f.tensor("deq")), 1e-6);
  const QTensorPtr loaded =
      find_qtensor_type("Int4Tensor")->load("int4_g32_bf16", data, meta["_data"]);
  for (const char* name : {"scale", "zero_point"}) {
    const Tensor ref = f.tensor(std::string("layer._weight_") + name);
    ASSERT_EQ(loaded->data(name).dtype(), DType::bf16) << name;
    EXPECT_EQ(0, std::memcmp(loaded->data(name).data_ptr(), ref.data_ptr(), ref.nbytes())) << name;
  }
  EXPECT_LE(max_rel_diff(loaded->dequantize(), f.tensor("deq")), 1e-6);
}

// A TorchAO bf16 Int4Tensor checkpoint (the fixture's tensors and metadata) read by
// load_quantized_weights and written back the way `ao quantize` writes weights
// (append_quantized_weight + save_safetensors): scale and zero_point stay BF16 in the file's
// header and byte-identical to TorchAO's; the file loads back to the same dequantization.
TEST(QuantInt4, TorchAoBf16CheckpointSavesBackUnchanged) {
  const auto f = open_fixture("int4_g32_bf16");
  io::ModelFiles in;
  in.path = "int4_g32_bf16";
  in.format = "safetensors";
  for (const char* name : {"qdata", "scale", "zero_point"}) {
    const std::string n = std::string("layer._weight_") + name;
    in.tensors.push_back({n, f.tensor(n)});
  }
  in.metadata = {{"tensor_names", f.metadata().at("tensor_names")},
                 {"layer.weight", f.metadata().at("layer.weight")}};
  const QuantizedWeights loaded = load_quantized_weights(in);
  ASSERT_EQ(loaded.linears.size(), 1u);
  std::vector<io::NamedTensor> tensors;
  std::map<std::string, std::string> meta;
  append_quantized_weight("layer.weight", *loaded.linears.at("layer"), tensors, meta);
  meta["tensor_names"] = f.metadata().at("tensor_names");
  const std::string path =
      (std::filesystem::temp_directory_path() /
       ("ao_int4_bf16_roundtrip_" + std::to_string(::getpid()) + ".safetensors"))
          .string();
  io::save_safetensors(path, tensors, meta);
  // The header as written: {"layer._weight_scale": {"dtype": "BF16", ...}, ...}.
  std::ifstream file(path, std::ios::binary);
  uint64_t header_len = 0;
  file.read(reinterpret_cast<char*>(&header_len), 8);
  std::string header(header_len, '\0');
  file.read(header.data(), static_cast<std::streamsize>(header_len));
  const auto h = nlohmann::json::parse(header);
  EXPECT_EQ(h["layer._weight_scale"]["dtype"], "BF16");
  EXPECT_EQ(h["layer._weight_zero_point"]["dtype"], "BF16");
  EXPECT_EQ(h["layer._weight_qdata"]["dtype"], "I8");
  {
    const auto saved = io::SafetensorsFile::open(path);
    for (const char* name : {"qdata", "scale", "zero_point"}) {
      const std::string n = std::string("layer._weight_") + name;
      const Tensor a = saved.tensor(n), b = f.tensor(n);
      ASSERT_EQ(a.dtype(), b.dtype()) << n;
      ASSERT_EQ(a.shape(), b.shape()) << n;
      EXPECT_EQ(0, std::memcmp(a.data_ptr(), b.data_ptr(), b.nbytes())) << n;
    }
    // The same JSON as TorchAO's (Python's json.dumps spaces it differently).
    EXPECT_EQ(nlohmann::ordered_json::parse(saved.metadata().at("layer.weight")),
              nlohmann::ordered_json::parse(f.metadata().at("layer.weight")));
    io::ModelFiles back;
    back.path = path;
    back.format = "safetensors";
    back.tensors = {{"layer._weight_qdata", saved.tensor("layer._weight_qdata")},
                    {"layer._weight_scale", saved.tensor("layer._weight_scale")},
                    {"layer._weight_zero_point", saved.tensor("layer._weight_zero_point")}};
    back.metadata = saved.metadata();
    EXPECT_LE(max_rel_diff(load_quantized_weights(back).linears.at("layer")->dequantize(),
                           f.tensor("deq")),
              1e-6);
  }
  std::filesystem::remove(path);
}

// A bad dtype for scale / zero_point is an error naming the weight, the tensor and the dtype.
TEST(QuantInt4, LoadRejectsOtherScaleDtypes) {
  const auto f = open_fixture("int4_g32_bf16");
  const auto meta = nlohmann::ordered_json::parse(f.metadata().at("layer.weight"));
  for (const char* bad : {"scale", "zero_point"}) {
    std::vector<io::NamedTensor> data;
    for (const char* name : {"qdata", "scale", "zero_point"}) {
      const Tensor t = f.tensor(std::string("layer._weight_") + name);
      data.push_back({name, std::string(name) == bad ? t.to(DType::i32) : t});
    }
    std::string err;
    try {
      find_qtensor_type("Int4Tensor")->load("model.layers.0.mlp.up_proj", data, meta["_data"]);
    } catch (const std::exception& e) {
      err = e.what();
    }
    EXPECT_NE(err.find(fmt::format("model.layers.0.mlp.up_proj: Int4Tensor tensor '{}' has dtype "
                                   "i32, expected f32, bf16 or f16",
                                   bad)),
              std::string::npos)
        << err;
  }
}

}  // namespace
