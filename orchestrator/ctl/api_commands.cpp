// livemicroctl's API commands over livemicrod's HTTP API: sessions,
// microscopes, control, commands, stills, annotations and the audit log.
//
// Every command prints a human table by default and the API's JSON with
// --json; errors go to stderr as "livemicroctl: …" with exit status 1 (the
// server or the command failed) or 2 (bad arguments).  Request bodies are
// built with json-glib.
#include "api_commands.h"

#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace {

struct Options {
  std::string server = "http://127.0.0.1:8080";
  std::string token;
  bool json = false;
  bool wait = false;
  bool insecure = false;
  double timeout_s = 120;
  std::string user, role, microscope, session, lease, output, after, limit, um_per_px, label, segment_s;
  std::vector<std::string> args; // positional
};

int
usage (FILE *to)
{
  std::fprintf (to, "usage: livemicroctl [--server URL] [--token TOKEN] [--json] "
                    "<command>\n\n"
                    "  session create --user NAME --role owner|consultant|trainee|guest "
                    "[--microscope ID]\n"
                    "  session list\n"
                    "  session show ID\n"
                    "  session delete ID\n"
                    "  microscope list\n"
                    "  microscope show ID\n"
                    "  control request|release|revoke [--microscope ID]\n"
                    "  control renew --lease L [--microscope ID]\n"
                    "  control grant SESSION [--microscope ID]\n"
                    "  command [--microscope ID] --lease L [--wait [--timeout S]]\n"
                    "          move X_UM Y_UM | move_by DX DY | focus Z_UM | focus_by DZ | "
                    "objective MAG |\n"
                    "          autofocus | stop\n"
                    "  command-status ID [--microscope ID]\n"
                    "  annotate point|arrow|region X,Y [X,Y ...] [--label TEXT] "
                    "[--microscope ID]   (slide µm)\n"
                    "  annotations [--microscope ID] [--session ID] [-o FILE.geojson] "
                    "[--um-per-px X]\n"
                    "  still SESSION -o FILE.png\n"
                    "  record start SESSION [--segment-s N] | record stop SESSION | record show SESSION\n"
                    "  audit [--after ID] [--limit N]\n"
                    "  cluster status   (the edge cloud: nodes, microscopes' homes, etcd)\n\n"
                    "The server defaults to $LIVEMICRO_SERVER or http://127.0.0.1:8080; the "
                    "token to\n"
                    "$LIVEMICRO_TOKEN, else $LIVEMICRO_ADMIN_TOKEN.  --json prints the API's "
                    "JSON.\n"
                    "command --wait waits for the command's end and prints 'done' or "
                    "'failed: WHY'\n"
                    "(exit status 1 when it failed).  annotations exports the microscope's "
                    "annotations\n"
                    "(every session's the token may see) as QuPath GeoJSON.\n"
                    "--insecure accepts any TLS certificate (self-signed test setups).\n");
  return to == stdout ? 0 : 2;
}

int
bad_usage (const std::string &why)
{
  std::fprintf (stderr, "livemicroctl: %s\n", why.c_str ());
  return 2;
}

struct Reply {
  int status = 0;
  std::string body;
  std::string transport_error;
};

Reply
call (const Options &o, const char *method, const std::string &path, const std::string &body = "")
{
  Reply r;
  g_autoptr (SoupSession) session = soup_session_new_with_options ("timeout", 15, nullptr);
  g_autoptr (SoupMessage) msg = soup_message_new (method, (o.server + path).c_str ());
  if (!msg) {
    r.transport_error = "'" + o.server + "' is not a server URL";
    return r;
  }
  if (o.insecure)
    g_signal_connect (msg, "accept-certificate",
                      G_CALLBACK (+[] (SoupMessage *, GTlsCertificate *, GTlsCertificateFlags,
                                       gpointer) -> gboolean { return TRUE; }),
                      nullptr);
  if (!o.token.empty ())
    soup_message_headers_replace (soup_message_get_request_headers (msg), "Authorization",
                                  ("Bearer " + o.token).c_str ());
  if (!body.empty ()) {
    g_autoptr (GBytes) b = g_bytes_new (body.data (), body.size ());
    soup_message_set_request_body_from_bytes (msg, "application/json", b);
  }
  g_autoptr (GError) error = nullptr;
  g_autoptr (GBytes) out = soup_session_send_and_read (session, msg, nullptr, &error);
  if (!out) {
    r.transport_error = std::string ("cannot reach ") + o.server + ": " + error->message;
    return r;
  }
  r.status = (int)soup_message_get_status (msg);
  gsize len = 0;
  const char *data = static_cast<const char *> (g_bytes_get_data (out, &len));
  r.body.assign (data ? data : "", len);
  return r;
}

