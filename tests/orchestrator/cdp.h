// Drives a page in Debian's headless Chromium through the Chrome DevTools
// Protocol (WebSocket, libsoup): evaluate JavaScript, press keys, click, and
// watch the HTTP responses the page gets.
#pragma once

#include "testutil.h"

#include <gio/gio.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include <csignal>
#include <sys/prctl.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace livemicro::test {

class ChromiumPage {
public:
  static bool available () { return g_file_test (kChromium, G_FILE_TEST_IS_EXECUTABLE); }

  explicit ChromiumPage (const std::string &url)
  {
    port_ = free_port ();
    std::vector<std::string> args
        = headless_chromium_args (profile_.path (), url,
                                  {"--window-size=1280,900", "--remote-debugging-address=127.0.0.1",
                                   "--remote-debugging-port=" + std::to_string (port_)});
    std::vector<const char *> argv;
    for (auto &a : args)
      argv.push_back (a.c_str ());
    argv.push_back (nullptr);
    g_autoptr (GSubprocessLauncher) l = g_subprocess_launcher_new (
        (GSubprocessFlags)(G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_SILENCE));
    g_subprocess_launcher_set_child_setup (l, killed_with_parent, nullptr, nullptr);
    browser_ = g_subprocess_launcher_spawnv (l, argv.data (), nullptr);
    // Find the page's DevTools socket.
    std::string ws;
    for (int i = 0; i < 100 && ws.empty (); i++, g_usleep (100000))
      ws = page_socket (url);
    if (ws.empty ())
      return;
    thread_ = std::thread ([this, ws] { run (ws); });
    std::unique_lock<std::mutex> lock (mutex_);
    cv_.wait_for (lock, std::chrono::seconds (10), [this] { return connected_ || failed_; });
  }
  ~ChromiumPage ()
  {
    if (loop_) {
      g_main_context_invoke (
          ctx_,
          [] (gpointer d) -> gboolean {
            g_main_loop_quit (static_cast<ChromiumPage *> (d)->loop_);
            return G_SOURCE_REMOVE;
          },
          this);
      thread_.join ();
    }
    if (browser_) {
      g_subprocess_force_exit (browser_);
      g_subprocess_wait (browser_, nullptr, nullptr);
      g_object_unref (browser_);
    }
  }
  bool connected () const { return connected_; }

  // Evaluates `expression` (awaiting a promise); the result as JSON text.
  std::string evaluate (const std::string &expression, double timeout_s = 10)
  {
    g_autoptr (JsonBuilder) b = json_builder_new ();
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "expression");
    json_builder_add_string_value (b, expression.c_str ());
    json_builder_set_member_name (b, "returnByValue");
    json_builder_add_boolean_value (b, TRUE);
    json_builder_set_member_name (b, "awaitPromise");
    json_builder_add_boolean_value (b, TRUE);
    json_builder_end_object (b);
    g_autoptr (JsonNode) params = json_builder_get_root (b);
    std::string reply = call ("Runtime.evaluate", params, timeout_s);
    g_autoptr (JsonParser) p = json_parser_new ();
    if (!json_parser_load_from_data (p, reply.c_str (), -1, nullptr))
      return "";
    JsonObject *o = json_node_get_object (json_parser_get_root (p));
    // No result while the page navigates (its context went with the old page).
    JsonObject *result
        = json_object_has_member (o, "result") ? json_object_get_object_member (o, "result") : nullptr;
    JsonObject *value = result && json_object_has_member (result, "result")
                            ? json_object_get_object_member (result, "result")
                            : nullptr;
    if (!value || !json_object_has_member (value, "value"))
      return "";
    g_autofree char *s = json_to_string (json_object_get_member (value, "value"), FALSE);
    return s;
  }
  // Waits until `expression` evaluates to true.
  bool wait_true (const std::string &expression, double timeout_s)
  {
    gint64 deadline = g_get_monotonic_time () + (gint64)(timeout_s * 1e6);
    while (g_get_monotonic_time () < deadline) {
      if (evaluate ("!!(" + expression + ")") == "true")
        return true;
      g_usleep (100000);
    }
    return false;
  }
  void key (const char *type, const char *key, int code)
  {
    g_autoptr (JsonBuilder) b = json_builder_new ();
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "type");
    json_builder_add_string_value (b, type);
    json_builder_set_member_name (b, "key");
    json_builder_add_string_value (b, key);
    json_builder_set_member_name (b, "code");
    json_builder_add_string_value (b, key);
    json_builder_set_member_name (b, "windowsVirtualKeyCode");
    json_builder_add_int_value (b, code);
    json_builder_end_object (b);
    g_autoptr (JsonNode) params = json_builder_get_root (b);
    call ("Input.dispatchKeyEvent", params, 5);
  }

  void mouse (const char *type, double x, double y, int click_count = 1)
  {
    g_autoptr (JsonBuilder) b = json_builder_new ();
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "type");
    json_builder_add_string_value (b, type);
    json_builder_set_member_name (b, "x");
    json_builder_add_double_value (b, x);
    json_builder_set_member_name (b, "y");
    json_builder_add_double_value (b, y);
    json_builder_set_member_name (b, "button");
    json_builder_add_string_value (b, "left");
    json_builder_set_member_name (b, "clickCount");
    json_builder_add_int_value (b, click_count);
    json_builder_end_object (b);
    g_autoptr (JsonNode) params = json_builder_get_root (b);
    call ("Input.dispatchMouseEvent", params, 5);
  }
  // A left click at page coordinates (CSS pixels); `count` 2 is the second
  // click of a double-click.
  void click (double x, double y, int count = 1)
  {
    mouse ("mousePressed", x, y, count);
    mouse ("mouseReleased", x, y, count);
  }
  // Records every HTTP response from now on and loads the page again, so
  // that the record starts with the page's first request.
  void watch_network_and_reload ()
  {
    g_autoptr (JsonNode) none = json_node_init_object (json_node_alloc (), json_object_new ());
    call ("Network.enable", none, 5);
    call ("Page.reload", none, 5);
  }
  struct Response {
    std::string url;
    int status = 0;
  };
  std::vector<Response> responses ()
  {
    std::lock_guard<std::mutex> lock (mutex_);
    return responses_;
  }

