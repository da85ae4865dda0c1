#include "synthetic_slide.h"

#include "noise.h"

#include <json-glib/json-glib.h>
#include <opencv2/imgproc.hpp>
#include <opencv2/objdetect.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <future>
#include <ostream>

namespace livemicro::hw::sim {

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kFieldUmPerPx = 25.0; // resolution of the tissue-type maps
constexpr double kLabelUmPerPx = 8.0;  // resolution the label is printed at
constexpr double kMaxNucleusRadiusUm = 9.0;

// Seeds of the independent random streams, so that one never shifts another.
enum Stream : uint64_t {
  kStreamSections = 1,
  kStreamTissueEdge,
  kStreamHoles,
  kStreamTumour,
  kStreamLymph,
  kStreamEpith,
  kStreamFibreAngle,
  kStreamFibre,
  kStreamCytoplasm,
  kStreamChromatin,
  kStreamNuclei,
  kStreamLabel,
  kStreamStain,
};

uint64_t
stream_seed (uint64_t seed, Stream s)
{
  return mix64 (seed * 0x100000001B3ULL + s);
}

// Fractal noise over the whole slide at field resolution: random lattices of
// spacing wavelength_um, /2, /4, ... (down to two field pixels), interpolated
// bicubically, amplitudes halving, so region boundaries are ragged at every
// scale instead of the smooth contour lines of one octave.
cv::Mat
field_noise (uint64_t seed, cv::Size size, double wavelength_um)
{
  cv::Mat acc = cv::Mat::zeros (size, CV_32F);
  float amplitude = 1.0f, total = 0.0f;
  cv::Mat up_buffer;
  for (int octave = 0; octave < 6; octave++) {
    double lambda_px = wavelength_um / kFieldUmPerPx / (1 << octave);
    if (lambda_px < 2.0)
      break;
    int gw = static_cast<int> (std::ceil (size.width / lambda_px)) + 4;
    int gh = static_cast<int> (std::ceil (size.height / lambda_px)) + 4;
    cv::Mat lattice (gh, gw, CV_32F);
    for (int j = 0; j < gh; j++)
      for (int i = 0; i < gw; i++)
        lattice.at<float> (j, i) = unit_from_hash (hash3 (seed + octave, i, j));
    // The first octave's is the largest: the later ones reuse its pages.
    const cv::Size up_size (static_cast<int> (gw * lambda_px), static_cast<int> (gh * lambda_px));
    if (up_buffer.empty ())
      up_buffer.create (up_size, CV_32F);
    cv::Mat up = up_buffer (cv::Rect (cv::Point (0, 0), up_size));
    cv::resize (lattice, up, up_size, 0, 0, cv::INTER_CUBIC);
    cv::Mat roi
        = up (cv::Rect (static_cast<int> (lambda_px), static_cast<int> (lambda_px), size.width, size.height));
    cv::scaleAdd (roi, amplitude, acc, acc);
    total += amplitude;
    amplitude *= 0.5f;
  }
  acc /= total;
  return acc;
}

float
percentile (const cv::Mat &values, const cv::Mat &mask, double q)
{
  std::vector<float> v;
  for (int j = 0; j < values.rows; j += 2)
    for (int i = 0; i < values.cols; i += 2)
      if (mask.at<float> (j, i) > 0.5f)
        v.push_back (values.at<float> (j, i));
  if (v.empty ())
    return 0.5f;
  size_t k = std::min (v.size () - 1, static_cast<size_t> (q * v.size ()));
  std::nth_element (v.begin (), v.begin () + k, v.end ());
  return v[k];
}

cv::Vec3f
normalized (cv::Vec3f v)
{
  return v / static_cast<float> (cv::norm (v));
}

} // namespace

const char *
nucleus_kind_name (NucleusKind kind)
{
  switch (kind) {
  case NucleusKind::kTumour:
    return "tumour";
  case NucleusKind::kEpithelial:
    return "epithelial";
  case NucleusKind::kLymphocyte:
    return "lymphocyte";
  case NucleusKind::kFibroblast:
    return "fibroblast";
  case NucleusKind::kMitosis:
    return "mitosis";
  }
  return "unknown";
}

double
Nucleus::area_um2 () const
{
  return kPi * (major_um / 2) * (minor_um / 2) * (1.0 + lobe_amplitude * lobe_amplitude / 2.0);
}

std::vector<cv::Point2d>
Nucleus::outline_um (int n) const
{
  std::vector<cv::Point2d> pts;
  pts.reserve (n);
  double a = major_um / 2, b = minor_um / 2;
  double c = std::cos (angle_deg * kPi / 180), s = std::sin (angle_deg * kPi / 180);
  for (int k = 0; k < n; k++) {
    double phi = 2 * kPi * k / n;
    double r = 1.0 + lobe_amplitude * std::sin (lobes * phi + lobe_phase);
    double u = a * r * std::cos (phi), v = b * r * std::sin (phi);
    pts.emplace_back (x_um + u * c - v * s, y_um + u * s + v * c);
  }
  return pts;
}

struct SyntheticSlide::Fields {
  cv::Mat tissue, tumour, lymph, epith, fibre_angle;
  float t_tumour = 0.6f, t_lymph = 0.7f, t_epith = 0.6f;

