#include "ao/core/parallel.h"

#include <omp.h>

#include <algorithm>

namespace ao {

int num_threads() { return omp_get_max_threads(); }

void set_num_threads(int n) { omp_set_num_threads(n > 0 ? n : omp_get_num_procs()); }

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t n = end - begin;
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t max_chunks = (n + grain - 1) / grain;
  const int64_t chunks = std::min<int64_t>(max_chunks, num_threads());
  if (chunks <= 1 || omp_in_parallel()) {
    fn(begin, end);
    return;
  }
  const int64_t per = (n + chunks - 1) / chunks;
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(chunks))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t b = begin + c * per;
    const int64_t e = std::min(end, b + per);
    if (b < e) fn(b, e);
  }
}

}  // namespace ao
