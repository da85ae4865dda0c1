#include "config.h"

#include <json-glib/json-glib.h>
#include <livemicro/json_text.h>

#include <algorithm>
#include <set>

namespace livemicro::orchestrator {

namespace {

class Reader {
public:
  Reader (JsonObject *o, std::string where) : o_ (o), where_ (std::move (where)) {}

  void only (std::initializer_list<const char *> keys) const
  {
    std::set<std::string> allowed (keys.begin (), keys.end ());
    GList *members = json_object_get_members (o_);
    for (GList *l = members; l; l = l->next)
      if (!allowed.count (static_cast<const char *> (l->data))) {
        std::string key = static_cast<const char *> (l->data);
        g_list_free (members);
        throw ConfigError (where_ + key + ": unknown key");
      }
    g_list_free (members);
  }
  bool has (const char *key) const { return json_object_has_member (o_, key); }
  std::string string (const char *key, const std::string &fallback = "") const
  {
    if (!has (key))
      return fallback;
    JsonNode *n = json_object_get_member (o_, key);
    if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_STRING)
      throw ConfigError (where_ + key + ": expected a string");
    return json_node_get_string (n);
  }
  int integer (const char *key, int fallback, int min, int max) const
  {
    if (!has (key))
      return fallback;
    JsonNode *n = json_object_get_member (o_, key);
    if (!JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_INT64)
      throw ConfigError (where_ + key + ": expected an integer");
    gint64 v = json_node_get_int (n);
    if (v < min || v > max)
      throw ConfigError (where_ + key + ": " + std::to_string (v) + " is outside [" + std::to_string (min)
                         + ", " + std::to_string (max) + "]");
    return (int)v;
  }
  double number (const char *key, double fallback, double min, double max) const
  {
    if (!has (key))
      return fallback;
    JsonNode *n = json_object_get_member (o_, key);
    GType t = JSON_NODE_HOLDS_VALUE (n) ? json_node_get_value_type (n) : G_TYPE_INVALID;
    if (t != G_TYPE_INT64 && t != G_TYPE_DOUBLE)
      throw ConfigError (where_ + key + ": expected a number");
    double v = json_node_get_double (n);
    if (!(v >= min && v <= max))
      throw ConfigError (where_ + key + ": " + std::to_string (v) + " is outside [" + std::to_string (min)
                         + ", " + std::to_string (max) + "]");
    return v;
  }
  JsonObject *object (const char *key) const
  {
    if (!has (key))
      return nullptr;
    JsonNode *n = json_object_get_member (o_, key);
    if (!JSON_NODE_HOLDS_OBJECT (n))
      throw ConfigError (where_ + key + ": expected an object");
    return json_node_get_object (n);
  }
  JsonArray *array (const char *key) const
  {
    if (!has (key))
      return nullptr;
    JsonNode *n = json_object_get_member (o_, key);
    if (!JSON_NODE_HOLDS_ARRAY (n))
      throw ConfigError (where_ + key + ": expected an array");
    return json_node_get_array (n);
  }
  const std::string &where () const { return where_; }

private:
  JsonObject *o_;
  std::string where_;
};

JsonObject *
object_at (JsonArray *a, guint i, const std::string &where)
{
  JsonNode *n = json_array_get_element (a, i);
  if (!JSON_NODE_HOLDS_OBJECT (n))
    throw ConfigError (where + ": expected an object");
  return json_node_get_object (n);
}

bool
valid_id (const std::string &id)
{
  if (id.empty () || id.size () > 64)
    return false;
  return std::all_of (id.begin (), id.end (),
                      [] (char c) { return g_ascii_isalnum (c) || c == '-' || c == '_'; });
}

// An etcd endpoint: an http(s) URL with a host and nothing after the port.
void
check_etcd_endpoint (const std::string &url, const std::string &where)
{
  g_autoptr (GUri) u = g_uri_parse (url.c_str (), G_URI_FLAGS_NONE, nullptr);
  const char *scheme = u ? g_uri_get_scheme (u) : nullptr;
  if (!u || !scheme || (g_strcmp0 (scheme, "http") && g_strcmp0 (scheme, "https")) || !g_uri_get_host (u)
      || !*g_uri_get_host (u) || (*g_uri_get_path (u) && g_strcmp0 (g_uri_get_path (u), "/")))
    throw ConfigError (where + ": '" + url + "' is not an etcd endpoint (e.g. http://10.0.0.5:2379)");
}

// "cluster": the edge cloud this node joins (docs/edge-cloud.md).
void
read_cluster_section (const Reader &r, livemicro::cluster::ClusterConfig &c)
{
  r.only ({"etcd", "node", "site", "lease_ttl_s", "capacity_viewers", "prefix"});
  JsonArray *etcd = r.array ("etcd");
  if (!etcd || json_array_get_length (etcd) == 0)
    throw ConfigError (r.where () + "etcd: a list of etcd endpoints is needed");
  for (guint i = 0; i < json_array_get_length (etcd); i++) {
    const std::string where = r.where () + "etcd[" + std::to_string (i) + "]";
    JsonNode *e = json_array_get_element (etcd, i);
    if (!JSON_NODE_HOLDS_VALUE (e) || json_node_get_value_type (e) != G_TYPE_STRING)
      throw ConfigError (where + ": expected a string");
    check_etcd_endpoint (json_node_get_string (e), where);
    c.etcd.push_back (json_node_get_string (e));
  }
  c.node = r.string ("node", c.node);
  if (!c.node.empty () && !valid_id (c.node))
    throw ConfigError (r.where () + "node: '" + c.node + "' must be 1-64 letters, digits, - or _");
  c.site = r.string ("site", c.site);
  c.lease_ttl_s = r.integer ("lease_ttl_s", c.lease_ttl_s, 1, 60);
  c.capacity_viewers = r.integer ("capacity_viewers", c.capacity_viewers, 0, 1000000);
  c.prefix = r.string ("prefix", c.prefix);
  if (c.prefix.empty () || c.prefix[0] != '/')
    throw ConfigError (r.where () + "prefix: must start with '/'");
}

} // namespace

