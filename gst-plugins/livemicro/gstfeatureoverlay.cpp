/**
 * SECTION:element-featureoverlay
 * @title: featureoverlay
 *
 * Draws what a #LivemicroFeaturesMeta says onto the video: nucleus contours
 * coloured by a chosen feature (mitotic-figure candidates in magenta), a
 * summary panel, and a nuclear density heat map; each part can be switched
 * on and off while playing.  Frames without FeaturesMeta pass unchanged.
 * It is separate from tumorfeatures so that each view decides what it shows.
 *
 * A result is drawn in slide coordinates: the outlines and the heat map of a
 * result computed on an earlier frame are moved by the stage delta between
 * that frame and this one and rescaled with µm/px (both from #LivemicroStageMeta),
 * and what falls outside is dropped.  Nothing is drawn when they cannot be
 * placed: another objective or µm/px, focus moved beyond the focus
 * tolerance, stage moving, no StageMeta, a result older than max-age.  The
 * read-only #GstFeatureOverlay:state says what the viewer sees, and every
 * change of it is posted as an element message named "featureoverlay".
 *
 * |[
 * gst-launch-1.0 microscopesrc objective=40 ! tumorfeatures ! \
 *     featureoverlay color-by=circularity heatmap=true ! videoconvert ! autovideosink
 * ]|
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstfeatureoverlay.h"
#include "rgbformats.h"

#include <livemicro/analysis/overlay.h>
#include <livemicro/featuresmeta.h>
#include <livemicro/stagemeta.h>

#include <gst/video/video.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <deque>
#include <optional>
#include <string>
#include <vector>

GST_DEBUG_CATEGORY_STATIC (gst_feature_overlay_debug);
#define GST_CAT_DEFAULT gst_feature_overlay_debug

typedef enum {
  COLOR_BY_AREA,
  COLOR_BY_CIRCULARITY,
  COLOR_BY_ELONGATION,
  COLOR_BY_SOLIDITY,
  COLOR_BY_HEMATOXYLIN,
  COLOR_BY_NONE,
} ColorBy;

#define DEFAULT_CONTOURS TRUE
#define DEFAULT_SUMMARY TRUE
#define DEFAULT_HEATMAP FALSE
#define DEFAULT_COLOR_BY COLOR_BY_AREA
#define DEFAULT_HEATMAP_OPACITY 0.4
#define DEFAULT_LINE_WIDTH 0
/* A result is at most two analyses old on a loaded node (0.2-4.5 s each). */
#define DEFAULT_MAX_AGE (10 * GST_SECOND)
#define MAX_MAX_AGE (3600 * GST_SECOND)
#define DEFAULT_FOCUS_TOLERANCE 0.0
#define DEFAULT_STATE GST_FEATURE_OVERLAY_STATE_NONE

enum {
  PROP_0,
  PROP_CONTOURS,
  PROP_SUMMARY,
  PROP_HEATMAP,
  PROP_COLOR_BY,
  PROP_HEATMAP_OPACITY,
  PROP_LINE_WIDTH,
  PROP_MAX_AGE,
  PROP_FOCUS_TOLERANCE,
  PROP_STATE,
};

namespace an = livemicro::analysis;

/* A result whose field covers at least this share of the frame is this
 * field's result (a stage jitter of a pixel or two is not a new field). */
static const double kCurrentCoverage = 0.98;

/* The value range each feature's colour scale spans (low → blue, high → red). */
struct FeatureScale {
  const char *label;
  double lo, hi;
};
static const FeatureScale kScales[] = {
    {"area um2", 10.0, 80.0}, {"circularity", 0.5, 1.0}, {"elongation", 1.0, 3.0},
    {"solidity", 0.7, 1.0},   {"H OD", 0.1, 0.8},
};
/* Nuclei per mm² of the heat map's full colour. */
static const double kHeatmapFullDensity = 10000.0;

GType
gst_feature_overlay_color_by_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {{COLOR_BY_AREA, "Nuclear area (10-80 µm²)", "area"},
                                      {COLOR_BY_CIRCULARITY, "Circularity (0.5-1)", "circularity"},
                                      {COLOR_BY_ELONGATION, "Elongation (1-3)", "elongation"},
                                      {COLOR_BY_SOLIDITY, "Solidity (0.7-1)", "solidity"},
                                      {COLOR_BY_HEMATOXYLIN, "Mean hematoxylin OD (0.1-0.8)", "hematoxylin"},
                                      {COLOR_BY_NONE, "One colour (green)", "none"},
                                      {0, nullptr, nullptr}};
  if (g_once_init_enter (&type))
    g_once_init_leave (&type, g_enum_register_static ("GstFeatureOverlayColorBy", values));
  return type;
}

GType
gst_feature_overlay_state_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[]
      = {{GST_FEATURE_OVERLAY_STATE_NONE, "No analysis result on the frames", "none"},
         {GST_FEATURE_OVERLAY_STATE_CURRENT, "The result is of the field in view: drawn", "current"},
         {GST_FEATURE_OVERLAY_STATE_MOVED,
          "The stage moved since the analysis: the result is drawn where its field "
          "overlaps the view; the new field's analysis is pending",
          "moved"},
         {GST_FEATURE_OVERLAY_STATE_UPDATING,
          "The result cannot be placed on the view (objective, µm/px, focus, moving, "
          "age, ...): nothing drawn until the next analysis",
          "updating"},
         {0, nullptr, nullptr}};
  if (g_once_init_enter (&type))
    g_once_init_leave (&type, g_enum_register_static ("GstFeatureOverlayState", values));
  return type;
}

