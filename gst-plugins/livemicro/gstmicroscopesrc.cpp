/**
 * SECTION:element-microscopesrc
 * @title: microscopesrc
 *
 * A live video source that is a microscope: the camera's frames, each with a
 * #LivemicroStageMeta saying where on the slide it was taken.  Setting
 * `x-um`, `y-um`, `z-um` or `objective` while PLAYING commands the stage,
 * focus or turret; the frames show the motion as it happens.
 *
 * |[
 * gst-launch-1.0 microscopesrc microscope=sim://synthetic objective=20 ! videoconvert ! autovideosink
 * gst-launch-1.0 microscopesrc microscope="sim:///data/CMU-1.svs" num-buffers=10 ! pngenc ! multifilesink
 * location=f%02d.png gst-launch-1.0 microscopesrc microscope=aravis://Fake_1 ! videoconvert ! autovideosink
 * ]|
 *
 * A real camera delivers one frame size (and its own frame rate): the caps
 * say so once the microscope is open.  When a device of the microscope goes
 * away while playing (camera unplugged, stage controller gone), the element
 * posts a warning naming the device and an element message
 * `microscopesrc, online=(boolean)false, part=…, device=…, problem=…`, and
 * goes on streaming: a grey "offline" slate while the camera is gone (no
 * StageMeta, GAP flag), real frames as soon as the backend has reconnected
 * (then a message with online=true).  The `online` and `offline-reason`
 * properties tell the same.
 *
 * With `idle` set, a live source delivers one frame every `idle-interval-ms`
 * instead of one per frame slot (nobody watches: the stage state, the device
 * health and the travel limits stay current at a fraction of the cost).
 * Clearing `idle` ends the wait at once: the next frame follows without
 * waiting for the rest of the interval.  Timestamps stay on the frame grid.
 *
 * An application linking LiveMicro's hardware library can command the open
 * microscope itself rather than through the properties: the action signal
 * `get-microscope` returns a `std::shared_ptr<livemicro::hw::Microscope> *`
 * (NULL while the element is stopped) that the caller deletes; see
 * livemicro_microscopesrc_get_microscope() in gstmicroscopesrc.h.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstmicroscopesrc.h"

#include <livemicro/hw/microscope.h>
#include <livemicro/frame_record_meta.h>

#include <gst/video/video.h>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <memory>
#include <mutex>
#include <string>

GST_DEBUG_CATEGORY_STATIC (gst_microscope_src_debug);
#define GST_CAT_DEFAULT gst_microscope_src_debug

#define DEFAULT_MICROSCOPE "sim://synthetic"
#define DEFAULT_POSITION (-1.0)
#define DEFAULT_OBJECTIVE 0
#define DEFAULT_IS_LIVE TRUE
#define MAX_POSITION_UM 1.0e7
#define DEFAULT_WIDTH 1920
#define DEFAULT_HEIGHT 1080
#define DEFAULT_FPS_N 30
#define DEFAULT_IDLE FALSE
#define DEFAULT_IDLE_INTERVAL_MS 1000

/* Speeds used to reach the start position before the first frame. */
static const double kStartSpeedUmPerS = 100000.0;
static const double kStartFocusSpeedUmPerS = 10000.0;

enum {
  PROP_0,
  PROP_ONLINE,
  PROP_OFFLINE_REASON,
  PROP_MICROSCOPE,
  PROP_X_UM,
  PROP_Y_UM,
  PROP_Z_UM,
  PROP_OBJECTIVE,
  PROP_IS_LIVE,
  PROP_UM_PER_PX,
  PROP_MOVING,
  PROP_DESCRIPTION,
  PROP_STAGE_SPEED,
  PROP_FOCUS_SPEED,
  PROP_SOFT_LIMITS,
  PROP_OBJECTIVES,
  PROP_IDLE,
  PROP_IDLE_INTERVAL_MS,
};

namespace hw = livemicro::hw;

namespace {

// What the element owns besides GObject state: C++ objects, created in init.
struct Private {
  std::mutex scope_mutex; // guards `scope` between start/stop and setters
  /* shared: an application may hold it too (the "get-microscope" signal) */
  std::shared_ptr<hw::Microscope> scope;
  cv::Mat rgb;
  GstVideoInfo rgb_info;
  GstVideoConverter *converter = nullptr;
  /* what the open microscope's camera delivers */
  cv::Size min_size{16, 16}, max_size{8192, 8192};
  bool free_running = false;
  double camera_fps = 0.0;
  /* device health, as last posted */
  std::mutex health_mutex;
  std::vector<hw::DeviceStatus> devices;
  std::string offline_reason; /* empty: online */
};

} // namespace

struct _GstMicroscopeSrc {
  GstPushSrc parent;

  /* properties, under the object lock */
  gchar *microscope;
  gdouble x_um, y_um, z_um;         /* requested; DEFAULT_POSITION = home */
  gint objective;                   /* requested; 0 = microscope's default */
  gdouble stage_speed, focus_speed; /* µm/s; 0 = microscope's default */
  gboolean is_live;
  gboolean idle;
  guint idle_interval_ms;

  /* streaming state */
  GstVideoInfo info;
  guint64 n_frames;
  GstClockTime next_running_time;
  GstClockID clock_id;
  gboolean flushing;
  gboolean idle_waiting; /* clock_id waits past the next frame slot (idle) */
  gboolean woken;        /* idle was cleared during that wait */

  Private *priv;
};

#define VIDEO_FORMATS "{ RGB, BGR, RGBx, BGRx, xRGB, xBGR, RGBA, BGRA, I420, NV12, YUY2, GRAY8 }"

static GstStaticPadTemplate src_template
    = GST_STATIC_PAD_TEMPLATE ("src", GST_PAD_SRC, GST_PAD_ALWAYS,
                               GST_STATIC_CAPS ("video/x-raw, format = (string) " VIDEO_FORMATS
                                                ", width = (int) [ 16, 8192 ], height = (int) [ 16, 8192 ], "
                                                "framerate = (fraction) [ 1/1, 240/1 ], "
                                                "pixel-aspect-ratio = (fraction) 1/1"));

#define gst_microscope_src_parent_class parent_class
G_DEFINE_TYPE_WITH_CODE (GstMicroscopeSrc, gst_microscope_src, GST_TYPE_PUSH_SRC,
                         GST_DEBUG_CATEGORY_INIT (gst_microscope_src_debug, "microscopesrc", 0,
                                                  "LiveMicro microscope source"));
GST_ELEMENT_REGISTER_DEFINE (microscopesrc, "microscopesrc", GST_RANK_NONE, GST_TYPE_MICROSCOPE_SRC);