// The reply's JSON root (nullptr when it is not JSON).
struct Parsed {
  JsonParser *parser = json_parser_new ();
  JsonNode *root = nullptr;
  explicit Parsed (const std::string &body)
  {
    if (!body.empty () && json_parser_load_from_data (parser, body.c_str (), (gssize)body.size (), nullptr))
      root = json_parser_get_root (parser);
  }
  ~Parsed () { g_object_unref (parser); }
  Parsed (const Parsed &) = delete;
  Parsed &operator= (const Parsed &) = delete;
  JsonObject *object () const
  {
    return root && JSON_NODE_HOLDS_OBJECT (root) ? json_node_get_object (root) : nullptr;
  }
};

// A failed call as a message on stderr; 0 when the call succeeded.
int
failure (const Reply &r)
{
  if (!r.transport_error.empty ()) {
    std::fprintf (stderr, "livemicroctl: %s\n", r.transport_error.c_str ());
    return 1;
  }
  if (r.status >= 400) {
    Parsed p (r.body);
    std::string msg = r.body;
    if (p.object ())
      msg = json_object_get_string_member_with_default (p.object (), "error", r.body.c_str ());
    std::fprintf (stderr, "livemicroctl: HTTP %d: %s\n", r.status, msg.c_str ());
    return 1;
  }
  return 0;
}

// Prints the reply (the API's JSON, or `human`'s table); returns the exit
// status.
int
finish (const Options &o, const Reply &r, const std::function<void (JsonObject *)> &human)
{
  if (int f = failure (r))
    return f;
  if (o.json) {
    std::printf ("%s\n", r.body.empty () ? "{}" : r.body.c_str ());
    return 0;
  }
  Parsed p (r.body);
  human (p.object ());
  return 0;
}

const char *
str (JsonObject *o, const char *k)
{
  return o ? json_object_get_string_member_with_default (o, k, "") : "";
}

gint64
integer (JsonObject *o, const char *k)
{
  return o ? json_object_get_int_member_with_default (o, k, 0) : 0;
}

// A JSON object built member by member, as text.
class Body {
public:
  Body () { json_builder_begin_object (b_); }
  ~Body () { g_object_unref (b_); }
  Body (const Body &) = delete;
  Body &operator= (const Body &) = delete;
  Body &string (const char *k, const std::string &v)
  {
    json_builder_set_member_name (b_, k);
    json_builder_add_string_value (b_, v.c_str ());
    return *this;
  }
  Body &number (const char *k, double v)
  {
    json_builder_set_member_name (b_, k);
    json_builder_add_double_value (b_, v);
    return *this;
  }
  Body &integer (const char *k, gint64 v)
  {
    json_builder_set_member_name (b_, k);
    json_builder_add_int_value (b_, v);
    return *this;
  }
  Body &object (const char *k, const std::vector<std::pair<const char *, double>> &members)
  {
    json_builder_set_member_name (b_, k);
    json_builder_begin_object (b_);
    for (const auto &[name, v] : members) {
      json_builder_set_member_name (b_, name);
      json_builder_add_double_value (b_, v);
    }
    json_builder_end_object (b_);
    return *this;
  }
  Body &points (const char *k, const std::vector<std::pair<double, double>> &pts)
  {
    json_builder_set_member_name (b_, k);
    json_builder_begin_array (b_);
    for (const auto &[x, y] : pts) {
      json_builder_begin_array (b_);
      json_builder_add_double_value (b_, x);
      json_builder_add_double_value (b_, y);
      json_builder_end_array (b_);
    }
    json_builder_end_array (b_);
    return *this;
  }
  std::string text ()
  {
    json_builder_end_object (b_);
    g_autoptr (JsonNode) n = json_builder_get_root (b_);
    g_autofree char *s = json_to_string (n, FALSE);
    return s;
  }

private:
  JsonBuilder *b_ = json_builder_new ();
};

bool
parse_number (const std::string &v, double &out)
{
  char *end = nullptr;
  out = g_ascii_strtod (v.c_str (), &end);
  return !v.empty () && end && !*end && std::isfinite (out);
}

void
print_session_header ()
{
  std::printf ("%-32s  %-16s  %-10s  %-10s  %s\n", "ID", "USER", "ROLE", "MICROSCOPE", "VIEW");
}

void
print_session_line (JsonObject *s)
{
  JsonObject *view
      = s && json_object_has_member (s, "view") ? json_object_get_object_member (s, "view") : nullptr;
  std::printf ("%-32s  %-16s  %-10s  %-10s  %s\n", str (s, "id"), str (s, "user"), str (s, "role"),
               str (s, "microscope"), view ? str (view, "state") : "");
}

