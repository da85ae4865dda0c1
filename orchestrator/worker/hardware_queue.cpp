#include "hardware_queue.h"

#include "gstmicroscopesrc.h"

#include <livemicro/frame_record_meta.h>
#include <livemicro/hw/autofocus.h>
#include <livemicro/hw/text.h>

#include <gst/video/video.h>

#include <cmath>
#include <pthread.h>

namespace livemicro::orchestrator {

using livemicro::hw::num;

namespace {

// The frame size microscopesrc negotiated, or nullopt before caps.
std::optional<std::pair<int, int>>
frame_size_of (GstElement *microscopesrc)
{
  GstPad *pad = gst_element_get_static_pad (microscopesrc, "src");
  if (!pad)
    return std::nullopt;
  GstCaps *caps = gst_pad_get_current_caps (pad);
  gst_object_unref (pad);
  if (!caps)
    return std::nullopt;
  GstVideoInfo info;
  const bool ok = gst_video_info_from_caps (&info, caps);
  gst_caps_unref (caps);
  if (!ok || info.width <= 0 || info.height <= 0)
    return std::nullopt;
  return std::make_pair (info.width, info.height);
}

// Why `v` is outside `range`, or "" when it is inside.
std::string
outside (const char *axis, double v, const hw::AxisLimits &range)
{
  if (range.contains (v))
    return "";
  return std::string (axis) + " " + num (v) + " µm is outside the soft limit [" + num (range.min_um) + ", "
         + num (range.max_um) + "] µm";
}

// NA from the magnification of a standard plan series when the backend does
// not say: 4x/0.10, 10x/0.25, 20x/0.40, 40x/0.65, 60x/0.85, 100x/1.25.
double
numerical_aperture_of (const hw::Objective &o)
{
  if (o.numerical_aperture > 0)
    return o.numerical_aperture;
  const int m = o.magnification;
  return m <= 4 ? 0.10 : m <= 10 ? 0.25 : m <= 20 ? 0.40 : m <= 40 ? 0.65 : m <= 60 ? 0.85 : 1.25;
}

} // namespace

HardwareQueue::HardwareQueue (GstElement *scope, GstElement *af_valve, GstAppSink *af_sink, Report report)
    : scope_element_ (GST_ELEMENT (gst_object_ref (scope))),
      af_valve_ (af_valve ? GST_ELEMENT (gst_object_ref (af_valve)) : nullptr),
      af_sink_ (af_sink ? GST_APP_SINK (gst_object_ref (af_sink)) : nullptr), report_ (std::move (report))
{
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
  gst_object_unref (scope_element_);
  if (af_valve_)
    gst_object_unref (af_valve_);
  if (af_sink_)
    gst_object_unref (af_sink_);
}

void
HardwareQueue::push (command::Hardware c)
{
  std::deque<command::Hardware> cancelled;
  {
    std::lock_guard<std::mutex> lock (mutex_);
    if (c.op == CommandOp::kStop) {
      cancelled.swap (queue_);
      queue_.push_front (c);
      abort_ = true;
    } else if (c.op == CommandOp::kJog && !queue_.empty () && queue_.back ().op == CommandOp::kJog) {
      queue_.back () = c; // a newer jog replaces one not started yet
    } else {
      queue_.push_back (c);
    }
  }
  for (const auto &x : cancelled)
    report (x, "cancelled", "a stop came first");
  cv_.notify_all ();
}

void
HardwareQueue::report (const command::Hardware &c, const std::string &status, const std::string &detail)
{
  report_ (c.id, command_op_name (c.op), status, detail);
}

std::optional<HardwareQueue::Target>
HardwareQueue::target () const
{
  Target t;
  t.scope = livemicro_microscopesrc_get_microscope (scope_element_);
  if (!t.scope)
    return std::nullopt;
  if (auto size = frame_size_of (scope_element_))
    t.limits = hw::soft_limits (t.scope->state (), size->first, size->second);
  return t;
}

std::optional<MicroscopeStatus>
HardwareQueue::status () const
{
  std::optional<Target> t = target ();
  if (!t)
    return std::nullopt;
  const hw::MicroscopeState st = t->scope->state ();
  MicroscopeStatus s;
  s.x_um = st.stage.x_um;
  s.y_um = st.stage.y_um;
  s.z_um = st.focus.z_um;
  s.objective = st.objective.magnification;
  s.um_per_px = st.objective.um_per_px;
  s.moving = st.stage.moving || st.focus.moving;
  s.stage_speed_um_s = t->scope->stage ().speed_um_per_s ();
  for (const hw::Objective &o : t->scope->turret ().objectives ())
    s.objectives.push_back (o.magnification);
  s.limits = t->limits;
  return s;
}

void
HardwareQueue::stop_motion (hw::Microscope &scope)
{
  scope.stage ().stop ();
  scope.focus ().stop ();
  if (normal_speed_ > 0)
    scope.stage ().set_speed_um_per_s (normal_speed_);
  jog_until_us_ = 0;
}

void
HardwareQueue::end_jog (hw::Microscope &scope)
{
  scope.stage ().stop ();
  if (normal_speed_ > 0)
    scope.stage ().set_speed_um_per_s (normal_speed_);
  jog_until_us_ = 0;
}

void
HardwareQueue::run ()
{
  pthread_setname_np (pthread_self (), "microscope-hw"); // as top -H and perf show it
  std::unique_lock<std::mutex> lock (mutex_);
  for (;;) {
    if (jog_until_us_) {
      // Jogging: wake at the dead-man time unless a command comes first.
      auto wait_us = std::max<int64_t> (0, jog_until_us_ - g_get_monotonic_time ());
      cv_.wait_for (lock, std::chrono::microseconds (wait_us), [this] { return quit_ || !queue_.empty (); });
      if (queue_.empty () && !quit_ && g_get_monotonic_time () >= jog_until_us_) {
        lock.unlock ();
        if (std::optional<Target> t = target ()) {
          try {
            end_jog (*t->scope);
          } catch (const std::exception &e) {
            g_warning ("ending a jog: %s", e.what ());
          }
        }
        jog_until_us_ = 0;
        lock.lock ();
        continue;
      }
    } else {
      cv_.wait (lock, [this] { return quit_ || !queue_.empty (); });
    }
    if (quit_)
      return;
    command::Hardware c = queue_.front ();
    queue_.pop_front ();
    if (c.op != CommandOp::kStop)
      abort_ = false;
    lock.unlock ();
    execute (c);
    lock.lock ();
  }
}

void
HardwareQueue::execute (const command::Hardware &c)
{
  std::optional<Target> t = target ();
  if (!t) {
    report (c, "failed", "the microscope is not open");
    return;
  }
  try {
    if (jog_until_us_ && c.op != CommandOp::kJog)
      end_jog (*t->scope);
    switch (c.op) {
    case CommandOp::kStop:
      stop_motion (*t->scope);
      report (c, "done");
      break;
    case CommandOp::kMove:
    case CommandOp::kMoveBy:
      move (c, *t);
      break;
    case CommandOp::kFocus:
    case CommandOp::kFocusBy:
      focus (c, *t);
      break;
    case CommandOp::kObjective:
      // The turret says itself when the magnification is not mounted.
      t->scope->turret ().select (c.objective);
      report (c, "done");
      break;
    case CommandOp::kJog:
      jog (c, *t);
      break;
    case CommandOp::kAutofocus:
      autofocus (c, *t);
      break;
    }
  } catch (const std::exception &e) {
    // hw::Error: out of the hardware's travel, a device fault, ...
    report (c, "failed", e.what ());
  }
}

// One 2-D move of the stage, to a point or by an offset from where it is.
void
HardwareQueue::move (const command::Hardware &c, const Target &t)
{
  const hw::StageState s = t.scope->stage ().state ();
  const bool by = c.op == CommandOp::kMoveBy;
  const double x = by ? s.x_um + c.a : c.a, y = by ? s.y_um + c.b : c.b;
  if (t.limits) {
    std::string why = outside ("x", x, t.limits->x);
    if (why.empty ())
      why = outside ("y", y, t.limits->y);
    if (!why.empty ()) {
      report (c, "failed", why);
      return;
    }
  }
  t.scope->stage ().move_to (x, y);
  report (c, "done");
}

void
HardwareQueue::focus (const command::Hardware &c, const Target &t)
{
  const double z = c.op == CommandOp::kFocusBy ? t.scope->focus ().state ().z_um + c.a : c.a;
  if (t.limits) {
    std::string why = outside ("z", z, t.limits->z);
    if (!why.empty ()) {
      report (c, "failed", why);
      return;
    }
  }
  t.scope->focus ().move_to (z);
  report (c, "done");
}

// Velocity (vx, vy) µm/s: glide towards the soft limit in that direction,
// until the dead-man time passes without a newer jog.
void
HardwareQueue::jog (const command::Hardware &c, const Target &t)
{
  const double speed = std::hypot (c.a, c.b);
  if (speed <= 0 || !t.limits) {
    report (c, "failed", speed <= 0 ? "a jog needs a velocity" : "no limits known yet");
    return;
  }
  hw::Stage &stage = t.scope->stage ();
  const hw::StageState s = stage.state ();
  const hw::SoftLimits &lim = *t.limits;
  double time_s = 1e12; // to the first limit along the direction
  if (c.a > 0)
    time_s = std::min (time_s, (lim.x.max_um - s.x_um) / c.a);
  if (c.a < 0)
    time_s = std::min (time_s, (lim.x.min_um - s.x_um) / c.a);
  if (c.b > 0)
    time_s = std::min (time_s, (lim.y.max_um - s.y_um) / c.b);
  if (c.b < 0)
    time_s = std::min (time_s, (lim.y.min_um - s.y_um) / c.b);
  time_s = std::max (0.0, time_s);
  if (!jog_until_us_)
    normal_speed_ = stage.speed_um_per_s ();
  stage.set_speed_um_per_s (std::min (speed, 100000.0));
  stage.move_to (s.x_um + c.a * time_s, s.y_um + c.b * time_s);
  jog_until_us_ = g_get_monotonic_time () + kJogDeadManUs;
  report (c, "done");
}

// Moves the focus to `z_um` and measures the sharpness of the first frame of
// the autofocus tap whose record says it was exposed there, not moving, after
// the command; nullopt on a stop or when no such frame came within 3 s
// (autofocus_no_frame_).
std::optional<double>
HardwareQueue::sharpness_at (hw::FocusDrive &focus, double z_um)
{
  const gint64 commanded = g_get_real_time ();
  focus.move_to (z_um);
  gint64 give_up = g_get_monotonic_time () + 3 * G_USEC_PER_SEC;
  while (g_get_monotonic_time () < give_up) {
    if (abort_)
      return std::nullopt;
    GstSample *sample = gst_app_sink_try_pull_sample (af_sink_, 200 * GST_MSECOND);
    if (!sample)
      continue;
    GstBuffer *buf = gst_sample_get_buffer (sample);
    const LivemicroStageMeta *m = livemicro_buffer_get_stage_meta (buf);
    const std::optional<hw::FrameRecord> r
        = m ? std::optional<hw::FrameRecord> (frame_record_of (*m)) : std::nullopt;
    if (!r || r->capture_unix_us < commanded || std::abs (r->stage_z_um - z_um) > 0.01 || r->moving) {
      if (r && r->moving) // still travelling: the frames keep coming
        give_up = std::max (give_up, g_get_monotonic_time () + G_USEC_PER_SEC);
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
  autofocus_no_frame_ = true; // the camera stalled
  return std::nullopt;
}

void
HardwareQueue::autofocus (const command::Hardware &c, const Target &t)
{
  if (!af_sink_ || !af_valve_) {
    report (c, "failed", "no autofocus tap in this pipeline");
    return;
  }
  if (!t.limits) {
    report (c, "failed", "the camera is not streaming yet");
    return;
  }
  hw::FocusDrive &focus = t.scope->focus ();
  const hw::Objective objective = t.scope->turret ().current ();
  const hw::AutofocusPlan plan
      = hw::AutofocusPlan::for_objective (numerical_aperture_of (objective), objective.um_per_px);
  const double focus_speed = focus.speed_um_per_s ();
  focus.set_speed_um_per_s (5000.0);
  g_object_set (af_valve_, "drop", FALSE, nullptr);
  const gint64 t0 = g_get_monotonic_time ();
  autofocus_no_frame_ = false;
  hw::AutofocusResult r;
  try {
    r = hw::autofocus (focus.state ().z_um, t.limits->z.min_um, t.limits->z.max_um, plan,
                       [&] (double z_um) { return sharpness_at (focus, z_um); });
  } catch (const std::exception &e) { // the focus drive refused a move
    r.ok = false;
    r.error = e.what ();
  }
  g_object_set (af_valve_, "drop", TRUE, nullptr);
  if (focus_speed > 0)
    focus.set_speed_um_per_s (focus_speed);
  const double seconds = (g_get_monotonic_time () - t0) / 1e6;
  if (r.ok)
    report (c, "done",
            "best focus z " + num (r.best_z_um) + " µm after " + std::to_string (r.measurements)
                + " frames in " + num (std::round (seconds * 100) / 100) + " s");
  else
    report (c, abort_ ? "cancelled" : "failed",
            abort_                ? "a stop came"
            : autofocus_no_frame_ ? "no frame came from the camera within 3 s"
                                  : r.error);
}

} // namespace livemicro::orchestrator