struct _GstFeatureOverlay {
  GstVideoFilter parent;

  /* properties, under the object lock */
  gboolean contours, summary, heatmap;
  ColorBy color_by;
  gdouble heatmap_opacity;
  gint line_width;
  guint64 max_age;
  gdouble focus_tolerance;

  /* what the viewer sees, under the object lock */
  GstFeatureOverlayState state;

  /* format, set in set_info */
  int channels;
  std::array<int, 3> rgb;

  /* streaming thread only */
  struct OverlayPrivate *priv;
};

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE (
    "sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE (LIVEMICRO_RGB_FORMATS)));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE (
    "src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE (LIVEMICRO_RGB_FORMATS)));

#define gst_feature_overlay_parent_class parent_class
G_DEFINE_TYPE_WITH_CODE (GstFeatureOverlay, gst_feature_overlay, GST_TYPE_VIDEO_FILTER,
                         GST_DEBUG_CATEGORY_INIT (gst_feature_overlay_debug, "featureoverlay", 0,
                                                  "LiveMicro feature overlay"));
GST_ELEMENT_REGISTER_DEFINE (featureoverlay, "featureoverlay", GST_RANK_NONE, GST_TYPE_FEATURE_OVERLAY);

static void
gst_feature_overlay_set_property (GObject *object, guint prop_id, const GValue *value, GParamSpec *pspec)
{
  GstFeatureOverlay *self = GST_FEATURE_OVERLAY (object);
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
  case PROP_CONTOURS:
    self->contours = g_value_get_boolean (value);
    break;
  case PROP_SUMMARY:
    self->summary = g_value_get_boolean (value);
    break;
  case PROP_HEATMAP:
    self->heatmap = g_value_get_boolean (value);
    break;
  case PROP_COLOR_BY:
    self->color_by = (ColorBy)g_value_get_enum (value);
    break;
  case PROP_HEATMAP_OPACITY:
    self->heatmap_opacity = g_value_get_double (value);
    break;
  case PROP_LINE_WIDTH:
    self->line_width = g_value_get_int (value);
    break;
  case PROP_MAX_AGE:
    self->max_age = g_value_get_uint64 (value);
    break;
  case PROP_FOCUS_TOLERANCE:
    self->focus_tolerance = g_value_get_double (value);
    break;
  default:
    G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_feature_overlay_get_property (GObject *object, guint prop_id, GValue *value, GParamSpec *pspec)
{
  GstFeatureOverlay *self = GST_FEATURE_OVERLAY (object);
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
  case PROP_CONTOURS:
    g_value_set_boolean (value, self->contours);
    break;
  case PROP_SUMMARY:
    g_value_set_boolean (value, self->summary);
    break;
  case PROP_HEATMAP:
    g_value_set_boolean (value, self->heatmap);
    break;
  case PROP_COLOR_BY:
    g_value_set_enum (value, self->color_by);
    break;
  case PROP_HEATMAP_OPACITY:
    g_value_set_double (value, self->heatmap_opacity);
    break;
  case PROP_LINE_WIDTH:
    g_value_set_int (value, self->line_width);
    break;
  case PROP_MAX_AGE:
    g_value_set_uint64 (value, self->max_age);
    break;
  case PROP_FOCUS_TOLERANCE:
    g_value_set_double (value, self->focus_tolerance);
    break;
  case PROP_STATE:
    g_value_set_enum (value, self->state);
    break;
  default:
    G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    break;
  }
  GST_OBJECT_UNLOCK (self);
}

static gboolean
gst_feature_overlay_set_info (GstVideoFilter *filter, GstCaps *incaps, GstVideoInfo *in_info,
                              GstCaps *outcaps, GstVideoInfo *out_info)
{
  GstFeatureOverlay *self = GST_FEATURE_OVERLAY (filter);
  if (!livemicro::rgb_layout (GST_VIDEO_INFO_FORMAT (in_info), self->channels, self->rgb)) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
                       ("featureoverlay draws on packed RGB video (%s), not %s: put videoconvert "
                        "in front of it",
                        LIVEMICRO_RGB_FORMATS, gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (in_info))),
                       ("caps %" GST_PTR_FORMAT, incaps));
    return FALSE;
  }
  return TRUE;
}

static void forget_seen_frames (GstFeatureOverlay *self);

/* Caps with another format than packed RGB: a clear error (the pads accept
 * any raw video so that such caps arrive here, see rgbformats.h). */
static gboolean
gst_feature_overlay_sink_event (GstBaseTransform *trans, GstEvent *event)
{
  if (livemicro::refuse_non_rgb_caps (trans, event, "featureoverlay draws on")) {
    gst_event_unref (event);
    return FALSE;
  }
  /* After a seek the frames seen before are another place and time. */
  if (GST_EVENT_TYPE (event) == GST_EVENT_FLUSH_STOP)
    forget_seen_frames (GST_FEATURE_OVERLAY (trans));
  return GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
}