  static float sample (const cv::Mat &m, double x_um, double y_um)
  {
    double fx = x_um / kFieldUmPerPx - 0.5, fy = y_um / kFieldUmPerPx - 0.5;
    fx = std::clamp (fx, 0.0, m.cols - 1.001);
    fy = std::clamp (fy, 0.0, m.rows - 1.001);
    int ix = static_cast<int> (fx), iy = static_cast<int> (fy);
    float tx = static_cast<float> (fx - ix), ty = static_cast<float> (fy - iy);
    const float *r0 = m.ptr<float> (iy), *r1 = m.ptr<float> (iy + 1);
    float a = r0[ix] + (r0[ix + 1] - r0[ix]) * tx;
    float b = r1[ix] + (r1[ix + 1] - r1[ix]) * tx;
    return a + (b - a) * ty;
  }
};

SyntheticSlide::SyntheticSlide (uint64_t seed) : seed_ (seed), fields_ (std::make_unique<Fields> ())
{
  Rng rng (stream_seed (seed, kStreamSections));

  // Stain vectors: Ruifrok & Johnston's H&E, slightly varied per slide as
  // real stainings are.
  Rng stain (stream_seed (seed, kStreamStain));
  stain_h_ = normalized (cv::Vec3f (0.650f + 0.03f * (float)stain.normal (),
                                    0.704f + 0.03f * (float)stain.normal (),
                                    0.286f + 0.03f * (float)stain.normal ()));
  stain_e_ = normalized (
      cv::Vec3f (0.072f + 0.02f * (float)stain.normal (), 0.990f, 0.105f + 0.02f * (float)stain.normal ()));

  // Tissue sections: rotated ellipses with ragged edges.
  int n_sections = 2 + static_cast<int> (rng.next () % 3);
  for (int k = 0; k < n_sections; k++) {
    double rx = rng.uniform (4500, 9000), ry = rng.uniform (3500, 8000);
    double cx = rng.uniform (kTissueMinXUm + 500 + rx, kTissueMaxXUm - 500 - rx);
    double cy = rng.uniform (1500 + ry, kHeightUm - 1500 - ry);
    sections_um_.emplace_back (cv::Point2f ((float)cx, (float)cy),
                               cv::Size2f ((float)(2 * rx), (float)(2 * ry)), (float)rng.uniform (-25, 25));
  }

  // The label is printed while the fields are built (it needs none of them).
  auto label = std::async (std::launch::async, [this] { build_label (); });
  build_fields ();
  find_home ();
  label.get ();
}

// The smooth fields the slide is drawn from: tissue presence (the sections
// with ragged edges and holes) and the tissue-type noises with their
// thresholds.
void
SyntheticSlide::build_fields ()
{
  // The six noises are independent: built side by side, each on its own
  // thread, as the slide is built once, before any frame (identical to
  // building them in turn).
  uint64_t seed = seed_;
  cv::Size fsize (static_cast<int> (kWidthUm / kFieldUmPerPx), static_cast<int> (kHeightUm / kFieldUmPerPx));
  auto noise = [&] (Stream stream, double wavelength_um) {
    return std::async (std::launch::async, field_noise, stream_seed (seed, stream), fsize, wavelength_um);
  };
  auto tumour = noise (kStreamTumour, 2500), lymph = noise (kStreamLymph, 350);
  auto epith = noise (kStreamEpith, 700), fibre_angle = noise (kStreamFibreAngle, 600);
  auto holes_f = noise (kStreamHoles, 260);
  cv::Mat edge = field_noise (stream_seed (seed, kStreamTissueEdge), fsize, 1800);
  Fields &f = *fields_;
  // Tissue: the largest presence over the sections, each evaluated only
  // where it can reach (its ellipse at √2.5 times its radii).
  f.tissue = cv::Mat::zeros (fsize, CV_32F);
  for (const auto &sec : sections_um_) {
    const double c = std::cos (sec.angle * kPi / 180), s = std::sin (sec.angle * kPi / 180);
    const double rx = sec.size.width / 2.0, ry = sec.size.height / 2.0, reach = std::sqrt (2.5);
    const double half_w = reach * std::hypot (rx * c, ry * s), half_h = reach * std::hypot (rx * s, ry * c);
    const int i0 = std::max (0, (int)std::floor ((sec.center.x - half_w) / kFieldUmPerPx - 1));
    const int i1 = std::min (fsize.width - 1, (int)std::ceil ((sec.center.x + half_w) / kFieldUmPerPx + 1));
    const int j0 = std::max (0, (int)std::floor ((sec.center.y - half_h) / kFieldUmPerPx - 1));
    const int j1 = std::min (fsize.height - 1, (int)std::ceil ((sec.center.y + half_h) / kFieldUmPerPx + 1));
    for (int j = j0; j <= j1; j++) {
      double y = (j + 0.5) * kFieldUmPerPx;
      float *row = f.tissue.ptr<float> (j);
      const float *edge_row = edge.ptr<float> (j);
      for (int i = i0; i <= i1; i++) {
        double x = (i + 0.5) * kFieldUmPerPx;
        double dx = x - sec.center.x, dy = y - sec.center.y;
        double u = (dx * c + dy * s) / rx;
        double v = (-dx * s + dy * c) / ry;
        if (u * u + v * v > 2.5)
          continue; // far outside: the ragged edge never reaches this far
        double r = std::sqrt (u * u + v * v);
        float e = 1.0f - (float)r + 0.35f * (edge_row[i] - 0.5f);
        row[i] = std::max (row[i], smoothstep (0.0f, 0.04f, e));
      }
    }
  }
  cv::Mat holes = holes_f.get ();
  for (int j = 0; j < fsize.height; j++) {
    float *row = f.tissue.ptr<float> (j);
    const float *holes_row = holes.ptr<float> (j);
    for (int i = 0; i < fsize.width; i++)
      if (row[i] > 0)
        row[i] *= 1.0f - smoothstep (0.70f, 0.76f, holes_row[i]);
  }
  f.tumour = tumour.get ();
  f.lymph = lymph.get ();
  f.epith = epith.get ();
  f.fibre_angle = fibre_angle.get ();
  // Thresholds as quantiles over the tissue, so the share of each tissue type
  // is the same for every seed: ~35 % tumour, ~8 % lymphocyte clusters,
  // ~20 % benign epithelium, the rest stroma.
  f.t_tumour = percentile (f.tumour, f.tissue, 0.65);
  f.t_lymph = percentile (f.lymph, f.tissue, 0.92);
  f.t_epith = percentile (f.epith, f.tissue, 0.70);
}

