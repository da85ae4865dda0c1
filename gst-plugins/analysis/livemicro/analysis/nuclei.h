// livemicro::analysis — H&E nuclei analysis on one RGB image.
//
// Plain C++ (OpenCV), no GObject: used by the `tumorfeatures` element and by
// `livemicroctl analyze`, and unit-tested on cv::Mat.  One Analyzer per
// stream: it keeps the per-slide Macenko stain vectors, smoothed over time,
// and its scratch buffers between frames.  Not thread-safe: one thread at a
// time per Analyzer.
//
// Units: optical density (OD) is decadic, OD = −log10(I / I0), I0 the
// brightness of empty glass estimated per frame; lengths in µm, areas µm².
// Every parameter and its default is documented in docs/analysis.md and
// below.
#pragma once

#include <livemicro/analysis/nuclei_model.h>

#include <opencv2/core.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace livemicro::analysis {

// Stain OD vectors (R, G, B components, unit length).
struct StainVectors {
  cv::Vec3f hematoxylin, eosin, third; // third: DAB (Ruifrok) or H×E residual
};
// Ruifrok & Johnston (2001), H, E and DAB, normalised.
StainVectors ruifrok_johnston ();

enum class StainMethod { kRuifrokJohnston, kMacenko };

// Estimates H and E vectors with Macenko et al. (2009) from OD samples (rows
// of CV_32FC3 OD values, already filtered to tissue).  nullopt when the
// samples cannot give two distinct stains (too few, one colour only).
std::optional<StainVectors> estimate_macenko (const cv::Mat &od_samples, double alpha_percentile = 1.0);

// What makes the numbers of a frame meaningless.
enum class Quality {
  kOk,
  kBlank,         // empty light path / blank glass / dark frame: no structure
  kNoTissue,      // structure but (almost) no stained tissue: label, debris
  kLowResolution, // µm/px too coarse to resolve nuclei (e.g. a 4x objective)
  kWrongStain,    // not an H&E stain (e.g. DAB/IHC brown dominating)
  kOutOfFocus,    // tissue present but blurred
};
const char *quality_name (Quality q);

// How nuclei are segmented.  kModel: the learned nucleus model
// (nuclei_model.h) and a marker-controlled watershed on its maps, always at
// kModelUmPerPx; kClassical: colour deconvolution, threshold and a
// distance-transform watershed at working_um_per_px; kAuto: the model when
// it loads, else classical.
enum class Method { kAuto, kModel, kClassical };
const char *method_name (Method m);

// Which nucleus feature a number refers to (overlay colouring, docs/elements.md).
enum class Feature { kArea, kCircularity, kElongation, kSolidity, kHematoxylin };

struct Params {
  Method method = Method::kAuto;
  std::string model_path; // "" = default_model_path ()
  // Model method: nucleus where P(foreground) > fg_threshold; one marker per
  // connected core where also the normalised edge distance > marker_threshold
  // (0.4 scored best of 0.3/0.4/0.5 on the training organs of the
  // breast-held-out fold, never on a held-out organ; docs/analysis.md).
  double fg_threshold = 0.5;
  double marker_threshold = 0.4;
  // Test-time augmentation of the model: its maps averaged over this many
  // flipped/rotated copies of the frame (1 = off, 2, 4 or 8; see
  // NucleusModel::predict), at that many times the network's CPU.
  int model_tta_copies = 1;
  // Classical method:
  // Segmentation runs at a working resolution: the frame is area-resampled
  // to `working_um_per_px` (never enlarged) unless `analysis_scale` > 0
  // fixes the resampling factor (1 = full resolution).
  double analysis_scale = 0.0; // 0 = automatic (working_um_per_px)
  double working_um_per_px = 0.5;
  StainMethod stain = StainMethod::kRuifrokJohnston;
  double macenko_smoothing = 0.2;       // weight of a new frame's vectors
  double min_area_um2 = 8.0;            // smaller objects are not nuclei
  double max_area_um2 = 400.0;          // larger objects are clumps/folds: dropped
  double mean_contrast_fraction = 0.75; // mean corrected H ≥ this × threshold
  double min_width_um = 2.0;            // thinner objects are membranes/fibres
  double smooth_sigma_um = 0.5;         // Gaussian smoothing of hematoxylin OD
  double background_radius_um = 10.0;   // background (top-hat) scale
  double min_threshold_od = 0.10;       // floor of the threshold (H OD)
  double otsu_factor = 1.0;             // threshold = max(floor, factor × Otsu)
  double split_depth_um = 0.05;         // saddle depth (distance map) that splits nuclei
  double low_fraction = 0.4;            // basin support: H above this × threshold
  double edge_fraction = 0.4;           // nucleus edge at this × its local peak H
  double object_radius_um = 3.0;        // window of the local peak (max filter)
  double intensity_weight = 0.5;        // paler gaps help splitting (0 = shape only)
  double min_split_radius_um = 1.2;     // markers closer than this merge
  double max_um_per_px = 1.25;          // coarser frames: quality low_resolution
  double reference_area_um2 = 30.0;     // normal epithelial nucleus (Nottingham)
  bool want_contours = true;
  bool want_labels = false; // fill Result::label_working
};

