/**
 * SECTION:element-tumorfeatures
 * @title: tumorfeatures
 *
 * Live H&E analysis next to the microscope: nuclei segmentation (a learned
 * nucleus model, or colour deconvolution with a threshold and a watershed)
 * and diagnosis-oriented features (nuclear density, size,
 * shape and chromatin statistics, a Nottingham-like pleomorphism score,
 * mitotic-figure candidates, a grade cue that is not a diagnosis, and a
 * quality flag).  The video passes through untouched.
 *
 * Nuclei are found by a learned nucleus model (#GstTumorFeatures:method
 * model, the default when its ONNX file loads: a small U-Net run through
 * OpenCV's DNN module at 0.5 µm per pixel whatever the objective, then a
 * marker-controlled watershed) or by the classical method (colour
 * deconvolution, threshold, distance-transform watershed).  The model file
 * is #GstTumorFeatures:model-location, else $LIVEMICRO_NUCLEI_MODEL, else
 * the installed <datadir>/livemicro/models/nuclei.onnx; it is read when the
 * element starts.  With method=model a missing or corrupt file is an error
 * naming it; with method=auto it is a warning and the classical method runs.
 *
 * The analysis runs on a worker thread: the streaming thread hands it a copy
 * of a frame and waits at most one frame interval for the result.  Every
 * buffer gets a #LivemicroFeaturesMeta with the latest finished result
 * (`analysed` = FALSE when it was computed on an earlier frame).  A frame due
 * for analysis while the previous one is still being analysed is skipped and
 * counted (`frames_skipped`), with a warning on the bus the first time.
 *
 * Each finished analysis is posted as an element message named
 * "tumorfeatures" (with timestamp, stream-time and running-time) and, with
 * json-location, written as one JSON line.
 *
 * With `active` cleared (nobody sees the results) the video passes untouched
 * without any analysis and without a FeaturesMeta; the last result is
 * forgotten, so that once active again no frame carries a result computed
 * elsewhere on the slide.  The analysis thread then gives back its working
 * memory (the model's layer buffers and the scratch images, ~120 MB for a
 * 1280x720 frame at 0.5 µm per pixel); an analysis in progress is given up
 * at the model's next tile (a frame enlarged to the model's scale can take
 * seconds of a loaded core).  The first frame analysed after it allocates
 * them again.  A flush gives up the analysis in progress too.
 *
 * |[
 * gst-launch-1.0 microscopesrc objective=40 ! tumorfeatures json-location=f.jsonl ! \
 *     featureoverlay ! videoconvert ! autovideosink
 * ]|
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gsttumorfeatures.h"
#include "rgbformats.h"

#include <livemicro/analysis/nuclei.h>
#include <livemicro/analysis/nuclei_model.h>
#include <livemicro/analysis/report.h>
#include <livemicro/featuresmeta.h>
#include <livemicro/frame_record_meta.h>
#include <livemicro/stagemeta.h>

#include <gst/video/video.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#ifdef __GLIBC__
#include <malloc.h>
#endif
#ifdef __linux__
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

GST_DEBUG_CATEGORY_STATIC (gst_tumor_features_debug);
#define GST_CAT_DEFAULT gst_tumor_features_debug

namespace an = livemicro::analysis;

#define DEFAULT_INTERVAL 1
#define DEFAULT_ANALYSIS_SCALE 0.0
#define DEFAULT_UM_PER_PX 0.0
#define DEFAULT_EMIT_NUCLEI FALSE
#define DEFAULT_META_NUCLEI TRUE
#define DEFAULT_WAIT_FOR_RESULT TRUE
#define DEFAULT_STAIN GST_TUMOR_FEATURES_STAIN_RUIFROK_JOHNSTON
#define DEFAULT_MIN_AREA 8.0
#define DEFAULT_MAX_AREA 400.0
#define DEFAULT_ANALYSIS_NICE 0
#define DEFAULT_METHOD GST_TUMOR_FEATURES_METHOD_AUTO
#define DEFAULT_MODEL_LOCATION nullptr
#define DEFAULT_ACTIVE TRUE

typedef enum {
  GST_TUMOR_FEATURES_METHOD_AUTO,
  GST_TUMOR_FEATURES_METHOD_MODEL,
  GST_TUMOR_FEATURES_METHOD_CLASSICAL,
} GstTumorFeaturesMethod;

typedef enum {
  GST_TUMOR_FEATURES_STAIN_RUIFROK_JOHNSTON,
  GST_TUMOR_FEATURES_STAIN_MACENKO,
} GstTumorFeaturesStain;

enum {
  PROP_0,
  PROP_INTERVAL,
  PROP_ANALYSIS_SCALE,
  PROP_UM_PER_PX,
  PROP_JSON_LOCATION,
  PROP_EMIT_NUCLEI,
  PROP_META_NUCLEI,
  PROP_WAIT_FOR_RESULT,
  PROP_STAIN,
  PROP_MIN_AREA,
  PROP_MAX_AREA,
  PROP_ANALYSIS_NICE,
  PROP_METHOD,
  PROP_MODEL_LOCATION,
  PROP_ACTIVE,
};

GType
gst_tumor_features_method_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[]
      = {{GST_TUMOR_FEATURES_METHOD_AUTO, "The nucleus model when it loads, else classical (with a warning)",
          "auto"},
         {GST_TUMOR_FEATURES_METHOD_MODEL,
          "Learned nucleus model (U-Net) and marker-controlled watershed; an error "
          "when the model cannot be loaded",
          "model"},
         {GST_TUMOR_FEATURES_METHOD_CLASSICAL,
          "Colour deconvolution, threshold and distance-transform watershed", "classical"},
         {0, nullptr, nullptr}};
  if (g_once_init_enter (&type))
    g_once_init_leave (&type, g_enum_register_static ("GstTumorFeaturesMethod", values));
  return type;
}
#define GST_TYPE_TUMOR_FEATURES_METHOD (gst_tumor_features_method_get_type ())

GType
gst_tumor_features_stain_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[]
      = {{GST_TUMOR_FEATURES_STAIN_RUIFROK_JOHNSTON, "Ruifrok-Johnston standard H&E vectors",
          "ruifrok-johnston"},
         {GST_TUMOR_FEATURES_STAIN_MACENKO, "Per-slide vectors estimated with Macenko, smoothed over time",
          "macenko"},
         {0, nullptr, nullptr}};
  if (g_once_init_enter (&type))
    g_once_init_leave (&type, g_enum_register_static ("GstTumorFeaturesStain", values));
  return type;
}

namespace {

struct Job {
  cv::Mat frame;
  std::array<int, 3> rgb{0, 1, 2};
  double um_per_px = 0;
  std::optional<livemicro::hw::FrameRecord> stage;
  GstClockTime pts = GST_CLOCK_TIME_NONE, stream_time = GST_CLOCK_TIME_NONE,
               running_time = GST_CLOCK_TIME_NONE;
  an::Params params;
  bool emit_nuclei = false;
  guint64 seq = 0;
  guint64 epoch = 0; // Private::epoch when the job was made
};

struct Done {
  an::Result result;
  GstClockTime pts = GST_CLOCK_TIME_NONE;
  std::optional<livemicro::hw::FrameRecord> stage;
  guint64 seq = 0, frames_analysed = 0, frames_skipped = 0;
  /* An empty buffer whose FeaturesMeta holds the nuclei, made once: every
   * frame carrying this result shares them instead of copying. */
  GstBuffer *nuclei_carrier = nullptr;
  ~Done ()
  {
    if (nuclei_carrier)
      gst_buffer_unref (nuclei_carrier);
  }
};

