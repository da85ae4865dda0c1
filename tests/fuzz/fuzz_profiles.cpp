// The view profiles file (gst-plugins/privacy/profiles.cpp).
// Contract: parse_profiles either returns a set that satisfies docs/privacy.md's
// rules — and that, written back as JSON, parses to the same set — or
// throws ProfileError, and only that, whose message starts with the file.
#include "fuzz_util.h"

#include "livemicro/privacy/profiles.h"

#include <json-glib/json-glib.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <set>

using livemicro::fuzz::text;
using namespace livemicro::privacy;

namespace {

const char kSource[] = "fuzz-profiles.json";

// A region read from rect_um [x, y, width, height] (its four corners in
// that order) is written back as one: as a polygon it could be refused
// (corners beyond ±1e9, or an area the polygon check calls none).
std::optional<cv::Rect2d>
as_rect (const SlideRegion &r)
{
  const auto &p = r.polygon_um;
  if (p.size () != 4 || p[1].y != p[0].y || p[2].x != p[1].x || p[3].x != p[0].x || p[3].y != p[2].y)
    return std::nullopt;
  double w = std::min (p[1].x - p[0].x, 1e9), h = std::min (p[3].y - p[0].y, 1e9);
  if (!(w > 0 && h > 0))
    return std::nullopt;
  return cv::Rect2d (p[0].x, p[0].y, w, h);
}

void
add_strings (JsonBuilder *b, const char *name, const std::vector<std::string> &list)
{
  json_builder_set_member_name (b, name);
  json_builder_begin_array (b);
  for (const auto &s : list)
    json_builder_add_string_value (b, s.c_str ());
  json_builder_end_array (b);
}

// The set as a profiles file (a rectangle comes back as its polygon).
std::string
write (const ProfileSet &set)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "version");
  json_builder_add_int_value (b, 1);
  json_builder_set_member_name (b, "regions");
  json_builder_begin_array (b);
  for (const SlideRegion &r : set.regions) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "name");
    json_builder_add_string_value (b, r.name.c_str ());
    json_builder_set_member_name (b, "class");
    json_builder_add_string_value (b, region_class_name (r.region_class));
    if (std::optional<cv::Rect2d> rect = as_rect (r)) {
      json_builder_set_member_name (b, "rect_um");
      json_builder_begin_array (b);
      for (double v : {rect->x, rect->y, rect->width, rect->height})
        json_builder_add_double_value (b, v);
      json_builder_end_array (b);
    } else {
      json_builder_set_member_name (b, "polygon_um");
      json_builder_begin_array (b);
      for (const auto &p : r.polygon_um) {
        json_builder_begin_array (b);
        json_builder_add_double_value (b, p.x);
        json_builder_add_double_value (b, p.y);
        json_builder_end_array (b);
      }
      json_builder_end_array (b);
    }
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_set_member_name (b, "profiles");
  json_builder_begin_array (b);
  for (const Profile &p : set.profiles) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "name");
    json_builder_add_string_value (b, p.name.c_str ());
    json_builder_set_member_name (b, "description");
    json_builder_add_string_value (b, p.description.c_str ());
    add_strings (b, "regions", p.regions);
    std::vector<std::string> detect;
    for (RegionClass c : p.detect)
      detect.push_back (region_class_name (c));
    add_strings (b, "detect", detect);
    add_strings (b, "strip_metas", p.strip_metas);
    json_builder_set_member_name (b, "stage_meta");
    json_builder_add_string_value (b, stage_meta_policy_name (p.stage_meta));
    add_strings (b, "strip_tags", p.strip_tags);
    add_strings (b, "keep_tags", p.keep_tags);
    json_builder_set_member_name (b, "may_control");
    json_builder_add_boolean_value (b, p.may_control);
    add_strings (b, "overlays", p.overlays);
    if (!p.extensions_json.empty ()) {
      g_autoptr (GError) error = nullptr;
      JsonNode *ext = json_from_string (p.extensions_json.c_str (), &error);
      FUZZ_CHECK (ext && JSON_NODE_HOLDS_OBJECT (ext),
                  "extensions_json is not a JSON object: '" + p.extensions_json + "' ("
                      + (error ? error->message : "not an object") + ")");
      json_builder_set_member_name (b, "extensions");
      json_builder_add_value (b, ext); // takes it
    }
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  g_autofree gchar *out = json_to_string (root, TRUE);
  return out;
}