/* Sends a position to the hardware; errors become an element warning while
 * streaming (the stage does not move, the stream goes on). */
static void
command_position (GstMicroscopeSrc *self, guint prop_id, gdouble value)
{
  Private *p = self->priv;
  std::lock_guard<std::mutex> lock (p->scope_mutex);
  if (!p->scope || value == DEFAULT_POSITION)
    return;
  try {
    switch (prop_id) {
    case PROP_X_UM: {
      hw::StageState s = p->scope->stage ().state ();
      p->scope->stage ().move_to (value, s.target_y_um);
      break;
    }
    case PROP_Y_UM: {
      hw::StageState s = p->scope->stage ().state ();
      p->scope->stage ().move_to (s.target_x_um, value);
      break;
    }
    case PROP_Z_UM:
      p->scope->focus ().move_to (value);
      break;
    }
  } catch (const hw::Error &e) {
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS, ("%s", e.what ()), ("the stage did not move"));
  }
}

static void
command_speed (GstMicroscopeSrc *self, guint prop_id, gdouble speed)
{
  Private *p = self->priv;
  std::lock_guard<std::mutex> lock (p->scope_mutex);
  if (!p->scope || speed <= 0)
    return;
  try {
    if (prop_id == PROP_STAGE_SPEED)
      p->scope->stage ().set_speed_um_per_s (speed);
    else
      p->scope->focus ().set_speed_um_per_s (speed);
  } catch (const hw::Error &e) {
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS, ("%s", e.what ()), (nullptr));
  }
}

/* The "stop" action signal: halt stage and focus where they are. */
static void
gst_microscope_src_stop_motion (GstMicroscopeSrc *self)
{
  Private *p = self->priv;
  std::lock_guard<std::mutex> lock (p->scope_mutex);
  if (!p->scope)
    return;
  try {
    p->scope->stage ().stop ();
    p->scope->focus ().stop ();
  } catch (const hw::Error &e) {
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS, ("stop failed: %s", e.what ()), (nullptr));
  }
}

/* The "get-microscope" action signal: a new shared_ptr to the open
 * microscope for the application, or NULL while stopped. */
static gpointer
gst_microscope_src_get_microscope (GstMicroscopeSrc *self)
{
  Private *p = self->priv;
  std::lock_guard<std::mutex> lock (p->scope_mutex);
  if (!p->scope)
    return nullptr;
  return new std::shared_ptr<hw::Microscope> (p->scope);
}

static void
command_objective (GstMicroscopeSrc *self, gint magnification)
{
  Private *p = self->priv;
  std::lock_guard<std::mutex> lock (p->scope_mutex);
  if (!p->scope || magnification == 0)
    return;
  try {
    p->scope->turret ().select (magnification);
  } catch (const hw::Error &e) {
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS, ("%s", e.what ()), ("the objective did not change"));
  }
}

static void
gst_microscope_src_set_property (GObject *object, guint prop_id, const GValue *value, GParamSpec *pspec)
{
  GstMicroscopeSrc *self = GST_MICROSCOPE_SRC (object);

  switch (prop_id) {
  case PROP_MICROSCOPE:
    GST_OBJECT_LOCK (self);
    g_free (self->microscope);
    self->microscope = g_value_dup_string (value);
    if (!self->microscope)
      self->microscope = g_strdup (DEFAULT_MICROSCOPE);
    GST_OBJECT_UNLOCK (self);
    break;
  case PROP_X_UM:
  case PROP_Y_UM:
  case PROP_Z_UM: {
    gdouble v = g_value_get_double (value);
    GST_OBJECT_LOCK (self);
    if (prop_id == PROP_X_UM)
      self->x_um = v;
    else if (prop_id == PROP_Y_UM)
      self->y_um = v;
    else
      self->z_um = v;
    GST_OBJECT_UNLOCK (self);
    command_position (self, prop_id, v);
    break;
  }
  case PROP_OBJECTIVE: {
    gint v = g_value_get_int (value);
    GST_OBJECT_LOCK (self);
    self->objective = v;
    GST_OBJECT_UNLOCK (self);
    command_objective (self, v);
    break;
  }
  case PROP_IS_LIVE:
    GST_OBJECT_LOCK (self);
    self->is_live = g_value_get_boolean (value);
    GST_OBJECT_UNLOCK (self);
    gst_base_src_set_live (GST_BASE_SRC (self), g_value_get_boolean (value));
    break;
  case PROP_IDLE:
    GST_OBJECT_LOCK (self);
    self->idle = g_value_get_boolean (value);
    if (!self->idle && self->idle_waiting && self->clock_id) {
      /* Someone watches again: the frame comes now, not at the end of the
       * idle interval. */
      self->woken = TRUE;
      gst_clock_id_unschedule (self->clock_id);
    }
    GST_OBJECT_UNLOCK (self);
    break;
  case PROP_IDLE_INTERVAL_MS:
    GST_OBJECT_LOCK (self);
    self->idle_interval_ms = g_value_get_uint (value);
    GST_OBJECT_UNLOCK (self);
    break;
  case PROP_STAGE_SPEED:
  case PROP_FOCUS_SPEED: {
    gdouble v = g_value_get_double (value);
    GST_OBJECT_LOCK (self);
    if (prop_id == PROP_STAGE_SPEED)
      self->stage_speed = v;
    else
      self->focus_speed = v;
    GST_OBJECT_UNLOCK (self);
    command_speed (self, prop_id, v);
    break;
  }
  default:
    G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    break;
  }
}

/* Long by nature: one case per property, all read from one consistent
 * snapshot of the hardware taken first. */
