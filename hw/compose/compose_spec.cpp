#include "compose_spec.h"

#include <livemicro/hw/error.h>

#include <livemicro/hw/text.h>

#include <cerrno>
#include <cstdlib>
#include <set>
#include <sstream>

namespace livemicro::hw::compose {

std::vector<Objective>
parse_objectives (const std::string &uri, const std::string &text)
{
  std::vector<Objective> out;
  std::set<int> seen;
  std::stringstream ss (text);
  std::string item;
  while (std::getline (ss, item, ',')) {
    Objective o;
    // strtol/strtod, not sscanf: "%d" wraps 4294967306 to 10, and NaN
    // passes `na < 0 || na > 1.6`.
    const char *s = item.c_str (), *stop = s + item.size ();
    char *end = nullptr;
    errno = 0;
    long mag = std::strtol (s, &end, 10);
    bool ok = end != s && *end == ':' && errno == 0;
    double upp = ok ? std::strtod (s = end + 1, &end) : 0;
    ok = ok && end != s;
    double na = 0;
    if (ok && *end == ':') {
      na = std::strtod (s = end + 1, &end);
      ok = end != s;
    }
    if (!ok || end != stop || mag < 1 || mag > 1000 || !(upp > 0 && upp <= 100) || !(na >= 0 && na <= 1.6))
      throw Error (ErrorKind::kOutOfRange, "microscope URI '" + uri + "': objective '" + item
                                               + "' is not MAGNIFICATION:UM_PER_PX[:NA] (e.g. 10:0.69 "
                                                 "or 40:0.17:0.65)");
    if (!seen.insert ((int)mag).second)
      throw Error (ErrorKind::kOutOfRange,
                   "microscope URI '" + uri + "': objective " + std::to_string (mag) + "x is listed twice");
    o.magnification = (int)mag;
    o.um_per_px = upp;
    o.numerical_aperture = na;
    out.push_back (o);
  }
  if (out.empty ())
    throw Error (ErrorKind::kOutOfRange, "microscope URI '" + uri + "': objectives is empty");
  return out;
}

std::string
objectives_text (const std::vector<Objective> &os)
{
  std::string s;
  for (auto &o : os)
    s += (s.empty () ? "" : ", ") + std::to_string (o.magnification) + "x (" + num (o.um_per_px) + " µm/px)";
  return s;
}

ComposeSpec
parse_compose (const MicroscopeUri &uri)
{
  uri.check_keys ({"camera", "stage", "focus", "objectives", "objective"});
  if (!uri.host ().empty () || (!uri.path ().empty () && uri.path () != "/"))
    throw Error (ErrorKind::kUnsupported, "microscope URI '" + uri.text ()
                                              + "': a composition is all in its query: "
                                                "compose:?camera=…&stage=…&objectives=…");
  ComposeSpec spec;
  spec.camera = uri.get_string ("camera", "");
  if (spec.camera.empty ())
    throw Error (ErrorKind::kUnsupported, "microscope URI '" + uri.text ()
                                              + "' has no camera=: a microscope needs one "
                                                "(aravis://DEVICE-ID or v4l2:///dev/videoN)");
  spec.objectives = parse_objectives (uri.text (), uri.get_string ("objectives", "1:1"));
  spec.selected = (int)uri.get_int ("objective", spec.objectives.front ().magnification, 1, 1000);
  bool found = false;
  for (auto &o : spec.objectives)
    found = found || o.magnification == spec.selected;
  if (!found)
    throw Error (ErrorKind::kOutOfRange,
                 "microscope URI '" + uri.text () + "': objective=" + std::to_string (spec.selected)
                     + " is not in objectives (" + objectives_text (spec.objectives) + ")");
  spec.stage = uri.get_string ("stage", "");
  spec.focus = uri.get_string ("focus", "");
  return spec;
}

} // namespace livemicro::hw::compose
