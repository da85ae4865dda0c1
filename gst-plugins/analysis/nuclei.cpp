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
#include <stdexcept>
#include <unordered_map>

namespace livemicro::analysis {

namespace {

constexpr double kPi = 3.14159265358979323846;
// Tissue: summed OD of the three channels above this, and coloured (an OD
// direction more than ~10° away from neutral grey: ink, dust, shadows).
constexpr float kTissueOdSum = 0.15f;
constexpr float kNeutralCos = 0.985f;
constexpr int kCoarseStep = 4;          // tissue map pitch, working pixels
constexpr double kOtsuMaxOd = 1.6;      // Otsu histogram range of H OD
constexpr double kMinTissueFraction = 0.02;
constexpr double kWrongStainDab = 0.60;  // DAB share of the tissue OD
constexpr double kMinFocus = 1.6;       // fine/coarse edge gradient ratio
constexpr float kStructureOdSum = 0.3f;  // anything but glass (ink, dust, tissue)
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
  cv::Matx33f m (s.hematoxylin[0], s.hematoxylin[1], s.hematoxylin[2], s.eosin[0],
      s.eosin[1], s.eosin[2], s.third[0], s.third[1], s.third[2]);
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
  size_t k = std::min (v.size () - 1, (size_t) (q * v.size ()));
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

}  // namespace

const char *
quality_name (Quality q)
{
  switch (q) {
    case Quality::kOk: return "ok";
    case Quality::kBlank: return "blank";
    case Quality::kNoTissue: return "no_tissue";
    case Quality::kLowResolution: return "low_resolution";
    case Quality::kWrongStain: return "wrong_stain";
    case Quality::kOutOfFocus: return "out_of_focus";
  }
  return "unknown";
}

const char *
method_name (Method m)
{
  switch (m) {
    case Method::kAuto: return "auto";
    case Method::kModel: return "model";
    case Method::kClassical: return "classical";
  }
  return "unknown";
}

double
Nucleus::feature (Feature f) const
{
  switch (f) {
    case Feature::kArea: return area_um2;
    case Feature::kCircularity: return circularity;
    case Feature::kElongation: return elongation;
    case Feature::kSolidity: return solidity;
    case Feature::kHematoxylin: return mean_h_od;
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
  return std::clamp ((int) std::lround ((s + v + c) / 3.0), 1, 3);
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
  if (params_.method == Method::kModel)  // throws ModelError
    return (model_ = NucleusModel::load (params_.model_path)).get ();
  if (!model_tried_) {  // kAuto: try once
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

namespace {

// Marker-controlled watershed by hierarchical queue on an 8-bit relief
// (low = basin), 4-connected, inside `mask`.  labels: CV_32S, markers > 0
// on input, every reachable mask pixel labelled on output.  `buckets` is
// scratch (kept between calls for its capacity).
void
flood (const cv::Mat &relief, const cv::Mat &mask, cv::Mat &labels,
    std::vector<std::vector<int>> &buckets)
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
label_peaks (const cv::Mat &dist, const cv::Mat &dil, const cv::Mat &mask, float min_dist,
    cv::Mat &labels, std::vector<int> &stack)
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
segment_with_model (NucleusModel &model, const cv::Mat &work, std::array<int, 3> rgb,
    const Params &P, cv::Mat &fg, cv::Mat &dist, cv::Mat &mask, cv::Mat &core, cv::Mat &relief,
    cv::Mat &labels, std::vector<std::vector<int>> &buckets)
{
  model.predict (work, rgb, fg, dist);
  const int w = work.cols, h = work.rows;
  mask.create (h, w, CV_8U);
  core.create (h, w, CV_8U);
  const float tf = (float) P.fg_threshold, tm = (float) P.marker_threshold;
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

}  // namespace

Result
Analyzer::analyze (const cv::Mat &image, double um_per_px, std::array<int, 3> rgb)
{
  const double t_start = now_ms ();
  if (image.empty () || image.depth () != CV_8U ||
      (image.channels () != 3 && image.channels () != 4))
    throw std::invalid_argument ("analysis needs an 8-bit RGB image with 3 or 4 channels");
  for (int c : rgb)
    if (c < 0 || c >= image.channels ())
      throw std::invalid_argument ("channel index out of range");
  if (!(um_per_px > 0) || !std::isfinite (um_per_px) || um_per_px > 1000)
    throw std::invalid_argument ("µm per pixel must be a positive number");
  const Params &P = params_;
  Scratch &S = *scratch_;
  // LIVEMICRO_ANALYSIS_PROFILE=1 prints the CPU time of each stage (development).
  static const bool profile = std::getenv ("LIVEMICRO_ANALYSIS_PROFILE") != nullptr;
  auto cpu_ms = [] {
    timespec ts;
    clock_gettime (CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
  };
  double t_stage = profile ? cpu_ms () : 0;
  auto stage = [&] (const char *next) {
    if (!profile)
      return;
    double t = cpu_ms ();
    std::fprintf (stderr, "%7.2f ms CPU before %s\n", t - t_stage, next);
    t_stage = t;
  };
  Result res;
  Summary &sum = res.summary;
  sum.um_per_px = um_per_px;
  sum.frame_width = image.cols;
  sum.frame_height = image.rows;

  NucleusModel *model = model_for_frame ();
  res.method = model ? Method::kModel : Method::kClassical;
  // The model refuses frames coarser than it was trained for (see
  // kModelMaxUmPerPx); they are flagged low_resolution below.
  const bool model_refuses = model && um_per_px > kModelMaxUmPerPx;

  // --- working resolution: the model's own (enlarging a 10x frame), else
  // about working_um_per_px, never enlarged
  double scale = model && !model_refuses ? um_per_px / kModelUmPerPx
                 : P.analysis_scale > 0  ? std::min (1.0, P.analysis_scale)
                                         : std::min (1.0, um_per_px / P.working_um_per_px);
  int ww = std::max (1, (int) std::lround (image.cols * scale));
  int wh = std::max (1, (int) std::lround (image.rows * scale));
  const cv::Mat *work = &image;
  if (ww != image.cols || wh != image.rows) {
    cv::resize (image, S.work, cv::Size (ww, wh), 0, 0, scale < 1 ? cv::INTER_AREA : cv::INTER_LINEAR);
    work = &S.work;
  }
  const double sx = (double) image.cols / ww, sy = (double) image.rows / wh;
  const double wupp = um_per_px * sx;
  sum.working_um_per_px = wupp;
  const int nch = work->channels ();

  stage ("glass brightness");
  // --- glass brightness I0 per channel: 99.8th percentile (clamped to
  // 200–255) of a subsample, so lamp level and white balance do not shift OD.
  int hist[3][256] = {};
  int n_hist = 0;
  for (int j = 0; j < wh; j += 2) {
    const uchar *row = work->ptr<uchar> (j);
    for (int i = 0; i < ww; i += 2) {
      const uchar *p = row + i * nch;
      for (int c = 0; c < 3; c++)
        hist[c][p[rgb[c]]]++;
      n_hist++;
    }
  }
  float i0[3];
  int brightest = 0;
  for (int c = 0; c < 3; c++) {
    int acc = 0, v = 255;
    for (; v > 0; v--) {
      acc += hist[c][v];
      if (acc >= 0.002 * n_hist)
        break;
    }
    brightest = std::max (brightest, v);
    i0[c] = (float) std::clamp (v, 200, 255);
  }
  float od_lut[3][256];
  for (int c = 0; c < 3; c++)
    for (int v = 0; v < 256; v++)
      od_lut[c][v] = std::max (0.0f, (float) -std::log10 (std::max (v, 1) / i0[c]));

  stage ("coarse tissue map");
  // --- coarse tissue map (one sample every kCoarseStep working pixels):
  // tissue, wrong stain (DAB share with Ruifrok–Johnston H/E/DAB), Macenko
  // samples, mean H and E.
  const StainVectors rj = ruifrok_johnston ();
  const cv::Matx33f rj_inv = stain_inverse (rj);
  const int cw = (ww + kCoarseStep - 1) / kCoarseStep, chh = (wh + kCoarseStep - 1) / kCoarseStep;
  cv::Mat tissue (chh, cw, CV_8U, cv::Scalar (0));
  std::vector<cv::Vec3f> od_samples;
  od_samples.reserve (cw * chh);
  double dab_sum = 0, stain_sum = 0;
  double grey_s = 0, grey_s2 = 0;
  int n_structure = 0;
  for (int cj = 0; cj < chh; cj++) {
    const uchar *row = work->ptr<uchar> (std::min (wh - 1, cj * kCoarseStep + kCoarseStep / 2));
    for (int ci = 0; ci < cw; ci++) {
      const uchar *p = row + std::min (ww - 1, ci * kCoarseStep + kCoarseStep / 2) * nch;
      cv::Vec3f od (od_lut[0][p[rgb[0]]], od_lut[1][p[rgb[1]]], od_lut[2][p[rgb[2]]]);
      double g = (p[rgb[0]] + p[rgb[1]] + p[rgb[2]]) / 3.0;
      grey_s += g;
      grey_s2 += g * g;
      float s = od[0] + od[1] + od[2];
      n_structure += s > kStructureOdSum;
      if (s < kTissueOdSum)
        continue;
      float cosn = s / (std::sqrt (od.dot (od)) * 1.7320508f);
      if (cosn > kNeutralCos)
        continue;
      tissue.at<uchar> (cj, ci) = 255;
      od_samples.push_back (od);
      cv::Vec3f c;  // stain concentrations: OD (row) · inverse
      for (int k = 0; k < 3; k++)
        c[k] = od[0] * rj_inv (0, k) + od[1] * rj_inv (1, k) + od[2] * rj_inv (2, k);
      dab_sum += std::max (0.0f, c[2]);
      stain_sum += std::max (0.0f, c[0]) + std::max (0.0f, c[1]) + std::max (0.0f, c[2]);
    }
  }
  {
    cv::Mat k = cv::getStructuringElement (cv::MORPH_RECT, {3, 3});
    cv::morphologyEx (tissue, tissue, cv::MORPH_CLOSE, k);
    cv::morphologyEx (tissue, tissue, cv::MORPH_OPEN, k);
  }
  const double n_coarse = (double) cw * chh;
  sum.tissue_fraction = cv::countNonZero (tissue) / n_coarse;
  sum.tissue_area_mm2 = sum.tissue_fraction * image.cols * image.rows * um_per_px *
                        um_per_px * 1e-6;
  sum.dab_fraction = stain_sum > 0 ? dab_sum / stain_sum : 0;
  const double grey_mean = grey_s / n_coarse;
  const double grey_sd = std::sqrt (std::max (0.0, grey_s2 / n_coarse - grey_mean * grey_mean));

  stage ("stain vectors");
  // --- stain vectors
  StainVectors stains = rj;
  sum.stain_method = StainMethod::kRuifrokJohnston;
  if (P.stain == StainMethod::kMacenko && od_samples.size () >= 200) {
    cv::Mat od (1, (int) od_samples.size (), CV_32FC3, od_samples.data ());
    if (auto est = estimate_macenko (od)) {
      if (macenko_) {
        auto blend = [&] (cv::Vec3f a, cv::Vec3f b) {
          cv::Vec3f v = a * (float) (1 - P.macenko_smoothing) + b * (float) P.macenko_smoothing;
          return v / (float) cv::norm (v);
        };
        macenko_->hematoxylin = blend (macenko_->hematoxylin, est->hematoxylin);
        macenko_->eosin = blend (macenko_->eosin, est->eosin);
        cv::Vec3f t = macenko_->hematoxylin.cross (macenko_->eosin);
        macenko_->third = t / (float) cv::norm (t);
      } else {
        macenko_ = est;
      }
    }
    if (macenko_) {
      stains = *macenko_;
      sum.stain_method = StainMethod::kMacenko;
    }
  }
  sum.stain_vectors = stains;
  const cv::Matx33f inv = stain_inverse (stains);

  stage ("quality gates");
  // --- quality gates that need no segmentation
  (void) grey_sd;
  if (brightest < 40 || (sum.tissue_fraction < 0.01 && n_structure < 0.005 * n_coarse)) {
    sum.quality = Quality::kBlank;
  } else if (sum.tissue_fraction < kMinTissueFraction) {
    sum.quality = Quality::kNoTissue;
  } else if (model_refuses || (!model && wupp > P.max_um_per_px)) {
    sum.quality = Quality::kLowResolution;
  } else if (sum.dab_fraction > kWrongStainDab) {
    sum.quality = Quality::kWrongStain;
  } else {
    sum.quality = Quality::kOk;
  }

  // --- deconvolution at working resolution: H and E planes by LUTs
  float lut_h[3][256], lut_e[3][256];
  for (int c = 0; c < 3; c++)
    for (int v = 0; v < 256; v++) {
      lut_h[c][v] = od_lut[c][v] * inv (c, 0);
      lut_e[c][v] = od_lut[c][v] * inv (c, 1);
    }
  S.h.create (wh, ww, CV_32F);
  for (int j = 0; j < wh; j++) {
    const uchar *row = work->ptr<uchar> (j);
    float *hr = S.h.ptr<float> (j);
    for (int i = 0; i < ww; i++) {
      const uchar *p = row + i * nch;
      uchar r = p[rgb[0]], g = p[rgb[1]], b = p[rgb[2]];
      hr[i] = lut_h[0][r] + lut_h[1][g] + lut_h[2][b];
    }
  }
  // Mean H and E over tissue (coarse samples).
  {
    double hs = 0, es = 0;
    int n = 0;
    for (int cj = 0; cj < chh; cj++)
      for (int ci = 0; ci < cw; ci++)
        if (tissue.at<uchar> (cj, ci)) {
          int y = std::min (wh - 1, cj * kCoarseStep + kCoarseStep / 2);
          int x = std::min (ww - 1, ci * kCoarseStep + kCoarseStep / 2);
          hs += std::max (0.0f, S.h.at<float> (y, x));
          const uchar *px = work->ptr<uchar> (y) + x * nch;
          es += std::max (0.0f, lut_e[0][px[rgb[0]]] + lut_e[1][px[rgb[1]]] + lut_e[2][px[rgb[2]]]);
          n++;
        }
    sum.mean_h_od = n ? hs / n : 0;
    sum.mean_e_od = n ? es / n : 0;
    sum.he_ratio = es > 0 ? hs / es : NAN;
  }
  if (sum.quality == Quality::kBlank || sum.quality == Quality::kNoTissue ||
      sum.quality == Quality::kLowResolution || sum.quality == Quality::kWrongStain) {
    res.analysis_ms = now_ms () - t_start;
    return res;
  }

  stage ("background");
  // --- background: grey opening of H at ~2 µm pixels with a window of
  // 2·background_radius, upsampled; subtracted (top-hat).
  const double smooth_px = P.smooth_sigma_um / wupp;
  if (smooth_px > 0.3)
    cv::GaussianBlur (S.h, S.hs, cv::Size (), smooth_px, smooth_px, cv::BORDER_REFLECT);  // ±4σ
  else
    S.h.copyTo (S.hs);
  if (model) {
    // The model needs no background: hc is not used.
  } else if (P.background_radius_um <= 0) {
    S.bg = cv::Mat::zeros (wh, ww, CV_32F);
  } else {
    int f = std::max (1, (int) std::lround (2.0 / wupp));
    cv::Mat small;
    cv::resize (S.hs, small, cv::Size ((ww + f - 1) / f, (wh + f - 1) / f), 0, 0,
        cv::INTER_AREA);
    int k = 2 * std::max (1, (int) std::lround (P.background_radius_um / (wupp * f))) + 1;
    cv::morphologyEx (small, small, cv::MORPH_OPEN,
        cv::getStructuringElement (cv::MORPH_RECT, {k, k}));
    cv::blur (small, small, {3, 3});
    cv::resize (small, S.bg, cv::Size (ww, wh), 0, 0, cv::INTER_LINEAR);
  }
  if (!model)
    cv::subtract (S.hs, S.bg, S.hc);

  stage ("focus");
  // --- focus: gradient energy of H at the fine scale (σ = smooth_sigma,
  // 0.5 µm) over that at a 3× coarser scale (1.5 µm), over tissue.  A sharp
  // edge loses little by the extra smoothing (ratio ≈ 2–3), a blurred one
  // barely changes (→ 1).  Physical scales: the same meaning at any µm/px.
  {
    double s2 = std::sqrt (std::max (0.0, 9.0 - 1.0)) * P.smooth_sigma_um / wupp;
    // A centred window of at most 512² working pixels (256 µm) is plenty of
    // edges and keeps the cost fixed.
    const cv::Rect win ((ww - std::min (ww, 512)) / 2, (wh - std::min (wh, 512)) / 2,
        std::min (ww, 512), std::min (wh, 512));
    cv::Mat fine_img = S.hs (win), coarse;
    cv::GaussianBlur (fine_img, coarse, cv::Size (), s2, s2, cv::BORDER_REFLECT);
    std::vector<float> fine, crs;
    fine.reserve (ww * wh / 4);
    crs.reserve (ww * wh / 4);
    for (int j = 1; j < win.height - 1; j += 2) {
      const float *a0 = fine_img.ptr<float> (j), *au = fine_img.ptr<float> (j - 1),
                  *ad = fine_img.ptr<float> (j + 1);
      const float *b0 = coarse.ptr<float> (j), *bu = coarse.ptr<float> (j - 1), *bd = coarse.ptr<float> (j + 1);
      const uchar *tr = tissue.ptr<uchar> ((j + win.y) / kCoarseStep);
      for (int i = 1; i < win.width - 1; i += 2) {
        if (!tr[(i + win.x) / kCoarseStep])
          continue;
        fine.push_back (std::abs (a0[i + 1] - a0[i - 1]) + std::abs (ad[i] - au[i]));
        crs.push_back (std::abs (b0[i + 1] - b0[i - 1]) + std::abs (bd[i] - bu[i]));
      }
    }
    // The strongest edges (98th percentile) tell focus; flat areas do not.
    auto p98 = [] (std::vector<float> &v) {
      if (v.empty ())
        return 0.0f;
      size_t k = (size_t) (0.98 * (v.size () - 1));
      std::nth_element (v.begin (), v.begin () + k, v.end ());
      return v[k];
    };
    float f98 = p98 (fine), c98 = p98 (crs);
    sum.focus = c98 > 0 ? f98 / c98 : 0;
  }
  if (sum.focus < kMinFocus) {
    sum.quality = Quality::kOutOfFocus;
    res.analysis_ms = now_ms () - t_start;
    return res;
  }

  double thr = P.min_threshold_od;
  int n = 0;  // regions in S.labels, 1..n
  if (model) {
    stage ("model");
    n = segment_with_model (*model, *work, rgb, P, S.fg, S.dist, S.mask, S.core, S.relief,
        S.labels, S.buckets);
  } else {
  stage ("threshold");
  // --- threshold: Otsu on background-corrected H over tissue, with a floor
  {
    constexpr int kBins = 256;
    std::vector<double> hist_h (kBins, 0.0);
    double total = 0;
    for (int j = 0; j < wh; j += 2) {
      const float *cr = S.hc.ptr<float> (j);
      const uchar *tr = tissue.ptr<uchar> (j / kCoarseStep);
      for (int i = 0; i < ww; i += 2) {
        if (!tr[i / kCoarseStep])
          continue;
        int b = (int) (std::clamp (cr[i], 0.0f, (float) kOtsuMaxOd) / kOtsuMaxOd * (kBins - 1));
        hist_h[b]++;
        total++;
      }
    }
    if (total > 0) {
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
      thr = std::max (thr, P.otsu_factor * (best_b + 0.5) / (kBins - 1) * kOtsuMaxOd);
    }
  }
  stage ("foreground");
  // --- foreground, object by object: every local maximum of the
  // background-corrected H seeds a watershed basin on the inverted H; a
  // basin whose peak passes the threshold contributes its pixels above
  // edge_fraction × its peak (its own half-maximum-like edge), so pale and
  // dark nuclei both get their outline.
  const float t_low = (float) std::max (0.5 * P.min_threshold_od, P.low_fraction * thr);
  const int r_split = std::max (1, (int) std::lround (P.min_split_radius_um / wupp));
  const cv::Mat split_kernel =
      cv::getStructuringElement (cv::MORPH_RECT, {2 * r_split + 1, 2 * r_split + 1});
  {
    // The local peak: the maximum within object_radius (a max filter).
    int r = std::max (1, (int) std::lround (P.object_radius_um / wupp));
    cv::dilate (S.hc, S.dil, cv::getStructuringElement (cv::MORPH_RECT, {2 * r + 1, 2 * r + 1}));
    S.mask.create (wh, ww, CV_8U);
    const float edge = (float) P.edge_fraction, t = (float) thr;
    for (int j = 0; j < wh; j++) {
      const float *cr = S.hc.ptr<float> (j), *dr = S.dil.ptr<float> (j);
      uchar *mr = S.mask.ptr<uchar> (j);
      for (int i = 0; i < ww; i++)
        mr[i] = (cr[i] > t_low && dr[i] > t && cr[i] >= edge * dr[i]) ? 255 : 0;
    }
  }

  stage ("fill holes");
  // --- fill holes smaller than a nucleus (vesicular chromatin), open
  {
    // Holes are the inner contours of a two-level contour tree.
    std::vector<std::vector<cv::Point>> cs;
    std::vector<cv::Vec4i> tree;
    cv::Mat copy = S.mask.clone ();
    cv::findContours (copy, cs, tree, cv::RETR_CCOMP, cv::CHAIN_APPROX_SIMPLE);
    const double max_hole_px = P.max_area_um2 / 8.0 / (wupp * wupp);
    for (size_t k = 0; k < cs.size (); k++)
      if (tree[k][3] >= 0 && cv::contourArea (cs[k]) < max_hole_px)
        cv::drawContours (S.mask, cs, (int) k, cv::Scalar (255), cv::FILLED);
    cv::morphologyEx (S.mask, S.mask, cv::MORPH_OPEN,
        cv::getStructuringElement (cv::MORPH_CROSS, {3, 3}));
    // The outermost pixel ring is never nucleus (the flood relies on it).
    cv::rectangle (S.mask, cv::Rect (0, 0, ww, wh), cv::Scalar (0), 1);
  }

  stage ("touching nuclei");
  // --- touching nuclei: split by shape.  Markers are maxima of the
  // smoothed distance transform; watershed on the inverted distance; two
  // regions merge again when the saddle between them is less than
  // split_depth_um below the lower of their two centres (dynamics).
  cv::distanceTransform (S.mask, S.dist, cv::DIST_L2, cv::DIST_MASK_3);
  if (P.intensity_weight > 0) {
    // Paler lines between touching nuclei lower the relief there: distance
    // × (1 − w + w · H / local peak H).
    const float wgt = (float) P.intensity_weight;
    for (int j = 0; j < wh; j++) {
      float *dr = S.dist.ptr<float> (j);
      const float *cr = S.hc.ptr<float> (j), *pr = S.dil.ptr<float> (j);
      for (int i = 0; i < ww; i++)
        if (dr[i] > 0)
          dr[i] *= 1 - wgt + wgt * std::clamp (cr[i] / std::max (pr[i], 1e-3f), 0.0f, 1.0f);
    }
  }
  cv::GaussianBlur (S.dist, S.dist, cv::Size (5, 5), 1.0, 1.0);
  int n_labels = 0;
  cv::dilate (S.dist, S.dil, split_kernel);
  n_labels = label_peaks (S.dist, S.dil, S.mask, 0.5f, S.labels, S.stack);
  {
    double mx;
    cv::minMaxLoc (S.dist, nullptr, &mx);
    double k = mx > 0 ? std::min (16.0, 255.0 / mx) : 1.0;
    cv::Mat relief;
    S.dist.convertTo (relief, CV_8U, -k, 255.0);
    flood (relief, S.mask, S.labels, S.buckets);
  }
  std::vector<float> peak (n_labels + 1, 0.0f);
  std::vector<std::pair<uint64_t, float>> contacts;  // (pair key, saddle)
  for (int j = 0; j < wh; j++) {
    const int *lr = S.labels.ptr<int> (j);
    const int *ln = j + 1 < wh ? S.labels.ptr<int> (j + 1) : nullptr;
    const float *dr = S.dist.ptr<float> (j);
    const float *dn = j + 1 < wh ? S.dist.ptr<float> (j + 1) : nullptr;
    for (int i = 0; i < ww; i++) {
      int a = lr[i];
      if (!a)
        continue;
      peak[a] = std::max (peak[a], dr[i]);
      auto note = [&] (int b, float d) {
        if (b && b != a) {
          uint64_t key = a < b ? ((uint64_t) a << 32) | (uint32_t) b
                               : ((uint64_t) b << 32) | (uint32_t) a;
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
  {
    // The saddle of a pair is its highest contact.
    std::sort (contacts.begin (), contacts.end ());
    std::vector<std::pair<float, uint64_t>> order;
    for (size_t k = 0; k < contacts.size (); k++)
      if (k + 1 == contacts.size () || contacts[k + 1].first != contacts[k].first)
        order.emplace_back (contacts[k].second, contacts[k].first);
    std::sort (order.begin (), order.end (),
        [] (const auto &x, const auto &y) { return x.first > y.first; });
    const float depth = (float) (P.split_depth_um / wupp);
    for (auto &[sd, key] : order) {
      int a = uf.find ((int) (key >> 32)), b = uf.find ((int) (key & 0xffffffffu));
      if (a == b)
        continue;
      if (std::min (peak[a], peak[b]) - sd < depth) {
        uf.parent[b] = a;
        peak[a] = std::max (peak[a], peak[b]);
      }
    }
  }
  std::vector<int> remap (n_labels + 1, 0);
  for (int a = 1; a <= n_labels; a++)
    if (uf.find (a) == a)
      remap[a] = ++n;
  for (int a = 1; a <= n_labels; a++)
    remap[a] = remap[uf.find (a)];
  for (int j = 0; j < wh; j++) {
    int *lr = S.labels.ptr<int> (j);
    for (int i = 0; i < ww; i++)
      lr[i] = remap[lr[i]];
  }
  }  // classical

  stage ("per-region moments");
  // --- per-region moments
  struct Acc {
    double n = 0, sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0, sh = 0, sc = 0;
  };
  std::vector<Acc> acc (n + 1);
  const cv::Mat &contrast = model ? S.h : S.hc;  // hc: classical only
  for (int j = 0; j < wh; j++) {
    const int *lr = S.labels.ptr<int> (j);
    const float *hr = S.h.ptr<float> (j), *cr = contrast.ptr<float> (j);
    for (int i = 0; i < ww; i++) {
      int a = lr[i];
      if (!a)
        continue;
      Acc &q = acc[a];
      q.n++;
      q.sx += i;
      q.sy += j;
      q.sxx += (double) i * i;
      q.syy += (double) j * j;
      q.sxy += (double) i * j;
      q.sh += hr[i];
      q.sc += cr[i];
    }
  }
  const double px_area = wupp * wupp;
  std::vector<int> keep (n + 1, 0);  // region -> nucleus index + 1
  std::vector<Nucleus> nuclei;
  nuclei.reserve (n);
  for (int a = 1; a <= n; a++) {
    const Acc &q = acc[a];
    double area = q.n * px_area;
    if (area < P.min_area_um2 || area > P.max_area_um2)
      continue;
    // A nucleus is dark on average, not only at one point (classical; the
    // model has learnt what a nucleus looks like).
    if (!model && q.sc / q.n < P.mean_contrast_fraction * thr)
      continue;
    Nucleus nu;
    double cx = q.sx / q.n, cy = q.sy / q.n;
    nu.x_px = (cx + 0.5) * sx;
    nu.y_px = (cy + 0.5) * sy;
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
    if (!model && 4 * std::sqrt (l2) * wupp < P.min_width_um)
      continue;
    nuclei.push_back (std::move (nu));
    keep[a] = (int) nuclei.size ();
  }

  stage ("contours");
  // --- contours: one findContours pass over the labels with a one-pixel
  // gap between touching regions
  S.gapped.create (wh, ww, CV_8U);
  for (int j = 0; j < wh; j++) {
    const int *lr = S.labels.ptr<int> (j);
    const int *ln = j + 1 < wh ? S.labels.ptr<int> (j + 1) : nullptr;
    uchar *g = S.gapped.ptr<uchar> (j);
    for (int i = 0; i < ww; i++) {
      int a = lr[i];
      bool on = a && keep[a];
      // 8-connected contours: separate diagonal neighbours too.
      if (on && ((i + 1 < ww && lr[i + 1] && lr[i + 1] != a) ||
                    (ln && ((ln[i] && ln[i] != a) || (i + 1 < ww && ln[i + 1] && ln[i + 1] != a) ||
                               (i > 0 && ln[i - 1] && ln[i - 1] != a)))))
        on = false;
      g[i] = on ? 255 : 0;
    }
  }
  std::vector<std::vector<cv::Point>> contours;
  cv::findContours (S.gapped, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_NONE);
  std::vector<double> best_len (nuclei.size (), 0.0);
  for (auto &c : contours) {
    int a = S.labels.at<int> (c[0]);
    if (a <= 0 || !keep[a])
      continue;
    int idx = keep[a] - 1;
    if ((double) c.size () <= best_len[idx])
      continue;
    best_len[idx] = (double) c.size ();
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
    nu.perimeter_um = per_px * wupp;
    nu.circularity = std::min (1.0, 4 * kPi * poly_area / (per_px * per_px));
    std::vector<cv::Point2f> hull;
    if (m >= 3) {
      cv::convexHull (sm, hull);
      double hull_area = std::abs (cv::contourArea (hull)) + grow * cv::arcLength (hull, true);
      nu.solidity = hull_area > 0 ? std::min (1.0, nu.area_um2 / px_area / hull_area) : 1.0;
    } else {
      nu.solidity = 1.0;
    }
    if (P.want_contours) {
      nu.contour.resize (m);
      for (size_t k = 0; k < m; k++)
        nu.contour[k] = cv::Point2f ((float) ((c[k].x + 0.5) * sx), (float) ((c[k].y + 0.5) * sy));
    }
  }
  for (size_t k = 0; k < nuclei.size (); k++)
    if (best_len[k] == 0) {  // a region the gap cut to nothing: treat as round
      nuclei[k].perimeter_um = 2 * std::sqrt (kPi * nuclei[k].area_um2);
      nuclei[k].circularity = 1.0;
      nuclei[k].solidity = 1.0;
    }

  stage ("frame summary");
  // --- frame summary
  std::vector<double> areas, hods;
  areas.reserve (nuclei.size ());
  hods.reserve (nuclei.size ());
  double circ_sum = 0;
  for (const Nucleus &nu : nuclei) {
    areas.push_back (nu.area_um2);
    hods.push_back (nu.mean_h_od);
    circ_sum += nu.circularity;
  }
  sum.nuclei_count = (int) nuclei.size ();
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
    nu.mitotic_candidate = nuclei.size () >= 5 && nu.mean_h_od >= 1.4 * h_med &&
                           nu.solidity < 0.9 && nu.area_um2 <= 2 * P.reference_area_um2;
    mitoses += nu.mitotic_candidate;
  }
  sum.mitotic_candidates = mitoses;
  sum.mitotic_candidates_per_mm2 = sum.tissue_area_mm2 > 0 ? mitoses / sum.tissue_area_mm2 : NAN;
  if ((int) nuclei.size () >= kMinNucleiForScore) {
    sum.size_ratio = std::sqrt (percentile_of (areas, 0.75) / P.reference_area_um2);
    sum.pleomorphism = pleomorphism_score (sum.size_ratio, sum.cv_area, sum.cv_h_od);
    sum.grade_cue = grade_cue_for (sum.pleomorphism, sum.mitotic_candidates_per_mm2);
  }
  res.nuclei = std::move (nuclei);
  if (P.want_labels) {
    res.label_working.create (wh, ww, CV_32S);
    for (int j = 0; j < wh; j++) {
      const int *lr = S.labels.ptr<int> (j);
      int *out = res.label_working.ptr<int> (j);
      for (int i = 0; i < ww; i++)
        out[i] = keep[lr[i]];
    }
  }
  res.analysis_ms = now_ms () - t_start;
  return res;
}

}  // namespace livemicro::analysis
