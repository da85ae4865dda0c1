// etcd 3.4's JSON gateway, spoken with libsoup and json-glib.  See
// etcd_client.h; the gateway's encoding (proto3 JSON): bytes are base64,
// 64-bit integers are JSON strings, fields that are zero or false are left out.
#include "etcd_client.h"
#include "json_doc.h"

#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

namespace livemicro::cluster {

namespace {

std::string
b64 (const std::string &s)
{
  g_autofree char *e = g_base64_encode (reinterpret_cast<const guchar *> (s.data ()), s.size ());
  return e;
}

std::string
unb64 (const char *s)
{
  if (!s || !*s)
    return "";
  gsize len = 0;
  g_autofree guchar *d = g_base64_decode (s, &len);
  return std::string (reinterpret_cast<const char *> (d), len);
}

int64_t
int64_member (JsonObject *o, const char *name)
{
  return JsonDoc::integer (o, name);
}

std::string
string_member (JsonObject *o, const char *name)
{
  return JsonDoc::str (o, name);
}

JsonObject *
object_member (JsonObject *o, const char *name)
{
  return JsonDoc::object (o, name);
}

JsonArray *
array_member (JsonObject *o, const char *name)
{
  return JsonDoc::array (o, name);
}

// A response: a JSON object, or an EtcdError.
struct Reply : JsonDoc {
  explicit Reply (const std::string &text) : JsonDoc (text)
  {
    if (!root)
      throw EtcdError ("etcd answered something that is not a JSON object"
                       + (error ().empty () ? "" : ": " + error ()));
  }
};

std::string
render (JsonBuilder *b)
{
  return to_json (b);
}

// Members of a RangeRequest / DeleteRangeRequest for a key or a prefix.
void
add_range (JsonBuilder *b, const std::string &key, bool prefix)
{
  member (b, "key", b64 (key));
  if (prefix)
    member (b, "range_end", b64 (EtcdClient::prefix_end (key)));
}

void
add_put (JsonBuilder *b, const std::string &key, const std::string &value, int64_t lease)
{
  member (b, "key", b64 (key));
  member (b, "value", b64 (value));
  if (lease)
    member (b, "lease", std::to_string (lease));
}

KeyValue
key_value (JsonObject *kv)
{
  KeyValue r;
  r.key = unb64 (json_object_get_string_member_with_default (kv, "key", ""));
  r.value = unb64 (json_object_get_string_member_with_default (kv, "value", ""));
  r.create_revision = int64_member (kv, "create_revision");
  r.mod_revision = int64_member (kv, "mod_revision");
  r.version = int64_member (kv, "version");
  r.lease = int64_member (kv, "lease");
  return r;
}

std::vector<KeyValue>
key_values (JsonObject *range_response)
{
  std::vector<KeyValue> out;
  if (JsonArray *kvs = array_member (range_response, "kvs"))
    for (guint i = 0; i < json_array_get_length (kvs); i++)
      if (JsonObject *kv = json_array_get_object_element (kvs, i))
        out.push_back (key_value (kv));
  return out;
}

const char *
target_name (Compare::Target t)
{
  switch (t) {
  case Compare::Target::kCreateRevision:
    return "CREATE";
  case Compare::Target::kModRevision:
    return "MOD";
  case Compare::Target::kVersion:
    return "VERSION";
  case Compare::Target::kValue:
    return "VALUE";
  case Compare::Target::kLease:
    return "LEASE";
  }
  return "MOD";
}

const char *
target_field (Compare::Target t)
{
  switch (t) {
  case Compare::Target::kCreateRevision:
    return "create_revision";
  case Compare::Target::kModRevision:
    return "mod_revision";
  case Compare::Target::kVersion:
    return "version";
  case Compare::Target::kValue:
    return "value";
  case Compare::Target::kLease:
    return "lease";
  }
  return "mod_revision";
}

void
add_ops (JsonBuilder *b, const char *name, const std::vector<Op> &ops)
{
  json_builder_set_member_name (b, name);
  json_builder_begin_array (b);
  for (const Op &op : ops) {
    json_builder_begin_object (b);
    switch (op.kind) {
    case Op::Kind::kPut:
      json_builder_set_member_name (b, "request_put");
      json_builder_begin_object (b);
      add_put (b, op.key, op.value, op.lease);
      break;
    case Op::Kind::kRange:
      json_builder_set_member_name (b, "request_range");
      json_builder_begin_object (b);
      add_range (b, op.key, op.prefix);
      break;
    case Op::Kind::kDelete:
      json_builder_set_member_name (b, "request_delete_range");
      json_builder_begin_object (b);
      add_range (b, op.key, op.prefix);
      break;
    }
    json_builder_end_object (b);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
}

} // namespace

EtcdClient::EtcdClient (std::vector<std::string> endpoints, unsigned timeout_s)
    : endpoints_ (std::move (endpoints))
{
  for (auto &e : endpoints_)
    while (!e.empty () && e.back () == '/')
      e.pop_back ();
  session_ = soup_session_new_with_options ("timeout", timeout_s, "idle-timeout", 30, nullptr);
}

EtcdClient::~EtcdClient ()
{
  g_clear_object (&session_);
}

std::string
EtcdClient::prefix_end (const std::string &prefix)
{
  std::string end = prefix;
  while (!end.empty ()) {
    auto &c = reinterpret_cast<unsigned char &> (end.back ());
    if (c < 0xff) {
      c++;
      return end;
    }
    end.pop_back ();
  }
  return std::string (1, '\0'); // every key
}

std::string
EtcdClient::call_one (const std::string &endpoint, const std::string &path, const std::string &body,
                      bool &reached)
{
  reached = false;
  const std::string url = endpoint + path;
  g_autoptr (SoupMessage) msg = soup_message_new ("POST", url.c_str ());
  if (!msg)
    throw EtcdError ("'" + endpoint + "' is not an etcd endpoint URL");
  g_autoptr (GBytes) b = g_bytes_new (body.data (), body.size ());
  soup_message_set_request_body_from_bytes (msg, "application/json", b);
  g_autoptr (GError) error = nullptr;
  g_autoptr (GBytes) out = soup_session_send_and_read (session_, msg, nullptr, &error);
  if (!out)
    return std::string ("cannot reach etcd at ") + endpoint + ": " + error->message;
  reached = true;
  gsize len = 0;
  const char *data = static_cast<const char *> (g_bytes_get_data (out, &len));
  std::string text (data ? data : "", len);
  const guint status = soup_message_get_status (msg);
  if (status != SOUP_STATUS_OK) {
    // The gateway's error object: {"error": "...", "code": N, "message": "..."}.
    std::string why = text;
    try {
      Reply r (text);
      why = string_member (r.root, "message");
      if (why.empty ())
        why = string_member (r.root, "error");
    } catch (const EtcdError &) {
    }
    throw EtcdError ("etcd at " + endpoint + " refused " + path + " (HTTP " + std::to_string (status)
                     + "): " + why);
  }
  return text;
}

std::string
EtcdClient::call (const std::string &path, const std::string &body)
{
  if (endpoints_.empty ())
    throw EtcdError ("no etcd endpoint configured");
  std::string why;
  for (size_t tried = 0; tried < endpoints_.size (); tried++) {
    const size_t at = (current_ + tried) % endpoints_.size ();
    bool reached = false;
    std::string text = call_one (endpoints_[at], path, body, reached);
    if (reached) {
      current_ = at;
      return text;
    }
    why += (why.empty () ? "" : "; ") + text;
  }
  throw EtcdError (why);
}

EtcdClient::Lease
EtcdClient::grant (int ttl_s)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  member (b, "TTL", std::to_string (ttl_s));
  json_builder_end_object (b);
  Reply r (call ("/v3/lease/grant", render (b)));
  Lease l{int64_member (r.root, "ID"), (int)int64_member (r.root, "TTL")};
  if (l.id == 0)
    throw EtcdError ("etcd granted no lease: " + string_member (r.root, "error"));
  return l;
}

int
EtcdClient::keepalive (int64_t lease)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  member (b, "ID", std::to_string (lease));
  json_builder_end_object (b);
  // A streaming call in gRPC; the gateway answers one request with one
  // {"result": {...}}.  An expired lease comes back without a TTL.
  Reply r (call ("/v3/lease/keepalive", render (b)));
  return (int)int64_member (object_member (r.root, "result"), "TTL");
}

