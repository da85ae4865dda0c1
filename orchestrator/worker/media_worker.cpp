// livemicro-worker: the media of one microscope, in its own process.
//
// livemicrod starts one worker per microscope with a connected Unix socket
// (--fd N) and sends JSON commands over it (see common/wire.h):
//   {"cmd":"start","capture":"<gst-launch description ending in a tee named capture>"}
//   {"cmd":"add_view","view":N,"description":"<bin description ending in appsink name=out>"}
//   {"cmd":"remove_view","view":N}
//   {"cmd":"keyframe","view":N}
//   {"cmd":"hw","id":N,"op":"move",...}          (hardware_queue.h commands the microscope)
//   {"cmd":"demand","playing":[N,...],"analysis":bool}  (who watches)
//   {"cmd":"quit"}
// and receives events (started, state, features, stats, view_added,
// view_error, warning, error, device) and frames: each encoded access unit of a view
// with the capture time and stage position of the frame it came from.  A
// crash here takes down this microscope's media only; the daemon restarts it.
//
// Media runs on demand (docs/media-demand.md): a view's encoder gets frames
// only while the view has players or a still of it is pending (a gate on its
// tee pad drops the rest), the capture runs at full rate only while some view
// encodes, an autofocus runs or the analysis is watched (else microscopesrc
// idles at one frame per second), and tumorfeatures analyses only while the
// analysis is watched or a playing view draws it.
#include "common/background.h"
#include "capture_ledger.h"
#include "common/h264.h"
#include "common/worker_protocol.h"
#include "common/wire.h"
#include "gstmicroscopesrc.h"
#include "hardware_queue.h"
#include "heap_policy.h"
#include "slide_view.h"

#include <livemicro/hw/microscope.h>

#include <livemicro/frame_record_meta.h>

#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <json-glib/json-glib.h>
#include <opencv2/core/utility.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <csignal>
#include <thread>
#include <unistd.h>

namespace wire = livemicro::orchestrator::wire;
namespace h264 = livemicro::orchestrator::h264;

