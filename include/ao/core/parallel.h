// Threading: OpenMP underneath. parallel_for splits [begin, end) into chunks of at least
// `grain` iterations; fn(chunk_begin, chunk_end) runs on the worker threads.
#pragma once

#include <cstdint>
#include <functional>

namespace ao {

int num_threads();
void set_num_threads(int n);  // n <= 0: all hardware threads
void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn);

}  // namespace ao