// Home: the centre of the largest section, moved onto tissue if it fell in a
// hole.
void
SyntheticSlide::find_home ()
{
  const cv::RotatedRect *largest = &sections_um_[0];
  for (const auto &s : sections_um_)
    if (s.size.area () > largest->size.area ())
      largest = &s;
  home_um_ = cv::Point2d (largest->center.x, largest->center.y);
  for (int ring = 0; ring < 40 && tissue_at (home_um_.x, home_um_.y) < 0.9f; ring++)
    for (int k = 0; k < 16; k++) {
      double a = 2 * kPi * k / 16, r = 100.0 * (ring + 1);
      cv::Point2d p (largest->center.x + r * std::cos (a), largest->center.y + r * std::sin (a));
      if (tissue_at (p.x, p.y) >= 0.9f) {
        home_um_ = p;
        break;
      }
    }
}

SyntheticSlide::~SyntheticSlide () = default;

std::string
SyntheticSlide::description () const
{
  return "synthetic H&E slide (seed " + std::to_string (seed_) + ")";
}

float
SyntheticSlide::tissue_at (double x_um, double y_um) const
{
  if (x_um < kTissueMinXUm || x_um > kTissueMaxXUm || y_um < 0 || y_um > kHeightUm)
    return 0.0f;
  return Fields::sample (fields_->tissue, x_um, y_um);
}

// Draws the size, elongation, lobes and stain of a nucleus of n.kind (in
// this order from `rng`); returns its area in µm².
static double
draw_shape (Nucleus &n, Rng &rng, double &elongation)
{
  double area = 0;
  switch (n.kind) {
  case NucleusKind::kTumour:
    area = std::clamp (38.0 * std::exp (0.32 * rng.normal ()), 14.0, 95.0);
    elongation = std::min (2.2, 1.0 + std::abs (0.28 * rng.normal ()));
    n.lobe_amplitude = rng.uniform (0.0, 0.12);
    n.lobes = 2 + static_cast<int> (rng.next () % 4);
    n.hematoxylin_od = rng.uniform (0.75, 1.10);
    break;
  case NucleusKind::kEpithelial:
    area = std::clamp (24.0 * std::exp (0.15 * rng.normal ()), 14.0, 40.0);
    elongation = 1.0 + std::abs (0.12 * rng.normal ());
    n.lobe_amplitude = rng.uniform (0.0, 0.04);
    n.lobes = 3;
    n.hematoxylin_od = rng.uniform (0.60, 0.78);
    break;
  case NucleusKind::kLymphocyte:
    area = std::clamp (16.0 * std::exp (0.10 * rng.normal ()), 11.0, 24.0);
    elongation = 1.0 + std::abs (0.06 * rng.normal ());
    n.lobe_amplitude = rng.uniform (0.0, 0.02);
    n.lobes = 3;
    n.hematoxylin_od = rng.uniform (1.00, 1.25);
    break;
  case NucleusKind::kFibroblast:
    area = std::clamp (16.0 * std::exp (0.20 * rng.normal ()), 9.0, 30.0);
    elongation = rng.uniform (2.4, 3.4);
    n.lobes = 2;
    n.hematoxylin_od = rng.uniform (0.70, 0.85);
    break;
  case NucleusKind::kMitosis:
    area = std::clamp (22.0 * std::exp (0.20 * rng.normal ()), 12.0, 40.0);
    elongation = rng.uniform (1.2, 1.6);
    n.lobe_amplitude = rng.uniform (0.25, 0.40);
    n.lobes = 5 + static_cast<int> (rng.next () % 3);
    n.hematoxylin_od = rng.uniform (1.45, 1.65);
    break;
  }
  return area;
}