namespace {

/* Blue → cyan → green → yellow → red for t in [0, 1], as (R, G, B).  The
 * 256 colours are computed once: building OpenCV's colour map per nucleus
 * cost ~0.1 ms each, most of a frame with thousands of nuclei. */
cv::Vec3b
ramp (double t)
{
  static const std::array<cv::Vec3b, 256> lut = [] {
    std::array<cv::Vec3b, 256> l;
    cv::Mat all (1, 256, CV_8U);
    for (int v = 0; v < 256; v++)
      all.at<uchar> (0, v) = (uchar)v;
    cv::Mat bgr;
    cv::applyColorMap (all, bgr, cv::COLORMAP_JET);
    for (int v = 0; v < 256; v++) {
      cv::Vec3b c = bgr.at<cv::Vec3b> (0, v);
      l[v] = cv::Vec3b (c[2], c[1], c[0]);
    }
    return l;
  }();
  t = std::clamp (t, 0.0, 1.0);
  return lut[(int)std::lround (t * 255)];
}

struct Painter {
  cv::Mat img;
  int channels;
  std::array<int, 3> rgb;
  cv::Scalar color (cv::Vec3b c) const
  {
    cv::Scalar s (255, 255, 255, 255);
    for (int k = 0; k < 3; k++)
      s[rgb[k]] = c[k];
    return s;
  }
};

std::string
fmt (const char *f, double v)
{
  if (!std::isfinite (v))
    return "-";
  char b[64];
  std::snprintf (b, sizeof b, f, v);
  return b;
}

/* Tints the frame by nuclear density around each pixel, where the result's
 * field overlaps the frame.  The density is per mm² of the area the analysis
 * saw under the window, so it fades where the nuclei stop (the tissue ends),
 * not at the edges of the frame or of the analysed field. */
void
draw_heatmap (Painter &p, const LivemicroFeaturesMeta *m, const an::Placement &pl, double um_per_px,
              double opacity)
{
  std::vector<cv::Point2d> centroids;
  centroids.reserve (m->n_nuclei);
  for (guint k = 0; k < m->n_nuclei; k++)
    centroids.push_back (pl.map (cv::Point2d (m->nuclei[k].x_px, m->nuclei[k].y_px)));
  const cv::Mat density
      = an::nuclear_density_per_mm2 (centroids, pl.field_px, p.img.size (), um_per_px > 0 ? um_per_px : 1.0);
  cv::Vec3b lut[256];
  for (int v = 0; v < 256; v++)
    lut[v] = ramp (v / 255.0);
  for (int j = 0; j < p.img.rows; j++) {
    uchar *row = p.img.ptr<uchar> (j);
    const float *d = density.ptr<float> (j);
    for (int i = 0; i < p.img.cols; i++) {
      // NaN (not observed) fails the comparison and is left untinted.
      if (!(d[i] > 0.02f * kHeatmapFullDensity))
        continue;
      float t = std::min (1.0f, (float)(d[i] / kHeatmapFullDensity));
      const cv::Vec3b &c = lut[(int)(t * 255)];
      float a = (float)opacity * std::min (1.0f, t * 3.0f);
      uchar *px = row + i * p.channels;
      for (int k = 0; k < 3; k++)
        px[p.rgb[k]] = (uchar)(px[p.rgb[k]] * (1 - a) + c[k] * a);
    }
  }
}

/* Calls fn (points, colour, thickness) for each nucleus outline, placed on
 * the frame drawn on, in drawing order.  An outline the analysed frame's
 * edge cut is left out where that edge is inside the view now: it would run
 * straight across a nucleus that is whole on this frame. */
template <typename Fn>
void
for_each_contour (const LivemicroFeaturesMeta *m, const an::Placement &pl, cv::Size frame, ColorBy by,
                  int width, Fn &&fn)
{
  const cv::Size2d analysed (m->frame_width, m->frame_height);
  const unsigned open_edges = an::edges_in_view (pl, cv::Size2d (frame.width, frame.height));
  // OpenCV traces an object cut by the image's edge through the first pixel
  // inside it: an outline within two working pixels of the edge was cut.
  const double margin
      = 2.0
        * (m->um_per_px > 0 && m->working_um_per_px > m->um_per_px ? m->working_um_per_px / m->um_per_px
                                                                   : 1.0);
  std::vector<cv::Point> pts;
  for (guint k = 0; k < m->n_nuclei; k++) {
    const LivemicroNucleus &n = m->nuclei[k];
    if (n.n_contour < 2)
      continue;
    if (open_edges && (an::cut_edges (n.contour, n.n_contour, analysed, margin) & open_edges))
      continue;
    pts.resize (n.n_contour);
    for (guint q = 0; q < n.n_contour; q++) {
      cv::Point2d c = pl.map (cv::Point2d (n.contour[2 * q], n.contour[2 * q + 1]));
      pts[q] = cv::Point ((int)std::lround (c.x - 0.5), (int)std::lround (c.y - 0.5));
    }
    // Outside the frame: nothing to draw.
    cv::Rect bound = cv::boundingRect (pts);
    if ((bound & cv::Rect (-width, -width, frame.width + 2 * width, frame.height + 2 * width)).empty ())
      continue;
    cv::Vec3b c (40, 220, 60);
    if (n.mitotic_candidate) {
      c = cv::Vec3b (255, 0, 255);
    } else if (by != COLOR_BY_NONE) {
      double v = by == COLOR_BY_AREA          ? n.area_um2
                 : by == COLOR_BY_CIRCULARITY ? n.circularity
                 : by == COLOR_BY_ELONGATION  ? n.elongation
                 : by == COLOR_BY_SOLIDITY    ? n.solidity
                                              : n.mean_h_od;
      const FeatureScale &s = kScales[by];
      c = ramp ((v - s.lo) / (s.hi - s.lo));
    }
    fn (pts, c, n.mitotic_candidate ? width + 1 : width);
  }
}

} // namespace

