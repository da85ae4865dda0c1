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

#include <livemicro/featuresmeta.h>

#include <gst/video/video.h>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <cstdio>
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

enum {
  PROP_0,
  PROP_CONTOURS,
  PROP_SUMMARY,
  PROP_HEATMAP,
  PROP_COLOR_BY,
  PROP_HEATMAP_OPACITY,
  PROP_LINE_WIDTH,
};

/* The value range each feature's colour scale spans (low → blue, high → red). */
struct FeatureScale {
  const char *label;
  double lo, hi;
};
static const FeatureScale kScales[] = {
    {"area um2", 10.0, 80.0},
    {"circularity", 0.5, 1.0},
    {"elongation", 1.0, 3.0},
    {"solidity", 0.7, 1.0},
    {"H OD", 0.1, 0.8},
};
/* Nuclei per mm² of the heat map's full colour. */
static const double kHeatmapFullDensity = 10000.0;

GType
gst_feature_overlay_color_by_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
      {COLOR_BY_AREA, "Nuclear area (10-80 µm²)", "area"},
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

struct _GstFeatureOverlay {
  GstVideoFilter parent;

  /* properties, under the object lock */
  gboolean contours, summary, heatmap;
  ColorBy color_by;
  gdouble heatmap_opacity;
  gint line_width;

  /* format, set in set_info */
  int channels;
  std::array<int, 3> rgb;

  /* streaming thread only */
  struct ContourLayer *contour_layer;
};

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE (LIVEMICRO_RGB_FORMATS)));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE (LIVEMICRO_RGB_FORMATS)));

#define gst_feature_overlay_parent_class parent_class
G_DEFINE_TYPE_WITH_CODE (GstFeatureOverlay, gst_feature_overlay, GST_TYPE_VIDEO_FILTER,
    GST_DEBUG_CATEGORY_INIT (gst_feature_overlay_debug, "featureoverlay", 0,
        "LiveMicro feature overlay"));
GST_ELEMENT_REGISTER_DEFINE (featureoverlay, "featureoverlay", GST_RANK_NONE,
    GST_TYPE_FEATURE_OVERLAY);

static void
gst_feature_overlay_set_property (GObject *object, guint prop_id, const GValue *value,
    GParamSpec *pspec)
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
      self->color_by = (ColorBy) g_value_get_enum (value);
      break;
    case PROP_HEATMAP_OPACITY:
      self->heatmap_opacity = g_value_get_double (value);
      break;
    case PROP_LINE_WIDTH:
      self->line_width = g_value_get_int (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_feature_overlay_get_property (GObject *object, guint prop_id, GValue *value,
    GParamSpec *pspec)
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
         "in front of it", LIVEMICRO_RGB_FORMATS,
            gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (in_info))),
        ("caps %" GST_PTR_FORMAT, incaps));
    return FALSE;
  }
  return TRUE;
}

/* Caps with another format than packed RGB: a clear error (the pads accept
 * any raw video so that such caps arrive here, see rgbformats.h). */
static gboolean
gst_feature_overlay_sink_event (GstBaseTransform *trans, GstEvent *event)
{
  if (livemicro::refuse_non_rgb_caps (trans, event, "featureoverlay draws on")) {
    gst_event_unref (event);
    return FALSE;
  }
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
      all.at<uchar> (0, v) = (uchar) v;
    cv::Mat bgr;
    cv::applyColorMap (all, bgr, cv::COLORMAP_JET);
    for (int v = 0; v < 256; v++) {
      cv::Vec3b c = bgr.at<cv::Vec3b> (0, v);
      l[v] = cv::Vec3b (c[2], c[1], c[0]);
    }
    return l;
  } ();
  t = std::clamp (t, 0.0, 1.0);
  return lut[(int) std::lround (t * 255)];
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