namespace {

struct View {
  uint32_t id = 0;
  GstElement *bin = nullptr;
  GstPad *tee_pad = nullptr;
  // The records of the raw frames inside its encoder (CaptureLedger).
  livemicro::orchestrator::CaptureLedger::ViewTimeline timeline;
  // Stills asked for and not taken yet.
  std::mutex still_mutex;
  std::vector<int64_t> still_requests;
  std::atomic<uint64_t> frames{0}, dropped{0}, bytes{0};
  uint64_t frames_at_last_stats = 0;
  // Frames pass its tee pad only while it has players or a still is pending.
  std::atomic<bool> encoding{false};
  bool draws_analysis = false; // a featureoverlay in the branch
};

struct Worker {
  int fd = -1;
  // PNG encoding of stills, off the streaming threads.
  std::unique_ptr<livemicro::orchestrator::Background> stills
      = std::make_unique<livemicro::orchestrator::Background> ();
  // The pages' nuclei, outlined and encoded off the capture's streaming
  // thread (thousands of nuclei take tens of ms: on that thread they held
  // every branch's frames back and its leaky input dropped them).
  std::unique_ptr<livemicro::orchestrator::Background> nuclei
      = std::make_unique<livemicro::orchestrator::Background> ();
  std::atomic<bool> nuclei_pending{false};
  // Someone reads the analysis (demand.analysis), for the streaming thread.
  std::atomic<bool> analysis_read{false};
  std::unique_ptr<wire::Writer> writer;
  GMainLoop *loop = nullptr;
  GstElement *pipeline = nullptr;
  GstElement *tee = nullptr;
  GstElement *scope = nullptr;
  GstElement *features = nullptr; // tumorfeatures, when the capture has one
  GstElement *af_valve = nullptr; // open while an autofocus runs
  // What the daemon last said about who watches, and what runs because of it.
  livemicro::orchestrator::command::Demand demand;
  bool capture_active = false, analysis_active = false;
  std::atomic<uint64_t> capture_frames{0};
  std::mutex views_mutex;
  std::map<uint32_t, std::shared_ptr<View>> views;
  std::unique_ptr<livemicro::orchestrator::HardwareQueue> hardware;
  std::string last_state;
  gint64 last_state_sent_us = 0;
  gint64 last_stats_us = 0;
  double analysis_ms_sum = 0;
  uint64_t analysis_count = 0;
  // Each recent frame's record at the capture tee: a view whose profile
  // strips the capture time from the stage meta (guest: geometry only)
  // still gets a true capture time in its stream for latency.
  livemicro::orchestrator::CaptureLedger ledger;
};

Worker g;

// For the pages (slide_view.h): the nuclei of each new analysis and the
// frames of the slide map, each at most twice a second.
struct SlideViews {
  GstClockTime nuclei_pts = GST_CLOCK_TIME_NONE;
  gint64 nuclei_sent_us = 0, map_pasted_us = 0;
  // Made with the first frame on the streaming thread, read on the main
  // loop: through std::atomic_load / std::atomic_store only.
  std::shared_ptr<livemicro::orchestrator::SlideMap> map;
};
SlideViews slide_views;

// Every event to the daemon goes through the one codec (worker_protocol.h).
void
send (const livemicro::orchestrator::WorkerEvent &e)
{
  if (!g.writer->send_json (wire::Type::kEvent, livemicro::orchestrator::encode (e)))
    g_main_loop_quit (g.loop);
}

// tumorfeatures' summary message, typed.
livemicro::orchestrator::AnalysisSummary
summary_of (const GstStructure *s)
{
  livemicro::orchestrator::AnalysisSummary a;
  auto dbl = [s] (const char *k) {
    double v = NAN;
    gst_structure_get_double (s, k, &v);
    return v;
  };
  auto opt_dbl = [s] (const char *k) -> std::optional<double> {
    double v;
    if (gst_structure_get_double (s, k, &v))
      return v;
    return std::nullopt;
  };
  auto opt_uint = [s] (const char *k) -> std::optional<uint32_t> {
    guint v;
    if (gst_structure_get_uint (s, k, &v))
      return v;
    return std::nullopt;
  };
  auto str = [s] (const char *k) -> std::optional<std::string> {
    const char *v = gst_structure_get_string (s, k);
    if (v)
      return std::string (v);
    return std::nullopt;
  };
  gboolean analysed = FALSE;
  gst_structure_get_boolean (s, "analysed", &analysed);
  a.analysed = analysed;
  a.quality = str ("quality").value_or ("");
  guint64 u64 = 0;
  if (gst_structure_get_uint64 (s, "frames_analysed", &u64))
    a.frames_analysed = u64;
  if (gst_structure_get_uint64 (s, "frames_skipped", &u64))
    a.frames_skipped = u64;
  if (gst_structure_get_uint64 (s, "analysed_pts", &u64))
    a.analysed_pts = u64;
  a.frame_width = opt_uint ("frame_width").value_or (0);
  a.frame_height = opt_uint ("frame_height").value_or (0);
  a.um_per_px = dbl ("um_per_px");
  a.working_um_per_px = dbl ("working_um_per_px");
  a.stain = str ("stain").value_or ("");
  a.tissue_fraction = dbl ("tissue_fraction");
  a.tissue_area_mm2 = dbl ("tissue_area_mm2");
  a.mean_h_od = dbl ("mean_h_od");
  a.mean_e_od = dbl ("mean_e_od");
  a.focus = dbl ("focus");
  a.dab_fraction = dbl ("dab_fraction");
  a.analysis_ms = dbl ("analysis_ms");
  a.he_ratio = opt_dbl ("he_ratio");
  a.nuclei_count = opt_uint ("nuclei_count");
  a.mitotic_candidates = opt_uint ("mitotic_candidates");
  a.pleomorphism = opt_uint ("pleomorphism");
  a.nuclei_per_mm2 = opt_dbl ("nuclei_per_mm2");
  a.mean_area_um2 = opt_dbl ("mean_area_um2");
  a.cv_area = opt_dbl ("cv_area");
  a.mean_circularity = opt_dbl ("mean_circularity");
  a.cv_h_od = opt_dbl ("cv_h_od");
  a.size_ratio = opt_dbl ("size_ratio");
  a.mitotic_candidates_per_mm2 = opt_dbl ("mitotic_candidates_per_mm2");
  a.grade_cue = str ("grade_cue");
  a.grade_cue_note = str ("grade_cue_note");
  return a;
}

void publish_slide_views (GstPad *pad, GstBuffer *buf);

GstPadProbeReturn
on_capture_frame (GstPad *pad, GstPadProbeInfo *info, gpointer)
{
  GstBuffer *buf = GST_PAD_PROBE_INFO_BUFFER (info);
  g.capture_frames++;
  // From the first frame on (heap_policy.h): the start-up, before it, keeps
  // glibc's own thresholds.
  static std::atomic<size_t> frame_bytes{0};
  if (const size_t bytes = gst_buffer_get_size (buf); frame_bytes.exchange (bytes) != bytes)
    livemicro::orchestrator::fit_allocator_thresholds (bytes);
  publish_slide_views (pad, buf);
  if (!GST_BUFFER_PTS_IS_VALID (buf))
    return GST_PAD_PROBE_OK;
  livemicro::hw::FrameRecord r;
  if (const LivemicroStageMeta *m = livemicro_buffer_get_stage_meta (buf))
    r = livemicro::frame_record_of (*m);
  if (r.capture_unix_us == 0)
    r.capture_unix_us = g_get_real_time ();
  g.ledger.captured (GST_BUFFER_PTS (buf), r);
  return GST_PAD_PROBE_OK;
}

// The map covers the slide where the microscope knows it (its macro image is
// rendered off this thread), else the stage's travel: the soft limits of
// the field's centre widened by half a field.
void
make_slide_map (const LivemicroStageMeta &sm)
{
  GstStructure *limits = nullptr;
  g_object_get (g.scope, "soft-limits", &limits, nullptr);
  double x0 = 0, x1 = 0, y0 = 0, y1 = 0;
  if (limits) {
    gst_structure_get (limits, "x_min_um", G_TYPE_DOUBLE, &x0, "x_max_um", G_TYPE_DOUBLE, &x1, "y_min_um",
                       G_TYPE_DOUBLE, &y0, "y_max_um", G_TYPE_DOUBLE, &y1, nullptr);
    gst_structure_free (limits);
  }
  const double half_w = sm.frame_width * sm.um_per_px / 2, half_h = sm.frame_height * sm.um_per_px / 2;
  cv::Rect2d area (x0 - half_w, y0 - half_h, x1 - x0 + 2 * half_w, y1 - y0 + 2 * half_h);
  if (!(area.width > 0 && area.height > 0)) // no limits: a standard slide around here
    area = cv::Rect2d (sm.stage_x_um - 37500, sm.stage_y_um - 12500, 75000, 25000);
  constexpr int kMapSidePx = 960;
  auto map = std::make_shared<livemicro::orchestrator::SlideMap> (area, kMapSidePx);
  std::atomic_store (&slide_views.map, map);
  // Rendering a slide's macro image costs seconds of CPU: on a thread of its
  // own at the lowest priority, after the capture has settled, so that it
  // never delays the video, a still or a restart.  It renders from the slide
  // the microscope has open, and touches only the map it shares.
  // The microscope is taken from the element once the wait is over (the one
  // open then: a microscope closed meanwhile is neither kept open for this,
  // nor rendered), and waited for while the element is stopped.
  GstElement *scope = GST_ELEMENT (gst_object_ref (g.scope));
  std::thread ([map, scope] {
#ifdef __linux__
    setpriority (PRIO_PROCESS, (id_t)syscall (SYS_gettid), 19);
#endif
    std::shared_ptr<livemicro::hw::Microscope> microscope;
    for (int k = 0; k < 30 && !microscope; k++) {
      g_usleep (2 * G_USEC_PER_SEC);
      microscope = livemicro_microscopesrc_get_microscope (scope);
    }
    gst_object_unref (scope);
    try {
      if (!microscope)
        return;
      if (auto o = microscope->overview (kMapSidePx))
        map->set_macro (o->rgb, o->area_um);
    } catch (const std::exception &e) {
      g_printerr ("livemicro-worker: no macro image for the slide map: %s\n", e.what ());
    }
    // The render's working images are freed for good: their pages go back.
    livemicro::orchestrator::give_back_freed_memory ();
  }).detach ();
}

// From the capture's streaming thread.
void
publish_slide_views (GstPad *pad, GstBuffer *buf)
{
  const gint64 now = g_get_monotonic_time ();
  LivemicroFeaturesMeta *fm = livemicro_buffer_get_features_meta (buf);
  if (fm && fm->n_nuclei > 0 && fm->analysed_pts != slide_views.nuclei_pts
      && now - slide_views.nuclei_sent_us >= 500000 && g.analysis_read && !g.nuclei_pending.exchange (true)) {
    slide_views.nuclei_pts = fm->analysed_pts;
    slide_views.nuclei_sent_us = now;
    // A buffer without memory carrying the frame's metas: the nuclei are
    // shared with the frame's (a reference), the frame itself is not held.
    GstBuffer *carrier = gst_buffer_new ();
    gst_buffer_copy_into (carrier, buf, GST_BUFFER_COPY_META, 0, (gsize)-1);
    g.nuclei->push ([carrier] {
      if (LivemicroFeaturesMeta *m = livemicro_buffer_get_features_meta (carrier))
        if (auto field = livemicro::orchestrator::analysed_field (*m)) {
          // Packed, not JSON (worker_protocol.h: pack_field).
          const std::vector<uint8_t> packed = livemicro::orchestrator::pack_field (*field);
          if (!g.writer->send (wire::Type::kNuclei, packed.data (), packed.size (), nullptr, 0))
            g_main_loop_quit (g.loop);
        }
      gst_buffer_unref (carrier);
      g.nuclei_pending = false;
    });
  }
  LivemicroStageMeta *sm = livemicro_buffer_get_stage_meta (buf);
  if (!sm || !(sm->um_per_px > 0) || now - slide_views.map_pasted_us < 500000)
    return;
  slide_views.map_pasted_us = now;
  auto map = std::atomic_load (&slide_views.map);
  if (!map) {
    make_slide_map (*sm);
    map = std::atomic_load (&slide_views.map);
  }
  g_autoptr (GstCaps) caps = gst_pad_get_current_caps (pad);
  GstVideoInfo info;
  GstVideoFrame frame;
  if (!caps || !gst_video_info_from_caps (&info, caps)
      || GST_VIDEO_INFO_FORMAT (&info) != GST_VIDEO_FORMAT_RGB
      || !gst_video_frame_map (&frame, &info, buf, GST_MAP_READ))
    return;
  cv::Mat rgb (GST_VIDEO_FRAME_HEIGHT (&frame), GST_VIDEO_FRAME_WIDTH (&frame), CV_8UC3,
               GST_VIDEO_FRAME_PLANE_DATA (&frame, 0), GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0));
  double upp = sm->frame_width > 0 ? sm->um_per_px * sm->frame_width / rgb.cols : sm->um_per_px;
  map->paste (rgb, sm->stage_x_um, sm->stage_y_um, upp);
  gst_video_frame_unmap (&frame);
}