static void
gst_microscope_src_get_property (GObject *object, guint prop_id, GValue *value, GParamSpec *pspec)
{
  GstMicroscopeSrc *self = GST_MICROSCOPE_SRC (object);
  Private *p = self->priv;

  /* While open, positions read back from the hardware (moving or not). */
  std::unique_lock<std::mutex> lock (p->scope_mutex);
  bool open = p->scope != nullptr;
  hw::MicroscopeState st;
  std::string description, objectives;
  double stage_speed = 0, focus_speed = 0;
  if (open) {
    st = p->scope->state ();
    description = p->scope->description ();
    stage_speed = p->scope->stage ().speed_um_per_s ();
    focus_speed = p->scope->focus ().speed_um_per_s ();
    for (const auto &o : p->scope->turret ().objectives ())
      objectives += (objectives.empty () ? "" : ",") + std::to_string (o.magnification);
  }
  lock.unlock ();

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
  case PROP_MICROSCOPE:
    g_value_set_string (value, self->microscope);
    break;
  case PROP_X_UM:
    g_value_set_double (value, open ? st.stage.x_um : self->x_um);
    break;
  case PROP_Y_UM:
    g_value_set_double (value, open ? st.stage.y_um : self->y_um);
    break;
  case PROP_Z_UM:
    g_value_set_double (value, open ? st.focus.z_um : self->z_um);
    break;
  case PROP_OBJECTIVE:
    g_value_set_int (value, open ? st.objective.magnification : self->objective);
    break;
  case PROP_IS_LIVE:
    g_value_set_boolean (value, self->is_live);
    break;
  case PROP_IDLE:
    g_value_set_boolean (value, self->idle);
    break;
  case PROP_IDLE_INTERVAL_MS:
    g_value_set_uint (value, self->idle_interval_ms);
    break;
  case PROP_UM_PER_PX:
    g_value_set_double (value, open ? st.objective.um_per_px : 0.0);
    break;
  case PROP_MOVING:
    g_value_set_boolean (value, open && (st.stage.moving || st.focus.moving));
    break;
  case PROP_DESCRIPTION:
    g_value_set_string (value, open ? description.c_str () : nullptr);
    break;
  case PROP_STAGE_SPEED:
    g_value_set_double (value, open ? stage_speed : self->stage_speed);
    break;
  case PROP_FOCUS_SPEED:
    g_value_set_double (value, open ? focus_speed : self->focus_speed);
    break;
  case PROP_OBJECTIVES:
    g_value_set_string (value, open ? objectives.c_str () : nullptr);
    break;
  case PROP_SOFT_LIMITS: {
    if (!open || self->info.width <= 0) {
      g_value_set_boxed (value, nullptr);
      break;
    }
    hw::SoftLimits l = hw::soft_limits (st, self->info.width, self->info.height);
    g_value_take_boxed (value,
                        gst_structure_new ("soft-limits", "x_min_um", G_TYPE_DOUBLE, l.x.min_um, "x_max_um",
                                           G_TYPE_DOUBLE, l.x.max_um, "y_min_um", G_TYPE_DOUBLE, l.y.min_um,
                                           "y_max_um", G_TYPE_DOUBLE, l.y.max_um, "z_min_um", G_TYPE_DOUBLE,
                                           l.z.min_um, "z_max_um", G_TYPE_DOUBLE, l.z.max_um, nullptr));
    break;
  }
  case PROP_ONLINE:
  case PROP_OFFLINE_REASON: {
    std::lock_guard<std::mutex> h (p->health_mutex);
    if (prop_id == PROP_ONLINE)
      g_value_set_boolean (value, open && p->offline_reason.empty ());
    else
      g_value_set_string (value, p->offline_reason.empty () ? nullptr : p->offline_reason.c_str ());
    break;
  }
  default:
    G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    break;
  }
  GST_OBJECT_UNLOCK (self);
}

/* Polls `moving` until it turns false; FALSE after 10 s. */
template <typename Moving>
static bool
settle (Moving moving)
{
  gint64 deadline = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;
  while (moving ()) {
    if (g_get_monotonic_time () > deadline)
      return false;
    g_usleep (2000);
  }
  return true;
}

/* Opens the microscope of `uri`; nullptr after posting an error that says
 * whether it is missing, unreadable or misconfigured. */
static std::unique_ptr<hw::Microscope>
open_scope (GstMicroscopeSrc *self, const std::string &uri)
{
  try {
    return hw::open_microscope (uri);
  } catch (const hw::Error &e) {
    switch (e.kind ()) {
    case hw::ErrorKind::kNotFound:
      GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND, ("%s", e.what ()), ("microscope=%s", uri.c_str ()));
      break;
    case hw::ErrorKind::kCorrupt:
      GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ, ("%s", e.what ()), ("microscope=%s", uri.c_str ()));
      break;
    default:
      GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS, ("%s", e.what ()), ("microscope=%s", uri.c_str ()));
      break;
    }
  } catch (const std::exception &e) {
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ,
                       ("cannot open microscope '%s': %s", uri.c_str (), e.what ()), (nullptr));
  }
  return nullptr;
}

/* Places the stage where the properties ask before the first frame: moves
 * at full speed and waits until it arrives, as one would on a real stage.
 * DEFAULT_POSITION leaves an axis where it is.  Throws hw::Error. */
static void
place_for_first_frame (hw::Microscope &scope, double x, double y, double z, int objective)
{
  if (objective != 0)
    scope.turret ().select (objective);
  hw::StageState s = scope.stage ().state ();
  double tx = x == DEFAULT_POSITION ? s.x_um : x;
  double ty = y == DEFAULT_POSITION ? s.y_um : y;
  if (tx != s.x_um || ty != s.y_um) {
    hw::Stage &stage = scope.stage ();
    double speed = stage.speed_um_per_s ();
    stage.set_speed_um_per_s (kStartSpeedUmPerS);
    stage.move_to (tx, ty);
    if (!settle ([&] { return stage.state ().moving; }))
      throw hw::Error (hw::ErrorKind::kDevice, "the stage did not reach its "
                                               "start position within 10 s");
    stage.set_speed_um_per_s (speed);
  }
  if (z != DEFAULT_POSITION) {
    hw::FocusDrive &focus = scope.focus ();
    double speed = focus.speed_um_per_s ();
    focus.set_speed_um_per_s (kStartFocusSpeedUmPerS);
    focus.move_to (z);
    if (!settle ([&] { return focus.state ().moving; }))
      throw hw::Error (hw::ErrorKind::kDevice, "the focus drive did not "
                                               "reach its start position within 10 s");
    focus.set_speed_um_per_s (speed);
  }
}

static gboolean
gst_microscope_src_start (GstBaseSrc *src)
{
  GstMicroscopeSrc *self = GST_MICROSCOPE_SRC (src);
  Private *p = self->priv;

  GST_OBJECT_LOCK (self);
  std::string uri = self->microscope;
  gdouble x = self->x_um, y = self->y_um, z = self->z_um;
  gint objective = self->objective;
  gdouble stage_speed = self->stage_speed, focus_speed = self->focus_speed;
  GST_OBJECT_UNLOCK (self);

  std::unique_ptr<hw::Microscope> scope = open_scope (self, uri);
  if (!scope)
    return FALSE;
  try {
    place_for_first_frame (*scope, x, y, z, objective);
    if (stage_speed > 0)
      scope->stage ().set_speed_um_per_s (stage_speed);
    if (focus_speed > 0)
      scope->focus ().set_speed_um_per_s (focus_speed);
  } catch (const hw::Error &e) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS, ("%s", e.what ()), ("microscope=%s", uri.c_str ()));
    return FALSE;
  }
  GST_INFO_OBJECT (self, "opened %s", scope->description ().c_str ());

  std::lock_guard<std::mutex> lock (p->scope_mutex);
  p->min_size = scope->camera ().min_size ();
  p->max_size = scope->camera ().max_size ();
  p->free_running = scope->camera ().free_running ();
  p->camera_fps = scope->camera ().frame_rate ();
  {
    std::lock_guard<std::mutex> h (p->health_mutex);
    p->devices.clear ();
    p->offline_reason.clear ();
  }
  p->scope = std::move (scope);
  self->n_frames = 0;
  self->next_running_time = 0;
  return TRUE;
}

