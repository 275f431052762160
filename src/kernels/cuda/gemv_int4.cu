// GEMV kernels for int4 weights (see gemv_impl.cuh).
#include "gemv_impl.cuh"

AO_KERNEL_TRACE_TU(gemv_int4)

namespace ao::cuda {
template void gemv_format<WeightFormat::int4>(const DeviceWeight&, const GemvArgs&, cudaStream_t);
int64_t gemv_padded_k(WeightFormat f, int64_t n, int64_t k, int group_size) {
  const int64_t al = gemv_k_align(f);
  const int64_t kp = (k + al - 1) / al * al;
  if (f != WeightFormat::int4 || (group_size != 128 && group_size != 256) ||
      !gemv_tuning().tma_int4_pad_256)
    return kp;
  DeviceWeight w;
  w.format = f;
  w.n = n;
  w.k = k;
  w.k_padded = (k + 255) / 256 * 256;
  w.group_size = group_size;
  if (w.k_padded == kp) return kp;
  for (int m = 1; m <= 8; ++m)
    if (tma_plan<WeightFormat::int4>(w, m).chunk == 0) return kp;
  return w.k_padded;
}
bool gemv_takes_int4_digits(const DeviceWeight& w) {
  return w.format == WeightFormat::int4 && takes_int4_digits(w, tma_plan<WeightFormat::int4>(w, 1));
}
}  // namespace ao::cuda
