/* LiveMicro — FeaturesMeta: what tumorfeatures measured on a video frame.
 *
 * Attached by tumorfeatures to every buffer once a first analysis has
 * finished: the per-frame summary (nuclei count and density, nuclear size,
 * shape and chromatin statistics, pleomorphism score, mitotic-figure
 * candidates, a grade cue that is NOT a diagnosis, and a quality flag), and
 * optionally the list of nuclei with their contours.
 *
 * `analysed` is TRUE when the result was computed on this very frame; on
 * other frames (interval > 1, or analysis still running) the latest result
 * is carried with analysed = FALSE and `analysed_pts` naming its frame.
 *
 * Summary numbers other than the tissue figures are meaningful only when
 * `quality` is LIVEMICRO_FEATURES_QUALITY_OK; otherwise counts are 0 and the
 * rest NaN.
 *
 * Like StageMeta the meta is tagged "video", "size" and "orientation": the
 * per-nucleus pixel coordinates are frame geometry.  videoconvert keeps it,
 * videoscale rescales the coordinates (a non-uniform scale drops the nuclei),
 * and any other transform (crop, flip, ...) keeps the summary but drops the
 * per-nucleus list.
 */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

#ifndef LIVEMICRO_API
#define LIVEMICRO_API __attribute__ ((visibility ("default")))
#endif

#define LIVEMICRO_FEATURES_META_API_TYPE (livemicro_features_meta_api_get_type ())
#define LIVEMICRO_FEATURES_META_INFO (livemicro_features_meta_get_info ())

/**
 * LivemicroFeaturesQuality:
 * @LIVEMICRO_FEATURES_QUALITY_OK: numbers are meaningful
 * @LIVEMICRO_FEATURES_QUALITY_BLANK: empty light path, blank glass or a dark frame
 * @LIVEMICRO_FEATURES_QUALITY_NO_TISSUE: structure but (almost) no stained tissue
 * @LIVEMICRO_FEATURES_QUALITY_LOW_RESOLUTION: pixels too coarse to resolve nuclei
 * @LIVEMICRO_FEATURES_QUALITY_WRONG_STAIN: not an H&E stain (e.g. DAB/IHC)
 * @LIVEMICRO_FEATURES_QUALITY_OUT_OF_FOCUS: tissue present but blurred
 */
typedef enum {
  LIVEMICRO_FEATURES_QUALITY_OK = 0,
  LIVEMICRO_FEATURES_QUALITY_BLANK,
  LIVEMICRO_FEATURES_QUALITY_NO_TISSUE,
  LIVEMICRO_FEATURES_QUALITY_LOW_RESOLUTION,
  LIVEMICRO_FEATURES_QUALITY_WRONG_STAIN,
  LIVEMICRO_FEATURES_QUALITY_OUT_OF_FOCUS,
} LivemicroFeaturesQuality;

/**
 * LivemicroNucleus:
 * @x_px: centroid x in frame pixels (pixel i spans [i, i+1))
 * @y_px: centroid y in frame pixels
 * @x_um: centroid on the slide, µm (NaN when the frame had no StageMeta)
 * @y_um: centroid on the slide, µm (NaN when the frame had no StageMeta)
 * @area_um2: area, µm²
 * @perimeter_um: perimeter, µm
 * @circularity: 4π·area/perimeter², 1 for a disc
 * @elongation: major/minor axis of the inertia ellipse, ≥ 1
 * @solidity: area / convex hull area
 * @mean_h_od: mean hematoxylin optical density (decadic)
 * @mitotic_candidate: TRUE when it looks like a mitotic figure (see docs/analysis.md)
 * @n_contour: number of contour points
 * @contour: @n_contour (x, y) pairs in frame pixels, owned by the meta
 */
typedef struct {
  gfloat x_px, y_px;
  gdouble x_um, y_um;
  gfloat area_um2, perimeter_um, circularity, elongation, solidity, mean_h_od;
  gboolean mitotic_candidate;
  guint n_contour;
  gfloat *contour;
} LivemicroNucleus;

typedef struct _LivemicroFeaturesMeta LivemicroFeaturesMeta;

