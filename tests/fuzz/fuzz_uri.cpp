// Microscope URIs (hw/uri.cpp), the compose: URI dispatch
// (hw/compose/compose_spec.cpp) and compose_uri (livemicrod's config).
//
// The input is tried twice:
// 1. as a URI: MicroscopeUri throws hw::Error(kUnsupported) or parses; its
//    typed getters return a value inside the range asked for or throw
//    Error(kOutOfRange); a compose: URI gives a ComposeSpec whose
//    objectives follow the documented rules, or an hw::Error;
// 2. as the parts of a configured microscope, one per line: camera, stage,
//    focus, objectives ("MAG UM_PER_PX NA;…"), objective.  What the config
//    file accepts, compose_uri turns into a URI that parse_compose reads back
//    to the same parts.
#include "compose/compose_spec.h"
#include "config.h"
#include "fuzz_util.h"

#include <livemicro/hw/error.h>
#include <livemicro/hw/uri.h>

#include <glib.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>

using livemicro::fuzz::text;
using livemicro::hw::Error;
using livemicro::hw::ErrorKind;
using livemicro::hw::MicroscopeUri;
using livemicro::hw::compose::ComposeSpec;
using livemicro::hw::compose::parse_compose;
using livemicro::orchestrator::compose_uri;
using livemicro::orchestrator::MicroscopeConfig;
using livemicro::orchestrator::ObjectiveConfig;

