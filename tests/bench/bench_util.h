// What every benchmark needs: medians and percentiles of its samples, and
// writing its results (built with a JsonBuilder) to its JSON file.
#pragma once

#include <json-glib/json-glib.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

namespace livemicro::bench {

// The upper median (0 for no samples).
inline double
median (std::vector<double> v)
{
  std::sort (v.begin (), v.end ());
  return v.empty () ? 0 : v[v.size () / 2];
}

// The q-quantile, nearest rank (0 for no samples).
inline double
percentile (std::vector<double> v, double q)
{
  if (v.empty ())
    return 0;
  std::sort (v.begin (), v.end ());
  return v[std::min (v.size () - 1, (size_t)(q * v.size ()))];
}

// Writes the results and says where, or why not.

inline bool
write_json (JsonBuilder *b, const std::string &path)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  json_generator_set_pretty (gen, TRUE);
  g_autoptr (GError) err = nullptr;
  if (!json_generator_to_file (gen, path.c_str (), &err)) {
    std::fprintf (stderr, "could not write %s: %s\n", path.c_str (), err->message);
    return false;
  }
  std::printf ("wrote %s\n", path.c_str ());
  return true;
}

} // namespace livemicro::bench