void
print_microscope_header ()
{
  std::printf ("%-12s %-8s %12s %12s %10s %5s  %-8s %s\n", "ID", "STATE", "X_UM", "Y_UM", "Z_UM", "OBJ",
               "MOTION", "NAME");
}

void
print_microscope (JsonObject *m)
{
  JsonNode *stage = m ? json_object_get_member (m, "stage") : nullptr;
  JsonObject *st = stage && JSON_NODE_HOLDS_OBJECT (stage) ? json_node_get_object (stage) : nullptr;
  auto coord
      = [&] (const char *k) { return st ? json_object_get_double_member_with_default (st, k, 0) : 0.0; };
  std::printf ("%-12s %-8s %12.1f %12.1f %10.2f %4dx  %-8s %s\n", str (m, "id"),
               json_object_get_boolean_member_with_default (m, "online", FALSE) ? "online" : "OFFLINE",
               coord ("x_um"), coord ("y_um"), coord ("z_um"), (int)integer (m, "objective"),
               json_object_get_boolean_member_with_default (m, "moving", FALSE) ? "moving" : "still",
               str (m, "name"));
}

// The microscope of a command: given, or the only one the token sees.
std::string
microscope_id (const Options &o)
{
  if (!o.microscope.empty ())
    return o.microscope;
  Reply r = call (o, "GET", "/api/v1/microscopes");
  Parsed p (r.body);
  if (r.status == 200 && p.object ()) {
    JsonArray *a = json_object_get_array_member (p.object (), "microscopes");
    if (a && json_array_get_length (a) == 1)
      return str (json_array_get_object_element (a, 0), "id");
  }
  return "";
}

// ---- subcommands, one function each
// --------------------------------------------------

int
audit (const Options &o)
{
  std::string q = "?limit=" + (o.limit.empty () ? std::string ("1000") : o.limit)
                  + (o.after.empty () ? "" : "&after=" + o.after);
  return finish (o, call (o, "GET", "/api/v1/audit" + q), [] (JsonObject *r) {
    JsonArray *a = r ? json_object_get_array_member (r, "audit") : nullptr;
    std::printf ("%6s  %-20s  %-12s %-10s %-10s %-8s %s\n", "ID", "TIME", "USER", "ROLE", "MICROSCOPE",
                 "ACTION", "DETAIL -> RESULT");
    for (guint i = 0; a && i < json_array_get_length (a); i++) {
      JsonObject *e = json_array_get_object_element (a, i);
      g_autoptr (GDateTime) t = g_date_time_new_from_unix_utc (integer (e, "time_unix_us") / 1000000);
      g_autofree char *when = g_date_time_format_iso8601 (t);
      std::printf ("%6lld  %-20s  %-12s %-10s %-10s %-8s %s -> %s\n", (long long)integer (e, "id"), when,
                   str (e, "user"), str (e, "role"), str (e, "microscope"), str (e, "action"),
                   str (e, "detail"), str (e, "result"));
    }
  });
}

// cluster status: nodes (site, load, microscopes homed there), each
// microscope's home and fencing revision, and each etcd member's health.
int
cluster (const Options &o, const std::string &verb)
{
  if (verb != "status")
    return bad_usage ("cluster: expected 'cluster status'");
  return finish (o, call (o, "GET", "/api/v1/cluster"), [] (JsonObject *r) {
    std::printf ("node %s (site %s): %s%s%s\n\n", str (r, "node"), str (r, "site"),
                 json_object_get_boolean_member_with_default (r, "joined", FALSE) ? "joined" : "NOT JOINED",
                 *str (r, "error") ? " — " : "", str (r, "error"));
    std::printf ("%-16s %-12s %5s %8s %9s %9s  %-28s %s\n", "NODE", "SITE", "CPU", "VIEWERS", "ENCODERS",
                 "SESSIONS", "HTTP", "MICROSCOPES");
    JsonArray *nodes = json_object_get_array_member (r, "nodes");
    for (guint i = 0; nodes && i < json_array_get_length (nodes); i++) {
      JsonObject *n = json_array_get_object_element (nodes, i);
      JsonObject *load
          = json_object_has_member (n, "load") ? json_object_get_object_member (n, "load") : nullptr;
      std::string homed;
      JsonArray *ms = json_object_get_array_member (n, "microscopes");
      for (guint k = 0; ms && k < json_array_get_length (ms); k++)
        homed += (homed.empty () ? "" : ",") + std::string (json_array_get_string_element (ms, k));
      std::printf ("%-16s %-12s %4.0f%% %8lld %9lld %9lld  %-28s %s\n", str (n, "name"), str (n, "site"),
                   load ? 100 * json_object_get_double_member_with_default (load, "cpu", 0) : 0.0,
                   (long long)integer (load, "viewers"), (long long)integer (load, "encoders"),
                   (long long)integer (load, "sessions"), str (n, "http_url"), homed.c_str ());
    }
    std::printf ("\n%-16s %-16s %s\n", "MICROSCOPE", "HOME", "FENCING REVISION");
    JsonArray *homes = json_object_get_array_member (r, "microscopes");
    for (guint i = 0; homes && i < json_array_get_length (homes); i++) {
      JsonObject *h = json_array_get_object_element (homes, i);
      std::printf ("%-16s %-16s %lld\n", str (h, "id"), str (h, "home"),
                   (long long)integer (h, "fencing_revision"));
    }
    std::printf ("\n%-28s %-8s %-8s %s\n", "ETCD MEMBER", "HEALTH", "VERSION", "LEADER / ERROR");
    JsonArray *etcd = json_object_get_array_member (r, "etcd");
    for (guint i = 0; etcd && i < json_array_get_length (etcd); i++) {
      JsonObject *m = json_array_get_object_element (etcd, i);
      const bool healthy = json_object_get_boolean_member_with_default (m, "healthy", FALSE);
      std::printf ("%-28s %-8s %-8s %s\n", str (m, "endpoint"), healthy ? "healthy" : "DOWN",
                   str (m, "version"), healthy ? str (m, "leader") : str (m, "error"));
    }
  });
}