// What runs follows who watches (see the top of this file); on the main loop.
void
apply_demand ()
{
  std::vector<std::shared_ptr<View>> views;
  {
    std::lock_guard<std::mutex> lock (g.views_mutex);
    for (auto &kv : g.views)
      views.push_back (kv.second);
  }
  const auto &playing = g.demand.playing;
  bool any_encoding = false, overlay_played = false;
  for (auto &v : views) {
    bool still_pending;
    {
      std::lock_guard<std::mutex> lock (v->still_mutex);
      still_pending = !v->still_requests.empty ();
    }
    const bool on = still_pending || std::find (playing.begin (), playing.end (), v->id) != playing.end ();
    v->encoding = on;
    any_encoding = any_encoding || on;
    overlay_played = overlay_played || (on && v->draws_analysis);
  }
  gboolean autofocus = FALSE;
  if (g.af_valve) {
    gboolean drop = TRUE;
    g_object_get (g.af_valve, "drop", &drop, nullptr);
    autofocus = !drop;
  }
  const bool capture = any_encoding || autofocus || g.demand.analysis;
  const bool analysis = g.demand.analysis || overlay_played;
  if (g.scope && capture != g.capture_active)
    g_object_set (g.scope, "idle", !capture, nullptr);
  if (!capture && g.capture_active) {
    // Gone idle: once the frames in flight are gone, what they and the
    // analysis' last result held goes back too.  The branch removal and the
    // analysis trim as they free, but these are freed after them, and
    // nothing else would trim an idle worker (heap_policy.h).
    g_timeout_add_seconds (
        2,
        [] (gpointer) -> gboolean {
          if (!g.capture_active)
            livemicro::orchestrator::give_back_freed_memory ();
          return G_SOURCE_REMOVE;
        },
        nullptr);
  }
  if (g.features && analysis != g.analysis_active)
    g_object_set (g.features, "active", analysis, nullptr);
  g.capture_active = capture;
  g.analysis_active = analysis;
  g.analysis_read = g.demand.analysis;
}

// From any thread: apply_demand on the main loop.
void
apply_demand_soon ()
{
  g_main_context_invoke (
      nullptr,
      [] (gpointer) -> gboolean {
        apply_demand ();
        return G_SOURCE_REMOVE;
      },
      nullptr);
}

