#include "ao/core/log.h"

#include <atomic>

namespace ao {
namespace {
std::atomic<LogLevel> g_level{LogLevel::info};
}
void set_log_level(LogLevel l) { g_level = l; }
LogLevel log_level() { return g_level; }
}  // namespace ao
