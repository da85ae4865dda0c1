// What a GRBL or Prior ProScan controller sends (hw/serial/replies.cpp).
// The input is split into lines at CR and LF, as the controllers' I/O thread
// does, and every line goes through both protocols' parsers.
// Contract: positions are finite numbers; an error or alarm code is the
// number written in the line (or 0 when it is not a number in int range,
// which matches no documented code); a resolution is finite and above 0; a
// status report's state is the text before the first '|'.
#include "fuzz_util.h"
#include "serial/replies.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

using namespace livemicro::hw::serial;

namespace {

void
check_axes (const std::optional<Axes> &a, const std::string &line)
{
  if (!a)
    return;
  FUZZ_CHECK (a->count == 2 || a->count == 3, line);
  for (int k = 0; k < a->count; k++)
    FUZZ_CHECK (std::isfinite (a->v[k]), "not a finite position: " + line);
}

// The code as the line writes it: a decimal integer (optional sign) after
// the prefix, nothing else but trailing text; 0 when there is none or it
// does not fit an int.
int
written_code (const std::string &line, size_t prefix)
{
  const char *s = line.c_str () + std::min (prefix, line.size ());
  char *end = nullptr;
  errno = 0;
  long long v = std::strtoll (s, &end, 10);
  if (end == s || errno == ERANGE || v < INT32_MIN || v > INT32_MAX)
    return 0;
  return (int)v;
}

void
one_line (const std::string &line)
{
  // --- GRBL
  grbl::Reply r = grbl::classify_reply (line);
  if (r.kind == grbl::ReplyKind::kError || r.kind == grbl::ReplyKind::kAlarm)
    FUZZ_CHECK (r.code == written_code (line, 6), "code " + std::to_string (r.code) + " from '" + line + "'");
  if (line.rfind ("<", 0) == 0) {
    FUZZ_CHECK (r.kind == grbl::ReplyKind::kStatus, line);
    std::optional<grbl::StatusReport> st = grbl::parse_status_report (line);
    if (st) {
      FUZZ_CHECK (st->state.find ('|') == std::string::npos && st->state.find ('>') == std::string::npos,
                  "state '" + st->state + "' from '" + line + "'");
      check_axes (st->mpos, line);
      check_axes (st->wpos, line);
      check_axes (st->wco, line);
    }
  }
  check_axes (parse_axes (line), line);

  // --- ProScan
  if (proscan::is_error (line)) {
    FUZZ_CHECK (line[0] == 'E', line);
    FUZZ_CHECK (proscan::error_code (line) == written_code (line, 2),
                "code " + std::to_string (proscan::error_code (line)) + " from '" + line + "'");
    FUZZ_CHECK (!proscan::parse_resolution (line), "an error is no resolution");
  }
  // Motion bits: the number written, when it is one in [0, INT_MAX].
  std::optional<int> bits = proscan::motion_bits (line);
  char *end = nullptr;
  errno = 0;
  long long v = std::strtoll (line.c_str (), &end, 10);
  bool number = end != line.c_str () && errno != ERANGE && v >= 0 && v <= INT32_MAX;
  FUZZ_CHECK (bits.has_value () == number && (!bits || *bits == v), "bits from '" + line + "'");
  if (std::optional<double> res = proscan::parse_resolution (line))
    FUZZ_CHECK (std::isfinite (*res) && *res > 0,
                "resolution " + std::to_string (*res) + " from '" + line + "'");
}

} // namespace

extern "C" int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  // Lines as MotionController::drain_lines cuts them: at CR or LF, empty
  // lines skipped.
  std::string rx = livemicro::fuzz::text (data, size);
  size_t pos = 0;
  while (pos < rx.size ()) {
    size_t eol = rx.find_first_of ("\r\n", pos);
    if (eol == std::string::npos)
      eol = rx.size (); // the rest, as if a newline followed
    std::string line = rx.substr (pos, eol - pos);
    pos = eol + 1;
    if (!line.empty ())
      one_line (line);
  }
  return 0;
}
