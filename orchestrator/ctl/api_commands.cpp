#include "api_commands.h"

#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace {

struct Options {
  std::string server = "http://127.0.0.1:8080";
  std::string token;
  bool json = false;
  std::string user, role, microscope, lease, output, after, limit, um_per_px;
  bool insecure = false;
  std::vector<std::string> args;  // positional
};

int
usage (FILE *to)
{
  std::fprintf (to,
      "usage: livemicroctl [--server URL] [--token TOKEN] [--json] <command>\n\n"
      "  session create --user NAME --role owner|consultant|trainee|guest [--microscope ID]\n"
      "  session list\n"
      "  session show ID\n"
      "  session delete ID\n"
      "  microscope list\n"
      "  microscope show ID\n"
      "  control request|release|revoke [--microscope ID]\n"
      "  control renew --lease L [--microscope ID]\n"
      "  control grant SESSION [--microscope ID]\n"
      "  command [--microscope ID] --lease L move X_UM Y_UM | move_by DX DY | focus Z_UM |\n"
      "          focus_by DZ | objective MAG | autofocus | stop\n"
      "  still SESSION -o FILE.png\n"
      "  annotations SESSION -o FILE.geojson [--um-per-px X]   (QuPath GeoJSON)\n"
      "  audit [--after ID] [--limit N]\n\n"
      "The server defaults to $LIVEMICRO_SERVER or http://127.0.0.1:8080; the token to\n"
      "$LIVEMICRO_TOKEN, else $LIVEMICRO_ADMIN_TOKEN.  --json prints the API's JSON.\n"
      "--insecure accepts any TLS certificate (self-signed test setups).\n");
  return to == stdout ? 0 : 2;
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
    g_signal_connect (msg, "accept-certificate", G_CALLBACK (+[] (SoupMessage *, GTlsCertificate *,
        GTlsCertificateFlags, gpointer) -> gboolean { return TRUE; }), nullptr);
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
  r.status = (int) soup_message_get_status (msg);
  gsize len = 0;
  const char *data = static_cast<const char *> (g_bytes_get_data (out, &len));
  r.body.assign (data ? data : "", len);
  return r;
}

// Prints the reply (JSON or a readable form); returns the exit status.
int
finish (const Options &o, const Reply &r, const std::function<void (JsonNode *)> &human)
{
  if (!r.transport_error.empty ()) {
    std::fprintf (stderr, "livemicroctl: %s\n", r.transport_error.c_str ());
    return 1;
  }
  g_autoptr (JsonParser) p = json_parser_new ();
  bool parsed = !r.body.empty () && json_parser_load_from_data (p, r.body.c_str (), (gssize) r.body.size (), nullptr);
  if (r.status >= 400) {
    std::string msg = r.body;
    if (parsed && JSON_NODE_HOLDS_OBJECT (json_parser_get_root (p)))
      msg = json_object_get_string_member_with_default (json_node_get_object (json_parser_get_root (p)), "error", r.body.c_str ());
    std::fprintf (stderr, "livemicroctl: HTTP %d: %s\n", r.status, msg.c_str ());
    return 1;
  }
  if (o.json) {
    if (!r.body.empty ())
      std::printf ("%s\n", r.body.c_str ());
    return 0;
  }
  if (parsed)
    human (json_parser_get_root (p));
  return 0;
}

const char *
str (JsonObject *o, const char *k)
{
  return json_object_get_string_member_with_default (o, k, "");
}

void
print_session_line (JsonObject *s)
{
  JsonObject *view = json_object_get_object_member (s, "view");
  std::printf ("%-32s  %-16s  %-10s  %-10s  %s\n", str (s, "id"), str (s, "user"), str (s, "role"),
      str (s, "microscope"), view ? str (view, "state") : "");
}

