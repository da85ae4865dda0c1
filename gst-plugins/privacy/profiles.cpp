// View profiles: the built-in set and the JSON profiles file (json-glib).
#include "livemicro/privacy/profiles.h"
#include "livemicro/json_text.h"

#include <json-glib/json-glib.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <utility>

namespace livemicro::privacy {

namespace {

struct ClassName {
  RegionClass c;
  const char *name;
};
const ClassName kClassNames[] = {{RegionClass::kLabel, "label"},
                                 {RegionClass::kQr, "qr"},
                                 {RegionClass::kBarcode, "barcode"},
                                 {RegionClass::kText, "text"}};

bool
contains (const std::vector<std::string> &list, const std::string &s)
{
  return std::find (list.begin (), list.end (), s) != list.end ();
}

} // namespace

const char *
region_class_name (RegionClass c)
{
  for (const auto &n : kClassNames)
    if (n.c == c)
      return n.name;
  return "?";
}

std::optional<RegionClass>
region_class_from_name (const std::string &name)
{
  for (const auto &n : kClassNames)
    if (name == n.name)
      return n.c;
  return std::nullopt;
}

const std::vector<RegionClass> &
all_region_classes ()
{
  static const std::vector<RegionClass> all
      = {RegionClass::kLabel, RegionClass::kQr, RegionClass::kBarcode, RegionClass::kText};
  return all;
}

const char *
stage_meta_policy_name (StageMetaPolicy p)
{
  switch (p) {
  case StageMetaPolicy::kKeep:
    return "keep";
  case StageMetaPolicy::kGeometry:
    return "geometry";
  case StageMetaPolicy::kRemove:
    return "remove";
  }
  return "?";
}

cv::Rect2d
bounding_box (const std::vector<cv::Point2d> &points)
{
  if (points.empty ())
    return {};
  double x0 = points[0].x, x1 = x0, y0 = points[0].y, y1 = y0;
  for (const auto &p : points) {
    x0 = std::min (x0, p.x);
    x1 = std::max (x1, p.x);
    y0 = std::min (y0, p.y);
    y1 = std::max (y1, p.y);
  }
  return {x0, y0, x1 - x0, y1 - y0};
}

cv::Rect2d
SlideRegion::bounds_um () const
{
  return bounding_box (polygon_um);
}

bool
Profile::detects (RegionClass c) const
{
  return std::find (detect.begin (), detect.end (), c) != detect.end ();
}

bool
Profile::strips_meta (const std::string &api_name) const
{
  return contains (strip_metas, "*") || contains (strip_metas, api_name);
}

bool
Profile::strips_tag (const std::string &tag) const
{
  if (contains (strip_tags, "*"))
    return !contains (keep_tags, tag);
  return contains (strip_tags, tag);
}

bool
Profile::may_draw (const std::string &overlay) const
{
  return contains (overlays, "*") || contains (overlays, overlay);
}

const Profile *
ProfileSet::find (const std::string &name) const
{
  for (const auto &p : profiles)
    if (p.name == name)
      return &p;
  return nullptr;
}

std::vector<std::string>
ProfileSet::names () const
{
  std::vector<std::string> n;
  for (const auto &p : profiles)
    n.push_back (p.name);
  return n;
}

std::vector<const SlideRegion *>
ProfileSet::regions_for (const Profile &profile) const
{
  std::vector<const SlideRegion *> out;
  bool all = contains (profile.regions, "*");
  for (const auto &r : regions)
    if (all || contains (profile.regions, r.name))
      out.push_back (&r);
  return out;
}

const ProfileSet &
builtin_profiles ()
{
  static const ProfileSet set = [] {
    ProfileSet s;
    s.source = "built-in";
    SlideRegion label;
    label.name = "slide-label";
    label.region_class = RegionClass::kLabel;
    label.polygon_um = {{0, 0}, {20000, 0}, {20000, 25000}, {0, 25000}};
    s.regions.push_back (label);

    Profile owner;
    owner.name = "owner";
    owner.description = "The pathologist at the microscope: sees everything, drives the microscope";
    owner.may_control = true;
    owner.overlays = {"*"};
    s.profiles.push_back (owner);

    Profile consultant;
    consultant.name = "consultant";
    consultant.description = "An invited pathologist: slide label masked, may take control";
    consultant.regions = {"*"};
    consultant.detect = {RegionClass::kLabel};
    consultant.may_control = true;
    consultant.overlays = {"analysis", "pointers", "annotations"};
    s.profiles.push_back (consultant);

    Profile trainee = consultant;
    trainee.name = "trainee";
    trainee.description = "A trainee: slide label masked; may drive after owners and consultants";
    trainee.may_control = true; // trainees queue behind consultants (issue 6)
    s.profiles.push_back (trainee);

    Profile guest;
    guest.name = "guest";
    guest.description = "A guest consultant: de-identified view; label, QR codes, barcodes and "
                        "any printed text masked; analysis and patient metadata stripped";
    guest.regions = {"*"};
    guest.detect = all_region_classes ();
    guest.strip_metas = {"*"};
    guest.stage_meta = StageMetaPolicy::kGeometry;
    guest.strip_tags = {"*"};
    guest.keep_tags
        = {"video-codec", "encoder", "bitrate", "nominal-bitrate", "minimum-bitrate", "maximum-bitrate"};
    guest.may_control = false;
    guest.overlays = {"pointers"};
    s.profiles.push_back (guest);
    return s;
  }();
  return set;
}

// ---- the JSON file --------------------------------------------------------

namespace {

// Remembers the line where each object member and array element ended while
// json-glib parses, so that errors found afterwards can name a line.
class LineMap {
public:
  explicit LineMap (JsonParser *parser) : parser_ (parser)
  {
    g_signal_connect (parser, "object-member", G_CALLBACK (on_member), this);
    g_signal_connect (parser, "array-element", G_CALLBACK (on_element), this);
    g_signal_connect (parser, "object-end", G_CALLBACK (on_object_end), this);
  }
  ~LineMap () { g_signal_handlers_disconnect_by_data (parser_, this); }
  int member (JsonObject *o, const std::string &name) const
  {
    auto it = members_.find ({o, name});
    return it == members_.end () ? object (o) : it->second;
  }
  int element (JsonArray *a, guint i) const
  {
    auto it = elements_.find ({a, i});
    return it == elements_.end () ? 0 : it->second;
  }
  int object (JsonObject *o) const
  {
    auto it = objects_.find (o);
    return it == objects_.end () ? 0 : it->second;
  }

private:
  static void on_member (JsonParser *p, JsonObject *o, gchar *name, gpointer self)
  {
    static_cast<LineMap *> (self)->members_[{o, name}] = json_parser_get_current_line (p);
  }
  static void on_element (JsonParser *p, JsonArray *a, gint i, gpointer self)
  {
    static_cast<LineMap *> (self)->elements_[{a, (guint)i}] = json_parser_get_current_line (p);
  }
  static void on_object_end (JsonParser *p, JsonObject *o, gpointer self)
  {
    static_cast<LineMap *> (self)->objects_[o] = json_parser_get_current_line (p);
  }
  JsonParser *parser_;
  std::map<std::pair<JsonObject *, std::string>, int> members_;
  std::map<std::pair<JsonArray *, guint>, int> elements_;
  std::map<JsonObject *, int> objects_;
};

class Reader {
public:
  Reader (const std::string &source, const LineMap &lines) : source_ (source), lines_ (lines) {}

