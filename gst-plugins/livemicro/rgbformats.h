// Packed RGB video formats the analysis and overlay elements work on, and
// where R, G and B sit in a pixel.
#pragma once

#include <gst/base/gstbasetransform.h>
#include <gst/video/video.h>

#include <array>

#define LIVEMICRO_RGB_FORMATS "{ RGB, BGR, RGBx, BGRx, xRGB, xBGR, RGBA, BGRA, ARGB, ABGR }"

namespace livemicro {

// Channel count and the indices of R, G, B; false for other formats.
inline bool
rgb_layout (GstVideoFormat f, int &channels, std::array<int, 3> &rgb)
{
  switch (f) {
  case GST_VIDEO_FORMAT_RGB:
    channels = 3;
    rgb = {0, 1, 2};
    return true;
  case GST_VIDEO_FORMAT_BGR:
    channels = 3;
    rgb = {2, 1, 0};
    return true;
  case GST_VIDEO_FORMAT_RGBx:
  case GST_VIDEO_FORMAT_RGBA:
    channels = 4;
    rgb = {0, 1, 2};
    return true;
  case GST_VIDEO_FORMAT_BGRx:
  case GST_VIDEO_FORMAT_BGRA:
    channels = 4;
    rgb = {2, 1, 0};
    return true;
  case GST_VIDEO_FORMAT_xRGB:
  case GST_VIDEO_FORMAT_ARGB:
    channels = 4;
    rgb = {1, 2, 3};
    return true;
  case GST_VIDEO_FORMAT_xBGR:
  case GST_VIDEO_FORMAT_ABGR:
    channels = 4;
    rgb = {3, 2, 1};
    return true;
  default:
    return false;
  }
}

// GstBaseTransform::accept_caps for these elements: any fixed raw video,
// so that a forced unsupported format reaches sink_event below and gets a
// clear error (the pad templates still advertise only packed RGB).
inline gboolean
accept_any_raw_video (GstBaseTransform *trans, GstPadDirection direction, GstCaps *caps)
{
  GstCaps *raw = gst_caps_from_string ("video/x-raw");
  gboolean ok = gst_caps_is_fixed (caps) && gst_caps_can_intersect (caps, raw);
  gst_caps_unref (raw);
  return ok;
}

// For GstBaseTransform::sink_event: a CAPS event with a format other than
// packed RGB posts an error naming the format and the fix ("put videoconvert
// in front of it") and is refused (TRUE returned when it was handled).
inline bool
refuse_non_rgb_caps (GstBaseTransform *trans, GstEvent *event, const char *what)
{
  if (GST_EVENT_TYPE (event) != GST_EVENT_CAPS)
    return false;
  GstCaps *caps;
  gst_event_parse_caps (event, &caps);
  GstVideoInfo info;
  int channels;
  std::array<int, 3> rgb;
  if (gst_video_info_from_caps (&info, caps) && rgb_layout (GST_VIDEO_INFO_FORMAT (&info), channels, rgb))
    return false;
  const GstStructure *st = gst_caps_get_structure (caps, 0);
  const gchar *format = st ? gst_structure_get_string (st, "format") : nullptr;
  GST_ELEMENT_ERROR (trans, CORE, NEGOTIATION,
                     ("%s packed RGB video (%s), not %s: put videoconvert in front of it", what,
                      LIVEMICRO_RGB_FORMATS, format ? format : "this stream"),
                     ("caps %" GST_PTR_FORMAT, caps));
  return true;
}

} // namespace livemicro