int
session (const Options &o, const std::string &verb, const std::string &id)
{
  if (verb == "create") {
    if (o.user.empty () || o.role.empty ())
      return bad_usage ("session create needs --user and --role");
    Body b;
    b.string ("user", o.user).string ("role", o.role);
    if (!o.microscope.empty ())
      b.string ("microscope", o.microscope);
    return finish (o, call (o, "POST", "/api/v1/sessions", b.text ()), [] (JsonObject *s) {
      std::printf ("session   %s (%s as %s on %s)\n", str (s, "id"), str (s, "user"), str (s, "role"),
                   str (s, "microscope"));
      std::printf ("token     %s\n", str (s, "token"));
      std::printf ("viewer    %s\n", str (s, "viewer_url"));
      std::printf ("rtsp      %s  (user = session id, password = token)\n", str (s, "rtsp_url"));
    });
  }
  if (verb == "list")
    return finish (o, call (o, "GET", "/api/v1/sessions"), [] (JsonObject *r) {
      JsonArray *a = r ? json_object_get_array_member (r, "sessions") : nullptr;
      print_session_header ();
      for (guint i = 0; a && i < json_array_get_length (a); i++)
        print_session_line (json_array_get_object_element (a, i));
    });
  if (verb == "show" || verb == "delete") {
    if (id.empty ())
      return bad_usage ("session " + verb + " needs an ID");
    if (verb == "delete") {
      Reply r = call (o, "DELETE", "/api/v1/sessions/" + id);
      if (int f = failure (r))
        return f;
      if (o.json)
        std::printf ("%s\n", Body ().string ("deleted", id).text ().c_str ());
      else
        std::printf ("deleted session %s\n", id.c_str ());
      return 0;
    }
    return finish (o, call (o, "GET", "/api/v1/sessions/" + id), [] (JsonObject *s) {
      print_session_header ();
      print_session_line (s);
    });
  }
  return bad_usage ("unknown command 'session " + verb + "' (create, list, show, delete)");
}

int
microscope (const Options &o, const std::string &verb, const std::string &id)
{
  if (verb == "list")
    return finish (o, call (o, "GET", "/api/v1/microscopes"), [] (JsonObject *r) {
      JsonArray *a = r ? json_object_get_array_member (r, "microscopes") : nullptr;
      print_microscope_header ();
      for (guint i = 0; a && i < json_array_get_length (a); i++)
        print_microscope (json_array_get_object_element (a, i));
    });
  if (verb == "show") {
    if (id.empty ())
      return bad_usage ("microscope show needs an ID");
    return finish (o, call (o, "GET", "/api/v1/microscopes/" + id), [] (JsonObject *m) {
      print_microscope_header ();
      print_microscope (m);
      JsonNode *c = m ? json_object_get_member (m, "controller") : nullptr;
      if (c && JSON_NODE_HOLDS_OBJECT (c)) {
        JsonObject *co = json_node_get_object (c);
        std::printf ("controller  %s (%s, session %s)\n", str (co, "user"), str (co, "role"),
                     str (co, "session"));
      } else {
        std::printf ("controller  nobody\n");
      }
    });
  }
  return bad_usage ("unknown command 'microscope " + verb + "' (list, show)");
}