void
print_microscope (JsonObject *m)
{
  std::printf ("%-12s %-8s", str (m, "id"), json_object_get_boolean_member_with_default (m, "online", FALSE) ? "online" : "OFFLINE");
  JsonNode *stage = json_object_get_member (m, "stage");
  if (stage && JSON_NODE_HOLDS_OBJECT (stage)) {
    JsonObject *st = json_node_get_object (stage);
    std::printf ("  x %.1f µm  y %.1f µm  z %.2f µm", json_object_get_double_member_with_default (st, "x_um", 0),
        json_object_get_double_member_with_default (st, "y_um", 0), json_object_get_double_member_with_default (st, "z_um", 0));
  }
  std::printf ("  %dx%s  %s\n", (int) json_object_get_int_member_with_default (m, "objective", 0),
      json_object_get_boolean_member_with_default (m, "moving", FALSE) ? "  moving" : "", str (m, "name"));
}

}  // namespace

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
  for (int i = 0; i < argc; i++) {
    std::string a = argv[i];
    auto value = [&] (std::string &dst) -> bool {
      if (i + 1 >= argc) {
        std::fprintf (stderr, "livemicroctl: %s needs a value\n", a.c_str ());
        return false;
      }
      dst = argv[++i];
      return true;
    };
    bool ok = true;
    if (a == "--server")
      ok = value (o.server);
    else if (a == "--token")
      ok = value (o.token);
    else if (a == "--user")
      ok = value (o.user);
    else if (a == "--role")
      ok = value (o.role);
    else if (a == "--microscope")
      ok = value (o.microscope);
    else if (a == "--lease")
      ok = value (o.lease);
    else if (a == "-o" || a == "--output")
      ok = value (o.output);
    else if (a == "--after")
      ok = value (o.after);
    else if (a == "--limit")
      ok = value (o.limit);
    else if (a == "--um-per-px")
      ok = value (o.um_per_px);
    else if (a == "--json")
      o.json = true;
    else if (a == "--insecure")
      o.insecure = true;
    else if (a == "--help" || a == "-h")
      return usage (stdout);
    else if (a.rfind ("--", 0) == 0) {
      std::fprintf (stderr, "livemicroctl: unknown option %s\n", a.c_str ());
      return 2;
    } else
      o.args.push_back (a);
    if (!ok)
      return 2;
  }
  while (!o.server.empty () && o.server.back () == '/')
    o.server.pop_back ();
  if (!o.args.empty () && o.args[0] == "audit") {
    std::string q = "?limit=" + (o.limit.empty () ? std::string ("1000") : o.limit) +
                    (o.after.empty () ? "" : "&after=" + o.after);
    return finish (o, call (o, "GET", "/api/v1/audit" + q), [] (JsonNode *r) {
      JsonArray *a = json_object_get_array_member (json_node_get_object (r), "audit");
      for (guint i = 0; a && i < json_array_get_length (a); i++) {
        JsonObject *e = json_array_get_object_element (a, i);
        g_autoptr (GDateTime) t = g_date_time_new_from_unix_utc (json_object_get_int_member (e, "time_unix_us") / 1000000);
        g_autofree char *when = g_date_time_format_iso8601 (t);
        std::printf ("%6lld  %s  %-12s %-10s %-10s %-8s %s -> %s\n", (long long) json_object_get_int_member (e, "id"),
            when, str (e, "user"), str (e, "role"), str (e, "microscope"), str (e, "action"), str (e, "detail"),
            str (e, "result"));
      }
    });
  }
  if (o.args.size () < 2)
    return usage (stderr);
  const std::string noun = o.args[0], verb = o.args[1];
  const std::string id = o.args.size () > 2 ? o.args[2] : "";

  if (noun == "session" && verb == "create") {
    if (o.user.empty () || o.role.empty ()) {
      std::fprintf (stderr, "livemicroctl: session create needs --user and --role\n");
      return 2;
    }
    g_autoptr (JsonBuilder) b = json_builder_new ();
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "user");
    json_builder_add_string_value (b, o.user.c_str ());
    json_builder_set_member_name (b, "role");
    json_builder_add_string_value (b, o.role.c_str ());
    if (!o.microscope.empty ()) {
      json_builder_set_member_name (b, "microscope");
      json_builder_add_string_value (b, o.microscope.c_str ());
    }
    json_builder_end_object (b);
    g_autoptr (JsonNode) n = json_builder_get_root (b);
    g_autofree char *body = json_to_string (n, FALSE);
    return finish (o, call (o, "POST", "/api/v1/sessions", body), [] (JsonNode *r) {
      JsonObject *s = json_node_get_object (r);
      std::printf ("session   %s (%s as %s on %s)\n", str (s, "id"), str (s, "user"), str (s, "role"), str (s, "microscope"));
      std::printf ("token     %s\n", str (s, "token"));
      std::printf ("viewer    %s\n", str (s, "viewer_url"));
      std::printf ("rtsp      %s  (user = session id, password = token)\n", str (s, "rtsp_url"));
    });
  }
  if (noun == "session" && verb == "list")
    return finish (o, call (o, "GET", "/api/v1/sessions"), [] (JsonNode *r) {
      JsonArray *a = json_object_get_array_member (json_node_get_object (r), "sessions");
      std::printf ("%-32s  %-16s  %-10s  %-10s  %s\n", "ID", "USER", "ROLE", "MICROSCOPE", "VIEW");
      for (guint i = 0; a && i < json_array_get_length (a); i++)
        print_session_line (json_array_get_object_element (a, i));
    });
  if (noun == "session" && (verb == "show" || verb == "delete")) {
    if (id.empty ()) {
      std::fprintf (stderr, "livemicroctl: session %s needs an ID\n", verb.c_str ());
      return 2;
    }
    if (verb == "delete")
      return finish (o, call (o, "DELETE", "/api/v1/sessions/" + id), [&] (JsonNode *) {});
    return finish (o, call (o, "GET", "/api/v1/sessions/" + id), [] (JsonNode *r) {
      print_session_line (json_node_get_object (r));
      std::printf ("rtsp      %s\n", str (json_node_get_object (r), "rtsp_url"));
    });
  }
  if (noun == "microscope" && verb == "list")
    return finish (o, call (o, "GET", "/api/v1/microscopes"), [] (JsonNode *r) {
      JsonArray *a = json_object_get_array_member (json_node_get_object (r), "microscopes");
      for (guint i = 0; a && i < json_array_get_length (a); i++)
        print_microscope (json_array_get_object_element (a, i));
    });
  if (noun == "microscope" && verb == "show") {
    if (id.empty ()) {
      std::fprintf (stderr, "livemicroctl: microscope show needs an ID\n");
      return 2;
    }
    return finish (o, call (o, "GET", "/api/v1/microscopes/" + id), [] (JsonNode *r) {
      print_microscope (json_node_get_object (r));
    });
  }
  // The microscope of control/command: given, or the only one there is.
  auto microscope_id = [&] () -> std::string {
    if (!o.microscope.empty ())
      return o.microscope;
    Reply r = call (o, "GET", "/api/v1/microscopes");
    g_autoptr (JsonParser) p = json_parser_new ();
    if (r.status == 200 && json_parser_load_from_data (p, r.body.c_str (), -1, nullptr)) {
      JsonArray *a = json_object_get_array_member (json_node_get_object (json_parser_get_root (p)), "microscopes");
      if (a && json_array_get_length (a) == 1)
        return str (json_array_get_object_element (a, 0), "id");
    }
    return "";
  };
  auto print_object = [] (JsonNode *r) {
    g_autofree char *s = json_to_string (r, TRUE);
    std::printf ("%s\n", s);
  };
  if (noun == "control") {
    std::string mic = microscope_id ();
    if (mic.empty ()) {
      std::fprintf (stderr, "livemicroctl: say which microscope (--microscope ID)\n");
      return 2;
    }
    std::string body = "{\"action\":\"" + verb + "\"";
    if (verb == "grant") {
      if (id.empty ()) {
        std::fprintf (stderr, "livemicroctl: control grant needs a SESSION\n");
        return 2;
      }
      body += ",\"session\":\"" + id + "\"";
    }
    if (verb == "renew")
      body += ",\"lease\":\"" + o.lease + "\"";
    return finish (o, call (o, "POST", "/api/v1/microscopes/" + mic + "/control", body + "}"), print_object);
  }
  if (noun == "command") {
    std::string mic = microscope_id ();
    if (mic.empty ()) {
      std::fprintf (stderr, "livemicroctl: say which microscope (--microscope ID)\n");
      return 2;
    }
    auto arg = [&] (size_t i) -> std::string { return o.args.size () > i ? o.args[i] : ""; };
    auto is_number = [] (const std::string &v) {
      char *end = nullptr;
      g_ascii_strtod (v.c_str (), &end);
      return !v.empty () && end && !*end;
    };
    std::string c;
    if ((verb == "move" || verb == "move_by") && is_number (arg (2)) && is_number (arg (3)))
      c = verb == "move" ? "\"move\":{\"x_um\":" + arg (2) + ",\"y_um\":" + arg (3) + "}"
                         : "\"move_by\":{\"dx_um\":" + arg (2) + ",\"dy_um\":" + arg (3) + "}";
    else if ((verb == "focus" || verb == "focus_by") && is_number (arg (2)))
      c = verb == "focus" ? "\"focus\":{\"z_um\":" + arg (2) + "}" : "\"focus_by\":{\"dz_um\":" + arg (2) + "}";
    else if (verb == "objective" && is_number (arg (2)))
      c = "\"objective\":" + std::to_string (atoi (arg (2).c_str ()));
    else if (verb == "autofocus" || verb == "stop")
      c = "\"" + verb + "\":{}";
    else {
      std::fprintf (stderr, "livemicroctl: command %s: missing or non-numeric values\n", verb.c_str ());
      return 2;
    }
    return finish (o, call (o, "POST", "/api/v1/microscopes/" + mic + "/commands",
        "{\"lease\":\"" + o.lease + "\"," + c + "}"), print_object);
  }
  if (noun == "still" || noun == "annotations") {
    const std::string &session = verb;
    if (o.output.empty ()) {
      std::fprintf (stderr, "livemicroctl: %s needs -o FILE\n", noun.c_str ());
      return 2;
    }
    Reply r = noun == "still"
                  ? call (o, "POST", "/api/v1/sessions/" + session + "/stills")
                  : call (o, "GET", "/api/v1/sessions/" + session + "/annotations.geojson" +
                                        (o.um_per_px.empty () ? "" : "?um_per_px=" + o.um_per_px));
    if (!r.transport_error.empty () || r.status >= 400)
      return finish (o, r, [] (JsonNode *) {});
    g_autoptr (GError) error = nullptr;
    if (!g_file_set_contents (o.output.c_str (), r.body.data (), (gssize) r.body.size (), &error)) {
      std::fprintf (stderr, "livemicroctl: %s\n", error->message);
      return 1;
    }
    std::printf ("wrote %s (%zu bytes)\n", o.output.c_str (), r.body.size ());
    return 0;
  }
  std::fprintf (stderr, "livemicroctl: unknown command '%s %s'\n\n", noun.c_str (), verb.c_str ());
  return usage (stderr);
}