// The gate of a view's tee pad: frames reach its encoder only while it is
// wanted.  Only buffers are dropped: caps and segment events keep the branch
// negotiated, so the first frame after idle goes through the mask like any
// other.
GstPadProbeReturn
on_view_gate (GstPad *, GstPadProbeInfo *, gpointer data)
{
  auto *view = static_cast<std::shared_ptr<View> *> (data);
  return (*view)->encoding ? GST_PAD_PROBE_OK : GST_PAD_PROBE_DROP;
}

// Records the record of each raw frame entering a view's encoder.
GstPadProbeReturn
on_raw_frame (GstPad *, GstPadProbeInfo *info, gpointer data)
{
  auto *view = static_cast<View *> (data);
  GstBuffer *buf = GST_PAD_PROBE_INFO_BUFFER (info);
  std::optional<livemicro::hw::FrameRecord> record;
  if (const LivemicroStageMeta *m = livemicro_buffer_get_stage_meta (buf))
    record = livemicro::frame_record_of (*m);
  g.ledger.entering_encoder (view->timeline, GST_BUFFER_PTS (buf), record);
  return GST_PAD_PROBE_OK;
}

GstFlowReturn
on_encoded (GstAppSink *sink, gpointer data)
{
  auto *view = static_cast<View *> (data);
  GstSample *sample = gst_app_sink_pull_sample (sink);
  if (!sample)
    return GST_FLOW_EOS;
  const int64_t encoded_unix_us = g_get_real_time ();
  GstBuffer *buf = gst_sample_get_buffer (sample);
  wire::FrameHeader h;
  h.view_id = view->id;
  h.record = livemicro::orchestrator::CaptureLedger::encoded (view->timeline, GST_BUFFER_PTS (buf));
  h.encoded_unix_us = encoded_unix_us;
  h.pts_ns = GST_BUFFER_PTS (buf);
  h.duration_ns = GST_BUFFER_DURATION_IS_VALID (buf) ? GST_BUFFER_DURATION (buf) : 0;
  if (!GST_BUFFER_FLAG_IS_SET (buf, GST_BUFFER_FLAG_DELTA_UNIT))
    h.flags |= wire::kFlagKeyframe;
  GstMapInfo map;
  bool ok = true;
  if (gst_buffer_map (buf, &map, GST_MAP_READ)) {
    // The frame's record rides in the stream (SEI), for any client.
    std::vector<uint8_t> au = h264::with_frame_record (map.data, map.size, h.record);
    gst_buffer_unmap (buf, &map);
    ok = g.writer->send_frame (h, au.data (), au.size ());
    view->frames++;
    view->bytes += au.size ();
  }
  gst_sample_unref (sample);
  if (!ok) {
    // The daemon is gone: nothing to stream to.
    g_main_loop_quit (g.loop);
    return GST_FLOW_EOS;
  }
  return GST_FLOW_OK;
}

// A still: the view's frame as it enters the encoder (masked like the video,
// full resolution, before any compression), made a PNG by GStreamer's own
// converter (videoconvert ! pngenc) off the streaming thread.
GstPadProbeReturn
on_still_frame (GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  auto *view = static_cast<View *> (data);
  std::vector<int64_t> requests;
  {
    std::lock_guard<std::mutex> lock (view->still_mutex);
    if (view->still_requests.empty ())
      return GST_PAD_PROBE_OK;
    requests.swap (view->still_requests);
  }
  apply_demand_soon (); // the gate may close again
  GstCaps *caps = gst_pad_get_current_caps (pad);
  std::shared_ptr<GstSample> frame (
      caps ? gst_sample_new (GST_PAD_PROBE_INFO_BUFFER (info), caps, nullptr, nullptr) : nullptr,
      [] (GstSample *s) {
        if (s)
          gst_sample_unref (s);
      });
  if (caps)
    gst_caps_unref (caps);
  g.stills->push ([requests, frame] {
    std::string error = "could not convert the frame";
    g_autofree char *b64 = nullptr;
    GstVideoInfo in;
    if (frame && gst_video_info_from_caps (&in, gst_sample_get_caps (frame.get ()))) {
      g_autoptr (GstCaps) png_caps = gst_caps_new_empty_simple ("image/png");
      g_autoptr (GError) err = nullptr;
      g_autoptr (GstSample) png = gst_video_convert_sample (frame.get (), png_caps, 10 * GST_SECOND, &err);
      GstMapInfo map;
      if (png && gst_buffer_map (gst_sample_get_buffer (png), &map, GST_MAP_READ)) {
        b64 = g_base64_encode (map.data, map.size);
        gst_buffer_unmap (gst_sample_get_buffer (png), &map);
      } else if (err) {
        error += std::string (": ") + err->message;
      }
    }
    for (int64_t r : requests) {
      livemicro::orchestrator::event::StillTaken still;
      still.request = r;
      if (!b64) {
        still.error = error;
      } else {
        still.png_base64 = b64;
        still.width = (uint32_t)GST_VIDEO_INFO_WIDTH (&in);
        still.height = (uint32_t)GST_VIDEO_INFO_HEIGHT (&in);
      }
      send (still);
    }
  });
  return GST_PAD_PROBE_OK;
}

// A view's bin from the daemon's description; nullptr and `error` when it
// does not parse or parses with a problem (e.g. a missing element).
GstElement *
parse_view_bin (const std::string &description, std::string &error)
{
  g_autoptr (GError) err = nullptr;
  GstElement *bin = gst_parse_bin_from_description (description.c_str (), TRUE, &err);
  if (!bin || err) {
    error = std::string ("view pipeline: ") + (err ? err->message : "parse error");
    if (bin)
      gst_object_unref (bin);
    return nullptr;
  }
  return bin;
}

