// A WebRTC viewer without a browser: the viewer page's protocol on
// /ws/{session} (hello, offer → answer, trickled ICE) spoken by webrtcbin in
// the test process, counting the RTP packets it receives.  On its own thread
// and main context.  For soak tests and benchmarks where a Chromium per
// viewer would not fit; the Chromium tests check the page itself.
#pragma once

#include <gst/gst.h>
#define GST_USE_UNSTABLE_API
#include <gst/sdp/sdp.h>
#include <gst/webrtc/webrtc.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace livemicro::test {

class WebRtcClient {
public:
  WebRtcClient (int http_port, const std::string &session_id, const std::string &token)
      : url_ ("ws://127.0.0.1:" + std::to_string (http_port) + "/ws/" + session_id), token_ (token)
  {
    thread_ = std::thread ([this] { run (); });
    std::unique_lock<std::mutex> lock (mutex_);
    cv_.wait_for (lock, std::chrono::seconds (10), [this] { return started_; });
  }
  ~WebRtcClient () { close (); }
  WebRtcClient (const WebRtcClient &) = delete;
  WebRtcClient &operator= (const WebRtcClient &) = delete;

  // Waits until `n` RTP packets arrived; false on timeout.
  bool wait_packets (int n, double timeout_s)
  {
    gint64 deadline = g_get_monotonic_time () + (gint64) (timeout_s * 1e6);
    while (g_get_monotonic_time () < deadline) {
      if (packets_ >= n)
        return true;
      g_usleep (5000);
    }
    return packets_ >= n;
  }
  int packets () const { return packets_; }
  bool closed_by_server () const { return closed_; }