/* The contour outlines of one result at one placement, rasterised once: a
 * result is carried by every frame until the next one (3 to 10 frames at the
 * live rates, more while the analysis is slow) and the stage is still most of
 * the time; drawing hundreds of polylines per frame per view cost more than
 * the encoder.  Each frame then only writes the outline pixels. */
struct ContourLayer {
  /* what the layer was drawn for */
  const LivemicroNucleus *nuclei = nullptr;
  guint n_nuclei = 0;
  guint64 frames_analysed = 0;
  GstClockTime analysed_pts = GST_CLOCK_TIME_NONE;
  int frame_width = 0, frame_height = 0, line_width = 0;
  ColorBy by = COLOR_BY_NONE;
  double scale = 0;
  cv::Point2d offset;

  struct Pixel {
    int x, y;
    cv::Vec3b rgb;
  };
  std::vector<Pixel> pixels;

  /* A stage at rest reports positions that jitter by a fraction of a pixel
   * (encoder noise): within half a pixel the outlines drawn stay. */
  bool drawn_for (const LivemicroFeaturesMeta *m, const an::Placement &pl, int w, int h, ColorBy b,
                  int lw) const
  {
    return nuclei == m->nuclei && n_nuclei == m->n_nuclei && frames_analysed == m->frames_analysed
           && analysed_pts == m->analysed_pts && frame_width == w && frame_height == h && by == b
           && line_width == lw && std::abs (scale - pl.scale) <= 1e-6 * pl.scale
           && std::abs (offset.x - pl.offset.x) <= 0.5 && std::abs (offset.y - pl.offset.y) <= 0.5;
  }

  void draw (const LivemicroFeaturesMeta *m, const an::Placement &pl, int w, int h, ColorBy b, int lw)
  {
    nuclei = m->nuclei;
    n_nuclei = m->n_nuclei;
    frames_analysed = m->frames_analysed;
    analysed_pts = m->analysed_pts;
    frame_width = w;
    frame_height = h;
    by = b;
    line_width = lw;
    scale = pl.scale;
    offset = pl.offset;
    cv::Mat colour (h, w, CV_8UC3, cv::Scalar::all (0)), mask (h, w, CV_8U, cv::Scalar (0));
    for_each_contour (m, pl, cv::Size (w, h), b, lw,
                      [&] (const std::vector<cv::Point> &pts, cv::Vec3b c, int t) {
                        cv::polylines (colour, pts, true, cv::Scalar (c[0], c[1], c[2]), t, cv::LINE_8);
                        cv::polylines (mask, pts, true, cv::Scalar (255), t, cv::LINE_8);
                      });
    pixels.clear ();
    for (int y = 0; y < h; y++) {
      const uchar *mk = mask.ptr<uchar> (y);
      const cv::Vec3b *c = colour.ptr<cv::Vec3b> (y);
      for (int x = 0; x < w; x++)
        if (mk[x])
          pixels.push_back ({x, y, c[x]});
    }
  }

  void paint (Painter &p) const
  {
    for (const Pixel &px : pixels) {
      uchar *d = p.img.ptr<uchar> (px.y) + px.x * p.channels;
      for (int k = 0; k < 3; k++)
        d[p.rgb[k]] = px.rgb[k];
    }
  }
};

/* A frame this element saw: where it was taken, by PTS.  The result of an
 * analysis names its frame by PTS (analysed_pts); its nuclei carry their
 * slide position, but the focus and objective of that frame only its
 * StageMeta has, and that frame went through here before its result did. */
struct SeenFrame {
  GstClockTime pts;
  an::FieldOfView field;
  gint64 capture_unix_us;
};

struct OverlayPrivate {
  ContourLayer contour_layer;
  std::deque<SeenFrame> seen; // by increasing PTS
  /* last state posted on the bus */
  bool posted = false;
  GstFeatureOverlayState posted_state = GST_FEATURE_OVERLAY_STATE_NONE;
  an::Unplaced posted_why = an::Unplaced::kNone;
};

/* Frames of the last few seconds are kept (and never more than this many). */
static const size_t kMaxSeenFrames = 4096;

static void
forget_seen_frames (GstFeatureOverlay *self)
{
  self->priv->seen.clear ();
}

static gboolean
gst_feature_overlay_stop (GstBaseTransform *trans)
{
  GstFeatureOverlay *self = GST_FEATURE_OVERLAY (trans);
  forget_seen_frames (self);
  self->priv->posted = false;
  GST_OBJECT_LOCK (self);
  self->state = GST_FEATURE_OVERLAY_STATE_NONE;
  GST_OBJECT_UNLOCK (self);
  return TRUE;
}

