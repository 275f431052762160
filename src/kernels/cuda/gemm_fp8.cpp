// FP8 e4m3 GEMM through cuBLASLt with per-tensor or per-row (outer-vector) scales; see
// include/ao/kernels/cuda/gemm_fp8.h.
#include "ao/kernels/cuda/gemm_fp8.h"

#include <cublasLt.h>

#include <map>
#include <tuple>

#include "ao/core/error.h"
#include "ao/kernels/cuda/cublas_check.h"

namespace ao::cuda {

const char* fp8_gemm_path_name(Fp8GemmPath p) {
  switch (p) {
    case Fp8GemmPath::none:
      return "none";
    case Fp8GemmPath::scalar_scales:
      return "cuBLASLt FP8, scalar scales";
    case Fp8GemmPath::outer_vector_scales:
      return "cuBLASLt FP8, outer-vector scales";
    case Fp8GemmPath::epilogue_scales:
      return "cuBLASLt FP8 unscaled + scaling epilogue";
  }
  return "?";
}

namespace {

template <typename T>
void set_attr(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const T& v) {
  AO_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, a, &v, sizeof(v)));
}

// One cuBLASLt problem: descriptors and the heuristic's algorithm (found = false: none).
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool found = false;
  cublasStatus_t heuristic_status = CUBLAS_STATUS_SUCCESS;

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

}  // namespace

struct Fp8Gemm::Impl {
  Fp8GemmOptions opt;
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;
  float* f32_out = nullptr;  // epilogue path: the unscaled product [M, N]
  size_t f32_elems = 0;
  std::map<std::tuple<int, int64_t, int64_t, Fp8GemmPath>, std::unique_ptr<Plan>> plans;
  Fp8GemmPath last = Fp8GemmPath::none;

  ~Impl() {
    plans.clear();
    if (f32_out) cudaFree(f32_out);
    if (workspace) cudaFree(workspace);
    if (lt) cublasLtDestroy(lt);
  }

  // D (column-major n x m) = op(A) B with A the column-major k x n weight (op T) and B the
  // column-major k x m activations: the TN layout FP8 kernels need.
  Plan& plan(int m, int64_t n, int64_t k, Fp8GemmPath path) {
    auto& slot = plans[{m, n, k, path}];
    if (slot) return *slot;
    slot = std::make_unique<Plan>();
    Plan& p = *slot;
    AO_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    set_attr(p.op, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
    set_attr(p.op, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
    set_attr(p.op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, static_cast<int8_t>(opt.fast_accum ? 1 : 0));
    if (path == Fp8GemmPath::outer_vector_scales) {
      const auto mode = static_cast<int32_t>(CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F);
      set_attr(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, mode);
      set_attr(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, mode);
    }
    const cudaDataType_t out_type = path == Fp8GemmPath::epilogue_scales ? CUDA_R_32F : CUDA_R_16BF;
    AO_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_8F_E4M3, k, n, k));
    AO_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_8F_E4M3, k, m, k));
    AO_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, out_type, n, m, n));
    cublasLtMatmulPreference_t pref = nullptr;
    AO_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = opt.workspace_bytes;
    AO_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    cublasLtMatmulHeuristicResult_t result{};
    int count = 0;
    // An unsupported combination (scale mode, GPU without FP8) answers NOT_SUPPORTED or
    // INVALID_VALUE here: recorded, and the caller tries the next path.
    p.heuristic_status =
        cublasLtMatmulAlgoGetHeuristic(lt, p.op, p.a, p.b, p.d, p.d, pref, 1, &result, &count);
    cublasLtMatmulPreferenceDestroy(pref);
    p.found = p.heuristic_status == CUBLAS_STATUS_SUCCESS && count > 0;
    if (p.found) p.algo = result.algo;
    return p;
  }

  float* f32_buffer(size_t elems) {
    if (elems > f32_elems) {
      if (f32_out) AO_CUDA_CHECK(cudaFree(f32_out));
      f32_out = nullptr;
      AO_CUDA_CHECK(cudaMalloc(&f32_out, elems * sizeof(float)));
      f32_elems = elems;
    }
    return f32_out;
  }
};

Fp8Gemm::Fp8Gemm(const Fp8GemmOptions& options) : impl_(std::make_unique<Impl>()) {
  impl_->opt = options;
  AO_CUBLAS_CHECK(cublasLtCreate(&impl_->lt));
  AO_CUDA_CHECK(cudaMalloc(&impl_->workspace, options.workspace_bytes));
}

Fp8Gemm::~Fp8Gemm() = default;

Fp8GemmPath Fp8Gemm::last_path() const { return impl_->last; }

void Fp8Gemm::run(const DeviceWeight& w, const uint8_t* qa, const float* a_scale, int m,
                  bool per_tensor, uint16_t* y, cudaStream_t s) {
  AO_CHECK(w.format == WeightFormat::fp8, "Fp8Gemm: the weight is not fp8");
  AO_CHECK(!per_tensor || w.per_tensor_scale,
           "Fp8Gemm: scalar scales need a per-tensor weight (its rows have different scales)");
  AO_CHECK(m >= 1 && w.n >= 1 && w.k_padded >= 16 && w.k_padded % 16 == 0,
           "Fp8Gemm: needs M, N >= 1 and a padded K that is a multiple of 16 (M {}, N {}, Kp {})",
           m, w.n, w.k_padded);
  Impl& e = *impl_;
  const int64_t n = w.n, k = w.k_padded;
  Fp8GemmPath path = per_tensor ? Fp8GemmPath::scalar_scales : Fp8GemmPath::outer_vector_scales;
  Plan* p = e.opt.force_epilogue ? nullptr : &e.plan(m, n, k, path);
  if (!p || !p->found) {
    const cublasStatus_t first = p ? p->heuristic_status : CUBLAS_STATUS_SUCCESS;
    path = Fp8GemmPath::epilogue_scales;
    p = &e.plan(m, n, k, path);
    AO_CHECK(p->found,
             "Fp8Gemm: cuBLASLt has no FP8 e4m3 GEMM for M {}, N {}, K {} on this GPU (needs "
             "compute capability 8.9+; heuristic status {} / {})",
             m, n, k, cublasGetStatusString(first), cublasGetStatusString(p->heuristic_status));
  }
  const float alpha = 1.f, beta = 0.f;
  void* out = y;
  if (path == Fp8GemmPath::epilogue_scales) {
    out = e.f32_buffer(static_cast<size_t>(m) * n);
  } else {
    set_attr(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, static_cast<const void*>(w.scale));
    set_attr(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, static_cast<const void*>(a_scale));
  }
  AO_CUBLAS_CHECK(cublasLtMatmul(e.lt, p->op, &alpha, w.data, p->a, qa, p->b, &beta, out, p->d, out,
                                 p->d, &p->algo, e.workspace, e.opt.workspace_bytes, s));
  if (path == Fp8GemmPath::epilogue_scales)
    apply_outer_scales(static_cast<const float*>(out), m, n, a_scale,
                       static_cast<const float*>(w.scale), y, s);
  e.last = path;
}

}  // namespace ao::cuda