// The bin's encoder (a new reference), and whether it draws the analysis.
GstElement *
find_encoder (GstElement *bin, bool &draws_analysis)
{
  GstElement *enc = nullptr;
  GstIterator *it = gst_bin_iterate_recurse (GST_BIN (bin));
  GValue item = G_VALUE_INIT;
  while (gst_iterator_next (it, &item) == GST_ITERATOR_OK) {
    GstElement *e = GST_ELEMENT (g_value_get_object (&item));
    GstElementFactory *f = gst_element_get_factory (e);
    if (f && gst_element_factory_list_is_type (f, GST_ELEMENT_FACTORY_TYPE_ENCODER))
      gst_object_replace ((GstObject **)&enc, GST_OBJECT (e));
    if (f && g_str_equal (GST_OBJECT_NAME (f), "featureoverlay"))
      draws_analysis = true;
    g_value_reset (&item);
  }
  g_value_unset (&item);
  gst_iterator_free (it);
  return enc;
}

// Hooks a parsed view bin up: encoded access units out of its appsink
// "out", frame records at its encoder's input, stills at "encode_in", and
// frames dropped at its leaky input queue "in".
bool
instrument_view (View &view, std::string &error)
{
  GstBin *bin = GST_BIN (view.bin);
  g_autoptr (GstElement) sink = gst_bin_get_by_name (bin, "out");
  if (!sink || !GST_IS_APP_SINK (sink)) {
    error = "view pipeline has no appsink named 'out'";
    return false;
  }
  g_autoptr (GstElement) enc = find_encoder (view.bin, view.draws_analysis);
  if (!enc) {
    error = "view pipeline has no encoder";
    return false;
  }
  GstAppSinkCallbacks callbacks{};
  callbacks.new_sample = on_encoded;
  gst_app_sink_set_callbacks (GST_APP_SINK (sink), &callbacks, &view, nullptr);
  GstPad *enc_sink = gst_element_get_static_pad (enc, "sink");
  gst_pad_add_probe (enc_sink, GST_PAD_PROBE_TYPE_BUFFER, on_raw_frame, &view, nullptr);
  gst_object_unref (enc_sink);
  if (g_autoptr (GstElement) encode_in = gst_bin_get_by_name (bin, "encode_in")) {
    GstPad *p = gst_element_get_static_pad (encode_in, "sink");
    gst_pad_add_probe (p, GST_PAD_PROBE_TYPE_BUFFER, on_still_frame, &view, nullptr);
    gst_object_unref (p);
  }
  if (g_autoptr (GstElement) q = gst_bin_get_by_name (bin, "in"))
    g_signal_connect (q, "overrun",
                      G_CALLBACK (+[] (GstElement *, gpointer d) { static_cast<View *> (d)->dropped++; }),
                      &view);
  return true;
}

// Adds the view's bin to the pipeline and links it to a new pad of the
// capture tee, behind the view's gate.  On failure the bin is out again.
bool
link_view (const std::shared_ptr<View> &view, std::string &error)
{
  // Playing before it is linked: a buffer the tee pushes into a branch whose
  // pads are not active yet comes back FLUSHING, the tee hands that to the
  // capture source, and the source pauses its task for good (the whole
  // microscope stops).
  gst_bin_add (GST_BIN (g.pipeline), view->bin);
  gst_element_sync_state_with_parent (view->bin);
  view->tee_pad = gst_element_request_pad_simple (g.tee, "src_%u");
  // Closed until the daemon says someone plays it (or a still is asked for).
  gst_pad_add_probe (view->tee_pad,
                     (GstPadProbeType)(GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST),
                     on_view_gate, new std::shared_ptr<View> (view),
                     [] (gpointer d) { delete static_cast<std::shared_ptr<View> *> (d); });
  GstPad *bin_sink = gst_element_get_static_pad (view->bin, "sink");
  GstPadLinkReturn lr = bin_sink ? gst_pad_link (view->tee_pad, bin_sink) : GST_PAD_LINK_NOFORMAT;
  if (bin_sink)
    gst_object_unref (bin_sink);
  if (lr == GST_PAD_LINK_OK)
    return true;
  error = "cannot link the view to the capture tee";
  gst_element_release_request_pad (g.tee, view->tee_pad);
  gst_object_unref (view->tee_pad);
  gst_element_set_state (view->bin, GST_STATE_NULL);
  gst_bin_remove (GST_BIN (g.pipeline), view->bin);
  return false;
}

bool
add_view (uint32_t id, const std::string &description, std::string &error)
{
  if (!g.pipeline) {
    error = "no capture pipeline";
    return false;
  }
  {
    std::lock_guard<std::mutex> lock (g.views_mutex);
    if (g.views.count (id)) {
      error = "view " + std::to_string (id) + " exists";
      return false;
    }
  }
  auto view = std::make_shared<View> ();
  view->id = id;
  view->bin = parse_view_bin (description, error);
  if (!view->bin)
    return false;
  if (!instrument_view (*view, error)) {
    gst_object_unref (view->bin);
    return false;
  }
  if (!link_view (view, error))
    return false;
  {
    std::lock_guard<std::mutex> lock (g.views_mutex);
    g.views[id] = view;
  }
  apply_demand (); // the daemon may have named it already
  return true;
}