  [[noreturn]] void fail (int line, const std::string &field, const std::string &what) const
  {
    std::ostringstream s;
    s << source_;
    if (line > 0)
      s << ":" << line;
    s << ": " << field << ": " << what;
    throw ProfileError (s.str ());
  }

  JsonObject *object_at (JsonNode *n, int line, const std::string &field) const
  {
    if (!JSON_NODE_HOLDS_OBJECT (n))
      fail (line, field, "must be a JSON object");
    return json_node_get_object (n);
  }

  // Rejects members not in `known` (a typo must not silently unmask).
  void only (JsonObject *o, const std::string &field, std::initializer_list<const char *> known) const
  {
    g_autoptr (GList) names = json_object_get_members (o);
    for (GList *l = names; l; l = l->next) {
      const char *m = static_cast<const char *> (l->data);
      bool ok = false;
      std::string list;
      for (const char *k : known) {
        ok = ok || std::string (k) == m;
        list += std::string (list.empty () ? "" : ", ") + k;
      }
      if (!ok)
        fail (lines_.member (o, m), field + "." + m, "unknown field (known: " + list + ")");
    }
  }

  JsonNode *get (JsonObject *o, const std::string &field, const char *name, bool required) const
  {
    JsonNode *n = json_object_get_member (o, name);
    if (!n && required)
      fail (lines_.object (o), field, std::string ("missing field '") + name + "'");
    return n;
  }

