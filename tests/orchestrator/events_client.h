// A WebSocket client for livemicrod's events socket
// (/api/v1/microscopes/{id}/events), on its own thread and main context.
#pragma once

#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace livemicro::test {

class EventsClient {
public:
  struct Event {
    std::string type, json; // json: the whole message
    gint64 at_us;           // monotonic arrival
  };

  EventsClient (int http_port, const std::string &microscope, const std::string &token)
  {
    url_ = "ws://127.0.0.1:" + std::to_string (http_port) + "/api/v1/microscopes/" + microscope + "/events";
    token_ = token;
    // The context and loop belong to this object, not to the thread: close ()
    // can always reach them, whenever the thread ends.
    ctx_ = g_main_context_new ();
    loop_ = g_main_loop_new (ctx_, FALSE);
    thread_ = std::thread ([this] { run (); });
    std::unique_lock<std::mutex> lock (mutex_);
    cv_.wait_for (lock, std::chrono::seconds (10), [this] { return connected_ || failed_; });
  }
  ~EventsClient () { close (); }

  void close ()
  {
    if (!thread_.joinable ())
      return;
    g_main_context_invoke (
        ctx_,
        [] (gpointer d) -> gboolean {
          auto *self = static_cast<EventsClient *> (d);
          if (self->conn_ && soup_websocket_connection_get_state (self->conn_) == SOUP_WEBSOCKET_STATE_OPEN)
            soup_websocket_connection_close (self->conn_, SOUP_WEBSOCKET_CLOSE_NORMAL, nullptr);
          g_main_loop_quit (self->loop_);
          return G_SOURCE_REMOVE;
        },
        this);
    thread_.join ();
    g_main_loop_unref (loop_);
    g_main_context_unref (ctx_);
    loop_ = nullptr;
    ctx_ = nullptr;
  }

  bool connected () const { return connected_; }
  std::vector<Event> events ()
  {
    std::lock_guard<std::mutex> lock (mutex_);
    return events_;
  }
  // Waits for an event of `type` whose JSON satisfies `match`.
  bool wait_for (const std::string &type, const std::function<bool (JsonObject *)> &match, double timeout_s,
                 Event *found = nullptr)
  {
    gint64 deadline = g_get_monotonic_time () + (gint64)(timeout_s * 1e6);
    size_t seen = 0;
    while (g_get_monotonic_time () < deadline) {
      std::vector<Event> evs = events ();
      for (; seen < evs.size (); seen++) {
        if (evs[seen].type != type)
          continue;
        g_autoptr (JsonParser) p = json_parser_new ();
        if (!json_parser_load_from_data (p, evs[seen].json.c_str (), -1, nullptr))
          continue;
        if (match (json_node_get_object (json_parser_get_root (p)))) {
          if (found)
            *found = evs[seen];
          return true;
        }
      }
      g_usleep (5000);
    }
    return false;
  }

private:
  void run ()
  {
    g_main_context_push_thread_default (ctx_);
    SoupSession *session = soup_session_new ();
    SoupMessage *msg = soup_message_new ("GET", url_.c_str ());
    soup_message_headers_replace (soup_message_get_request_headers (msg), "Authorization",
                                  ("Bearer " + token_).c_str ());
    soup_session_websocket_connect_async (
        session, msg, nullptr, nullptr, G_PRIORITY_DEFAULT, nullptr,
        [] (GObject *src, GAsyncResult *res, gpointer d) {
          auto *self = static_cast<EventsClient *> (d);
          self->conn_ = soup_session_websocket_connect_finish (SOUP_SESSION (src), res, nullptr);
          std::lock_guard<std::mutex> lock (self->mutex_);
          if (!self->conn_) {
            self->failed_ = true;
            self->cv_.notify_all ();
            return;
          }
          g_signal_connect (self->conn_, "message",
                            G_CALLBACK (+[] (SoupWebsocketConnection *, gint, GBytes *b, gpointer d) {
                              auto *self = static_cast<EventsClient *> (d);
                              gsize len = 0;
                              const char *data = static_cast<const char *> (g_bytes_get_data (b, &len));
                              std::string json (data, len);
                              g_autoptr (JsonParser) p = json_parser_new ();
                              std::string type;
                              if (json_parser_load_from_data (p, json.c_str (), -1, nullptr)
                                  && JSON_NODE_HOLDS_OBJECT (json_parser_get_root (p)))
                                type = json_object_get_string_member_with_default (
                                    json_node_get_object (json_parser_get_root (p)), "type", "");
                              std::lock_guard<std::mutex> lock (self->mutex_);
                              self->events_.push_back ({type, json, g_get_monotonic_time ()});
                            }),
                            self);
          self->connected_ = true;
          self->cv_.notify_all ();
        },
        this);
    g_main_loop_run (loop_);
    if (conn_)
      g_object_unref (conn_);
    g_object_unref (msg);
    g_object_unref (session);
    g_main_context_pop_thread_default (ctx_);
  }

  std::string url_, token_;
  std::thread thread_;
  GMainContext *ctx_ = nullptr;
  GMainLoop *loop_ = nullptr;
  SoupWebsocketConnection *conn_ = nullptr;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool connected_ = false, failed_ = false;
  std::vector<Event> events_;
};

} // namespace livemicro::test