static gboolean
gst_microscope_src_stop (GstBaseSrc *src)
{
  GstMicroscopeSrc *self = GST_MICROSCOPE_SRC (src);
  Private *p = self->priv;

  std::lock_guard<std::mutex> lock (p->scope_mutex);
  p->scope.reset ();
  p->rgb.release ();
  if (p->converter) {
    gst_video_converter_free (p->converter);
    p->converter = nullptr;
  }
  return TRUE;
}

static GstCaps *
gst_microscope_src_fixate (GstBaseSrc *src, GstCaps *caps)
{
  caps = gst_caps_make_writable (caps);
  GstStructure *s = gst_caps_get_structure (caps, 0);
  gst_structure_fixate_field_nearest_int (s, "width", DEFAULT_WIDTH);
  gst_structure_fixate_field_nearest_int (s, "height", DEFAULT_HEIGHT);
  gst_structure_fixate_field_nearest_fraction (s, "framerate", DEFAULT_FPS_N, 1);
  return GST_BASE_SRC_CLASS (parent_class)->fixate (src, caps);
}

/* Once the microscope is open, its camera's frame sizes (a real camera: one)
 * and, for a free-running camera, its frame rate. */
static GstCaps *
gst_microscope_src_get_caps (GstBaseSrc *src, GstCaps *filter)
{
  GstMicroscopeSrc *self = GST_MICROSCOPE_SRC (src);
  Private *p = self->priv;
  GstCaps *caps = gst_pad_get_pad_template_caps (GST_BASE_SRC_PAD (src));
  {
    std::lock_guard<std::mutex> lock (p->scope_mutex);
    if (p->scope) {
      caps = gst_caps_make_writable (caps);
      for (guint i = 0; i < gst_caps_get_size (caps); i++) {
        GstStructure *st = gst_caps_get_structure (caps, i);
        auto range = [&] (const char *field, int lo, int hi) {
          if (lo == hi)
            gst_structure_set (st, field, G_TYPE_INT, lo, nullptr);
          else
            gst_structure_set (st, field, GST_TYPE_INT_RANGE, lo, hi, nullptr);
        };
        range ("width", p->min_size.width, p->max_size.width);
        range ("height", p->min_size.height, p->max_size.height);
        if (p->free_running && p->camera_fps > 0) {
          gint n = 0, d = 1;
          gst_util_double_to_fraction (p->camera_fps, &n, &d);
          gst_structure_set (st, "framerate", GST_TYPE_FRACTION, n, d, nullptr);
        }
      }
    }
  }
  if (filter) {
    GstCaps *c = gst_caps_intersect_full (filter, caps, GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref (caps);
    caps = c;
  }
  return caps;
}

/* Negotiation with a clear message when downstream wants what this
 * microscope's camera does not produce (a format, size or rate). */
static gboolean
gst_microscope_src_negotiate (GstBaseSrc *src)
{
  GstMicroscopeSrc *self = GST_MICROSCOPE_SRC (src);
  GstCaps *ours = gst_pad_query_caps (GST_BASE_SRC_PAD (src), nullptr);
  GstCaps *peer = gst_pad_peer_query_caps (GST_BASE_SRC_PAD (src), nullptr);
  gboolean empty = peer && !gst_caps_can_intersect (ours, peer);
  if (empty) {
    gchar *want = gst_caps_to_string (peer);
    std::string uri;
    {
      std::lock_guard<std::mutex> lock (self->priv->scope_mutex);
      if (self->priv->scope)
        uri = self->priv->scope->uri ();
    }
    GstStructure *s = gst_caps_get_structure (ours, 0);
    g_autofree gchar *w = gst_value_serialize (gst_structure_get_value (s, "width"));
    g_autofree gchar *h = gst_value_serialize (gst_structure_get_value (s, "height"));
    gchar *size = g_strdup_printf ("%s x %s", w, h);
    gchar *rate = gst_value_serialize (gst_structure_get_value (s, "framerate"));
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
                       ("microscopesrc cannot produce the requested video: downstream "
                        "accepts only %s; the microscope %s delivers video/x-raw with format "
                        "%s, size %s, framerate %s, square pixels",
                        want, uri.c_str (), VIDEO_FORMATS, size, rate),
                       (nullptr));
    g_free (size);
    g_free (rate);
    g_free (want);
  }
  gst_caps_unref (ours);
  if (peer)
    gst_caps_unref (peer);
  if (empty)
    return FALSE;
  return GST_BASE_SRC_CLASS (parent_class)->negotiate (src);
}

static gboolean
gst_microscope_src_set_caps (GstBaseSrc *src, GstCaps *caps)
{
  GstMicroscopeSrc *self = GST_MICROSCOPE_SRC (src);
  Private *p = self->priv;
  GstVideoInfo info;

  if (!gst_video_info_from_caps (&info, caps) || GST_VIDEO_INFO_FPS_N (&info) <= 0) {
    GST_ELEMENT_ERROR (
        self, CORE, NEGOTIATION,
        ("microscopesrc needs raw video caps with a framerate above 0, got %" GST_PTR_FORMAT, caps),
        (nullptr));
    return FALSE;
  }
  std::lock_guard<std::mutex> lock (p->scope_mutex);
  if (!p->scope)
    return FALSE;
  try {
    p->scope->camera ().configure (cv::Size (info.width, info.height));
  } catch (const hw::Error &e) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, ("%s", e.what ()), (nullptr));
    return FALSE;
  }
  if (p->converter) {
    gst_video_converter_free (p->converter);
    p->converter = nullptr;
  }
  if (GST_VIDEO_INFO_FORMAT (&info) != GST_VIDEO_FORMAT_RGB) {
    gst_video_info_set_format (&p->rgb_info, GST_VIDEO_FORMAT_RGB, info.width, info.height);
    p->rgb_info.fps_n = info.fps_n;
    p->rgb_info.fps_d = info.fps_d;
    p->rgb_info.par_n = info.par_n;
    p->rgb_info.par_d = info.par_d;
    p->converter = gst_video_converter_new (
        &p->rgb_info, &info,
        gst_structure_new ("options", GST_VIDEO_CONVERTER_OPT_THREADS, G_TYPE_UINT, 1u, nullptr));
  }
  self->info = info;
  GST_DEBUG_OBJECT (self, "negotiated %" GST_PTR_FORMAT, caps);
  return TRUE;
}