namespace {

/* The geometry StageMeta gives a frame of w × h pixels. */
an::FieldOfView
field_of (const LivemicroStageMeta *sm, int w, int h)
{
  an::FieldOfView f;
  f.x_um = sm->stage_x_um;
  f.y_um = sm->stage_y_um;
  f.z_um = sm->stage_z_um;
  f.objective = (int)sm->objective;
  // Rescaled to this frame's width when the meta is of another size.
  f.um_per_px = sm->frame_width > 0 && w > 0 ? sm->um_per_px * sm->frame_width / w : sm->um_per_px;
  f.width_px = w;
  f.height_px = h;
  f.moving = sm->moving;
  return f;
}

void
remember (OverlayPrivate *priv, GstClockTime pts, const an::FieldOfView &field, gint64 capture_unix_us,
          GstClockTime keep)
{
  if (!GST_CLOCK_TIME_IS_VALID (pts))
    return;
  auto &seen = priv->seen;
  if (!seen.empty () && pts <= seen.back ().pts)
    seen.clear (); // timestamps went back: another stream or segment
  seen.push_back ({pts, field, capture_unix_us});
  while (seen.size () > kMaxSeenFrames || (seen.front ().pts + keep < pts))
    seen.pop_front ();
}

/* The slide point at the centre of the analysed frame, from its nuclei's
 * slide positions (tumorfeatures computed them with that frame's StageMeta). */
std::optional<cv::Point2d>
analysed_centre_um (const LivemicroFeaturesMeta *m)
{
  if (m->um_per_px <= 0)
    return std::nullopt;
  double sx = 0, sy = 0;
  int n = 0;
  for (guint k = 0; k < m->n_nuclei; k++) {
    const LivemicroNucleus &nu = m->nuclei[k];
    if (!std::isfinite (nu.x_um) || !std::isfinite (nu.y_um))
      continue;
    sx += nu.x_um - (nu.x_px - m->frame_width / 2.0) * m->um_per_px;
    sy += nu.y_um - (nu.y_px - m->frame_height / 2.0) * m->um_per_px;
    n++;
  }
  if (!n)
    return std::nullopt;
  return cv::Point2d (sx / n, sy / n);
}

struct Placed {
  an::Placement placement;
  double age_s = NAN;
  GstFeatureOverlayState state = GST_FEATURE_OVERLAY_STATE_NONE;
};

/* Where the result of `m` goes on this frame (w × h, StageMeta `now` or none). */
an::Placement
place_on_frame (const OverlayPrivate *priv, const LivemicroFeaturesMeta *m,
                const std::optional<an::FieldOfView> &now, gint64 now_capture_us, GstClockTime pts, int w,
                int h, const an::PlacementLimits &limits, double &age_s)
{
  const cv::Size2d analysed_size (m->frame_width, m->frame_height);
  // The result of this very frame: drawn where it was found.
  if (m->analysed || (GST_CLOCK_TIME_IS_VALID (pts) && m->analysed_pts == pts)) {
    age_s = 0;
    return an::same_frame (analysed_size, cv::Size2d (w, h));
  }
  an::Placement fail;
  if (!now) {
    fail.why = an::Unplaced::kNoStage;
    return fail;
  }
  // The analysed frame as seen here: exactly, or else (a leaky queue dropped
  // it) the frames just before and after it, which must both place.
  std::vector<const SeenFrame *> frames;
  const auto &seen = priv->seen;
  if (GST_CLOCK_TIME_IS_VALID (m->analysed_pts)) {
    auto it = std::lower_bound (seen.begin (), seen.end (), m->analysed_pts,
                                [] (const SeenFrame &f, GstClockTime t) { return f.pts < t; });
    if (it != seen.end () && it->pts == m->analysed_pts) {
      frames.push_back (&*it);
    } else if (it != seen.end () && it != seen.begin () && it->pts - m->analysed_pts <= GST_SECOND
               && m->analysed_pts - std::prev (it)->pts <= GST_SECOND) {
      frames.push_back (&*std::prev (it));
      frames.push_back (&*it);
    }
  }
  const std::optional<cv::Point2d> centre = analysed_centre_um (m);
  if (frames.empty ()) {
    fail.why = an::Unplaced::kUnknownField;
    return fail;
  }
  an::Placement placed;
  for (const SeenFrame *f : frames) {
    an::FieldOfView a = f->field;
    // The nuclei are in the meta's pixels: its size and pixel size.
    a.width_px = analysed_size.width;
    a.height_px = analysed_size.height;
    a.um_per_px = m->um_per_px;
    if (std::abs (f->field.um_per_px - m->um_per_px) > 0.005 * m->um_per_px) {
      fail.why = an::Unplaced::kUnknownField; // not the frame analysed
      return fail;
    }
    if (centre) {
      // The frame seen must be where the nuclei say the analysed one was.
      if (std::hypot (centre->x - a.x_um, centre->y - a.y_um) > m->um_per_px) {
        fail.why = an::Unplaced::kUnknownField;
        return fail;
      }
      a.x_um = centre->x;
      a.y_um = centre->y;
    }
    double age = NAN;
    if (GST_CLOCK_TIME_IS_VALID (pts) && GST_CLOCK_TIME_IS_VALID (m->analysed_pts) && pts >= m->analysed_pts)
      age = (double)(pts - m->analysed_pts) / GST_SECOND;
    else if (now_capture_us > 0 && f->capture_unix_us > 0 && now_capture_us >= f->capture_unix_us)
      age = (now_capture_us - f->capture_unix_us) / 1e6;
    age_s = age;
    an::Placement p = an::place_result (a, *now, age, limits);
    if (!p.ok ())
      return p;
    if (f == frames.front ())
      placed = p;
  }
  return placed;
}

void
draw_summary (Painter &p, const LivemicroFeaturesMeta *m, ColorBy by, bool contours,
              GstFeatureOverlayState state, const an::Placement &pl)
{
  const double scale = std::max (0.35, p.img.rows / 1080.0 * 0.6);
  const int thick = std::max (1, (int)std::lround (scale * 2));
  const int line_h = (int)std::lround (30 * scale / 0.6);
  std::vector<std::string> lines;
  const bool updating = state == GST_FEATURE_OVERLAY_STATE_UPDATING;
  const bool ok = m->quality == LIVEMICRO_FEATURES_QUALITY_OK && !updating;
  if (updating) {
    // The numbers are of another field or plane: none shown.
    lines.push_back (std::string ("UPDATING: ") + an::unplaced_text (pl.why));
    lines.push_back ("no measurements for this field yet");
  } else if (ok) {
    lines.push_back ("nuclei " + std::to_string (m->nuclei_count) + "   "
                     + fmt ("%.0f /mm2", m->nuclei_per_mm2));
    lines.push_back ("area " + fmt ("%.1f um2", m->mean_area_um2) + "  CV " + fmt ("%.2f", m->cv_area));
    lines.push_back ("circularity " + fmt ("%.2f", m->mean_circularity) + "  H/E "
                     + fmt ("%.2f", m->he_ratio));
    lines.push_back ("pleomorphism "
                     + (m->pleomorphism ? std::to_string (m->pleomorphism) + "/3" : std::string ("-"))
                     + "  mitotic cand. " + std::to_string (m->mitotic_candidates));
    lines.push_back (std::string ("grade cue: ") + (m->grade_cue ? m->grade_cue : "-")
                     + " (not a diagnosis)");
  } else {
    std::string q = livemicro_features_quality_to_string (m->quality);
    for (char &ch : q)
      ch = ch == '_' ? ' ' : (char)g_ascii_toupper (ch);
    lines.push_back ("QUALITY: " + q);
    lines.push_back ("no nuclear measurements");
  }
  if (!updating)
    lines.push_back ("tissue " + fmt ("%.0f %%", m->tissue_fraction * 100)
                     + (state == GST_FEATURE_OVERLAY_STATE_MOVED
                            ? "   (earlier field, " + fmt ("%.0f %%", pl.coverage * 100) + " in view)"
                        : m->analysed ? ""
                                      : "   (earlier frame)"));
  if (contours && ok && by != COLOR_BY_NONE)
    lines.push_back (std::string ("colour: ") + kScales[by].label + " " + fmt ("%g", kScales[by].lo)
                     + " blue .. " + fmt ("%g", kScales[by].hi) + " red");
  int width = 0, base = 0;
  for (const auto &l : lines)
    width = std::max (width, cv::getTextSize (l, cv::FONT_HERSHEY_SIMPLEX, scale, thick, &base).width);
  const int pad = line_h / 3;
  cv::Rect box (pad, pad, std::min (p.img.cols - 2 * pad, width + 2 * pad),
                std::min (p.img.rows - 2 * pad, (int)lines.size () * line_h + pad));
  if (box.width <= 0 || box.height <= 0)
    return;
  cv::Mat roi = p.img (box);
  roi = roi * 0.35; // darken the panel's background
  const cv::Scalar text = ok ? p.color ({255, 255, 255}) : p.color ({255, 200, 0});
  for (size_t k = 0; k < lines.size (); k++)
    cv::putText (p.img, lines[k], cv::Point (box.x + pad, box.y + (int)(k + 1) * line_h - pad / 2),
                 cv::FONT_HERSHEY_SIMPLEX, scale, text, thick, cv::LINE_AA);
}

} // namespace