void
Config::set_cluster_endpoints (const std::string &arg)
{
  const std::string head = "etcd=";
  if (arg.compare (0, head.size (), head) != 0 || arg.size () == head.size ())
    throw ConfigError ("--cluster: expected etcd=URL[,URL…], e.g. etcd=http://10.0.0.5:2379");
  std::vector<std::string> endpoints;
  g_auto (GStrv) urls = g_strsplit (arg.c_str () + head.size (), ",", -1);
  for (char **u = urls; *u; u++) {
    check_etcd_endpoint (*u, "--cluster");
    endpoints.push_back (*u);
  }
  cluster.etcd = std::move (endpoints); // only once every one is good
}

void
Config::set_node_name (const std::string &name)
{
  if (!valid_id (name))
    throw ConfigError ("--node-name: '" + name + "' must be 1-64 letters, digits, - or _");
  cluster.node = name;
}

const std::vector<std::string> &
known_roles ()
{
  static const std::vector<std::string> roles = {"owner", "consultant", "trainee", "guest"};
  return roles;
}

bool
is_known_role (const std::string &role)
{
  const auto &r = known_roles ();
  return std::find (r.begin (), r.end (), role) != r.end ();
}

std::string
compose_uri (const MicroscopeConfig &m)
{
  auto part = [] (const std::string &v) {
    g_autofree char *e = g_uri_escape_string (v.c_str (), ":/?=,@;", FALSE);
    return std::string (e);
  };
  std::string uri = "compose:?camera=" + part (m.camera);
  if (!m.stage.empty ())
    uri += "&stage=" + part (m.stage);
  if (!m.focus.empty ())
    uri += "&focus=" + part (m.focus);
  if (!m.objectives.empty ()) {
    std::string list;
    for (const auto &o : m.objectives) {
      g_autofree char *upp = g_strdup_printf ("%.6g", o.um_per_px);
      list += (list.empty () ? "" : ",") + std::to_string (o.magnification) + ":" + upp;
      if (o.numerical_aperture > 0) {
        g_autofree char *na = g_strdup_printf ("%.4g", o.numerical_aperture);
        list += std::string (":") + na;
      }
    }
    uri += "&objectives=" + list;
  }
  if (m.objective > 0)
    uri += "&objective=" + std::to_string (m.objective);
  return uri;
}