/* Frames go into video buffers from a pool (downstream's if it offers one),
 * with GstVideoMeta when downstream handles strides. */
static gboolean
gst_microscope_src_decide_allocation (GstBaseSrc *src, GstQuery *query)
{
  GstMicroscopeSrc *self = GST_MICROSCOPE_SRC (src);
  GstCaps *caps = nullptr;
  GstBufferPool *pool = nullptr;
  guint size = (guint)GST_VIDEO_INFO_SIZE (&self->info), min = 0, max = 0;
  gboolean update = gst_query_get_n_allocation_pools (query) > 0;

  gst_query_parse_allocation (query, &caps, nullptr);
  if (update) {
    gst_query_parse_nth_allocation_pool (query, 0, &pool, &size, &min, &max);
    size = MAX (size, (guint)GST_VIDEO_INFO_SIZE (&self->info));
  }
  if (!pool)
    pool = gst_video_buffer_pool_new ();
  GstStructure *config = gst_buffer_pool_get_config (pool);
  gst_buffer_pool_config_set_params (config, caps, size, min, max);
  if (gst_query_find_allocation_meta (query, GST_VIDEO_META_API_TYPE, nullptr))
    gst_buffer_pool_config_add_option (config, GST_BUFFER_POOL_OPTION_VIDEO_META);
  gst_buffer_pool_set_config (pool, config);
  if (update)
    gst_query_set_nth_allocation_pool (query, 0, pool, size, min, max);
  else
    gst_query_add_allocation_pool (query, pool, size, min, max);
  gst_object_unref (pool);
  return GST_BASE_SRC_CLASS (parent_class)->decide_allocation (src, query);
}

static gboolean
gst_microscope_src_query (GstBaseSrc *src, GstQuery *query)
{
  GstMicroscopeSrc *self = GST_MICROSCOPE_SRC (src);

  if (GST_QUERY_TYPE (query) == GST_QUERY_LATENCY) {
    if (self->info.fps_n <= 0)
      return FALSE;
    /* A frame is captured when its slot starts and pushed right away: one
     * frame interval of latency, like a camera. */
    GstClockTime frame = gst_util_uint64_scale_int (GST_SECOND, self->info.fps_d, self->info.fps_n);
    gst_query_set_latency (query, gst_base_src_is_live (src), frame, frame);
    return TRUE;
  }
  return GST_BASE_SRC_CLASS (parent_class)->query (src, query);
}

static gboolean
gst_microscope_src_unlock (GstBaseSrc *src)
{
  GstMicroscopeSrc *self = GST_MICROSCOPE_SRC (src);
  GST_OBJECT_LOCK (self);
  self->flushing = TRUE;
  if (self->clock_id)
    gst_clock_id_unschedule (self->clock_id);
  GST_OBJECT_UNLOCK (self);
  return TRUE;
}

static gboolean
gst_microscope_src_unlock_stop (GstBaseSrc *src)
{
  GstMicroscopeSrc *self = GST_MICROSCOPE_SRC (src);
  GST_OBJECT_LOCK (self);
  self->flushing = FALSE;
  GST_OBJECT_UNLOCK (self);
  return TRUE;
}

/* Waits for the start of the next frame slot on the pipeline clock.  When
 * capture falls behind, slots are skipped as a camera drops frames.  While
 * idle, the wait runs to the first slot one idle interval after the last
 * frame, and ends early (at the current slot) when idle is cleared. */
static GstFlowReturn
wait_for_slot (GstMicroscopeSrc *self, GstClockTime frame_duration)
{
  GstClock *clock = gst_element_get_clock (GST_ELEMENT (self));
  if (!clock)
    return GST_FLOW_OK;
  GstClockTime base = gst_element_get_base_time (GST_ELEMENT (self));
  GstClockTime now = gst_clock_get_time (clock) - base;
  if (now > self->next_running_time + frame_duration) {
    guint64 slot = now / frame_duration;
    GST_DEBUG_OBJECT (self, "late: skipping %" G_GUINT64_FORMAT " frame slot(s)",
                      slot - self->next_running_time / frame_duration);
    self->next_running_time = slot * frame_duration;
  }
  GST_OBJECT_LOCK (self);
  if (self->flushing) {
    GST_OBJECT_UNLOCK (self);
    gst_object_unref (clock);
    return GST_FLOW_FLUSHING;
  }
  GstClockTime target = self->next_running_time;
  if (self->idle && self->n_frames > 0) {
    /* The last frame's slot started at next_running_time - frame_duration. */
    GstClockTime interval = (GstClockTime)self->idle_interval_ms * GST_MSECOND;
    GstClockTime extra = interval > frame_duration ? interval - frame_duration : 0;
    target += gst_util_uint64_scale_ceil (extra, 1, frame_duration) * frame_duration;
  }
  self->idle_waiting = target > self->next_running_time;
  self->woken = FALSE;
  self->clock_id = gst_clock_new_single_shot_id (clock, base + target);
  GST_OBJECT_UNLOCK (self);
  GstClockReturn ret = gst_clock_id_wait (self->clock_id, nullptr);
  GST_OBJECT_LOCK (self);
  gst_clock_id_unref (self->clock_id);
  self->clock_id = nullptr;
  const gboolean woken = self->woken && !self->flushing;
  self->idle_waiting = FALSE;
  self->woken = FALSE;
  GST_OBJECT_UNLOCK (self);
  if (ret == GST_CLOCK_UNSCHEDULED && !woken) {
    gst_object_unref (clock);
    return GST_FLOW_FLUSHING;
  }
  if (woken) {
    /* Out of idle: this frame takes the slot that has begun. */
    GstClockTime slot = (gst_clock_get_time (clock) - base) / frame_duration * frame_duration;
    self->next_running_time = MAX (self->next_running_time, slot);
  } else {
    self->next_running_time = target;
  }
  gst_object_unref (clock);
  return GST_FLOW_OK;
}

/* What viewers see while the camera is gone: never a frozen frame that
 * could pass for live. */
