// The `ao` command: thin subcommands over the library. Errors from the library are printed
// as "error: <message>" and exit with status 1; usage errors exit with status 2.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "ao/core/error.h"
#include "ao/core/log.h"
#include "ao/core/parallel.h"
#include "command.h"

namespace ao::cli {

std::vector<Command>& commands() {
  static std::vector<Command> cmds;
  return cmds;
}

bool register_command(Command c) {
  commands().push_back(std::move(c));
  return true;
}

}  // namespace ao::cli

int main(int argc, char** argv) {
  // OpenMP workers sleep between parallel regions instead of spinning: on a loaded or small
  // machine spinning workers starve each other (decode measured 3-20x slower on 2 busy cores).
  // Set OMP_WAIT_POLICY=active to override.
  setenv("OMP_WAIT_POLICY", "passive", /*overwrite=*/0);
  CLI::App app{"ao — native model optimization: quantize, evaluate and serve LLMs on CPU and GPU"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ao 0.1.0");
  int threads = 0;
  bool verbose = false;
  app.add_option("-t,--threads", threads, "CPU threads (default: all cores)")->check(CLI::NonNegativeNumber);
  app.add_flag("-v,--verbose", verbose, "debug logging");

  auto& cmds = ao::cli::commands();
  std::sort(cmds.begin(), cmds.end(), [](auto& a, auto& b) { return a.order < b.order; });
  std::vector<std::pair<CLI::App*, ao::cli::RunFn>> runs;
  for (auto& c : cmds) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    runs.emplace_back(sub, c.setup(sub));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (verbose) ao::set_log_level(ao::LogLevel::debug);
  if (threads > 0) ao::set_num_threads(threads);
  try {
    for (auto& [sub, run] : runs)
      if (sub->parsed()) return run();
  } catch (const ao::Error& e) {
    std::fflush(stdout);
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
