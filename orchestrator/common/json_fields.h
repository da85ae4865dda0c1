// Reading members of JSON that crossed a process boundary (the worker wire):
// a member of another type than expected reads as the fallback, never as a
// null string (json-glib returns NULL for a non-string member, which a
// std::string would abort on).
#pragma once

#include <json-glib/json-glib.h>

namespace livemicro::orchestrator {

inline const char *
string_member (JsonObject *o, const char *name, const char *fallback)
{
  JsonNode *n = o && json_object_has_member (o, name) ? json_object_get_member (o, name) : nullptr;
  if (!n || !JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_STRING)
    return fallback;
  const char *s = json_node_get_string (n);
  return s ? s : fallback;
}

}  // namespace livemicro::orchestrator
