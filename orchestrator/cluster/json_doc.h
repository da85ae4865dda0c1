// json-glib pieces shared by the edge cloud's two JSON codecs: etcd's gateway
// (etcd_client.cpp) and the values LiveMicro keeps in etcd (cluster_member.cpp).
#pragma once

#include <json-glib/json-glib.h>

#include <cstdint>
#include <string>

namespace livemicro::cluster {

// The builder's root as compact JSON.
inline std::string
to_json (JsonBuilder *b)
{
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  g_autoptr (JsonGenerator) g = json_generator_new ();
  json_generator_set_root (g, root);
  g_autofree char *text = json_generator_to_data (g, nullptr);
  return text;
}

// Builder members.
inline void
member (JsonBuilder *b, const char *name, const std::string &v)
{
  json_builder_set_member_name (b, name);
  json_builder_add_string_value (b, v.c_str ());
}

inline void
member (JsonBuilder *b, const char *name, int64_t v)
{
  json_builder_set_member_name (b, name);
  json_builder_add_int_value (b, v);
}

// A parsed JSON text whose top level is an object (else root is nullptr),
// kept alive with its parser.  Members of the wrong type read as absent.
class JsonDoc {
public:
  explicit JsonDoc (const std::string &text)
  {
    if (json_parser_load_from_data (parser_, text.data (), (gssize)text.size (), &error_)) {
      JsonNode *r = json_parser_get_root (parser_);
      if (r && JSON_NODE_HOLDS_OBJECT (r))
        root = json_node_get_object (r);
    }
  }
  ~JsonDoc ()
  {
    g_clear_error (&error_);
    g_object_unref (parser_);
  }
  JsonDoc (const JsonDoc &) = delete;
  JsonDoc &operator= (const JsonDoc &) = delete;

  // Why the text did not parse (empty when it did).
  std::string error () const { return error_ ? error_->message : ""; }

  static JsonNode *member (JsonObject *o, const char *name)
  {
    return o && json_object_has_member (o, name) ? json_object_get_member (o, name) : nullptr;
  }
  static JsonObject *object (JsonObject *o, const char *name)
  {
    JsonNode *n = member (o, name);
    return n && JSON_NODE_HOLDS_OBJECT (n) ? json_node_get_object (n) : nullptr;
  }
  static JsonArray *array (JsonObject *o, const char *name)
  {
    JsonNode *n = member (o, name);
    return n && JSON_NODE_HOLDS_ARRAY (n) ? json_node_get_array (n) : nullptr;
  }
  // A string, or an integer written as a string (proto3 JSON's int64).
  static std::string str (JsonObject *o, const char *name)
  {
    JsonNode *n = member (o, name);
    if (!n || !JSON_NODE_HOLDS_VALUE (n))
      return "";
    if (json_node_get_value_type (n) == G_TYPE_STRING)
      return json_node_get_string (n);
    if (json_node_get_value_type (n) == G_TYPE_INT64)
      return std::to_string (json_node_get_int (n));
    return "";
  }
  // An integer, or one written as a string; absent is 0.
  static int64_t integer (JsonObject *o, const char *name)
  {
    JsonNode *n = member (o, name);
    if (!n || !JSON_NODE_HOLDS_VALUE (n))
      return 0;
    if (json_node_get_value_type (n) == G_TYPE_STRING)
      return g_ascii_strtoll (json_node_get_string (n), nullptr, 10);
    if (json_node_get_value_type (n) == G_TYPE_INT64)
      return json_node_get_int (n);
    return 0;
  }
  static double number (JsonObject *o, const char *name)
  {
    JsonNode *n = member (o, name);
    if (!n || !JSON_NODE_HOLDS_VALUE (n))
      return 0;
    GType t = json_node_get_value_type (n);
    return t == G_TYPE_DOUBLE || t == G_TYPE_INT64 ? json_node_get_double (n) : 0;
  }

  JsonObject *root = nullptr;

private:
  JsonParser *parser_ = json_parser_new ();
  GError *error_ = nullptr;
};

} // namespace livemicro::cluster
