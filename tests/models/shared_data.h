// Locates ../shared/data (or $AO_SHARED/data) for tests that use real reference files.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace ao::testing {

// "" when the folder is absent.
inline std::string shared_data_dir() {
  namespace fs = std::filesystem;
  if (const char* env = std::getenv("AO_SHARED")) {
    if (fs::exists(fs::path(env) / "data")) return (fs::path(env) / "data").string();
  }
  const fs::path p = fs::path(AO_SOURCE_DIR) / ".." / "shared" / "data";
  return fs::exists(p) ? p.string() : "";
}

inline std::string stories260k_dir() {
  const std::string d = shared_data_dir();
  const std::string p = d + "/models/stories260K";
  return !d.empty() && std::filesystem::exists(p + "/stories260K.bin") ? p : "";
}

}  // namespace ao::testing

#define AO_REQUIRE_STORIES260K(dir)                                                                   \
  const std::string dir = ::ao::testing::stories260k_dir();                                          \
  if (dir.empty()) GTEST_SKIP() << "stories260K not found: set AO_SHARED to a folder holding data/ " \
                                   "(expected ../shared/data/models/stories260K next to the project)"