void
remove_view (uint32_t id)
{
  std::shared_ptr<View> view;
  {
    std::lock_guard<std::mutex> lock (g.views_mutex);
    auto it = g.views.find (id);
    if (it == g.views.end ())
      return;
    view = it->second;
    g.views.erase (it);
  }
  // Unlink from the tee while no buffer is in flight on that pad, then tear
  // the branch down on the main loop.
  auto *ctx = new std::shared_ptr<View> (view);
  gst_pad_add_probe (
      view->tee_pad, GST_PAD_PROBE_TYPE_IDLE,
      [] (GstPad *pad, GstPadProbeInfo *, gpointer data) -> GstPadProbeReturn {
        auto *v = static_cast<std::shared_ptr<View> *> (data);
        GstPad *peer = gst_pad_get_peer (pad);
        if (peer) {
          gst_pad_unlink (pad, peer);
          gst_object_unref (peer);
        }
        g_idle_add (
            [] (gpointer d) -> gboolean {
              auto *vv = static_cast<std::shared_ptr<View> *> (d);
              View &v = **vv;
              gst_element_release_request_pad (g.tee, v.tee_pad);
              gst_object_unref (v.tee_pad);
              gst_element_set_state (v.bin, GST_STATE_NULL);
              gst_bin_remove (GST_BIN (g.pipeline), v.bin);
              delete vv;
              // What the branch freed goes back to the system (heap_policy.h).
              livemicro::orchestrator::give_back_freed_memory ();
              return G_SOURCE_REMOVE;
            },
            v);
        return GST_PAD_PROBE_REMOVE;
      },
      ctx, nullptr);
}

void
force_keyframe (uint32_t id)
{
  std::shared_ptr<View> view;
  {
    std::lock_guard<std::mutex> lock (g.views_mutex);
    auto it = g.views.find (id);
    if (it == g.views.end ())
      return;
    view = it->second;
  }
  GstElement *sink = gst_bin_get_by_name (GST_BIN (view->bin), "out");
  if (!sink)
    return;
  GstPad *pad = gst_element_get_static_pad (sink, "sink");
  // An upstream event leaves a sink pad with push_event.
  gst_pad_push_event (pad, gst_video_event_new_upstream_force_key_unit (GST_CLOCK_TIME_NONE, TRUE, 0));
  gst_object_unref (pad);
  gst_object_unref (sink);
}

void
send_state (bool force)
{
  if (!g.hardware)
    return;
  std::optional<livemicro::orchestrator::MicroscopeStatus> status = g.hardware->status ();
  if (!status)
    return;
  livemicro::orchestrator::event::State st;
  st.status = *status;
  std::string s = livemicro::orchestrator::encode (livemicro::orchestrator::WorkerEvent (st));
  gint64 now = g_get_monotonic_time ();
  if (force || s != g.last_state || now - g.last_state_sent_us > G_USEC_PER_SEC) {
    g.last_state = s;
    g.last_state_sent_us = now;
    if (!g.writer->send_json (wire::Type::kEvent, s))
      g_main_loop_quit (g.loop);
  }
}

// From the hardware thread: the command's end goes out on the main loop,
// after the state as it is now.  So whoever hears that a command ended and
// then reads the microscope sees its effect (a stop's position, not one
// sampled before it), and no older state follows.
void
send_command_ended (livemicro::orchestrator::event::CommandEnded ended)
{
  g_idle_add_full (
      G_PRIORITY_DEFAULT,
      [] (gpointer data) -> gboolean {
        std::unique_ptr<livemicro::orchestrator::event::CommandEnded> e (
            static_cast<livemicro::orchestrator::event::CommandEnded *> (data));
        send_state (true);
        send (*e);
        return G_SOURCE_REMOVE;
      },
      new livemicro::orchestrator::event::CommandEnded (std::move (ended)), nullptr);
}

void
send_stats ()
{
  gint64 now = g_get_monotonic_time ();
  double seconds = g.last_stats_us ? (now - g.last_stats_us) / 1e6 : 0;
  g.last_stats_us = now;
  std::vector<std::shared_ptr<View>> views;
  {
    std::lock_guard<std::mutex> lock (g.views_mutex);
    for (auto &kv : g.views)
      views.push_back (kv.second);
  }
  livemicro::orchestrator::event::Stats stats;
  for (auto &v : views) {
    uint64_t frames = v->frames;
    stats.views.push_back ({v->id, frames, (uint64_t)v->dropped.load (), (uint64_t)v->bytes.load (),
                            seconds > 0 ? (frames - v->frames_at_last_stats) / seconds : 0,
                            v->encoding.load ()});
    v->frames_at_last_stats = frames;
  }
  stats.analysis_ms_mean = g.analysis_count ? g.analysis_ms_sum / g.analysis_count : 0;
  stats.analysis_count = g.analysis_count;
  stats.capture_frames = g.capture_frames;
  stats.capture_active = g.capture_active;
  stats.analysis_active = g.analysis_active;
  send (stats);
}

gboolean
on_bus (GstBus *, GstMessage *m, gpointer)
{
  switch (GST_MESSAGE_TYPE (m)) {
  case GST_MESSAGE_ERROR: {
    g_autoptr (GError) err = nullptr;
    g_autofree char *dbg = nullptr;
    gst_message_parse_error (m, &err, &dbg);
    // An error inside a view branch takes that view down, not the capture.
    GstObject *src = GST_MESSAGE_SRC (m);
    std::shared_ptr<View> culprit;
    {
      std::lock_guard<std::mutex> lock (g.views_mutex);
      for (auto &kv : g.views)
        if (gst_object_has_as_ancestor (src, GST_OBJECT (kv.second->bin)))
          culprit = kv.second;
    }
    if (culprit) {
      send (livemicro::orchestrator::event::ViewError{culprit->id, err->message});
      remove_view (culprit->id);
    } else {
      send (livemicro::orchestrator::event::Failed{err->message});
      g_main_loop_quit (g.loop);
    }
    break;
  }
  case GST_MESSAGE_WARNING: {
    g_autoptr (GError) err = nullptr;
    gst_message_parse_warning (m, &err, nullptr);
    send (livemicro::orchestrator::event::Warning{GST_OBJECT_NAME (GST_MESSAGE_SRC (m)), err->message});
    break;
  }
  case GST_MESSAGE_ELEMENT: {
    const GstStructure *s = gst_message_get_structure (m);
    if (s && gst_structure_has_name (s, "microscopesrc")) {
      // A device of the microscope went away or came back.
      gboolean online = TRUE;
      gst_structure_get_boolean (s, "online", &online);
      auto field = [s] (const char *f) {
        const char *v = gst_structure_get_string (s, f);
        return std::string (v ? v : "");
      };
      send (livemicro::orchestrator::event::Device{field ("part"), field ("device"), field ("problem"),
                                                   online != FALSE});
      send_state (true);
    }
    if (s && gst_structure_has_name (s, "tumorfeatures")) {
      double ms;
      if (gst_structure_get_double (s, "analysis_ms", &ms)) {
        g.analysis_ms_sum += ms;
        g.analysis_count++;
      }
      send (livemicro::orchestrator::event::Features{summary_of (s)});
    }
    break;
  }
  default:
    break;
  }
  return TRUE;
}