std::optional<Nucleus>
SyntheticSlide::nucleus_in_cell (int64_t ci, int64_t cj) const
{
  double base_x = (ci + 0.5) * kCellUm, base_y = (cj + 0.5) * kCellUm;
  float d = tissue_at (base_x, base_y);
  if (d < 0.35f)
    return std::nullopt;
  const Fields &f = *fields_;
  Rng rng (hash3 (stream_seed (seed_, kStreamNuclei), ci, cj));
  float presence = smoothstep (0.35f, 0.65f, d);
  float t = Fields::sample (f.tumour, base_x, base_y);
  float l = Fields::sample (f.lymph, base_x, base_y);
  float e = Fields::sample (f.epith, base_x, base_y);

  Nucleus n;
  double p;
  if (t >= f.t_tumour) {
    n.kind = NucleusKind::kTumour;
    p = 0.80;
  } else if (l >= f.t_lymph) {
    n.kind = NucleusKind::kLymphocyte;
    p = 0.75;
  } else if (e >= f.t_epith) {
    n.kind = NucleusKind::kEpithelial;
    p = 0.55;
  } else {
    n.kind = NucleusKind::kFibroblast;
    p = 0.12;
  }
  if (rng.uniform () > p * presence)
    return std::nullopt;
  if (n.kind == NucleusKind::kTumour && rng.uniform () < 0.012)
    n.kind = NucleusKind::kMitosis;

  double elongation = 1;
  double area = draw_shape (n, rng, elongation);
  n.lobe_phase = rng.uniform (0, 2 * kPi);
  double ab = area / (kPi * (1.0 + n.lobe_amplitude * n.lobe_amplitude / 2));
  double a = std::sqrt (ab * elongation), b = std::sqrt (ab / elongation);
  n.major_um = 2 * a;
  n.minor_um = 2 * b;
  if (n.kind == NucleusKind::kFibroblast)
    n.angle_deg = Fields::sample (f.fibre_angle, base_x, base_y) * 540.0 + rng.normal () * 8.0;
  else
    n.angle_deg = rng.uniform (0, 180);
  n.angle_deg = std::fmod (n.angle_deg + 360.0, 180.0);
  double jitter = 0.35 * kCellUm;
  n.x_um = base_x + rng.uniform (-jitter, jitter);
  n.y_um = base_y + rng.uniform (-jitter, jitter);
  n.id = static_cast<uint64_t> (cj) * 10000u + static_cast<uint64_t> (ci);
  return n;
}

// Visits the nuclei one at a time: a whole-slide render (the slide map's
// overview) covers millions of them, which as one vector cost ~200 MB.
void
SyntheticSlide::for_each_nucleus_in (const cv::Rect2d &region,
                                     const std::function<void (const Nucleus &)> &visit) const
{
  double x0 = std::max (region.x, kTissueMinXUm - kCellUm);
  double x1 = std::min (region.x + region.width, kTissueMaxXUm + kCellUm);
  double y0 = std::max (region.y, 0.0);
  double y1 = std::min (region.y + region.height, kHeightUm);
  if (x1 <= x0 || y1 <= y0)
    return;
  // A nucleus sits within 0.35 cell of its cell centre: widen by one cell.
  int64_t ci0 = static_cast<int64_t> (std::floor (x0 / kCellUm)) - 1;
  int64_t ci1 = static_cast<int64_t> (std::floor (x1 / kCellUm)) + 1;
  int64_t cj0 = static_cast<int64_t> (std::floor (y0 / kCellUm)) - 1;
  int64_t cj1 = static_cast<int64_t> (std::floor (y1 / kCellUm)) + 1;
  for (int64_t cj = cj0; cj <= cj1; cj++)
    for (int64_t ci = ci0; ci <= ci1; ci++)
      if (auto n = nucleus_in_cell (ci, cj))
        if (n->x_um >= region.x && n->x_um < region.x + region.width && n->y_um >= region.y
            && n->y_um < region.y + region.height)
          visit (*n);
}

std::vector<Nucleus>
SyntheticSlide::nuclei_in (const cv::Rect2d &region) const
{
  std::vector<Nucleus> out;
  for_each_nucleus_in (region, [&out] (const Nucleus &n) { out.push_back (n); });
  return out;
}