const MicroscopeConfig *
Config::microscope (const std::string &id) const
{
  for (const auto &m : microscopes)
    if (m.id == id)
      return &m;
  return nullptr;
}

Config
Config::demo ()
{
  Config c;
  MicroscopeConfig m;
  m.id = "demo";
  m.name = "Virtual microscope (generated H&E slide)";
  m.uri = "sim://synthetic";
  c.microscopes.push_back (m);
  return c;
}

Config
Config::load (const std::string &path, bool in_cluster)
{
  g_autofree gchar *text = nullptr;
  gsize len = 0;
  g_autoptr (GError) error = nullptr;
  if (!g_file_get_contents (path.c_str (), &text, &len, &error))
    throw ConfigError ("config '" + path + "': " + error->message);
  return parse (std::string (text, len), path, in_cluster);
}

namespace {

// The top-level object of a configuration's text, loaded into `parser`.
JsonObject *
root_object (JsonParser *parser, const std::string &json, const std::string &source)
{
  // Before json-glib: deep nesting overflows its stack, half a surrogate
  // pair becomes invalid UTF-8 (and may leak).  A configuration is 4 deep.
  if (auto problem = livemicro::json::text_problem (json, 32))
    throw ConfigError ("config '" + source + "': line " + std::to_string (problem->line) + ": "
                       + problem->what);
  g_autoptr (GError) error = nullptr;
  if (!json_parser_load_from_data (parser, json.data (), (gssize)json.size (), &error)) {
    // json-glib says "<data>:LINE:COL: Parse error: ..."; name the file.
    std::string msg = error->message;
    if (msg.rfind ("<data>", 0) == 0)
      msg = source + msg.substr (6);
    throw ConfigError ("config '" + source + "': " + msg);
  }
  JsonNode *root = json_parser_get_root (parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT (root))
    throw ConfigError ("config '" + source + "': the top level must be a JSON object");
  return json_node_get_object (root);
}

void
read_tls (Reader &r, Config &c)
{
  JsonObject *tls = r.object ("tls");
  if (!tls)
    return;
  Reader t (tls, r.where () + "tls.");
  t.only ({"certificate", "key"});
  c.tls_certificate = t.string ("certificate");
  c.tls_key = t.string ("key");
  if (c.tls_certificate.empty () != c.tls_key.empty ())
    throw ConfigError (t.where () + "certificate and key go together");
}

void
read_video (Reader &r, Config &c)
{
  JsonObject *video = r.object ("video");
  if (!video)
    return;
  Reader v (video, r.where () + "video.");
  v.only ({"width", "height", "framerate", "bitrate_kbps", "keyframe_interval"});
  c.video.width = v.integer ("width", c.video.width, 64, 3840);
  c.video.height = v.integer ("height", c.video.height, 64, 2160);
  c.video.framerate = v.integer ("framerate", c.video.framerate, 1, 60);
  c.video.bitrate_kbps = v.integer ("bitrate_kbps", c.video.bitrate_kbps, 100, 50000);
  c.video.keyframe_interval = v.integer ("keyframe_interval", c.video.keyframe_interval, 1, 600);
  if (c.video.width % 2 || c.video.height % 2)
    throw ConfigError (v.where () + "width and height must be even (H.264 4:2:0)");
}

void
read_control (Reader &r, Config &c)
{
  JsonObject *control = r.object ("control");
  if (!control)
    return;
  Reader k (control, r.where () + "control.");
  k.only ({"idle_timeout_ms", "max_commands_per_s"});
  c.control.idle_timeout_ms = k.integer ("idle_timeout_ms", c.control.idle_timeout_ms, 100, 3600000);
  c.control.max_commands_per_s = k.integer ("max_commands_per_s", c.control.max_commands_per_s, 1, 1000);
}

// A microscope made of parts: its objectives, each magnification once.
void
read_objectives (Reader &m, const std::string &where, MicroscopeConfig &mc)
{
  JsonArray *os = m.array ("objectives");
  for (guint k = 0; os && k < json_array_get_length (os); k++) {
    std::string ow = where + "objectives[" + std::to_string (k) + "].";
    Reader o (object_at (os, k, ow), ow);
    o.only ({"magnification", "um_per_px", "numerical_aperture"});
    ObjectiveConfig oc;
    oc.magnification = o.integer ("magnification", 0, 1, 1000);
    if (!o.has ("magnification"))
      throw ConfigError (ow + "magnification: needed (e.g. 10)");
    oc.um_per_px = o.number ("um_per_px", 0, 1e-6, 100);
    if (!o.has ("um_per_px"))
      throw ConfigError (ow + "um_per_px: needed (µm per camera pixel with this objective)");
    oc.numerical_aperture = o.number ("numerical_aperture", 0, 0, 1.6);
    for (const auto &prev : mc.objectives)
      if (prev.magnification == oc.magnification)
        throw ConfigError (ow + "magnification: " + std::to_string (oc.magnification) + " is listed twice");
    mc.objectives.push_back (oc);
  }
  mc.objective = m.integer ("objective", 0, 1, 1000);
  if (mc.objective
      && std::none_of (mc.objectives.begin (), mc.objectives.end (),
                       [&] (const ObjectiveConfig &o) { return o.magnification == mc.objective; }))
    throw ConfigError (where + "objective: " + std::to_string (mc.objective) + " is not in objectives");
}

// microscopes[i]: a URI, or a camera with stage, focus and objectives.
MicroscopeConfig
read_microscope (JsonArray *ms, guint i, const std::string &where, const Config &c)
{
  Reader m (object_at (ms, i, where), where);
  m.only ({"id", "name", "uri", "capture_template", "camera", "stage", "focus", "objectives", "objective"});
  MicroscopeConfig mc;
  mc.id = m.string ("id");
  if (!valid_id (mc.id))
    throw ConfigError (where + "id: '" + mc.id + "' must be 1-64 letters, digits, - or _");
  if (c.microscope (mc.id))
    throw ConfigError (where + "id: '" + mc.id + "' is used twice");
  mc.name = m.string ("name", mc.id);
  mc.uri = m.string ("uri");
  mc.camera = m.string ("camera");
  mc.stage = m.string ("stage");
  mc.focus = m.string ("focus");
  bool parts = !mc.camera.empty () || !mc.stage.empty () || !mc.focus.empty () || m.has ("objectives")
               || m.has ("objective");
  if (!mc.uri.empty () && parts)
    throw ConfigError (where + "uri: give either uri or camera/stage/focus/objectives, not both");
  if (parts && mc.camera.empty ())
    throw ConfigError (where
                       + "camera: a microscope made of parts needs a camera URI "
                         "(e.g. aravis://Fake_1 or v4l2:///dev/video0)");
  if (mc.uri.empty () && !parts)
    throw ConfigError (where
                       + "uri: a microscope URI is needed (e.g. sim://synthetic), or "
                         "camera/stage/focus/objectives");
  read_objectives (m, where, mc);
  if (parts) {
    mc.uri = compose_uri (mc);
    mc.capture_template = "capture-camera"; // the camera's own size and rate
  }
  mc.capture_template = m.string ("capture_template", mc.capture_template);
  if (!valid_id (mc.capture_template))
    throw ConfigError (where + "capture_template: not a template name");
  return mc;
}

void
read_users (Reader &r, Config &c)
{
  JsonArray *us = r.array ("users");
  for (guint i = 0; us && i < json_array_get_length (us); i++) {
    std::string where = r.where () + "users[" + std::to_string (i) + "].";
    Reader u (object_at (us, i, where), where);
    u.only ({"name", "roles"});
    UserConfig uc;
    uc.name = u.string ("name");
    if (uc.name.empty ())
      throw ConfigError (where + "name: empty");
    JsonArray *roles = u.array ("roles");
    if (!roles)
      throw ConfigError (where + "roles: a list of roles is needed");
    for (guint k = 0; k < json_array_get_length (roles); k++) {
      JsonNode *e = json_array_get_element (roles, k);
      const char *role = JSON_NODE_HOLDS_VALUE (e) ? json_node_get_string (e) : nullptr;
      if (!role || !is_known_role (role))
        throw ConfigError (where + "roles[" + std::to_string (k)
                           + "]: not one of owner, consultant, trainee, guest");
      uc.roles.push_back (role);
    }
    c.users.push_back (uc);
  }
}

} // namespace

