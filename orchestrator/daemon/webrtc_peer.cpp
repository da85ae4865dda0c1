#include "webrtc_peer.h"

#include "common/worker_protocol.h"

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
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  g_autofree char *s = json_to_string (root, FALSE);
  return s;
}

}  // namespace

WebRtcPeer::WebRtcPeer (std::shared_ptr<ViewStream> view, std::string listen_address, Send send)
    : view_ (std::move (view)), listen_address_ (std::move (listen_address)), send_ (std::move (send))
{
}

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
  auto *m = new Msg {weak_from_this (), std::move (json)};
  g_main_context_invoke (nullptr, [] (gpointer d) -> gboolean {
    std::unique_ptr<Msg> m (static_cast<Msg *> (d));
    if (auto p = m->peer.lock ())
      if (*p->alive_)
        p->send_ (m->json);
    return G_SOURCE_REMOVE;
  }, m);
}

void
WebRtcPeer::start ()
{
  g_autoptr (GError) error = nullptr;
  pipeline_ = gst_parse_launch (
      "appsrc name=src is-live=true format=time do-timestamp=false min-latency=0 "
      "! rtph264pay name=pay pt=96 config-interval=0 aggregate-mode=zero-latency "
      "! application/x-rtp,media=video,encoding-name=H264,payload=96,clock-rate=90000 "
      "! webrtcbin name=webrtc bundle-policy=max-bundle latency=0",
      &error);
  if (!pipeline_ || error)
    throw std::runtime_error (std::string ("WebRTC pipeline: ") +
                              (error ? error->message : "cannot build"));
  webrtc_ = gst_bin_get_by_name (GST_BIN (pipeline_), "webrtc");
  GstElement *pay = gst_bin_get_by_name (GST_BIN (pipeline_), "pay");

  // Capture time of each frame by PTS at the payloader's input, then RTP
  // timestamp → capture time at its output, for the page's latency figure.
  GstPad *pay_sink = gst_element_get_static_pad (pay, "sink");
  gst_pad_add_probe (pay_sink, GST_PAD_PROBE_TYPE_BUFFER,
      [] (GstPad *, GstPadProbeInfo *info, gpointer d) -> GstPadProbeReturn {
        auto *self = static_cast<WebRtcPeer *> (d);
        GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
        static GstCaps *caps = gst_caps_from_string (kCaptureTimeCaps);
        if (GstReferenceTimestampMeta *m = gst_buffer_get_reference_timestamp_meta (b, caps)) {
          std::lock_guard<std::mutex> lock (self->mutex_);
          self->capture_by_pts_[GST_BUFFER_PTS (b)] = (int64_t) (m->timestamp / 1000);
          while (self->capture_by_pts_.size () > 32)
            self->capture_by_pts_.erase (self->capture_by_pts_.begin ());
        }
        return GST_PAD_PROBE_OK;
      },
      this, nullptr);
  gst_object_unref (pay_sink);
  GstPad *pay_src = gst_element_get_static_pad (pay, "src");
  gst_pad_add_probe (pay_src,
      (GstPadProbeType) (GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST),
      [] (GstPad *, GstPadProbeInfo *info, gpointer d) -> GstPadProbeReturn {
        auto *self = static_cast<WebRtcPeer *> (d);
        GstBuffer *b = (info->type & GST_PAD_PROBE_TYPE_BUFFER_LIST)
                           ? gst_buffer_list_get (GST_PAD_PROBE_INFO_BUFFER_LIST (info), 0)
                           : GST_PAD_PROBE_INFO_BUFFER (info);
        if (!b)
          return GST_PAD_PROBE_OK;
        int64_t capture = 0;
        {
          std::lock_guard<std::mutex> lock (self->mutex_);
          auto it = self->capture_by_pts_.find (GST_BUFFER_PTS (b));
          if (it == self->capture_by_pts_.end ())
            return GST_PAD_PROBE_OK;
          capture = it->second;
          self->capture_by_pts_.erase (it);
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
        json_builder_add_int_value (jb, capture);
        // Where the frame was taken, for overlays drawn in slide coordinates.
        wire::FrameHeader fh;
        if (self->view_->recent_frame (capture, fh)) {
          for (auto [k, v] : {std::pair<const char *, double> {"x_um", fh.stage_x_um}, {"y_um", fh.stage_y_um},
                   {"um_per_px", fh.um_per_px}}) {
            json_builder_set_member_name (jb, k);
            add_number (jb, v);
          }
          json_builder_set_member_name (jb, "width");
          json_builder_add_int_value (jb, fh.frame_width);
          json_builder_set_member_name (jb, "height");
          json_builder_add_int_value (jb, fh.frame_height);
        }
        json_builder_end_object (jb);
        self->send_main (to_json (jb));
        return GST_PAD_PROBE_OK;
      },
      this, nullptr);
  gst_object_unref (pay_src);
  gst_object_unref (pay);

  g_signal_connect (webrtc_, "on-negotiation-needed", G_CALLBACK (on_negotiation_needed), this);
  g_signal_connect (webrtc_, "on-ice-candidate", G_CALLBACK (on_ice_candidate), this);
  // ICE on the daemon's listen address only: once an address is given,
  // libnice gathers on it alone (a wildcard address leaves every
  // interface).  No UPnP port mapping on a hospital network.
  GObject *ice = nullptr;
  g_object_get (webrtc_, "ice-agent", &ice, nullptr);
  if (ice) {
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
  viewer_handle_ = view_->add_viewer (GST_APP_SRC (src));
  gst_object_unref (src);
}

void
WebRtcPeer::stop ()
{
  *alive_ = false;
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
      new Ctx {self->weak_from_this ()}, [] (gpointer d) { delete static_cast<Ctx *> (d); });
  g_signal_emit_by_name (webrtc, "create-offer", nullptr, promise);
}

void
WebRtcPeer::on_ice_candidate (GstElement *, guint mline, gchar *candidate, gpointer data)
{
  auto *self = static_cast<WebRtcPeer *> (data);
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
    GstWebRTCSessionDescription *answer =
        gst_webrtc_session_description_new (GST_WEBRTC_SDP_TYPE_ANSWER, sdp);
    g_signal_emit_by_name (webrtc_, "set-remote-description", answer, nullptr);
    gst_webrtc_session_description_free (answer);
  } else if (msg.kind == ViewerMessage::Kind::kIce) {
    if (!msg.candidate.empty ())
      g_signal_emit_by_name (webrtc_, "add-ice-candidate", msg.mline, msg.candidate.c_str ());
  }
}

}  // namespace livemicro::orchestrator
