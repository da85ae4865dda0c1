// The lines GRBL and Prior ProScan controllers send, parsed without a port:
// pure functions used by grbl.cpp and proscan.cpp (and fuzzed on their own,
// tests/fuzz/fuzz_serial_replies.cpp).  A line arrives without its CR/LF.
#pragma once

#include <optional>
#include <string>

namespace livemicro::hw::serial {

// Axis values of a position report: x, y and, when given, z.
struct Axes {
  double v[3] = {0, 0, 0};
  int count = 0; // 2 or 3
};

// "x,y" or "x,y,z" (as GRBL's MPos:/WPos:/WCO: fields and ProScan's P
// reply): nullopt unless at least x and y are finite numbers.
std::optional<Axes> parse_axes (const std::string &text);

namespace grbl {

// A status report <State|MPos:x,y,z|FS:f,s|WCO:x,y,z> (WPos: instead of
// MPos: when $10 asks for it).
struct StatusReport {
  std::string state; // "Idle", "Run", "Hold:0", "Alarm", …
  std::optional<Axes> mpos, wpos, wco;
};
// `line` starts with '<'; nullopt when the report is empty ("<>").
std::optional<StatusReport> parse_status_report (const std::string &line);

enum class ReplyKind {
  kStatus,     // <…>
  kOk,         // ok
  kError,      // error:N
  kAlarm,      // ALARM:N
  kBanner,     // Grbl 1.1h ['$' for help]
  kHomingLock, // [MSG:'$H'|'$X' to unlock]
  kOther,      // [MSG:…], [GC:…], $N=…: not acted upon
};
struct Reply {
  ReplyKind kind = ReplyKind::kOther;
  int code = 0; // N of error:N and ALARM:N; 0 (no such code) when N is not
                // a number that fits an int
};
Reply classify_reply (const std::string &line);

} // namespace grbl

namespace proscan {

// "E,n" (or "E n"): the controller refused the oldest unanswered command.
bool is_error (const std::string &line);
// n of an error line; 0 (no such code) when n is not a number that fits an
// int.
int error_code (const std::string &line);
// The reply to '$': bit 0 X, bit 1 Y, bit 2 Z moving; nullopt when the line
// is not a number in [0, INT_MAX].
std::optional<int> motion_bits (const std::string &line);
// The reply to 'RES,s' / 'RES,z': µm per position unit; nullopt for an
// error or a value that is not finite and above 0.
std::optional<double> parse_resolution (const std::string &line);

} // namespace proscan

} // namespace livemicro::hw::serial