static void
draw_offline_slate (cv::Mat &rgb, const std::string &why)
{
  rgb.setTo (cv::Scalar (48, 48, 48));
  double scale = std::max (0.4, rgb.cols / 900.0);
  int thick = std::max (1, (int)std::lround (scale * 2));
  cv::putText (rgb, "MICROSCOPE OFFLINE", cv::Point (rgb.cols / 20, rgb.rows / 3), cv::FONT_HERSHEY_SIMPLEX,
               1.6 * scale, cv::Scalar (230, 230, 230), thick, cv::LINE_AA);
  /* The reason, wrapped at ~70 characters. */
  int y = rgb.rows / 3 + (int)(60 * scale);
  for (size_t at = 0; at < why.size () && y < rgb.rows - 10; at += 70) {
    cv::putText (rgb, why.substr (at, 70), cv::Point (rgb.cols / 20, y), cv::FONT_HERSHEY_SIMPLEX,
                 0.6 * scale, cv::Scalar (200, 200, 200), std::max (1, thick / 2), cv::LINE_AA);
    y += (int)(30 * scale);
  }
}

/* Posts what changed in the devices' health since the last frame: a warning
 * naming the device when it goes offline (or into an alarm), info when it is
 * back, a warning for each command it refused, and an element message
 * "microscopesrc" (online, part, device, problem) on every change. */
static void
post_health (GstMicroscopeSrc *self, const std::vector<hw::DeviceStatus> &now)
{
  Private *p = self->priv;
  std::vector<hw::DeviceStatus> before;
  std::string reason;
  for (const auto &d : now)
    if (!d.online)
      reason += (reason.empty () ? "" : "; ") + d.problem;
  {
    std::lock_guard<std::mutex> h (p->health_mutex);
    before = p->devices;
    p->devices = now;
    p->offline_reason = reason;
  }
  for (const auto &d : now) {
    hw::DeviceStatus prev; /* online, no problem, no refusals */
    for (const auto &b : before)
      if (b.device == d.device && b.part == d.part)
        prev = b;
    if (d.online != prev.online || d.problem != prev.problem) {
      if (!d.problem.empty () && d.online)
        GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS, ("%s", d.problem.c_str ()),
                             ("%s %s", d.part.c_str (), d.device.c_str ()));
      else if (!d.problem.empty ())
        GST_ELEMENT_WARNING (self, RESOURCE, NOT_FOUND, ("%s", d.problem.c_str ()),
                             ("%s %s", d.part.c_str (), d.device.c_str ()));
      else
        GST_ELEMENT_INFO (self, RESOURCE, NOT_FOUND,
                          ("%s %s is back online", d.part.c_str (), d.device.c_str ()), (nullptr));
      GstClockTime running = self->next_running_time;
      GstStructure *st = gst_structure_new ("microscopesrc", "online", G_TYPE_BOOLEAN, d.online, "part",
                                            G_TYPE_STRING, d.part.c_str (), "device", G_TYPE_STRING,
                                            d.device.c_str (), "problem", G_TYPE_STRING, d.problem.c_str (),
                                            "timestamp", G_TYPE_UINT64, running, "stream-time", G_TYPE_UINT64,
                                            running, "running-time", G_TYPE_UINT64, running, nullptr);
      gst_element_post_message (GST_ELEMENT (self), gst_message_new_element (GST_OBJECT (self), st));
    }
    if (d.refusals > prev.refusals)
      GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS, ("%s", d.last_refusal.c_str ()),
                           ("%s %s", d.part.c_str (), d.device.c_str ()));
  }
}

/* Waits for this frame's slot: the clock paces a rendered (sim) camera, the
 * offline slate and an idle camera (its frames in between are not taken); a
 * real camera otherwise paces the stream itself. */
static GstFlowReturn
pace_frame (GstMicroscopeSrc *self, GstClockTime duration, bool live, bool &camera_paced)
{
  Private *p = self->priv;
  {
    std::lock_guard<std::mutex> h (p->health_mutex);
    camera_paced = p->free_running && p->offline_reason.empty ();
  }
  GST_OBJECT_LOCK (self);
  const bool idle = self->idle;
  GST_OBJECT_UNLOCK (self);
  if (live && (!camera_paced || idle))
    return wait_for_slot (self, duration);
  if (!live)
    self->next_running_time = self->n_frames * duration;
  return GST_FLOW_OK;
}

/* Grabs one frame into `out` and reads the devices' health.  A camera that
 * is gone (a device error: the backend reconnects) gives the offline slate
 * and offline = true; any other failure is an element error. */
static GstFlowReturn
grab_frame (GstMicroscopeSrc *self, cv::Mat &out, hw::FrameRecord &capture, bool &offline,
            std::vector<hw::DeviceStatus> &devices)
{
  Private *p = self->priv;
  /* stop() only runs once this streaming thread has left fill(), so the
   * microscope outlives the grab; the lock is not held across it, as a
   * real camera's grab waits for the next exposure and property reads (the
   * stage position) must not wait with it.  hw calls are thread-safe. */
  std::shared_ptr<hw::Microscope> scope;
  {
    std::lock_guard<std::mutex> lock (p->scope_mutex);
    scope = p->scope;
  }
  if (!scope)
    return GST_FLOW_FLUSHING;
  offline = false;
  try {
    capture = scope->camera ().grab (out);
  } catch (const hw::Error &e) {
    if (e.kind () != hw::ErrorKind::kDevice) {
      GST_ELEMENT_ERROR (self, RESOURCE, READ, ("camera failed: %s", e.what ()), (nullptr));
      return GST_FLOW_ERROR;
    }
    offline = true;
    draw_offline_slate (out, e.what ());
  } catch (const std::exception &e) {
    GST_ELEMENT_ERROR (self, RESOURCE, READ, ("camera failed: %s", e.what ()), (nullptr));
    return GST_FLOW_ERROR;
  }
  try {
    devices = scope->devices ();
  } catch (const std::exception &e) {
    GST_WARNING_OBJECT (self, "device status: %s", e.what ());
  }
  return GST_FLOW_OK;
}

/* Converts the RGB the camera rendered into the negotiated format. */
static void
convert_rgb (Private *p, GstVideoFrame *out)
{
  GstVideoFrame rgb_frame;
  GstBuffer *wrapped
      = gst_buffer_new_wrapped_full (GST_MEMORY_FLAG_READONLY, p->rgb.data, p->rgb.step * p->rgb.rows, 0,
                                     p->rgb.step * p->rgb.rows, nullptr, nullptr);
  GstVideoInfo rgb_info = p->rgb_info;
  rgb_info.stride[0] = (gint)p->rgb.step;
  gst_video_frame_map (&rgb_frame, &rgb_info, wrapped, GST_MAP_READ);
  gst_video_converter_frame (p->converter, &rgb_frame, out);
  gst_video_frame_unmap (&rgb_frame);
  gst_buffer_unref (wrapped);
}

/* The capture's StageMeta (none for the offline slate: views that need one
 * fail closed), timestamps and offsets. */