struct Private {
  std::mutex mutex;
  std::condition_variable job_ready, job_done;
  std::thread worker;
  /* Written under `mutex`; atomic so that the analysis can ask, between
   * the model's tiles, whether its frame is still wanted. */
  std::atomic<bool> stopping{false};
  bool busy = false;
  /* Set when the element goes inactive: the analysis thread gives back its
   * working memory between jobs.  Cleared by a new job (active again). */
  bool release_wanted = false;
  std::optional<Job> job;
  std::shared_ptr<const Done> latest;
  guint64 seq = 0, frames_analysed = 0, frames_skipped = 0, frame_index = 0;
  /* Incremented by each flush and each turn to inactive; written under
   * `mutex`. */
  std::atomic<guint64> epoch{0};
  bool warned_skip = false;
  bool was_active = true; // streaming thread only
  FILE *json = nullptr;
  an::Analyzer analyzer;               // worker thread only
  bool analysed_since_release = false; // worker thread only
  /* The nucleus model loaded at start, or null (then model_error says why). */
  std::shared_ptr<an::NucleusModel> model;
  std::string model_error;
  bool model_missing = false;
  // format
  int channels = 3;
  std::array<int, 3> rgb{0, 1, 2};
};

} // namespace

struct _GstTumorFeatures {
  GstVideoFilter parent;

  /* properties, under the object lock */
  gboolean active;
  guint interval;
  gdouble analysis_scale;
  gdouble um_per_px;
  gchar *json_location;
  gboolean emit_nuclei;
  gboolean meta_nuclei;
  gboolean wait_for_result;
  GstTumorFeaturesStain stain;
  gdouble min_area, max_area;
  gint analysis_nice;
  GstTumorFeaturesMethod method;
  gchar *model_location;

