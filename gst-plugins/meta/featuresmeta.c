#include "livemicro/featuresmeta.h"

#include <gst/video/video.h>
#include <math.h>
#include <string.h>

GType
livemicro_features_meta_api_get_type (void)
{
  static GType type = 0;
  static const gchar *tags[]
      = {GST_META_TAG_VIDEO_STR, GST_META_TAG_VIDEO_SIZE_STR, GST_META_TAG_VIDEO_ORIENTATION_STR, NULL};

  if (g_once_init_enter (&type)) {
    GType t = gst_meta_api_type_register ("LivemicroFeaturesMetaAPI", tags);
    g_once_init_leave (&type, t);
  }
  return type;
}

static gboolean
livemicro_features_meta_init (GstMeta *meta, gpointer params, GstBuffer *buffer)
{
  LivemicroFeaturesMeta *m = (LivemicroFeaturesMeta *)meta;
  GstMeta parent = m->meta;

  memset (m, 0, sizeof (*m));
  m->meta = parent;
  m->analysed_pts = GST_CLOCK_TIME_NONE;
  m->quality = LIVEMICRO_FEATURES_QUALITY_BLANK;
  m->nuclei_per_mm2 = m->mean_area_um2 = m->cv_area = m->mean_circularity = NAN;
  m->cv_h_od = m->size_ratio = m->he_ratio = m->mitotic_candidates_per_mm2 = NAN;
  return TRUE;
}

/* The nuclei of one result and all their contours in one allocation,
 * shared by every meta that carries the result: a tee, a copy or a carried
 * over frame costs a reference, not thousands of small copies. */
typedef struct {
  gint refcount;
  guint n;
  LivemicroNucleus nuclei[]; /* then the contours' floats */
} NucleiBlock;

static void
free_nuclei (LivemicroFeaturesMeta *m)
{
  NucleiBlock *b = m->nuclei_block;

  if (b && g_atomic_int_dec_and_test (&b->refcount))
    g_free (b);
  m->nuclei_block = NULL;
  m->nuclei = NULL;
  m->n_nuclei = 0;
}

/* A new block holding a copy of @nuclei; its contours point into it. */
static NucleiBlock *
nuclei_block_new (const LivemicroNucleus *nuclei, guint n)
{
  gsize floats = 0;
  NucleiBlock *b;
  gfloat *f;

  for (guint i = 0; i < n; i++)
    floats += 2 * (gsize)nuclei[i].n_contour;
  b = g_malloc (sizeof (NucleiBlock) + n * sizeof (LivemicroNucleus) + floats * sizeof (gfloat));
  b->refcount = 1;
  b->n = n;
  memcpy (b->nuclei, nuclei, n * sizeof (LivemicroNucleus));
  f = (gfloat *)(b->nuclei + n);
  for (guint i = 0; i < n; i++) {
    gsize len = 2 * (gsize)nuclei[i].n_contour;
    if (len)
      memcpy (f, nuclei[i].contour, len * sizeof (gfloat));
    b->nuclei[i].contour = len ? f : NULL;
    f += len;
  }
  return b;
}

static void
livemicro_features_meta_free (GstMeta *meta, GstBuffer *buffer)
{
  free_nuclei ((LivemicroFeaturesMeta *)meta);
}

void
livemicro_features_meta_copy_summary (LivemicroFeaturesMeta *dest, const LivemicroFeaturesMeta *src)
{
  GstMeta parent;
  guint n;
  const LivemicroNucleus *nuclei;
  gpointer block;

  g_return_if_fail (dest != NULL && src != NULL);
  parent = dest->meta;
  n = dest->n_nuclei;
  nuclei = dest->nuclei;
  block = dest->nuclei_block;
  *dest = *src;
  dest->meta = parent;
  dest->n_nuclei = n;
  dest->nuclei = nuclei;
  dest->nuclei_block = block;
}

void
livemicro_features_meta_set_nuclei (LivemicroFeaturesMeta *meta, const LivemicroNucleus *nuclei,
                                    guint n_nuclei)
{
  NucleiBlock *b;

  g_return_if_fail (meta != NULL);
  g_return_if_fail (nuclei != NULL || n_nuclei == 0);
  if (n_nuclei == 0) {
    free_nuclei (meta);
    return;
  }
  /* Copy before letting go: @nuclei may be this meta's own. */
  b = nuclei_block_new (nuclei, n_nuclei);
  free_nuclei (meta);
  meta->nuclei_block = b;
  meta->nuclei = b->nuclei;
  meta->n_nuclei = n_nuclei;
}