  std::string string (JsonObject *o, const std::string &field, const char *name, bool required,
                      bool non_empty = true) const
  {
    JsonNode *n = get (o, field, name, required);
    if (!n)
      return {};
    int line = lines_.member (o, name);
    if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_STRING)
      fail (line, field + "." + name, "must be a string");
    std::string v = json_node_get_string (n);
    if (non_empty && v.empty ())
      fail (line, field + "." + name, "must not be empty");
    return v;
  }

  bool boolean (JsonObject *o, const std::string &field, const char *name, bool def) const
  {
    JsonNode *n = get (o, field, name, false);
    if (!n)
      return def;
    if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_BOOLEAN)
      fail (lines_.member (o, name), field + "." + name, "must be true or false");
    return json_node_get_boolean (n);
  }

  JsonArray *array (JsonObject *o, const std::string &field, const char *name, bool required) const
  {
    JsonNode *n = get (o, field, name, required);
    if (!n)
      return nullptr;
    if (!JSON_NODE_HOLDS_ARRAY (n))
      fail (lines_.member (o, name), field + "." + name, "must be an array");
    return json_node_get_array (n);
  }

  std::vector<std::string> strings (JsonObject *o, const std::string &field, const char *name,
                                    bool required) const
  {
    std::vector<std::string> out;
    JsonArray *a = array (o, field, name, required);
    if (!a)
      return out;
    for (guint i = 0; i < json_array_get_length (a); i++) {
      JsonNode *e = json_array_get_element (a, i);
      std::string f = field + "." + name + "[" + std::to_string (i) + "]";
      if (!JSON_NODE_HOLDS_VALUE (e) || json_node_get_value_type (e) != G_TYPE_STRING)
        fail (element_line (o, name, a, i), f, "must be a string");
      std::string v = json_node_get_string (e);
      if (v.empty ())
        fail (element_line (o, name, a, i), f, "must not be empty");
      out.push_back (v);
    }
    return out;
  }

  double number (JsonNode *n, int line, const std::string &field) const
  {
    if (!JSON_NODE_HOLDS_VALUE (n))
      fail (line, field, "must be a number");
    GType t = json_node_get_value_type (n);
    if (t != G_TYPE_INT64 && t != G_TYPE_DOUBLE)
      fail (line, field, "must be a number");
    double v = json_node_get_double (n);
    if (!std::isfinite (v) || std::abs (v) > 1e9)
      fail (line, field, "must be a finite number of µm (|v| ≤ 1e9)");
    return v;
  }

  int element_line (JsonObject *o, const char *name, JsonArray *a, guint i) const
  {
    int l = lines_.element (a, i);
    return l > 0 ? l : lines_.member (o, name);
  }

  const LineMap &lines () const { return lines_; }

private:
  std::string source_;
  const LineMap &lines_;
};