// The capture pipeline of `description`, in a pipeline of its own when it is
// a bare bin; nullptr and `error` when it does not parse.
GstElement *
parse_capture (const std::string &description, std::string &error)
{
  GError *err = nullptr;
  GstElement *p = gst_parse_launch (description.c_str (), &err);
  if (!p || err) {
    error = std::string ("capture pipeline: ") + (err ? err->message : "parse error");
    g_clear_error (&err);
    if (p)
      gst_object_unref (p);
    return nullptr;
  }
  if (!GST_IS_PIPELINE (p)) {
    GstElement *pipe = gst_pipeline_new ("capture");
    gst_bin_add (GST_BIN (pipe), p);
    p = pipe;
  }
  return p;
}

// The first tumorfeatures element inside `bin` (a new reference), or nullptr.
GstElement *
find_tumorfeatures (GstBin *bin)
{
  GstElement *found = nullptr;
  GstIterator *it = gst_bin_iterate_recurse (bin);
  GValue item = G_VALUE_INIT;
  while (!found && gst_iterator_next (it, &item) == GST_ITERATOR_OK) {
    GstElement *e = GST_ELEMENT (g_value_get_object (&item));
    GstElementFactory *f = gst_element_get_factory (e);
    if (f && g_str_equal (GST_OBJECT_NAME (f), "tumorfeatures"))
      found = GST_ELEMENT (gst_object_ref (e));
    g_value_reset (&item);
  }
  g_value_unset (&item);
  gst_iterator_free (it);
  return found;
}

// Sets the capture PLAYING and watches its bus; false and the element's own
// words in `error` when it fails to start.
bool
play_capture (std::string &error)
{
  GstBus *bus = gst_element_get_bus (g.pipeline);
  if (gst_element_set_state (g.pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    // The element said why on the bus (e.g. "slide '…' does not exist").
    error = "the capture pipeline failed to start";
    if (GstMessage *m = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR)) {
      g_autoptr (GError) err = nullptr;
      gst_message_parse_error (m, &err, nullptr);
      error = err->message;
      gst_message_unref (m);
    }
    gst_object_unref (bus);
    return false;
  }
  gst_bus_add_watch (bus, on_bus, nullptr);
  gst_object_unref (bus);
  return true;
}

// The autofocus tap (grey frames of the capture, flowing only while an
// autofocus runs) and the hardware queue that uses it.
void
start_hardware ()
{
  GstElement *af = gst_parse_bin_from_description (
      "valve name=afvalve drop=true ! queue leaky=downstream max-size-buffers=1 max-size-bytes=0 "
      "max-size-time=0 ! videoconvert ! video/x-raw,format=GRAY8 "
      "! appsink name=af max-buffers=1 drop=true sync=false async=false",
      TRUE, nullptr);
  GstElement *valve = nullptr, *af_sink = nullptr;
  if (af) {
    gst_bin_add (GST_BIN (g.pipeline), af);
    gst_element_sync_state_with_parent (af); // playing before linked, as a view
    GstPad *tee_pad = gst_element_request_pad_simple (g.tee, "src_%u");
    GstPad *af_pad = gst_element_get_static_pad (af, "sink");
    gst_pad_link (tee_pad, af_pad);
    gst_object_unref (af_pad);
    gst_object_unref (tee_pad);
    valve = gst_bin_get_by_name (GST_BIN (af), "afvalve");
    af_sink = gst_bin_get_by_name (GST_BIN (af), "af");
  }
  if (valve) {
    // An autofocus needs the capture at full rate while it runs.
    g.af_valve = GST_ELEMENT (gst_object_ref (valve));
    g_signal_connect (valve, "notify::drop",
                      G_CALLBACK (+[] (GObject *, GParamSpec *, gpointer) { apply_demand_soon (); }),
                      nullptr);
  }
  g.hardware = std::make_unique<livemicro::orchestrator::HardwareQueue> (
      g.scope, valve, af_sink ? GST_APP_SINK (af_sink) : nullptr,
      [] (uint64_t id, const std::string &op, const std::string &status, const std::string &detail) {
        send_command_ended ({id, op, status, detail});
      });
  if (valve)
    gst_object_unref (valve);
  if (af_sink)
    gst_object_unref (af_sink);
}

bool
start (const std::string &description, std::string &error)
{
  GstElement *p = parse_capture (description, error);
  if (!p)
    return false;
  g.pipeline = p;
  g.tee = gst_bin_get_by_name (GST_BIN (p), "capture");
  g.scope = gst_bin_get_by_name (GST_BIN (p), "scope");
  if (!g.tee || !g.scope) {
    error = "capture pipeline needs a tee named 'capture' and a microscopesrc named 'scope'";
    return false;
  }
  GstPad *tee_sink = gst_element_get_static_pad (g.tee, "sink");
  gst_pad_add_probe (tee_sink, GST_PAD_PROBE_TYPE_BUFFER, on_capture_frame, nullptr, nullptr);
  gst_object_unref (tee_sink);
  // Idle until the daemon says who watches: the first frame comes at once
  // (the travel limits and the state need it), the next one a second later.
  if (!g.features)
    g.features = find_tumorfeatures (GST_BIN (p));
  g.capture_active = g.analysis_active = true; // as the elements start
  apply_demand ();
  if (!play_capture (error))
    return false;
  start_hardware ();
  return true;
}

