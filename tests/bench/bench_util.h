// What every benchmark needs: medians and percentiles of its samples, and
// writing its results (built with a JsonBuilder) to its JSON file.
#pragma once

#include <json-glib/json-glib.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

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

// CPU time of a process so far (utime + stime from /proc), in seconds; 0
// when it is gone.
inline double
cpu_seconds (int pid)
{
  std::ifstream f ("/proc/" + std::to_string (pid) + "/stat");
  std::string text ((std::istreambuf_iterator<char> (f)), std::istreambuf_iterator<char> ());
  size_t paren = text.rfind (')');
  if (paren == std::string::npos)
    return 0;
  // After "pid (comm) ": state is field 3; utime and stime are fields 14, 15.
  std::istringstream rest (text.substr (paren + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; i++) {
    if (i == 14)
      utime = std::atof (field.c_str ());
    else if (i == 15)
      stime = std::atof (field.c_str ());
  }
  return (utime + stime) / (double)sysconf (_SC_CLK_TCK);
}

// "load_average": [1, 5, 15 min at the start, the same at the end].
inline void
add_load_average (JsonBuilder *b, const double start[3], const double end[3])
{
  json_builder_set_member_name (b, "load_average");
  json_builder_begin_array (b);
  for (int i = 0; i < 6; i++)
    json_builder_add_double_value (b, i < 3 ? start[i] : end[i - 3]);
  json_builder_end_array (b);
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