  Private *priv;
};

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE (
    "sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE (LIVEMICRO_RGB_FORMATS)));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE (
    "src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE (LIVEMICRO_RGB_FORMATS)));

#define gst_tumor_features_parent_class parent_class
G_DEFINE_TYPE_WITH_CODE (GstTumorFeatures, gst_tumor_features, GST_TYPE_VIDEO_FILTER,
                         GST_DEBUG_CATEGORY_INIT (gst_tumor_features_debug, "tumorfeatures", 0,
                                                  "LiveMicro H&E nuclei analysis"));
GST_ELEMENT_REGISTER_DEFINE (tumorfeatures, "tumorfeatures", GST_RANK_NONE, GST_TYPE_TUMOR_FEATURES);

static void
gst_tumor_features_set_property (GObject *object, guint prop_id, const GValue *value, GParamSpec *pspec)
{
  GstTumorFeatures *self = GST_TUMOR_FEATURES (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
  case PROP_ACTIVE:
    self->active = g_value_get_boolean (value);
    break;
  case PROP_INTERVAL:
    self->interval = g_value_get_uint (value);
    break;
  case PROP_ANALYSIS_SCALE:
    self->analysis_scale = g_value_get_double (value);
    break;
  case PROP_UM_PER_PX:
    self->um_per_px = g_value_get_double (value);
    break;
  case PROP_JSON_LOCATION:
    g_free (self->json_location);
    self->json_location = g_value_dup_string (value);
    break;
  case PROP_EMIT_NUCLEI:
    self->emit_nuclei = g_value_get_boolean (value);
    break;
  case PROP_META_NUCLEI:
    self->meta_nuclei = g_value_get_boolean (value);
    break;
  case PROP_WAIT_FOR_RESULT:
    self->wait_for_result = g_value_get_boolean (value);
    break;
  case PROP_STAIN:
    self->stain = (GstTumorFeaturesStain)g_value_get_enum (value);
    break;
  case PROP_MIN_AREA:
    self->min_area = g_value_get_double (value);
    break;
  case PROP_MAX_AREA:
    self->max_area = g_value_get_double (value);
    break;
  case PROP_ANALYSIS_NICE:
    self->analysis_nice = g_value_get_int (value);
    break;
  case PROP_METHOD:
    self->method = (GstTumorFeaturesMethod)g_value_get_enum (value);
    break;
  case PROP_MODEL_LOCATION:
    g_free (self->model_location);
    self->model_location = g_value_dup_string (value);
    break;
  default:
    G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_tumor_features_get_property (GObject *object, guint prop_id, GValue *value, GParamSpec *pspec)
{
  GstTumorFeatures *self = GST_TUMOR_FEATURES (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
  case PROP_ACTIVE:
    g_value_set_boolean (value, self->active);
    break;
  case PROP_INTERVAL:
    g_value_set_uint (value, self->interval);
    break;
  case PROP_ANALYSIS_SCALE:
    g_value_set_double (value, self->analysis_scale);
    break;
  case PROP_UM_PER_PX:
    g_value_set_double (value, self->um_per_px);
    break;
  case PROP_JSON_LOCATION:
    g_value_set_string (value, self->json_location);
    break;
  case PROP_EMIT_NUCLEI:
    g_value_set_boolean (value, self->emit_nuclei);
    break;
  case PROP_META_NUCLEI:
    g_value_set_boolean (value, self->meta_nuclei);
    break;
  case PROP_WAIT_FOR_RESULT:
    g_value_set_boolean (value, self->wait_for_result);
    break;
  case PROP_STAIN:
    g_value_set_enum (value, self->stain);
    break;
  case PROP_MIN_AREA:
    g_value_set_double (value, self->min_area);
    break;
  case PROP_MAX_AREA:
    g_value_set_double (value, self->max_area);
    break;
  case PROP_ANALYSIS_NICE:
    g_value_set_int (value, self->analysis_nice);
    break;
  case PROP_METHOD:
    g_value_set_enum (value, self->method);
    break;
  case PROP_MODEL_LOCATION:
    g_value_set_string (value, self->model_location);
    break;
  default:
    G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    break;
  }
  GST_OBJECT_UNLOCK (self);
}

/* The summary of a result in a (detached) meta-shaped struct. */
static void
fill_summary (LivemicroFeaturesMeta *m, const Done &d)
{
  const an::Summary &s = d.result.summary;
  m->analysed_pts = d.pts;
  m->frames_analysed = d.frames_analysed;
  m->frames_skipped = d.frames_skipped;
  m->quality = (LivemicroFeaturesQuality)s.quality;
  m->frame_width = (guint)s.frame_width;
  m->frame_height = (guint)s.frame_height;
  m->um_per_px = s.um_per_px;
  m->working_um_per_px = s.working_um_per_px;
  m->tissue_fraction = s.tissue_fraction;
  m->tissue_area_mm2 = s.tissue_area_mm2;
  m->nuclei_count = (guint)s.nuclei_count;
  m->nuclei_per_mm2 = s.nuclei_per_mm2;
  m->mean_area_um2 = s.mean_area_um2;
  m->cv_area = s.cv_area;
  m->mean_circularity = s.mean_circularity;
  m->cv_h_od = s.cv_h_od;
  m->size_ratio = s.size_ratio;
  m->he_ratio = s.he_ratio;
  m->mean_h_od = s.mean_h_od;
  m->mean_e_od = s.mean_e_od;
  m->pleomorphism = (guint)s.pleomorphism;
  m->mitotic_candidates = (guint)s.mitotic_candidates;
  m->mitotic_candidates_per_mm2 = s.mitotic_candidates_per_mm2;
  m->grade_cue = s.grade_cue.empty () ? nullptr : g_intern_string (s.grade_cue.c_str ());
  m->focus = s.focus;
  m->dab_fraction = s.dab_fraction;
  m->stain_macenko = s.stain_method == an::StainMethod::kMacenko;
  m->analysis_ms = d.result.analysis_ms;
}

static void
attach_nuclei (LivemicroFeaturesMeta *m, const Done &d)
{
  const auto &nuclei = d.result.nuclei;
  if (nuclei.empty ())
    return;
  std::vector<LivemicroNucleus> out (nuclei.size ());
  for (size_t k = 0; k < nuclei.size (); k++) {
    const an::Nucleus &n = nuclei[k];
    LivemicroNucleus &o = out[k];
    o.x_px = (gfloat)n.x_px;
    o.y_px = (gfloat)n.y_px;
    if (d.stage) {
      cv::Point2d um = an::frame_to_slide_um (*d.stage, d.result.summary, n.x_px, n.y_px);
      o.x_um = um.x;
      o.y_um = um.y;
    } else {
      o.x_um = o.y_um = NAN;
    }
    o.area_um2 = (gfloat)n.area_um2;
    o.perimeter_um = (gfloat)n.perimeter_um;
    o.circularity = (gfloat)n.circularity;
    o.elongation = (gfloat)n.elongation;
    o.solidity = (gfloat)n.solidity;
    o.mean_h_od = (gfloat)n.mean_h_od;
    o.mitotic_candidate = n.mitotic_candidate;
    o.n_contour = (guint)n.contour.size ();
    /* set_nuclei deep-copies: point at the result's floats meanwhile */
    o.contour = o.n_contour ? (gfloat *)n.contour.data () : nullptr;
  }
  livemicro_features_meta_set_nuclei (m, out.data (), (guint)out.size ());
}

/* On Linux a thread has its own nice value: a background analysis yields
 * the CPU to the video threads when the machine is short of it.  The thread
 * is named, so top -H, perf and the benchmarks tell its CPU from the
 * streaming threads'. */
static void
lower_thread_priority (GstTumorFeatures *self, int nice)
{
#ifdef __linux__
  pthread_setname_np (pthread_self (), "tumorfeatures");
  if (nice > 0 && setpriority (PRIO_PROCESS, (id_t)syscall (SYS_gettid), nice) != 0)
    GST_WARNING_OBJECT (self, "cannot lower the analysis thread's priority: %s", g_strerror (errno));
#else
  (void)self;
  (void)nice;
#endif
}

/* The element message of an analysed frame (its summary and times). */
static void
post_summary (GstTumorFeatures *self, const Job &job, const Done &done)
{
  LivemicroFeaturesMeta summary;
  memset (&summary, 0, sizeof summary);
  fill_summary (&summary, done);
  summary.analysed = TRUE;
  GstStructure *s = livemicro_features_meta_to_structure (&summary);
  gst_structure_set (s, "timestamp", G_TYPE_UINT64, job.pts, "stream-time", G_TYPE_UINT64, job.stream_time,
                     "running-time", G_TYPE_UINT64, job.running_time, nullptr);
  gst_element_post_message (GST_ELEMENT (self), gst_message_new_element (GST_OBJECT (self), s));
}

/* One JSON Lines record of an analysed frame; a warning when it cannot be
 * written. */
static void
write_report_line (GstTumorFeatures *self, FILE *json, const Job &job, const Done &done)
{
  an::ReportContext ctx;
  ctx.analysed = true;
  if (GST_CLOCK_TIME_IS_VALID (job.pts))
    ctx.pts_ns = job.pts;
  if (GST_CLOCK_TIME_IS_VALID (job.stream_time))
    ctx.stream_time_ns = job.stream_time;
  if (GST_CLOCK_TIME_IS_VALID (job.running_time))
    ctx.running_time_ns = job.running_time;
  ctx.stage = job.stage;
  ctx.frames_analysed = done.frames_analysed;
  ctx.frames_skipped = done.frames_skipped;
  ctx.nuclei = job.emit_nuclei;
  std::string line = an::report_json (done.result, ctx);
  line += '\n';
  if (std::fwrite (line.data (), 1, line.size (), json) != line.size () || std::fflush (json) != 0)
    GST_ELEMENT_WARNING (self, RESOURCE, WRITE, ("cannot write the JSON Lines file: %s", g_strerror (errno)),
                         (nullptr));
}

/* Worker, inactive: gives back the analysis' working memory (the model's
 * layer buffers and the scratch images) to the allocator, and the
 * allocator's free pages to the system (glibc keeps freed heap in its arenas
 * otherwise).  No analysis runs meanwhile: this thread alone runs them. */
static void
release_working_memory (GstTumorFeatures *self)
{
  const gint64 t0 = g_get_monotonic_time ();
  try {
    self->priv->analyzer.release_memory ();
  } catch (const std::exception &e) {
    GST_WARNING_OBJECT (self, "cannot give back the analysis' memory: %s", e.what ());
  }
#ifdef __GLIBC__
  malloc_trim (0);
#endif
  GST_DEBUG_OBJECT (self, "inactive: the analysis' working memory given back in %.1f ms",
                    (g_get_monotonic_time () - t0) / 1000.0);
}

/* Worker: analyses the job, reports it (JSON line, bus message), publishes;
 * while inactive, gives back its working memory once. */
static void
worker_loop (GstTumorFeatures *self, int nice)
{
  Private *p = self->priv;
  lower_thread_priority (self, nice);
  std::unique_lock<std::mutex> lock (p->mutex);
  while (true) {
    p->job_ready.wait (lock, [p] { return p->stopping || p->job.has_value () || p->release_wanted; });
    if (p->stopping)
      return;
    if (!p->job) {
      p->release_wanted = false;
      if (p->analysed_since_release) { // else there is nothing to give back
        lock.unlock ();
        release_working_memory (self);
        p->analysed_since_release = false;
        lock.lock ();
      }
      continue;
    }
    Job job = std::move (*p->job);
    p->job.reset ();
    guint64 skipped = p->frames_skipped;
    lock.unlock ();

    auto done = std::make_shared<Done> ();
    done->pts = job.pts;
    done->stage = job.stage;
    done->seq = job.seq;
    bool ok = true;
    /* A frame nobody will see (inactive, flushed, stopping) is given up
     * between the model's tiles: its CPU and working memory are not spent
     * for nothing (seconds of a core at 20x on a loaded node). */
    const an::StopRequested given_up
        = [p, epoch = job.epoch] { return p->stopping.load () || p->epoch.load () != epoch; };
    try {
      p->analyzer.set_params (job.params);
      p->analysed_since_release = true;
      done->result = p->analyzer.analyze (job.frame, job.um_per_px, job.rgb, given_up);
    } catch (const an::AnalysisStopped &) {
      ok = false;
      GST_DEBUG_OBJECT (self, "analysis of frame %" GST_TIME_FORMAT " given up: nobody will see it",
                        GST_TIME_ARGS (job.pts));
    } catch (const std::exception &e) {
      ok = false;
      GST_ELEMENT_WARNING (self, STREAM, FAILED, ("analysis of a frame failed: %s", e.what ()),
                           ("the video goes on"));
    }

    if (ok && !done->result.nuclei.empty ()) {
      done->nuclei_carrier = gst_buffer_new ();
      attach_nuclei (livemicro_buffer_add_features_meta (done->nuclei_carrier), *done);
    }

    lock.lock ();
    if (ok)
      done->frames_analysed = ++p->frames_analysed;
    done->frames_skipped = skipped;
    FILE *json = p->json;
    lock.unlock ();

    if (ok) {
      post_summary (self, job, *done);
      if (json)
        write_report_line (self, json, job, *done);
    }
    done->result.label_working.release ();

    lock.lock ();
    if (ok && job.epoch == p->epoch) // a result from before a flush is stale
      p->latest = done;
    p->busy = false;
    p->job_done.notify_all ();
  }
}

static gboolean
gst_tumor_features_start (GstBaseTransform *trans)
{
  GstTumorFeatures *self = GST_TUMOR_FEATURES (trans);
  Private *p = self->priv;

  GST_OBJECT_LOCK (self);
  gchar *location = g_strdup (self->json_location);
  GST_OBJECT_UNLOCK (self);
  FILE *json = nullptr;
  if (location && *location) {
    json = std::fopen (location, "w");
    if (!json) {
      GST_ELEMENT_ERROR (self, RESOURCE, OPEN_WRITE,
                         ("cannot open '%s' for the JSON Lines output: %s", location, g_strerror (errno)),
                         (nullptr));
      g_free (location);
      return FALSE;
    }
  }
  g_free (location);
  GST_OBJECT_LOCK (self);
  const int nice = self->analysis_nice;
  const GstTumorFeaturesMethod method = self->method;
  const std::string model_location = self->model_location ? self->model_location : "";
  GST_OBJECT_UNLOCK (self);

  /* The nucleus model is loaded here, once, whatever the method: `method`
   * may switch to it while PLAYING.  method=model cannot start without it;
   * auto warns and analyses classically. */
  std::shared_ptr<an::NucleusModel> model;
  std::string model_error;
  try {
    model = an::NucleusModel::load (model_location);
    GST_INFO_OBJECT (self, "nucleus model %s loaded", model->path ().c_str ());
  } catch (const std::exception &e) {
    model_error = e.what ();
  }
  const std::string model_path = model_location.empty () ? an::default_model_path () : model_location;
  const bool missing = !model && !g_file_test (model_path.c_str (), G_FILE_TEST_EXISTS);
  if (!model && method == GST_TUMOR_FEATURES_METHOD_MODEL) {
    if (json)
      std::fclose (json);
    if (missing)
      GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND, ("%s", model_error.c_str ()), ("method=model"));
    else
      GST_ELEMENT_ERROR (self, RESOURCE, READ, ("%s", model_error.c_str ()), ("method=model"));
    return FALSE;
  }
  if (!model && method == GST_TUMOR_FEATURES_METHOD_AUTO && missing)
    GST_ELEMENT_WARNING (self, RESOURCE, NOT_FOUND,
                         ("%s; analysing with method=classical", model_error.c_str ()), (nullptr));
  else if (!model && method == GST_TUMOR_FEATURES_METHOD_AUTO)
    GST_ELEMENT_WARNING (self, RESOURCE, READ, ("%s; analysing with method=classical", model_error.c_str ()),
                         (nullptr));
  else if (!model)
    GST_INFO_OBJECT (self, "no nucleus model: %s", model_error.c_str ());

  std::lock_guard<std::mutex> lock (p->mutex);
  p->json = json;
  p->stopping = false;
  p->busy = false;
  p->release_wanted = false;
  p->job.reset ();
  p->latest.reset ();
  p->seq = p->frames_analysed = p->frames_skipped = p->frame_index = 0;
  p->warned_skip = false;
  p->analyzer.reset ();
  p->model = model;
  p->model_error = model_error;
  p->model_missing = missing;
  p->analyzer.set_model (model);
  p->worker = std::thread (worker_loop, self, nice);
  return TRUE;
}

static gboolean
gst_tumor_features_stop (GstBaseTransform *trans)
{
  GstTumorFeatures *self = GST_TUMOR_FEATURES (trans);
  Private *p = self->priv;
  {
    std::lock_guard<std::mutex> lock (p->mutex);
    p->stopping = true;
    p->job_ready.notify_all ();
  }
  if (p->worker.joinable ())
    p->worker.join ();
  std::lock_guard<std::mutex> lock (p->mutex);
  if (p->json) {
    std::fclose (p->json);
    p->json = nullptr;
  }
  p->latest.reset ();
  p->job.reset ();
  return TRUE;
}

static gboolean
gst_tumor_features_set_info (GstVideoFilter *filter, GstCaps *incaps, GstVideoInfo *in_info, GstCaps *outcaps,
                             GstVideoInfo *out_info)
{
  GstTumorFeatures *self = GST_TUMOR_FEATURES (filter);
  int channels;
  std::array<int, 3> rgb;
  if (!livemicro::rgb_layout (GST_VIDEO_INFO_FORMAT (in_info), channels, rgb)) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
                       ("tumorfeatures analyses packed RGB video (%s), not %s: put videoconvert "
                        "in front of it",
                        LIVEMICRO_RGB_FORMATS, gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (in_info))),
                       ("caps %" GST_PTR_FORMAT, incaps));
    return FALSE;
  }
  std::lock_guard<std::mutex> lock (self->priv->mutex);
  self->priv->channels = channels;
  self->priv->rgb = rgb;
  return TRUE;
}

