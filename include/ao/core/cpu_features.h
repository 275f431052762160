// x86 ISA extensions available at run time (CPUID + OS support), for choosing kernels.
#pragma once

namespace ao {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx2_fma_f16c() const { return avx2 && fma && f16c; }
};

// Detected once; all false on non-x86 machines.
const CpuFeatures& cpu_features();

}  // namespace ao