// Exactly the same points; a rectangle's far corner x + width may differ by
// the rounding of width = corner − x.
bool
same_points (const std::vector<cv::Point2d> &a, const std::vector<cv::Point2d> &b, double tolerance)
{
  if (a.size () != b.size ())
    return false;
  for (size_t i = 0; i < a.size (); i++)
    if (!(std::abs (a[i].x - b[i].x) <= tolerance && std::abs (a[i].y - b[i].y) <= tolerance))
      return false;
  return true;
}

bool
same (const Profile &a, const Profile &b)
{
  return a.name == b.name && a.description == b.description && a.regions == b.regions && a.detect == b.detect
         && a.strip_metas == b.strip_metas && a.stage_meta == b.stage_meta && a.strip_tags == b.strip_tags
         && a.keep_tags == b.keep_tags && a.may_control == b.may_control && a.overlays == b.overlays
         && a.extensions_json == b.extensions_json;
}

bool
valid_name (const std::string &n)
{
  if (n.empty ())
    return false;
  for (char c : n)
    if (!g_ascii_isalnum (c) && c != '-' && c != '_')
      return false;
  return true;
}

void
check (const ProfileSet &set)
{
  FUZZ_CHECK (set.source == kSource, set.source);
  std::set<std::string> region_names;
  for (const SlideRegion &r : set.regions) {
    FUZZ_CHECK (!r.name.empty (), "region without a name");
    FUZZ_CHECK (region_names.insert (r.name).second, "region twice: " + r.name);
    FUZZ_CHECK (r.polygon_um.size () >= 3, r.name + ": < 3 points");
    // Every number of the file is within ±1e9 µm; a rectangle's far corner
    // (x + width) within ±2e9.
    for (const auto &p : r.polygon_um)
      FUZZ_CHECK (std::isfinite (p.x) && std::isfinite (p.y) && std::abs (p.x) <= 2e9
                      && std::abs (p.y) <= 2e9,
                  r.name + ": point out of range");
    cv::Rect2d bb = r.bounds_um ();
    FUZZ_CHECK (bb.width >= 0 && bb.height >= 0, r.name + ": bounds");
  }
  FUZZ_CHECK (!set.profiles.empty (), "no profile");
  std::set<std::string> names;
  for (const Profile &p : set.profiles) {
    FUZZ_CHECK (valid_name (p.name), "profile name '" + p.name + "'");
    FUZZ_CHECK (names.insert (p.name).second, "profile twice: " + p.name);
    FUZZ_CHECK (set.find (p.name) == &p, "find() gives another profile");
    for (const std::string &r : p.regions)
      FUZZ_CHECK (r == "*" || region_names.count (r), p.name + ": unknown region " + r);
    std::set<RegionClass> detect (p.detect.begin (), p.detect.end ());
    FUZZ_CHECK (detect.size () == p.detect.size (), p.name + ": detect twice");
    std::set<std::string> masked (p.regions.begin (), p.regions.end ());
    FUZZ_CHECK (set.regions_for (p).size () == (masked.count ("*") ? set.regions.size () : masked.size ()),
                p.name + ": regions_for");
    for (const auto *list : {&p.strip_metas, &p.strip_tags, &p.keep_tags, &p.overlays})
      for (const std::string &s : *list)
        FUZZ_CHECK (!s.empty (), p.name + ": an empty name in a list");
  }
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
  ProfileSet set;
  try {
    set = parse_profiles (text (data, size), kSource);
  } catch (const ProfileError &e) {
    std::string msg = e.what ();
    FUZZ_CHECK (msg.rfind (kSource, 0) == 0 && msg.size () > sizeof kSource, "message '" + msg + "'");
    return 0;
  }
  check (set);

  // Written back and read again: the same set.
  std::string written = write (set);
  ProfileSet again;
  try {
    again = parse_profiles (written, kSource);
  } catch (const ProfileError &e) {
    FUZZ_CHECK (false, std::string ("the written set does not parse: ") + e.what () + "\n" + written);
  }
  FUZZ_CHECK (again.regions.size () == set.regions.size () && again.profiles.size () == set.profiles.size (),
              written);
  for (size_t i = 0; i < set.regions.size (); i++)
    FUZZ_CHECK (again.regions[i].name == set.regions[i].name
                    && again.regions[i].region_class == set.regions[i].region_class
                    && same_points (again.regions[i].polygon_um, set.regions[i].polygon_um,
                                    as_rect (set.regions[i]) ? 1e-6 : 0),
                "region " + set.regions[i].name + " changed:\n" + written);
  for (size_t i = 0; i < set.profiles.size (); i++)
    FUZZ_CHECK (same (again.profiles[i], set.profiles[i]),
                "profile " + set.profiles[i].name + " changed:\n" + written);
  return 0;
}
