// Helpers shared by the tests: where the shared data and the ao binary are, temp folders,
// running a command and capturing its output and exit status.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

namespace ao::test {

// The folder holding ../shared/data (or $AO_SHARED/data).
inline std::string shared_data_dir() {
  if (const char* env = std::getenv("AO_SHARED")) return std::string(env) + "/data";
  return std::string(AO_SOURCE_DIR) + "/../shared/data";
}

inline std::string stories260k_dir() { return shared_data_dir() + "/models/stories260K"; }

#define AO_REQUIRE_SHARED_DATA()                                                            \
  do {                                                                                      \
    if (!std::filesystem::exists(::ao::test::stories260k_dir() + "/stories260K.bin"))       \
      GTEST_SKIP() << "shared data not found at " << ::ao::test::shared_data_dir()          \
                   << " (set AO_SHARED to the folder that holds data/)";                    \
  } while (0)

inline std::string fixtures_dir() { return std::string(AO_SOURCE_DIR) + "/tests/fixtures"; }

inline std::string ao_exe() {
  if (const char* env = std::getenv("AO_EXE")) return env;
  return std::string(AO_BINARY_DIR) + "/ao";
}

// A fresh temporary folder removed at the end of the scope.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("ao_test_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

struct RunResult {
  int exit_code = -1;  // -1 if killed by a signal
  int signal = 0;
  std::string out;     // stdout and stderr together
};

inline RunResult run_command(const std::string& cmd) {
  RunResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  return r;
}

inline RunResult run_ao(const std::string& args) { return run_command(ao_exe() + " " + args); }

}  // namespace ao::test
