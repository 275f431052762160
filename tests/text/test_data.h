// Locating the shared reference data for tokenizer tests.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace ao::test {

// <shared>/data: $AO_SHARED/data if AO_SHARED is set, else <source>/../shared/data.
inline std::string shared_data_dir() {
  if (const char* env = std::getenv("AO_SHARED"); env && *env) return std::string(env) + "/data";
  return std::string(AO_SOURCE_DIR) + "/../shared/data";
}

inline std::string shared_data(const std::string& relative) { return shared_data_dir() + "/" + relative; }

}  // namespace ao::test

// Skips the test when a shared data file is absent.
#define AO_REQUIRE_DATA(path)                                                                    \
  do {                                                                                           \
    if (!std::filesystem::exists(path))                                                          \
      GTEST_SKIP() << "reference data not found: " << (path)                                     \
                   << " (set AO_SHARED to the folder holding data/)";                            \
  } while (0)
