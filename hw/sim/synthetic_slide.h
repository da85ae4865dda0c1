// A generated H&E glass slide with ground truth.
//
// Geometry (µm from the slide's top-left corner, x along the long side):
//   slide      75 000 × 25 000
//   paper label x 0–20 000, full height: fake patient name, MRN, date, case
//              number and a QR code, printed black on paper
//   tissue     2–4 sections inside x 25 000–70 000, y 1 500–23 500
// Tissue is composed in optical density with H&E stain vectors (Beer–Lambert),
// so colour deconvolution separates hematoxylin (nuclei) from eosin (stroma,
// cytoplasm).  Nuclei are placed on a jittered 10 µm grid; each is an ellipse
// with an optional lobed outline, and is a pure function of (seed, grid cell),
// so the ground truth of any region can be listed without rendering.
#pragma once

#include "slide.h"

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace livemicro::hw::sim {

enum class NucleusKind { kTumour, kEpithelial, kLymphocyte, kFibroblast, kMitosis };
const char *nucleus_kind_name (NucleusKind kind);

struct Nucleus {
  uint64_t id = 0;
  NucleusKind kind = NucleusKind::kEpithelial;
  double x_um = 0, y_um = 0;         // centroid
  double major_um = 0, minor_um = 0; // full axis lengths of the base ellipse
  double angle_deg = 0;              // major axis from +x towards +y
  double lobe_amplitude = 0;         // outline r(φ) = 1 + a·sin(k·φ + p)
  int lobes = 0;
  double lobe_phase = 0;
  double hematoxylin_od = 0; // mean stain optical density inside
  double area_um2 () const;
  // The outline as a polygon in slide µm (n points).
  std::vector<cv::Point2d> outline_um (int n = 64) const;
};

struct SlideLabel {
  cv::Rect2d rect_um; // the whole paper label
  std::string patient_name, mrn, birth_date, collection_date, case_id;
  std::string qr_payload;
  cv::Rect2d qr_rect_um;
  std::vector<cv::Rect2d> text_rects_um; // one per printed line
};

class SyntheticSlide : public Slide {
public:
  static constexpr double kWidthUm = 75000.0;
  static constexpr double kHeightUm = 25000.0;
  static constexpr double kLabelWidthUm = 20000.0;
  static constexpr double kTissueMinXUm = 25000.0;
  static constexpr double kTissueMaxXUm = 70000.0;
  static constexpr double kCellUm = 10.0;
  static constexpr uint64_t kDefaultSeed = 20190709; // HotEdge '19

  explicit SyntheticSlide (uint64_t seed = kDefaultSeed);
  ~SyntheticSlide () override;

  std::string description () const override;
  cv::Size2d size_um () const override { return {kWidthUm, kHeightUm}; }
  double native_um_per_px () const override { return 0.125; }
  cv::Point2d home_um () const override { return home_um_; }
  void render (double um_per_px, const cv::Rect &region_px, cv::Mat &out_rgb) const override;

  uint64_t seed () const { return seed_; }
  const SlideLabel &label () const { return label_; }
  // Nuclei whose centroid lies in region_um.
  std::vector<Nucleus> nuclei_in (const cv::Rect2d &region_um) const;
  // The same nuclei, one at a time, without collecting them.
  void for_each_nucleus_in (const cv::Rect2d &region_um,
                            const std::function<void (const Nucleus &)> &visit) const;
  // Tissue presence in [0, 1] at a slide point (0: glass).
  float tissue_at (double x_um, double y_um) const;
  // Ground truth as one JSON object: slide, label, tissue sections and the
  // nuclei inside region_um (whole slide when empty).
  void write_ground_truth (std::ostream &out, std::optional<cv::Rect2d> region_um = std::nullopt) const;

private:
  struct Fields;
  std::optional<Nucleus> nucleus_in_cell (int64_t ci, int64_t cj) const;
  void render_tissue (double upp, const cv::Rect &r, cv::Mat &out) const;
  void render_label (double upp, const cv::Rect &r, cv::Mat &out) const;
  void build_label ();
  void build_fields ();
  void find_home ();

  uint64_t seed_;
  std::unique_ptr<Fields> fields_;
  std::vector<cv::RotatedRect> sections_um_;
  cv::Point2d home_um_;
  SlideLabel label_;
  cv::Mat label_rgb_;           // the label printed at kLabelUmPerPx
  cv::Vec3f stain_h_, stain_e_; // OD vectors (R, G, B), unit length
};

} // namespace livemicro::hw::sim
