/**
 * SECTION:element-privacymask
 * @title: privacymask
 *
 * Masks what a viewer may not see — the slide label, QR codes, barcodes,
 * printed text — in slide coordinates, and removes the buffer metas and
 * stream tags the viewer's profile may not receive.  Regions are kept in
 * slide µm and mapped into each frame with its #LivemicroStageMeta, so a mask
 * stays on its spot while the stage moves and the objective changes.
 *
 * Detection (text, QR codes, barcodes) runs where it can matter: on slide
 * area the view has not shown recently at this objective and focus, outside
 * what is masked anyway (detection-mode=incremental, the default); a moving
 * 1080p view costs a few milliseconds per frame instead of ~40.
 *
 * Privacy fails closed: when the mask cannot be computed for a frame (no or
 * invalid StageMeta, a detector failure, caps that no longer match the
 * StageMeta), the whole frame is blanked and a warning says why.
 *
 * |[
 * gst-launch-1.0 microscopesrc ! privacymask profile=guest ! videoconvert ! autovideosink
 * gst-launch-1.0 microscopesrc objective=4 x-um=21000 ! privacymask profile=consultant \
 *     profiles-location=pipelines/profiles.json ! videoconvert ! autovideosink
 * ]|
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstprivacymask.h"

#include <livemicro/frame_record_meta.h>
#include <livemicro/privacy/detect.h>
#include <livemicro/privacy/incremental.h>
#include <livemicro/privacy/mask.h>
#include <livemicro/privacy/profiles.h>
#include <livemicro/stagemeta.h>

#include <gst/video/video.h>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>

GST_DEBUG_CATEGORY_STATIC (gst_privacy_mask_debug);
#define GST_CAT_DEFAULT gst_privacy_mask_debug

namespace privacy = livemicro::privacy;

#define DEFAULT_PROFILE "guest"
#define DEFAULT_METHOD privacy::MaskMethod::kFill
#define DEFAULT_FAIL_CLOSED TRUE
#define DEFAULT_MARGIN_PX 2
#define MAX_MARGIN_PX 1000
#define DEFAULT_DETECTION_INTERVAL 10
#define MAX_DETECTION_INTERVAL 10000
#define DEFAULT_DETECTION_MODE DetectionMode::kIncremental
/* Pixelate/blur block size, frame pixels. */
static const int kBlockPx = 16;
/* Extra margin for a moving frame when the previous frame gives no speed. */
static const double kMovingFallbackPx = 64.0;

enum {
  PROP_0,
  PROP_PROFILE,
  PROP_PROFILES_LOCATION,
  PROP_METHOD,
  PROP_FAIL_CLOSED,
  PROP_MARGIN_PX,
  PROP_DETECTION_INTERVAL,
  PROP_DETECTION_MODE,
  PROP_REGIONS,
  PROP_BLANKED_FRAMES,
};

namespace {

/* Where the detectors look (see the property's blurb). */
enum class DetectionMode { kIncremental, kFullFrame };

struct Private {
  /* Guards `profiles` and `started` between property setters and streaming. */
  std::mutex config_mutex;
  std::shared_ptr<const privacy::ProfileSet> profiles;
  bool started = false;

  /* Streaming thread only, except `memory` (under memory_mutex). */
  std::mutex memory_mutex;
  privacy::RegionMemory memory;
  privacy::Detector detector;
  privacy::IncrementalDetector incremental;
  cv::Mat mask, chroma_mask, work;
  bool have_prev = false;
  livemicro::hw::FrameRecord prev_geometry;
  bool have_detect_key = false;
  livemicro::hw::FrameRecord detect_geometry;
  guint64 frames_since_detection = 0;
  guint64 frames = 0;
  std::string last_blank_reason;
  std::string caps_change; /* set by set_info while streaming */
  GstVideoInfo prev_info;
  bool have_prev_info = false;
};

} // namespace

struct _GstPrivacyMask {
  GstVideoFilter parent;

  /* properties, under the object lock */
  gchar *profile;
  gchar *profiles_location;
  privacy::MaskMethod method;
  gboolean fail_closed;
  guint margin_px;
  guint detection_interval;
  DetectionMode detection_mode;
  guint64 blanked_frames;

  Private *priv;
};

#define VIDEO_FORMATS "{ RGB, BGR, RGBx, BGRx, xRGB, xBGR, RGBA, BGRA, I420, NV12, GRAY8 }"
#define VIDEO_CAPS GST_VIDEO_CAPS_MAKE (VIDEO_FORMATS)