SlideRegion
parse_region (const Reader &r, JsonObject *o, const std::string &field)
{
  r.only (o, field, {"name", "class", "rect_um", "polygon_um", "comment"});
  SlideRegion region;
  region.name = r.string (o, field, "name", true);
  std::string cls = r.string (o, field, "class", true);
  auto c = region_class_from_name (cls);
  if (!c)
    r.fail (r.lines ().member (o, "class"), field + ".class",
            "unknown region class '" + cls + "' (known: label, qr, barcode, text)");
  region.region_class = *c;
  JsonArray *rect = r.array (o, field, "rect_um", false);
  JsonArray *poly = r.array (o, field, "polygon_um", false);
  if ((rect != nullptr) == (poly != nullptr))
    r.fail (r.lines ().object (o), field,
            "give exactly one of 'rect_um' [x, y, width, height] "
            "or 'polygon_um' [[x, y], ...]");
  if (rect) {
    const std::string f = field + ".rect_um";
    const int line = r.lines ().member (o, "rect_um");
    if (json_array_get_length (rect) != 4)
      r.fail (line, f, "must be [x, y, width, height] in slide µm");
    double v[4];
    for (guint i = 0; i < 4; i++)
      v[i] = r.number (json_array_get_element (rect, i), line, f + "[" + std::to_string (i) + "]");
    if (v[2] <= 0 || v[3] <= 0)
      r.fail (line, f, "width and height must be above 0");
    region.polygon_um = {{v[0], v[1]}, {v[0] + v[2], v[1]}, {v[0] + v[2], v[1] + v[3]}, {v[0], v[1] + v[3]}};
  } else {
    const std::string f = field + ".polygon_um";
    const int line = r.lines ().member (o, "polygon_um");
    guint n = json_array_get_length (poly);
    if (n < 3)
      r.fail (line, f, "a polygon needs at least 3 points [x, y]");
    for (guint i = 0; i < n; i++) {
      JsonNode *pt = json_array_get_element (poly, i);
      std::string pf = f + "[" + std::to_string (i) + "]";
      int pl = r.element_line (o, "polygon_um", poly, i);
      if (!JSON_NODE_HOLDS_ARRAY (pt) || json_array_get_length (json_node_get_array (pt)) != 2)
        r.fail (pl, pf, "must be a point [x, y] in slide µm");
      JsonArray *xy = json_node_get_array (pt);
      region.polygon_um.emplace_back (r.number (json_array_get_element (xy, 0), pl, pf + "[0]"),
                                      r.number (json_array_get_element (xy, 1), pl, pf + "[1]"));
    }
    double area2 = 0; // shoelace
    for (size_t i = 0; i < region.polygon_um.size (); i++) {
      const cv::Point2d &a = region.polygon_um[i];
      const cv::Point2d &b = region.polygon_um[(i + 1) % region.polygon_um.size ()];
      area2 += a.x * b.y - b.x * a.y;
    }
    if (std::abs (area2) <= 1e-9)
      r.fail (line, f, "the polygon has no area (all points on a line)");
  }
  return region;
}

Profile
parse_profile (const Reader &r, JsonObject *o, const std::string &field,
               const std::vector<SlideRegion> &regions)
{
  r.only (o, field,
          {"name", "description", "regions", "detect", "strip_metas", "stage_meta", "strip_tags", "keep_tags",
           "may_control", "overlays", "extensions", "comment"});
  Profile p;
  p.name = r.string (o, field, "name", true);
  for (char ch : p.name)
    if (!g_ascii_isalnum (ch) && ch != '-' && ch != '_')
      r.fail (r.lines ().member (o, "name"), field + ".name",
              "'" + p.name + "' may use only letters, digits, '-' and '_'");
  const std::string pf = "profiles." + p.name;
  p.description = r.string (o, pf, "description", false, false);
  p.regions = r.strings (o, pf, "regions", true);
  JsonArray *ra = r.array (o, pf, "regions", true);
  for (size_t i = 0; i < p.regions.size (); i++) {
    const std::string &name = p.regions[i];
    bool known = name == "*" || std::any_of (regions.begin (), regions.end (), [&] (const SlideRegion &s) {
                   return s.name == name;
                 });
    if (!known)
      r.fail (r.element_line (o, "regions", ra, (guint)i), pf + ".regions[" + std::to_string (i) + "]",
              "no region named '" + name + "' in 'regions'");
  }
  std::vector<std::string> detect = r.strings (o, pf, "detect", true);
  JsonArray *da = r.array (o, pf, "detect", true);
  for (size_t i = 0; i < detect.size (); i++) {
    auto c = region_class_from_name (detect[i]);
    if (!c)
      r.fail (r.element_line (o, "detect", da, (guint)i), pf + ".detect[" + std::to_string (i) + "]",
              "unknown region class '" + detect[i] + "' (known: label, qr, barcode, text)");
    if (!p.detects (*c))
      p.detect.push_back (*c);
  }
  p.strip_metas = r.strings (o, pf, "strip_metas", false);
  std::string sm = r.string (o, pf, "stage_meta", false);
  if (sm.empty () || sm == "keep")
    p.stage_meta = StageMetaPolicy::kKeep;
  else if (sm == "geometry")
    p.stage_meta = StageMetaPolicy::kGeometry;
  else if (sm == "remove")
    p.stage_meta = StageMetaPolicy::kRemove;
  else
    r.fail (r.lines ().member (o, "stage_meta"), pf + ".stage_meta",
            "'" + sm + "' is not one of keep, geometry, remove");
  p.strip_tags = r.strings (o, pf, "strip_tags", false);
  p.keep_tags = r.strings (o, pf, "keep_tags", false);
  p.may_control = r.boolean (o, pf, "may_control", false);
  p.overlays = r.strings (o, pf, "overlays", false);
  if (JsonNode *ext = json_object_get_member (o, "extensions")) {
    if (!JSON_NODE_HOLDS_OBJECT (ext))
      r.fail (r.lines ().member (o, "extensions"), pf + ".extensions", "must be a JSON object");
    g_autofree gchar *text = json_to_string (ext, FALSE);
    // json-glib writes back what it read, valid JSON or not: 1e999 as
    // "inf.0".  Keep only JSON.
    g_autoptr (JsonNode) again = json_from_string (text, nullptr);
    if (!again)
      r.fail (r.lines ().member (o, "extensions"), pf + ".extensions",
              "must be plain JSON: finite numbers (|v| < 1.8e308)");
    p.extensions_json = text;
  }
  return p;
}

} // namespace