namespace {

// Every key a backend reads, with the ranges the backends use.
struct DoubleKey {
  const char *key;
  double min, max;
};
const DoubleKey kDoubleKeys[] = {
    {"mpp", 1e-3, 1000},          {"pixel_pitch_um", 0.5, 50},
    {"adapter", 0.1, 4},          {"noise", 0, 50},
    {"light", 0.05, 4},           {"vignetting", 0, 0.9},
    {"stage_speed_um_s", 1, 1e5}, {"x_um_per_unit", -1e6, 1e6},
    {"x_offset_um", -1e7, 1e7},   {"exposure_us", 0, 1e7},
    {"gain", -1e3, 1e3},          {"frame_rate", 0, 1e3},
};
struct IntKey {
  const char *key;
  int64_t min, max;
};
const IntKey kIntKeys[] = {
    {"seed", 0, INT64_MAX}, {"cache_mb", 16, 16384}, {"prefetch", 0, 1},        {"baud", 9600, 1000000},
    {"objective", 1, 1000}, {"width", 1, 65535},     {"timeout_ms", 1, 600000}, {"home", 0, 1},
};

void
check_error (const Error &e, ErrorKind kind, const std::string &what)
{
  FUZZ_CHECK (e.kind () == kind, what + ": kind " + std::to_string ((int)e.kind ()) + ": " + e.what ());
  FUZZ_CHECK (std::strlen (e.what ()) > 0, what + ": empty message");
}

void
check_spec (const ComposeSpec &spec)
{
  FUZZ_CHECK (!spec.camera.empty (), "no camera");
  FUZZ_CHECK (!spec.objectives.empty (), "no objective");
  std::set<int> mags;
  bool selected = false;
  for (const auto &o : spec.objectives) {
    FUZZ_CHECK (o.magnification >= 1 && o.magnification <= 1000, std::to_string (o.magnification));
    FUZZ_CHECK (mags.insert (o.magnification).second, "magnification twice");
    FUZZ_CHECK (o.um_per_px > 0 && o.um_per_px <= 100, std::to_string (o.um_per_px));
    FUZZ_CHECK (o.numerical_aperture >= 0 && o.numerical_aperture <= 1.6,
                std::to_string (o.numerical_aperture));
    selected = selected || o.magnification == spec.selected;
  }
  FUZZ_CHECK (selected, "selected objective not mounted");
}

void
as_uri (const std::string &s)
{
  std::unique_ptr<MicroscopeUri> uri;
  try {
    uri = std::make_unique<MicroscopeUri> (s);
  } catch (const Error &e) {
    check_error (e, ErrorKind::kUnsupported, "MicroscopeUri");
    return;
  }
  FUZZ_CHECK (uri->text () == s, "text");
  FUZZ_CHECK (!uri->scheme ().empty (), "no scheme");
  for (const auto &k : kDoubleKeys) {
    try {
      double v = uri->get_double (k.key, k.min, k.min, k.max);
      FUZZ_CHECK (std::isfinite (v) && v >= k.min && v <= k.max,
                  std::string (k.key) + "=" + std::to_string (v));
      FUZZ_CHECK (uri->has (k.key) || v == k.min, "fallback");
    } catch (const Error &e) {
      check_error (e, ErrorKind::kOutOfRange, k.key);
      FUZZ_CHECK (uri->has (k.key), "error for a missing key");
    }
  }
  for (const auto &k : kIntKeys) {
    try {
      int64_t v = uri->get_int (k.key, k.min, k.min, k.max);
      FUZZ_CHECK (v >= k.min && v <= k.max, std::string (k.key) + "=" + std::to_string (v));
    } catch (const Error &e) {
      check_error (e, ErrorKind::kOutOfRange, k.key);
    }
  }
  uri->get_string ("camera", "");
  try {
    uri->check_keys ({"seed", "mpp", "camera", "stage", "focus"});
  } catch (const Error &e) {
    check_error (e, ErrorKind::kUnsupported, "check_keys");
  }
  if (uri->scheme () != "compose")
    return;
  try {
    ComposeSpec spec = parse_compose (*uri);
    check_spec (spec);
    // Each magnification is the number written, not a wrapped one.
    std::stringstream ss (uri->get_string ("objectives", "1:1"));
    std::string item;
    for (size_t i = 0; std::getline (ss, item, ','); i++) {
      long long written = std::strtoll (item.c_str (), nullptr, 10);
      FUZZ_CHECK (i < spec.objectives.size () && written == spec.objectives[i].magnification,
                  "objective '" + item + "' read as "
                      + std::to_string (i < spec.objectives.size () ? spec.objectives[i].magnification : -1));
    }
    // The parts are URIs of their own.
    for (const std::string *part : {&spec.camera, &spec.stage, &spec.focus})
      if (!part->empty ())
        try {
          MicroscopeUri p (*part);
        } catch (const Error &e) {
          check_error (e, ErrorKind::kUnsupported, "part " + *part);
        }
  } catch (const Error &e) {
    FUZZ_CHECK (e.kind () == ErrorKind::kUnsupported || e.kind () == ErrorKind::kOutOfRange,
                std::string ("parse_compose: ") + e.what ());
    FUZZ_CHECK (std::strlen (e.what ()) > 0, "empty message");
  }
}

// What a JSON string of the config file can hold: UTF-8, no NUL.
std::string
config_string (const std::string &s)
{
  std::string t = s.substr (0, s.find ('\0'));
  return g_utf8_validate (t.data (), (gssize)t.size (), nullptr) ? t : "";
}

void
as_parts (const std::string &s)
{
  std::vector<std::string> lines;
  std::stringstream ss (s);
  std::string line;
  while (lines.size () < 5 && std::getline (ss, line))
    lines.push_back (config_string (line));
  lines.resize (5);
  MicroscopeConfig m;
  m.camera = lines[0];
  m.stage = lines[1];
  m.focus = lines[2];
  if (m.camera.empty ())
    return; // the config file refuses parts without a camera
  // Objectives as the config file accepts them: magnification 1–1000 once,
  // µm/px in [1e-6, 100], NA in [0, 1.6].
  std::stringstream os (lines[3]);
  std::string item;
  std::set<int> mags;
  while (std::getline (os, item, ';')) {
    ObjectiveConfig o;
    char *end = nullptr;
    long mag = std::strtol (item.c_str (), &end, 10);
    o.um_per_px = std::strtod (end, &end);
    o.numerical_aperture = std::strtod (end, &end);
    o.magnification = (int)mag;
    if (mag < 1 || mag > 1000 || mags.count ((int)mag) || !(o.um_per_px >= 1e-6 && o.um_per_px <= 100)
        || !(o.numerical_aperture >= 0 && o.numerical_aperture <= 1.6))
      continue;
    mags.insert ((int)mag);
    m.objectives.push_back (o);
  }
  long sel = std::atol (lines[4].c_str ());
  if (mags.count ((int)sel))
    m.objective = (int)sel;

  std::string text = compose_uri (m);
  ComposeSpec spec;
  try {
    spec = parse_compose (MicroscopeUri (text));
  } catch (const Error &e) {
    FUZZ_CHECK (false, "compose_uri gave '" + text + "', which is refused: " + e.what ());
  }
  check_spec (spec);
  FUZZ_CHECK (spec.camera == m.camera,
              "camera '" + m.camera + "' came back as '" + spec.camera + "' from " + text);
  FUZZ_CHECK (spec.stage == m.stage,
              "stage '" + m.stage + "' came back as '" + spec.stage + "' from " + text);
  FUZZ_CHECK (spec.focus == m.focus,
              "focus '" + m.focus + "' came back as '" + spec.focus + "' from " + text);
  if (m.objectives.empty ()) {
    FUZZ_CHECK (spec.objectives.size () == 1 && spec.objectives[0].magnification == 1,
                "default objective " + text);
    return;
  }
  FUZZ_CHECK (spec.objectives.size () == m.objectives.size (), text);
  for (size_t i = 0; i < m.objectives.size (); i++) {
    const auto &a = m.objectives[i];
    const auto &b = spec.objectives[i];
    FUZZ_CHECK (a.magnification == b.magnification, text);
    // compose_uri writes µm/px with 6 and NA with 4 significant digits.
    FUZZ_CHECK (std::abs (a.um_per_px - b.um_per_px) <= 1e-5 * a.um_per_px, text);
    FUZZ_CHECK (std::abs (a.numerical_aperture - b.numerical_aperture) <= 1e-3 * a.numerical_aperture, text);
  }
  FUZZ_CHECK (spec.selected == (m.objective ? m.objective : m.objectives.front ().magnification),
              "selected " + std::to_string (spec.selected) + " from " + text);
}

} // namespace

extern "C" int
LLVMFuzzerInitialize (int *, char ***)
{
  g_log_set_always_fatal (
      static_cast<GLogLevelFlags> (G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING));
  return 0;
}

extern "C" int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  std::string s = text (data, size);
  as_uri (s);
  as_parts (s);
  return 0;
}