/* Caps with another format than packed RGB: a clear error (the pads accept
 * any raw video so that such caps arrive here, see rgbformats.h). */
static gboolean
gst_tumor_features_sink_event (GstBaseTransform *trans, GstEvent *event)
{
  if (livemicro::refuse_non_rgb_caps (trans, event, "tumorfeatures analyses")) {
    gst_event_unref (event);
    return FALSE;
  }
  if (GST_EVENT_TYPE (event) == GST_EVENT_FLUSH_STOP) {
    /* After a seek the last result shows another place: do not carry it. */
    Private *p = GST_TUMOR_FEATURES (trans)->priv;
    std::lock_guard<std::mutex> lock (p->mutex);
    p->latest.reset ();
    p->frame_index = 0;
    p->epoch++;
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
}

/* The properties that apply to one frame, read together under the lock. */
struct FrameSettings {
  bool active;
  guint interval;
  an::Params params;
  gdouble um_per_px;
  bool emit_nuclei, meta_nuclei, wait_for_result;
  GstTumorFeaturesMethod method;
};

static FrameSettings
frame_settings (GstTumorFeatures *self)
{
  FrameSettings f;
  GST_OBJECT_LOCK (self);
  f.active = self->active;
  f.interval = MAX (1u, self->interval);
  f.params.analysis_scale = self->analysis_scale;
  f.params.stain = self->stain == GST_TUMOR_FEATURES_STAIN_MACENKO ? an::StainMethod::kMacenko
                                                                   : an::StainMethod::kRuifrokJohnston;
  f.params.min_area_um2 = self->min_area;
  f.params.max_area_um2 = MAX (self->max_area, self->min_area);
  f.um_per_px = self->um_per_px;
  f.emit_nuclei = self->emit_nuclei;
  f.meta_nuclei = self->meta_nuclei;
  f.wait_for_result = self->wait_for_result;
  f.method = self->method;
  GST_OBJECT_UNLOCK (self);
  f.params.method = f.method != GST_TUMOR_FEATURES_METHOD_CLASSICAL && self->priv->model
                        ? an::Method::kModel
                        : an::Method::kClassical;
  f.params.want_contours = f.emit_nuclei || f.meta_nuclei;
  return f;
}

/* µm per pixel of this frame: StageMeta first (scaled to this frame's
 * width, with the stage position), else the um-per-px property; 0 when
 * neither says. */
static double
frame_um_per_px (GstBuffer *buf, const GstVideoInfo *info, gdouble property_um_per_px,
                 std::optional<livemicro::hw::FrameRecord> &stage)
{
  if (LivemicroStageMeta *sm = livemicro_buffer_get_stage_meta (buf)) {
    if (sm->um_per_px > 0) {
      stage = livemicro::frame_record_of (*sm);
      return sm->frame_width > 0 ? sm->um_per_px * sm->frame_width / info->width : sm->um_per_px;
    }
  }
  return property_um_per_px > 0 ? property_um_per_px : 0;
}

/* Hands a copy of the frame to the analysis thread unless it is busy (then
 * the frame is counted as skipped).  Sets *seq to the job's number, or 0
 * when no job was started. */
static GstFlowReturn
submit_frame (GstTumorFeatures *self, GstBuffer *buf, const FrameSettings &f, double upp,
              const std::optional<livemicro::hw::FrameRecord> &stage, guint64 *seq)
{
  Private *p = self->priv;
  GstBaseTransform *trans = GST_BASE_TRANSFORM (self);
  const GstVideoInfo *info = &GST_VIDEO_FILTER (self)->in_info;
  const GstClockTime pts = GST_BUFFER_PTS (buf);
  *seq = 0;
  std::unique_lock<std::mutex> lock (p->mutex);
  if (p->busy) {
    p->frames_skipped++;
    bool warn = !p->warned_skip;
    p->warned_skip = true;
    lock.unlock ();
    GST_DEBUG_OBJECT (self, "analysis busy: skipping frame %" GST_TIME_FORMAT, GST_TIME_ARGS (pts));
    if (warn)
      GST_ELEMENT_WARNING (self, CORE, TOO_LAZY,
                           ("analysis cannot keep up with the video: frames are skipped (counted "
                            "in frames_skipped); raise interval or lower analysis-scale"),
                           (nullptr));
    return GST_FLOW_OK;
  }
  lock.unlock ();
  GstVideoFrame frame;
  if (!gst_video_frame_map (&frame, info, buf, GST_MAP_READ)) {
    GST_ELEMENT_ERROR (self, STREAM, FAILED, ("could not map the video frame"), (nullptr));
    return GST_FLOW_ERROR;
  }
  Job job;
  try {
    cv::Mat view (info->height, info->width, CV_8UC (p->channels), GST_VIDEO_FRAME_PLANE_DATA (&frame, 0),
                  GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0));
    view.copyTo (job.frame);
  } catch (const std::exception &e) {
    gst_video_frame_unmap (&frame);
    GST_ELEMENT_ERROR (self, STREAM, FAILED, ("could not copy the frame: %s", e.what ()), (nullptr));
    return GST_FLOW_ERROR;
  }
  gst_video_frame_unmap (&frame);
  const GstSegment *seg = &trans->segment;
  job.rgb = p->rgb;
  job.um_per_px = upp;
  job.stage = stage;
  job.pts = pts;
  if (GST_CLOCK_TIME_IS_VALID (pts) && seg->format == GST_FORMAT_TIME) {
    job.stream_time = gst_segment_to_stream_time (seg, GST_FORMAT_TIME, pts);
    job.running_time = gst_segment_to_running_time (seg, GST_FORMAT_TIME, pts);
  }
  job.params = f.params;
  job.emit_nuclei = f.emit_nuclei;
  lock.lock ();
  job.seq = *seq = ++p->seq;
  job.epoch = p->epoch;
  p->job = std::move (job);
  p->busy = true;
  p->release_wanted = false; // active again: a release not yet done is not wanted
  p->job_ready.notify_one ();
  return GST_FLOW_OK;
}