namespace {

// Adds one nucleus, in optical density, to the H and E planes of a tile.
void
draw_nucleus (const Nucleus &n, double upp, const cv::Rect &r, cv::Mat &H, cv::Mat &E,
              uint64_t chromatin_seed)
{
  const double a = n.major_um / 2, b = n.minor_um / 2;
  const double reach = a * (1 + n.lobe_amplitude) + 2 * upp;
  int i0 = std::max (0, (int)std::floor ((n.x_um - reach) / upp) - r.x);
  int i1 = std::min (r.width - 1, (int)std::ceil ((n.x_um + reach) / upp) - r.x);
  int j0 = std::max (0, (int)std::floor ((n.y_um - reach) / upp) - r.y);
  int j1 = std::min (r.height - 1, (int)std::ceil ((n.y_um + reach) / upp) - r.y);
  if (i0 > i1 || j0 > j1)
    return;

  if (b / upp < 0.9) {
    // Smaller than a pixel or two: splat the stain mass as a small Gaussian
    // so that coarse views keep the right amount of hematoxylin.
    double sigma = std::max (0.5, std::sqrt (a * b) / upp * 0.6);
    double mass = n.area_um2 () / (upp * upp) * n.hematoxylin_od;
    double peak = mass / (2 * kPi * sigma * sigma);
    double cx = n.x_um / upp - 0.5 - r.x, cy = n.y_um / upp - 0.5 - r.y;
    for (int j = j0; j <= j1; j++)
      for (int i = i0; i <= i1; i++) {
        double dx = i - cx, dy = j - cy;
        float w = (float)(peak * std::exp (-(dx * dx + dy * dy) / (2 * sigma * sigma)));
        H.at<float> (j, i) += w;
        E.at<float> (j, i) += w * 0.08f;
      }
    return;
  }

  const double c = std::cos (n.angle_deg * kPi / 180), s = std::sin (n.angle_deg * kPi / 180);
  const double cp = std::cos (n.lobe_phase), sp = std::sin (n.lobe_phase);
  const float chromatin_w = octave_weight (0.9 / upp);
  const float chromatin_fine_w = octave_weight (0.45 / upp);
  const double edge_scale = b / upp; // normalised radius → pixels
  for (int j = j0; j <= j1; j++) {
    double y = (r.y + j + 0.5) * upp;
    float *hrow = H.ptr<float> (j), *erow = E.ptr<float> (j);
    for (int i = i0; i <= i1; i++) {
      double x = (r.x + i + 0.5) * upp;
      double dx = x - n.x_um, dy = y - n.y_um;
      double u = (dx * c + dy * s) / a, v = (-dx * s + dy * c) / b;
      double rr = std::sqrt (u * u + v * v);
      double boundary = 1.0;
      if (n.lobe_amplitude > 0 && rr > 1e-9) {
        // sin(kφ + p) from (cos φ, sin φ) by complex powers, no atan2.
        double re = 1, im = 0, cu = u / rr, sv = v / rr;
        for (int k = 0; k < n.lobes; k++) {
          double t = re * cu - im * sv;
          im = re * sv + im * cu;
          re = t;
        }
        boundary += n.lobe_amplitude * (im * cp + re * sp);
      }
      float cover = (float)std::clamp ((boundary - rr) * edge_scale + 0.5, 0.0, 1.0);
      if (cover <= 0)
        continue;
      float chromatin
          = 0.85f + chromatin_w * 0.5f * (value_noise (chromatin_seed, x / 0.9, y / 0.9) - 0.5f)
            + chromatin_fine_w * 0.3f * (value_noise (chromatin_seed + 1, x / 0.45, y / 0.45) - 0.5f);
      float rim = 1.0f + 0.22f * smoothstep (0.70f, 0.95f, (float)(rr / boundary));
      hrow[i] += cover * (float)n.hematoxylin_od * chromatin * rim;
      erow[i] += cover * 0.08f;
    }
  }
}

} // namespace

void
SyntheticSlide::render_tissue (double upp, const cv::Rect &r, cv::Mat &out) const
{
  cv::Mat H (r.size (), CV_32F, cv::Scalar (0)), E (r.size (), CV_32F, cv::Scalar (0));
  const Fields &f = *fields_;
  const uint64_t fibre_seed = stream_seed (seed_, kStreamFibre);
  const uint64_t cyto_seed = stream_seed (seed_, kStreamCytoplasm);
  // Fibres: noise stretched along three orientations, blended by the local
  // fibre angle (rotating absolute coordinates would warp the texture).
  static const double kOrient[3][2] = {{1.0, 0.0}, {0.5, 0.8660254}, {-0.5, 0.8660254}};
  const double fibre_long_um = 28.0, fibre_short_um = 2.6;
  const float w_fibre = octave_weight (fibre_short_um / upp);
  const float w_cyto = octave_weight (6.0 / upp);
  const float w_grain = octave_weight (1.6 / upp);

  const double x_first = (r.x + 0.5) * upp, x_last = (r.x + r.width - 0.5) * upp;
  const bool band = x_last >= kTissueMinXUm - 50 && x_first <= kTissueMaxXUm + 50;
  if (band) {
    for (int j = 0; j < r.height; j++) {
      double y = (r.y + j + 0.5) * upp;
      float *hrow = H.ptr<float> (j), *erow = E.ptr<float> (j);
      for (int i = 0; i < r.width; i++) {
        double x = (r.x + i + 0.5) * upp;
        float d = tissue_at (x, y);
        if (d <= 0.002f)
          continue;
        float t = Fields::sample (f.tumour, x, y);
        float e = Fields::sample (f.epith, x, y);
        float cellular = std::max (smoothstep (f.t_tumour - 0.02f, f.t_tumour + 0.02f, t),
                                   smoothstep (f.t_epith - 0.02f, f.t_epith + 0.02f, e));
        float fibre = 0.5f;
        if (w_fibre > 0 && cellular < 1.0f) {
          float angle = Fields::sample (f.fibre_angle, x, y) * 3.0f * (float)kPi;
          float ca = std::cos (angle), sa = std::sin (angle);
          float acc = 0, wsum = 0;
          for (int k = 0; k < 3; k++) {
            // cos(angle − kπ/3), weight |cos|⁶: sharp preference per direction
            float cd = std::abs (ca * (float)kOrient[k][0] + sa * (float)kOrient[k][1]);
            float w = cd * cd * cd;
            w *= w;
            double u = x * kOrient[k][0] + y * kOrient[k][1];
            double v = -x * kOrient[k][1] + y * kOrient[k][0];
            acc += w * value_noise (fibre_seed + k, u / fibre_long_um, v / fibre_short_um);
            wsum += w;
          }
          fibre = 0.5f + w_fibre * (acc / std::max (wsum, 1e-6f) - 0.5f) * 1.6f;
        }
        float cyto = 0.5f + w_cyto * (value_noise (cyto_seed, x / 6.0, y / 6.0) - 0.5f);
        float grain = w_grain * (value_noise (cyto_seed + 7, x / 1.6, y / 1.6) - 0.5f);
        float stroma_e = 0.16f + 0.34f * fibre + 0.05f * grain;
        float cell_e = 0.26f + 0.14f * cyto + 0.05f * grain;
        erow[i] = d * ((1 - cellular) * stroma_e + cellular * cell_e);
        hrow[i] = d * (0.025f + cellular * (0.05f + 0.03f * cyto));
      }
    }
    const double margin = kMaxNucleusRadiusUm + 2 * upp;
    cv::Rect2d region_um (r.x * upp - margin, r.y * upp - margin, r.width * upp + 2 * margin,
                          r.height * upp + 2 * margin);
    const uint64_t chromatin_seed = stream_seed (seed_, kStreamChromatin);
    for_each_nucleus_in (region_um,
                         [&] (const Nucleus &n) { draw_nucleus (n, upp, r, H, E, chromatin_seed); });
  }

  // Beer–Lambert: I = I0 · exp(−OD), OD = H·h + E·e + glass.
  static const float kGlassOd[3] = {0.012f, 0.014f, 0.018f};
  std::array<cv::Mat, 3> planes;
  for (int ch = 0; ch < 3; ch++) {
    cv::Mat od = H * stain_h_[ch] + E * stain_e_[ch];
    od += kGlassOd[ch];
    cv::exp (-od, od);
    od.convertTo (planes[ch], CV_8U, 255.0);
  }
  cv::merge (planes.data (), 3, out);
}

