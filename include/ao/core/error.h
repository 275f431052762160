// ao::Error — the one exception type of the project. Its message names the file, tensor or
// field at fault and what was expected; the CLI prints it and exits non-zero.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace ao {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Thrown for features that are recognised but not available (yet, or in this build).
class NotSupported : public Error {
 public:
  explicit NotSupported(const std::string& what) : Error("not supported yet: " + what) {}
};

template <typename... Args>
[[noreturn]] inline void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace ao

// AO_CHECK(cond, "tensor '{}': expected {} dims, got {}", name, 2, t.dim());
#define AO_CHECK(cond, ...)          \
  do {                               \
    if (!(cond)) ::ao::fail(__VA_ARGS__); \
  } while (0)
