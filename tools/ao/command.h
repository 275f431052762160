// Subcommand registry of the `ao` tool. Each cmd_*.cpp registers itself with
//   static const bool registered = ao::cli::register_command({"name", "help", order, setup});
// where setup(sub) adds options to the CLI11 subcommand and returns the function to run.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace ao::cli {

using RunFn = std::function<int()>;

struct Command {
  std::string name;
  std::string help;
  int order;  // position in `ao --help`
  std::function<RunFn(CLI::App* sub)> setup;
};

bool register_command(Command c);
std::vector<Command>& commands();

}  // namespace ao::cli