static void
stamp_buffer (GstMicroscopeSrc *self, GstBuffer *buf, hw::FrameRecord *capture, GstClockTime duration)
{
  if (!capture) {
    GST_BUFFER_FLAG_SET (buf, GST_BUFFER_FLAG_GAP);
  } else {
    capture->frame_width = self->info.width;
    capture->frame_height = self->info.height;
    livemicro::add_frame_record_meta (buf, *capture);
  }
  GST_BUFFER_PTS (buf) = self->next_running_time;
  GST_BUFFER_DTS (buf) = GST_CLOCK_TIME_NONE;
  GST_BUFFER_DURATION (buf) = duration;
  GST_BUFFER_OFFSET (buf) = self->n_frames;
  GST_BUFFER_OFFSET_END (buf) = self->n_frames + 1;
  self->n_frames++;
  self->next_running_time += duration;
}

static GstFlowReturn
gst_microscope_src_fill (GstPushSrc *src, GstBuffer *buf)
{
  GstMicroscopeSrc *self = GST_MICROSCOPE_SRC (src);
  Private *p = self->priv;
  const GstVideoInfo *info = &self->info;
  const GstClockTime duration = gst_util_uint64_scale_int (GST_SECOND, info->fps_d, info->fps_n);
  const bool live = gst_base_src_is_live (GST_BASE_SRC (src));
  bool camera_paced = false;
  GstFlowReturn ret = pace_frame (self, duration, live, camera_paced);
  if (ret != GST_FLOW_OK)
    return ret;

  GstVideoFrame frame;
  if (!gst_video_frame_map (&frame, info, buf, GST_MAP_WRITE)) {
    GST_ELEMENT_ERROR (self, RESOURCE, WRITE, ("could not map the output buffer"), (nullptr));
    return GST_FLOW_ERROR;
  }
  cv::Mat out;
  if (!p->converter) {
    /* RGB: the camera renders straight into the buffer. */
    out = cv::Mat (info->height, info->width, CV_8UC3, GST_VIDEO_FRAME_PLANE_DATA (&frame, 0),
                   GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0));
  } else {
    p->rgb.create (info->height, info->width, CV_8UC3);
    out = p->rgb;
  }
  hw::FrameRecord capture;
  bool offline = false;
  std::vector<hw::DeviceStatus> devices;
  ret = grab_frame (self, out, capture, offline, devices);
  if (ret != GST_FLOW_OK) {
    gst_video_frame_unmap (&frame);
    return ret;
  }
  if (live && camera_paced && !offline) {
    /* Timestamp a camera's frame by when it arrived. */
    if (GstClock *clock = gst_element_get_clock (GST_ELEMENT (self))) {
      GstClockTime now = gst_clock_get_time (clock) - gst_element_get_base_time (GST_ELEMENT (self));
      gst_object_unref (clock);
      if (self->n_frames == 0 || now > self->next_running_time - duration)
        self->next_running_time = now;
    }
  }
  post_health (self, devices);
  if (p->converter)
    convert_rgb (p, &frame);
  gst_video_frame_unmap (&frame);
  stamp_buffer (self, buf, offline ? nullptr : &capture, duration);
  return GST_FLOW_OK;
}