void
EtcdClient::revoke (int64_t lease)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  member (b, "ID", std::to_string (lease));
  json_builder_end_object (b);
  call ("/v3/lease/revoke", render (b));
}

int64_t
EtcdClient::put (const std::string &key, const std::string &value, int64_t lease)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_put (b, key, value, lease);
  json_builder_end_object (b);
  Reply r (call ("/v3/kv/put", render (b)));
  return int64_member (object_member (r.root, "header"), "revision");
}

std::vector<KeyValue>
EtcdClient::list (const std::string &prefix, int64_t *revision)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_range (b, prefix, true);
  json_builder_end_object (b);
  Reply r (call ("/v3/kv/range", render (b)));
  if (revision)
    *revision = int64_member (object_member (r.root, "header"), "revision");
  return key_values (r.root);
}

std::optional<KeyValue>
EtcdClient::get (const std::string &key)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_range (b, key, false);
  json_builder_end_object (b);
  Reply r (call ("/v3/kv/range", render (b)));
  auto kvs = key_values (r.root);
  if (kvs.empty ())
    return std::nullopt;
  return kvs.front ();
}

int64_t
EtcdClient::remove (const std::string &key, bool prefix)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  add_range (b, key, prefix);
  json_builder_end_object (b);
  Reply r (call ("/v3/kv/deleterange", render (b)));
  return int64_member (r.root, "deleted");
}