void
livemicro_features_meta_share_nuclei (LivemicroFeaturesMeta *dest, const LivemicroFeaturesMeta *src)
{
  NucleiBlock *b;

  g_return_if_fail (dest != NULL && src != NULL);
  if (dest == src)
    return;
  b = src->nuclei_block;
  if (b)
    g_atomic_int_inc (&b->refcount);
  free_nuclei (dest);
  dest->nuclei_block = b;
  dest->nuclei = b ? b->nuclei : NULL;
  dest->n_nuclei = b ? b->n : 0;
}

static gboolean
livemicro_features_meta_transform (GstBuffer *dest, GstMeta *meta, GstBuffer *buffer, GQuark type,
                                   gpointer data)
{
  LivemicroFeaturesMeta *src = (LivemicroFeaturesMeta *)meta;
  LivemicroFeaturesMeta *dst;

  if (GST_META_TRANSFORM_IS_COPY (type)) {
    GstMetaTransformCopy *copy = data;
    dst = livemicro_buffer_add_features_meta (dest);
    if (!dst)
      return FALSE;
    livemicro_features_meta_copy_summary (dst, src);
    /* A part of the buffer is another geometry: keep the summary only. */
    if (!copy->region)
      livemicro_features_meta_share_nuclei (dst, src);
    return TRUE;
  }

  if (GST_VIDEO_META_TRANSFORM_IS_SCALE (type)) {
    GstVideoMetaTransform *trans = data;
    gint in_w = GST_VIDEO_INFO_WIDTH (trans->in_info);
    gint in_h = GST_VIDEO_INFO_HEIGHT (trans->in_info);
    gint out_w = GST_VIDEO_INFO_WIDTH (trans->out_info);
    gint out_h = GST_VIDEO_INFO_HEIGHT (trans->out_info);
    gdouble sx, sy;

    dst = livemicro_buffer_add_features_meta (dest);
    if (!dst)
      return FALSE;
    livemicro_features_meta_copy_summary (dst, src);
    if (in_w <= 0 || in_h <= 0 || out_w <= 0 || out_h <= 0)
      return TRUE;
    sx = (gdouble)out_w / in_w;
    sy = (gdouble)out_h / in_h;
    dst->frame_width = out_w;
    dst->frame_height = out_h;
    /* Only a uniform scale keeps the nuclei's shapes; else summary only. */
    if (fabs (sx - sy) > 0.01 * MAX (sx, sy))
      return TRUE;
    dst->um_per_px = src->um_per_px / sx;
    dst->working_um_per_px = src->working_um_per_px;
    livemicro_features_meta_set_nuclei (dst, src->nuclei, src->n_nuclei);
    for (guint i = 0; i < dst->n_nuclei; i++) {
      /* A block of its own, not shared yet: safe to rescale in place. */
      LivemicroNucleus *n = &((NucleiBlock *)dst->nuclei_block)->nuclei[i];
      n->x_px *= sx;
      n->y_px *= sy;
      for (guint k = 0; k < n->n_contour; k++) {
        n->contour[2 * k] *= sx;
        n->contour[2 * k + 1] *= sy;
      }
    }
    return TRUE;
  }

  /* Any other transform (crop, flip, ...): the pixel geometry is stale, the
   * summary of the analysed field is still true. */
  dst = livemicro_buffer_add_features_meta (dest);
  if (!dst)
    return FALSE;
  livemicro_features_meta_copy_summary (dst, src);
  return TRUE;
}

const GstMetaInfo *
livemicro_features_meta_get_info (void)
{
  static const GstMetaInfo *info = NULL;

  if (g_once_init_enter ((GstMetaInfo **)&info)) {
    const GstMetaInfo *i = gst_meta_register (
        LIVEMICRO_FEATURES_META_API_TYPE, "LivemicroFeaturesMeta", sizeof (LivemicroFeaturesMeta),
        livemicro_features_meta_init, livemicro_features_meta_free, livemicro_features_meta_transform);
    g_once_init_leave ((GstMetaInfo **)&info, (GstMetaInfo *)i);
  }
  return info;
}

LivemicroFeaturesMeta *
livemicro_buffer_add_features_meta (GstBuffer *buffer)
{
  g_return_val_if_fail (GST_IS_BUFFER (buffer), NULL);
  return (LivemicroFeaturesMeta *)gst_buffer_add_meta (buffer, LIVEMICRO_FEATURES_META_INFO, NULL);
}

