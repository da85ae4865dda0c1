// A WebRTC viewer without a browser, webrtcbin in the test process, on its
// own thread and main context, counting the RTP packets it receives (and,
// when asked, the frames it decodes).  Two ways in:
// - the viewer page's protocol on /ws/{session} (hello, offer → answer,
//   trickled ICE);
// - WHEP (POST /whep/{session}): it offers receive-only H.264 with all its
//   candidates, the answer comes back in the reply; remove() DELETEs the
//   resource.
// For soak tests and benchmarks where a Chromium per viewer would not fit;
// the Chromium tests check the page itself.
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
#include <utility>
#include <vector>

namespace livemicro::test {

class WebRtcClient {
public:
  WebRtcClient (int http_port, const std::string &session_id, const std::string &token, bool decode = false)
      : url_ ("ws://127.0.0.1:" + std::to_string (http_port) + "/ws/" + session_id), token_ (token),
        decode_ (decode)
  {
    thread_ = std::thread ([this] { run (); });
    std::unique_lock<std::mutex> lock (mutex_);
    cv_.wait_for (lock, std::chrono::seconds (10), [this] { return started_; });
  }
  // WHEP: returns once the offer was answered (or refused: whep_status ()).
  struct Whep {};
  WebRtcClient (Whep, int http_port, const std::string &session_id, const std::string &token,
                bool decode = true)
      : url_ ("http://127.0.0.1:" + std::to_string (http_port) + "/whep/" + session_id), token_ (token),
        origin_ ("http://127.0.0.1:" + std::to_string (http_port)), whep_ (true), decode_ (decode)
  {
    thread_ = std::thread ([this] { run (); });
    std::unique_lock<std::mutex> lock (mutex_);
    cv_.wait_for (lock, std::chrono::seconds (30), [this] { return started_; });
  }
  ~WebRtcClient () { close (); }
  WebRtcClient (const WebRtcClient &) = delete;
  WebRtcClient &operator= (const WebRtcClient &) = delete;

  // Waits until `n` RTP packets arrived; false on timeout.
  bool wait_packets (int n, double timeout_s)
  {
    gint64 deadline = g_get_monotonic_time () + (gint64)(timeout_s * 1e6);
    while (g_get_monotonic_time () < deadline) {
      if (packets_ >= n)
        return true;
      g_usleep (5000);
    }
    return packets_ >= n;
  }
  int packets () const { return packets_; }
  // Waits until `n` frames were decoded (decode = true); false on timeout.
  bool wait_frames (int n, double timeout_s)
  {
    gint64 deadline = g_get_monotonic_time () + (gint64)(timeout_s * 1e6);
    while (g_get_monotonic_time () < deadline && frames_ < n)
      g_usleep (5000);
    return frames_ >= n;
  }
  int frames () const { return frames_; }
  bool closed_by_server () const { return closed_; }

  // WHEP: the reply to the offer, and the resource it made.
  int whep_status () const { return whep_status_; }
  const std::string &whep_answer () const { return whep_answer_; }
  const std::string &whep_content_type () const { return whep_content_type_; }
  const std::string &whep_location () const { return whep_location_; }
  // DELETE on the resource (with `token`, default the client's own); the status.
  int remove (const std::string &token = "")
  {
    if (whep_location_.empty ())
      return 0;
    return http ("DELETE", origin_ + whep_location_, token.empty () ? token_ : token, "", nullptr).status;
  }

