#include "json_writer.h"

#include <charconv>
#include <cmath>

namespace livemicro::orchestrator {

void
append_json_number (std::string &out, double v)
{
  if (!std::isfinite (v)) {
    out += "null";
    return;
  }
  char buf[32];
  auto [end, ec] = std::to_chars (buf, buf + sizeof buf, v);
  if (ec != std::errc ()) { // cannot happen for a finite double in 32 bytes
    out += "null";
    return;
  }
  out.append (buf, end);
  bool integral_looking = true;
  for (const char *c = buf; c < end; c++)
    if (*c == '.' || *c == 'e')
      integral_looking = false;
  if (integral_looking)
    out += ".0";
}

namespace {

void
append_string (std::string &out, const char *s)
{
  static const char kHex[] = "0123456789abcdef";
  out += '"';
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    const unsigned char c = *p;
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\b':
      out += "\\b";
      break;
    case '\f':
      out += "\\f";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    case '\t':
      out += "\\t";
      break;
    default:
      if (c < 0x20) {
        out += "\\u00";
        out += kHex[c >> 4];
        out += kHex[c & 15];
      } else {
        out += (char)c; // UTF-8 as it is
      }
    }
  }
  out += '"';
}

void
append_node (std::string &out, JsonNode *node)
{
  if (!node || JSON_NODE_HOLDS_NULL (node)) {
    out += "null";
    return;
  }
  switch (JSON_NODE_TYPE (node)) {
  case JSON_NODE_OBJECT: {
    out += '{';
    JsonObjectIter it;
    const char *name;
    JsonNode *member;
    bool first = true;
    json_object_iter_init_ordered (&it, json_node_get_object (node));
    while (json_object_iter_next_ordered (&it, &name, &member)) {
      if (!first)
        out += ',';
      first = false;
      append_string (out, name);
      out += ':';
      append_node (out, member);
    }
    out += '}';
    break;
  }
  case JSON_NODE_ARRAY: {
    out += '[';
    JsonArray *a = json_node_get_array (node);
    const guint n = json_array_get_length (a);
    for (guint i = 0; i < n; i++) {
      if (i)
        out += ',';
      append_node (out, json_array_get_element (a, i));
    }
    out += ']';
    break;
  }
  case JSON_NODE_VALUE:
    switch (json_node_get_value_type (node)) {
    case G_TYPE_INT64:
      out += std::to_string (json_node_get_int (node));
      break;
    case G_TYPE_DOUBLE:
      append_json_number (out, json_node_get_double (node));
      break;
    case G_TYPE_BOOLEAN:
      out += json_node_get_boolean (node) ? "true" : "false";
      break;
    case G_TYPE_STRING:
      append_string (out, json_node_get_string (node));
      break;
    default:
      out += "null";
      break;
    }
    break;
  case JSON_NODE_NULL:
    out += "null";
    break;
  }
}

} // namespace

std::string
json_text (JsonNode *node)
{
  std::string out;
  append_node (out, node);
  return out;
}

std::string
json_text (JsonBuilder *builder)
{
  g_autoptr (JsonNode) root = json_builder_get_root (builder);
  return json_text (root);
}

} // namespace livemicro::orchestrator
