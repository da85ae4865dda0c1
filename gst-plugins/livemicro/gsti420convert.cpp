/**
 * SECTION:element-i420convert
 * @title: i420convert
 *
 * Converts raw video to I420 for an encoder.  Packed RGB, BGR, RGBA, BGRA,
 * RGBx and BGRx frames of even size go through OpenCV's vectorised
 * conversion (BT.601, limited range; chroma taken at the top-left pixel of
 * each 2×2 block, signalled as chroma-site=cosited): ~1.4 ms for a 720p
 * frame on one core where videoconvert 1.22 takes ~5.6, which matters
 * because every view branch of a node converts every frame before its
 * encoder.  Any other input (other formats, odd sizes, other colours asked
 * for downstream) is converted by GStreamer's own #GstVideoConverter with
 * videoconvert's settings; I420 passes through.  Metas go along, except
 * those tagged as describing colours.
 *
 * |[
 * gst-launch-1.0 microscopesrc ! featureoverlay ! i420convert ! x264enc ! fakesink
 * ]|
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gsti420convert.h"

#include <gst/video/video.h>
#include <opencv2/imgproc.hpp>

#include <cstring>

GST_DEBUG_CATEGORY_STATIC (gst_i420_convert_debug);
#define GST_CAT_DEFAULT gst_i420_convert_debug

struct _GstI420Convert {
  GstVideoFilter parent;

  /* set in set_info, streaming thread only */
  int cv_code;                  /* OpenCV's conversion, or -1 */
  GstVideoConverter *converter; /* the others */
  cv::Mat *scratch;             /* I420 when the output's planes are laid out otherwise */
};

