#include "webrtc_peer.h"

#include "common/json_writer.h"
#include "common/worker_protocol.h"

#include <livemicro/frame_record_meta.h>

#define GST_USE_UNSTABLE_API
#include <gst/rtp/rtp.h>
#include <gst/sdp/sdp.h>
#include <gst/webrtc/webrtc.h>

#include <stdexcept>

namespace livemicro::orchestrator {

namespace {

std::string
to_json (JsonBuilder *b)
{
  return json_text (b);
}

} // namespace

WebRtcPeer::WebRtcPeer (std::shared_ptr<ViewStream> view, std::string listen_address, Send send)
    : view_ (std::move (view)), listen_address_ (std::move (listen_address)), send_ (std::move (send))
{}

WebRtcPeer::~WebRtcPeer ()
{
  stop ();
}

// Sends from any thread: the WebSocket lives on the main context.
void
WebRtcPeer::send_main (std::string json)
{
  struct Msg {
    std::weak_ptr<WebRtcPeer> peer;
    std::string json;
  };
  auto *m = new Msg{weak_from_this (), std::move (json)};
  g_main_context_invoke (
      nullptr,
      [] (gpointer d) -> gboolean {
        std::unique_ptr<Msg> m (static_cast<Msg *> (d));
        if (auto p = m->peer.lock ())
          if (*p->alive_ && p->send_)
            p->send_ (m->json);
        return G_SOURCE_REMOVE;
      },
      m);
}

void
WebRtcPeer::start ()
{
  offerer_ = true;
  build (96);
}

// The pipeline, up to PLAYING and fed by the view; the negotiation is the
// caller's (start: webrtcbin offers; answer: it answers the viewer's offer).
void
WebRtcPeer::build (unsigned payload_type)
{
  launch (payload_type);
  watch_payloader ();
  connect_signals ();
  restrict_ice ();
  if (gst_element_set_state (pipeline_, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE)
    throw std::runtime_error ("WebRTC pipeline failed to start");
  // Send-only: the browser receives, nothing comes back.
  GstWebRTCRTPTransceiver *trans = nullptr;
  g_signal_emit_by_name (webrtc_, "get-transceiver", 0, &trans);
  if (trans) {
    g_object_set (trans, "direction", GST_WEBRTC_RTP_TRANSCEIVER_DIRECTION_SENDONLY, nullptr);
    gst_object_unref (trans);
  }
  GstElement *src = gst_bin_get_by_name (GST_BIN (pipeline_), "src");
  viewer_handle_ = view_->add_viewer (GST_APP_SRC (src), ViewStream::Timestamps::kArrival);
  gst_object_unref (src);
}

// appsrc → rtph264pay → webrtcbin for an H.264 payload type.
void
WebRtcPeer::launch (unsigned payload_type)
{
  g_autoptr (GError) error = nullptr;
  const std::string pt = std::to_string (payload_type);
  pipeline_ = gst_parse_launch (("appsrc name=src is-live=true format=time do-timestamp=true min-latency=0 "
                                 "! rtph264pay name=pay pt="
                                 + pt
                                 + " config-interval=-1 aggregate-mode=zero-latency "
                                   "! application/x-rtp,media=video,encoding-name=H264,payload="
                                 + pt
                                 + ",clock-rate=90000 "
                                   "! webrtcbin name=webrtc bundle-policy=max-bundle latency=0")
                                    .c_str (),
                                &error);
  if (!pipeline_ || error)
    throw std::runtime_error (std::string ("WebRTC pipeline: ") + (error ? error->message : "cannot build"));
  webrtc_ = gst_bin_get_by_name (GST_BIN (pipeline_), "webrtc");
}

// The frame record of each access unit by PTS at the payloader's input (its
// StageMeta, which the payloader does not copy to RTP packets), then RTP
// timestamp → record at its output, for the page's latency figure and
// overlays drawn in slide coordinates.
void
WebRtcPeer::watch_payloader ()
{
  GstElement *pay = gst_bin_get_by_name (GST_BIN (pipeline_), "pay");
  GstPad *pay_sink = gst_element_get_static_pad (pay, "sink");
  gst_pad_add_probe (pay_sink, GST_PAD_PROBE_TYPE_BUFFER, on_payloader_input, this, nullptr);
  gst_object_unref (pay_sink);
  GstPad *pay_src = gst_element_get_static_pad (pay, "src");
  gst_pad_add_probe (pay_src, (GstPadProbeType)(GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST),
                     on_payloader_output, this, nullptr);
  gst_object_unref (pay_src);
  gst_object_unref (pay);
}

GstPadProbeReturn
WebRtcPeer::on_payloader_input (GstPad *, GstPadProbeInfo *info, gpointer data)
{
  auto *self = static_cast<WebRtcPeer *> (data);
  GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
  if (const LivemicroStageMeta *m = livemicro_buffer_get_stage_meta (b)) {
    std::lock_guard<std::mutex> lock (self->mutex_);
    self->record_by_pts_[GST_BUFFER_PTS (b)] = livemicro::frame_record_of (*m);
    while (self->record_by_pts_.size () > 32)
      self->record_by_pts_.erase (self->record_by_pts_.begin ());
  }
  return GST_PAD_PROBE_OK;
}

// Per frame to the page: {type:"frame", rtp, capture_unix_us, x_um, y_um,
// um_per_px, width, height}.
GstPadProbeReturn
WebRtcPeer::on_payloader_output (GstPad *, GstPadProbeInfo *info, gpointer data)
{
  auto *self = static_cast<WebRtcPeer *> (data);
  if (!self->offerer_)
    return GST_PAD_PROBE_OK; // WHEP: no socket for per-frame messages
  GstBuffer *b = (info->type & GST_PAD_PROBE_TYPE_BUFFER_LIST)
                     ? gst_buffer_list_get (GST_PAD_PROBE_INFO_BUFFER_LIST (info), 0)
                     : GST_PAD_PROBE_INFO_BUFFER (info);
  if (!b)
    return GST_PAD_PROBE_OK;
  hw::FrameRecord record;
  {
    std::lock_guard<std::mutex> lock (self->mutex_);
    auto it = self->record_by_pts_.find (GST_BUFFER_PTS (b));
    if (it == self->record_by_pts_.end ())
      return GST_PAD_PROBE_OK;
    record = it->second;
    self->record_by_pts_.erase (it);
  }
  GstRTPBuffer rtp = GST_RTP_BUFFER_INIT;
  if (!gst_rtp_buffer_map (b, GST_MAP_READ, &rtp))
    return GST_PAD_PROBE_OK;
  guint32 ts = gst_rtp_buffer_get_timestamp (&rtp);
  gst_rtp_buffer_unmap (&rtp);
  g_autoptr (JsonBuilder) jb = json_builder_new ();
  json_builder_begin_object (jb);
  json_builder_set_member_name (jb, "type");
  json_builder_add_string_value (jb, "frame");
  json_builder_set_member_name (jb, "rtp");
  json_builder_add_int_value (jb, ts);
  json_builder_set_member_name (jb, "capture_unix_us");
  json_builder_add_int_value (jb, record.capture_unix_us);
  // Where the frame was taken, for overlays drawn in slide coordinates.
  for (auto [k, v] : {std::pair<const char *, double>{"x_um", record.stage_x_um},
                      {"y_um", record.stage_y_um},
                      {"um_per_px", record.um_per_px}}) {
    json_builder_set_member_name (jb, k);
    add_number (jb, v);
  }
  json_builder_set_member_name (jb, "width");
  json_builder_add_int_value (jb, record.frame_width);
  json_builder_set_member_name (jb, "height");
  json_builder_add_int_value (jb, record.frame_height);
  json_builder_end_object (jb);
  self->send_main (to_json (jb));
  return GST_PAD_PROBE_OK;
}

// Negotiation (the page: webrtcbin offers) and, for WHEP, the end of ICE
// gathering and a connection that failed.
void
WebRtcPeer::connect_signals ()
{
  if (offerer_)
    g_signal_connect (webrtc_, "on-negotiation-needed", G_CALLBACK (on_negotiation_needed), this);
  g_signal_connect (webrtc_, "on-ice-candidate", G_CALLBACK (on_ice_candidate), this);
  // WHEP: the answer waits for gathering; a peer whose ICE fails goes.
  // (The page's socket says when it goes; its peers watch neither.)
  if (offerer_)
    return;
  g_signal_connect (
      webrtc_, "notify::ice-gathering-state", G_CALLBACK (+[] (GstElement *w, GParamSpec *, gpointer d) {
        GstWebRTCICEGatheringState state = GST_WEBRTC_ICE_GATHERING_STATE_NEW;
        g_object_get (w, "ice-gathering-state", &state, nullptr);
        if (state == GST_WEBRTC_ICE_GATHERING_STATE_COMPLETE)
          static_cast<WebRtcPeer *> (d)->on_main ([] (WebRtcPeer &p) { p.finish_answer (std::nullopt); });
      }),
      this);
  g_signal_connect (webrtc_, "notify::ice-connection-state",
                    G_CALLBACK (+[] (GstElement *w, GParamSpec *, gpointer d) {
                      GstWebRTCICEConnectionState state = GST_WEBRTC_ICE_CONNECTION_STATE_NEW;
                      g_object_get (w, "ice-connection-state", &state, nullptr);
                      auto *self = static_cast<WebRtcPeer *> (d);
                      if (state == GST_WEBRTC_ICE_CONNECTION_STATE_CONNECTED
                          || state == GST_WEBRTC_ICE_CONNECTION_STATE_COMPLETED)
                        self->connected_ = true;
                      if (state == GST_WEBRTC_ICE_CONNECTION_STATE_FAILED
                          || state == GST_WEBRTC_ICE_CONNECTION_STATE_CLOSED)
                        self->on_main ([] (WebRtcPeer &p) { p.failed (); });
                    }),
                    this);
}

// ICE on the daemon's listen address only: once an address is given,
// libnice gathers on it alone (a wildcard address leaves every interface).
// No UPnP port mapping on a hospital network.
void
WebRtcPeer::restrict_ice ()
{
  GObject *ice = nullptr;
  g_object_get (webrtc_, "ice-agent", &ice, nullptr);
  if (!ice)
    return;
  g_autoptr (GInetAddress) addr = g_inet_address_new_from_string (listen_address_.c_str ());
  if (addr && !g_inet_address_get_is_any (addr)) {
    gboolean ok = FALSE;
    g_signal_emit_by_name (ice, "add-local-ip-address", listen_address_.c_str (), &ok);
  }
  if (g_object_class_find_property (G_OBJECT_GET_CLASS (ice), "agent")) {
    GObject *nice = nullptr;
    g_object_get (ice, "agent", &nice, nullptr);
    if (nice && g_object_class_find_property (G_OBJECT_GET_CLASS (nice), "upnp"))
      g_object_set (nice, "upnp", FALSE, nullptr);
    g_clear_object (&nice);
  }
  g_object_unref (ice);
}

// Runs `fn` on the main context while the peer lives.
void
WebRtcPeer::on_main (std::function<void (WebRtcPeer &)> fn)
{
  struct Call {
    std::weak_ptr<WebRtcPeer> peer;
    std::function<void (WebRtcPeer &)> fn;
  };
  g_main_context_invoke (
      nullptr,
      [] (gpointer d) -> gboolean {
        std::unique_ptr<Call> c (static_cast<Call *> (d));
        if (auto p = c->peer.lock ())
          if (*p->alive_)
            c->fn (*p);
        return G_SOURCE_REMOVE;
      },
      new Call{weak_from_this (), std::move (fn)});
}

// Longer than a screen: the promise chain (apply the offer → create the
// answer → apply it) reads in order here; split, each step would take the
// context apart again.
void
WebRtcPeer::answer (const WhepOffer &offer, Answered done, unsigned gather_timeout_ms)
{
  answered_ = std::move (done);
  build (offer.h264_payload);
  // Bounded: an answer goes out with what was gathered by then.
  auto *weak = new std::weak_ptr<WebRtcPeer> (weak_from_this ());
  gather_timeout_ = g_timeout_add_full (
      G_PRIORITY_DEFAULT, gather_timeout_ms,
      [] (gpointer d) -> gboolean {
        if (auto p = static_cast<std::weak_ptr<WebRtcPeer> *> (d)->lock ()) {
          p->gather_timeout_ = 0;
          p->finish_answer (std::nullopt);
        }
        return G_SOURCE_REMOVE;
      },
      weak, [] (gpointer d) { delete static_cast<std::weak_ptr<WebRtcPeer> *> (d); });

  GstSDPMessage *sdp = nullptr;
  if (gst_sdp_message_new_from_text (offer.sdp.c_str (), &sdp) != GST_SDP_OK || !sdp) {
    if (sdp)
      gst_sdp_message_free (sdp);
    on_main ([] (WebRtcPeer &p) { p.finish_answer (Refusal{Reason::kMalformed, "malformed SDP"}); });
    return;
  }
  GstWebRTCSessionDescription *desc = gst_webrtc_session_description_new (GST_WEBRTC_SDP_TYPE_OFFER, sdp);
  struct Ctx {
    std::weak_ptr<WebRtcPeer> peer;
  };
  // Offer applied → create the answer → apply it; gathering starts then and
  // the answer goes out when it completes (finish_answer).
  GstPromise *applied = gst_promise_new_with_change_func (
      [] (GstPromise *promise, gpointer d) {
        auto peer = static_cast<Ctx *> (d)->peer.lock ();
        if (!peer || !*peer->alive_)
          return;
        const bool replied = gst_promise_wait (promise) == GST_PROMISE_RESULT_REPLIED;
        const GstStructure *reply = replied ? gst_promise_get_reply (promise) : nullptr;
        g_autoptr (GError) err = nullptr;
        if (reply && gst_structure_has_field (reply, "error"))
          gst_structure_get (reply, "error", G_TYPE_ERROR, &err, nullptr);
        if (!replied || err) {
          Refusal why{Reason::kMalformed,
                      std::string ("the offer was refused: ") + (err ? err->message : "no reply")};
          peer->on_main ([why] (WebRtcPeer &p) { p.finish_answer (why); });
          return;
        }
        GstPromise *created = gst_promise_new_with_change_func (
            [] (GstPromise *promise, gpointer d) {
              auto peer = static_cast<Ctx *> (d)->peer.lock ();
              if (!peer || !*peer->alive_)
                return;
              const GstStructure *reply = gst_promise_wait (promise) == GST_PROMISE_RESULT_REPLIED
                                              ? gst_promise_get_reply (promise)
                                              : nullptr;
              GstWebRTCSessionDescription *answer = nullptr;
              if (reply)
                gst_structure_get (reply, "answer", GST_TYPE_WEBRTC_SESSION_DESCRIPTION, &answer, nullptr);
              if (!answer) {
                peer->on_main ([] (WebRtcPeer &p) {
                  p.finish_answer (Refusal{Reason::kMalformed, "webrtcbin has no answer to this offer"});
                });
                return;
              }
              g_signal_emit_by_name (peer->webrtc_, "set-local-description", answer, nullptr);
              gst_webrtc_session_description_free (answer);
            },
            new Ctx{peer}, [] (gpointer d) { delete static_cast<Ctx *> (d); });
        g_signal_emit_by_name (peer->webrtc_, "create-answer", nullptr, created);
        gst_promise_unref (created);
      },
      new Ctx{weak_from_this ()}, [] (gpointer d) { delete static_cast<Ctx *> (d); });
  g_signal_emit_by_name (webrtc_, "set-remote-description", desc, applied);
  gst_promise_unref (applied);
  gst_webrtc_session_description_free (desc);
}

// The WHEP answer: webrtcbin's local description with every candidate
// gathered (those it did not write in itself added), then end-of-candidates.
void
WebRtcPeer::finish_answer (std::optional<Refusal> refused)
{
  if (!answered_)
    return;
  Answered done = std::move (answered_);
  answered_ = nullptr;
  if (gather_timeout_) {
    g_source_remove (gather_timeout_);
    gather_timeout_ = 0;
  }
  if (refused) {
    done ("", refused);
    return;
  }
  GstWebRTCSessionDescription *local = nullptr;
  if (webrtc_)
    g_object_get (webrtc_, "local-description", &local, nullptr);
  if (!local) {
    done ("", Refusal{Reason::kUnavailable, "no answer was made in time; try again"});
    return;
  }
  GstSDPMessage *sdp = nullptr;
  gst_sdp_message_copy (local->sdp, &sdp);
  gst_webrtc_session_description_free (local);
  std::vector<std::pair<unsigned, std::string>> candidates;
  {
    std::lock_guard<std::mutex> lock (mutex_);
    candidates = local_candidates_;
  }
  for (guint i = 0; i < gst_sdp_message_medias_len (sdp); i++) {
    auto *media = const_cast<GstSDPMedia *> (gst_sdp_message_get_media (sdp, i));
    bool ended = false;
    for (const auto &[mline, text] : candidates) {
      if (mline != i)
        continue;
      std::string value = text.rfind ("candidate:", 0) == 0 ? text.substr (10) : text;
      bool present = false;
      for (guint k = 0; k < gst_sdp_media_attributes_len (media) && !present; k++) {
        const GstSDPAttribute *a = gst_sdp_media_get_attribute (media, k);
        present = !g_strcmp0 (a->key, "candidate") && a->value && value == a->value;
      }
      if (!present && !value.empty ())
        gst_sdp_media_add_attribute (media, "candidate", value.c_str ());
    }
    for (guint k = 0; k < gst_sdp_media_attributes_len (media); k++)
      ended = ended || !g_strcmp0 (gst_sdp_media_get_attribute (media, k)->key, "end-of-candidates");
    if (!ended && gst_sdp_media_get_port (media) != 0)
      gst_sdp_media_add_attribute (media, "end-of-candidates", nullptr);
  }
  g_autofree char *text = gst_sdp_message_as_text (sdp);
  gst_sdp_message_free (sdp);
  // A viewer that never connects (gone, or waiting for trickle ICE the
  // daemon does not take) does not keep its peer.
  auto *weak = new std::weak_ptr<WebRtcPeer> (weak_from_this ());
  connect_timeout_ = g_timeout_add_seconds_full (
      G_PRIORITY_DEFAULT, kConnectTimeoutS,
      [] (gpointer d) -> gboolean {
        if (auto p = static_cast<std::weak_ptr<WebRtcPeer> *> (d)->lock ()) {
          p->connect_timeout_ = 0;
          if (!p->connected_)
            p->failed ();
        }
        return G_SOURCE_REMOVE;
      },
      weak, [] (gpointer d) { delete static_cast<std::weak_ptr<WebRtcPeer> *> (d); });
  done (text, std::nullopt);
}

void
WebRtcPeer::failed ()
{
  if (auto fn = std::move (on_failed_)) {
    on_failed_ = nullptr;
    fn ();
  }
}

void
WebRtcPeer::stop ()
{
  *alive_ = false;
  answered_ = nullptr;
  on_failed_ = nullptr;
  for (guint *source : {&gather_timeout_, &connect_timeout_})
    if (*source) {
      g_source_remove (*source);
      *source = 0;
    }
  if (viewer_handle_) {
    view_->remove_viewer (viewer_handle_);
    viewer_handle_ = 0;
  }
  if (pipeline_) {
    gst_element_set_state (pipeline_, GST_STATE_NULL);
    gst_clear_object (&webrtc_);
    gst_clear_object (&pipeline_);
  }
}

void
WebRtcPeer::on_negotiation_needed (GstElement *webrtc, gpointer data)
{
  auto *self = static_cast<WebRtcPeer *> (data);
  struct Ctx {
    std::weak_ptr<WebRtcPeer> peer;
  };
  GstPromise *promise = gst_promise_new_with_change_func (
      [] (GstPromise *promise, gpointer d) {
        auto *ctx = static_cast<Ctx *> (d);
        auto peer = ctx->peer.lock ();
        if (!peer || !*peer->alive_ || gst_promise_wait (promise) != GST_PROMISE_RESULT_REPLIED)
          return;
        const GstStructure *reply = gst_promise_get_reply (promise);
        GstWebRTCSessionDescription *offer = nullptr;
        gst_structure_get (reply, "offer", GST_TYPE_WEBRTC_SESSION_DESCRIPTION, &offer, nullptr);
        if (!offer)
          return;
        g_autofree char *sdp = gst_sdp_message_as_text (offer->sdp);
        g_autoptr (JsonBuilder) b = json_builder_new ();
        json_builder_begin_object (b);
        json_builder_set_member_name (b, "type");
        json_builder_add_string_value (b, "offer");
        json_builder_set_member_name (b, "sdp");
        json_builder_add_string_value (b, sdp);
        json_builder_end_object (b);
        // The offer reaches the page before any trickled candidate.
        peer->send_main (to_json (b));
        g_signal_emit_by_name (peer->webrtc_, "set-local-description", offer, nullptr);
        gst_webrtc_session_description_free (offer);
      },
      new Ctx{self->weak_from_this ()}, [] (gpointer d) { delete static_cast<Ctx *> (d); });
  g_signal_emit_by_name (webrtc, "create-offer", nullptr, promise);
  gst_promise_unref (promise); // webrtcbin holds its own reference until it replies
}

void
WebRtcPeer::on_ice_candidate (GstElement *, guint mline, gchar *candidate, gpointer data)
{
  auto *self = static_cast<WebRtcPeer *> (data);
  if (!self->offerer_) { // WHEP: they go into the answer
    std::lock_guard<std::mutex> lock (self->mutex_);
    if (self->local_candidates_.size () < 64)
      self->local_candidates_.emplace_back (mline, candidate ? candidate : "");
    return;
  }
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "type");
  json_builder_add_string_value (b, "ice");
  json_builder_set_member_name (b, "candidate");
  json_builder_add_string_value (b, candidate);
  json_builder_set_member_name (b, "sdpMLineIndex");
  json_builder_add_int_value (b, mline);
  json_builder_end_object (b);
  self->send_main (to_json (b));
}

void
WebRtcPeer::on_message (const ViewerMessage &msg)
{
  if (!webrtc_)
    return;
  if (msg.kind == ViewerMessage::Kind::kAnswer) {
    GstSDPMessage *sdp = nullptr;
    if (gst_sdp_message_new_from_text (msg.sdp.c_str (), &sdp) != GST_SDP_OK || !sdp) {
      if (sdp)
        gst_sdp_message_free (sdp);
      return;
    }
    GstWebRTCSessionDescription *answer
        = gst_webrtc_session_description_new (GST_WEBRTC_SDP_TYPE_ANSWER, sdp);
    g_signal_emit_by_name (webrtc_, "set-remote-description", answer, nullptr);
    gst_webrtc_session_description_free (answer);
  } else if (msg.kind == ViewerMessage::Kind::kIce) {
    if (!msg.candidate.empty ())
      g_signal_emit_by_name (webrtc_, "add-ice-candidate", msg.mline, msg.candidate.c_str ());
  }
}

} // namespace livemicro::orchestrator