static GstStaticPadTemplate sink_template
    = GST_STATIC_PAD_TEMPLATE ("sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS (VIDEO_CAPS));
static GstStaticPadTemplate src_template
    = GST_STATIC_PAD_TEMPLATE ("src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS (VIDEO_CAPS));

#define gst_privacy_mask_parent_class parent_class
G_DEFINE_TYPE_WITH_CODE (GstPrivacyMask, gst_privacy_mask, GST_TYPE_VIDEO_FILTER,
                         GST_DEBUG_CATEGORY_INIT (gst_privacy_mask_debug, "privacymask", 0, "Privacy mask"));
GST_ELEMENT_REGISTER_DEFINE (privacymask, "privacymask", GST_RANK_NONE, GST_TYPE_PRIVACY_MASK);

GType
gst_privacy_mask_method_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
      {(gint)privacy::MaskMethod::kFill, "Solid black fill (the only method safe for text)", "fill"},
      {(gint)privacy::MaskMethod::kPixelate, "Pixelate in 16 px blocks (NOT safe for text, codes or faces)",
       "pixelate"},
      {(gint)privacy::MaskMethod::kBlur, "Blur (NOT safe for text, codes or faces: blur can be undone)",
       "blur"},
      {0, nullptr, nullptr},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstPrivacyMaskMethod", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

GType
gst_privacy_mask_detection_mode_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
      {(gint)DetectionMode::kIncremental,
       "Only slide area not checked in the last detection-interval frames at this objective "
       "and focus, outside what is masked anyway; code detectors only on print-like marks",
       "incremental"},
      {(gint)DetectionMode::kFullFrame,
       "Every detector on the whole frame whenever the view moves, and every "
       "detection-interval frames while it is still (~40 ms per 1080p frame)",
       "full-frame"},
      {0, nullptr, nullptr},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstPrivacyMaskDetectionMode", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

/* ---- configuration ------------------------------------------------------ */

/* The profile set named by profiles-location (built-in when unset). */
static std::shared_ptr<const privacy::ProfileSet>
load_profiles (const gchar *location)
{
  if (!location || !*location)
    return std::make_shared<privacy::ProfileSet> (privacy::builtin_profiles ());
  return std::make_shared<privacy::ProfileSet> (privacy::load_profiles_file (location));
}

static std::string
known_profiles (const privacy::ProfileSet &set)
{
  std::string s;
  for (const auto &n : set.names ())
    s += (s.empty () ? "" : ", ") + n;
  return s;
}

/* Why `profile` with `fail_closed` cannot be used, or "" when it can. */
static std::string
check_config (const privacy::ProfileSet &set, const std::string &profile, bool fail_closed)
{
  const privacy::Profile *p = set.find (profile);
  if (!p)
    return "unknown profile '" + profile + "' in " + set.source + " (known: " + known_profiles (set) + ")";
  if (!fail_closed && p->masks_anything ())
    return "fail-closed=false is allowed only with a profile that masks nothing (such as "
           "'owner'); profile '"
           + profile
           + "' masks slide regions or detected regions, so "
             "its frames must be blanked when the mask cannot be computed";
  return "";
}

static void
gst_privacy_mask_set_property (GObject *object, guint prop_id, const GValue *value, GParamSpec *pspec)
{
  GstPrivacyMask *self = GST_PRIVACY_MASK (object);
  Private *p = self->priv;

  switch (prop_id) {
  case PROP_PROFILE:
  case PROP_FAIL_CLOSED: {
    /* While streaming, a change that the loaded profiles refuse changes
     * nothing and says why; before, start() checks it. */
    GST_OBJECT_LOCK (self);
    std::string profile = self->profile;
    bool fail_closed = self->fail_closed;
    GST_OBJECT_UNLOCK (self);
    if (prop_id == PROP_PROFILE) {
      const gchar *v = g_value_get_string (value);
      profile = v ? v : DEFAULT_PROFILE;
    } else {
      fail_closed = g_value_get_boolean (value);
    }
    std::string problem;
    {
      std::lock_guard<std::mutex> lock (p->config_mutex);
      if (p->started)
        problem = check_config (*p->profiles, profile, fail_closed);
    }
    if (!problem.empty ()) {
      GST_ELEMENT_WARNING (self, LIBRARY, SETTINGS, ("%s", problem.c_str ()),
                           ("the view keeps its current profile and fail-closed setting"));
      break;
    }
    GST_OBJECT_LOCK (self);
    g_free (self->profile);
    self->profile = g_strdup (profile.c_str ());
    self->fail_closed = fail_closed;
    GST_OBJECT_UNLOCK (self);
    break;
  }
  case PROP_PROFILES_LOCATION:
    GST_OBJECT_LOCK (self);
    g_free (self->profiles_location);
    self->profiles_location = g_value_dup_string (value);
    GST_OBJECT_UNLOCK (self);
    break;
  case PROP_METHOD:
    GST_OBJECT_LOCK (self);
    self->method = (privacy::MaskMethod)g_value_get_enum (value);
    GST_OBJECT_UNLOCK (self);
    break;
  case PROP_MARGIN_PX:
    GST_OBJECT_LOCK (self);
    self->margin_px = g_value_get_uint (value);
    GST_OBJECT_UNLOCK (self);
    break;
  case PROP_DETECTION_INTERVAL:
    GST_OBJECT_LOCK (self);
    self->detection_interval = g_value_get_uint (value);
    GST_OBJECT_UNLOCK (self);
    break;
  case PROP_DETECTION_MODE:
    GST_OBJECT_LOCK (self);
    self->detection_mode = (DetectionMode)g_value_get_enum (value);
    GST_OBJECT_UNLOCK (self);
    break;
  default:
    G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    break;
  }
}

static void
gst_privacy_mask_get_property (GObject *object, guint prop_id, GValue *value, GParamSpec *pspec)
{
  GstPrivacyMask *self = GST_PRIVACY_MASK (object);

  switch (prop_id) {
  case PROP_REGIONS: {
    std::lock_guard<std::mutex> lock (self->priv->memory_mutex);
    g_value_set_string (value, self->priv->memory.to_json ().c_str ());
    return;
  }
  default:
    break;
  }
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
  case PROP_PROFILE:
    g_value_set_string (value, self->profile);
    break;
  case PROP_PROFILES_LOCATION:
    g_value_set_string (value, self->profiles_location);
    break;
  case PROP_METHOD:
    g_value_set_enum (value, (gint)self->method);
    break;
  case PROP_FAIL_CLOSED:
    g_value_set_boolean (value, self->fail_closed);
    break;
  case PROP_MARGIN_PX:
    g_value_set_uint (value, self->margin_px);
    break;
  case PROP_DETECTION_INTERVAL:
    g_value_set_uint (value, self->detection_interval);
    break;
  case PROP_DETECTION_MODE:
    g_value_set_enum (value, (gint)self->detection_mode);
    break;
  case PROP_BLANKED_FRAMES:
    g_value_set_uint64 (value, self->blanked_frames);
    break;
  default:
    G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    break;
  }
  GST_OBJECT_UNLOCK (self);
}

/* ---- state -------------------------------------------------------------- */

static gboolean
gst_privacy_mask_start (GstBaseTransform *trans)
{
  GstPrivacyMask *self = GST_PRIVACY_MASK (trans);
  Private *p = self->priv;

  GST_OBJECT_LOCK (self);
  std::string location = self->profiles_location ? self->profiles_location : "";
  std::string profile = self->profile;
  bool fail_closed = self->fail_closed;
  GST_OBJECT_UNLOCK (self);

  std::shared_ptr<const privacy::ProfileSet> set;
  try {
    set = load_profiles (location.c_str ());
  } catch (const std::exception &e) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS, ("%s", e.what ()),
                       ("profiles-location=%s", location.c_str ()));
    return FALSE;
  }
  std::string problem = check_config (*set, profile, fail_closed);
  if (!problem.empty ()) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS, ("%s", problem.c_str ()), (nullptr));
    return FALSE;
  }
  const char *fault = g_getenv ("LIVEMICRO_PRIVACY_INJECT_FAULT");
  p->detector.set_inject_fault (fault && g_str_equal (fault, "detect"));
  p->incremental.set_inject_fault (fault && g_str_equal (fault, "detect"));
  p->incremental.clear ();
  {
    std::lock_guard<std::mutex> lock (p->config_mutex);
    p->profiles = set;
    p->started = true;
  }
  {
    std::lock_guard<std::mutex> lock (p->memory_mutex);
    p->memory.clear ();
  }
  p->have_prev = p->have_detect_key = p->have_prev_info = false;
  p->frames = p->frames_since_detection = 0;
  p->last_blank_reason.clear ();
  p->caps_change.clear ();
  GST_OBJECT_LOCK (self);
  self->blanked_frames = 0;
  GST_OBJECT_UNLOCK (self);
  GST_INFO_OBJECT (self, "profile '%s' from %s", profile.c_str (), set->source.c_str ());
  return TRUE;
}