/* The latest finished result, after waiting at most one frame interval for
 * job `seq`'s own (when seq is set and wait-for-result is on). */
static std::shared_ptr<const Done>
latest_result (Private *p, GstBuffer *buf, const GstVideoInfo *info, guint64 seq, bool wait)
{
  std::unique_lock<std::mutex> lock (p->mutex);
  if (seq && wait) {
    GstClockTime frame = GST_BUFFER_DURATION_IS_VALID (buf) ? GST_BUFFER_DURATION (buf)
                         : info->fps_n > 0 ? gst_util_uint64_scale_int (GST_SECOND, info->fps_d, info->fps_n)
                                           : 0;
    auto done = [&] { return p->stopping || !p->busy || (p->latest && p->latest->seq >= seq); };
    if (frame > 0)
      p->job_done.wait_for (lock, std::chrono::nanoseconds (frame), done);
    else // no frame rate (stills, variable rate): no interval to keep
      p->job_done.wait (lock, done);
  }
  return p->latest;
}

static GstFlowReturn
gst_tumor_features_transform_ip (GstBaseTransform *trans, GstBuffer *buf)
{
  GstTumorFeatures *self = GST_TUMOR_FEATURES (trans);
  Private *p = self->priv;
  const GstVideoInfo *info = &GST_VIDEO_FILTER (trans)->in_info;
  const FrameSettings f = frame_settings (self);
  if (!f.active) {
    if (p->was_active) {
      /* The last result shows where the slide was: do not carry it over;
       * nobody sees the analysis, so its memory goes back too. */
      std::lock_guard<std::mutex> lock (p->mutex);
      p->latest.reset ();
      p->frame_index = 0;
      p->epoch++;
      p->release_wanted = true;
      p->job_ready.notify_one ();
    }
    p->was_active = false;
    return GST_FLOW_OK;
  }
  p->was_active = true;
  if (f.method == GST_TUMOR_FEATURES_METHOD_MODEL && !p->model) {
    /* Switched to the model while PLAYING, and it did not load at start. */
    if (p->model_missing)
      GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND, ("%s", p->model_error.c_str ()), ("method=model"));
    else
      GST_ELEMENT_ERROR (self, RESOURCE, READ, ("%s", p->model_error.c_str ()), ("method=model"));
    return GST_FLOW_ERROR;
  }
  std::optional<livemicro::hw::FrameRecord> stage;
  const double upp = frame_um_per_px (buf, info, f.um_per_px, stage);
  if (upp <= 0) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
                       ("tumorfeatures needs the pixel size: the frames carry no StageMeta and "
                        "um-per-px is not set"),
                       ("set um-per-px=<µm per pixel> (e.g. 0.25 for a 40x scan)"));
    return GST_FLOW_ERROR;
  }

  guint64 seq = 0;
  if ((p->frame_index++ % f.interval) == 0) {
    GstFlowReturn ret = submit_frame (self, buf, f, upp, stage, &seq);
    if (ret != GST_FLOW_OK)
      return ret;
  }
  std::shared_ptr<const Done> latest = latest_result (p, buf, info, seq, f.wait_for_result);
  if (!latest)
    return GST_FLOW_OK;
  LivemicroFeaturesMeta *meta = livemicro_buffer_add_features_meta (buf);
  if (!meta)
    return GST_FLOW_OK;
  fill_summary (meta, *latest);
  meta->analysed = seq != 0 && latest->seq == seq;
  if (f.meta_nuclei && latest->nuclei_carrier)
    livemicro_features_meta_share_nuclei (meta, livemicro_buffer_get_features_meta (latest->nuclei_carrier));
  return GST_FLOW_OK;
}

