// Locating the shared reference data in the text and GGUF tests.
#pragma once

#include <filesystem>
#include <string>

#include "test_util.h"

namespace ao::test {

inline std::string shared_data(const std::string& relative) {
  return shared_data_dir() + "/" + relative;
}

}  // namespace ao::test

// Skips the test when a shared data file is absent.
#define AO_REQUIRE_DATA(path)                                         \
  do {                                                                \
    if (!std::filesystem::exists(path))                               \
      GTEST_SKIP() << "reference data not found: " << (path)          \
                   << " (set AO_SHARED to the folder holding data/)"; \
  } while (0)