void
SyntheticSlide::render_label (double upp, const cv::Rect &r, cv::Mat &out) const
{
  // Columns of the tile that lie on the label (x < kLabelWidthUm).
  int label_cols = static_cast<int> (std::ceil (kLabelWidthUm / upp)) - r.x;
  label_cols = std::min (label_cols, r.width);
  int first = std::max (0, -r.x);
  if (label_cols <= first)
    return;
  cv::Mat dst = out.colRange (first, label_cols);
  // dst(i, j) samples the label at ((X + 0.5)·upp / kLabelUmPerPx − 0.5).
  double s = upp / kLabelUmPerPx;
  cv::Matx23d m (s, 0, (r.x + first + 0.5) * s - 0.5, 0, s, (r.y + 0.5) * s - 0.5);
  cv::warpAffine (label_rgb_, dst, m, dst.size (),
                  cv::WARP_INVERSE_MAP | (s > 1.5 ? cv::INTER_AREA : cv::INTER_LINEAR), cv::BORDER_REPLICATE);
}

void
SyntheticSlide::render (double upp, const cv::Rect &r, cv::Mat &out) const
{
  out.create (r.size (), CV_8UC3);
  render_tissue (upp, r, out);
  render_label (upp, r, out);
  // Off the slide.
  int x_end = static_cast<int> (std::floor (kWidthUm / upp)) - r.x;
  int y_end = static_cast<int> (std::floor (kHeightUm / upp)) - r.y;
  int x_begin = -r.x, y_begin = -r.y;
  for (int j = 0; j < r.height; j++) {
    bool row_off = j < y_begin || j >= y_end;
    cv::Vec3b *row = out.ptr<cv::Vec3b> (j);
    for (int i = 0; i < r.width; i++)
      if (row_off || i < x_begin || i >= x_end)
        row[i] = kNoSlideRgb;
  }
}