static gboolean
gst_privacy_mask_stop (GstBaseTransform *trans)
{
  GstPrivacyMask *self = GST_PRIVACY_MASK (trans);
  Private *p = self->priv;
  {
    std::lock_guard<std::mutex> lock (p->memory_mutex);
    p->memory.clear ();
  }
  p->incremental.clear ();
  std::lock_guard<std::mutex> lock (p->config_mutex);
  p->started = false;
  p->mask.release ();
  p->chroma_mask.release ();
  p->work.release ();
  return TRUE;
}

static gboolean
gst_privacy_mask_set_info (GstVideoFilter *filter, GstCaps *incaps, GstVideoInfo *in_info, GstCaps *outcaps,
                           GstVideoInfo *out_info)
{
  GstPrivacyMask *self = GST_PRIVACY_MASK (filter);
  Private *p = self->priv;
  if (p->have_prev_info && p->frames > 0
      && (GST_VIDEO_INFO_WIDTH (&p->prev_info) != GST_VIDEO_INFO_WIDTH (in_info)
          || GST_VIDEO_INFO_HEIGHT (&p->prev_info) != GST_VIDEO_INFO_HEIGHT (in_info)
          || GST_VIDEO_INFO_FORMAT (&p->prev_info) != GST_VIDEO_INFO_FORMAT (in_info))) {
    p->caps_change = std::string ("caps changed from ")
                     + std::to_string (GST_VIDEO_INFO_WIDTH (&p->prev_info)) + "x"
                     + std::to_string (GST_VIDEO_INFO_HEIGHT (&p->prev_info)) + " "
                     + gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (&p->prev_info)) + " to "
                     + std::to_string (GST_VIDEO_INFO_WIDTH (in_info)) + "x"
                     + std::to_string (GST_VIDEO_INFO_HEIGHT (in_info)) + " "
                     + gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (in_info)) + " while streaming";
    GST_INFO_OBJECT (self, "%s", p->caps_change.c_str ());
  }
  p->prev_info = *in_info;
  p->have_prev_info = true;
  /* Regions were measured on the old frames: detect again. */
  p->have_detect_key = false;
  p->have_prev = false;
  p->incremental.clear ();
  return TRUE;
}

/* ---- tags --------------------------------------------------------------- */

struct TagFilter {
  const privacy::Profile *profile;
  GstTagList *list;
};

