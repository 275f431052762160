// Logging to stderr and wall-clock timing.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <cstdio>

namespace ao {

enum class LogLevel { debug, info, warn, error };
void set_log_level(LogLevel l);
LogLevel log_level();

template <typename... Args>
void log(LogLevel l, fmt::format_string<Args...> f, Args&&... args) {
  if (l < log_level()) return;
  static const char* tags[] = {"debug", "info", "warning", "error"};
  fmt::print(stderr, "[{}] {}\n", tags[static_cast<int>(l)], fmt::format(f, std::forward<Args>(args)...));
}
#define AO_WARN(...) ::ao::log(::ao::LogLevel::warn, __VA_ARGS__)
#define AO_INFO(...) ::ao::log(::ao::LogLevel::info, __VA_ARGS__)

class Timer {
 public:
  Timer() : t0_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }
  void reset() { t0_ = std::chrono::steady_clock::now(); }

 private:
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace ao