#define SINK_FORMATS GST_VIDEO_FORMATS_ALL
static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE (
    "sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE (SINK_FORMATS)));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE (
    "src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("I420")));

#define gst_i420_convert_parent_class parent_class
G_DEFINE_TYPE_WITH_CODE (GstI420Convert, gst_i420_convert, GST_TYPE_VIDEO_FILTER,
                         GST_DEBUG_CATEGORY_INIT (gst_i420_convert_debug, "i420convert", 0,
                                                  "LiveMicro conversion to I420"));
GST_ELEMENT_REGISTER_DEFINE (i420convert, "i420convert", GST_RANK_NONE, GST_TYPE_I420_CONVERT);

/* OpenCV's conversion code for a packed RGB input it converts to `out`, or
 * -1: even sizes, and BT.601 limited range out (what OpenCV computes). */
static int
opencv_code (const GstVideoInfo *in, const GstVideoInfo *out)
{
  if (GST_VIDEO_INFO_WIDTH (in) % 2 || GST_VIDEO_INFO_HEIGHT (in) % 2)
    return -1;
  if (out
      && (GST_VIDEO_INFO_COLORIMETRY (out).matrix != GST_VIDEO_COLOR_MATRIX_BT601
          || GST_VIDEO_INFO_COLORIMETRY (out).range != GST_VIDEO_COLOR_RANGE_16_235))
    return -1;
  switch (GST_VIDEO_INFO_FORMAT (in)) {
  case GST_VIDEO_FORMAT_RGB:
    return cv::COLOR_RGB2YUV_I420;
  case GST_VIDEO_FORMAT_BGR:
    return cv::COLOR_BGR2YUV_I420;
  case GST_VIDEO_FORMAT_RGBx:
  case GST_VIDEO_FORMAT_RGBA:
    return cv::COLOR_RGBA2YUV_I420;
  case GST_VIDEO_FORMAT_BGRx:
  case GST_VIDEO_FORMAT_BGRA:
    return cv::COLOR_BGRA2YUV_I420;
  default:
    return -1;
  }
}

/* Any raw video on one side is I420 on the other and back: only the format
 * and what describes its colours change.  A frame's own I420 is offered
 * first — BT.601 with cosited chroma for packed RGB that OpenCV converts
 * (what OpenCV makes); for YUV its own colours and chroma siting (so that
 * I420 passes through), then its chroma siting alone, as videoconvert
 * prefers — then any I420, so that a downstream asking for other colours
 * still gets them (from GstVideoConverter).  Fixation takes the first. */
static GstCaps *
gst_i420_convert_transform_caps (GstBaseTransform *trans, GstPadDirection direction, GstCaps *caps,
                                 GstCaps *filter)
{
  GstCaps *out = gst_caps_is_any (caps) ? gst_caps_new_any () : gst_caps_new_empty ();
  for (guint i = 0; !gst_caps_is_any (caps) && i < gst_caps_get_size (caps); i++) {
    GstCapsFeatures *f = gst_caps_get_features (caps, i);
    if (f && !gst_caps_features_is_equal (f, GST_CAPS_FEATURES_MEMORY_SYSTEM_MEMORY))
      continue;
    const GstStructure *in = gst_caps_get_structure (caps, i);
    GstStructure *any = gst_structure_copy (in);
    gst_structure_remove_fields (any, "format", "colorimetry", "chroma-site", NULL);
    GstCaps *one = gst_caps_new_full (gst_structure_copy (in), NULL);
    GstVideoInfo info;
    if (direction == GST_PAD_SINK && gst_caps_is_fixed (one) && gst_video_info_from_caps (&info, one)) {
      if (opencv_code (&info, nullptr) >= 0) {
        GstStructure *own = gst_structure_copy (any);
        gst_structure_set (own, "colorimetry", G_TYPE_STRING, "bt601", "chroma-site", G_TYPE_STRING,
                           "cosited", NULL);
        out = gst_caps_merge_structure (out, own);
      } else if (GST_VIDEO_INFO_IS_YUV (&info)) {
        // Its colours and chroma siting; else its chroma siting at least.
        for (const char *fields : {"colorimetry,chroma-site", "chroma-site"}) {
          GstStructure *own = gst_structure_copy (any);
          g_auto (GStrv) names = g_strsplit (fields, ",", -1);
          for (char **name = names; *name; name++)
            if (const GValue *v = gst_structure_get_value (in, *name))
              gst_structure_set_value (own, *name, v);
          out = gst_caps_merge_structure (out, own);
        }
      }
    }
    gst_caps_unref (one);
    out = gst_caps_merge_structure (out, any);
  }
  GstPadTemplate *templ = gst_element_class_get_pad_template (GST_ELEMENT_GET_CLASS (trans),
                                                              direction == GST_PAD_SINK ? "src" : "sink");
  GstCaps *templ_caps = gst_pad_template_get_caps (templ);
  GstCaps *res = gst_caps_intersect_full (out, templ_caps, GST_CAPS_INTERSECT_FIRST);
  gst_caps_unref (templ_caps);
  gst_caps_unref (out);
  if (filter) {
    GstCaps *t = gst_caps_intersect_full (filter, res, GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref (res);
    res = t;
  }
  GST_DEBUG_OBJECT (trans, "%" GST_PTR_FORMAT " -> %" GST_PTR_FORMAT, caps, res);
  return res;
}

/* The frame keeps its size and its place on the slide: every meta goes
 * along (StageMeta, FeaturesMeta, the capture time) except those that
 * describe its colours, as videoconvert does. */
static gboolean
gst_i420_convert_transform_meta (GstBaseTransform *, GstBuffer *, GstMeta *meta, GstBuffer *)
{
  return !gst_meta_api_type_has_tag (meta->info->api,
                                     g_quark_from_static_string (GST_META_TAG_VIDEO_COLORSPACE_STR));
}

static void
clear_conversion (GstI420Convert *self)
{
  g_clear_pointer (&self->converter, gst_video_converter_free);
  delete self->scratch;
  self->scratch = nullptr;
  self->cv_code = -1;
}

static gboolean
gst_i420_convert_set_info (GstVideoFilter *filter, GstCaps *incaps, GstVideoInfo *in_info, GstCaps *outcaps,
                           GstVideoInfo *out_info)
{
  GstI420Convert *self = GST_I420_CONVERT (filter);
  clear_conversion (self);
  if (GST_VIDEO_INFO_WIDTH (in_info) != GST_VIDEO_INFO_WIDTH (out_info)
      || GST_VIDEO_INFO_HEIGHT (in_info) != GST_VIDEO_INFO_HEIGHT (out_info)) {
    GST_ERROR_OBJECT (self, "i420convert does not scale: %dx%d in, %dx%d out", GST_VIDEO_INFO_WIDTH (in_info),
                      GST_VIDEO_INFO_HEIGHT (in_info), GST_VIDEO_INFO_WIDTH (out_info),
                      GST_VIDEO_INFO_HEIGHT (out_info));
    return FALSE;
  }
  if (gst_base_transform_is_passthrough (GST_BASE_TRANSFORM (self)))
    return TRUE;
  self->cv_code = opencv_code (in_info, out_info);
  if (self->cv_code < 0) {
    // videoconvert's defaults, so that the same caps give the same pixels.
    self->converter = gst_video_converter_new (
        in_info, out_info,
        gst_structure_new ("GstVideoConvertConfig", GST_VIDEO_CONVERTER_OPT_DITHER_METHOD,
                           GST_TYPE_VIDEO_DITHER_METHOD, GST_VIDEO_DITHER_BAYER,
                           GST_VIDEO_CONVERTER_OPT_DITHER_QUANTIZATION, G_TYPE_UINT, 1u,
                           GST_VIDEO_CONVERTER_OPT_CHROMA_RESAMPLER_METHOD, GST_TYPE_VIDEO_RESAMPLER_METHOD,
                           GST_VIDEO_RESAMPLER_METHOD_LINEAR, NULL));
    if (!self->converter) {
      GST_ERROR_OBJECT (self, "no conversion from %" GST_PTR_FORMAT " to %" GST_PTR_FORMAT, incaps, outcaps);
      return FALSE;
    }
  }
  GST_DEBUG_OBJECT (self, "%s from %s", self->cv_code >= 0 ? "OpenCV" : "GstVideoConverter",
                    gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (in_info)));
  return TRUE;
}

/* OpenCV writes I420 as one block: the Y plane, then U, then V, each row
 * as wide as the plane.  Whether the output frame is laid out so. */
static bool
planes_contiguous (const GstVideoFrame *f)
{
  const int w = GST_VIDEO_FRAME_WIDTH (f), h = GST_VIDEO_FRAME_HEIGHT (f);
  const guint8 *y = (const guint8 *)GST_VIDEO_FRAME_PLANE_DATA (f, 0);
  return GST_VIDEO_FRAME_PLANE_STRIDE (f, 0) == w && GST_VIDEO_FRAME_PLANE_STRIDE (f, 1) == w / 2
         && GST_VIDEO_FRAME_PLANE_STRIDE (f, 2) == w / 2
         && (const guint8 *)GST_VIDEO_FRAME_PLANE_DATA (f, 1) == y + (size_t)w * h
         && (const guint8 *)GST_VIDEO_FRAME_PLANE_DATA (f, 2) == y + (size_t)w * h * 5 / 4;
}

static void
convert_with_opencv (GstI420Convert *self, GstVideoFrame *in, GstVideoFrame *out)
{
  const int w = GST_VIDEO_FRAME_WIDTH (in), h = GST_VIDEO_FRAME_HEIGHT (in);
  const cv::Mat src (h, w, CV_8UC (GST_VIDEO_FRAME_COMP_PSTRIDE (in, 0)), GST_VIDEO_FRAME_PLANE_DATA (in, 0),
                     GST_VIDEO_FRAME_PLANE_STRIDE (in, 0));
  if (planes_contiguous (out)) {
    cv::Mat dst (h * 3 / 2, w, CV_8UC1, GST_VIDEO_FRAME_PLANE_DATA (out, 0));
    cv::cvtColor (src, dst, self->cv_code);
    return;
  }
  if (!self->scratch)
    self->scratch = new cv::Mat ();
  cv::cvtColor (src, *self->scratch, self->cv_code);
  const guint8 *p = self->scratch->data;
  for (int plane = 0; plane < 3; plane++) {
    const int pw = plane ? w / 2 : w, ph = plane ? h / 2 : h;
    guint8 *d = (guint8 *)GST_VIDEO_FRAME_PLANE_DATA (out, plane);
    const int stride = GST_VIDEO_FRAME_PLANE_STRIDE (out, plane);
    for (int row = 0; row < ph; row++, p += pw)
      std::memcpy (d + (size_t)row * stride, p, pw);
  }
}

static GstFlowReturn
gst_i420_convert_transform_frame (GstVideoFilter *filter, GstVideoFrame *in, GstVideoFrame *out)
{
  GstI420Convert *self = GST_I420_CONVERT (filter);
  if (self->converter) {
    gst_video_converter_frame (self->converter, in, out);
    return GST_FLOW_OK;
  }
  try {
    convert_with_opencv (self, in, out);
  } catch (const cv::Exception &e) {
    GST_ELEMENT_ERROR (self, STREAM, FAILED, ("Could not convert the frame to I420."), ("%s", e.what ()));
    return GST_FLOW_ERROR;
  }
  return GST_FLOW_OK;
}

static gboolean
gst_i420_convert_stop (GstBaseTransform *trans)
{
  clear_conversion (GST_I420_CONVERT (trans));
  return TRUE;
}

static void
gst_i420_convert_finalize (GObject *object)
{
  clear_conversion (GST_I420_CONVERT (object));
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_i420_convert_class_init (GstI420ConvertClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  GstVideoFilterClass *filter_class = GST_VIDEO_FILTER_CLASS (klass);

  gobject_class->finalize = gst_i420_convert_finalize;
  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (element_class, "I420 conversion for encoders",
                                         "Filter/Converter/Video",
                                         "Converts raw video to I420, packed RGB through OpenCV's vectorised "
                                         "conversion",
                                         "LiveMicro");
  trans_class->transform_caps = gst_i420_convert_transform_caps;
  trans_class->stop = gst_i420_convert_stop;
  trans_class->transform_meta = gst_i420_convert_transform_meta;
  trans_class->passthrough_on_same_caps = TRUE;
  filter_class->set_info = gst_i420_convert_set_info;
  filter_class->transform_frame = gst_i420_convert_transform_frame;
}

static void
gst_i420_convert_init (GstI420Convert *self)
{
  self->cv_code = -1;
}