// Commands arrive on a reader thread and run on the main loop.
void
handle_command (const std::string &json)
{
  namespace command = livemicro::orchestrator::command;
  namespace event = livemicro::orchestrator::event;
  auto c = livemicro::orchestrator::decode_command (json);
  if (!c) {
    g_warning ("a command from the daemon does not decode; dropped");
    return;
  }
  std::visit (
      [] (const auto &m) {
        using T = std::decay_t<decltype (m)>;
        std::string error;
        if constexpr (std::is_same_v<T, command::Start>) {
          if (!start (m.capture, error)) {
            send (event::Failed{error});
            g_main_loop_quit (g.loop);
            return;
          }
          send (event::Started{});
        } else if constexpr (std::is_same_v<T, command::AddView>) {
          if (add_view (m.view, m.description, error))
            send (event::ViewAdded{m.view});
          else
            send (event::ViewError{m.view, error});
        } else if constexpr (std::is_same_v<T, command::RemoveView>) {
          remove_view (m.view);
        } else if constexpr (std::is_same_v<T, command::Keyframe>) {
          force_keyframe (m.view);
        } else if constexpr (std::is_same_v<T, command::Demand>) {
          g.demand = m;
          apply_demand ();
        } else if constexpr (std::is_same_v<T, command::Still>) {
          std::shared_ptr<View> view;
          {
            std::lock_guard<std::mutex> lock (g.views_mutex);
            auto it = g.views.find (m.view);
            if (it != g.views.end ())
              view = it->second;
          }
          if (!view) {
            event::StillTaken still;
            still.request = m.request;
            still.error = "the view is not running";
            send (still);
          } else {
            {
              std::lock_guard<std::mutex> lock (view->still_mutex);
              view->still_requests.push_back (m.request);
            }
            apply_demand (); // a pending still is demand: frames flow until it is taken
          }
        } else if constexpr (std::is_same_v<T, command::Hardware>) {
          if (!g.hardware)
            return;
          g.hardware->push (m);
        } else {
          g_main_loop_quit (g.loop);
        }
      },
      *c);
}

// The reader thread: each command from the daemon runs on the main loop;
// the main loop quits when the daemon closes the link.
void
read_commands ()
{
  wire::Type type;
  std::vector<uint8_t> body;
  while (wire::read_message (g.fd, type, body)) {
    if (type != wire::Type::kCommand)
      continue;
    auto *json = new std::string (body.begin (), body.end ());
    g_main_context_invoke (
        nullptr,
        [] (gpointer d) -> gboolean {
          std::unique_ptr<std::string> s (static_cast<std::string *> (d));
          handle_command (*s);
          return G_SOURCE_REMOVE;
        },
        json);
  }
  // The daemon closed the link.
  g_main_context_invoke (
      nullptr,
      [] (gpointer) -> gboolean {
        g_main_loop_quit (g.loop);
        return G_SOURCE_REMOVE;
      },
      nullptr);
}

// The state every 100 ms; the stats and a changed slide map every second.
void
add_timers ()
{
  g_timeout_add (
      100,
      [] (gpointer) -> gboolean {
        send_state (false);
        return G_SOURCE_CONTINUE;
      },
      nullptr);
  g_timeout_add (
      1000,
      [] (gpointer) -> gboolean {
        send_stats ();
        // The slide map, when it changed, encoded off the main loop.
        if (auto map = std::atomic_load (&slide_views.map))
          g.stills->push ([map] {
            if (auto o = map->take_if_changed ())
              send (livemicro::orchestrator::event::Overview{std::move (*o)});
          });
        return G_SOURCE_CONTINUE;
      },
      nullptr);
}

} // namespace

int
main (int argc, char **argv)
{
  // Die with the daemon: a worker never outlives the process that owns it.
  prctl (PR_SET_PDEATHSIG, SIGTERM);
  gst_init (&argc, &argv);
  // One media process runs many branches on a few cores: the parallelism
  // is the branches' threads.  OpenCV's own pool (TBB) would run the
  // background analysis at the video's priority and fight the encoders for
  // the same cores, so OpenCV runs each call on its calling thread.
  cv::setNumThreads (0);
  gint fd = -1;
  g_autofree char *name = nullptr;
  GOptionEntry entries[]
      = {{"fd", 0, 0, G_OPTION_ARG_INT, &fd, "The socket to livemicrod (inherited)", "N"},
         {"name", 0, 0, G_OPTION_ARG_STRING, &name, "The microscope this worker serves (for its log)", "ID"},
         {nullptr}};
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- LiveMicro media worker (started by livemicrod)");
  g_option_context_add_main_entries (ctx, entries, nullptr);
  g_autoptr (GError) error = nullptr;
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || fd < 0) {
    g_printerr ("livemicro-worker: %s\n",
                error ? error->message : "--fd is required (it is started by livemicrod)");
    return 2;
  }
  g.fd = fd;
  // Log lines say which microscope they are about.
  g_set_prgname (name ? (std::string ("livemicro-worker[") + name + "]").c_str () : "livemicro-worker");
  g.writer = std::make_unique<wire::Writer> (g.fd);
  g.loop = g_main_loop_new (nullptr, FALSE);

  // Commands from the daemon; the thread ends when the daemon closes the
  // link (and the process with it: see the end of main).
  std::thread reader (read_commands);
  add_timers ();

  send (livemicro::orchestrator::event::Hello{(int)getpid ()});
  g_main_loop_run (g.loop);
  g.hardware.reset ();
  if (g.pipeline)
    gst_element_set_state (g.pipeline, GST_STATE_NULL);
  // The reader ends once the link is shut.
  ::shutdown (g.fd, SHUT_RDWR);
  reader.join ();
  g.stills.reset (); // waits for stills being written
  g.nuclei.reset ();
  _exit (0);
}