Config
Config::parse (const std::string &json, const std::string &source, bool in_cluster)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  Reader r (root_object (parser, json, source), "config '" + source + "': ");
  r.only ({"listen_address", "public_host", "http_port", "rtsp_port", "state_dir", "admin_token", "tls",
           "pipelines_dir", "web_dir", "profiles_file", "max_body_bytes", "video", "control", "rtsp",
           "recordings", "cors", "microscopes", "users", "cluster"});
  Config c;
  c.listen_address = r.string ("listen_address", c.listen_address);
  c.public_host = r.string ("public_host");
  c.http_port = r.integer ("http_port", c.http_port, 0, 65535);
  c.rtsp_port = r.integer ("rtsp_port", c.rtsp_port, 0, 65535);
  c.state_dir = r.string ("state_dir");
  c.admin_token = r.string ("admin_token");
  c.pipelines_dir = r.string ("pipelines_dir");
  c.web_dir = r.string ("web_dir");
  c.profiles_file = r.string ("profiles_file");
  c.max_body_bytes = (size_t)r.integer ("max_body_bytes", (int)c.max_body_bytes, 1024, 16 << 20);
  read_tls (r, c);
  read_video (r, c);
  read_control (r, c);
  if (JsonObject *cluster = r.object ("cluster"))
    read_cluster_section (Reader (cluster, r.where () + "cluster."), c.cluster);
  if (JsonObject *rec = r.object ("recordings")) {
    Reader k (rec, r.where () + "recordings.");
    k.only ({"directory", "segment_s"});
    c.recordings.directory = k.string ("directory");
    c.recordings.segment_s = k.integer ("segment_s", c.recordings.segment_s, 1, 3600);
  }
  if (JsonObject *cors = r.object ("cors")) {
    Reader k (cors, r.where () + "cors.");
    k.only ({"allowed_origins"});
    JsonArray *origins = k.array ("allowed_origins");
    for (guint i = 0; origins && i < json_array_get_length (origins); i++) {
      JsonNode *e = json_array_get_element (origins, i);
      const char *o = JSON_NODE_HOLDS_VALUE (e) && json_node_get_value_type (e) == G_TYPE_STRING
                          ? json_node_get_string (e)
                          : nullptr;
      std::string origin = o ? o : "";
      // An origin is scheme://host[:port], nothing after it (browsers send no path).
      size_t scheme = origin.find ("://");
      bool valid = origin == "*"
                   || ((origin.rfind ("http://", 0) == 0 || origin.rfind ("https://", 0) == 0)
                       && origin.size () > scheme + 3 && origin.find ('/', scheme + 3) == std::string::npos);
      if (!valid)
        throw ConfigError (k.where () + "allowed_origins[" + std::to_string (i)
                           + "]: not an origin (http[s]://host[:port], or \"*\")");
      c.cors.allowed_origins.push_back (origin);
    }
  }
  if (JsonObject *rtsp = r.object ("rtsp")) {
    Reader k (rtsp, r.where () + "rtsp.");
    k.only ({"client_threads"});
    c.rtsp.client_threads
        = k.integer ("client_threads", c.rtsp.client_threads, 0, RtspConfig::kMaxClientThreads);
  }
  JsonArray *ms = r.array ("microscopes");
  // In an edge cloud a node may only serve viewers: no microscope of its own.
  if ((!ms || json_array_get_length (ms) == 0) && !c.cluster.enabled () && !in_cluster)
    throw ConfigError (r.where () + "microscopes: at least one microscope is needed");
  for (guint i = 0; ms && i < json_array_get_length (ms); i++)
    c.microscopes.push_back (
        read_microscope (ms, i, r.where () + "microscopes[" + std::to_string (i) + "].", c));
  read_users (r, c);
  return c;
}

bool
CorsConfig::allows (const std::string &origin) const
{
  if (origin.empty () || origin == "null")
    return false;
  for (const std::string &o : allowed_origins)
    if (o == "*" || o == origin)
      return true;
  return false;
}

} // namespace livemicro::orchestrator
