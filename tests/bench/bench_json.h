// Writes a benchmark's results (built with a JsonBuilder) to its JSON file
// and says where, or why not.  Shared by the benchmarks.
#pragma once

#include <json-glib/json-glib.h>

#include <cstdio>
#include <string>

namespace livemicro::bench {

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

}  // namespace livemicro::bench