static void
gst_tumor_features_finalize (GObject *object)
{
  GstTumorFeatures *self = GST_TUMOR_FEATURES (object);
  g_free (self->json_location);
  g_free (self->model_location);
  delete self->priv;
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

/* Long by nature: one g_param_spec per property, each with its blurb, range
 * and default, in the order gst-inspect-1.0 shows them. */
static void
gst_tumor_features_class_init (GstTumorFeaturesClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  GstVideoFilterClass *filter_class = GST_VIDEO_FILTER_CLASS (klass);
  const auto rw
      = static_cast<GParamFlags> (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING);
  const auto rw_ready
      = static_cast<GParamFlags> (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY);

  gobject_class->set_property = gst_tumor_features_set_property;
  gobject_class->get_property = gst_tumor_features_get_property;
  gobject_class->finalize = gst_tumor_features_finalize;

  g_object_class_install_property (
      gobject_class, PROP_ACTIVE,
      g_param_spec_boolean ("active", "Active",
                            "Analyse frames; when FALSE (nobody sees the results) the video passes "
                            "untouched, nothing is analysed, no FeaturesMeta is attached and the analysis' "
                            "working memory is given back (the first frame analysed after it allocates "
                            "it again)",
                            DEFAULT_ACTIVE, rw));
  g_object_class_install_property (
      gobject_class, PROP_INTERVAL,
      g_param_spec_uint ("interval", "Interval",
                         "Analyse every Nth frame; the frames in between carry the last result "
                         "marked analysed=false",
                         1, 1000, DEFAULT_INTERVAL, rw));
  g_object_class_install_property (
      gobject_class, PROP_ANALYSIS_SCALE,
      g_param_spec_double ("analysis-scale", "Analysis scale",
                           "Classical method: resample the frame by this factor before segmenting "
                           "(1 = full resolution, 0.5 = half); 0 = automatic: about 0.5 µm per pixel, "
                           "never enlarged. Smaller is faster and coarser. The model always runs at "
                           "its own 0.5 µm per pixel",
                           0.0, 1.0, DEFAULT_ANALYSIS_SCALE, rw));
  g_object_class_install_property (
      gobject_class, PROP_UM_PER_PX,
      g_param_spec_double ("um-per-px", "µm per pixel",
                           "Size of one frame pixel on the slide, used when a frame carries no "
                           "StageMeta (0 = frames must carry StageMeta, else the stream fails)",
                           0.0, 100.0, DEFAULT_UM_PER_PX, rw));
  g_object_class_install_property (
      gobject_class, PROP_JSON_LOCATION,
      g_param_spec_string ("json-location", "JSON Lines file",
                           "Write one JSON object per analysed frame to this file (JSON Lines, "
                           "format in docs/analysis.md); NULL = no file",
                           nullptr, rw_ready));
  g_object_class_install_property (
      gobject_class, PROP_EMIT_NUCLEI,
      g_param_spec_boolean ("emit-nuclei", "Emit nuclei",
                            "Add the per-nucleus array (position, area, shape, stain, contour) to "
                            "each JSON line",
                            DEFAULT_EMIT_NUCLEI, rw));
  g_object_class_install_property (
      gobject_class, PROP_META_NUCLEI,
      g_param_spec_boolean ("meta-nuclei", "Nuclei in the meta",
                            "Put the per-nucleus list with contours in the FeaturesMeta (featureoverlay "
                            "needs it for contours and the heat map)",
                            DEFAULT_META_NUCLEI, rw));
  g_object_class_install_property (
      gobject_class, PROP_WAIT_FOR_RESULT,
      g_param_spec_boolean ("wait-for-result", "Wait for the result",
                            "Hold an analysed frame up to one frame interval for its own result "
                            "(TRUE), or never hold the video and attach the latest finished result "
                            "(FALSE: no added latency; that frame says analysed=false)",
                            DEFAULT_WAIT_FOR_RESULT, rw));
  g_object_class_install_property (
      gobject_class, PROP_STAIN,
      g_param_spec_enum ("stain", "Stain vectors",
                         "Colour deconvolution vectors: Ruifrok-Johnston's standard H&E, or "
                         "per-slide vectors estimated with Macenko and smoothed over time (other "
                         "stain tones)",
                         GST_TYPE_TUMOR_FEATURES_STAIN, DEFAULT_STAIN, rw));
  g_object_class_install_property (gobject_class, PROP_MIN_AREA,
                                   g_param_spec_double ("min-area-um2", "Minimum nucleus area (µm²)",
                                                        "Objects smaller than this are not counted as nuclei",
                                                        0.5, 1000.0, DEFAULT_MIN_AREA, rw));
  g_object_class_install_property (
      gobject_class, PROP_MAX_AREA,
      g_param_spec_double ("max-area-um2", "Maximum nucleus area (µm²)",
                           "Objects larger than this (clumps, folds) are not counted as nuclei", 1.0, 10000.0,
                           DEFAULT_MAX_AREA, rw));
  g_object_class_install_property (
      gobject_class, PROP_ANALYSIS_NICE,
      g_param_spec_int ("analysis-nice", "Analysis thread niceness",
                        "Nice value of the analysis thread (Linux; read when the element starts): above 0 "
                        "the video threads get the CPU first and, when it is short, the analysis skips "
                        "frames instead of delaying the video. OpenCV's own thread pool is not affected",
                        0, 19, DEFAULT_ANALYSIS_NICE, rw));
  g_object_class_install_property (
      gobject_class, PROP_METHOD,
      g_param_spec_enum ("method", "Segmentation method",
                         "How nuclei are found: the learned nucleus model (runs at 0.5 µm per pixel "
                         "whatever the objective, refuses frames coarser than 1.05 µm per pixel as "
                         "low_resolution), the classical threshold and watershed, or auto: the model "
                         "when its file loads, else classical with a warning",
                         GST_TYPE_TUMOR_FEATURES_METHOD, DEFAULT_METHOD, rw));
  g_object_class_install_property (
      gobject_class, PROP_MODEL_LOCATION,
      g_param_spec_string ("model-location", "Nucleus model file",
                           "ONNX file of the nucleus model (made by scripts/train-nuclei), read when "
                           "the element starts; NULL = $LIVEMICRO_NUCLEI_MODEL, else the installed "
                           "<datadir>/livemicro/models/nuclei.onnx",
                           DEFAULT_MODEL_LOCATION, rw_ready));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (
      element_class, "Tumour features", "Filter/Analyzer/Video",
      "Live H&E nuclei analysis: density, size, shape, pleomorphism, mitotic "
      "candidates and a quality flag, as FeaturesMeta, bus messages and JSON Lines",
      "LiveMicro");

  trans_class->start = gst_tumor_features_start;
  trans_class->stop = gst_tumor_features_stop;
  trans_class->accept_caps = livemicro::accept_any_raw_video;
  trans_class->sink_event = gst_tumor_features_sink_event;
  trans_class->transform_ip = gst_tumor_features_transform_ip;
  trans_class->transform_ip_on_passthrough = FALSE;
  filter_class->set_info = gst_tumor_features_set_info;

  gst_type_mark_as_plugin_api (GST_TYPE_TUMOR_FEATURES_STAIN, (GstPluginAPIFlags)0);
  gst_type_mark_as_plugin_api (GST_TYPE_TUMOR_FEATURES_METHOD, (GstPluginAPIFlags)0);
}

static void
gst_tumor_features_init (GstTumorFeatures *self)
{
  self->priv = new Private ();
  self->active = DEFAULT_ACTIVE;
  self->interval = DEFAULT_INTERVAL;
  self->analysis_scale = DEFAULT_ANALYSIS_SCALE;
  self->um_per_px = DEFAULT_UM_PER_PX;
  self->json_location = nullptr;
  self->emit_nuclei = DEFAULT_EMIT_NUCLEI;
  self->meta_nuclei = DEFAULT_META_NUCLEI;
  self->wait_for_result = DEFAULT_WAIT_FOR_RESULT;
  self->analysis_nice = DEFAULT_ANALYSIS_NICE;
  self->stain = DEFAULT_STAIN;
  self->min_area = DEFAULT_MIN_AREA;
  self->max_area = DEFAULT_MAX_AREA;
  self->method = DEFAULT_METHOD;
  self->model_location = DEFAULT_MODEL_LOCATION;
  gst_base_transform_set_in_place (GST_BASE_TRANSFORM (self), TRUE);
}
