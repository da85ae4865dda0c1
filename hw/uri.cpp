#include <livemicro/hw/uri.h>

#include <livemicro/hw/error.h>
#include <livemicro/hw/text.h>

#include <glib.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace livemicro::hw {

MicroscopeUri::MicroscopeUri (const std::string &text) : text_ (text)
{
  g_autoptr (GError) error = nullptr;
  // The query stays encoded until split: a nested URI keeps its own %26.
  g_autoptr (GUri) uri = g_uri_parse (text.c_str (), G_URI_FLAGS_ENCODED_QUERY, &error);
  if (!uri)
    throw Error (ErrorKind::kUnsupported,
                 "'" + text + "' is not a microscope URI (" + error->message
                     + "); expected e.g. sim://synthetic or sim:///path/to/slide.svs");
  scheme_ = g_uri_get_scheme (uri);
  if (const char *host = g_uri_get_host (uri))
    host_ = host;
  path_ = g_uri_get_path (uri);
  if (const char *query = g_uri_get_query (uri)) {
    g_autoptr (GHashTable) params = g_uri_parse_params (query, -1, "&", G_URI_PARAMS_NONE, &error);
    if (!params)
      throw Error (ErrorKind::kUnsupported, "bad query in microscope URI '" + text + "': " + error->message);
    GHashTableIter it;
    gpointer key, value;
    g_hash_table_iter_init (&it, params);
    while (g_hash_table_iter_next (&it, &key, &value))
      query_[static_cast<const char *> (key)] = static_cast<const char *> (value);
  }
}

double
MicroscopeUri::get_double (const std::string &key, double fallback, double min, double max) const
{
  auto it = query_.find (key);
  if (it == query_.end ())
    return fallback;
  const char *str = it->second.c_str ();
  char *end = nullptr;
  errno = 0;
  double v = std::strtod (str, &end);
  if (end == str || *end != '\0' || errno != 0 || !std::isfinite (v) || v < min || v > max)
    throw Error (ErrorKind::kOutOfRange, "microscope URI '" + text_ + "': " + key + "=" + it->second
                                             + " is not a number in [" + num (min) + ", " + num (max) + "]");
  return v;
}

int64_t
MicroscopeUri::get_int (const std::string &key, int64_t fallback, int64_t min, int64_t max) const
{
  auto it = query_.find (key);
  if (it == query_.end ())
    return fallback;
  const char *str = it->second.c_str ();
  char *end = nullptr;
  errno = 0;
  long long v = std::strtoll (str, &end, 10);
  if (end == str || *end != '\0' || errno != 0 || v < min || v > max)
    throw Error (ErrorKind::kOutOfRange, "microscope URI '" + text_ + "': " + key + "=" + it->second
                                             + " is not an integer in [" + std::to_string (min) + ", "
                                             + std::to_string (max) + "]");
  return v;
}

std::string
MicroscopeUri::get_string (const std::string &key, const std::string &fallback) const
{
  auto it = query_.find (key);
  return it == query_.end () ? fallback : it->second;
}

void
MicroscopeUri::check_keys (std::initializer_list<const char *> known) const
{
  for (const auto &kv : query_) {
    bool ok = false;
    for (const char *k : known)
      ok = ok || kv.first == k;
    if (!ok) {
      std::string list;
      for (const char *k : known)
        list += (list.empty () ? "" : ", ") + std::string (k);
      throw Error (ErrorKind::kUnsupported, "microscope URI '" + text_ + "': unknown parameter '" + kv.first
                                                + "' (known: " + list + ")");
    }
  }
}

} // namespace livemicro::hw