private:
  // In the child before exec: the kernel kills the browser when the thread
  // that started it ends, so a test or benchmark killed mid-run (SIGKILL,
  // a timeout) leaves no Chromium behind.  /usr/bin/chromium execs the
  // browser, which keeps the setting; the browser's own children (zygote,
  // renderers) go when it goes.  SIGKILL, not SIGTERM: nothing of the
  // browser is worth an orderly shutdown here.
  static void killed_with_parent (gpointer) { prctl (PR_SET_PDEATHSIG, SIGKILL); }
  static int free_port ()
  {
    g_autoptr (GSocket) s
        = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, nullptr);
    g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
    g_autoptr (GSocketAddress) a = g_inet_socket_address_new (lo, 0);
    g_socket_bind (s, a, TRUE, nullptr);
    g_autoptr (GSocketAddress) bound = g_socket_get_local_address (s, nullptr);
    return g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound));
  }
  std::string page_socket (const std::string &url)
  {
    g_autoptr (SoupSession) s = soup_session_new_with_options ("timeout", 2, nullptr);
    g_autoptr (SoupMessage) m
        = soup_message_new ("GET", ("http://127.0.0.1:" + std::to_string (port_) + "/json/list").c_str ());
    g_autoptr (GBytes) body = soup_session_send_and_read (s, m, nullptr, nullptr);
    if (!body)
      return "";
    gsize len = 0;
    const char *data = static_cast<const char *> (g_bytes_get_data (body, &len));
    g_autoptr (JsonParser) p = json_parser_new ();
    if (!json_parser_load_from_data (p, data, (gssize)len, nullptr)
        || !JSON_NODE_HOLDS_ARRAY (json_parser_get_root (p)))
      return "";
    JsonArray *targets = json_node_get_array (json_parser_get_root (p));
    std::string base = url.substr (0, url.find ('#'));
    for (guint i = 0; i < json_array_get_length (targets); i++) {
      JsonObject *t = json_array_get_object_element (targets, i);
      if (!g_strcmp0 (json_object_get_string_member_with_default (t, "type", ""), "page")
          && std::string (json_object_get_string_member_with_default (t, "url", "")).rfind (base, 0) == 0)
        return json_object_get_string_member_with_default (t, "webSocketDebuggerUrl", "");
    }
    return "";
  }
  std::string call (const char *method, JsonNode *params, double timeout_s)
  {
    int id;
    std::string text;
    {
      std::lock_guard<std::mutex> lock (mutex_);
      id = next_id_++;
      g_autoptr (JsonBuilder) b = json_builder_new ();
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "id");
      json_builder_add_int_value (b, id);
      json_builder_set_member_name (b, "method");
      json_builder_add_string_value (b, method);
      json_builder_set_member_name (b, "params");
      json_builder_add_value (b, json_node_copy (params));
      json_builder_end_object (b);
      g_autoptr (JsonNode) n = json_builder_get_root (b);
      g_autofree char *s = json_to_string (n, FALSE);
      text = s;
    }
    auto *ctx = new std::pair<ChromiumPage *, std::string> (this, text);
    g_main_context_invoke (
        ctx_,
        [] (gpointer d) -> gboolean {
          std::unique_ptr<std::pair<ChromiumPage *, std::string>> c (
              static_cast<std::pair<ChromiumPage *, std::string> *> (d));
          if (c->first->conn_)
            soup_websocket_connection_send_text (c->first->conn_, c->second.c_str ());
          return G_SOURCE_REMOVE;
        },
        ctx);
    std::unique_lock<std::mutex> lock (mutex_);
    cv_.wait_for (lock, std::chrono::milliseconds ((int)(timeout_s * 1000)),
                  [&] { return replies_.count (id) > 0; });
    auto it = replies_.find (id);
    if (it == replies_.end ())
      return "";
    std::string r = it->second;
    replies_.erase (it);
    return r;
  }
  void run (const std::string &ws)
  {
    ctx_ = g_main_context_new ();
    g_main_context_push_thread_default (ctx_);
    loop_ = g_main_loop_new (ctx_, FALSE);
    SoupSession *session = soup_session_new ();
    SoupMessage *msg = soup_message_new ("GET", ws.c_str ());
    soup_session_websocket_connect_async (
        session, msg, nullptr, nullptr, G_PRIORITY_DEFAULT, nullptr,
        [] (GObject *src, GAsyncResult *res, gpointer d) {
          auto *self = static_cast<ChromiumPage *> (d);
          self->conn_ = soup_session_websocket_connect_finish (SOUP_SESSION (src), res, nullptr);
          std::lock_guard<std::mutex> lock (self->mutex_);
          if (!self->conn_) {
            self->failed_ = true;
          } else {
            soup_websocket_connection_set_max_incoming_payload_size (self->conn_, 64 << 20);
            g_signal_connect (self->conn_, "message",
                              G_CALLBACK (+[] (SoupWebsocketConnection *, gint, GBytes *b, gpointer d) {
                                auto *self = static_cast<ChromiumPage *> (d);
                                gsize len = 0;
                                const char *data = static_cast<const char *> (g_bytes_get_data (b, &len));
                                g_autoptr (JsonParser) p = json_parser_new ();
                                if (!json_parser_load_from_data (p, data, (gssize)len, nullptr))
                                  return;
                                JsonObject *o = json_node_get_object (json_parser_get_root (p));
                                if (!json_object_has_member (o, "id")) { // an event
                                  self->on_event (o);
                                  return;
                                }
                                std::lock_guard<std::mutex> lock (self->mutex_);
                                self->replies_[(int)json_object_get_int_member (o, "id")]
                                    = std::string (data, len);
                                self->cv_.notify_all ();
                              }),
                              self);
            self->connected_ = true;
          }
          self->cv_.notify_all ();
        },
        this);
    g_main_loop_run (loop_);
    if (conn_)
      g_object_unref (conn_);
    g_object_unref (msg);
    g_object_unref (session);
    g_main_loop_unref (loop_);
    g_main_context_pop_thread_default (ctx_);
    g_main_context_unref (ctx_);
  }

  void on_event (JsonObject *o)
  {
    if (g_strcmp0 (json_object_get_string_member_with_default (o, "method", ""), "Network.responseReceived"))
      return;
    JsonObject *params = json_object_get_object_member (o, "params");
    JsonObject *r = params ? json_object_get_object_member (params, "response") : nullptr;
    if (!r)
      return;
    std::lock_guard<std::mutex> lock (mutex_);
    responses_.push_back ({json_object_get_string_member_with_default (r, "url", ""),
                           (int)json_object_get_int_member_with_default (r, "status", 0)});
  }

  TempDir profile_;
  std::vector<Response> responses_;
  GSubprocess *browser_ = nullptr;
  int port_ = 0;
  std::thread thread_;
  GMainContext *ctx_ = nullptr;
  GMainLoop *loop_ = nullptr;
  SoupWebsocketConnection *conn_ = nullptr;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool connected_ = false, failed_ = false;
  int next_id_ = 1;
  std::map<int, std::string> replies_;
};

} // namespace livemicro::test
