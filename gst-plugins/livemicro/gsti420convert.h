#pragma once

#include <gst/video/gstvideofilter.h>

G_BEGIN_DECLS

#define GST_TYPE_I420_CONVERT (gst_i420_convert_get_type ())
G_DECLARE_FINAL_TYPE (GstI420Convert, gst_i420_convert, GST, I420_CONVERT, GstVideoFilter)
GST_ELEMENT_REGISTER_DECLARE (i420convert);

G_END_DECLS
