// The reference servers of the benchmarks that compare livemicrod with a
// bare gst-rtsp-server doing the same work in one process: livemicrod's own
// templates rendered as the daemon renders them for the demo microscope
// (capture → tee → a branch per view profile ending in its encoder's appsink
// "out"), and each view's encoded stream fanned out to the appsrc of the
// media of one shared factory per profile, as FIELD-NOTES describes.  With
// capture times on, every access unit carries the capture time of its frame
// (the one microscopesrc gave it) as an SEI, as livemicro-worker's do.
#pragma once

#include "common/encoder_timeline.h"
#include "common/h264.h"
#include "daemon/templates.h"

#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/rtsp-server/rtsp-server.h>
#include <gst/video/video.h>
#include <livemicro/stagemeta.h>

#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace livemicro::bench {

// One view's encoded stream, fanned out to every media of its factory.
struct ViewFeed {
  GstElement *appsink = nullptr;
  std::mutex mutex;
  struct Src {
    GstAppSrc *appsrc;
    bool started;
  };
  std::vector<Src> srcs;
  // Capture times by PTS (from the capture tee), when the stream carries them.
  std::unique_ptr<orchestrator::EncoderTimeline<gint64>> capture_times;
  // While recording (under `mutex`), ms from each frame's capture to its
  // encoder's output and to its payloader's input (a media's appsrc output).
  bool recording = false;
  std::vector<double> capture_to_encoded_ms, capture_to_payloader_ms;

  void keyframe ()
  {
    gst_element_send_event (appsink,
                            gst_video_event_new_upstream_force_key_unit (GST_CLOCK_TIME_NONE, TRUE, 0));
  }
};

inline GstFlowReturn
on_view_sample (GstAppSink *sink, gpointer data)
{
  auto *feed = static_cast<ViewFeed *> (data);
  GstSample *sample = gst_app_sink_pull_sample (sink);
  if (!sample)
    return GST_FLOW_OK;
  GstBuffer *buf = gst_sample_get_buffer (sample);
  const bool key = !GST_BUFFER_FLAG_IS_SET (buf, GST_BUFFER_FLAG_DELTA_UNIT);
  GstBuffer *au = gst_buffer_ref (buf);
  if (feed->capture_times) {
    if (auto when = feed->capture_times->take (GST_BUFFER_PTS (buf))) {
      {
        std::lock_guard<std::mutex> lock (feed->mutex);
        if (feed->recording)
          feed->capture_to_encoded_ms.push_back ((g_get_real_time () - *when) / 1000.0);
      }
      GstMapInfo map;
      if (gst_buffer_map (buf, &map, GST_MAP_READ)) {
        auto with = orchestrator::h264::with_capture_time (map.data, map.size, *when);
        gst_buffer_unmap (buf, &map);
        gst_buffer_unref (au);
        au = gst_buffer_new_memdup (with.data (), with.size ());
        gst_buffer_copy_into (au, buf, GST_BUFFER_COPY_FLAGS, 0, -1);
      }
    }
  }
  {
    std::lock_guard<std::mutex> lock (feed->mutex);
    for (auto &s : feed->srcs) {
      if (!s.started && !key)
        continue;
      s.started = true;
      GstBuffer *b = gst_buffer_copy (au);
      GST_BUFFER_PTS (b) = GST_BUFFER_DTS (b) = GST_CLOCK_TIME_NONE;
      gst_app_src_push_buffer (s.appsrc, b);
    }
  }
  gst_buffer_unref (au);
  gst_sample_unref (sample);
  return GST_FLOW_OK;
}

inline void
on_feed_media_configure (GstRTSPMediaFactory *, GstRTSPMedia *media, gpointer data)
{
  auto *feed = static_cast<ViewFeed *> (data);
  GstElement *bin = gst_rtsp_media_get_element (media);
  GstElement *src = gst_bin_get_by_name_recurse_up (GST_BIN (bin), "src");
  gst_object_unref (bin);
  GstCaps *caps = gst_caps_from_string (
      "video/x-h264,stream-format=byte-stream,alignment=au,profile=constrained-baseline");
  gst_app_src_set_caps (GST_APP_SRC (src), caps);
  gst_caps_unref (caps);
  if (feed->capture_times) {
    GstPad *pad = gst_element_get_static_pad (src, "src");
    gst_pad_add_probe (
        pad, GST_PAD_PROBE_TYPE_BUFFER,
        [] (GstPad *, GstPadProbeInfo *info, gpointer d) {
          auto *f = static_cast<ViewFeed *> (d);
          GstMapInfo map;
          GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
          if (gst_buffer_map (b, &map, GST_MAP_READ)) {
            auto r = orchestrator::h264::frame_record (map.data, map.size);
            gst_buffer_unmap (b, &map);
            std::lock_guard<std::mutex> lock (f->mutex);
            if (r && f->recording)
              f->capture_to_payloader_ms.push_back ((g_get_real_time () - r->capture_unix_us) / 1000.0);
          }
          return GST_PAD_PROBE_OK;
        },
        feed, nullptr);
    gst_object_unref (pad);
  }
  {
    std::lock_guard<std::mutex> lock (feed->mutex);
    feed->srcs.push_back ({GST_APP_SRC (src), false});
  }
  feed->keyframe ();
  g_signal_connect (media, "unprepared", G_CALLBACK (+[] (GstRTSPMedia *m, gpointer d) {
                      auto *f = static_cast<ViewFeed *> (d);
                      GstElement *b = gst_rtsp_media_get_element (m);
                      GstElement *s = gst_bin_get_by_name_recurse_up (GST_BIN (b), "src");
                      gst_object_unref (b);
                      std::lock_guard<std::mutex> lock (f->mutex);
                      for (auto it = f->srcs.begin (); it != f->srcs.end (); ++it)
                        if (GST_ELEMENT (it->appsrc) == s) {
                          gst_object_unref (it->appsrc);
                          f->srcs.erase (it);
                          break;
                        }
                      gst_object_unref (s);
                    }),
                    feed);
}

