#include "replies.h"

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <vector>

namespace livemicro::hw::serial {

namespace {

bool
starts_with (const std::string &s, const char *prefix)
{
  return s.rfind (prefix, 0) == 0;
}

// The integer at the start of `s` (after spaces, with its sign, trailing
// text ignored) as atoi reads it — but nullopt rather than a wrapped value
// when it does not fit an int (atoi("4294967298") is 2), or when there is
// no number at all.
std::optional<int>
leading_int (const char *s)
{
  char *end = nullptr;
  errno = 0;
  long long v = std::strtoll (s, &end, 10);
  if (end == s || errno == ERANGE || v < INT_MIN || v > INT_MAX)
    return std::nullopt;
  return (int)v;
}

} // namespace

std::optional<Axes>
parse_axes (const std::string &text)
{
  Axes a;
  a.count = std::sscanf (text.c_str (), "%lf,%lf,%lf", &a.v[0], &a.v[1], &a.v[2]);
  if (a.count < 2)
    return std::nullopt;
  // %lf also reads "nan", "inf" and 1e999: a garbled line must not become
  // a position.
  for (int k = 0; k < a.count; k++)
    if (!std::isfinite (a.v[k]))
      return std::nullopt;
  return a;
}

namespace grbl {

std::optional<StatusReport>
parse_status_report (const std::string &line)
{
  size_t close = line.find ('>');
  std::string body = line.substr (1, close == std::string::npos ? std::string::npos : close - 1);
  std::vector<std::string> fields;
  std::stringstream ss (body);
  std::string f;
  while (std::getline (ss, f, '|'))
    fields.push_back (f);
  if (fields.empty ())
    return std::nullopt;
  StatusReport r;
  r.state = fields[0];
  for (size_t i = 1; i < fields.size (); i++) {
    if (starts_with (fields[i], "MPos:"))
      r.mpos = parse_axes (fields[i].substr (5));
    else if (starts_with (fields[i], "WPos:"))
      r.wpos = parse_axes (fields[i].substr (5));
    else if (starts_with (fields[i], "WCO:"))
      r.wco = parse_axes (fields[i].substr (4));
  }
  return r;
}

Reply
classify_reply (const std::string &line)
{
  Reply r;
  if (starts_with (line, "<"))
    r.kind = ReplyKind::kStatus;
  else if (line == "ok")
    r.kind = ReplyKind::kOk;
  else if (starts_with (line, "error:")) {
    r.kind = ReplyKind::kError;
    r.code = leading_int (line.c_str () + 6).value_or (0);
  } else if (starts_with (line, "ALARM:")) {
    r.kind = ReplyKind::kAlarm;
    r.code = leading_int (line.c_str () + 6).value_or (0);
  } else if (starts_with (line, "Grbl "))
    r.kind = ReplyKind::kBanner;
  else if (line.find ("'$H'|'$X' to unlock") != std::string::npos)
    r.kind = ReplyKind::kHomingLock;
  return r;
}

} // namespace grbl

namespace proscan {

bool
is_error (const std::string &s)
{
  return s.size () >= 3 && s[0] == 'E' && (s[1] == ',' || s[1] == ' ');
}

int
error_code (const std::string &line)
{
  return line.size () >= 2 ? leading_int (line.c_str () + 2).value_or (0) : 0;
}

std::optional<int>
motion_bits (const std::string &line)
{
  std::optional<int> bits = leading_int (line.c_str ());
  if (bits && *bits < 0)
    return std::nullopt;
  return bits;
}

std::optional<double>
parse_resolution (const std::string &line)
{
  if (is_error (line))
    return std::nullopt;
  double v = std::atof (line.c_str ());
  if (!(v > 0 && std::isfinite (v)))
    return std::nullopt;
  return v;
}

} // namespace proscan

} // namespace livemicro::hw::serial