void
draw_heatmap (Painter &p, const LivemicroFeaturesMeta *m, double sx, double sy, double opacity)
{
  const int cell = 16;
  const int gw = (p.img.cols + cell - 1) / cell, gh = (p.img.rows + cell - 1) / cell;
  cv::Mat grid (gh, gw, CV_32F, cv::Scalar (0));
  for (guint k = 0; k < m->n_nuclei; k++) {
    int gx = (int) (m->nuclei[k].x_px * sx / cell), gy = (int) (m->nuclei[k].y_px * sy / cell);
    if (gx >= 0 && gy >= 0 && gx < gw && gy < gh)
      grid.at<float> (gy, gx) += 1.0f;
  }
  // Nuclei per mm² under a Gaussian window of ~25 µm.
  double upp = m->um_per_px > 0 ? m->um_per_px / sx : 1.0;
  double sigma_cells = std::max (1.0, 25.0 / (upp * cell));
  cv::GaussianBlur (grid, grid, cv::Size (), sigma_cells, sigma_cells, cv::BORDER_CONSTANT);
  double cell_mm2 = (cell * upp) * (cell * upp) * 1e-6;
  grid *= 1.0 / (cell_mm2 * kHeatmapFullDensity);
  cv::Mat up;
  cv::resize (grid, up, p.img.size (), 0, 0, cv::INTER_LINEAR);
  cv::Vec3b lut[256];
  for (int v = 0; v < 256; v++)
    lut[v] = ramp (v / 255.0);
  for (int j = 0; j < p.img.rows; j++) {
    uchar *row = p.img.ptr<uchar> (j);
    const float *d = up.ptr<float> (j);
    for (int i = 0; i < p.img.cols; i++) {
      float t = std::min (1.0f, d[i]);
      if (t <= 0.02f)
        continue;
      const cv::Vec3b &c = lut[(int) (t * 255)];
      float a = (float) opacity * std::min (1.0f, t * 3.0f);
      uchar *px = row + i * p.channels;
      for (int k = 0; k < 3; k++)
        px[p.rgb[k]] = (uchar) (px[p.rgb[k]] * (1 - a) + c[k] * a);
    }
  }
}

/* Calls fn (points, colour, thickness) for each nucleus outline, in frame
 * pixels, in drawing order. */