static gboolean
gst_privacy_mask_sink_event (GstBaseTransform *trans, GstEvent *event)
{
  GstPrivacyMask *self = GST_PRIVACY_MASK (trans);
  Private *p = self->priv;

  if (GST_EVENT_TYPE (event) == GST_EVENT_TAG) {
    std::shared_ptr<const privacy::ProfileSet> set;
    {
      std::lock_guard<std::mutex> lock (p->config_mutex);
      set = p->profiles;
    }
    GST_OBJECT_LOCK (self);
    std::string name = self->profile;
    GST_OBJECT_UNLOCK (self);
    /* Not started or an unknown profile: strip every tag (fail closed). */
    static const privacy::Profile strip_all = [] {
      privacy::Profile s;
      s.strip_tags = {"*"};
      return s;
    }();
    const privacy::Profile *profile = set ? set->find (name) : nullptr;
    if (!profile)
      profile = &strip_all;
    if (!profile->strip_tags.empty ()) {
      GstTagList *in = nullptr;
      gst_event_parse_tag (event, &in);
      GstTagList *out = gst_tag_list_copy (in);
      GstTagScope scope = gst_tag_list_get_scope (in);
      TagFilter f{profile, out};
      gst_tag_list_foreach (
          in,
          [] (const GstTagList *, const gchar *tag, gpointer data) {
            auto *f = static_cast<TagFilter *> (data);
            if (f->profile->strips_tag (tag))
              gst_tag_list_remove_tag (f->list, tag);
          },
          &f);
      GST_DEBUG_OBJECT (self, "tags %" GST_PTR_FORMAT " -> %" GST_PTR_FORMAT, in, out);
      gst_event_unref (event);
      if (gst_tag_list_is_empty (out)) {
        gst_tag_list_unref (out);
        return TRUE;
      }
      gst_tag_list_set_scope (out, scope);
      event = gst_event_new_tag (out);
    }
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
}

/* ---- frames ------------------------------------------------------------- */

struct Settings {
  std::shared_ptr<const privacy::ProfileSet> profiles;
  const privacy::Profile *profile = nullptr;
  std::string profile_name;
  privacy::MaskMethod method = DEFAULT_METHOD;
  bool fail_closed = true;
  double margin_px = DEFAULT_MARGIN_PX;
  guint detection_interval = DEFAULT_DETECTION_INTERVAL;
  DetectionMode detection_mode = DEFAULT_DETECTION_MODE;
};

static bool
is_planar_yuv (GstVideoFormat f)
{
  return f == GST_VIDEO_FORMAT_I420 || f == GST_VIDEO_FORMAT_NV12;
}

/* Plane p of a mapped frame as a cv::Mat header. */
static cv::Mat
plane (GstVideoFrame *frame, int p)
{
  const GstVideoInfo *info = &frame->info;
  GstVideoFormat f = GST_VIDEO_INFO_FORMAT (info);
  int w = GST_VIDEO_FRAME_COMP_WIDTH (frame, p == 0 ? 0 : 1);
  int h = GST_VIDEO_FRAME_COMP_HEIGHT (frame, p == 0 ? 0 : 1);
  int type = CV_8UC1;
  if (p == 0) {
    int pstride = GST_VIDEO_FRAME_COMP_PSTRIDE (frame, 0);
    type = CV_8UC (is_planar_yuv (f) || f == GST_VIDEO_FORMAT_GRAY8 ? 1 : pstride);
  } else if (f == GST_VIDEO_FORMAT_NV12) {
    type = CV_8UC2;
  }
  return cv::Mat (h, w, type, GST_VIDEO_FRAME_PLANE_DATA (frame, p), GST_VIDEO_FRAME_PLANE_STRIDE (frame, p));
}

/* Fill value of plane p: black, opaque. */
static cv::Scalar
fill_value (GstVideoFormat f, int p)
{
  switch (f) {
  case GST_VIDEO_FORMAT_I420:
    return p == 0 ? cv::Scalar (16) : cv::Scalar (128);
  case GST_VIDEO_FORMAT_NV12:
    return p == 0 ? cv::Scalar (16) : cv::Scalar (128, 128);
  case GST_VIDEO_FORMAT_RGBA:
  case GST_VIDEO_FORMAT_BGRA:
    return cv::Scalar (0, 0, 0, 255);
  default:
    return cv::Scalar (0, 0, 0, 0);
  }
}

static void
blank_frame (GstVideoFrame *frame)
{
  GstVideoFormat f = GST_VIDEO_FRAME_FORMAT (frame);
  for (guint p = 0; p < GST_VIDEO_FRAME_N_PLANES (frame); p++)
    plane (frame, (int)p).setTo (fill_value (f, (int)p));
}

/* The frame as 8-bit RGB (or luma) for the detectors, possibly downscaled;
 * returns the scale of the copy (1: the frame itself). */
static double
detection_image (GstVideoFrame *frame, cv::Mat &work, cv::Mat &out, bool &colour)
{
  GstVideoFormat f = GST_VIDEO_FRAME_FORMAT (frame);
  cv::Mat y = plane (frame, 0);
  colour = true;
  switch (f) {
  case GST_VIDEO_FORMAT_RGB:
  case GST_VIDEO_FORMAT_BGR:
    out = y;
    return 1.0;
  case GST_VIDEO_FORMAT_GRAY8:
    out = y;
    colour = false;
    return 1.0;
  case GST_VIDEO_FORMAT_I420:
  case GST_VIDEO_FORMAT_NV12: {
    /* Chroma resolution, as YUV, then RGB. */
    cv::Mat u, v, half, yuv;
    if (f == GST_VIDEO_FORMAT_I420) {
      u = plane (frame, 1);
      v = plane (frame, 2);
    } else {
      cv::Mat uv[2];
      cv::split (plane (frame, 1), uv);
      u = uv[0];
      v = uv[1];
    }
    cv::resize (y, half, u.size (), 0, 0, cv::INTER_AREA);
    cv::Mat ch[3] = {half, u, v};
    cv::merge (ch, 3, yuv);
    cv::cvtColor (yuv, out, cv::COLOR_YUV2RGB);
    return (double)u.cols / y.cols;
  }
  default: {
    /* 4 bytes per pixel: downscale first, then drop the padding/alpha. */
    double s = privacy::Detector::work_scale (y.size ());
    if (s < 1.0)
      privacy::Detector::shrink (y, work, s);
    else
      work = y;
    const GstVideoFormatInfo *fi = frame->info.finfo;
    int from[6] = {(int)fi->poffset[0], 0, (int)fi->poffset[1], 1, (int)fi->poffset[2], 2};
    out.create (work.size (), CV_8UC3);
    cv::mixChannels (&work, 1, &out, 1, from, 3);
    return s;
  }
  }
}

/* A mapped frame for the incremental detectors: converted to 8-bit RGB (or
 * luma) a rectangle at a time, only where the detectors look. */
class ElementSource : public privacy::FrameSource {
public:
  explicit ElementSource (GstVideoFrame *frame)
      : frame_ (frame), format_ (GST_VIDEO_FRAME_FORMAT (frame)),
        size_ (GST_VIDEO_FRAME_WIDTH (frame), GST_VIDEO_FRAME_HEIGHT (frame))
  {}
  cv::Size size () const override { return size_; }
  bool colour () const override { return format_ != GST_VIDEO_FORMAT_GRAY8; }
  /* 4:2:0 YUV is converted at chroma resolution, 4-byte RGB downscaled to
   * the detection scale before its padding/alpha is dropped. */
  double scale () const override
  {
    if (is_planar_yuv (format_))
      return 0.5;
    if (packed4 ())
      return privacy::Detector::work_scale (size_);
    return 1.0;
  }
  int alignment () const override { return is_planar_yuv (format_) ? 2 : 1; }
  cv::Mat pixels (const cv::Rect &r) override
  {
    cv::Mat y = plane (frame_, 0);
    if (!is_planar_yuv (format_) && !packed4 ())
      return y (r); /* RGB, BGR, GRAY8: the frame itself */
    cv::Mat out;
    if (is_planar_yuv (format_)) {
      cv::Mat u, v, half, yuv;
      cv::Mat c1 = plane (frame_, 1);
      const cv::Rect c = cv::Rect (r.x / 2, r.y / 2, (r.width + 1) / 2, (r.height + 1) / 2)
                         & cv::Rect (0, 0, c1.cols, c1.rows);
      if (format_ == GST_VIDEO_FORMAT_I420) {
        u = c1 (c);
        v = plane (frame_, 2) (c);
      } else {
        cv::Mat uv[2];
        cv::split (c1 (c), uv);
        u = uv[0];
        v = uv[1];
      }
      cv::resize (y (r), half, c.size (), 0, 0, cv::INTER_AREA);
      cv::Mat ch[3] = {half, u, v};
      cv::merge (ch, 3, yuv);
      cv::cvtColor (yuv, out, cv::COLOR_YUV2RGB);
      return out;
    }
    const double s = scale ();
    cv::Mat small;
    if (s < 1.0)
      privacy::Detector::shrink (y (r), small, s);
    else
      small = y (r);
    const GstVideoFormatInfo *fi = frame_->info.finfo;
    int from[6] = {(int)fi->poffset[0], 0, (int)fi->poffset[1], 1, (int)fi->poffset[2], 2};
    out.create (small.size (), CV_8UC3);
    cv::mixChannels (&small, 1, &out, 1, from, 3);
    return out;
  }

private:
  bool packed4 () const { return GST_VIDEO_FRAME_COMP_PSTRIDE (frame_, 0) == 4 && !is_planar_yuv (format_); }
  GstVideoFrame *frame_;
  GstVideoFormat format_;
  cv::Size size_;
};

/* Hides the rasterised mask in every plane. */
static void
apply_to_frame (GstVideoFrame *frame, Private *p, const cv::Rect &roi, privacy::MaskMethod method)
{
  if (roi.empty ())
    return;
  GstVideoFormat f = GST_VIDEO_FRAME_FORMAT (frame);
  cv::Mat y = plane (frame, 0);
  privacy::apply_mask (y, p->mask, roi, method, fill_value (f, 0), kBlockPx);
  for (guint i = 1; i < GST_VIDEO_FRAME_N_PLANES (frame); i++) {
    cv::Mat c = plane (frame, (int)i);
    /* A chroma sample is hidden when any luma pixel it covers is. */
    cv::resize (p->mask, p->chroma_mask, c.size (), 0, 0, cv::INTER_AREA);
    cv::threshold (p->chroma_mask, p->chroma_mask, 0, 255, cv::THRESH_BINARY);
    double sx = (double)c.cols / y.cols, sy = (double)c.rows / y.rows;
    cv::Rect croi (cv::Point ((int)std::floor (roi.x * sx), (int)std::floor (roi.y * sy)),
                   cv::Point ((int)std::ceil (roi.br ().x * sx), (int)std::ceil (roi.br ().y * sy)));
    croi &= cv::Rect (0, 0, c.cols, c.rows);
    privacy::apply_mask (c, p->chroma_mask, croi, method, fill_value (f, (int)i),
                         std::max (1, (int)(kBlockPx * sx)));
  }
}

static void
post_regions (GstPrivacyMask *self, GstBuffer *buf, const std::string &profile)
{
  Private *p = self->priv;
  GstBaseTransform *trans = GST_BASE_TRANSFORM (self);
  GstClockTime ts = GST_BUFFER_PTS (buf);
  GstClockTime stream_time = gst_segment_to_stream_time (&trans->segment, GST_FORMAT_TIME, ts);
  GstClockTime running_time = gst_segment_to_running_time (&trans->segment, GST_FORMAT_TIME, ts);
  GValue list = G_VALUE_INIT;
  g_value_init (&list, GST_TYPE_LIST);
  std::string json;
  {
    std::lock_guard<std::mutex> lock (p->memory_mutex);
    for (const auto &r : p->memory.regions ()) {
      GValue v = G_VALUE_INIT;
      g_value_init (&v, GST_TYPE_STRUCTURE);
      GstStructure *s = gst_structure_new (
          "region", "class", G_TYPE_STRING, privacy::region_class_name (r.region_class), "x-um",
          G_TYPE_DOUBLE, r.rect_um.x, "y-um", G_TYPE_DOUBLE, r.rect_um.y, "width-um", G_TYPE_DOUBLE,
          r.rect_um.width, "height-um", G_TYPE_DOUBLE, r.rect_um.height, "first-frame", G_TYPE_UINT64,
          (guint64)r.first_frame, "hits", G_TYPE_UINT64, (guint64)r.hits, nullptr);
      gst_value_set_structure (&v, s);
      gst_structure_free (s);
      gst_value_list_append_and_take_value (&list, &v);
    }
    json = p->memory.to_json ();
  }
  GstStructure *s
      = gst_structure_new ("privacymask", "timestamp", G_TYPE_UINT64, ts, "stream-time", G_TYPE_UINT64,
                           stream_time, "running-time", G_TYPE_UINT64, running_time, "profile", G_TYPE_STRING,
                           profile.c_str (), "regions-json", G_TYPE_STRING, json.c_str (), nullptr);
  gst_structure_take_value (s, "regions", &list);
  gst_element_post_message (GST_ELEMENT (self), gst_message_new_element (GST_OBJECT (self), s));
}

/* Blanks the frame; warns once each time the reason changes. */
static void
blank (GstPrivacyMask *self, GstVideoFrame *frame, const std::string &reason)
{
  Private *p = self->priv;
  blank_frame (frame);
  GST_OBJECT_LOCK (self);
  self->blanked_frames++;
  GST_OBJECT_UNLOCK (self);
  if (reason != p->last_blank_reason) {
    GST_ELEMENT_WARNING (self, STREAM, FAILED, ("%s: the whole frame is blanked", reason.c_str ()),
                         ("frame %" G_GUINT64_FORMAT, p->frames));
    p->last_blank_reason = reason;
  }
}

static bool
same_view (const livemicro::hw::FrameRecord &a, const livemicro::hw::FrameRecord &b)
{
  return a.frame_width == b.frame_width && a.frame_height == b.frame_height && a.um_per_px == b.um_per_px
         && std::abs (a.stage_x_um - b.stage_x_um) < 0.25 * a.um_per_px
         && std::abs (a.stage_y_um - b.stage_y_um) < 0.25 * a.um_per_px && a.stage_z_um == b.stage_z_um;
}

/* Removes the metas the profile may not see; StageMeta follows its policy
 * later; GstVideoMeta and GstVideoCropMeta (the memory layout and the part
 * to show; the mask covers the whole buffer anyway) always stay. */
static void
strip_metas (GstBuffer *buf, const privacy::Profile &profile)
{
  if (profile.strip_metas.empty ())
    return;
  gst_buffer_foreach_meta (
      buf,
      [] (GstBuffer *, GstMeta **meta, gpointer data) -> gboolean {
        const auto *profile = static_cast<const privacy::Profile *> (data);
        GType api = (*meta)->info->api;
        if (api == GST_VIDEO_META_API_TYPE || api == GST_VIDEO_CROP_META_API_TYPE
            || api == LIVEMICRO_STAGE_META_API_TYPE)
          return TRUE;
        if (profile->strips_meta (g_type_name (api)))
          *meta = nullptr;
        return TRUE;
      },
      const_cast<privacy::Profile *> (&profile));
}

static void
apply_stage_policy (GstBuffer *buf, privacy::StageMetaPolicy policy)
{
  LivemicroStageMeta *m = livemicro_buffer_get_stage_meta (buf);
  if (!m)
    return;
  switch (policy) {
  case privacy::StageMetaPolicy::kKeep:
    break;
  case privacy::StageMetaPolicy::kGeometry:
    m->capture_unix_us = 0;
    m->frame_number = 0;
    break;
  case privacy::StageMetaPolicy::kRemove:
    gst_buffer_remove_meta (buf, (GstMeta *)m);
    break;
  }
}

/* One frame being masked: where it shows the slide (its StageMeta), and the
 * mask so far. */
struct MaskJob {
  GstVideoFrame *frame;
  const Settings &st;
  livemicro::hw::FrameRecord g;
  cv::Size size;
  double margin = 0;
  cv::Rect roi;
  bool have_mask = false;
};

/* The frame's geometry from its StageMeta; "" or why it cannot be masked. */
static std::string
read_geometry (GstPrivacyMask *self, MaskJob &job)
{
  Private *p = self->priv;
  const LivemicroStageMeta *meta = livemicro_buffer_get_stage_meta (job.frame->buffer);
  if (!meta)
    return "no StageMeta on the buffer (profile '" + job.st.profile_name
           + "' masks in slide coordinates and needs the stage position of every frame)";
  const livemicro::hw::FrameRecord &g = job.g = livemicro::frame_record_of (*meta);
  if (!privacy::places_frame (g))
    return "invalid StageMeta (" + std::to_string (meta->um_per_px) + " µm per pixel, "
           + std::to_string (meta->frame_width) + "x" + std::to_string (meta->frame_height) + " frame)";
  if (g.frame_width != job.size.width || g.frame_height != job.size.height) {
    std::string why = p->caps_change.empty () ? "" : " (" + p->caps_change + ")";
    return "the frame is " + std::to_string (job.size.width) + "x" + std::to_string (job.size.height)
           + " but its StageMeta describes a " + std::to_string (g.frame_width) + "x"
           + std::to_string (g.frame_height) + " frame" + why;
  }
  p->caps_change.clear ();
  return "";
}

/* Safety margin: the configured one, plus the distance the view travelled
 * since the previous frame when the stage is moving (the exposure may smear
 * over it). */
static double
safety_margin (Private *p, const MaskJob &job)
{
  const livemicro::hw::FrameRecord &g = job.g;
  double margin = job.st.margin_px;
  if (g.moving) {
    double travel = kMovingFallbackPx;
    if (p->have_prev && p->prev_geometry.um_per_px == g.um_per_px)
      travel = std::hypot (g.stage_x_um - p->prev_geometry.stage_x_um,
                           g.stage_y_um - p->prev_geometry.stage_y_um)
               / g.um_per_px;
    margin += std::min (travel, (double)std::max (job.size.width, job.size.height));
  }
  p->prev_geometry = g;
  p->have_prev = true;
  return margin;
}

/* Everything to hide, rasterised into p->mask in frame pixels: the
 * profile's slide regions and the regions found so far.  Returns the mask's
 * bounding box. */
static cv::Rect
hide_regions (Private *p, const MaskJob &job)
{
  const livemicro::hw::FrameRecord &g = job.g;
  const privacy::Profile &profile = *job.st.profile;
  const double margin = job.margin;
  const cv::Rect2d view (-margin - 2, -margin - 2, job.size.width + 2 * margin + 4,
                         job.size.height + 2 * margin + 4);
  std::vector<privacy::FramePolygon> polys;
  auto add = [&] (const std::vector<cv::Point2d> &poly_um, const cv::Rect2d &bounds_um) {
    cv::Point2d a = privacy::to_frame (g, bounds_um.tl ()), z = privacy::to_frame (g, bounds_um.br ());
    if ((cv::Rect2d (a, z) & view).empty () && !cv::Rect2d (a, z).contains (view.tl ()))
      return;
    privacy::FramePolygon fp;
    for (const auto &pt : poly_um)
      fp.points.push_back (privacy::to_frame (g, pt));
    polys.push_back (std::move (fp));
  };
  for (const privacy::SlideRegion *r : job.st.profiles->regions_for (profile))
    add (r->polygon_um, r->bounds_um ());
  std::lock_guard<std::mutex> lock (p->memory_mutex);
  for (const auto &r : p->memory.regions ())
    if (profile.detects (r.region_class)) {
      const cv::Rect2d &b = r.rect_um;
      add ({b.tl (), {b.x + b.width, b.y}, b.br (), {b.x, b.y + b.height}}, b);
    }
  return privacy::rasterise (polys, margin, job.size, p->mask);
}

/* incremental: every frame, where the view shows slide area not checked
 * recently and not masked anyway (so the mask comes first).  Sets `found`;
 * "" or why it failed. */
static std::string
detect_incremental (GstPrivacyMask *self, MaskJob &job, std::vector<privacy::Detection> &found)
{
  Private *p = self->priv;
  try {
    job.roi = hide_regions (p, job);
    job.have_mask = true;
  } catch (const std::exception &e) {
    return std::string ("masking failed: ") + e.what ();
  }
  ElementSource source (job.frame);
  privacy::IncrementalStats stats;
  try {
    found = p->incremental.detect (source, job.g, job.st.profile->detect, p->mask, job.roi, p->frames,
                                   job.st.detection_interval, &stats);
  } catch (const std::exception &e) {
    return std::string ("detection failed: ") + e.what ();
  }
  GST_LOG_OBJECT (self,
                  "frame %" G_GUINT64_FORMAT ": cells %d (fresh %d, hidden %d, checked %d), "
                  "%d rectangles, %.0f px, %d candidates, %d QR and %d barcode searches",
                  p->frames, stats.cells_visible, stats.cells_fresh, stats.cells_hidden, stats.cells_to_check,
                  stats.rects, stats.analysed_px, stats.screen.candidates, stats.screen.qr_runs,
                  stats.screen.barcode_runs);
  return "";
}

/* full-frame: the whole frame on every frame whose view changed, else every
 * N frames.  Sets `detected` and `found`; "" or why it failed. */
static std::string
detect_full_frame (Private *p, MaskJob &job, bool &detected, std::vector<privacy::Detection> &found)
{
  bool due = !p->have_detect_key || job.g.moving || !same_view (job.g, p->detect_geometry)
             || p->frames_since_detection + 1 >= job.st.detection_interval;
  if (!due) {
    p->frames_since_detection++;
    return "";
  }
  bool colour = true;
  cv::Mat img;
  try {
    double s = detection_image (job.frame, p->work, img, colour);
    found = p->detector.detect (img, job.st.profile->detect, colour, s);
  } catch (const std::exception &e) {
    p->have_detect_key = false;
    return std::string ("detection failed: ") + e.what ();
  }
  detected = true;
  p->detect_geometry = job.g;
  p->have_detect_key = true;
  p->frames_since_detection = 0;
  return "";
}

/* Detection by the profile's detectors, remembered in slide coordinates;
 * sets `memory_changed` when a region is new.  "" or why it failed. */
static std::string
detect_regions (GstPrivacyMask *self, MaskJob &job, bool &memory_changed)
{
  Private *p = self->priv;
  if (job.st.profile->detect.empty ())
    return "";
  std::vector<privacy::Detection> found;
  bool detected = false;
  std::string why;
  if (job.st.detection_mode == DetectionMode::kIncremental) {
    why = detect_incremental (self, job, found);
    detected = why.empty ();
  } else {
    why = detect_full_frame (p, job, detected, found);
  }
  if (!why.empty () || !detected)
    return why;
  std::lock_guard<std::mutex> lock (p->memory_mutex);
  for (const auto &d : found) {
    cv::Rect2d b = d.bounds_px ();
    cv::Point2d a = privacy::to_slide (job.g, b.tl ()), z = privacy::to_slide (job.g, b.br ());
    memory_changed |= p->memory.remember (d.region_class, cv::Rect2d (a, z), p->frames);
  }
  return "";
}

/* Computes and applies the mask; returns "" or why it could not. */
static std::string
mask_frame (GstPrivacyMask *self, GstVideoFrame *frame, const Settings &st)
{
  Private *p = self->priv;
  MaskJob job{frame, st};
  job.size = cv::Size (GST_VIDEO_FRAME_WIDTH (frame), GST_VIDEO_FRAME_HEIGHT (frame));
  std::string why = read_geometry (self, job);
  if (!why.empty ())
    return why;
  job.margin = safety_margin (p, job);
  bool memory_changed = false;
  why = detect_regions (self, job, memory_changed);
  if (!why.empty ())
    return why;
  try {
    if (!job.have_mask || memory_changed)
      job.roi = hide_regions (p, job);
    apply_to_frame (frame, p, job.roi, st.method);
  } catch (const std::exception &e) {
    return std::string ("masking failed: ") + e.what ();
  }
  if (memory_changed)
    post_regions (self, frame->buffer, st.profile_name);
  return "";
}

static GstFlowReturn
gst_privacy_mask_transform_frame_ip (GstVideoFilter *filter, GstVideoFrame *frame)
{
  GstPrivacyMask *self = GST_PRIVACY_MASK (filter);
  Private *p = self->priv;

  Settings st;
  {
    std::lock_guard<std::mutex> lock (p->config_mutex);
    st.profiles = p->profiles;
  }
  GST_OBJECT_LOCK (self);
  st.profile_name = self->profile;
  st.method = self->method;
  st.fail_closed = self->fail_closed;
  st.margin_px = self->margin_px;
  st.detection_interval = self->detection_interval;
  st.detection_mode = self->detection_mode;
  GST_OBJECT_UNLOCK (self);

  std::string reason;
  try {
    st.profile = st.profiles ? st.profiles->find (st.profile_name) : nullptr;
    if (!st.profile) {
      reason = "profile '" + st.profile_name + "' is not loaded";
    } else {
      strip_metas (frame->buffer, *st.profile);
      if (st.profile->masks_anything ())
        reason = mask_frame (self, frame, st);
    }
  } catch (const std::exception &e) {
    reason = std::string ("unexpected error: ") + e.what ();
  }
  if (!reason.empty ()) {
    /* Only a profile that masks nothing may fail open, and it never gets
     * here with a mask to compute. */
    if (st.fail_closed || !st.profile || st.profile->masks_anything ())
      blank (self, frame, reason);
  } else {
    p->last_blank_reason.clear ();
  }
  if (st.profile) {
    apply_stage_policy (frame->buffer, st.profile->stage_meta);
  } else {
    /* No profile: nothing of the buffer's metadata may pass either. */
    static const privacy::Profile strip_all = [] {
      privacy::Profile s;
      s.strip_metas = {"*"};
      return s;
    }();
    strip_metas (frame->buffer, strip_all);
    apply_stage_policy (frame->buffer, privacy::StageMetaPolicy::kRemove);
  }
  p->frames++;
  return GST_FLOW_OK;
}

/* ---- class -------------------------------------------------------------- */

static void
gst_privacy_mask_finalize (GObject *object)
{
  GstPrivacyMask *self = GST_PRIVACY_MASK (object);
  g_free (self->profile);
  g_free (self->profiles_location);
  delete self->priv;
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

/* Long by nature: one g_param_spec per property, each with its blurb, range
 * and default, in the order gst-inspect-1.0 shows them. */
static void
gst_privacy_mask_class_init (GstPrivacyMaskClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  GstVideoFilterClass *filter_class = GST_VIDEO_FILTER_CLASS (klass);
  const auto rw = static_cast<GParamFlags> (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
  const auto rw_playing = static_cast<GParamFlags> (rw | GST_PARAM_MUTABLE_PLAYING);
  const auto ro = static_cast<GParamFlags> (G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);

  gobject_class->set_property = gst_privacy_mask_set_property;
  gobject_class->get_property = gst_privacy_mask_get_property;
  gobject_class->finalize = gst_privacy_mask_finalize;

  g_object_class_install_property (
      gobject_class, PROP_PROFILE,
      g_param_spec_string ("profile", "View profile",
                           "Who watches this view: a profile name from profiles-location, or built in: "
                           "owner (nothing masked), consultant and trainee (slide label masked), guest "
                           "(label, QR codes, barcodes, any printed text and patient metadata removed). "
                           "An unknown name is an error at start; while playing it is refused with a "
                           "warning and the view keeps its profile",
                           DEFAULT_PROFILE, rw_playing));
  g_object_class_install_property (
      gobject_class, PROP_PROFILES_LOCATION,
      g_param_spec_string (
          "profiles-location", "Profiles file",
          "JSON file with the view profiles and slide regions (format in docs/privacy.md, example "
          "in pipelines/profiles.json); NULL = the built-in profiles. A malformed file is an "
          "error at start naming the file, line and field",
          nullptr, static_cast<GParamFlags> (rw | GST_PARAM_MUTABLE_READY)));
  g_object_class_install_property (
      gobject_class, PROP_METHOD,
      g_param_spec_enum ("method", "Method",
                         "How masked areas are hidden: fill (solid black, default) is the only method safe "
                         "for text and codes; pixelate and blur keep shapes and can be read or undone",
                         GST_TYPE_PRIVACY_MASK_METHOD, (gint)DEFAULT_METHOD, rw_playing));
  g_object_class_install_property (
      gobject_class, PROP_FAIL_CLOSED,
      g_param_spec_boolean (
          "fail-closed", "Fail closed",
          "Blank the whole frame when the mask cannot be computed (no or invalid StageMeta, a "
          "detector failure, caps that no longer match the StageMeta). FALSE is accepted only "
          "with a profile that masks nothing (owner); any other profile refuses it",
          DEFAULT_FAIL_CLOSED, rw_playing));
  g_object_class_install_property (
      gobject_class, PROP_MARGIN_PX,
      g_param_spec_uint ("margin-px", "Margin (px)",
                         "Extra frame pixels hidden around every region (at least 1); a moving stage adds "
                         "the distance travelled since the previous frame",
                         1, MAX_MARGIN_PX, DEFAULT_MARGIN_PX, rw_playing));
  g_object_class_install_property (
      gobject_class, PROP_DETECTION_INTERVAL,
      g_param_spec_uint ("detection-interval", "Detection interval",
                         "How long, in frames, slide area found clear by the detectors (text, QR, barcode) "
                         "is trusted before it is checked again: area a frame shows for the first time is "
                         "always checked in that frame, and a still view is checked again as a whole every "
                         "N frames (this catches a change the StageMeta does not show, such as a slide "
                         "swapped). With detection-mode=full-frame: the whole frame every N frames while "
                         "the view is still, every frame while it moves. 1 = every frame",
                         1, MAX_DETECTION_INTERVAL, DEFAULT_DETECTION_INTERVAL, rw_playing));
  g_object_class_install_property (
      gobject_class, PROP_DETECTION_MODE,
      g_param_spec_enum ("detection-mode", "Detection mode",
                         "Where the detectors look. incremental: only where the frame shows slide area not "
                         "checked in the last detection-interval frames at this objective and focus, never "
                         "inside what is masked anyway (the slide label, regions found), with the QR and "
                         "barcode searches only on print-like marks (a few ms per moving 1080p frame); "
                         "full-frame: every detector on the whole frame (~40 ms per 1080p frame; for a "
                         "StageMeta that does not follow the slide, e.g. a manual stage, and as the "
                         "benchmark's baseline)",
                         GST_TYPE_PRIVACY_MASK_DETECTION_MODE, (gint)DEFAULT_DETECTION_MODE, rw_playing));
  g_object_class_install_property (
      gobject_class, PROP_REGIONS,
      g_param_spec_string (
          "regions", "Detected regions",
          "Regions found so far and remembered in slide coordinates, as a JSON array of "
          "{class, x_um, y_um, width_um, height_um, first_frame, hits}; also posted as a "
          "'privacymask' element message whenever it changes. Cleared when the element stops",
          "[]", ro));
  g_object_class_install_property (
      gobject_class, PROP_BLANKED_FRAMES,
      g_param_spec_uint64 ("blanked-frames", "Blanked frames",
                           "Frames blanked entirely since start because the mask could not be computed", 0,
                           G_MAXUINT64, 0, ro));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (
      element_class, "Privacy mask", "Filter/Effect/Video",
      "Masks slide labels and patient data in slide coordinates and strips what a view "
      "profile may not see",
      "LiveMicro");

  trans_class->start = gst_privacy_mask_start;
  trans_class->stop = gst_privacy_mask_stop;
  trans_class->sink_event = gst_privacy_mask_sink_event;
  filter_class->set_info = gst_privacy_mask_set_info;
  filter_class->transform_frame_ip = gst_privacy_mask_transform_frame_ip;

  gst_type_mark_as_plugin_api (GST_TYPE_PRIVACY_MASK_METHOD, (GstPluginAPIFlags)0);
  gst_type_mark_as_plugin_api (GST_TYPE_PRIVACY_MASK_DETECTION_MODE, (GstPluginAPIFlags)0);
}

static void
gst_privacy_mask_init (GstPrivacyMask *self)
{
  self->priv = new Private ();
  self->profile = g_strdup (DEFAULT_PROFILE);
  self->profiles_location = nullptr;
  self->method = DEFAULT_METHOD;
  self->fail_closed = DEFAULT_FAIL_CLOSED;
  self->margin_px = DEFAULT_MARGIN_PX;
  self->detection_interval = DEFAULT_DETECTION_INTERVAL;
  self->detection_mode = DEFAULT_DETECTION_MODE;
  self->blanked_frames = 0;
  gst_base_transform_set_in_place (GST_BASE_TRANSFORM (self), TRUE);
}