struct Nucleus {
  double x_px = 0, y_px = 0; // centroid, frame pixels (centre of px 0 = 0.5)
  double area_um2 = 0;
  double perimeter_um = 0;
  double circularity = 0; // 4πA/P², 1 for a disc
  double elongation = 1;  // major/minor axis of the inertia ellipse
  double solidity = 0;    // area / convex hull area
  double mean_h_od = 0;   // mean hematoxylin OD inside
  bool mitotic_candidate = false;
  std::vector<cv::Point2f> contour; // frame pixels (outline polygon)
  double feature (Feature f) const;
};

struct Summary {
  Quality quality = Quality::kBlank;
  double um_per_px = 0;         // of the frame given
  double working_um_per_px = 0; // where segmentation ran
  int frame_width = 0, frame_height = 0;
  double tissue_fraction = 0; // of the frame area
  double tissue_area_mm2 = 0;
  double mean_h_od = 0, mean_e_od = 0; // over tissue
  double he_ratio = 0;                 // mean H OD / mean E OD over tissue
  double focus = 0;                    // fine/coarse edge gradient ratio (docs/analysis.md)
  double dab_fraction = 0;             // share of tissue OD on the DAB vector
  // Valid only when quality == kOk (NaN/0 otherwise):
  int nuclei_count = 0;
  double nuclei_per_mm2 = NAN;
  double mean_area_um2 = NAN;
  double cv_area = NAN; // coefficient of variation of nuclear area
  double mean_circularity = NAN;
  double cv_h_od = NAN;    // chromatin variation: CV of mean H OD
  double size_ratio = NAN; // √(P75 area / reference area)
  int pleomorphism = 0;    // 1–3, 0 = not scored (too few nuclei)
  int mitotic_candidates = 0;
  double mitotic_candidates_per_mm2 = NAN;
  std::string grade_cue; // "low" | "intermediate" | "high" | "" (none)
  StainVectors stain_vectors;
  StainMethod stain_method = StainMethod::kRuifrokJohnston;
};

struct Result {
  Summary summary;
  std::vector<Nucleus> nuclei;
  // With Params::want_labels: CV_32S at working resolution, nucleus index
  // + 1 (0 = background); working pixel (i, j) covers frame pixels
  // [i·sx, (i+1)·sx) with sx = frame width / working width.
  cv::Mat label_working;
  double analysis_ms = 0;
  Method method = Method::kClassical; // the one that ran (never kAuto)
};

// The written Nottingham-like rule (docs/analysis.md): subscores and the grade cue.
int pleomorphism_score (double size_ratio, double cv_area, double cv_h_od);
std::string grade_cue_for (int pleomorphism, double mitoses_per_mm2);

class Analyzer {
public:
  explicit Analyzer (Params params = Params ());
  ~Analyzer ();
  Analyzer (const Analyzer &) = delete;
  Analyzer &operator= (const Analyzer &) = delete;

  const Params &params () const { return params_; }
  void set_params (const Params &p);
  // Forgets the smoothed per-slide stain vectors (new slide).
  void reset ();
  // Gives back the working memory of analyze (): the scratch images and,
  // when a model is set, its layer buffers (NucleusModel::release_buffers;
  // tens of MB each at 720p).  Settings, the model and the stain estimate
  // stay; the next analyze () allocates again and gives the same result.
  void release_memory ();
  // Uses this model for Method::kModel / kAuto instead of loading
  // Params::model_path itself (nullptr: load it when first needed).
  void set_model (std::shared_ptr<NucleusModel> model);
  // kAuto: why the model could not be used ("" when it was, or not tried).
  const std::string &model_error () const { return model_error_; }

  // Analyses one 8-bit image, CV_8UC3 or CV_8UC4; `rgb_channels` gives the
  // indices of R, G and B ({0,1,2} for RGB, {2,1,0} for BGR, {1,2,3} for
  // xRGB).  Throws std::invalid_argument for an image or scale it cannot
  // use, ModelError (nuclei_model.h) when Method::kModel's model cannot load.
  // `stop`, when set, is asked between the model's tiles; when it says so,
  // analyze () throws AnalysisStopped (nuclei_model.h) and the Analyzer
  // stays usable (the slide's stain estimate may include this frame).
  Result analyze (const cv::Mat &image, double um_per_px, std::array<int, 3> rgb_channels = {0, 1, 2},
                  const StopRequested &stop = {});

private:
  struct Scratch;
  // The model to use for this frame, or nullptr for classical.
  NucleusModel *model_for_frame ();
  // The stain vectors for this frame (and which kind they are), given its
  // tissue's optical densities; updates the slide's Macenko estimate.
  StainVectors stain_vectors (const std::vector<cv::Vec3f> &od_samples, StainMethod &used);
  Params params_;
  std::shared_ptr<NucleusModel> model_;
  bool model_tried_ = false;
  std::string model_error_;
  std::optional<StainVectors> macenko_;
  std::unique_ptr<Scratch> scratch_;
};

} // namespace livemicro::analysis