/* Sets the state the viewer sees; a change is posted on the bus. */
static void
report_state (GstFeatureOverlay *self, GstBuffer *buf, GstFeatureOverlayState state, const an::Placement &pl,
              const LivemicroFeaturesMeta *m, double age_s)
{
  OverlayPrivate *priv = self->priv;
  const an::Unplaced why = state == GST_FEATURE_OVERLAY_STATE_UPDATING ? pl.why : an::Unplaced::kNone;
  GST_OBJECT_LOCK (self);
  self->state = state;
  GST_OBJECT_UNLOCK (self);
  if (priv->posted && priv->posted_state == state && priv->posted_why == why)
    return;
  priv->posted = true;
  priv->posted_state = state;
  priv->posted_why = why;
  GEnumClass *klass = G_ENUM_CLASS (g_type_class_ref (GST_TYPE_FEATURE_OVERLAY_STATE));
  GEnumValue *v = g_enum_get_value (klass, state);
  GstStructure *s = gst_structure_new (
      "featureoverlay", "state", G_TYPE_STRING, v ? v->value_nick : "none", "reason", G_TYPE_STRING,
      an::unplaced_token (why), "reason_text", G_TYPE_STRING, an::unplaced_text (why), "coverage",
      G_TYPE_DOUBLE, state == GST_FEATURE_OVERLAY_STATE_UPDATING ? 0.0 : pl.coverage, nullptr);
  g_type_class_unref (klass);
  if (m && GST_CLOCK_TIME_IS_VALID (m->analysed_pts))
    gst_structure_set (s, "analysed_pts", G_TYPE_UINT64, m->analysed_pts, nullptr);
  if (m && std::isfinite (age_s))
    gst_structure_set (s, "age_ms", G_TYPE_DOUBLE, age_s * 1000.0, nullptr);
  GstBaseTransform *trans = GST_BASE_TRANSFORM (self);
  const GstClockTime pts = GST_BUFFER_PTS (buf);
  GstClockTime stream_time = GST_CLOCK_TIME_NONE, running_time = GST_CLOCK_TIME_NONE;
  if (GST_CLOCK_TIME_IS_VALID (pts) && trans->segment.format == GST_FORMAT_TIME) {
    stream_time = gst_segment_to_stream_time (&trans->segment, GST_FORMAT_TIME, pts);
    running_time = gst_segment_to_running_time (&trans->segment, GST_FORMAT_TIME, pts);
  }
  gst_structure_set (s, "timestamp", G_TYPE_UINT64, pts, "stream-time", G_TYPE_UINT64, stream_time,
                     "running-time", G_TYPE_UINT64, running_time, nullptr);
  gst_element_post_message (GST_ELEMENT (self), gst_message_new_element (GST_OBJECT (self), s));
}