int
control (const Options &o, const std::string &verb, const std::string &arg)
{
  if (verb != "request" && verb != "release" && verb != "renew" && verb != "revoke" && verb != "grant")
    return bad_usage ("unknown command 'control " + verb + "' (request, release, renew, revoke, grant)");
  const std::string mic = microscope_id (o);
  if (mic.empty ())
    return bad_usage ("say which microscope (--microscope ID)");
  Body b;
  b.string ("action", verb);
  if (verb == "grant") {
    if (arg.empty ())
      return bad_usage ("control grant needs a SESSION");
    b.string ("session", arg);
  }
  if (verb == "renew") {
    if (o.lease.empty ())
      return bad_usage ("control renew needs --lease L");
    b.string ("lease", o.lease);
  }
  return finish (
      o, call (o, "POST", "/api/v1/microscopes/" + mic + "/control", b.text ()), [] (JsonObject *r) {
        const std::string result = str (r, "result");
        if (json_object_has_member (r, "lease"))
          std::printf ("%s  lease %s  epoch %lld  expires in %lld ms\n", result.c_str (), str (r, "lease"),
                       (long long)integer (r, "epoch"), (long long)integer (r, "expires_in_ms"));
        else if (json_object_has_member (r, "queue_position"))
          std::printf ("%s  position %lld in the queue\n", result.c_str (),
                       (long long)integer (r, "queue_position"));
        else
          std::printf ("%s\n", result.c_str ());
      });
}

// Where the stage and focus are (GET the microscope); false when it cannot be
// read.
struct Position {
  double x_um = 0, y_um = 0, z_um = 0;
  gint64 objective = 0;
  bool moving = false;
};

bool
position (const Options &o, const std::string &mic, Position &p)
{
  Reply r = call (o, "GET", "/api/v1/microscopes/" + mic);
  Parsed parsed (r.body);
  JsonObject *m = r.status == 200 ? parsed.object () : nullptr;
  JsonNode *stage = m ? json_object_get_member (m, "stage") : nullptr;
  if (!stage || !JSON_NODE_HOLDS_OBJECT (stage))
    return false;
  JsonObject *st = json_node_get_object (stage);
  p.x_um = json_object_get_double_member_with_default (st, "x_um", 0);
  p.y_um = json_object_get_double_member_with_default (st, "y_um", 0);
  p.z_um = json_object_get_double_member_with_default (st, "z_um", 0);
  p.objective = integer (m, "objective");
  p.moving = json_object_get_boolean_member_with_default (m, "moving", FALSE);
  return true;
}

// Where a motion command ends: the stage or focus target, or the objective.
struct Target {
  std::optional<std::pair<double, double>> xy_um;
  std::optional<double> z_um;
  std::optional<gint64> objective;
};

// What a --wait prints and returns once the command ended or timed out.
int
report_end (const Options &o, const std::string &status, const std::string &detail, const std::string &json)
{
  if (o.json)
    std::printf ("%s\n", json.c_str ());
  else if (status == "done")
    std::printf ("done\n");
  else
    std::printf ("failed: %s%s\n", status == "failed" ? "" : (status + ": ").c_str (),
                 detail.empty () ? "(no reason given)" : detail.c_str ());
  return status == "done" ? 0 : 1;
}

// Polls the command until the hardware thread reports its end, then — the
// hardware reports a move when it starts — until the stage, focus or
// turret is at its target and still.  At most o.timeout_s in all.
int
wait_for_command (const Options &o, const std::string &mic, gint64 cid, const Target &target)
{
  const std::string path = "/api/v1/microscopes/" + mic + "/commands/" + std::to_string (cid);
  const gint64 deadline = g_get_monotonic_time () + (gint64)(o.timeout_s * 1e6);
  auto timed_out = [&] (const std::string &what) {
    return report_end (o, "failed",
                       "no " + what + " within " + std::to_string ((int)std::ceil (o.timeout_s))
                           + " s (--timeout); command " + std::to_string (cid) + " may still be running",
                       Body ().integer ("command", cid).string ("status", "timeout").text ());
  };
  std::string status, detail, json;
  for (;;) {
    Reply r = call (o, "GET", path);
    if (int f = failure (r))
      return f;
    Parsed p (r.body);
    status = str (p.object (), "status");
    detail = str (p.object (), "detail");
    json = r.body;
    if (status != "pending")
      break;
    if (g_get_monotonic_time () > deadline)
      return timed_out ("end reported");
    g_usleep (100000);
  }
  if (status != "done" || (!target.xy_um && !target.z_um && !target.objective))
    return report_end (o, status, detail, json);
  for (;;) {
    Position now;
    if (position (o, mic, now) && !now.moving
        && (!target.xy_um
            || (std::abs (now.x_um - target.xy_um->first) < 0.5
                && std::abs (now.y_um - target.xy_um->second) < 0.5))
        && (!target.z_um || std::abs (now.z_um - *target.z_um) < 0.05)
        && (!target.objective || now.objective == *target.objective))
      return report_end (o, status, detail, json);
    if (g_get_monotonic_time () > deadline)
      return timed_out ("arrival at the target");
    g_usleep (100000);
  }
}