static void
gst_microscope_src_finalize (GObject *object)
{
  GstMicroscopeSrc *self = GST_MICROSCOPE_SRC (object);
  g_free (self->microscope);
  if (self->priv->converter)
    gst_video_converter_free (self->priv->converter);
  delete self->priv;
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

/* Long by nature: one g_param_spec per property, each with its blurb, range
 * and default, in the order gst-inspect-1.0 shows them. */
static void
gst_microscope_src_class_init (GstMicroscopeSrcClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseSrcClass *basesrc_class = GST_BASE_SRC_CLASS (klass);
  GstPushSrcClass *pushsrc_class = GST_PUSH_SRC_CLASS (klass);
  const auto rw = static_cast<GParamFlags> (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
  const auto rw_playing = static_cast<GParamFlags> (rw | GST_PARAM_MUTABLE_PLAYING);
  const auto ro = static_cast<GParamFlags> (G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);

  gobject_class->set_property = gst_microscope_src_set_property;
  gobject_class->get_property = gst_microscope_src_get_property;
  gobject_class->finalize = gst_microscope_src_finalize;

  g_object_class_install_property (
      gobject_class, PROP_MICROSCOPE,
      g_param_spec_string ("microscope", "Microscope",
                           "Microscope URI: sim://synthetic[?seed=N] (generated H&E slide), "
                           "sim:///path/slide.svs (any slide OpenSlide opens), "
                           "sim:///path/image.png?mpp=0.25 (plain image with its µm per pixel); "
                           "docs/hardware.md lists every scheme and query parameter",
                           DEFAULT_MICROSCOPE, static_cast<GParamFlags> (rw | GST_PARAM_MUTABLE_READY)));
  g_object_class_install_property (
      gobject_class, PROP_X_UM,
      g_param_spec_double ("x-um", "Stage X (µm)",
                           "Slide x under the optical axis, µm from the slide's left edge; "
                           "setting it while playing moves the stage at its set speed. Reads "
                           "the current position, also while moving. -1 = leave the stage where "
                           "it is when the microscope opens (sim: home, the centre of the tissue); "
                           "outside the slide's travel range is an error",
                           -1.0, MAX_POSITION_UM, DEFAULT_POSITION, rw_playing));
  g_object_class_install_property (
      gobject_class, PROP_Y_UM,
      g_param_spec_double ("y-um", "Stage Y (µm)",
                           "Slide y under the optical axis, µm from the slide's top edge; as x-um", -1.0,
                           MAX_POSITION_UM, DEFAULT_POSITION, rw_playing));
  g_object_class_install_property (
      gobject_class, PROP_Z_UM,
      g_param_spec_double ("z-um", "Focus Z (µm)",
                           "Focus drive position, µm (sim: 0-2000, best focus near 1000 and "
                           "varying over the slide). -1 = leave the focus where it is when the "
                           "microscope opens (sim: in focus at home)",
                           -1.0, MAX_POSITION_UM, DEFAULT_POSITION, rw_playing));
  g_object_class_install_property (
      gobject_class, PROP_OBJECTIVE,
      g_param_spec_int ("objective", "Objective",
                        "Objective magnification to use (sim: 4, 10, 20 or 40); 0 = the "
                        "microscope's default (sim: 10)",
                        0, 1000, DEFAULT_OBJECTIVE, rw_playing));
  g_object_class_install_property (
      gobject_class, PROP_IS_LIVE,
      g_param_spec_boolean ("is-live", "Is live",
                            "Deliver frames at the negotiated framerate on the clock (TRUE, a "
                            "camera) or as fast as downstream takes them (FALSE, for offline "
                            "processing and benchmarks)",
                            DEFAULT_IS_LIVE, rw));
  g_object_class_install_property (
      gobject_class, PROP_UM_PER_PX,
      g_param_spec_double ("um-per-px", "µm per pixel",
                           "Size of one camera pixel on the slide with the current objective "
                           "(0 until started)",
                           0.0, G_MAXDOUBLE, 0.0, ro));
  g_object_class_install_property (gobject_class, PROP_MOVING,
                                   g_param_spec_boolean ("moving", "Moving",
                                                         "TRUE while the stage or the focus drive is moving",
                                                         FALSE, ro));
  g_object_class_install_property (
      gobject_class, PROP_DESCRIPTION,
      g_param_spec_string ("description", "Description",
                           "What the open microscope is (slide, backend); NULL until started", nullptr, ro));

  g_object_class_install_property (
      gobject_class, PROP_ONLINE,
      g_param_spec_boolean ("online", "Online",
                            "TRUE while the microscope is open and every device of it (camera, "
                            "stage and focus controllers) answers; FALSE while one is gone (the "
                            "backend reconnects by itself)",
                            FALSE, ro));
  g_object_class_install_property (
      gobject_class, PROP_OFFLINE_REASON,
      g_param_spec_string ("offline-reason", "Offline reason",
                           "Why the microscope is offline, naming the device (e.g. \"GRBL "
                           "controller on /dev/ttyUSB0 is offline: …\"); NULL when online",
                           nullptr, ro));

  g_object_class_install_property (
      gobject_class, PROP_STAGE_SPEED,
      g_param_spec_double ("stage-speed-um-s", "Stage speed (µm/s)",
                           "Speed of XY moves; 0 = the microscope's default (sim: 20000, or the URI's "
                           "stage_speed_um_s). Settable while playing, e.g. slow for jogging at 40x",
                           0.0, 100000.0, 0.0, rw_playing));
  g_object_class_install_property (
      gobject_class, PROP_FOCUS_SPEED,
      g_param_spec_double ("focus-speed-um-s", "Focus speed (µm/s)",
                           "Speed of focus moves; 0 = the microscope's default (sim: 500)", 0.0, 10000.0, 0.0,
                           rw_playing));
  g_object_class_install_property (
      gobject_class, PROP_SOFT_LIMITS,
      g_param_spec_boxed ("soft-limits", "Soft limits",
                          "Travel limits for remote control with the current objective and frame "
                          "size (x_min_um, x_max_um, y_min_um, ..., z_max_um): the field of view stays "
                          "on the slide and the focus stays 100 µm short of the objective touching it; "
                          "NULL until negotiated",
                          GST_TYPE_STRUCTURE, ro));
  g_object_class_install_property (
      gobject_class, PROP_OBJECTIVES,
      g_param_spec_string ("objectives", "Objectives",
                           "Mounted objective magnifications, comma-separated (e.g. \"4,10,20,40\"); "
                           "NULL until started",
                           nullptr, ro));
  g_object_class_install_property (
      gobject_class, PROP_IDLE,
      g_param_spec_boolean ("idle", "Idle",
                            "Nobody watches: deliver one frame every idle-interval-ms instead of one per "
                            "frame slot (live only); clearing it delivers the next frame at once",
                            DEFAULT_IDLE, rw_playing));
  g_object_class_install_property (
      gobject_class, PROP_IDLE_INTERVAL_MS,
      g_param_spec_uint ("idle-interval-ms", "Idle interval (ms)",
                         "Time between two frames while idle, in milliseconds (rounded up to whole "
                         "frame slots)",
                         100, 60000, DEFAULT_IDLE_INTERVAL_MS, rw_playing));

  /**
   * GstMicroscopeSrc::stop:
   *
   * Action signal: halts the stage and the focus drive where they are.
   */
  g_signal_new_class_handler (
      "stop", G_TYPE_FROM_CLASS (klass), static_cast<GSignalFlags> (G_SIGNAL_RUN_LAST | G_SIGNAL_ACTION),
      G_CALLBACK (gst_microscope_src_stop_motion), nullptr, nullptr, nullptr, G_TYPE_NONE, 0);

  /**
   * GstMicroscopeSrc::get-microscope:
   *
   * Action signal for applications linking LiveMicro's hardware library:
   * returns a new `std::shared_ptr<livemicro::hw::Microscope> *` to the open
   * microscope (delete it when done; the devices stay open while it is
   * held), or NULL while the element is stopped.  Commands through it move
   * the same hardware the properties move.
   */
  g_signal_new_class_handler ("get-microscope", G_TYPE_FROM_CLASS (klass),
                              static_cast<GSignalFlags> (G_SIGNAL_RUN_LAST | G_SIGNAL_ACTION),
                              G_CALLBACK (gst_microscope_src_get_microscope), nullptr, nullptr, nullptr,
                              G_TYPE_POINTER, 0);

  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (
      element_class, "Microscope source", "Source/Video",
      "Live frames from a (virtual or real) motorised microscope, with the "
      "stage position of each frame as StageMeta",
      "LiveMicro");

  basesrc_class->start = gst_microscope_src_start;
  basesrc_class->stop = gst_microscope_src_stop;
  basesrc_class->negotiate = gst_microscope_src_negotiate;
  basesrc_class->get_caps = gst_microscope_src_get_caps;
  basesrc_class->fixate = gst_microscope_src_fixate;
  basesrc_class->set_caps = gst_microscope_src_set_caps;
  basesrc_class->query = gst_microscope_src_query;
  basesrc_class->decide_allocation = gst_microscope_src_decide_allocation;
  basesrc_class->unlock = gst_microscope_src_unlock;
  basesrc_class->unlock_stop = gst_microscope_src_unlock_stop;
  pushsrc_class->fill = gst_microscope_src_fill;
}

static void
gst_microscope_src_init (GstMicroscopeSrc *self)
{
  self->priv = new Private ();
  self->microscope = g_strdup (DEFAULT_MICROSCOPE);
  self->x_um = self->y_um = self->z_um = DEFAULT_POSITION;
  self->objective = DEFAULT_OBJECTIVE;
  self->is_live = DEFAULT_IS_LIVE;
  self->idle = DEFAULT_IDLE;
  self->idle_interval_ms = DEFAULT_IDLE_INTERVAL_MS;
  gst_video_info_init (&self->info);
  gst_base_src_set_live (GST_BASE_SRC (self), DEFAULT_IS_LIVE);
  gst_base_src_set_format (GST_BASE_SRC (self), GST_FORMAT_TIME);
}