  void close ()
  {
    if (!loop_)
      return;
    g_main_context_invoke (ctx_, [] (gpointer d) -> gboolean {
      auto *self = static_cast<WebRtcClient *> (d);
      if (self->conn_ && soup_websocket_connection_get_state (self->conn_) == SOUP_WEBSOCKET_STATE_OPEN)
        soup_websocket_connection_close (self->conn_, SOUP_WEBSOCKET_CLOSE_NORMAL, nullptr);
      g_main_loop_quit (self->loop_);
      return G_SOURCE_REMOVE;
    }, this);
    thread_.join ();
    loop_ = nullptr;
  }

private:
  void send (const char *type, const char *k1, const std::string &v1, const char *k2 = nullptr, int v2 = 0)
  {
    g_autoptr (JsonBuilder) b = json_builder_new ();
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "type");
    json_builder_add_string_value (b, type);
    json_builder_set_member_name (b, k1);
    json_builder_add_string_value (b, v1.c_str ());
    if (k2) {
      json_builder_set_member_name (b, k2);
      json_builder_add_int_value (b, v2);
    }
    json_builder_end_object (b);
    g_autoptr (JsonNode) n = json_builder_get_root (b);
    g_autofree char *s = json_to_string (n, FALSE);
    if (conn_ && soup_websocket_connection_get_state (conn_) == SOUP_WEBSOCKET_STATE_OPEN)
      soup_websocket_connection_send_text (conn_, s);
  }

  void on_message (JsonObject *o)
  {
    const char *type = json_object_get_string_member_with_default (o, "type", "");
    if (!strcmp (type, "offer")) {
      GstSDPMessage *sdp = nullptr;
      gst_sdp_message_new_from_text (json_object_get_string_member_with_default (o, "sdp", ""), &sdp);
      GstWebRTCSessionDescription *offer = gst_webrtc_session_description_new (GST_WEBRTC_SDP_TYPE_OFFER, sdp);
      GstPromise *p = gst_promise_new_with_change_func (
          [] (GstPromise *p, gpointer d) {
            gst_promise_unref (p);
            auto *self = static_cast<WebRtcClient *> (d);
            GstPromise *answer = gst_promise_new_with_change_func (
                [] (GstPromise *p, gpointer d) {
                  auto *self = static_cast<WebRtcClient *> (d);
                  const GstStructure *r = gst_promise_get_reply (p);
                  GstWebRTCSessionDescription *a = nullptr;
                  if (r)
                    gst_structure_get (r, "answer", GST_TYPE_WEBRTC_SESSION_DESCRIPTION, &a, nullptr);
                  gst_promise_unref (p);
                  if (!a)
                    return;
                  g_signal_emit_by_name (self->webrtc_, "set-local-description", a, nullptr);
                  g_autofree char *text = gst_sdp_message_as_text (a->sdp);
                  std::string sdp_text = text;
                  gst_webrtc_session_description_free (a);
                  auto *args = new std::pair<WebRtcClient *, std::string> (self, sdp_text);
                  g_main_context_invoke (self->ctx_, [] (gpointer d) -> gboolean {
                    std::unique_ptr<std::pair<WebRtcClient *, std::string>> a (
                        static_cast<std::pair<WebRtcClient *, std::string> *> (d));
                    a->first->send ("answer", "sdp", a->second);
                    return G_SOURCE_REMOVE;
                  }, args);
                },
                self, nullptr);
            g_signal_emit_by_name (self->webrtc_, "create-answer", nullptr, answer);
          },
          this, nullptr);
      g_signal_emit_by_name (webrtc_, "set-remote-description", offer, p);
      gst_webrtc_session_description_free (offer);
    } else if (!strcmp (type, "ice")) {
      const char *c = json_object_get_string_member_with_default (o, "candidate", "");
      guint mline = (guint) json_object_get_int_member_with_default (o, "sdpMLineIndex", 0);
      if (*c)
        g_signal_emit_by_name (webrtc_, "add-ice-candidate", mline, c);
    }
  }

  struct Candidate {
    WebRtcClient *self;
    std::string candidate;
    guint mline;
  };
  static gboolean send_candidate (gpointer d)
  {
    std::unique_ptr<Candidate> c (static_cast<Candidate *> (d));
    c->self->send ("ice", "candidate", c->candidate, "sdpMLineIndex", (int) c->mline);
    return G_SOURCE_REMOVE;
  }

  void run ()
  {
    ctx_ = g_main_context_new ();
    g_main_context_push_thread_default (ctx_);
    loop_ = g_main_loop_new (ctx_, FALSE);
    pipeline_ = gst_pipeline_new ("webrtc-client");
    webrtc_ = gst_element_factory_make ("webrtcbin", "recv");
    gst_util_set_object_arg (G_OBJECT (webrtc_), "bundle-policy", "max-bundle");
    g_object_set (webrtc_, "latency", 0, nullptr);
    gst_bin_add (GST_BIN (pipeline_), GST_ELEMENT (gst_object_ref (webrtc_)));
    GObject *ice = nullptr;
    g_object_get (webrtc_, "ice-agent", &ice, nullptr);
    if (ice) {
      gboolean ok = FALSE;
      g_signal_emit_by_name (ice, "add-local-ip-address", "127.0.0.1", &ok);
      GObject *nice = nullptr;  // no UPnP: it only races for ports here
      g_object_get (ice, "agent", &nice, nullptr);
      if (nice)
        g_object_set (nice, "upnp", FALSE, nullptr);
      g_clear_object (&nice);
      g_object_unref (ice);
    }
    g_signal_connect (webrtc_, "on-ice-candidate", G_CALLBACK (+[] (GstElement *, guint mline, gchar *cand, gpointer d) {
      auto *self = static_cast<WebRtcClient *> (d);
      g_main_context_invoke (self->ctx_, send_candidate, new Candidate {self, cand, mline});
    }), this);
    g_signal_connect (webrtc_, "pad-added", G_CALLBACK (+[] (GstElement *, GstPad *pad, gpointer d) {
      auto *self = static_cast<WebRtcClient *> (d);
      if (GST_PAD_DIRECTION (pad) != GST_PAD_SRC)
        return;
      GstElement *sink = gst_element_factory_make ("fakesink", nullptr);
      g_object_set (sink, "sync", FALSE, "async", FALSE, "signal-handoffs", TRUE, nullptr);
      g_signal_connect (sink, "handoff", G_CALLBACK (+[] (GstElement *, GstBuffer *, GstPad *, gpointer d) {
        static_cast<WebRtcClient *> (d)->packets_++;
      }), self);
      gst_bin_add (GST_BIN (self->pipeline_), sink);
      gst_element_sync_state_with_parent (sink);
      GstPad *sinkpad = gst_element_get_static_pad (sink, "sink");
      gst_pad_link (pad, sinkpad);
      gst_object_unref (sinkpad);
    }), this);
    gst_element_set_state (pipeline_, GST_STATE_PLAYING);

    SoupSession *session = soup_session_new ();
    SoupMessage *msg = soup_message_new ("GET", url_.c_str ());
    soup_session_websocket_connect_async (session, msg, nullptr, nullptr, G_PRIORITY_DEFAULT, nullptr,
        [] (GObject *src, GAsyncResult *res, gpointer d) {
          auto *self = static_cast<WebRtcClient *> (d);
          self->conn_ = soup_session_websocket_connect_finish (SOUP_SESSION (src), res, nullptr);
          if (!self->conn_)
            return;
          g_signal_connect (self->conn_, "message", G_CALLBACK (+[] (SoupWebsocketConnection *, gint, GBytes *b, gpointer d) {
            gsize len = 0;
            const char *data = static_cast<const char *> (g_bytes_get_data (b, &len));
            g_autoptr (JsonParser) p = json_parser_new ();
            if (json_parser_load_from_data (p, data, (gssize) len, nullptr) &&
                JSON_NODE_HOLDS_OBJECT (json_parser_get_root (p)))
              static_cast<WebRtcClient *> (d)->on_message (json_node_get_object (json_parser_get_root (p)));
          }), self);
          g_signal_connect (self->conn_, "closed", G_CALLBACK (+[] (SoupWebsocketConnection *, gpointer d) {
            static_cast<WebRtcClient *> (d)->closed_ = true;
          }), self);
          self->send ("hello", "token", self->token_);
        },
        this);
    {
      std::lock_guard<std::mutex> lock (mutex_);
      started_ = true;
      cv_.notify_all ();
    }
    g_main_loop_run (loop_);
    gst_element_set_state (pipeline_, GST_STATE_NULL);
    gst_object_unref (webrtc_);
    gst_object_unref (pipeline_);
    if (conn_)
      g_object_unref (conn_);
    g_object_unref (msg);
    g_object_unref (session);
    // Callbacks queued for this context die with it.
    while (g_main_context_iteration (ctx_, FALSE))
      ;
    g_main_loop_unref (loop_);
    g_main_context_pop_thread_default (ctx_);
    g_main_context_unref (ctx_);
  }

  std::string url_, token_;
  std::thread thread_;
  GMainContext *ctx_ = nullptr;
  GMainLoop *loop_ = nullptr;
  GstElement *pipeline_ = nullptr, *webrtc_ = nullptr;
  SoupWebsocketConnection *conn_ = nullptr;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool started_ = false;
  std::atomic<int> packets_ {0};
  std::atomic<bool> closed_ {false};
};

}  // namespace livemicro::test