static GstFlowReturn
gst_feature_overlay_transform_frame_ip (GstVideoFilter *filter, GstVideoFrame *frame)
{
  GstFeatureOverlay *self = GST_FEATURE_OVERLAY (filter);
  OverlayPrivate *priv = self->priv;
  GstBuffer *buf = frame->buffer;
  const int w = GST_VIDEO_FRAME_WIDTH (frame), h = GST_VIDEO_FRAME_HEIGHT (frame);
  const GstClockTime pts = GST_BUFFER_PTS (buf);

  GST_OBJECT_LOCK (self);
  const bool contours = self->contours, summary = self->summary, heatmap = self->heatmap;
  const ColorBy by = self->color_by;
  const double opacity = self->heatmap_opacity;
  int width = self->line_width;
  an::PlacementLimits limits;
  limits.max_age_s = (double)self->max_age / GST_SECOND;
  limits.focus_tolerance_um = self->focus_tolerance;
  const GstClockTime max_age = self->max_age;
  GST_OBJECT_UNLOCK (self);

  /* Remember where each frame was taken: a later result may be of it. */
  std::optional<an::FieldOfView> now;
  gint64 now_capture_us = 0;
  if (const LivemicroStageMeta *sm = livemicro_buffer_get_stage_meta (buf)) {
    if (sm->um_per_px > 0) {
      now = field_of (sm, w, h);
      now_capture_us = sm->capture_unix_us;
      remember (priv, pts, *now, now_capture_us, max_age + 2 * GST_SECOND);
    }
  }

  LivemicroFeaturesMeta *m = livemicro_buffer_get_features_meta (buf);
  if (!m) {
    report_state (self, buf, GST_FEATURE_OVERLAY_STATE_NONE, an::Placement (), nullptr, NAN);
    return GST_FLOW_OK;
  }

  double age_s = NAN;
  const an::Placement pl = place_on_frame (priv, m, now, now_capture_us, pts, w, h, limits, age_s);
  const GstFeatureOverlayState state = !pl.ok ()                         ? GST_FEATURE_OVERLAY_STATE_UPDATING
                                       : pl.coverage >= kCurrentCoverage ? GST_FEATURE_OVERLAY_STATE_CURRENT
                                                                         : GST_FEATURE_OVERLAY_STATE_MOVED;
  GST_LOG_OBJECT (self,
                  "result of %" GST_TIME_FORMAT " on %" GST_TIME_FORMAT ": %s %s, "
                  "coverage %.3f, offset %.2f,%.2f",
                  GST_TIME_ARGS (m->analysed_pts), GST_TIME_ARGS (pts),
                  state == GST_FEATURE_OVERLAY_STATE_UPDATING ? "updating" : "placed",
                  an::unplaced_token (pl.why), pl.coverage, pl.offset.x, pl.offset.y);
  report_state (self, buf, state, pl, m, age_s);

  Painter p;
  p.channels = self->channels;
  p.rgb = self->rgb;
  p.img = cv::Mat (h, w, CV_8UC (p.channels), GST_VIDEO_FRAME_PLANE_DATA (frame, 0),
                   GST_VIDEO_FRAME_PLANE_STRIDE (frame, 0));
  if (width <= 0)
    width = std::max (1, (int)std::lround (h / 540.0));
  try {
    if (pl.ok () && heatmap && m->n_nuclei)
      draw_heatmap (p, m, pl, pl.scale > 0 ? m->um_per_px / pl.scale : 0.0, opacity);
    if (pl.ok () && contours && m->n_nuclei) {
      if (!priv->contour_layer.drawn_for (m, pl, w, h, by, width))
        priv->contour_layer.draw (m, pl, w, h, by, width);
      priv->contour_layer.paint (p);
    }
    if (summary)
      draw_summary (p, m, by, contours, state, pl);
  } catch (const std::exception &e) {
    GST_ELEMENT_WARNING (self, STREAM, FAILED, ("could not draw the overlay: %s", e.what ()),
                         ("the frame goes on undrawn"));
  }
  return GST_FLOW_OK;
}

