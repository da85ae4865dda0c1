#include "hardware_queue.h"

#include <livemicro/hw/text.h>
#include <livemicro/hw/autofocus.h>
#include <livemicro/stagemeta.h>

#include <gst/video/video.h>

#include <cmath>
#include <sstream>

namespace livemicro::orchestrator {

using livemicro::hw::num;

namespace {} // namespace

HardwareQueue::HardwareQueue (GstElement *scope, GstElement *af_valve, GstAppSink *af_sink, Report report)
    : scope_ (GST_ELEMENT (gst_object_ref (scope))),
      af_valve_ (af_valve ? GST_ELEMENT (gst_object_ref (af_valve)) : nullptr),
      af_sink_ (af_sink ? GST_APP_SINK (gst_object_ref (af_sink)) : nullptr), report_ (std::move (report))
{
  g_object_get (scope_, "stage-speed-um-s", &normal_speed_, nullptr);
  thread_ = std::thread ([this] { run (); });
}

HardwareQueue::~HardwareQueue ()
{
  {
    std::lock_guard<std::mutex> lock (mutex_);
    quit_ = true;
    abort_ = true;
  }
  cv_.notify_all ();
  thread_.join ();
  gst_object_unref (scope_);
  if (af_valve_)
    gst_object_unref (af_valve_);
  if (af_sink_)
    gst_object_unref (af_sink_);
}

void
HardwareQueue::push (HwCommand c)
{
  std::deque<HwCommand> cancelled;
  {
    std::lock_guard<std::mutex> lock (mutex_);
    if (c.op == "stop") {
      cancelled.swap (queue_);
      queue_.push_front (c);
      abort_ = true;
    } else if (c.op == "jog" && !queue_.empty () && queue_.back ().op == "jog") {
      queue_.back () = c; // a newer jog replaces one not started yet
    } else {
      queue_.push_back (c);
    }
  }
  for (const auto &x : cancelled)
    report_ (x.id, x.op, "cancelled", "a stop came first");
  cv_.notify_all ();
}

bool
HardwareQueue::soft_limits (double lim[6])
{
  GstStructure *s = nullptr;
  g_object_get (scope_, "soft-limits", &s, nullptr);
  if (!s)
    return false;
  const char *names[6] = {"x_min_um", "x_max_um", "y_min_um", "y_max_um", "z_min_um", "z_max_um"};
  for (int i = 0; i < 6; i++)
    gst_structure_get_double (s, names[i], &lim[i]);
  gst_structure_free (s);
  return true;
}

void
HardwareQueue::end_jog ()
{
  g_signal_emit_by_name (scope_, "stop");
  if (normal_speed_ > 0)
    g_object_set (scope_, "stage-speed-um-s", normal_speed_, nullptr);
  jog_until_us_ = 0;
}

void
HardwareQueue::run ()
{
  std::unique_lock<std::mutex> lock (mutex_);
  for (;;) {
    if (jog_until_us_) {
      // Jogging: wake at the dead-man time unless a command comes first.
      auto wait_us = std::max<int64_t> (0, jog_until_us_ - g_get_monotonic_time ());
      cv_.wait_for (lock, std::chrono::microseconds (wait_us), [this] { return quit_ || !queue_.empty (); });
      if (queue_.empty () && !quit_ && g_get_monotonic_time () >= jog_until_us_) {
        lock.unlock ();
        end_jog ();
        lock.lock ();
        continue;
      }
    } else {
      cv_.wait (lock, [this] { return quit_ || !queue_.empty (); });
    }
    if (quit_)
      return;
    HwCommand c = queue_.front ();
    queue_.pop_front ();
    if (c.op != "stop")
      abort_ = false;
    lock.unlock ();
    execute (c);
    lock.lock ();
  }
}

void
HardwareQueue::execute (const HwCommand &c)
{
  double lim[6] = {0, 0, 0, 0, 0, 0};
  bool have_limits = soft_limits (lim);
  auto inside = [&] (double x, double y, std::string &why) {
    if (!have_limits)
      return true;
    if (x < lim[0] || x > lim[1]) {
      why = "x " + num (x) + " µm is outside the soft limit [" + num (lim[0]) + ", " + num (lim[1]) + "] µm";
      return false;
    }
    if (y < lim[2] || y > lim[3]) {
      why = "y " + num (y) + " µm is outside the soft limit [" + num (lim[2]) + ", " + num (lim[3]) + "] µm";
      return false;
    }
    return true;
  };
  auto inside_z = [&] (double z, std::string &why) {
    if (have_limits && (z < lim[4] || z > lim[5])) {
      why = "z " + num (z) + " µm is outside the soft limit [" + num (lim[4]) + ", " + num (lim[5]) + "] µm";
      return false;
    }
    return true;
  };
  if (jog_until_us_ && c.op != "jog")
    end_jog ();

  std::string why;
  gdouble x, y, z;
  g_object_get (scope_, "x-um", &x, "y-um", &y, "z-um", &z, nullptr);
  if (c.op == "stop") {
    g_signal_emit_by_name (scope_, "stop");
    if (normal_speed_ > 0)
      g_object_set (scope_, "stage-speed-um-s", normal_speed_, nullptr);
    report_ (c.id, c.op, "done", "");
  } else if (c.op == "move" || c.op == "move_by") {
    double tx = c.op == "move" ? c.a : x + c.a, ty = c.op == "move" ? c.b : y + c.b;
    if (!inside (tx, ty, why)) {
      report_ (c.id, c.op, "failed", why);
      return;
    }
    g_object_set (scope_, "x-um", tx, "y-um", ty, nullptr);
    report_ (c.id, c.op, "done", "");
  } else if (c.op == "focus" || c.op == "focus_by") {
    double tz = c.op == "focus" ? c.a : z + c.a;
    if (!inside_z (tz, why)) {
      report_ (c.id, c.op, "failed", why);
      return;
    }
    g_object_set (scope_, "z-um", tz, nullptr);
    report_ (c.id, c.op, "done", "");
  } else if (c.op == "objective") {
    gint before = 0, after = 0;
    g_object_get (scope_, "objective", &before, nullptr);
    g_object_set (scope_, "objective", c.objective, nullptr);
    g_object_get (scope_, "objective", &after, nullptr);
    if (after != c.objective)
      report_ (c.id, c.op, "failed", "objective " + std::to_string (c.objective) + "x is not mounted");
    else
      report_ (c.id, c.op, "done", "");
  } else if (c.op == "jog") {
    // Velocity (vx, vy) µm/s: glide towards the soft limit in that direction.
    double speed = std::hypot (c.a, c.b);
    if (speed <= 0 || !have_limits) {
      report_ (c.id, c.op, "failed", speed <= 0 ? "a jog needs a velocity" : "no limits known yet");
      return;
    }
    double t = 1e12; // time to the first limit along the direction
    if (c.a > 0)
      t = std::min (t, (lim[1] - x) / c.a);
    if (c.a < 0)
      t = std::min (t, (lim[0] - x) / c.a);
    if (c.b > 0)
      t = std::min (t, (lim[3] - y) / c.b);
    if (c.b < 0)
      t = std::min (t, (lim[2] - y) / c.b);
    t = std::max (0.0, t);
    g_object_set (scope_, "stage-speed-um-s", std::min (speed, 100000.0), nullptr);
    g_object_set (scope_, "x-um", x + c.a * t, "y-um", y + c.b * t, nullptr);
    jog_until_us_ = g_get_monotonic_time () + kJogDeadManUs;
    report_ (c.id, c.op, "done", "");
  } else if (c.op == "autofocus") {
    autofocus (c);
  } else {
    report_ (c.id, c.op, "failed", "unknown command");
  }
}

void
HardwareQueue::autofocus (const HwCommand &c)
{
  if (!af_sink_ || !af_valve_) {
    report_ (c.id, c.op, "failed", "no autofocus tap in this pipeline");
    return;
  }
  double lim[6];
  if (!soft_limits (lim)) {
    report_ (c.id, c.op, "failed", "the camera is not streaming yet");
    return;
  }
  gint objective;
  gdouble upp, z0;
  g_object_get (scope_, "objective", &objective, "um-per-px", &upp, "z-um", &z0, nullptr);
  // NA from the magnification of a standard plan series when the backend
  // does not say: 4x/0.10, 10x/0.25, 20x/0.40, 40x/0.65, 60x/0.85, 100x/1.25.
  double na = objective <= 4    ? 0.10
              : objective <= 10 ? 0.25
              : objective <= 20 ? 0.40
              : objective <= 40 ? 0.65
              : objective <= 60 ? 0.85
                                : 1.25;
  hw::AutofocusPlan plan = hw::AutofocusPlan::for_objective (na, upp);
  gdouble focus_speed = 0;
  g_object_get (scope_, "focus-speed-um-s", &focus_speed, nullptr);
  g_object_set (scope_, "focus-speed-um-s", 5000.0, nullptr);
  g_object_set (af_valve_, "drop", FALSE, nullptr);
  const gint64 t0 = g_get_monotonic_time ();
  bool no_frame = false;

  auto measure = [&] (double target) -> std::optional<double> {
    g_object_set (scope_, "z-um", target, nullptr);
    // Wait for the focus to arrive.
    for (;;) {
      if (abort_)
        return std::nullopt;
      gdouble zz;
      gboolean moving;
      g_object_get (scope_, "z-um", &zz, "moving", &moving, nullptr);
      if (!moving && std::abs (zz - target) < 0.01)
        break;
      g_usleep (1000);
    }
    const gint64 arrived = g_get_real_time ();
    // Then a frame exposed after that, at that focus (within 3 s).
    const gint64 give_up = g_get_monotonic_time () + 3 * G_USEC_PER_SEC;
    while (g_get_monotonic_time () < give_up) {
      if (abort_)
        return std::nullopt;
      GstSample *sample = gst_app_sink_try_pull_sample (af_sink_, 200 * GST_MSECOND);
      if (!sample)
        continue;
      GstBuffer *buf = gst_sample_get_buffer (sample);
      LivemicroStageMeta *m = livemicro_buffer_get_stage_meta (buf);
      if (g_getenv ("LIVEMICRO_AF_DEBUG"))
        g_printerr ("af: meta %p capture %+lld z %.3f target %.3f moving %d\n", (void *)m,
                    m ? (long long)(m->capture_unix_us - arrived) : 0LL, m ? m->stage_z_um : 0, target,
                    m ? m->moving : -1);
      if (!m || m->capture_unix_us < arrived || std::abs (m->stage_z_um - target) > 0.01 || m->moving) {
        gst_sample_unref (sample);
        continue;
      }
      GstVideoInfo info;
      gst_video_info_from_caps (&info, gst_sample_get_caps (sample));
      GstVideoFrame frame;
      double sharp = 0;
      if (gst_video_frame_map (&frame, &info, buf, GST_MAP_READ)) {
        cv::Mat grey (info.height, info.width, CV_8UC1, GST_VIDEO_FRAME_PLANE_DATA (&frame, 0),
                      GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0));
        sharp = hw::focus_sharpness (grey);
        gst_video_frame_unmap (&frame);
      }
      gst_sample_unref (sample);
      return sharp;
    }
    no_frame = true; // the camera stalled
    return std::nullopt;
  };
  hw::AutofocusResult r = hw::autofocus (z0, lim[4], lim[5], plan, measure);
  g_object_set (af_valve_, "drop", TRUE, nullptr);
  if (focus_speed > 0)
    g_object_set (scope_, "focus-speed-um-s", focus_speed, nullptr);
  double seconds = (g_get_monotonic_time () - t0) / 1e6;
  if (r.ok)
    report_ (c.id, c.op, "done",
             "best focus z " + num (r.best_z_um) + " µm after " + std::to_string (r.measurements)
                 + " frames in " + num (std::round (seconds * 100) / 100) + " s");
  else
    report_ (c.id, c.op, abort_ ? "cancelled" : "failed",
             abort_     ? "a stop came"
             : no_frame ? "no frame came from the camera within 3 s"
                        : r.error);
}

} // namespace livemicro::orchestrator
