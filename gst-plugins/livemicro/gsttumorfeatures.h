#pragma once

#include <gst/video/gstvideofilter.h>

G_BEGIN_DECLS

#define GST_TYPE_TUMOR_FEATURES (gst_tumor_features_get_type ())
G_DECLARE_FINAL_TYPE (GstTumorFeatures, gst_tumor_features, GST, TUMOR_FEATURES, GstVideoFilter)
GST_ELEMENT_REGISTER_DECLARE (tumorfeatures);

#define GST_TYPE_TUMOR_FEATURES_STAIN (gst_tumor_features_stain_get_type ())
GType gst_tumor_features_stain_get_type (void);

G_END_DECLS
