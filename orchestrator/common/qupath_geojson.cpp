#include "qupath_geojson.h"

#include "json_writer.h"
#include "worker_protocol.h" // add_number

#include <json-glib/json-glib.h>

#include <cmath>
#include <cstdio>

namespace livemicro::orchestrator::qupath {

std::optional<PathClass>
standard_class (const std::string &name)
{
  // QuPath's defaults, from qupath-core's
  // qupath/lib/objects/classes/PathClass.java, class StandardPathClasses
  // (getInstance(name, ColorTools.packRGB(r, g, b))).
  static const PathClass kStandard[] = {
      {"Tumor", {200, 0, 0}},       {"Stroma", {150, 200, 150}}, {"Immune cells", {160, 90, 160}},
      {"Necrosis", {50, 50, 50}},   {"Other", {255, 200, 0}},    {"Region*", {0, 0, 180}},
      {"Ignore*", {180, 180, 180}},
  };
  g_autofree char *folded = g_utf8_casefold (name.c_str (), -1);
  std::string wanted = folded;
  if (wanted == "tumour")
    wanted = "tumor";
  for (const PathClass &c : kStandard) {
    g_autofree char *cf = g_utf8_casefold (c.name.c_str (), -1);
    if (wanted == cf)
      return c;
  }
  return std::nullopt;
}

namespace {

void
add_string (JsonBuilder *b, const char *name, const std::string &v)
{
  json_builder_set_member_name (b, name);
  json_builder_add_string_value (b, v.c_str ());
}

void
add_point (JsonBuilder *b, const std::array<double, 2> &p)
{
  json_builder_begin_array (b);
  add_number (b, std::round (p[0] * 1000) / 1000);
  add_number (b, std::round (p[1] * 1000) / 1000);
  json_builder_end_array (b);
}

void
add_geometry (JsonBuilder *b, const PathObject &o)
{
  json_builder_set_member_name (b, "geometry");
  json_builder_begin_object (b);
  add_string (b, "type",
              o.shape == Shape::kPoint        ? "Point"
              : o.shape == Shape::kLineString ? "LineString"
                                              : "Polygon");
  json_builder_set_member_name (b, "coordinates");
  if (o.shape == Shape::kPoint) {
    add_point (b, o.points_px.front ());
  } else {
    json_builder_begin_array (b);
    if (o.shape == Shape::kPolygon)
      json_builder_begin_array (b); // the outer ring
    for (const auto &p : o.points_px)
      add_point (b, p);
    if (o.shape == Shape::kPolygon) {
      add_point (b, o.points_px.front ()); // GeoJSON rings are closed
      json_builder_end_array (b);
    }
    json_builder_end_array (b);
  }
  json_builder_end_object (b);
}

void
add_properties (JsonBuilder *b, const PathObject &o)
{
  json_builder_set_member_name (b, "properties");
  json_builder_begin_object (b);
  add_string (b, "objectType", o.object_type);
  if (!o.name.empty ())
    add_string (b, "name", o.name);
  if (o.classification) {
    json_builder_set_member_name (b, "classification");
    json_builder_begin_object (b);
    add_string (b, "name", o.classification->name);
    json_builder_set_member_name (b, "color");
    json_builder_begin_array (b);
    for (int c : o.classification->color)
      json_builder_add_int_value (b, c);
    json_builder_end_array (b);
    json_builder_end_object (b);
  }
  bool any = false;
  for (const auto &m : o.measurements)
    any = any || std::isfinite (m.second);
  if (any) {
    json_builder_set_member_name (b, "measurements");
    json_builder_begin_object (b);
    for (const auto &[name, value] : o.measurements) {
      if (!std::isfinite (value))
        continue;
      json_builder_set_member_name (b, name.c_str ());
      add_number (b, value);
    }
    json_builder_end_object (b);
  }
  for (const auto &[k, v] : o.properties)
    add_string (b, k.c_str (), v);
  json_builder_end_object (b);
}

} // namespace

std::string
feature_collection (const std::vector<PathObject> &objects)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_string (b, "type", "FeatureCollection");
  json_builder_set_member_name (b, "features");
  json_builder_begin_array (b);
  for (const PathObject &o : objects) {
    const size_t needed = o.shape == Shape::kPoint ? 1 : o.shape == Shape::kLineString ? 2 : 3;
    if (o.points_px.size () < needed)
      continue;
    json_builder_begin_object (b);
    add_string (b, "type", "Feature");
    add_string (b, "id", o.id);
    add_geometry (b, o);
    add_properties (b, o);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
  return json_text (b);
}

std::string
name_uuid (const std::string &name)
{
  // LiveMicro's namespace (a random UUID, fixed once).
  static const guint8 kNamespace[16]
      = {0x3b, 0x8e, 0x52, 0x0d, 0x6c, 0x1f, 0x4e, 0x27, 0x9a, 0x40, 0x51, 0x7d, 0xc2, 0x88, 0x0e, 0x93};
  g_autoptr (GChecksum) sha1 = g_checksum_new (G_CHECKSUM_SHA1);
  g_checksum_update (sha1, kNamespace, sizeof kNamespace);
  g_checksum_update (sha1, reinterpret_cast<const guchar *> (name.data ()), (gssize)name.size ());
  guint8 digest[20];
  gsize len = sizeof digest;
  g_checksum_get_digest (sha1, digest, &len);
  digest[6] = (guint8)((digest[6] & 0x0f) | 0x50); // version 5
  digest[8] = (guint8)((digest[8] & 0x3f) | 0x80); // RFC 4122 variant
  char out[37];
  std::snprintf (out, sizeof out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                 digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
                 digest[8], digest[9], digest[10], digest[11], digest[12], digest[13], digest[14],
                 digest[15]);
  return out;
}

} // namespace livemicro::orchestrator::qupath