void
SyntheticSlide::build_label ()
{
  static const char *kNames[]
      = {"DOE, JANE",    "ROSSI, MARIA",  "SMITH, JOHN",     "OKAFOR, ADA",  "NGUYEN, LINH",
         "GARCIA, LUIS", "MUELLER, ANNA", "KOWALSKI, PIOTR", "TANAKA, YUKI", "HASSAN, OMAR"};
  Rng rng (stream_seed (seed_, kStreamLabel));
  SlideLabel &l = label_;
  l.rect_um = cv::Rect2d (0, 0, kLabelWidthUm, kHeightUm);
  l.patient_name = kNames[rng.next () % (sizeof kNames / sizeof kNames[0])];
  char buf[64];
  std::snprintf (buf, sizeof buf, "%08u", (unsigned)(rng.next () % 100000000u));
  l.mrn = buf;
  std::snprintf (buf, sizeof buf, "%04d-%02d-%02d", 1930 + (int)(rng.next () % 80),
                 1 + (int)(rng.next () % 12), 1 + (int)(rng.next () % 28));
  l.birth_date = buf;
  std::snprintf (buf, sizeof buf, "2026-%02d-%02d", 1 + (int)(rng.next () % 11), 1 + (int)(rng.next () % 28));
  l.collection_date = buf;
  std::snprintf (buf, sizeof buf, "S26-%05u A1", (unsigned)(rng.next () % 100000u));
  l.case_id = buf;
  std::string name_caret = l.patient_name;
  std::replace (name_caret.begin (), name_caret.end (), ',', '^');
  name_caret.erase (std::remove (name_caret.begin (), name_caret.end (), ' '), name_caret.end ());
  l.qr_payload = "PID:" + l.mrn + ";NAME:" + name_caret + ";DOB:" + l.birth_date + ";CASE:" + l.case_id;

  const int w = static_cast<int> (kLabelWidthUm / kLabelUmPerPx);
  const int h = static_cast<int> (kHeightUm / kLabelUmPerPx);
  // Paper: off-white with a faint fibrous texture.
  cv::Mat grain (h / 4, w / 4, CV_32F);
  cv::RNG cvrng (stream_seed (seed_, kStreamLabel));
  cvrng.fill (grain, cv::RNG::NORMAL, 0, 1);
  cv::resize (grain, grain, cv::Size (w, h), 0, 0, cv::INTER_LINEAR);
  label_rgb_.create (h, w, CV_8UC3);
  for (int j = 0; j < h; j++) {
    const float *g = grain.ptr<float> (j);
    cv::Vec3b *row = label_rgb_.ptr<cv::Vec3b> (j);
    for (int i = 0; i < w; i++) {
      float v = 3.5f * g[i];
      row[i] = cv::Vec3b (cv::saturate_cast<uchar> (240 + v), cv::saturate_cast<uchar> (238 + v),
                          cv::saturate_cast<uchar> (229 + v));
    }
  }
  const cv::Scalar ink (28, 28, 34);
  const double margin_px = 1200 / kLabelUmPerPx;
  auto print = [&] (const std::string &text, double top_mm, double cap_mm, int font) {
    int base = 0;
    cv::Size unit = cv::getTextSize (text, font, 1.0, 1, &base);
    double scale = cap_mm * 1000 / kLabelUmPerPx / unit.height;
    scale = std::min (scale, (w - 2 * margin_px) / unit.width);
    int thickness = std::max (2, (int)std::lround (scale * 1.6));
    cv::Size size = cv::getTextSize (text, font, scale, thickness, &base);
    cv::Point org ((int)margin_px, (int)(top_mm * 1000 / kLabelUmPerPx) + size.height);
    cv::putText (label_rgb_, text, org, font, scale, ink, thickness, cv::LINE_AA);
    l.text_rects_um.emplace_back (org.x * kLabelUmPerPx, (org.y - size.height) * kLabelUmPerPx,
                                  size.width * kLabelUmPerPx, (size.height + base) * kLabelUmPerPx);
  };
  print ("LIVEMICRO PATHOLOGY", 1.5, 1.0, cv::FONT_HERSHEY_SIMPLEX);
  print (l.case_id, 3.8, 1.6, cv::FONT_HERSHEY_DUPLEX);
  print ("H&E", 6.6, 1.3, cv::FONT_HERSHEY_DUPLEX);
  print (l.patient_name, 9.4, 1.6, cv::FONT_HERSHEY_DUPLEX);
  print ("MRN " + l.mrn, 12.4, 1.3, cv::FONT_HERSHEY_SIMPLEX);
  print ("DOB " + l.birth_date, 15.0, 1.1, cv::FONT_HERSHEY_SIMPLEX);
  print ("COLL " + l.collection_date, 17.2, 1.1, cv::FONT_HERSHEY_SIMPLEX);

  cv::Mat qr;
  cv::Ptr<cv::QRCodeEncoder> encoder = cv::QRCodeEncoder::create ();
  encoder->encode (l.qr_payload, qr);
  const double qr_side_um = 2400;
  int qr_px = (int)(qr_side_um / kLabelUmPerPx);
  cv::Mat qr_big;
  cv::resize (qr, qr_big, cv::Size (qr_px, qr_px), 0, 0, cv::INTER_NEAREST);
  cv::Rect qr_rect ((int)margin_px, (int)(20000 / kLabelUmPerPx), qr_px, qr_px);
  for (int j = 0; j < qr_px; j++)
    for (int i = 0; i < qr_px; i++)
      if (qr_big.at<uchar> (j, i) < 128)
        label_rgb_.at<cv::Vec3b> (qr_rect.y + j, qr_rect.x + i) = cv::Vec3b (28, 28, 34);
  // The ground truth is the printed symbol, without the encoder's quiet zone.
  cv::Rect symbol = cv::boundingRect (qr_big < 128);
  l.qr_rect_um = cv::Rect2d ((qr_rect.x + symbol.x) * kLabelUmPerPx, (qr_rect.y + symbol.y) * kLabelUmPerPx,
                             symbol.width * kLabelUmPerPx, symbol.height * kLabelUmPerPx);
}

namespace {

std::string
to_json (JsonNode *node)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  json_generator_set_root (gen, node);
  g_autofree char *text = json_generator_to_data (gen, nullptr);
  return text;
}

void
add_rect (JsonBuilder *b, const char *name, const cv::Rect2d &r)
{
  json_builder_set_member_name (b, name);
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "x_um");
  json_builder_add_double_value (b, r.x);
  json_builder_set_member_name (b, "y_um");
  json_builder_add_double_value (b, r.y);
  json_builder_set_member_name (b, "width_um");
  json_builder_add_double_value (b, r.width);
  json_builder_set_member_name (b, "height_um");
  json_builder_add_double_value (b, r.height);
  json_builder_end_object (b);
}

