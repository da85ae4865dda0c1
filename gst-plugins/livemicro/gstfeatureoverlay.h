#pragma once

#include <gst/video/gstvideofilter.h>

G_BEGIN_DECLS

#define GST_TYPE_FEATURE_OVERLAY (gst_feature_overlay_get_type ())
G_DECLARE_FINAL_TYPE (GstFeatureOverlay, gst_feature_overlay, GST, FEATURE_OVERLAY, GstVideoFilter)
GST_ELEMENT_REGISTER_DECLARE (featureoverlay);

#define GST_TYPE_FEATURE_OVERLAY_COLOR_BY (gst_feature_overlay_color_by_get_type ())
GType gst_feature_overlay_color_by_get_type (void);

/* What the viewer sees (the read-only "state" property and the
 * "featureoverlay" element message). */
typedef enum {
  GST_FEATURE_OVERLAY_STATE_NONE,
  GST_FEATURE_OVERLAY_STATE_CURRENT,
  GST_FEATURE_OVERLAY_STATE_MOVED,
  GST_FEATURE_OVERLAY_STATE_UPDATING,
} GstFeatureOverlayState;

#define GST_TYPE_FEATURE_OVERLAY_STATE (gst_feature_overlay_state_get_type ())
GType gst_feature_overlay_state_get_type (void);

G_END_DECLS
