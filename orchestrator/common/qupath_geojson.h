// GeoJSON as QuPath (0.4 and later) writes and reads it: one writer for the
// daemon's annotation exports and `livemicroctl analyze --geojson`.
//
// A FeatureCollection of Features, each with
//   "id"          a UUID, the same every time the same object is exported
//                 (name_uuid()), so QuPath keeps one object per annotation;
//   "geometry"    Point, LineString or Polygon, in the pixel space of the
//                 image QuPath has open (x right, y down, level 0);
//   "properties"  "objectType" ("annotation" or "detection"), "name" (when
//                 there is one), "classification" {"name", "color": [r, g, b]}
//                 (when classified), "measurements" {name: number} (when
//                 any), and any further string properties.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace livemicro::orchestrator::qupath {

// A QuPath classification: its name and display colour.
struct PathClass {
  std::string name;
  std::array<int, 3> color{0, 0, 0};
};

// QuPath's standard classes (PathClass.StandardPathClasses): Tumor, Stroma,
// Immune cells, Necrosis, Other, Region*, Ignore*, with QuPath's colours,
// matched without regard to case (and "Tumour" for Tumor); nullopt for any
// other name.
std::optional<PathClass> standard_class (const std::string &name);

enum class Shape { kPoint, kLineString, kPolygon };

struct PathObject {
  std::string id;                         // a UUID
  std::string object_type = "annotation"; // or "detection"
  Shape shape = Shape::kPolygon;
  std::vector<std::array<double, 2>> points_px; // a polygon's ring, not closed: the writer closes it
  std::string name;                             // empty: none
  std::optional<PathClass> classification;
  std::vector<std::pair<std::string, double>> measurements; // non-finite values are left out
  std::vector<std::pair<std::string, std::string>> properties;
};

// The FeatureCollection, as JSON text (built with json-glib).  Coordinates
// are rounded to 1/1000 px.  Objects without enough points for their shape
// (1 for a point, 2 for a line, 3 for a polygon) are left out.
std::string feature_collection (const std::vector<PathObject> &objects);

// An RFC 4122 name-based UUID (version 5, SHA-1) of `name` in LiveMicro's own
// namespace: the same name always gives the same UUID.
std::string name_uuid (const std::string &name);

// QuPath's measurement names for a nucleus (its cell detection and shape
// features, micrometre units written "µm" as QuPath does).
namespace measurement {
inline constexpr const char *kNucleusArea = "Nucleus: Area µm^2";
inline constexpr const char *kNucleusPerimeter = "Nucleus: Perimeter µm";
inline constexpr const char *kNucleusCircularity = "Nucleus: Circularity";
inline constexpr const char *kNucleusSolidity = "Nucleus: Solidity";
inline constexpr const char *kNucleusHematoxylinOdMean = "Nucleus: Hematoxylin OD mean";
} // namespace measurement

} // namespace livemicro::orchestrator::qupath