TxnResult
EtcdClient::txn (const std::vector<Compare> &compare, const std::vector<Op> &success,
                 const std::vector<Op> &failure)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "compare");
  json_builder_begin_array (b);
  for (const Compare &c : compare) {
    json_builder_begin_object (b);
    member (b, "key", b64 (c.key));
    member (b, "target", target_name (c.target));
    member (b, "result", "EQUAL");
    member (b, target_field (c.target),
            c.target == Compare::Target::kValue ? b64 (c.value) : std::to_string (c.number));
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  add_ops (b, "success", success);
  add_ops (b, "failure", failure);
  json_builder_end_object (b);

  Reply r (call ("/v3/kv/txn", render (b)));
  TxnResult t;
  t.succeeded = json_object_get_boolean_member_with_default (r.root, "succeeded", FALSE);
  t.revision = int64_member (object_member (r.root, "header"), "revision");
  if (JsonArray *responses = array_member (r.root, "responses"))
    for (guint i = 0; i < json_array_get_length (responses); i++)
      if (JsonObject *range = object_member (json_array_get_object_element (responses, i), "response_range"))
        for (auto &kv : key_values (range))
          t.ranged.push_back (std::move (kv));
  return t;
}

std::vector<MemberStatus>
EtcdClient::status ()
{
  std::vector<MemberStatus> out;
  for (const auto &e : endpoints_) {
    MemberStatus s;
    s.endpoint = e;
    try {
      bool reached = false;
      std::string text = call_one (e, "/v3/maintenance/status", "{}", reached);
      if (!reached) {
        s.error = text;
      } else {
        Reply r (text);
        JsonObject *header = object_member (r.root, "header");
        s.version = string_member (r.root, "version");
        s.leader = string_member (r.root, "leader");
        s.member_id = string_member (header, "member_id");
        s.revision = int64_member (header, "revision");
        // A member without a leader cannot serve a consistent read.
        s.healthy = !s.leader.empty () && s.leader != "0";
        if (!s.healthy)
          s.error = "no leader";
      }
    } catch (const EtcdError &err) {
      s.error = err.what ();
    }
    out.push_back (std::move (s));
  }
  return out;
}

} // namespace livemicro::cluster
