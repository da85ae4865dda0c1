// H&E nuclei analysis: colour deconvolution, quality gates, segmentation
// (background-corrected hematoxylin OD, Otsu threshold with a floor,
// distance-transform markers, watershed, merge by dynamics), per-nucleus
// measurements and the per-frame summary.  See nuclei.h and docs/analysis.md.
#include "livemicro/analysis/nuclei.h"
#include "livemicro/analysis/nuclei_model.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <cmath>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <unordered_map>

namespace livemicro::analysis {

namespace {

constexpr double kPi = 3.14159265358979323846;
// Tissue: summed OD of the three channels above this, and coloured (an OD
// direction more than ~10° away from neutral grey: ink, dust, shadows).
constexpr float kTissueOdSum = 0.15f;
constexpr float kNeutralCos = 0.985f;
constexpr int kCoarseStep = 4;     // tissue map pitch, working pixels
constexpr double kOtsuMaxOd = 1.6; // Otsu histogram range of H OD
constexpr double kMinTissueFraction = 0.02;
constexpr double kWrongStainDab = 0.60; // DAB share of the tissue OD
constexpr double kMinFocus = 1.6;       // fine/coarse edge gradient ratio
constexpr float kStructureOdSum = 0.3f; // anything but glass (ink, dust, tissue)
constexpr int kMinNucleiForScore = 20;

double
now_ms ()
{
  using namespace std::chrono;
  return duration<double, std::milli> (steady_clock::now ().time_since_epoch ()).count ();
}

// Inverse of the stain matrix (rows: stains): C = OD · inv.
cv::Matx33f
stain_inverse (const StainVectors &s)
{
  cv::Matx33f m (s.hematoxylin[0], s.hematoxylin[1], s.hematoxylin[2], s.eosin[0], s.eosin[1], s.eosin[2],
                 s.third[0], s.third[1], s.third[2]);
  return m.inv ();
}

struct UnionFind {
  std::vector<int> parent;
  explicit UnionFind (int n) : parent (n) { std::iota (parent.begin (), parent.end (), 0); }
  int find (int a)
  {
    while (parent[a] != a)
      a = parent[a] = parent[parent[a]];
    return a;
  }
};

double
median_of (std::vector<double> v)
{
  if (v.empty ())
    return NAN;
  size_t k = v.size () / 2;
  std::nth_element (v.begin (), v.begin () + k, v.end ());
  return v[k];
}

double
percentile_of (std::vector<double> v, double q)
{
  if (v.empty ())
    return NAN;
  size_t k = std::min (v.size () - 1, (size_t)(q * v.size ()));
  std::nth_element (v.begin (), v.begin () + k, v.end ());
  return v[k];
}

void
mean_cv (const std::vector<double> &v, double &mean, double &cv)
{
  if (v.empty ()) {
    mean = cv = NAN;
    return;
  }
  double s = 0, s2 = 0;
  for (double x : v) {
    s += x;
    s2 += x * x;
  }
  mean = s / v.size ();
  double var = std::max (0.0, s2 / v.size () - mean * mean);
  cv = mean > 0 ? std::sqrt (var) / mean : NAN;
}

} // namespace

const char *
quality_name (Quality q)
{
  switch (q) {
  case Quality::kOk:
    return "ok";
  case Quality::kBlank:
    return "blank";
  case Quality::kNoTissue:
    return "no_tissue";
  case Quality::kLowResolution:
    return "low_resolution";
  case Quality::kWrongStain:
    return "wrong_stain";
  case Quality::kOutOfFocus:
    return "out_of_focus";
  }
  return "unknown";
}

const char *
method_name (Method m)
{
  switch (m) {
  case Method::kAuto:
    return "auto";
  case Method::kModel:
    return "model";
  case Method::kClassical:
    return "classical";
  }
  return "unknown";
}

double
Nucleus::feature (Feature f) const
{
  switch (f) {
  case Feature::kArea:
    return area_um2;
  case Feature::kCircularity:
    return circularity;
  case Feature::kElongation:
    return elongation;
  case Feature::kSolidity:
    return solidity;
  case Feature::kHematoxylin:
    return mean_h_od;
  }
  return 0;
}

// The Nottingham-like rule, written down in docs/analysis.md:
//   size       1: √(P75 area / reference) < 1.5   2: < 2.0   3: otherwise
//   variation  1: CV(area) < 0.30                 2: < 0.50  3: otherwise
//   chromatin  1: CV(mean H OD) < 0.15            2: < 0.25  3: otherwise
//   score = round(mean of the three), in 1..3.
int
pleomorphism_score (double size_ratio, double cv_area, double cv_h_od)
{
  if (!std::isfinite (size_ratio) || !std::isfinite (cv_area) || !std::isfinite (cv_h_od))
    return 0;
  int s = size_ratio < 1.5 ? 1 : size_ratio < 2.0 ? 2 : 3;
  int v = cv_area < 0.30 ? 1 : cv_area < 0.50 ? 2 : 3;
  int c = cv_h_od < 0.15 ? 1 : cv_h_od < 0.25 ? 2 : 3;
  return std::clamp ((int)std::lround ((s + v + c) / 3.0), 1, 3);
}

// Mitotic points from candidate density (per mm² of tissue; Nottingham's
// per-10-HPF cut-offs for a 0.5 mm field, 1.96 mm² per 10 HPF): 1: < 4,
// 2: < 8, 3: otherwise.  Cue = pleomorphism + mitotic points:
// ≤ 3 low, 4 intermediate, ≥ 5 high.  Tubule formation is not measured.
std::string
grade_cue_for (int pleomorphism, double mitoses_per_mm2)
{
  if (pleomorphism < 1 || !std::isfinite (mitoses_per_mm2))
    return "";
  int m = mitoses_per_mm2 < 4 ? 1 : mitoses_per_mm2 < 8 ? 2 : 3;
  int points = pleomorphism + m;
  return points <= 3 ? "low" : points == 4 ? "intermediate" : "high";
}

struct Analyzer::Scratch {
  cv::Mat work, h, hs, bg, hc, mask, dist, dil, markers, labels, gapped, fg, core, relief;
  std::vector<std::vector<int>> buckets;
  std::vector<int> stack;
};

Analyzer::Analyzer (Params params) : params_ (params), scratch_ (std::make_unique<Scratch> ()) {}
Analyzer::~Analyzer () = default;

void
Analyzer::set_params (const Params &p)
{
  if (p.stain != params_.stain)
    macenko_.reset ();
  if (p.model_path != params_.model_path) {
    model_.reset ();
    model_tried_ = false;
  }
  if (p.method != params_.method)
    model_tried_ = false;
  params_ = p;
}

void
Analyzer::set_model (std::shared_ptr<NucleusModel> model)
{
  model_ = std::move (model);
  model_tried_ = false;
  model_error_.clear ();
}

NucleusModel *
Analyzer::model_for_frame ()
{
  if (params_.method == Method::kClassical)
    return nullptr;
  if (model_)
    return model_.get ();
  if (params_.method == Method::kModel) // throws ModelError
    return (model_ = NucleusModel::load (params_.model_path)).get ();
  if (!model_tried_) { // kAuto: try once
    model_tried_ = true;
    try {
      model_ = NucleusModel::load (params_.model_path);
      model_error_.clear ();
    } catch (const ModelError &e) {
      model_error_ = e.what ();
    }
  }
  return model_.get ();
}

void
Analyzer::reset ()
{
  macenko_.reset ();
}

void
Analyzer::release_memory ()
{
  scratch_ = std::make_unique<Scratch> ();
  if (model_)
    model_->release_buffers ();
}

namespace {

// Marker-controlled watershed by hierarchical queue on an 8-bit relief
// (low = basin), 4-connected, inside `mask`.  labels: CV_32S, markers > 0
// on input, every reachable mask pixel labelled on output.  `buckets` is
// scratch (kept between calls for its capacity).
void
flood (const cv::Mat &relief, const cv::Mat &mask, cv::Mat &labels, std::vector<std::vector<int>> &buckets)
{
  // The mask's outer rows and columns must be 0: neighbours are then always
  // inside the image and need no bounds checks.
  const int w = labels.cols, h = labels.rows;
  buckets.resize (256);
  for (auto &b : buckets)
    b.clear ();
  int *lab = labels.ptr<int> ();
  const uchar *rel = relief.ptr<uchar> ();
  const uchar *m = mask.ptr<uchar> ();
  constexpr int kQueued = -1;
  const int off[4] = {-1, 1, -w, w};
  auto push_neighbours = [&] (int p, int level) {
    for (int o : off) {
      int q = p + o;
      if (m[q] && lab[q] == 0) {
        lab[q] = kQueued;
        buckets[std::max<int> (rel[q], level)].push_back (q);
      }
    }
  };
  for (int p = w; p < w * (h - 1); p++)
    if (lab[p] > 0 && m[p])
      push_neighbours (p, 0);
  for (int level = 0; level < 256; level++) {
    auto &b = buckets[level];
    // The bucket grows while we work on it: index, not iterators.
    for (size_t k = 0; k < b.size (); k++) {
      int p = b[k];
      int best = 0;
      for (int o : off)
        if (lab[p + o] > 0) {
          best = lab[p + o];
          break;
        }
      lab[p] = best;
      if (best)
        push_neighbours (p, level);
    }
  }
}

// Markers: pixels of `mask` where `dist` reaches its local maximum `dil`
// (and at least min_dist), as 8-connected plateaus labelled 1..n into
// `labels` (zeroed first); returns n.
int
label_peaks (const cv::Mat &dist, const cv::Mat &dil, const cv::Mat &mask, float min_dist, cv::Mat &labels,
             std::vector<int> &stack)
{
  labels.create (dist.size (), CV_32S);
  labels.setTo (0);
  const int w = dist.cols, h = dist.rows;
  const float *d = dist.ptr<float> (), *dl = dil.ptr<float> ();
  const uchar *m = mask.ptr<uchar> ();
  auto is_peak = [&] (int p) { return m[p] && d[p] >= dl[p] && d[p] >= min_dist; };
  int *lab = labels.ptr<int> ();
  int n = 0;
  for (int p = 0; p < w * h; p++) {
    if (!m[p] || lab[p] || !is_peak (p))
      continue;
    lab[p] = ++n;
    stack.assign (1, p);
    while (!stack.empty ()) {
      int q = stack.back ();
      stack.pop_back ();
      int x = q % w, y = q / w;
      for (int dy = -1; dy <= 1; dy++)
        for (int dx = -1; dx <= 1; dx++) {
          int xx = x + dx, yy = y + dy;
          if (xx < 0 || yy < 0 || xx >= w || yy >= h)
            continue;
          int r = yy * w + xx;
          if (!lab[r] && is_peak (r)) {
            lab[r] = n;
            stack.push_back (r);
          }
        }
    }
  }
  return n;
}

// The model's segmentation at working resolution (= kModelUmPerPx):
// foreground where P(nucleus) > fg_threshold; one marker per 8-connected
// core where also the normalised edge distance > marker_threshold; a
// watershed on the inverted distance from the markers inside the
// foreground; foreground blobs that hold no core become one region each.
// Returns the number of regions, labelled 1..n in `labels`.
int
segment_with_model (NucleusModel &model, const cv::Mat &work, std::array<int, 3> rgb, const Params &P,
                    const StopRequested &stop, cv::Mat &fg, cv::Mat &dist, cv::Mat &mask, cv::Mat &core,
                    cv::Mat &relief, cv::Mat &labels, std::vector<std::vector<int>> &buckets)
{
  model.predict (work, rgb, fg, dist, P.model_tta_copies, stop);
  const int w = work.cols, h = work.rows;
  mask.create (h, w, CV_8U);
  core.create (h, w, CV_8U);
  const float tf = (float)P.fg_threshold, tm = (float)P.marker_threshold;
  for (int j = 0; j < h; j++) {
    const float *f = fg.ptr<float> (j), *d = dist.ptr<float> (j);
    uchar *m = mask.ptr<uchar> (j), *c = core.ptr<uchar> (j);
    for (int i = 0; i < w; i++) {
      m[i] = f[i] > tf ? 255 : 0;
      c[i] = m[i] && d[i] > tm ? 255 : 0;
    }
  }
  // The outermost ring is never nucleus (the flood relies on it).
  cv::rectangle (mask, cv::Rect (0, 0, w, h), cv::Scalar (0), 1);
  core &= mask;
  int n = cv::connectedComponents (core, labels, 8, CV_32S) - 1;
  // Relief: low at nucleus centres, high at their edges.
  dist.convertTo (relief, CV_8U, -255.0, 255.0);
  flood (relief, mask, labels, buckets);
  // Foreground the flood did not reach: blobs without a core.
  cv::Mat rest = mask & (labels == 0), extra;
  if (cv::countNonZero (rest) > 0) {
    int m = cv::connectedComponents (rest, extra, 8, CV_32S) - 1;
    for (int j = 0; j < h; j++) {
      const int *e = extra.ptr<int> (j);
      int *l = labels.ptr<int> (j);
      for (int i = 0; i < w; i++)
        if (e[i])
          l[i] = n + e[i];
    }
    n += m;
  }
  return n;
}

} // namespace

namespace {

// LIVEMICRO_ANALYSIS_PROFILE=1 prints the CPU time of each stage (development).
class StageProfile {
public:
  StageProfile () : on_ (std::getenv ("LIVEMICRO_ANALYSIS_PROFILE") != nullptr), t_ (on_ ? cpu_ms () : 0) {}
  void next (const char *stage)
  {
    if (!on_)
      return;
    double t = cpu_ms ();
    std::fprintf (stderr, "%7.2f ms CPU before %s\n", t - t_, stage);
    t_ = t;
  }

private:
  static double cpu_ms ()
  {
    timespec ts;
    clock_gettime (CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
  }
  bool on_;
  double t_;
};

void
check_input (const cv::Mat &image, double um_per_px, std::array<int, 3> rgb)
{
  if (image.empty () || image.depth () != CV_8U || (image.channels () != 3 && image.channels () != 4))
    throw std::invalid_argument ("analysis needs an 8-bit RGB image with 3 or 4 channels");
  for (int c : rgb)
    if (c < 0 || c >= image.channels ())
      throw std::invalid_argument ("channel index out of range");
  if (!(um_per_px > 0) || !std::isfinite (um_per_px) || um_per_px > 1000)
    throw std::invalid_argument ("µm per pixel must be a positive number");
}

// The frame at the resolution segmentation runs at, and how its pixels map
// back to the frame's.
struct WorkingFrame {
  const cv::Mat *image;
  std::array<int, 3> rgb;
  int width, height, channels;
  double sx, sy;    // frame pixels per working pixel
  double um_per_px; // of a working pixel
  const uchar *pixel (int x, int y) const { return image->ptr<uchar> (y) + x * channels; }
};

WorkingFrame
working_frame (const cv::Mat &image, std::array<int, 3> rgb, double um_per_px, double scale, cv::Mat &resized)
{
  const int ww = std::max (1, (int)std::lround (image.cols * scale));
  const int wh = std::max (1, (int)std::lround (image.rows * scale));
  const cv::Mat *work = &image;
  if (ww != image.cols || wh != image.rows) {
    cv::resize (image, resized, cv::Size (ww, wh), 0, 0, scale < 1 ? cv::INTER_AREA : cv::INTER_LINEAR);
    work = &resized;
  }
  const double sx = (double)image.cols / ww, sy = (double)image.rows / wh;
  return {work, rgb, ww, wh, work->channels (), sx, sy, um_per_px * sx};
}

// Optical density per channel value, against the glass brightness I0 of
// each channel: its 99.8th percentile (clamped to 200–255) over a
// subsample, so lamp level and white balance do not shift OD.
struct OdTable {
  float od[3][256];
  int brightest; // the brightest channel's 99.8th percentile, before clamping
};

OdTable
glass_od_table (const WorkingFrame &f)
{
  int hist[3][256] = {};
  int n_hist = 0;
  for (int j = 0; j < f.height; j += 2)
    for (int i = 0; i < f.width; i += 2) {
      const uchar *p = f.pixel (i, j);
      for (int c = 0; c < 3; c++)
        hist[c][p[f.rgb[c]]]++;
      n_hist++;
    }
  OdTable t;
  float i0[3];
  t.brightest = 0;
  for (int c = 0; c < 3; c++) {
    int acc = 0, v = 255;
    for (; v > 0; v--) {
      acc += hist[c][v];
      if (acc >= 0.002 * n_hist)
        break;
    }
    t.brightest = std::max (t.brightest, v);
    i0[c] = (float)std::clamp (v, 200, 255);
  }
  for (int c = 0; c < 3; c++)
    for (int v = 0; v < 256; v++)
      t.od[c][v] = std::max (0.0f, (float)-std::log10 (std::max (v, 1) / i0[c]));
  return t;
}

// Where the tissue is, from one sample every kCoarseStep working pixels:
// stained (summed OD above kTissueOdSum) and coloured (an OD direction away
// from neutral grey: ink, dust, shadows), closed and opened.
struct TissueMap {
  cv::Mat coarse;                    // CV_8U, 255 = tissue
  std::vector<cv::Vec3f> od_samples; // OD of the tissue samples (Macenko)
  double fraction = 0;               // of the frame area
  double dab_fraction = 0;           // DAB share of the tissue's stain (Ruifrok–Johnston H/E/DAB)
  int structure_samples = 0;         // samples that are anything but glass
  int samples = 0;
  bool at (int x, int y) const { return coarse.at<uchar> (y / kCoarseStep, x / kCoarseStep) != 0; }
  // The working pixel a coarse sample was taken at.
  static int sample_at (int coarse_index, int working_size)
  {
    return std::min (working_size - 1, coarse_index * kCoarseStep + kCoarseStep / 2);
  }
};

TissueMap
coarse_tissue_map (const WorkingFrame &f, const OdTable &t)
{
  const cv::Matx33f rj_inv = stain_inverse (ruifrok_johnston ());
  const int cw = (f.width + kCoarseStep - 1) / kCoarseStep, ch = (f.height + kCoarseStep - 1) / kCoarseStep;
  TissueMap m;
  m.coarse = cv::Mat (ch, cw, CV_8U, cv::Scalar (0));
  m.od_samples.reserve (cw * ch);
  double dab_sum = 0, stain_sum = 0;
  int n_structure = 0;
  for (int cj = 0; cj < ch; cj++) {
    const int y = TissueMap::sample_at (cj, f.height);
    for (int ci = 0; ci < cw; ci++) {
      const uchar *p = f.pixel (TissueMap::sample_at (ci, f.width), y);
      cv::Vec3f od (t.od[0][p[f.rgb[0]]], t.od[1][p[f.rgb[1]]], t.od[2][p[f.rgb[2]]]);
      float s = od[0] + od[1] + od[2];
      n_structure += s > kStructureOdSum;
      if (s < kTissueOdSum)
        continue;
      float cosn = s / (std::sqrt (od.dot (od)) * 1.7320508f);
      if (cosn > kNeutralCos)
        continue;
      m.coarse.at<uchar> (cj, ci) = 255;
      m.od_samples.push_back (od);
      cv::Vec3f c; // stain concentrations: OD (row) · inverse
      for (int k = 0; k < 3; k++)
        c[k] = od[0] * rj_inv (0, k) + od[1] * rj_inv (1, k) + od[2] * rj_inv (2, k);
      dab_sum += std::max (0.0f, c[2]);
      stain_sum += std::max (0.0f, c[0]) + std::max (0.0f, c[1]) + std::max (0.0f, c[2]);
    }
  }
  cv::Mat k = cv::getStructuringElement (cv::MORPH_RECT, {3, 3});
  cv::morphologyEx (m.coarse, m.coarse, cv::MORPH_CLOSE, k);
  cv::morphologyEx (m.coarse, m.coarse, cv::MORPH_OPEN, k);
  const double n_coarse = (double)cw * ch;
  m.fraction = cv::countNonZero (m.coarse) / n_coarse;
  m.dab_fraction = stain_sum > 0 ? dab_sum / stain_sum : 0;
  m.structure_samples = n_structure;
  m.samples = cw * ch;
  return m;
}

// Quality gates that need no segmentation (the focus gate comes later).
Quality
frame_quality (const OdTable &t, const TissueMap &tissue, bool too_coarse)
{
  if (t.brightest < 40
      || (tissue.fraction < 0.01 && tissue.structure_samples < 0.005 * (double)tissue.samples))
    return Quality::kBlank;
  if (tissue.fraction < kMinTissueFraction)
    return Quality::kNoTissue;
  if (too_coarse)
    return Quality::kLowResolution;
  if (tissue.dab_fraction > kWrongStainDab)
    return Quality::kWrongStain;
  return Quality::kOk;
}

// Colour deconvolution by lookup: the hematoxylin plane of the whole
// working frame, and the mean H and E OD over the tissue samples.
void
deconvolve (const WorkingFrame &f, const OdTable &t, const StainVectors &stains, const TissueMap &tissue,
            cv::Mat &h, Summary &sum)
{
  const cv::Matx33f inv = stain_inverse (stains);
  float lut_h[3][256], lut_e[3][256];
  for (int c = 0; c < 3; c++)
    for (int v = 0; v < 256; v++) {
      lut_h[c][v] = t.od[c][v] * inv (c, 0);
      lut_e[c][v] = t.od[c][v] * inv (c, 1);
    }
  h.create (f.height, f.width, CV_32F);
  for (int j = 0; j < f.height; j++) {
    float *hr = h.ptr<float> (j);
    for (int i = 0; i < f.width; i++) {
      const uchar *p = f.pixel (i, j);
      hr[i] = lut_h[0][p[f.rgb[0]]] + lut_h[1][p[f.rgb[1]]] + lut_h[2][p[f.rgb[2]]];
    }
  }
  double hs = 0, es = 0;
  int n = 0;
  for (int cj = 0; cj < tissue.coarse.rows; cj++)
    for (int ci = 0; ci < tissue.coarse.cols; ci++)
      if (tissue.coarse.at<uchar> (cj, ci)) {
        const int y = TissueMap::sample_at (cj, f.height), x = TissueMap::sample_at (ci, f.width);
        hs += std::max (0.0f, h.at<float> (y, x));
        const uchar *px = f.pixel (x, y);
        es += std::max (0.0f, lut_e[0][px[f.rgb[0]]] + lut_e[1][px[f.rgb[1]]] + lut_e[2][px[f.rgb[2]]]);
        n++;
      }
  sum.mean_h_od = n ? hs / n : 0;
  sum.mean_e_od = n ? es / n : 0;
  sum.he_ratio = es > 0 ? hs / es : NAN;
}

// Background-corrected hematoxylin (classical method): a grey opening of H
// at ~2 µm pixels with a window of 2·background_radius, upsampled and
// subtracted (top-hat).
void
subtract_background (const cv::Mat &hs, double wupp, const Params &P, cv::Mat &bg, cv::Mat &hc)
{
  if (P.background_radius_um <= 0) {
    bg = cv::Mat::zeros (hs.size (), CV_32F);
  } else {
    int f = std::max (1, (int)std::lround (2.0 / wupp));
    cv::Mat small;
    cv::resize (hs, small, cv::Size ((hs.cols + f - 1) / f, (hs.rows + f - 1) / f), 0, 0, cv::INTER_AREA);
    int k = 2 * std::max (1, (int)std::lround (P.background_radius_um / (wupp * f))) + 1;
    cv::morphologyEx (small, small, cv::MORPH_OPEN, cv::getStructuringElement (cv::MORPH_RECT, {k, k}));
    cv::blur (small, small, {3, 3});
    cv::resize (small, bg, hs.size (), 0, 0, cv::INTER_LINEAR);
  }
  cv::subtract (hs, bg, hc);
}

// Focus: gradient energy of the smoothed H at the fine scale (σ =
// smooth_sigma, 0.5 µm) over that at a 3× coarser scale (1.5 µm), over
// tissue.  A sharp edge loses little by the extra smoothing (ratio ≈ 2–3),
// a blurred one barely changes (→ 1).  Physical scales: the same meaning at
// any µm/px.
double
focus_ratio (const cv::Mat &hs, const TissueMap &tissue, double wupp, const Params &P)
{
  const int ww = hs.cols, wh = hs.rows;
  double s2 = std::sqrt (std::max (0.0, 9.0 - 1.0)) * P.smooth_sigma_um / wupp;
  // A centred window of at most 512² working pixels (256 µm) is plenty of
  // edges and keeps the cost fixed.
  const cv::Rect win ((ww - std::min (ww, 512)) / 2, (wh - std::min (wh, 512)) / 2, std::min (ww, 512),
                      std::min (wh, 512));
  cv::Mat fine_img = hs (win), coarse;
  cv::GaussianBlur (fine_img, coarse, cv::Size (), s2, s2, cv::BORDER_REFLECT);
  std::vector<float> fine, crs;
  fine.reserve (ww * wh / 4);
  crs.reserve (ww * wh / 4);
  for (int j = 1; j < win.height - 1; j += 2) {
    const float *a0 = fine_img.ptr<float> (j), *au = fine_img.ptr<float> (j - 1),
                *ad = fine_img.ptr<float> (j + 1);
    const float *b0 = coarse.ptr<float> (j), *bu = coarse.ptr<float> (j - 1), *bd = coarse.ptr<float> (j + 1);
    for (int i = 1; i < win.width - 1; i += 2) {
      if (!tissue.at (i + win.x, j + win.y))
        continue;
      fine.push_back (std::abs (a0[i + 1] - a0[i - 1]) + std::abs (ad[i] - au[i]));
      crs.push_back (std::abs (b0[i + 1] - b0[i - 1]) + std::abs (bd[i] - bu[i]));
    }
  }
  // The strongest edges (98th percentile) tell focus; flat areas do not.
  auto p98 = [] (std::vector<float> &v) {
    if (v.empty ())
      return 0.0f;
    size_t k = (size_t)(0.98 * (v.size () - 1));
    std::nth_element (v.begin (), v.begin () + k, v.end ());
    return v[k];
  };
  float f98 = p98 (fine), c98 = p98 (crs);
  return c98 > 0 ? f98 / c98 : 0;
}

// Threshold of the classical method: Otsu on background-corrected H over
// tissue, never below P.min_threshold_od.
double
hematoxylin_threshold (const cv::Mat &hc, const TissueMap &tissue, const Params &P)
{
  double thr = P.min_threshold_od;
  constexpr int kBins = 256;
  std::vector<double> hist_h (kBins, 0.0);
  double total = 0;
  for (int j = 0; j < hc.rows; j += 2) {
    const float *cr = hc.ptr<float> (j);
    for (int i = 0; i < hc.cols; i += 2) {
      if (!tissue.at (i, j))
        continue;
      int b = (int)(std::clamp (cr[i], 0.0f, (float)kOtsuMaxOd) / kOtsuMaxOd * (kBins - 1));
      hist_h[b]++;
      total++;
    }
  }
  if (total <= 0)
    return thr;
  double sum_all = 0;
  for (int b = 0; b < kBins; b++)
    sum_all += b * hist_h[b];
  double w0 = 0, s0 = 0, best = -1;
  int best_b = 0;
  for (int b = 0; b < kBins; b++) {
    w0 += hist_h[b];
    s0 += b * hist_h[b];
    double w1 = total - w0;
    if (w0 <= 0 || w1 <= 0)
      continue;
    double m0 = s0 / w0, m1 = (sum_all - s0) / w1;
    double between = w0 * w1 * (m0 - m1) * (m0 - m1);
    if (between > best) {
      best = between;
      best_b = b;
    }
  }
  return std::max (thr, P.otsu_factor * (best_b + 0.5) / (kBins - 1) * kOtsuMaxOd);
}

// Foreground, object by object: every pixel whose local peak (the maximum
// of the corrected H within object_radius, left in `peak`) passes the
// threshold belongs to that object when it is above edge_fraction × the
// peak (its own half-maximum-like edge), so pale and dark nuclei both get
// their outline.  Then holes smaller than a nucleus (vesicular chromatin)
// are filled and the mask opened.
void
nucleus_foreground (const cv::Mat &hc, double thr, double wupp, const Params &P, cv::Mat &peak, cv::Mat &mask)
{
  const int ww = hc.cols, wh = hc.rows;
  const float t_low = (float)std::max (0.5 * P.min_threshold_od, P.low_fraction * thr);
  int r = std::max (1, (int)std::lround (P.object_radius_um / wupp));
  cv::dilate (hc, peak, cv::getStructuringElement (cv::MORPH_RECT, {2 * r + 1, 2 * r + 1}));
  mask.create (wh, ww, CV_8U);
  const float edge = (float)P.edge_fraction, t = (float)thr;
  for (int j = 0; j < wh; j++) {
    const float *cr = hc.ptr<float> (j), *dr = peak.ptr<float> (j);
    uchar *mr = mask.ptr<uchar> (j);
    for (int i = 0; i < ww; i++)
      mr[i] = (cr[i] > t_low && dr[i] > t && cr[i] >= edge * dr[i]) ? 255 : 0;
  }
  // Holes are the inner contours of a two-level contour tree.
  std::vector<std::vector<cv::Point>> cs;
  std::vector<cv::Vec4i> tree;
  cv::Mat copy = mask.clone ();
  cv::findContours (copy, cs, tree, cv::RETR_CCOMP, cv::CHAIN_APPROX_SIMPLE);
  const double max_hole_px = P.max_area_um2 / 8.0 / (wupp * wupp);
  for (size_t k = 0; k < cs.size (); k++)
    if (tree[k][3] >= 0 && cv::contourArea (cs[k]) < max_hole_px)
      cv::drawContours (mask, cs, (int)k, cv::Scalar (255), cv::FILLED);
  cv::morphologyEx (mask, mask, cv::MORPH_OPEN, cv::getStructuringElement (cv::MORPH_CROSS, {3, 3}));
  // The outermost pixel ring is never nucleus (the flood relies on it).
  cv::rectangle (mask, cv::Rect (0, 0, ww, wh), cv::Scalar (0), 1);
}

// Two regions of the watershed merge again when the saddle between them is
// less than `depth` below the lower of their two centres (dynamics).
// Relabels `labels` 1..n in place; returns n.
int
merge_shallow_saddles (cv::Mat &labels, const cv::Mat &dist, int n_labels, float depth)
{
  const int ww = labels.cols, wh = labels.rows;
  std::vector<float> peak (n_labels + 1, 0.0f);
  std::vector<std::pair<uint64_t, float>> contacts; // (pair key, saddle)
  for (int j = 0; j < wh; j++) {
    const int *lr = labels.ptr<int> (j);
    const int *ln = j + 1 < wh ? labels.ptr<int> (j + 1) : nullptr;
    const float *dr = dist.ptr<float> (j);
    const float *dn = j + 1 < wh ? dist.ptr<float> (j + 1) : nullptr;
    for (int i = 0; i < ww; i++) {
      int a = lr[i];
      if (!a)
        continue;
      peak[a] = std::max (peak[a], dr[i]);
      auto note = [&] (int b, float d) {
        if (b && b != a) {
          uint64_t key = a < b ? ((uint64_t)a << 32) | (uint32_t)b : ((uint64_t)b << 32) | (uint32_t)a;
          contacts.emplace_back (key, std::min (dr[i], d));
        }
      };
      if (i + 1 < ww)
        note (lr[i + 1], dr[i + 1]);
      if (ln)
        note (ln[i], dn[i]);
    }
  }
  UnionFind uf (n_labels + 1);
  // The saddle of a pair is its highest contact.
  std::sort (contacts.begin (), contacts.end ());
  std::vector<std::pair<float, uint64_t>> order;
  for (size_t k = 0; k < contacts.size (); k++)
    if (k + 1 == contacts.size () || contacts[k + 1].first != contacts[k].first)
      order.emplace_back (contacts[k].second, contacts[k].first);
  std::sort (order.begin (), order.end (), [] (const auto &x, const auto &y) { return x.first > y.first; });
  for (auto &[sd, key] : order) {
    int a = uf.find ((int)(key >> 32)), b = uf.find ((int)(key & 0xffffffffu));
    if (a == b)
      continue;
    if (std::min (peak[a], peak[b]) - sd < depth) {
      uf.parent[b] = a;
      peak[a] = std::max (peak[a], peak[b]);
    }
  }
  int n = 0;
  std::vector<int> remap (n_labels + 1, 0);
  for (int a = 1; a <= n_labels; a++)
    if (uf.find (a) == a)
      remap[a] = ++n;
  for (int a = 1; a <= n_labels; a++)
    remap[a] = remap[uf.find (a)];
  for (int j = 0; j < wh; j++) {
    int *lr = labels.ptr<int> (j);
    for (int i = 0; i < ww; i++)
      lr[i] = remap[lr[i]];
  }
  return n;
}

// Per-region sums over the labels.
struct RegionMoments {
  double n = 0, sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0, sh = 0, sc = 0;
};

std::vector<RegionMoments>
region_moments (const cv::Mat &labels, int n, const cv::Mat &h, const cv::Mat &contrast)
{
  std::vector<RegionMoments> acc (n + 1);
  for (int j = 0; j < labels.rows; j++) {
    const int *lr = labels.ptr<int> (j);
    const float *hr = h.ptr<float> (j), *cr = contrast.ptr<float> (j);
    for (int i = 0; i < labels.cols; i++) {
      int a = lr[i];
      if (!a)
        continue;
      RegionMoments &q = acc[a];
      q.n++;
      q.sx += i;
      q.sy += j;
      q.sxx += (double)i * i;
      q.syy += (double)j * j;
      q.sxy += (double)i * j;
      q.sh += hr[i];
      q.sc += cr[i];
    }
  }
  return acc;
}

// The regions that are nuclei, with their centroid, area, mean H and
// elongation.  `keep` maps region -> nucleus index + 1 (0 = dropped).
// `classical_threshold`: the classical method's H threshold (its regions
// must be dark on average and wider than a membrane; the model has learnt
// what a nucleus looks like).
std::vector<Nucleus>
nuclei_of_regions (const std::vector<RegionMoments> &acc, const WorkingFrame &f, const Params &P,
                   std::optional<double> classical_threshold, std::vector<int> &keep)
{
  const int n = (int)acc.size () - 1;
  const double wupp = f.um_per_px, px_area = wupp * wupp;
  keep.assign (n + 1, 0);
  std::vector<Nucleus> nuclei;
  nuclei.reserve (n);
  for (int a = 1; a <= n; a++) {
    const RegionMoments &q = acc[a];
    double area = q.n * px_area;
    if (area < P.min_area_um2 || area > P.max_area_um2)
      continue;
    // A nucleus is dark on average, not only at one point.
    if (classical_threshold && q.sc / q.n < P.mean_contrast_fraction * *classical_threshold)
      continue;
    Nucleus nu;
    double cx = q.sx / q.n, cy = q.sy / q.n;
    nu.x_px = (cx + 0.5) * f.sx;
    nu.y_px = (cy + 0.5) * f.sy;
    nu.area_um2 = area;
    nu.mean_h_od = q.sh / q.n;
    double mxx = q.sxx / q.n - cx * cx + 1.0 / 12, myy = q.syy / q.n - cy * cy + 1.0 / 12;
    double mxy = q.sxy / q.n - cx * cy;
    double tr = mxx + myy, det = mxx * myy - mxy * mxy;
    double disc = std::sqrt (std::max (0.0, tr * tr / 4 - det));
    double l1 = tr / 2 + disc, l2 = std::max (1e-9, tr / 2 - disc);
    nu.elongation = std::sqrt (l1 / l2);
    // Thinner than a nucleus can be (minor axis of the equivalent ellipse):
    // a membrane, fibre or fold edge.
    if (classical_threshold && 4 * std::sqrt (l2) * wupp < P.min_width_um)
      continue;
    nuclei.push_back (std::move (nu));
    keep[a] = (int)nuclei.size ();
  }
  return nuclei;
}

// Outline measurements of each kept nucleus (perimeter, circularity,
// solidity, contour) from one findContours pass over the labels with a
// one-pixel gap between touching regions.
void
outline_nuclei (const cv::Mat &labels, const std::vector<int> &keep, const WorkingFrame &f,
                bool want_contours, cv::Mat &gapped, std::vector<Nucleus> &nuclei)
{
  const int ww = labels.cols, wh = labels.rows;
  const double px_area = f.um_per_px * f.um_per_px;
  gapped.create (wh, ww, CV_8U);
  for (int j = 0; j < wh; j++) {
    const int *lr = labels.ptr<int> (j);
    const int *ln = j + 1 < wh ? labels.ptr<int> (j + 1) : nullptr;
    uchar *g = gapped.ptr<uchar> (j);
    for (int i = 0; i < ww; i++) {
      int a = lr[i];
      bool on = a && keep[a];
      // 8-connected contours: separate diagonal neighbours too.
      if (on
          && ((i + 1 < ww && lr[i + 1] && lr[i + 1] != a)
              || (ln
                  && ((ln[i] && ln[i] != a) || (i + 1 < ww && ln[i + 1] && ln[i + 1] != a)
                      || (i > 0 && ln[i - 1] && ln[i - 1] != a)))))
        on = false;
      g[i] = on ? 255 : 0;
    }
  }
  std::vector<std::vector<cv::Point>> contours;
  cv::findContours (gapped, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_NONE);
  std::vector<double> best_len (nuclei.size (), 0.0);
  for (auto &c : contours) {
    int a = labels.at<int> (c[0]);
    if (a <= 0 || !keep[a])
      continue;
    int idx = keep[a] - 1;
    if ((double)c.size () <= best_len[idx])
      continue;
    best_len[idx] = (double)c.size ();
    Nucleus &nu = nuclei[idx];
    // 3-point smoothing removes the pixel staircase before measuring.
    const size_t m = c.size ();
    std::vector<cv::Point2f> sm (m);
    for (size_t k = 0; k < m; k++) {
      const cv::Point &p0 = c[(k + m - 1) % m], &p1 = c[k], &p2 = c[(k + 1) % m];
      sm[k] = cv::Point2f ((p0.x + 2 * p1.x + p2.x) / 4.0f, (p0.y + 2 * p1.y + p2.y) / 4.0f);
    }
    // Boundary pixel centres lie half a pixel inside the edge: grow the
    // polygon by that half pixel around its centroid of the region.
    double per_px = m >= 3 ? cv::arcLength (sm, true) : 2.0;
    double poly_area = m >= 3 ? std::abs (cv::contourArea (sm)) : 1.0;
    double grow = 0.5;
    per_px += 2 * kPi * grow;
    poly_area += grow * (per_px - kPi * grow);
    nu.perimeter_um = per_px * f.um_per_px;
    nu.circularity = std::min (1.0, 4 * kPi * poly_area / (per_px * per_px));
    std::vector<cv::Point2f> hull;
    if (m >= 3) {
      cv::convexHull (sm, hull);
      double hull_area = std::abs (cv::contourArea (hull)) + grow * cv::arcLength (hull, true);
      nu.solidity = hull_area > 0 ? std::min (1.0, nu.area_um2 / px_area / hull_area) : 1.0;
    } else {
      nu.solidity = 1.0;
    }
    if (want_contours) {
      nu.contour.resize (m);
      for (size_t k = 0; k < m; k++)
        nu.contour[k] = cv::Point2f ((float)((c[k].x + 0.5) * f.sx), (float)((c[k].y + 0.5) * f.sy));
    }
  }
  for (size_t k = 0; k < nuclei.size (); k++)
    if (best_len[k] == 0) { // a region the gap cut to nothing: treat as round
      nuclei[k].perimeter_um = 2 * std::sqrt (kPi * nuclei[k].area_um2);
      nuclei[k].circularity = 1.0;
      nuclei[k].solidity = 1.0;
    }
}

// The frame summary: counts, densities, variation, mitotic-figure
// candidates and the grade cue.
void
summarise (std::vector<Nucleus> &nuclei, const Params &P, Summary &sum)
{
  std::vector<double> areas, hods;
  areas.reserve (nuclei.size ());
  hods.reserve (nuclei.size ());
  double circ_sum = 0;
  for (const Nucleus &nu : nuclei) {
    areas.push_back (nu.area_um2);
    hods.push_back (nu.mean_h_od);
    circ_sum += nu.circularity;
  }
  sum.nuclei_count = (int)nuclei.size ();
  sum.nuclei_per_mm2 = sum.tissue_area_mm2 > 0 ? nuclei.size () / sum.tissue_area_mm2 : NAN;
  double hod_mean = NAN;
  mean_cv (areas, sum.mean_area_um2, sum.cv_area);
  mean_cv (hods, hod_mean, sum.cv_h_od);
  sum.mean_circularity = nuclei.empty () ? NAN : circ_sum / nuclei.size ();
  // Mitotic-figure candidates: much darker than the frame's typical nucleus
  // (≥ 1.4 × median mean H OD), irregular (solidity < 0.9), of a plausible
  // size (up to 2 × the reference nucleus).
  double h_med = median_of (hods);
  int mitoses = 0;
  for (Nucleus &nu : nuclei) {
    nu.mitotic_candidate = nuclei.size () >= 5 && nu.mean_h_od >= 1.4 * h_med && nu.solidity < 0.9
                           && nu.area_um2 <= 2 * P.reference_area_um2;
    mitoses += nu.mitotic_candidate;
  }
  sum.mitotic_candidates = mitoses;
  sum.mitotic_candidates_per_mm2 = sum.tissue_area_mm2 > 0 ? mitoses / sum.tissue_area_mm2 : NAN;
  if ((int)nuclei.size () >= kMinNucleiForScore) {
    sum.size_ratio = std::sqrt (percentile_of (areas, 0.75) / P.reference_area_um2);
    sum.pleomorphism = pleomorphism_score (sum.size_ratio, sum.cv_area, sum.cv_h_od);
    sum.grade_cue = grade_cue_for (sum.pleomorphism, sum.mitotic_candidates_per_mm2);
  }
}

// The images and buffers segment_classical works in (kept between frames
// for their capacity).
struct ClassicalScratch {
  const cv::Mat &hc;
  cv::Mat &dil, &mask, &dist, &relief, &labels;
  std::vector<int> &stack;
  std::vector<std::vector<int>> &buckets;
};

// Classical segmentation at working resolution: threshold the corrected H,
// grow each object to its own edge, then split touching nuclei by shape —
// markers at maxima of the smoothed distance transform, a watershed on the
// inverted distance, shallow saddles merged again.  Returns the number of
// regions, labelled 1..n in S.labels, and the threshold used.
int
segment_classical (const TissueMap &tissue, double wupp, const Params &P, ClassicalScratch &&S, double &thr)
{
  thr = hematoxylin_threshold (S.hc, tissue, P);
  nucleus_foreground (S.hc, thr, wupp, P, S.dil, S.mask);
  cv::distanceTransform (S.mask, S.dist, cv::DIST_L2, cv::DIST_MASK_3);
  if (P.intensity_weight > 0) {
    // Paler lines between touching nuclei lower the relief there: distance
    // × (1 − w + w · H / local peak H).
    const float wgt = (float)P.intensity_weight;
    for (int j = 0; j < S.dist.rows; j++) {
      float *dr = S.dist.ptr<float> (j);
      const float *cr = S.hc.ptr<float> (j), *pr = S.dil.ptr<float> (j);
      for (int i = 0; i < S.dist.cols; i++)
        if (dr[i] > 0)
          dr[i] *= 1 - wgt + wgt * std::clamp (cr[i] / std::max (pr[i], 1e-3f), 0.0f, 1.0f);
    }
  }
  cv::GaussianBlur (S.dist, S.dist, cv::Size (5, 5), 1.0, 1.0);
  const int r_split = std::max (1, (int)std::lround (P.min_split_radius_um / wupp));
  cv::dilate (S.dist, S.dil, cv::getStructuringElement (cv::MORPH_RECT, {2 * r_split + 1, 2 * r_split + 1}));
  const int n_labels = label_peaks (S.dist, S.dil, S.mask, 0.5f, S.labels, S.stack);
  double mx;
  cv::minMaxLoc (S.dist, nullptr, &mx);
  double k = mx > 0 ? std::min (16.0, 255.0 / mx) : 1.0;
  S.dist.convertTo (S.relief, CV_8U, -k, 255.0);
  flood (S.relief, S.mask, S.labels, S.buckets);
  return merge_shallow_saddles (S.labels, S.dist, n_labels, (float)(P.split_depth_um / wupp));
}

} // namespace

// Ruifrok–Johnston, or Macenko's vectors estimated on this frame's tissue
// and blended into the slide's running estimate.
StainVectors
Analyzer::stain_vectors (const std::vector<cv::Vec3f> &od_samples, StainMethod &used)
{
  used = StainMethod::kRuifrokJohnston;
  if (params_.stain != StainMethod::kMacenko || od_samples.size () < 200)
    return ruifrok_johnston ();
  cv::Mat od (1, (int)od_samples.size (), CV_32FC3, const_cast<cv::Vec3f *> (od_samples.data ()));
  if (auto est = estimate_macenko (od)) {
    if (macenko_) {
      const double w = params_.macenko_smoothing;
      auto blend = [w] (cv::Vec3f a, cv::Vec3f b) {
        cv::Vec3f v = a * (float)(1 - w) + b * (float)w;
        return v / (float)cv::norm (v);
      };
      macenko_->hematoxylin = blend (macenko_->hematoxylin, est->hematoxylin);
      macenko_->eosin = blend (macenko_->eosin, est->eosin);
      cv::Vec3f t = macenko_->hematoxylin.cross (macenko_->eosin);
      macenko_->third = t / (float)cv::norm (t);
    } else {
      macenko_ = est;
    }
  }
  if (!macenko_)
    return ruifrok_johnston ();
  used = StainMethod::kMacenko;
  return *macenko_;
}

// `h` smoothed by a Gaussian of sigma_px (±4σ); a copy when sigma_px is
// below 0.3.
static void
smooth (const cv::Mat &h, double sigma_px, cv::Mat &out)
{
  if (sigma_px > 0.3)
    cv::GaussianBlur (h, out, cv::Size (), sigma_px, sigma_px, cv::BORDER_REFLECT);
  else
    h.copyTo (out);
}

// The working-resolution label image: each pixel the nucleus index + 1 of
// its region (`keep`), 0 where no nucleus was kept.
static void
nucleus_labels (const cv::Mat &regions, const std::vector<int> &keep, cv::Size size, cv::Mat &out)
{
  out.create (size.height, size.width, CV_32S);
  for (int j = 0; j < size.height; j++) {
    const int *lr = regions.ptr<int> (j);
    int *o = out.ptr<int> (j);
    for (int i = 0; i < size.width; i++)
      o[i] = keep[lr[i]];
  }
}

// Working resolution: the model's own (enlarging a 10x frame) when it runs,
// else about working_um_per_px, never enlarged.
static double
working_scale (bool model_runs, const Params &P, double um_per_px)
{
  return model_runs             ? um_per_px / kModelUmPerPx
         : P.analysis_scale > 0 ? std::min (1.0, P.analysis_scale)
                                : std::min (1.0, um_per_px / P.working_um_per_px);
}

// The pipeline, stage by stage; each stage is a function above.  Returns
// early (with the summary so far) when a quality gate fails.
Result
Analyzer::analyze (const cv::Mat &image, double um_per_px, std::array<int, 3> rgb, const StopRequested &stop)
{
  const double t_start = now_ms ();
  check_input (image, um_per_px, rgb);
  if (!valid_augmentation_copies (params_.model_tta_copies))
    throw std::invalid_argument ("model_tta_copies must be 1, 2, 4 or 8");
  const Params &P = params_;
  Scratch &S = *scratch_;
  StageProfile profile;
  Result res;
  Summary &sum = res.summary;
  sum.um_per_px = um_per_px;
  sum.frame_width = image.cols;
  sum.frame_height = image.rows;
  auto finish = [&] () -> Result & {
    res.analysis_ms = now_ms () - t_start;
    return res;
  };

  NucleusModel *model = model_for_frame ();
  res.method = model ? Method::kModel : Method::kClassical;
  // The model refuses frames coarser than it was trained for (see
  // kModelMaxUmPerPx); they are flagged low_resolution below.
  const bool model_refuses = model && um_per_px > kModelMaxUmPerPx;

  const double scale = working_scale (model && !model_refuses, P, um_per_px);
  const WorkingFrame f = working_frame (image, rgb, um_per_px, scale, S.work);
  const double wupp = f.um_per_px;
  sum.working_um_per_px = wupp;

  profile.next ("glass brightness");
  const OdTable od = glass_od_table (f);
  profile.next ("coarse tissue map");
  const TissueMap tissue = coarse_tissue_map (f, od);
  sum.tissue_fraction = tissue.fraction;
  sum.tissue_area_mm2 = sum.tissue_fraction * image.cols * image.rows * um_per_px * um_per_px * 1e-6;
  sum.dab_fraction = tissue.dab_fraction;
  profile.next ("stain vectors");
  sum.stain_vectors = stain_vectors (tissue.od_samples, sum.stain_method);
  profile.next ("quality gates");
  sum.quality = frame_quality (od, tissue, model_refuses || (!model && wupp > P.max_um_per_px));
  deconvolve (f, od, sum.stain_vectors, tissue, S.h, sum);
  if (sum.quality != Quality::kOk)
    return finish ();

  profile.next ("background");
  smooth (S.h, P.smooth_sigma_um / wupp, S.hs);
  if (!model) // the model needs no background
    subtract_background (S.hs, wupp, P, S.bg, S.hc);

  profile.next ("focus");
  sum.focus = focus_ratio (S.hs, tissue, wupp, P);
  if (sum.focus < kMinFocus) {
    sum.quality = Quality::kOutOfFocus;
    return finish ();
  }

  profile.next (model ? "model" : "classical segmentation");
  double thr = P.min_threshold_od;
  const int n
      = model
            ? segment_with_model (*model, *f.image, rgb, P, stop, S.fg, S.dist, S.mask, S.core, S.relief,
                                  S.labels, S.buckets)
            : segment_classical (tissue, wupp, P,
                                 {S.hc, S.dil, S.mask, S.dist, S.relief, S.labels, S.stack, S.buckets}, thr);

  profile.next ("per-region moments");
  std::vector<int> keep; // region -> nucleus index + 1
  std::vector<Nucleus> nuclei
      = nuclei_of_regions (region_moments (S.labels, n, S.h, model ? S.h : S.hc), f, P,
                           model ? std::nullopt : std::optional<double> (thr), keep);

  profile.next ("contours");
  outline_nuclei (S.labels, keep, f, P.want_contours, S.gapped, nuclei);
  profile.next ("frame summary");
  summarise (nuclei, P, sum);
  res.nuclei = std::move (nuclei);
  if (P.want_labels)
    nucleus_labels (S.labels, keep, cv::Size (f.width, f.height), res.label_working);
  return finish ();
}

} // namespace livemicro::analysis
