#pragma once

#include <gst/base/gstpushsrc.h>

G_BEGIN_DECLS

#define GST_TYPE_MICROSCOPE_SRC (gst_microscope_src_get_type ())
G_DECLARE_FINAL_TYPE (GstMicroscopeSrc, gst_microscope_src, GST, MICROSCOPE_SRC, GstPushSrc)
GST_ELEMENT_REGISTER_DECLARE (microscopesrc);

G_END_DECLS