LivemicroFeaturesMeta *
livemicro_buffer_get_features_meta (GstBuffer *buffer)
{
  return (LivemicroFeaturesMeta *)gst_buffer_get_meta (buffer, LIVEMICRO_FEATURES_META_API_TYPE);
}

const gchar *
livemicro_features_quality_to_string (LivemicroFeaturesQuality q)
{
  switch (q) {
  case LIVEMICRO_FEATURES_QUALITY_OK:
    return "ok";
  case LIVEMICRO_FEATURES_QUALITY_BLANK:
    return "blank";
  case LIVEMICRO_FEATURES_QUALITY_NO_TISSUE:
    return "no_tissue";
  case LIVEMICRO_FEATURES_QUALITY_LOW_RESOLUTION:
    return "low_resolution";
  case LIVEMICRO_FEATURES_QUALITY_WRONG_STAIN:
    return "wrong_stain";
  case LIVEMICRO_FEATURES_QUALITY_OUT_OF_FOCUS:
    return "out_of_focus";
  }
  return "unknown";
}

static void
set_double_if_finite (GstStructure *s, const gchar *name, gdouble v)
{
  if (isfinite (v))
    gst_structure_set (s, name, G_TYPE_DOUBLE, v, NULL);
}

GstStructure *
livemicro_features_meta_to_structure (const LivemicroFeaturesMeta *m)
{
  GstStructure *s;

  g_return_val_if_fail (m != NULL, NULL);
  s = gst_structure_new (
      "tumorfeatures", "analysed", G_TYPE_BOOLEAN, m->analysed, "quality", G_TYPE_STRING,
      livemicro_features_quality_to_string (m->quality), "frames_analysed", G_TYPE_UINT64, m->frames_analysed,
      "frames_skipped", G_TYPE_UINT64, m->frames_skipped, "frame_width", G_TYPE_UINT, m->frame_width,
      "frame_height", G_TYPE_UINT, m->frame_height, "um_per_px", G_TYPE_DOUBLE, m->um_per_px,
      "working_um_per_px", G_TYPE_DOUBLE, m->working_um_per_px, "stain", G_TYPE_STRING,
      m->stain_macenko ? "macenko" : "ruifrok-johnston", "tissue_fraction", G_TYPE_DOUBLE, m->tissue_fraction,
      "tissue_area_mm2", G_TYPE_DOUBLE, m->tissue_area_mm2, "mean_h_od", G_TYPE_DOUBLE, m->mean_h_od,
      "mean_e_od", G_TYPE_DOUBLE, m->mean_e_od, "focus", G_TYPE_DOUBLE, m->focus, "dab_fraction",
      G_TYPE_DOUBLE, m->dab_fraction, "analysis_ms", G_TYPE_DOUBLE, m->analysis_ms, NULL);
  if (GST_CLOCK_TIME_IS_VALID (m->analysed_pts))
    gst_structure_set (s, "analysed_pts", G_TYPE_UINT64, m->analysed_pts, NULL);
  set_double_if_finite (s, "he_ratio", m->he_ratio);
  if (m->quality == LIVEMICRO_FEATURES_QUALITY_OK) {
    gst_structure_set (s, "nuclei_count", G_TYPE_UINT, m->nuclei_count, "mitotic_candidates", G_TYPE_UINT,
                       m->mitotic_candidates, "pleomorphism", G_TYPE_UINT, m->pleomorphism, NULL);
    set_double_if_finite (s, "nuclei_per_mm2", m->nuclei_per_mm2);
    set_double_if_finite (s, "mean_area_um2", m->mean_area_um2);
    set_double_if_finite (s, "cv_area", m->cv_area);
    set_double_if_finite (s, "mean_circularity", m->mean_circularity);
    set_double_if_finite (s, "cv_h_od", m->cv_h_od);
    set_double_if_finite (s, "size_ratio", m->size_ratio);
    set_double_if_finite (s, "mitotic_candidates_per_mm2", m->mitotic_candidates_per_mm2);
    if (m->grade_cue)
      gst_structure_set (s, "grade_cue", G_TYPE_STRING, m->grade_cue, "grade_cue_note", G_TYPE_STRING,
                         "image-derived cue from pleomorphism and mitotic candidates, not a diagnosis", NULL);
  }
  return s;
}