int
command (const Options &o, const std::string &verb)
{
  auto arg = [&] (size_t i) -> std::string { return o.args.size () > i ? o.args[i] : ""; };
  Body b;
  if (!o.lease.empty ())
    b.string ("lease", o.lease);
  double v1 = 0, v2 = 0;
  if ((verb == "move" || verb == "move_by") && parse_number (arg (2), v1) && parse_number (arg (3), v2))
    b.object (verb.c_str (),
              verb == "move" ? std::vector<std::pair<const char *, double>>{{"x_um", v1}, {"y_um", v2}}
                             : std::vector<std::pair<const char *, double>>{{"dx_um", v1}, {"dy_um", v2}});
  else if ((verb == "focus" || verb == "focus_by") && parse_number (arg (2), v1))
    b.object (verb.c_str (), {{verb == "focus" ? "z_um" : "dz_um", v1}});
  else if (verb == "objective" && parse_number (arg (2), v1) && v1 == std::floor (v1) && v1 > 0 && v1 < 1000)
    b.integer ("objective", (gint64)v1);
  else if (verb == "autofocus" || verb == "stop")
    b.object (verb.c_str (), {});
  else if (verb == "move" || verb == "move_by" || verb == "focus" || verb == "focus_by"
           || verb == "objective")
    return bad_usage ("command " + verb + ": missing or non-numeric values (see livemicroctl --help)");
  else
    return bad_usage ("unknown command '" + verb
                      + "' (move, move_by, focus, focus_by, objective, autofocus, stop)");
  if (o.lease.empty () && verb != "stop")
    return bad_usage ("command " + verb + " needs --lease L (livemicroctl control request gives one)");
  const std::string mic = microscope_id (o);
  if (mic.empty ())
    return bad_usage ("say which microscope (--microscope ID)");
  // With --wait: where it ends (a relative move from where the microscope is
  // now).
  Target target;
  Position before;
  if (o.wait && (verb == "move_by" || verb == "focus_by") && !position (o, mic, before)) {
    std::fprintf (stderr, "livemicroctl: cannot read microscope '%s''s position\n", mic.c_str ());
    return 1;
  }
  if (verb == "move")
    target.xy_um = std::make_pair (v1, v2);
  else if (verb == "move_by")
    target.xy_um = std::make_pair (before.x_um + v1, before.y_um + v2);
  else if (verb == "focus")
    target.z_um = v1;
  else if (verb == "focus_by")
    target.z_um = before.z_um + v1;
  else if (verb == "objective")
    target.objective = (gint64)v1;
  Reply r = call (o, "POST", "/api/v1/microscopes/" + mic + "/commands", b.text ());
  if (!o.wait)
    return finish (o, r, [] (JsonObject *a) {
      std::printf ("command %lld (%s) accepted\n", (long long)integer (a, "command"), str (a, "op"));
    });
  if (int f = failure (r))
    return f;
  Parsed p (r.body);
  return wait_for_command (o, mic, integer (p.object (), "command"), target);
}

int
command_status (const Options &o, const std::string &id)
{
  if (id.empty ())
    return bad_usage ("command-status needs a command ID");
  const std::string mic = microscope_id (o);
  if (mic.empty ())
    return bad_usage ("say which microscope (--microscope ID)");
  return finish (o, call (o, "GET", "/api/v1/microscopes/" + mic + "/commands/" + id), [] (JsonObject *c) {
    std::printf ("command %lld (%s): %s%s%s\n", (long long)integer (c, "command"), str (c, "op"),
                 str (c, "status"), *str (c, "detail") ? ": " : "", str (c, "detail"));
  });
}

