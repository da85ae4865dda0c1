/* LiveMicro — StageMeta: where a video frame was taken on the slide.
 *
 * Attached by microscopesrc to every buffer.  Coordinates are micrometres on
 * the slide, from its top-left corner, x along the long side.  (stage_x_um,
 * stage_y_um) is the slide point at the centre of the frame; frame pixel
 * (px, py) — pixel centres at +0.5 — shows slide point
 *   x_um = stage_x_um + (px + 0.5 − frame_width / 2) · um_per_px
 *   y_um = stage_y_um + (py + 0.5 − frame_height / 2) · um_per_px
 * (see livemicro_stage_meta_frame_to_slide()).
 *
 * The meta is tagged "video", "size" and "orientation": videoconvert keeps
 * it, videoscale rescales it (um_per_px, frame size; a non-uniform scale
 * drops it), and elements that crop or flip drop it, so that nothing
 * downstream maps a frame to the slide with a stale geometry.
 */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

#ifndef LIVEMICRO_API
#define LIVEMICRO_API __attribute__ ((visibility ("default")))
#endif

#define LIVEMICRO_STAGE_META_API_TYPE (livemicro_stage_meta_api_get_type ())
#define LIVEMICRO_STAGE_META_INFO (livemicro_stage_meta_get_info ())

typedef struct _LivemicroStageMeta LivemicroStageMeta;

/**
 * LivemicroStageMeta:
 * @meta: parent #GstMeta
 * @stage_x_um: slide x at the frame centre, µm
 * @stage_y_um: slide y at the frame centre, µm
 * @stage_z_um: focus drive position, µm
 * @objective: objective magnification (4, 10, 20, 40, ...)
 * @um_per_px: size of one frame pixel on the slide, µm
 * @frame_width: width of the frame these values refer to, px
 * @frame_height: height of the frame these values refer to, px
 * @capture_unix_us: wall-clock time of the exposure, µs since the Unix epoch
 * @moving: TRUE when the stage or the focus was moving during the exposure
 * @frame_number: the camera's frame counter
 */
struct _LivemicroStageMeta {
  GstMeta meta;

  gdouble stage_x_um;
  gdouble stage_y_um;
  gdouble stage_z_um;
  guint objective;
  gdouble um_per_px;
  guint frame_width;
  guint frame_height;
  gint64 capture_unix_us;
  gboolean moving;
  guint64 frame_number;
};

LIVEMICRO_API GType livemicro_stage_meta_api_get_type (void);
LIVEMICRO_API const GstMetaInfo *livemicro_stage_meta_get_info (void);

/* Adds an empty (zeroed) StageMeta; fill in its fields. */
LIVEMICRO_API LivemicroStageMeta *livemicro_buffer_add_stage_meta (GstBuffer *buffer);
LIVEMICRO_API LivemicroStageMeta *livemicro_buffer_get_stage_meta (GstBuffer *buffer);

LIVEMICRO_API void livemicro_stage_meta_frame_to_slide (const LivemicroStageMeta *meta, gdouble px,
                                                        gdouble py, gdouble *x_um, gdouble *y_um);
LIVEMICRO_API void livemicro_stage_meta_slide_to_frame (const LivemicroStageMeta *meta, gdouble x_um,
                                                        gdouble y_um, gdouble *px, gdouble *py);

/* The meta as a GstStructure named "stage" (for messages and JSON). */
LIVEMICRO_API GstStructure *livemicro_stage_meta_to_structure (const LivemicroStageMeta *meta);

G_END_DECLS