static void
gst_feature_overlay_finalize (GObject *object)
{
  delete GST_FEATURE_OVERLAY (object)->priv;
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

/* Long by nature: one g_param_spec per property, each with its blurb, range
 * and default, in the order gst-inspect-1.0 shows them. */
static void
gst_feature_overlay_class_init (GstFeatureOverlayClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  GstVideoFilterClass *filter_class = GST_VIDEO_FILTER_CLASS (klass);
  const auto rw
      = static_cast<GParamFlags> (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING);

  gobject_class->set_property = gst_feature_overlay_set_property;
  gobject_class->get_property = gst_feature_overlay_get_property;
  gobject_class->finalize = gst_feature_overlay_finalize;

  g_object_class_install_property (
      gobject_class, PROP_CONTOURS,
      g_param_spec_boolean ("contours", "Contours",
                            "Draw each nucleus' outline, coloured by color-by (mitotic-figure "
                            "candidates in magenta)",
                            DEFAULT_CONTOURS, rw));
  g_object_class_install_property (
      gobject_class, PROP_SUMMARY,
      g_param_spec_boolean ("summary", "Summary panel",
                            "Draw a panel with the frame's counts, density, size, shape, "
                            "pleomorphism, mitotic candidates, grade cue and quality",
                            DEFAULT_SUMMARY, rw));
  g_object_class_install_property (
      gobject_class, PROP_HEATMAP,
      g_param_spec_boolean ("heatmap", "Density heat map",
                            "Tint the frame by nuclear density (blue sparse .. red 10000 nuclei/mm² "
                            "and more)",
                            DEFAULT_HEATMAP, rw));
  g_object_class_install_property (
      gobject_class, PROP_COLOR_BY,
      g_param_spec_enum ("color-by", "Colour contours by",
                         "Nucleus feature that colours the contours, from blue (low) to red (high)",
                         GST_TYPE_FEATURE_OVERLAY_COLOR_BY, DEFAULT_COLOR_BY, rw));
  g_object_class_install_property (
      gobject_class, PROP_HEATMAP_OPACITY,
      g_param_spec_double ("heatmap-opacity", "Heat map opacity",
                           "How strongly the heat map tints the frame (0 invisible, 1 opaque)", 0.0, 1.0,
                           DEFAULT_HEATMAP_OPACITY, rw));
  g_object_class_install_property (
      gobject_class, PROP_LINE_WIDTH,
      g_param_spec_int ("line-width", "Line width",
                        "Contour line width in pixels; 0 = automatic (1 px per 540 lines of video)", 0, 20,
                        DEFAULT_LINE_WIDTH, rw));
  g_object_class_install_property (
      gobject_class, PROP_MAX_AGE,
      g_param_spec_uint64 ("max-age", "Maximum result age (ns)",
                           "Draw a result on later frames for at most this many nanoseconds after the "
                           "frame it was computed on (by timestamps; 10 s = two slow analyses); older, "
                           "nothing is drawn until the next analysis (state updating). 0 = only on the "
                           "analysed frame itself",
                           0, MAX_MAX_AGE, DEFAULT_MAX_AGE, rw));
  g_object_class_install_property (
      gobject_class, PROP_FOCUS_TOLERANCE,
      g_param_spec_double ("focus-tolerance-um", "Focus tolerance (µm)",
                           "Draw a result on a frame only when the focus drive is within this many µm of "
                           "where it was for the analysed frame; 0 = the depth of field of the objective "
                           "(40x/0.65 about 1.7 µm, 20x 4.7, 10x 12.8, 4x 80)",
                           0.0, 1000.0, DEFAULT_FOCUS_TOLERANCE, rw));
  g_object_class_install_property (
      gobject_class, PROP_STATE,
      g_param_spec_enum ("state", "State",
                         "What the viewer sees: none (no result), current (the result of this field), "
                         "moved (the stage moved: drawn where the analysed field overlaps the view, new "
                         "analysis pending) or updating (the result cannot be placed on this view: "
                         "nothing drawn). Each change is also posted as a \"featureoverlay\" element message",
                         GST_TYPE_FEATURE_OVERLAY_STATE, DEFAULT_STATE,
                         static_cast<GParamFlags> (G_PARAM_READABLE | G_PARAM_STATIC_STRINGS)));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (
      element_class, "Feature overlay", "Filter/Effect/Video",
      "Draws tumorfeatures' results (FeaturesMeta) in slide coordinates: nucleus "
      "contours coloured by a feature, a summary panel and a density heat map",
      "LiveMicro");

  trans_class->accept_caps = livemicro::accept_any_raw_video;
  trans_class->sink_event = gst_feature_overlay_sink_event;
  trans_class->stop = gst_feature_overlay_stop;
  filter_class->set_info = gst_feature_overlay_set_info;
  filter_class->transform_frame_ip = gst_feature_overlay_transform_frame_ip;

  gst_type_mark_as_plugin_api (GST_TYPE_FEATURE_OVERLAY_COLOR_BY, (GstPluginAPIFlags)0);
  gst_type_mark_as_plugin_api (GST_TYPE_FEATURE_OVERLAY_STATE, (GstPluginAPIFlags)0);
}

static void
gst_feature_overlay_init (GstFeatureOverlay *self)
{
  self->contours = DEFAULT_CONTOURS;
  self->summary = DEFAULT_SUMMARY;
  self->heatmap = DEFAULT_HEATMAP;
  self->color_by = DEFAULT_COLOR_BY;
  self->heatmap_opacity = DEFAULT_HEATMAP_OPACITY;
  self->line_width = DEFAULT_LINE_WIDTH;
  self->max_age = DEFAULT_MAX_AGE;
  self->focus_tolerance = DEFAULT_FOCUS_TOLERANCE;
  self->state = DEFAULT_STATE;
  self->channels = 3;
  self->rgb = {0, 1, 2};
  self->priv = new OverlayPrivate ();
  gst_base_transform_set_in_place (GST_BASE_TRANSFORM (self), TRUE);
}
