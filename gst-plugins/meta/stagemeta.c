#include "livemicro/stagemeta.h"

#include <gst/video/video.h>

GType
livemicro_stage_meta_api_get_type (void)
{
  static GType type = 0;
  static const gchar *tags[]
      = {GST_META_TAG_VIDEO_STR, GST_META_TAG_VIDEO_SIZE_STR, GST_META_TAG_VIDEO_ORIENTATION_STR, NULL};

  if (g_once_init_enter (&type)) {
    GType t = gst_meta_api_type_register ("LivemicroStageMetaAPI", tags);
    g_once_init_leave (&type, t);
  }
  return type;
}

static gboolean
livemicro_stage_meta_init (GstMeta *meta, gpointer params, GstBuffer *buffer)
{
  LivemicroStageMeta *m = (LivemicroStageMeta *)meta;

  m->stage_x_um = m->stage_y_um = m->stage_z_um = 0.0;
  m->objective = 0;
  m->um_per_px = 0.0;
  m->frame_width = m->frame_height = 0;
  m->capture_unix_us = 0;
  m->moving = FALSE;
  m->frame_number = 0;
  return TRUE;
}

static gboolean
livemicro_stage_meta_transform (GstBuffer *dest, GstMeta *meta, GstBuffer *buffer, GQuark type, gpointer data)
{
  LivemicroStageMeta *src = (LivemicroStageMeta *)meta;
  LivemicroStageMeta *dst;
  gdouble sx, sy;

  if (GST_META_TRANSFORM_IS_COPY (type)) {
    GstMetaTransformCopy *copy = data;
    /* A copy of part of the buffer (a payloader's fragment of an encoded
     * frame) is not that frame: it gets no StageMeta.  Not an error. */
    if (copy->region)
      return TRUE;
    dst = livemicro_buffer_add_stage_meta (dest);
    if (!dst)
      return FALSE;
    *dst = *src;
    dst->meta.info = meta->info;
    dst->meta.flags = meta->flags;
    return TRUE;
  }

  if (GST_VIDEO_META_TRANSFORM_IS_SCALE (type)) {
    GstVideoMetaTransform *trans = data;
    gint in_w = GST_VIDEO_INFO_WIDTH (trans->in_info);
    gint in_h = GST_VIDEO_INFO_HEIGHT (trans->in_info);
    gint out_w = GST_VIDEO_INFO_WIDTH (trans->out_info);
    gint out_h = GST_VIDEO_INFO_HEIGHT (trans->out_info);

    if (in_w <= 0 || in_h <= 0 || out_w <= 0 || out_h <= 0)
      return FALSE;
    sx = (gdouble)out_w / in_w;
    sy = (gdouble)out_h / in_h;
    /* Only a uniform scale keeps the pixel square on the slide. */
    if (ABS (sx - sy) > 0.01 * MAX (sx, sy)) {
      GST_WARNING ("dropping StageMeta: non-uniform scale %dx%d -> %dx%d", in_w, in_h, out_w, out_h);
      return FALSE;
    }
    dst = livemicro_buffer_add_stage_meta (dest);
    if (!dst)
      return FALSE;
    *dst = *src;
    dst->meta.info = meta->info;
    dst->meta.flags = meta->flags;
    dst->um_per_px = src->um_per_px * in_w / out_w;
    dst->frame_width = out_w;
    dst->frame_height = out_h;
    return TRUE;
  }

  /* Any other transform (crop, flip, ...) invalidates the geometry. */
  return FALSE;
}

const GstMetaInfo *
livemicro_stage_meta_get_info (void)
{
  static const GstMetaInfo *info = NULL;

  if (g_once_init_enter ((GstMetaInfo **)&info)) {
    const GstMetaInfo *i
        = gst_meta_register (LIVEMICRO_STAGE_META_API_TYPE, "LivemicroStageMeta", sizeof (LivemicroStageMeta),
                             livemicro_stage_meta_init, NULL, livemicro_stage_meta_transform);
    g_once_init_leave ((GstMetaInfo **)&info, (GstMetaInfo *)i);
  }
  return info;
}

LivemicroStageMeta *
livemicro_buffer_add_stage_meta (GstBuffer *buffer)
{
  g_return_val_if_fail (GST_IS_BUFFER (buffer), NULL);
  return (LivemicroStageMeta *)gst_buffer_add_meta (buffer, LIVEMICRO_STAGE_META_INFO, NULL);
}

LivemicroStageMeta *
livemicro_buffer_get_stage_meta (GstBuffer *buffer)
{
  return (LivemicroStageMeta *)gst_buffer_get_meta (buffer, LIVEMICRO_STAGE_META_API_TYPE);
}

void
livemicro_stage_meta_frame_to_slide (const LivemicroStageMeta *meta, gdouble px, gdouble py, gdouble *x_um,
                                     gdouble *y_um)
{
  g_return_if_fail (meta != NULL);
  *x_um = meta->stage_x_um + (px + 0.5 - meta->frame_width / 2.0) * meta->um_per_px;
  *y_um = meta->stage_y_um + (py + 0.5 - meta->frame_height / 2.0) * meta->um_per_px;
}

void
livemicro_stage_meta_slide_to_frame (const LivemicroStageMeta *meta, gdouble x_um, gdouble y_um, gdouble *px,
                                     gdouble *py)
{
  g_return_if_fail (meta != NULL && meta->um_per_px > 0);
  *px = (x_um - meta->stage_x_um) / meta->um_per_px + meta->frame_width / 2.0 - 0.5;
  *py = (y_um - meta->stage_y_um) / meta->um_per_px + meta->frame_height / 2.0 - 0.5;
}

GstStructure *
livemicro_stage_meta_to_structure (const LivemicroStageMeta *meta)
{
  g_return_val_if_fail (meta != NULL, NULL);
  return gst_structure_new (
      "stage", "x_um", G_TYPE_DOUBLE, meta->stage_x_um, "y_um", G_TYPE_DOUBLE, meta->stage_y_um, "z_um",
      G_TYPE_DOUBLE, meta->stage_z_um, "objective", G_TYPE_UINT, meta->objective, "um_per_px", G_TYPE_DOUBLE,
      meta->um_per_px, "frame_width", G_TYPE_UINT, meta->frame_width, "frame_height", G_TYPE_UINT,
      meta->frame_height, "capture_unix_us", G_TYPE_INT64, meta->capture_unix_us, "moving", G_TYPE_BOOLEAN,
      meta->moving, "frame_number", G_TYPE_UINT64, meta->frame_number, NULL);
}