template <typename Fn>
void
for_each_contour (const LivemicroFeaturesMeta *m, double sx, double sy, ColorBy by, int width,
    Fn &&fn)
{
  std::vector<cv::Point> pts;
  for (guint k = 0; k < m->n_nuclei; k++) {
    const LivemicroNucleus &n = m->nuclei[k];
    if (n.n_contour < 2)
      continue;
    pts.resize (n.n_contour);
    for (guint q = 0; q < n.n_contour; q++)
      pts[q] = cv::Point ((int) std::lround (n.contour[2 * q] * sx - 0.5),
          (int) std::lround (n.contour[2 * q + 1] * sy - 0.5));
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

}  // namespace

/* The contour outlines of one result, rasterised once: a result is carried
 * by every frame until the next one (3 to 10 frames at the live rates), and
 * drawing hundreds of polylines per frame per view cost more than the
 * encoder.  Each frame then only writes the outline pixels. */
struct ContourLayer {
  /* what the layer was drawn for */
  const LivemicroNucleus *nuclei = nullptr;
  guint n_nuclei = 0;
  guint64 frames_analysed = 0;
  GstClockTime analysed_pts = GST_CLOCK_TIME_NONE;
  int frame_width = 0, frame_height = 0, line_width = 0;
  ColorBy by = COLOR_BY_NONE;

  struct Pixel {
    int x, y;
    cv::Vec3b rgb;
  };
  std::vector<Pixel> pixels;

  bool
  drawn_for (const LivemicroFeaturesMeta *m, int w, int h, ColorBy b, int lw) const
  {
    return nuclei == m->nuclei && n_nuclei == m->n_nuclei &&
           frames_analysed == m->frames_analysed && analysed_pts == m->analysed_pts &&
           frame_width == w && frame_height == h && by == b && line_width == lw;
  }

  void
  draw (const LivemicroFeaturesMeta *m, int w, int h, ColorBy b, int lw)
  {
    nuclei = m->nuclei;
    n_nuclei = m->n_nuclei;
    frames_analysed = m->frames_analysed;
    analysed_pts = m->analysed_pts;
    frame_width = w;
    frame_height = h;
    by = b;
    line_width = lw;
    const double sx = m->frame_width ? (double) w / m->frame_width : 1.0;
    const double sy = m->frame_height ? (double) h / m->frame_height : 1.0;
    cv::Mat colour (h, w, CV_8UC3, cv::Scalar::all (0)), mask (h, w, CV_8U, cv::Scalar (0));
    for_each_contour (m, sx, sy, b, lw, [&] (const std::vector<cv::Point> &pts, cv::Vec3b c, int t) {
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

  void
  paint (Painter &p) const
  {
    for (const Pixel &px : pixels) {
      uchar *d = p.img.ptr<uchar> (px.y) + px.x * p.channels;
      for (int k = 0; k < 3; k++)
        d[p.rgb[k]] = px.rgb[k];
    }
  }
};

namespace {

void
draw_summary (Painter &p, const LivemicroFeaturesMeta *m, ColorBy by, bool contours)
{
  const double scale = std::max (0.35, p.img.rows / 1080.0 * 0.6);
  const int thick = std::max (1, (int) std::lround (scale * 2));
  const int line_h = (int) std::lround (30 * scale / 0.6);
  std::vector<std::string> lines;
  const bool ok = m->quality == LIVEMICRO_FEATURES_QUALITY_OK;
  if (ok) {
    lines.push_back ("nuclei " + std::to_string (m->nuclei_count) + "   " +
                     fmt ("%.0f /mm2", m->nuclei_per_mm2));
    lines.push_back ("area " + fmt ("%.1f um2", m->mean_area_um2) + "  CV " +
                     fmt ("%.2f", m->cv_area));
    lines.push_back ("circularity " + fmt ("%.2f", m->mean_circularity) + "  H/E " +
                     fmt ("%.2f", m->he_ratio));
    lines.push_back ("pleomorphism " +
                     (m->pleomorphism ? std::to_string (m->pleomorphism) + "/3" : std::string ("-")) +
                     "  mitotic cand. " + std::to_string (m->mitotic_candidates));
    lines.push_back (std::string ("grade cue: ") + (m->grade_cue ? m->grade_cue : "-") +
                     " (not a diagnosis)");
  } else {
    std::string q = livemicro_features_quality_to_string (m->quality);
    for (char &ch : q)
      ch = ch == '_' ? ' ' : (char) g_ascii_toupper (ch);
    lines.push_back ("QUALITY: " + q);
    lines.push_back ("no nuclear measurements");
  }
  lines.push_back ("tissue " + fmt ("%.0f %%", m->tissue_fraction * 100) +
                   (m->analysed ? "" : "   (earlier frame)"));
  if (contours && ok && by != COLOR_BY_NONE)
    lines.push_back (std::string ("colour: ") + kScales[by].label + " " +
                     fmt ("%g", kScales[by].lo) + " blue .. " + fmt ("%g", kScales[by].hi) +
                     " red");
  int width = 0, base = 0;
  for (const auto &l : lines)
    width = std::max (width,
        cv::getTextSize (l, cv::FONT_HERSHEY_SIMPLEX, scale, thick, &base).width);
  const int pad = line_h / 3;
  cv::Rect box (pad, pad, std::min (p.img.cols - 2 * pad, width + 2 * pad),
      std::min (p.img.rows - 2 * pad, (int) lines.size () * line_h + pad));
  if (box.width <= 0 || box.height <= 0)
    return;
  cv::Mat roi = p.img (box);
  roi = roi * 0.35;  // darken the panel's background
  const cv::Scalar text = ok ? p.color ({255, 255, 255}) : p.color ({255, 200, 0});
  for (size_t k = 0; k < lines.size (); k++)
    cv::putText (p.img, lines[k], cv::Point (box.x + pad, box.y + (int) (k + 1) * line_h - pad / 2),
        cv::FONT_HERSHEY_SIMPLEX, scale, text, thick, cv::LINE_AA);
}

}  // namespace

static GstFlowReturn
gst_feature_overlay_transform_frame_ip (GstVideoFilter *filter, GstVideoFrame *frame)
{
  GstFeatureOverlay *self = GST_FEATURE_OVERLAY (filter);
  LivemicroFeaturesMeta *m = livemicro_buffer_get_features_meta (frame->buffer);
  if (!m)
    return GST_FLOW_OK;

  GST_OBJECT_LOCK (self);
  const bool contours = self->contours, summary = self->summary, heatmap = self->heatmap;
  const ColorBy by = self->color_by;
  const double opacity = self->heatmap_opacity;
  int width = self->line_width;
  GST_OBJECT_UNLOCK (self);

  Painter p;
  p.channels = self->channels;
  p.rgb = self->rgb;
  const int w = GST_VIDEO_FRAME_WIDTH (frame), h = GST_VIDEO_FRAME_HEIGHT (frame);
  p.img = cv::Mat (h, w, CV_8UC (p.channels), GST_VIDEO_FRAME_PLANE_DATA (frame, 0),
      GST_VIDEO_FRAME_PLANE_STRIDE (frame, 0));
  if (width <= 0)
    width = std::max (1, (int) std::lround (h / 540.0));
  /* Coordinates refer to the analysed frame size. */
  const double sx = m->frame_width ? (double) w / m->frame_width : 1.0;
  const double sy = m->frame_height ? (double) h / m->frame_height : 1.0;
  try {
    if (heatmap && m->n_nuclei)
      draw_heatmap (p, m, sx, sy, opacity);
    if (contours && m->n_nuclei) {
      if (!self->contour_layer->drawn_for (m, w, h, by, width))
        self->contour_layer->draw (m, w, h, by, width);
      self->contour_layer->paint (p);
    }
    if (summary)
      draw_summary (p, m, by, contours);
  } catch (const std::exception &e) {
    GST_ELEMENT_WARNING (self, STREAM, FAILED, ("could not draw the overlay: %s", e.what ()),
        ("the frame goes on undrawn"));
  }
  return GST_FLOW_OK;
}

static void
gst_feature_overlay_finalize (GObject *object)
{
  delete GST_FEATURE_OVERLAY (object)->contour_layer;
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_feature_overlay_class_init (GstFeatureOverlayClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  GstVideoFilterClass *filter_class = GST_VIDEO_FILTER_CLASS (klass);
  const auto rw = static_cast<GParamFlags> (
      G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING);

  gobject_class->set_property = gst_feature_overlay_set_property;
  gobject_class->get_property = gst_feature_overlay_get_property;
  gobject_class->finalize = gst_feature_overlay_finalize;

  g_object_class_install_property (gobject_class, PROP_CONTOURS,
      g_param_spec_boolean ("contours", "Contours",
          "Draw each nucleus' outline, coloured by color-by (mitotic-figure "
          "candidates in magenta)",
          DEFAULT_CONTOURS, rw));
  g_object_class_install_property (gobject_class, PROP_SUMMARY,
      g_param_spec_boolean ("summary", "Summary panel",
          "Draw a panel with the frame's counts, density, size, shape, "
          "pleomorphism, mitotic candidates, grade cue and quality",
          DEFAULT_SUMMARY, rw));
  g_object_class_install_property (gobject_class, PROP_HEATMAP,
      g_param_spec_boolean ("heatmap", "Density heat map",
          "Tint the frame by nuclear density (blue sparse .. red 10000 nuclei/mm² "
          "and more)",
          DEFAULT_HEATMAP, rw));
  g_object_class_install_property (gobject_class, PROP_COLOR_BY,
      g_param_spec_enum ("color-by", "Colour contours by",
          "Nucleus feature that colours the contours, from blue (low) to red (high)",
          GST_TYPE_FEATURE_OVERLAY_COLOR_BY, DEFAULT_COLOR_BY, rw));
  g_object_class_install_property (gobject_class, PROP_HEATMAP_OPACITY,
      g_param_spec_double ("heatmap-opacity", "Heat map opacity",
          "How strongly the heat map tints the frame (0 invisible, 1 opaque)",
          0.0, 1.0, DEFAULT_HEATMAP_OPACITY, rw));
  g_object_class_install_property (gobject_class, PROP_LINE_WIDTH,
      g_param_spec_int ("line-width", "Line width",
          "Contour line width in pixels; 0 = automatic (1 px per 540 lines of video)",
          0, 20, DEFAULT_LINE_WIDTH, rw));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (element_class, "Feature overlay",
      "Filter/Effect/Video",
      "Draws tumorfeatures' results (FeaturesMeta): nucleus contours coloured by a "
      "feature, a summary panel and a density heat map",
      "LiveMicro");

  trans_class->accept_caps = livemicro::accept_any_raw_video;
  trans_class->sink_event = gst_feature_overlay_sink_event;
  filter_class->set_info = gst_feature_overlay_set_info;
  filter_class->transform_frame_ip = gst_feature_overlay_transform_frame_ip;

  gst_type_mark_as_plugin_api (GST_TYPE_FEATURE_OVERLAY_COLOR_BY, (GstPluginAPIFlags) 0);
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
  self->channels = 3;
  self->rgb = {0, 1, 2};
  self->contour_layer = new ContourLayer ();
  gst_base_transform_set_in_place (GST_BASE_TRANSFORM (self), TRUE);
}