// A shared factory fed by `feed` (which must outlive it).
inline GstRTSPMediaFactory *
feed_factory (ViewFeed *feed)
{
  GstRTSPMediaFactory *f = gst_rtsp_media_factory_new ();
  gst_rtsp_media_factory_set_launch (f, "( appsrc name=src is-live=true format=time do-timestamp=true "
                                        "min-latency=0 ! rtph264pay name=pay0 pt=96 config-interval=-1 "
                                        "aggregate-mode=zero-latency )");
  gst_rtsp_media_factory_set_shared (f, TRUE);
  gst_rtsp_media_factory_set_suspend_mode (f, GST_RTSP_SUSPEND_MODE_NONE);
  g_signal_connect (f, "media-configure", G_CALLBACK (on_feed_media_configure), feed);
  return f;
}

// The producer: capture → tee → one branch per profile, 1280x720 at 30 fps
// of sim://synthetic, each profile's feed in `feeds` (same order).  With
// `capture_times`, each frame's capture time is noted at the tee.  Nullptr
// (and why, on stderr) when a template does not parse.
inline GstElement *
view_producer (const std::string &pipelines_dir, const std::vector<std::string> &profiles,
               std::vector<std::unique_ptr<ViewFeed>> &feeds, bool capture_times = false)
{
  using orchestrator::Templates;
  Templates t (pipelines_dir);
  std::map<std::string, std::string> values = {
      {"uri", "sim://synthetic"},  {"width", "1280"},        {"height", "720"},
      {"framerate", "30"},         {"bitrate_kbps", "2500"}, {"keyframe_interval", "30"},
      {"privacymask_options", ""},
  };
  GError *error = nullptr;
  GstElement *pipeline = gst_parse_launch (Templates::render (t.load ("capture"), values).c_str (), &error);
  if (!pipeline) {
    std::fprintf (stderr, "capture: %s\n", error ? error->message : "?");
    g_clear_error (&error);
    return nullptr;
  }
  GstElement *tee = gst_bin_get_by_name (GST_BIN (pipeline), "capture");
  values["encoder"] = Templates::render (t.load ("encoders/h264"), values);
  for (const std::string &profile : profiles) {
    std::string desc = Templates::render (t.load ("views/" + profile), values);
    GstElement *bin = gst_parse_bin_from_description (desc.c_str (), TRUE, &error);
    if (!bin) {
      std::fprintf (stderr, "%s: %s\n", profile.c_str (), error ? error->message : "?");
      g_clear_error (&error);
      gst_object_unref (tee);
      gst_object_unref (pipeline);
      return nullptr;
    }
    gst_bin_add (GST_BIN (pipeline), bin);
    gst_element_link (tee, bin);
    auto feed = std::make_unique<ViewFeed> ();
    feed->appsink = gst_bin_get_by_name (GST_BIN (bin), "out");
    GstAppSinkCallbacks cb = {};
    cb.new_sample = on_view_sample;
    gst_app_sink_set_callbacks (GST_APP_SINK (feed->appsink), &cb, feed.get (), nullptr);
    if (capture_times)
      feed->capture_times = std::make_unique<orchestrator::EncoderTimeline<gint64>> ();
    feeds.push_back (std::move (feed));
  }
  if (capture_times) {
    // The time microscopesrc gave the frame (before it rendered it, as
    // livemicrod's), else now.
    GstPad *pad = gst_element_get_static_pad (tee, "sink");
    gst_pad_add_probe (
        pad, GST_PAD_PROBE_TYPE_BUFFER,
        [] (GstPad *, GstPadProbeInfo *info, gpointer d) {
          GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
          const LivemicroStageMeta *m = livemicro_buffer_get_stage_meta (b);
          const gint64 when = m && m->capture_unix_us > 0 ? m->capture_unix_us : g_get_real_time ();
          for (auto &f : *static_cast<std::vector<std::unique_ptr<ViewFeed>> *> (d))
            f->capture_times->record (GST_BUFFER_PTS (b), when);
          return GST_PAD_PROBE_OK;
        },
        &feeds, nullptr);
    gst_object_unref (pad);
  }
  gst_object_unref (tee);
  return pipeline;
}

} // namespace livemicro::bench