ProfileSet
parse_profiles (const std::string &json, const std::string &source)
{
  g_autoptr (JsonParser) parser = json_parser_new_immutable ();
  LineMap lines (parser);
  Reader r (source, lines);
  // Before json-glib: deep nesting overflows its stack, half a surrogate
  // pair becomes invalid UTF-8 (and may leak).  Profiles are 4 deep; the
  // rest is for `extensions`.
  if (auto problem = livemicro::json::text_problem (json, 64))
    r.fail (problem->line, "(file)", problem->what);
  g_autoptr (GError) err = nullptr;
  if (!json_parser_load_from_data (parser, json.data (), (gssize)json.size (), &err)) {
    // json-glib says "<data>:LINE:COL: Parse error: ..."; name the file.
    std::string msg = err->message;
    if (msg.rfind ("<data>", 0) == 0)
      msg = source + msg.substr (6);
    else
      msg = source + ": " + msg;
    throw ProfileError (msg);
  }
  JsonNode *root = json_parser_get_root (parser);
  if (!root)
    r.fail (0, "(file)", "empty: expected a JSON object with 'profiles'");
  JsonObject *top = r.object_at (root, 1, "(top level)");
  r.only (top, "(top level)", {"version", "regions", "profiles", "comment"});

  ProfileSet set;
  set.source = source;
  if (JsonNode *v = json_object_get_member (top, "version")) {
    if (!JSON_NODE_HOLDS_VALUE (v) || json_node_get_value_type (v) != G_TYPE_INT64
        || json_node_get_int (v) != 1)
      r.fail (lines.member (top, "version"), "version", "must be 1 (the only version so far)");
  }
  if (JsonArray *ra = r.array (top, "(top level)", "regions", false)) {
    for (guint i = 0; i < json_array_get_length (ra); i++) {
      std::string f = "regions[" + std::to_string (i) + "]";
      JsonObject *o = r.object_at (json_array_get_element (ra, i), r.element_line (top, "regions", ra, i), f);
      SlideRegion region = parse_region (r, o, f);
      for (const auto &other : set.regions)
        if (other.name == region.name)
          r.fail (lines.member (o, "name"), f + ".name", "duplicate region name '" + region.name + "'");
      set.regions.push_back (std::move (region));
    }
  }
  JsonArray *pa = r.array (top, "(top level)", "profiles", true);
  if (json_array_get_length (pa) == 0)
    r.fail (lines.member (top, "profiles"), "profiles", "must list at least one profile");
  for (guint i = 0; i < json_array_get_length (pa); i++) {
    std::string f = "profiles[" + std::to_string (i) + "]";
    JsonObject *o = r.object_at (json_array_get_element (pa, i), r.element_line (top, "profiles", pa, i), f);
    Profile p = parse_profile (r, o, f, set.regions);
    if (set.find (p.name))
      r.fail (lines.member (o, "name"), f + ".name", "duplicate profile name '" + p.name + "'");
    set.profiles.push_back (std::move (p));
  }
  return set;
}

ProfileSet
load_profiles_file (const std::string &path)
{
  g_autofree gchar *text = nullptr;
  gsize len = 0;
  g_autoptr (GError) err = nullptr;
  if (!g_file_get_contents (path.c_str (), &text, &len, &err))
    throw ProfileError ("cannot read profiles file: " + std::string (err->message));
  return parse_profiles (std::string (text, len), path);
}

} // namespace livemicro::privacy