  void close ()
  {
    if (!loop_)
      return;
    g_main_context_invoke (
        ctx_,
        [] (gpointer d) -> gboolean {
          auto *self = static_cast<WebRtcClient *> (d);
          if (self->conn_ && soup_websocket_connection_get_state (self->conn_) == SOUP_WEBSOCKET_STATE_OPEN)
            soup_websocket_connection_close (self->conn_, SOUP_WEBSOCKET_CLOSE_NORMAL, nullptr);
          g_main_loop_quit (self->loop_);
          return G_SOURCE_REMOVE;
        },
        this);
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
      GstWebRTCSessionDescription *offer
          = gst_webrtc_session_description_new (GST_WEBRTC_SDP_TYPE_OFFER, sdp);
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
                  g_main_context_invoke (
                      self->ctx_,
                      [] (gpointer d) -> gboolean {
                        std::unique_ptr<std::pair<WebRtcClient *, std::string>> a (
                            static_cast<std::pair<WebRtcClient *, std::string> *> (d));
                        a->first->send ("answer", "sdp", a->second);
                        return G_SOURCE_REMOVE;
                      },
                      args);
                },
                self, nullptr);
            g_signal_emit_by_name (self->webrtc_, "create-answer", nullptr, answer);
          },
          this, nullptr);
      g_signal_emit_by_name (webrtc_, "set-remote-description", offer, p);
      gst_webrtc_session_description_free (offer);
    } else if (!strcmp (type, "ice")) {
      const char *c = json_object_get_string_member_with_default (o, "candidate", "");
      guint mline = (guint)json_object_get_int_member_with_default (o, "sdpMLineIndex", 0);
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
    c->self->send ("ice", "candidate", c->candidate, "sdpMLineIndex", (int)c->mline);
    return G_SOURCE_REMOVE;
  }

  // A stream of the answer: decoded and its pictures counted, or only its
  // packets counted.
  static void on_pad_added (GstElement *, GstPad *pad, gpointer d)
  {
    auto *self = static_cast<WebRtcClient *> (d);
    if (GST_PAD_DIRECTION (pad) != GST_PAD_SRC)
      return;
    if (self->decode_) { // depayload, decode, count pictures
      GstElement *bin
          = gst_parse_bin_from_description ("rtph264depay ! h264parse ! avdec_h264 ! fakesink "
                                            "name=frames sync=false async=false signal-handoffs=true",
                                            TRUE, nullptr);
      GstElement *frames = gst_bin_get_by_name (GST_BIN (bin), "frames");
      g_signal_connect (frames, "handoff", G_CALLBACK (+[] (GstElement *, GstBuffer *, GstPad *, gpointer d) {
                          static_cast<WebRtcClient *> (d)->frames_++;
                        }),
                        self);
      gst_object_unref (frames);
      GstPad *in = gst_element_get_static_pad (bin, "sink");
      gst_pad_add_probe (
          in, GST_PAD_PROBE_TYPE_BUFFER,
          [] (GstPad *, GstPadProbeInfo *, gpointer d) {
            static_cast<WebRtcClient *> (d)->packets_++;
            return GST_PAD_PROBE_OK;
          },
          self, nullptr);
      gst_bin_add (GST_BIN (self->pipeline_), bin);
      gst_element_sync_state_with_parent (bin);
      gst_pad_link (pad, in);
      gst_object_unref (in);
      return;
    }
    GstElement *sink = gst_element_factory_make ("fakesink", nullptr);
    g_object_set (sink, "sync", FALSE, "async", FALSE, "signal-handoffs", TRUE, nullptr);
    g_signal_connect (sink, "handoff", G_CALLBACK (+[] (GstElement *, GstBuffer *, GstPad *, gpointer d) {
                        static_cast<WebRtcClient *> (d)->packets_++;
                      }),
                      self);
    gst_bin_add (GST_BIN (self->pipeline_), sink);
    gst_element_sync_state_with_parent (sink);
    GstPad *sinkpad = gst_element_get_static_pad (sink, "sink");
    gst_pad_link (pad, sinkpad);
    gst_object_unref (sinkpad);
  }

  // The signalling WebSocket is open: read its messages, say hello.
  static void on_websocket (GObject *src, GAsyncResult *res, gpointer d)
  {
    auto *self = static_cast<WebRtcClient *> (d);
    self->conn_ = soup_session_websocket_connect_finish (SOUP_SESSION (src), res, nullptr);
    if (!self->conn_)
      return;
    g_signal_connect (
        self->conn_, "message", G_CALLBACK (+[] (SoupWebsocketConnection *, gint, GBytes *b, gpointer d) {
          gsize len = 0;
          const char *data = static_cast<const char *> (g_bytes_get_data (b, &len));
          g_autoptr (JsonParser) p = json_parser_new ();
          if (json_parser_load_from_data (p, data, (gssize)len, nullptr)
              && JSON_NODE_HOLDS_OBJECT (json_parser_get_root (p)))
            static_cast<WebRtcClient *> (d)->on_message (json_node_get_object (json_parser_get_root (p)));
        }),
        self);
    g_signal_connect (self->conn_, "closed", G_CALLBACK (+[] (SoupWebsocketConnection *, gpointer d) {
                        static_cast<WebRtcClient *> (d)->closed_ = true;
                      }),
                      self);
    self->send ("hello", "token", self->token_);
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
      GObject *nice = nullptr; // no UPnP: it only races for ports here
      g_object_get (ice, "agent", &nice, nullptr);
      if (nice)
        g_object_set (nice, "upnp", FALSE, nullptr);
      g_clear_object (&nice);
      g_object_unref (ice);
    }
    g_signal_connect (webrtc_, "on-ice-candidate",
                      G_CALLBACK (+[] (GstElement *, guint mline, gchar *cand, gpointer d) {
                        auto *self = static_cast<WebRtcClient *> (d);
                        g_main_context_invoke (self->ctx_, send_candidate, new Candidate{self, cand, mline});
                      }),
                      this);
    g_signal_connect (webrtc_, "pad-added", G_CALLBACK (on_pad_added), this);
    if (whep_) {
      GstCaps *caps = gst_caps_from_string ("application/x-rtp,media=video,encoding-name=H264,payload=102,"
                                            "clock-rate=90000,packetization-mode=(string)1,"
                                            "profile-level-id=(string)42e01f");
      GstWebRTCRTPTransceiver *trans = nullptr;
      g_signal_emit_by_name (webrtc_, "add-transceiver", GST_WEBRTC_RTP_TRANSCEIVER_DIRECTION_RECVONLY, caps,
                             &trans);
      gst_caps_unref (caps);
      if (trans)
        gst_object_unref (trans);
      g_signal_connect (webrtc_, "on-ice-candidate",
                        G_CALLBACK (+[] (GstElement *, guint mline, gchar *cand, gpointer d) {
                          auto *self = static_cast<WebRtcClient *> (d);
                          std::lock_guard<std::mutex> lock (self->mutex_);
                          self->candidates_.emplace_back (mline, cand ? cand : "");
                        }),
                        this);
    }
    gst_element_set_state (pipeline_, GST_STATE_PLAYING);

    SoupSession *session = soup_session_new ();
    SoupMessage *msg = whep_ ? nullptr : soup_message_new ("GET", url_.c_str ());
    if (whep_)
      negotiate_whep ();
    else
      soup_session_websocket_connect_async (session, msg, nullptr, nullptr, G_PRIORITY_DEFAULT, nullptr,
                                            on_websocket, this);
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
    if (msg)
      g_object_unref (msg);
    g_object_unref (session);
    // Callbacks queued for this context die with it.
    while (g_main_context_iteration (ctx_, FALSE))
      ;
    g_main_loop_unref (loop_);
    g_main_context_pop_thread_default (ctx_);
    g_main_context_unref (ctx_);
  }

  struct Reply {
    int status = 0;
    std::string body, content_type, location;
  };
  // One HTTP request (on the calling thread, blocking).
  static Reply http (const char *method, const std::string &url, const std::string &token,
                     const std::string &sdp, const char *content_type)
  {
    Reply r;
    g_autoptr (SoupSession) session = soup_session_new_with_options ("timeout", 30, nullptr);
    g_autoptr (SoupMessage) msg = soup_message_new (method, url.c_str ());
    if (!msg)
      return r;
    if (!token.empty ())
      soup_message_headers_replace (soup_message_get_request_headers (msg), "Authorization",
                                    ("Bearer " + token).c_str ());
    if (content_type) {
      g_autoptr (GBytes) b = g_bytes_new (sdp.data (), sdp.size ());
      soup_message_set_request_body_from_bytes (msg, content_type, b);
    }
    g_autoptr (GBytes) out = soup_session_send_and_read (session, msg, nullptr, nullptr);
    if (!out)
      return r;
    r.status = (int)soup_message_get_status (msg);
    gsize len = 0;
    const char *data = static_cast<const char *> (g_bytes_get_data (out, &len));
    r.body.assign (data ? data : "", len);
    SoupMessageHeaders *h = soup_message_get_response_headers (msg);
    const char *t = soup_message_headers_get_one (h, "Content-Type"),
               *l = soup_message_headers_get_one (h, "Location");
    r.content_type = t ? t : "";
    r.location = l ? l : "";
    return r;
  }

  // The offer (after gathering, at most 5 s, every candidate in it), the
  // POST, the answer applied.
  void negotiate_whep ()
  {
    GstPromise *p = gst_promise_new ();
    g_signal_emit_by_name (webrtc_, "create-offer", nullptr, p);
    GstWebRTCSessionDescription *offer = nullptr;
    if (gst_promise_wait (p) == GST_PROMISE_RESULT_REPLIED && gst_promise_get_reply (p))
      gst_structure_get (gst_promise_get_reply (p), "offer", GST_TYPE_WEBRTC_SESSION_DESCRIPTION, &offer,
                         nullptr);
    gst_promise_unref (p);
    if (!offer)
      return;
    g_signal_emit_by_name (webrtc_, "set-local-description", offer, nullptr);
    gst_webrtc_session_description_free (offer);
    gint64 deadline = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;
    GstWebRTCICEGatheringState state = GST_WEBRTC_ICE_GATHERING_STATE_NEW;
    while (g_get_monotonic_time () < deadline) {
      g_object_get (webrtc_, "ice-gathering-state", &state, nullptr);
      if (state == GST_WEBRTC_ICE_GATHERING_STATE_COMPLETE)
        break;
      g_usleep (10000);
    }
    GstWebRTCSessionDescription *local = nullptr;
    g_object_get (webrtc_, "local-description", &local, nullptr);
    if (!local)
      return;
    GstSDPMessage *sdp = nullptr;
    gst_sdp_message_copy (local->sdp, &sdp);
    gst_webrtc_session_description_free (local);
    {
      std::lock_guard<std::mutex> lock (mutex_);
      for (const auto &[mline, cand] : candidates_) {
        if (mline >= gst_sdp_message_medias_len (sdp))
          continue;
        auto *media = const_cast<GstSDPMedia *> (gst_sdp_message_get_media (sdp, mline));
        std::string value = cand.rfind ("candidate:", 0) == 0 ? cand.substr (10) : cand;
        bool present = false;
        for (guint k = 0; k < gst_sdp_media_attributes_len (media); k++) {
          const GstSDPAttribute *a = gst_sdp_media_get_attribute (media, k);
          present = present || (!g_strcmp0 (a->key, "candidate") && a->value && value == a->value);
        }
        if (!present)
          gst_sdp_media_add_attribute (media, "candidate", value.c_str ());
      }
    }
    g_autofree char *text = gst_sdp_message_as_text (sdp);
    gst_sdp_message_free (sdp);
    Reply r = http ("POST", url_, token_, text, "application/sdp");
    whep_status_ = r.status;
    whep_answer_ = r.body;
    whep_content_type_ = r.content_type;
    whep_location_ = r.location;
    if (r.status != 201)
      return;
    GstSDPMessage *answer_sdp = nullptr;
    if (gst_sdp_message_new_from_text (r.body.c_str (), &answer_sdp) != GST_SDP_OK || !answer_sdp)
      return;
    GstWebRTCSessionDescription *answer
        = gst_webrtc_session_description_new (GST_WEBRTC_SDP_TYPE_ANSWER, answer_sdp);
    GstPromise *applied = gst_promise_new ();
    g_signal_emit_by_name (webrtc_, "set-remote-description", answer, applied);
    gst_promise_wait (applied);
    gst_promise_unref (applied);
    gst_webrtc_session_description_free (answer);
  }

  std::string url_, token_, origin_;
  bool whep_ = false, decode_ = false;
  int whep_status_ = 0;
  std::string whep_answer_, whep_content_type_, whep_location_;
  std::vector<std::pair<guint, std::string>> candidates_; // WHEP: our own, for the offer
  std::atomic<int> frames_{0};
  std::thread thread_;
  GMainContext *ctx_ = nullptr;
  GMainLoop *loop_ = nullptr;
  GstElement *pipeline_ = nullptr, *webrtc_ = nullptr;
  SoupWebsocketConnection *conn_ = nullptr;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool started_ = false;
  std::atomic<int> packets_{0};
  std::atomic<bool> closed_{false};
};

} // namespace livemicro::test