int
annotate (const Options &o, const std::string &kind)
{
  if (kind != "point" && kind != "arrow" && kind != "region")
    return bad_usage ("annotate needs a kind: point, arrow or region");
  std::vector<std::pair<double, double>> pts;
  for (size_t i = 2; i < o.args.size (); i++) {
    const std::string &a = o.args[i];
    const auto comma = a.find (',');
    double x, y;
    if (comma == std::string::npos || !parse_number (a.substr (0, comma), x)
        || !parse_number (a.substr (comma + 1), y))
      return bad_usage ("annotate: '" + a + "' is not X,Y in slide µm");
    pts.emplace_back (x, y);
  }
  if (pts.empty ())
    return bad_usage ("annotate " + kind + " needs points: X,Y [X,Y ...] in slide µm");
  const std::string mic = microscope_id (o);
  if (mic.empty ())
    return bad_usage ("say which microscope (--microscope ID)");
  Body b;
  b.string ("kind", kind).points ("points_um", pts);
  if (!o.label.empty ())
    b.string ("label", o.label);
  return finish (o, call (o, "POST", "/api/v1/microscopes/" + mic + "/annotations", b.text ()),
                 [] (JsonObject *a) {
                   std::printf ("annotation %lld (%s \"%s\") added\n", (long long)integer (a, "id"),
                                str (a, "kind"), str (a, "label"));
                 });
}

// Writes a reply's body to -o FILE and says so: `said`, or with --json
// {"output": FILE, count_name: count}.
int
save (const Options &o, const std::string &body, const char *count_name, gint64 count,
      const std::string &said)
{
  g_autoptr (GError) error = nullptr;
  if (!g_file_set_contents (o.output.c_str (), body.data (), (gssize)body.size (), &error)) {
    std::fprintf (stderr, "livemicroctl: %s\n", error->message);
    return 1;
  }
  if (o.json)
    std::printf ("%s\n", Body ().string ("output", o.output).integer (count_name, count).text ().c_str ());
  else
    std::printf ("%s\n", said.c_str ());
  return 0;
}

// The microscope's annotations (or one session's), as QuPath GeoJSON: to a
// file (-o), to stdout (--json), or as a table.
int
annotations (const Options &o)
{
  if (o.args.size () > 1)
    return bad_usage ("annotations takes no SESSION argument: --session ID "
                      "exports one session's");
  std::string path;
  if (!o.session.empty ()) {
    path = "/api/v1/sessions/" + o.session + "/annotations.geojson";
  } else {
    const std::string mic = microscope_id (o);
    if (mic.empty ())
      return bad_usage ("say which microscope (--microscope ID)");
    path = "/api/v1/microscopes/" + mic + "/annotations.geojson";
  }
  if (!o.um_per_px.empty ()) {
    double v;
    if (!parse_number (o.um_per_px, v) || v <= 0)
      return bad_usage ("--um-per-px '" + o.um_per_px + "' is not a positive number");
    path += "?um_per_px=" + o.um_per_px;
  }
  Reply r = call (o, "GET", path);
  if (int f = failure (r))
    return f;
  Parsed p (r.body);
  JsonArray *features = p.object () ? json_object_get_array_member (p.object (), "features") : nullptr;
  const guint n = features ? json_array_get_length (features) : 0;
  if (!o.output.empty ())
    return save (o, r.body, "annotations", n, "wrote " + std::to_string (n) + " annotations to " + o.output);
  if (o.json) {
    std::printf ("%s\n", r.body.c_str ());
    return 0;
  }
  std::printf ("%-36s  %-7s  %-14s  %-16s  %-12s  %s\n", "ID", "KIND", "CLASS", "NAME", "AUTHOR",
               "FIRST POINT (PX)");
  for (guint i = 0; i < n; i++) {
    JsonObject *f = json_array_get_object_element (features, i);
    JsonObject *props = json_object_get_object_member (f, "properties");
    JsonObject *cls = json_object_has_member (props, "classification")
                          ? json_object_get_object_member (props, "classification")
                          : nullptr;
    JsonObject *geom = json_object_get_object_member (f, "geometry");
    JsonNode *c = json_object_get_member (geom, "coordinates");
    while (c && JSON_NODE_HOLDS_ARRAY (c) && json_array_get_length (json_node_get_array (c)) > 0
           && JSON_NODE_HOLDS_ARRAY (json_array_get_element (json_node_get_array (c), 0)))
      c = json_array_get_element (json_node_get_array (c),
                                  0); // down to the first [x, y]
    JsonArray *xy = c && JSON_NODE_HOLDS_ARRAY (c) ? json_node_get_array (c) : nullptr;
    std::printf ("%-36s  %-7s  %-14s  %-16s  %-12s  %.1f, %.1f\n", str (f, "id"), str (props, "kind"),
                 cls ? str (cls, "name") : "-", str (props, "name"), str (props, "author"),
                 xy && json_array_get_length (xy) == 2 ? json_array_get_double_element (xy, 0) : 0.0,
                 xy && json_array_get_length (xy) == 2 ? json_array_get_double_element (xy, 1) : 0.0);
  }
  return 0;
}