// The label's place, its printed fields and where each is printed.
void
add_label (JsonBuilder *b, const SlideLabel &label)
{
  json_builder_set_member_name (b, "label");
  json_builder_begin_object (b);
  add_rect (b, "rect", label.rect_um);
  for (auto [k, v] : {std::pair<const char *, const std::string *>{"patient_name", &label.patient_name},
                      {"mrn", &label.mrn},
                      {"birth_date", &label.birth_date},
                      {"collection_date", &label.collection_date},
                      {"case_id", &label.case_id},
                      {"qr_payload", &label.qr_payload}}) {
    json_builder_set_member_name (b, k);
    json_builder_add_string_value (b, v->c_str ());
  }
  add_rect (b, "qr_rect", label.qr_rect_um);
  json_builder_set_member_name (b, "text_rects");
  json_builder_begin_array (b);
  for (const auto &t : label.text_rects_um) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "x_um");
    json_builder_add_double_value (b, t.x);
    json_builder_set_member_name (b, "y_um");
    json_builder_add_double_value (b, t.y);
    json_builder_set_member_name (b, "width_um");
    json_builder_add_double_value (b, t.width);
    json_builder_set_member_name (b, "height_um");
    json_builder_add_double_value (b, t.height);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_end_object (b);
}

void
add_tissue_sections (JsonBuilder *b, const std::vector<cv::RotatedRect> &sections_um)
{
  json_builder_set_member_name (b, "tissue_sections");
  json_builder_begin_array (b);
  for (const auto &s : sections_um) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "center_x_um");
    json_builder_add_double_value (b, s.center.x);
    json_builder_set_member_name (b, "center_y_um");
    json_builder_add_double_value (b, s.center.y);
    json_builder_set_member_name (b, "width_um");
    json_builder_add_double_value (b, s.size.width);
    json_builder_set_member_name (b, "height_um");
    json_builder_add_double_value (b, s.size.height);
    json_builder_set_member_name (b, "angle_deg");
    json_builder_add_double_value (b, s.angle);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
}

} // namespace

void
SyntheticSlide::write_ground_truth (std::ostream &out, std::optional<cv::Rect2d> region_um) const
{
  cv::Rect2d region = region_um.value_or (cv::Rect2d (0, 0, kWidthUm, kHeightUm));
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "uri");
  json_builder_add_string_value (b, ("sim://synthetic?seed=" + std::to_string (seed_)).c_str ());
  json_builder_set_member_name (b, "seed");
  json_builder_add_int_value (b, (gint64)seed_);
  json_builder_set_member_name (b, "width_um");
  json_builder_add_double_value (b, kWidthUm);
  json_builder_set_member_name (b, "height_um");
  json_builder_add_double_value (b, kHeightUm);
  json_builder_set_member_name (b, "home");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "x_um");
  json_builder_add_double_value (b, home_um_.x);
  json_builder_set_member_name (b, "y_um");
  json_builder_add_double_value (b, home_um_.y);
  json_builder_end_object (b);
  json_builder_set_member_name (b, "stain_vectors_od_rgb");
  json_builder_begin_object (b);
  for (auto [name, v] : {std::pair<const char *, cv::Vec3f>{"hematoxylin", stain_h_}, {"eosin", stain_e_}}) {
    json_builder_set_member_name (b, name);
    json_builder_begin_array (b);
    for (int k = 0; k < 3; k++)
      json_builder_add_double_value (b, v[k]);
    json_builder_end_array (b);
  }
  json_builder_end_object (b);
  add_label (b, label_);
  add_tissue_sections (b, sections_um_);
  add_rect (b, "region", region);
  json_builder_end_object (b);
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  std::string head = to_json (root);
  // Stream the nuclei (millions for a whole slide) row by row instead of
  // building one giant tree; every field is a number or a fixed enum name.
  head.pop_back (); // the closing '}'
  out << head << ",\"nuclei\":[";
  bool first = true;
  char line[512];
  for (double y = region.y; y < region.y + region.height; y += 1000.0) {
    cv::Rect2d band (region.x, y, region.width, std::min (1000.0, region.y + region.height - y));
    for (const Nucleus &n : nuclei_in (band)) {
      std::snprintf (line, sizeof line,
                     "%s\n{\"id\":%llu,\"kind\":\"%s\",\"x_um\":%.3f,\"y_um\":%.3f,"
                     "\"major_um\":%.3f,\"minor_um\":%.3f,\"angle_deg\":%.2f,"
                     "\"lobe_amplitude\":%.4f,\"lobes\":%d,\"lobe_phase\":%.4f,"
                     "\"area_um2\":%.3f,\"hematoxylin_od\":%.3f}",
                     first ? "" : ",", (unsigned long long)n.id, nucleus_kind_name (n.kind), n.x_um, n.y_um,
                     n.major_um, n.minor_um, n.angle_deg, n.lobe_amplitude, n.lobes, n.lobe_phase,
                     n.area_um2 (), n.hematoxylin_od);
      out << line;
      first = false;
    }
  }
  out << "\n]}\n";
}

} // namespace livemicro::hw::sim
