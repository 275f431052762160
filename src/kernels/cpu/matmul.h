// f32 matrix products for Linear layers: y = x W^T with W row-major [N, K] (the PyTorch
// Linear layout). GEMV (one row of x) is memory bound and runs on our own multi-threaded
// AVX2 kernel; GEMM (prefill) goes to OpenBLAS sgemm.
#pragma once

#include <cstdint>

namespace ao::kernels::cpu {

// Obviously correct references (double accumulation), for tests.
void gemv_f32_ref(const float* W, const float* x, float* y, int64_t N, int64_t K);
void gemm_f32_ref(const float* x, const float* W, float* y, int64_t M, int64_t N, int64_t K);

// y[N] = W[N, K] x[K]; multi-threaded over N, AVX2+FMA when the CPU has it.
void gemv_f32(const float* W, const float* x, float* y, int64_t N, int64_t K);
// y[M, N] = x[M, K] W[N, K]^T: gemv_f32 for M == 1, a single-threaded loop for tiny
// products, OpenBLAS sgemm otherwise.
void gemm_f32(const float* x, const float* W, float* y, int64_t M, int64_t N, int64_t K);

// The same with 16-bit float weights (bf16 or f16, as stored in the checkpoint; widened to
// f32 on the fly, so results equal the f32 path up to summation order).
enum class HalfType : uint8_t { bf16, f16 };
void gemv_half_ref(const uint16_t* W, HalfType t, const float* x, float* y, int64_t N, int64_t K);
void gemv_half(const uint16_t* W, HalfType t, const float* x, float* y, int64_t N, int64_t K);
// M > 1: W is widened in blocks of rows into per-thread f32 buffers, then sgemm.
void gemm_half(const float* x, const uint16_t* W, HalfType t, float* y, int64_t M, int64_t N,
               int64_t K);
// dst[i] = float(src[i])
void widen_half(const uint16_t* src, HalfType t, float* dst, int64_t n);

// Dot product of two f32 vectors (AVX2 when available).
float dot_f32(const float* a, const float* b, int64_t n);
// y += a * x
void axpy_f32(float a, const float* x, float* y, int64_t n);

namespace detail {
bool cpu_has_avx2_fma();
// Rows [n0, n1) of the GEMV, single thread.
void gemv_rows_scalar(const float* W, const float* x, float* y, int64_t n0, int64_t n1, int64_t K);
void gemv_rows_avx2(const float* W, const float* x, float* y, int64_t n0, int64_t n1, int64_t K);
float dot_avx2(const float* a, const float* b, int64_t n);
bool cpu_has_f16c();
void gemv_rows_half_scalar(const uint16_t* W, HalfType t, const float* x, float* y, int64_t n0,
                           int64_t n1, int64_t K);
void gemv_rows_half_avx2(const uint16_t* W, HalfType t, const float* x, float* y, int64_t n0,
                         int64_t n1, int64_t K);
void widen_half_avx2(const uint16_t* src, HalfType t, float* dst, int64_t n);
void axpy_avx2(float a, const float* x, float* y, int64_t n);
}  // namespace detail

}  // namespace ao::kernels::cpu