int
still (const Options &o, const std::string &session_id)
{
  if (session_id.empty () || o.output.empty ())
    return bad_usage ("still needs a SESSION and -o FILE.png");
  Reply r = call (o, "POST", "/api/v1/sessions/" + session_id + "/stills");
  if (int f = failure (r))
    return f;
  return save (o, r.body, "bytes", (gint64)r.body.size (),
               "wrote " + o.output + " (" + std::to_string (r.body.size ()) + " bytes)");
}

// record start|stop|show SESSION: a recording of the session's view.
int
record (const Options &o, const std::string &verb, const std::string &session_id)
{
  if (session_id.empty () || (verb != "start" && verb != "stop" && verb != "show"))
    return bad_usage ("record needs start, stop or show and a SESSION");
  const std::string path = "/api/v1/sessions/" + session_id + "/recording";
  std::string body = "{}";
  if (!o.segment_s.empty ()) {
    double s = 0;
    if (verb != "start" || !parse_number (o.segment_s, s) || s != (int)s)
      return bad_usage ("--segment-s takes a whole number of seconds, with record start");
    body = "{\"segment_s\": " + std::to_string ((int)s) + "}";
  }
  Reply r = verb == "start"  ? call (o, "POST", path, body)
            : verb == "stop" ? call (o, "DELETE", path)
                             : call (o, "GET", path);
  return finish (o, r, [] (JsonObject *j) {
    std::printf ("recording %s  %s  (%s view of session %s)  %lld frames in %lld segments\n",
                 str (j, "recording"), str (j, "state"), str (j, "view"), str (j, "session"),
                 (long long)json_object_get_int_member_with_default (j, "frames", 0),
                 (long long)json_object_get_int_member_with_default (j, "segments", 0));
  });
}

} // namespace

int
livemicroctl_api (int argc, char **argv)
{
  Options o;
  if (const char *s = g_getenv ("LIVEMICRO_SERVER"))
    o.server = s;
  if (const char *t = g_getenv ("LIVEMICRO_TOKEN"))
    o.token = t;
  else if (const char *t = g_getenv ("LIVEMICRO_ADMIN_TOKEN"))
    o.token = t;
  std::string timeout;
  const std::map<std::string, std::string *> valued = {{"--server", &o.server},
                                                       {"--token", &o.token},
                                                       {"--user", &o.user},
                                                       {"--role", &o.role},
                                                       {"--microscope", &o.microscope},
                                                       {"--session", &o.session},
                                                       {"--lease", &o.lease},
                                                       {"-o", &o.output},
                                                       {"--output", &o.output},
                                                       {"--after", &o.after},
                                                       {"--limit", &o.limit},
                                                       {"--um-per-px", &o.um_per_px},
                                                       {"--label", &o.label},
                                                       {"--segment-s", &o.segment_s},
                                                       {"--timeout", &timeout}};
  for (int i = 0; i < argc; i++) {
    const std::string a = argv[i];
    if (auto v = valued.find (a); v != valued.end ()) {
      if (i + 1 >= argc)
        return bad_usage (a + " needs a value");
      *v->second = argv[++i];
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--wait") {
      o.wait = true;
    } else if (a == "--insecure") {
      o.insecure = true;
    } else if (a == "--help" || a == "-h") {
      return usage (stdout);
    } else if (a.size () > 1 && a[0] == '-' && !g_ascii_isdigit (a[1]) && a[1] != '.') {
      return bad_usage ("unknown option " + a); // negative numbers are values, not options
    } else {
      o.args.push_back (a);
    }
  }
  if (!timeout.empty () && (!parse_number (timeout, o.timeout_s) || o.timeout_s <= 0))
    return bad_usage ("--timeout '" + timeout + "' is not a positive number of seconds");
  while (!o.server.empty () && o.server.back () == '/')
    o.server.pop_back ();
  if (o.args.empty ())
    return usage (stderr);
  const std::string noun = o.args[0];
  const std::string verb = o.args.size () > 1 ? o.args[1] : "";
  const std::string id = o.args.size () > 2 ? o.args[2] : "";
  if (noun == "audit")
    return audit (o);
  if (noun == "cluster")
    return cluster (o, verb);
  if (noun == "annotations")
    return annotations (o);
  if (noun == "session")
    return session (o, verb, id);
  if (noun == "microscope")
    return microscope (o, verb, id);
  if (noun == "control")
    return control (o, verb, id);
  if (noun == "command")
    return command (o, verb);
  if (noun == "command-status")
    return command_status (o, verb);
  if (noun == "annotate")
    return annotate (o, verb);
  if (noun == "still")
    return still (o, verb);
  if (noun == "record")
    return record (o, verb, id);
  std::fprintf (stderr, "livemicroctl: unknown command '%s'\n\n", noun.c_str ());
  return usage (stderr);
}
