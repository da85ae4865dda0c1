#pragma once

#include <gst/video/gstvideofilter.h>

G_BEGIN_DECLS

#define GST_TYPE_PRIVACY_MASK (gst_privacy_mask_get_type ())
G_DECLARE_FINAL_TYPE (GstPrivacyMask, gst_privacy_mask, GST, PRIVACY_MASK, GstVideoFilter)
GST_ELEMENT_REGISTER_DECLARE (privacymask);

#define GST_TYPE_PRIVACY_MASK_METHOD (gst_privacy_mask_method_get_type ())
GType gst_privacy_mask_method_get_type (void);

#define GST_TYPE_PRIVACY_MASK_DETECTION_MODE (gst_privacy_mask_detection_mode_get_type ())
GType gst_privacy_mask_detection_mode_get_type (void);

G_END_DECLS