/**
 * LivemicroFeaturesMeta:
 * @meta: parent #GstMeta
 * @analysed: TRUE when computed on this frame, FALSE when carried over
 * @analysed_pts: PTS of the frame the result was computed on
 * @frames_analysed: analyses finished since the element started
 * @frames_skipped: frames due for analysis but skipped because the previous
 *     analysis was still running, since the element started
 * @quality: what makes the numbers meaningless, or OK
 * @frame_width: width of the frame the pixel coordinates refer to
 * @frame_height: height of the frame the pixel coordinates refer to
 * @um_per_px: µm per frame pixel used
 * @working_um_per_px: µm per pixel the segmentation ran at
 * @tissue_fraction: share of the frame covered by tissue
 * @tissue_area_mm2: tissue area in the frame, mm²
 * @nuclei_count: nuclei found
 * @nuclei_per_mm2: nuclei per mm² of tissue
 * @mean_area_um2: mean nuclear area, µm²
 * @cv_area: coefficient of variation of nuclear area
 * @mean_circularity: mean nuclear circularity
 * @cv_h_od: coefficient of variation of the nuclei's mean H OD (chromatin)
 * @size_ratio: √(75th percentile area / reference area)
 * @he_ratio: mean hematoxylin / mean eosin OD over tissue
 * @mean_h_od: mean hematoxylin OD over tissue
 * @mean_e_od: mean eosin OD over tissue
 * @pleomorphism: nuclear pleomorphism score 1–3 (0: not scored, < 20 nuclei)
 * @mitotic_candidates: mitotic-figure candidates in the frame
 * @mitotic_candidates_per_mm2: the same per mm² of tissue
 * @grade_cue: "low", "intermediate", "high" or NULL: an image-derived cue
 *     from pleomorphism and mitotic candidates, NOT a diagnosis (static string)
 * @focus: focus measure (fine/nuclear band energy ratio)
 * @dab_fraction: share of the tissue optical density on the DAB vector
 * @stain_macenko: TRUE when per-slide Macenko vectors were used
 * @analysis_ms: wall time of the analysis, ms
 * @n_nuclei: number of entries in @nuclei (0 unless emit-nuclei)
 * @nuclei: per-nucleus measurements, read-only: the buffers that carry the
 *     same result (copies, tee branches, carried-over frames) share one copy
 */
struct _LivemicroFeaturesMeta {
  GstMeta meta;

  gboolean analysed;
  GstClockTime analysed_pts;
  guint64 frames_analysed;
  guint64 frames_skipped;
  LivemicroFeaturesQuality quality;
  guint frame_width, frame_height;
  gdouble um_per_px, working_um_per_px;
  gdouble tissue_fraction, tissue_area_mm2;
  guint nuclei_count;
  gdouble nuclei_per_mm2, mean_area_um2, cv_area, mean_circularity, cv_h_od, size_ratio;
  gdouble he_ratio, mean_h_od, mean_e_od;
  guint pleomorphism;
  guint mitotic_candidates;
  gdouble mitotic_candidates_per_mm2;
  const gchar *grade_cue;
  gdouble focus, dab_fraction;
  gboolean stain_macenko;
  gdouble analysis_ms;

  guint n_nuclei;
  const LivemicroNucleus *nuclei;

  /*< private >*/
  gpointer nuclei_block;
};

LIVEMICRO_API GType livemicro_features_meta_api_get_type (void);
LIVEMICRO_API const GstMetaInfo *livemicro_features_meta_get_info (void);

/* Adds an empty FeaturesMeta (numbers NaN, no nuclei); fill in its fields. */
LIVEMICRO_API LivemicroFeaturesMeta *livemicro_buffer_add_features_meta (GstBuffer *buffer);
LIVEMICRO_API LivemicroFeaturesMeta *livemicro_buffer_get_features_meta (GstBuffer *buffer);

/* Copies the summary fields (not the nuclei) of @src into @dest. */
LIVEMICRO_API void livemicro_features_meta_copy_summary (LivemicroFeaturesMeta *dest,
                                                         const LivemicroFeaturesMeta *src);
/* Replaces the nuclei with a deep copy of @nuclei (contours included). */
LIVEMICRO_API void livemicro_features_meta_set_nuclei (LivemicroFeaturesMeta *meta,
                                                       const LivemicroNucleus *nuclei, guint n_nuclei);
/* Replaces the nuclei of @dest with those of @src, shared, not copied. */
LIVEMICRO_API void livemicro_features_meta_share_nuclei (LivemicroFeaturesMeta *dest,
                                                         const LivemicroFeaturesMeta *src);

LIVEMICRO_API const gchar *livemicro_features_quality_to_string (LivemicroFeaturesQuality q);

/* The summary as a GstStructure named "tumorfeatures", fields named as in
 * the JSON Lines output (see docs/analysis.md); fields that are not meaningful for the
 * quality are left out.  Free with gst_structure_free(). */
LIVEMICRO_API GstStructure *livemicro_features_meta_to_structure (const LivemicroFeaturesMeta *meta);

G_END_DECLS
