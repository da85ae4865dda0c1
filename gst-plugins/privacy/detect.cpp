// Detectors for what a de-identified view must not show.
#include "livemicro/privacy/detect.h"

#include <opencv2/barcode.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/objdetect.hpp>

#include <algorithm>
#include <cmath>

namespace livemicro::privacy {

namespace {

// Working resolution: the longer side of the downscaled copy.
constexpr int kWorkMaxSide = 960;
// QR symbols are searched at these sizes (the costliest detector; a symbol
// too small for them is still masked as ink by the text detector); the
// coarse size catches very large modules.
constexpr int kQrMaxSide = 640;
constexpr int kQrSingleMaxSide = 480;
constexpr int kCoarseMaxSide = 320;
// Ink: darker than this grey level and (with colour) less chroma
// (max − min channel) than this.  Hematoxylin-stained nuclei can be as dark
// but are coloured (chroma ≥ 60 on the generated slide, mostly 30–45 for the
// darkest nuclei of real H&E tiles); printed ink is neutral.  Nuclei that
// pass are then told from print by their shape (keep_print).
constexpr int kInkMaxGrey = 90;
constexpr int kInkMaxGreyLumaOnly = 80;
constexpr int kInkMaxChroma = 30;
// Solid ink blobs this black and neutral (mean) are print whatever their shape.
constexpr double kSolidInkMaxGrey = 55;
constexpr double kSolidInkMaxChroma = (double)12;
// screen(): code candidates are dark marks (any hue) next to bright, neutral
// paper (a code needs its quiet zone), at least this large (working pixels:
// a 21-module QR symbol at one pixel per module, a short barcode).
// A barcode: at least kMinBars bars along at least kMinBarLines of the five
// lines across its middle (a symbol's bars cross them all: EAN-8 has 22
// bars, Code 128 with one symbol character 13), as many on each within
// kMaxBarSpread.
constexpr int kMinBars = 12;
constexpr int kMinBarLines = 3;
constexpr double kMaxBarSpread = 0.25;
constexpr int kCodeMaxGrey = 100;
constexpr int kPaperMinGrey = 180;
constexpr int kPaperMaxChroma = 40;
constexpr int kMinCodeSide = 21;
constexpr int kCodeGap = 16;
// Parallel bars: the structure tensor's coherence over the candidate (1: all
// edges one way; measured: barcodes 0.88–0.97, QR codes ~0.02, lines of
// text 0.2–0.6, digits in a bold font up to ~0.6).
constexpr double kMinBarCoherence = 0.75;
// How far run lengths may stray from 1:1:3:1:1 (sum of |share − ideal|).
// OpenCV's own search allows 0.2 across at 512 px; at the working size a
// module can be one or two pixels, so this pre-check is looser.
constexpr double kMaxFinderWeight = 0.5;
// A QR symbol is square; its candidate box, seen at an angle, within this.
constexpr double kMaxQrAspect = 2.0;
// Its three finder patterns' centres: the legs of a right isosceles
// triangle equal within this share and the angle between them within
// acos (0.1) = 84° … 96° (measured on symbols of 1.5–7 working pixels per
// module at 0–70°: within 1 % and 1°; three finder-like marks that print of
// another kind happened to place had 0.24 (76°)); each leg at least this
// share of the candidate's longer side (21 modules: legs of 14; seen at 45°
// and next to other print in one candidate, down to ~0.3 of it).  At most
// this many centres are paired (a symbol has three; data modules add
// strays, more of them at an angle).
constexpr double kMaxLegMismatch = 0.1;
constexpr double kMaxRightAngleCos = 0.1;
constexpr double kMinLegOfSide = 0.2;
constexpr size_t kMaxFinderCentres = 24;

std::vector<cv::Point2d>
rect_quad (const cv::Rect2d &r)
{
  return {r.tl (), {r.x + r.width, r.y}, r.br (), {r.x, r.y + r.height}};
}

// The corners of `r`, clockwise from its top left.
std::vector<cv::Point2f>
corners (const cv::Rect2d &r)
{
  const cv::Point2f tl (r.tl ()), br (r.br ());
  return {tl, {br.x, tl.y}, br, {tl.x, br.y}};
}

// Component `i`'s bounding box from connectedComponentsWithStats' `stats`,
// moved by `offset` (where the labelled image starts).
cv::Rect
component_rect (const cv::Mat &stats, int i, cv::Point offset)
{
  return {stats.at<int> (i, cv::CC_STAT_LEFT) + offset.x, stats.at<int> (i, cv::CC_STAT_TOP) + offset.y,
          stats.at<int> (i, cv::CC_STAT_WIDTH), stats.at<int> (i, cv::CC_STAT_HEIGHT)};
}

// Scales corners found on a copy downscaled by `s` back to frame pixels (the
// copy starts at frame pixel `origin`) and grows the quad by `pad_frac` of
// its size plus `pad_px` frame pixels.
std::vector<cv::Point2d>
to_frame_quad (const std::vector<cv::Point2f> &pts, double s, double pad_frac, double pad_px,
               cv::Point2d origin = {0, 0})
{
  double x0 = 1e300, y0 = 1e300, x1 = -1e300, y1 = -1e300;
  for (const auto &p : pts) {
    double fx = origin.x + (p.x + 0.5) / s - 0.5, fy = origin.y + (p.y + 0.5) / s - 0.5;
    x0 = std::min (x0, fx);
    y0 = std::min (y0, fy);
    x1 = std::max (x1, fx);
    y1 = std::max (y1, fy);
  }
  double pad = pad_frac * std::max (x1 - x0, y1 - y0) + pad_px + 0.5 / s;
  return rect_quad (cv::Rect2d (x0 - pad, y0 - pad, x1 - x0 + 2 * pad, y1 - y0 + 2 * pad));
}

// A printed code is dark modules on a light ground: strong contrast and a
// fair share of dark pixels.  The QR finder-pattern search also fires on
// paper grain, vignetting and glass edges, which have neither.
bool
looks_printed (const cv::Mat &grey, const std::vector<cv::Point2f> &quad, double scale)
{
  std::vector<cv::Point> pts;
  for (const auto &p : quad)
    pts.emplace_back ((int)std::lround (p.x / scale), (int)std::lround (p.y / scale));
  cv::Rect r = cv::boundingRect (pts) & cv::Rect (0, 0, grey.cols, grey.rows);
  if (r.width < 4 || r.height < 4)
    return false;
  double lo, hi;
  cv::minMaxLoc (grey (r), &lo, &hi);
  if (hi - lo < 80)
    return false;
  double dark = (double)cv::countNonZero (grey (r) < (lo + hi) / 2) / r.area ();
  // Print is two-tone; tissue is continuous-tone.
  const double q = (hi - lo) / 4;
  double mid = (double)cv::countNonZero ((grey (r) > lo + q) & (grey (r) < hi - q)) / r.area ();
  return dark > 0.15 && dark < 0.85 && mid < 0.35;
}

// How far five runs (dark:light:dark:light:dark) are from a QR finder
// pattern's 1:1:3:1:1 (0: exactly; OpenCV's measure).
double
finder_weight (const int *runs)
{
  double len = 0, w = 0;
  for (int k = 0; k < 5; k++)
    len += runs[k];
  for (int k = 0; k < 5; k++)
    w += std::abs (runs[k] / len - (k == 2 ? 3.0 : 1.0) / 7.0);
  return w;
}

// The line through a finder candidate's centre (x, y) in `bin` (255 =
// dark) in the direction (dx, dy) goes 1:1:3:1:1 too: nested squares cut by
// any line through their centre (along a row, a column or a diagonal, at
// any rotation of the symbol) give the same proportions.
bool
line_is_finder (const cv::Mat &bin, int x, int y, int dx, int dy)
{
  // From the centre (dark, the 3-module core) both ways: core, light ring,
  // dark ring on each side.
  int back[3] = {0, 0, 0}, ahead[3] = {0, 0, 0};
  for (int dir : {-1, 1}) {
    int *runs = dir < 0 ? back : ahead;
    int k = 0, i = x, j = y;
    uchar want = 255;
    while (k < 3 && i >= 0 && i < bin.cols && j >= 0 && j < bin.rows) {
      if (bin.at<uchar> (j, i) == want) {
        runs[k]++;
        i += dir * dx;
        j += dir * dy;
      } else {
        want = (uchar)~want;
        k++;
      }
    }
    if (k < 2 || runs[2] == 0)
      return false;
  }
  int runs[5] = {back[2], back[1], back[0] + ahead[0] - 1, ahead[1], ahead[2]};
  return finder_weight (runs) < kMaxFinderWeight;
}

// A finder pattern's centre: its row (already checked), its column and
// both diagonals run 1:1:3:1:1.  Glyphs such as 0, 8 or O do across and
// down, but not along both diagonals.
bool
is_finder_centre (const cv::Mat &bin, int x, int y)
{
  return line_is_finder (bin, x, y, 0, 1) && line_is_finder (bin, x, y, 1, 1)
         && line_is_finder (bin, x, y, 1, -1);
}

// The centres of the QR finder patterns in `bin` (255 = dark), the most
// convincing first: where a row, and the column and both diagonals through
// the middle of its run, go 1:1:3:1:1.  Each row through a pattern's core is a hit, at the core's
// middle; hits within a core's width across and its height down are one
// pattern (their mean), and the more hits, the likelier it is one (data
// modules make stray single hits, more of them in a symbol seen at an angle).
std::vector<cv::Point2f>
finder_centres (const cv::Mat &bin)
{
  struct Cluster {
    cv::Point2d sum;
    int n = 0;
    int core = 0; // the first hit's core run, pixels
    cv::Point2d mean () const { return sum / n; }
  };
  std::vector<Cluster> clusters;
  std::vector<int> len, start;
  for (int y = 0; y < bin.rows; y++) {
    const uchar *row = bin.ptr<uchar> (y);
    // Run lengths and their start columns, dark runs at even indices.
    len.clear ();
    start.clear ();
    int x = 0;
    while (x < bin.cols && row[x] == 0)
      x++;
    while (x < bin.cols) {
      int x0 = x;
      uchar v = row[x];
      while (x < bin.cols && row[x] == v)
        x++;
      len.push_back (x - x0);
      start.push_back (x0);
    }
    for (size_t i = 0; i + 5 <= len.size (); i += 2) {
      int runs[5] = {len[i], len[i + 1], len[i + 2], len[i + 3], len[i + 4]};
      int cx = start[i + 2] + len[i + 2] / 2;
      if (finder_weight (runs) >= kMaxFinderWeight || !is_finder_centre (bin, cx, y))
        continue;
      auto near = std::find_if (clusters.begin (), clusters.end (), [&] (const Cluster &c) {
        const cv::Point2d m = c.mean ();
        return std::abs (m.x - cx) <= c.core / 2.0 + 1 && std::abs (m.y - y) <= c.core + 1.0;
      });
      if (near == clusters.end ())
        clusters.push_back ({cv::Point2d (cx, y), 1, len[i + 2]});
      else {
        near->sum += cv::Point2d (cx, y);
        near->n++;
      }
    }
  }
  std::stable_sort (clusters.begin (), clusters.end (),
                    [] (const Cluster &a, const Cluster &b) { return a.n > b.n; });
  std::vector<cv::Point2f> centres;
  for (const Cluster &c : clusters)
    centres.emplace_back (c.mean ());
  return centres;
}

// True when three of `centres` sit as a QR symbol's finder patterns do: at
// the corners of a right isosceles triangle, in any rotation, with legs at
// least `min_leg` long.  Lines of text and data modules that happen to run
// 1:1:3:1:1 do not make one (text puts them in a row).
bool
finder_triangle (const std::vector<cv::Point2f> &centres, double min_leg)
{
  const size_t n = std::min<size_t> (centres.size (), kMaxFinderCentres);
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < n; j++)
      for (size_t k = j + 1; k < n; k++) {
        if (j == i || k == i)
          continue;
        // i at the right angle, j and k at the ends of the legs.
        const cv::Point2f a = centres[j] - centres[i], b = centres[k] - centres[i];
        const double la = cv::norm (a), lb = cv::norm (b);
        if (std::min (la, lb) < min_leg || std::abs (la - lb) > kMaxLegMismatch * std::max (la, lb))
          continue;
        if (std::abs (a.dot (b)) <= kMaxRightAngleCos * la * lb)
          return true;
      }
  return false;
}

// Coherence of the edge orientation (0: edges every way, 1: all parallel)
// and the dominant gradient direction (radians; across bars).
double
edge_coherence (const cv::Mat &grey, double *direction = nullptr)
{
  cv::Mat gx, gy;
  cv::Sobel (grey, gx, CV_32F, 1, 0);
  cv::Sobel (grey, gy, CV_32F, 0, 1);
  double jxx = gx.dot (gx), jyy = gy.dot (gy), jxy = gx.dot (gy);
  double tr = jxx + jyy;
  if (direction)
    *direction = 0.5 * std::atan2 (2 * jxy, jxx - jyy);
  if (tr <= 0)
    return 0;
  return std::sqrt ((jxx - jyy) * (jxx - jyy) + 4 * jxy * jxy) / tr;
}

// The dark runs (bars) along parallel lines across the bars of `bin` (255 =
// dark): `direction` is as edge_coherence gives it, the lines are spread
// over the middle two fifths of the candidate.
std::vector<int>
bars_across (const cv::Mat &bin, double direction)
{
  const cv::Point2d c (bin.cols / 2.0, bin.rows / 2.0), d (std::cos (direction), std::sin (direction));
  const cv::Point2d n (-d.y, d.x);
  const double reach = bin.cols + bin.rows;
  std::vector<int> bars;
  for (double off : {-0.2, -0.1, 0.0, 0.1, 0.2}) {
    cv::Point2d o = c + n * (off * std::min (bin.cols, bin.rows));
    cv::Point a (cvRound (o.x - d.x * reach), cvRound (o.y - d.y * reach));
    cv::Point b (cvRound (o.x + d.x * reach), cvRound (o.y + d.y * reach));
    int dark_runs = 0;
    if (cv::clipLine (cv::Rect (0, 0, bin.cols, bin.rows), a, b)) {
      cv::LineIterator it (bin, a, b, 8);
      uchar prev = 0;
      for (int k = 0; k < it.count; k++, ++it) {
        const uchar v = **it;
        dark_runs += v && !prev;
        prev = v;
      }
    }
    bars.push_back (dark_runs);
  }
  return bars;
}

bool
wants (const std::vector<RegionClass> &classes, RegionClass c)
{
  return std::find (classes.begin (), classes.end (), c) != classes.end ();
}

} // namespace

cv::Rect2d
Detection::bounds_px () const
{
  return bounding_box (quad_px);
}

struct Detector::Impl {
  cv::QRCodeDetector qr;
  cv::barcode::BarcodeDetector barcode;
  cv::Mat work, grey, chroma, ink, grouped, labels, stats, centroids, coarse, dist, blobs, blob_stats, dark,
      paper, seeds, bin;
  // Frame pixel where the working copy starts (screen () on a rectangle).
  cv::Point2d origin{0, 0};
  // screen (): the pixels it was given when they are finer than the working
  // copy (else empty), and how many of them make one working pixel.
  cv::Mat fine;
  double fine_per_work = 1;
  ScreenStats *stats_out = nullptr;

  void make_chroma ()
  {
    cv::Mat ch[3], mx, mn;
    cv::split (work, ch);
    cv::max (ch[0], ch[1], mx);
    cv::max (mx, ch[2], mx);
    cv::min (ch[0], ch[1], mn);
    cv::min (mn, ch[2], mn);
    cv::subtract (mx, mn, chroma);
  }

  // Print is made of strokes much thinner than the glyph is tall; a
  // nucleus is a filled blob (its widest inscribed disc is about as wide as
  // the blob).  Keeps the ink components whose stroke width (twice the
  // largest distance to the background) is at most 40 % of their larger
  // side, those too small to judge (≤ 3 px strokes), and solid ones that are
  // as black and neutral as printer's ink (QR modules, bold glyphs seen up
  // close), which stained tissue never is.
  void keep_print (cv::Mat ink, const cv::Mat &grey, const cv::Mat &chroma, int ccl)
  {
    cv::distanceTransform (ink, dist, cv::DIST_L2, 3);
    int n = cv::connectedComponentsWithStats (ink, blobs, blob_stats, centroids, 8, CV_32S, ccl);
    std::vector<float> widest (n, 0.f);
    std::vector<double> grey_sum (n, 0), chroma_sum (n, 0);
    for (int j = 0; j < ink.rows; j++) {
      const int *l = blobs.ptr<int> (j);
      const float *d = dist.ptr<float> (j);
      const uchar *g = grey.ptr<uchar> (j), *c = chroma.ptr<uchar> (j);
      for (int i = 0; i < ink.cols; i++)
        if (l[i] > 0) {
          widest[l[i]] = std::max (widest[l[i]], d[i]);
          grey_sum[l[i]] += g[i];
          chroma_sum[l[i]] += c[i];
        }
    }
    std::vector<uchar> keep (n, 0);
    for (int k = 1; k < n; k++) {
      int side
          = std::max (blob_stats.at<int> (k, cv::CC_STAT_WIDTH), blob_stats.at<int> (k, cv::CC_STAT_HEIGHT));
      double area = blob_stats.at<int> (k, cv::CC_STAT_AREA);
      float stroke = 2 * widest[k];
      bool black = grey_sum[k] / area < kSolidInkMaxGrey && chroma_sum[k] / area < kSolidInkMaxChroma;
      keep[k] = stroke <= 3.0f || stroke <= 0.4f * side || black;
    }
    for (int j = 0; j < ink.rows; j++) {
      const int *l = blobs.ptr<int> (j);
      uchar *m = ink.ptr<uchar> (j);
      for (int i = 0; i < ink.cols; i++)
        m[i] = l[i] > 0 && keep[l[i]] ? 255 : 0;
    }
  }

  // Printed text: connected groups of neutral dark strokes (ink), grouped
  // into words and lines.  A group whose surroundings are bright, neutral
  // paper is a label as well.  `tight`: analyse only the bounding box of the
  // ink (the same result; tissue has little neutral ink, so this costs
  // little where there is no print).
  void text (double s, bool colour, bool want_text, bool want_label, std::vector<Detection> &out,
             bool tight = false)
  {
    if (colour) {
      make_chroma ();
      cv::Mat dark = grey < kInkMaxGrey, neutral = chroma < kInkMaxChroma;
      cv::bitwise_and (dark, neutral, ink);
    } else {
      ink = grey < kInkMaxGreyLumaOnly;
      chroma = cv::Mat::zeros (grey.size (), CV_8U);
    }
    const cv::Rect frame (0, 0, grey.cols, grey.rows);
    // The grouping below reaches 4 px across and 2 down; the ring test
    // looks around a group, on the whole copy.
    cv::Rect box = frame;
    int ccl = cv::CCL_DEFAULT;
    if (tight) {
      if (cv::countNonZero (ink) == 0)
        return;
      cv::Rect b = cv::boundingRect (ink);
      box = cv::Rect (b.x - 6, b.y - 4, b.width + 12, b.height + 8) & frame;
      // Same components, computed with the cheaper statistics pass.
      ccl = cv::CCL_GRANA;
    }
    cv::Mat ink_box = ink (box);
    keep_print (ink_box, grey (box), chroma (box), ccl);
    // Characters of a word are less than about half a glyph apart.
    cv::dilate (ink_box, grouped, cv::getStructuringElement (cv::MORPH_RECT, cv::Size (9, 5)));
    int n = cv::connectedComponentsWithStats (grouped, labels, stats, centroids, 8, CV_32S, ccl);
    for (int i = 1; i < n; i++) {
      cv::Rect r = component_rect (stats, i, box.tl ());
      // Undo the dilation, except where it was cut by the edge of the copy
      // (a glyph coming into view at the frame's edge keeps its ink).
      {
        int x0 = r.x <= 0 ? 0 : r.x + 4, y0 = r.y <= 0 ? 0 : r.y + 2;
        int x1 = r.br ().x >= frame.width ? frame.width : r.br ().x - 4;
        int y1 = r.br ().y >= frame.height ? frame.height : r.br ().y - 2;
        r = cv::Rect (x0, y0, std::max (1, x1 - x0), std::max (1, y1 - y0)) & frame;
      }
      if (r.empty ())
        continue;
      int ink_px = cv::countNonZero (ink (r));
      double density = (double)ink_px / r.area ();
      // Specks and solid dark areas (a black border, a mask drawn upstream)
      // are not print; but a glyph cut by the edge of the copy can be a
      // solid sliver: short ones along the edge are kept.
      const bool sliver = (r.x == 0 || r.br ().x == frame.width)    ? r.height <= frame.height / 4
                          : (r.y == 0 || r.br ().y == frame.height) ? r.width <= frame.width / 4
                                                                    : false;
      if (ink_px < 10 || std::max (r.width, r.height) < 4 || (density > 0.85 && !sliver))
        continue;
      cv::Rect2d fr (origin.x + (r.x) / s - 0.5, origin.y + (r.y) / s - 0.5, r.width / s, r.height / s);
      // Anti-aliased glyph edges and faint strokes fall below the ink
      // threshold: grow by a quarter of a line height (at most 24 working
      // pixels, for large blocks such as a code) and two frame pixels.
      double pad = std::min (0.25 * std::min (fr.width, fr.height), 24 / s) + 2 + 1 / s;
      fr = cv::Rect2d (fr.x - pad, fr.y - pad, fr.width + 2 * pad, fr.height + 2 * pad);
      if (want_text)
        out.push_back ({RegionClass::kText, rect_quad (fr)});
      if (want_label) {
        int g = std::max (r.height, 6);
        cv::Rect ring = cv::Rect (r.x - g, r.y - g, r.width + 2 * g, r.height + 2 * g) & frame;
        cv::Mat paper = (grey (ring) > 180) & (chroma (ring) < 40);
        int paper_px = cv::countNonZero (paper);
        int other = ring.area () - cv::countNonZero (ink (ring));
        if (other > 0 && paper_px >= 0.6 * other)
          out.push_back ({RegionClass::kLabel, rect_quad (fr)});
      }
    }
  }

  // OpenCV 4.6's detectors are sensitive to the module size: detectMulti
  // at one scale, the single-symbol detector at two smaller ones, united.
  void qr_codes (double s, std::vector<Detection> &out)
  {
    const int side = std::max (grey.cols, grey.rows);
    size_t before = out.size ();
    auto add = [&] (const std::vector<cv::Point2f> &pts, double scale) {
      for (size_t i = 0; i + 4 <= pts.size (); i += 4) {
        std::vector<cv::Point2f> quad (pts.begin () + (long)i, pts.begin () + (long)i + 4);
        if (looks_printed (grey, quad, scale / s))
          out.push_back ({RegionClass::kQr, to_frame_quad (quad, scale, 0.1, 2)});
      }
    };
    auto scaled = [&] (int max_side) {
      double q = std::min (1.0, (double)max_side / side);
      if (q < 1.0)
        cv::resize (grey, coarse, cv::Size (), q, q, cv::INTER_AREA);
      else
        coarse = grey;
      return q;
    };
    std::vector<cv::Point2f> pts;
    double q = scaled (kQrMaxSide);
    if (qr.detectMulti (coarse, pts))
      add (pts, s * q);
    for (int max_side : {kQrSingleMaxSide, kCoarseMaxSide}) {
      if (max_side == kCoarseMaxSide && out.size () > before)
        break;
      q = scaled (max_side);
      pts.clear ();
      if (qr.detect (coarse, pts) && pts.size () == 4)
        add (pts, s * q);
    }
  }

  // Dark marks on paper (`seeds`): where a code may be printed; false when
  // there are none.
  bool find_code_seeds (bool colour)
  {
    dark = grey < kCodeMaxGrey;
    if (cv::countNonZero (dark) == 0)
      return false;
    if (colour) {
      if (chroma.size () != grey.size ())
        make_chroma ();
      paper = (grey > kPaperMinGrey) & (chroma < kPaperMaxChroma);
    } else {
      paper = grey > kPaperMinGrey;
    }
    cv::dilate (paper, paper, cv::getStructuringElement (cv::MORPH_RECT, cv::Size (5, 5)));
    cv::bitwise_and (dark, paper, seeds);
    return cv::countNonZero (seeds) > 0;
  }

  // A QR code in the candidate `r` (with its quiet zone, `c`): three finder
  // patterns placed as a symbol places them.  The candidate, which bounds
  // the symbol's marks whatever its rotation, is what is masked.  (OpenCV's
  // search would say the same at ~5–15 ms a candidate, whatever its size:
  // it rescales what it is given to 512 px.)
  void qr_in_candidate (double s, const cv::Rect &r, const cv::Rect &c, std::vector<Detection> &out)
  {
    double lo, hi;
    cv::minMaxLoc (grey (r), &lo, &hi);
    bin = grey (c) < (lo + hi) / 2;
    const std::vector<cv::Point2f> centres = finder_centres (bin);
    if (centres.size () < 3)
      return;
    if (stats_out)
      stats_out->qr_runs++;
    if (!finder_triangle (centres, kMinLegOfSide * std::max (r.width, r.height)))
      return;
    out.push_back ({RegionClass::kQr, to_frame_quad (corners (r), s, 0.1, 2, origin)});
  }

  // A barcode in the candidate `r` whose bars run across `across`: many bars,
  // crossed alike by parallel lines through its middle.  The candidate is
  // masked.  (opencv-contrib's detector, which rescales what it is given
  // to 512 px, says the same at ~10 ms a candidate.)
  void barcode_in_candidate (double s, const cv::Rect &r, double across, std::vector<Detection> &out)
  {
    if (stats_out)
      stats_out->barcode_runs++;
    if (many_bars (grey (r), across))
      out.push_back ({RegionClass::kBarcode, to_frame_quad (corners (r), s, 0.3, 2, origin)});
  }

  // Whether `candidate` (grey) shows a barcode's bars across `across`.
  bool many_bars (const cv::Mat &candidate, double across)
  {
    double lo, hi;
    cv::minMaxLoc (candidate, &lo, &hi);
    bin = candidate < (lo + hi) / 2;
    std::vector<int> bars = bars_across (bin, across);
    bars.erase (std::remove_if (bars.begin (), bars.end (), [] (int n) { return n < kMinBars; }),
                bars.end ());
    if ((int)bars.size () < kMinBarLines)
      return false;
    const auto [fewest, most] = std::minmax_element (bars.begin (), bars.end ());
    return *most - *fewest <= kMaxBarSpread * *most;
  }

  // A candidate that is not two-toned at the working size may be print too
  // fine for it: bars one module wide blur to grey where they straddle two
  // working pixels (2-pixel modules at 1080p, at half the offsets).  When
  // screen () was given finer pixels, the barcode checks run on those.
  void fine_barcode (double s, const cv::Rect &r, std::vector<Detection> &out)
  {
    const double k = fine_per_work;
    const cv::Rect f = cv::Rect (cv::Point ((int)std::floor (r.x * k), (int)std::floor (r.y * k)),
                                 cv::Point ((int)std::ceil (r.br ().x * k), (int)std::ceil (r.br ().y * k)))
                       & cv::Rect (0, 0, fine.cols, fine.rows);
    if (f.width < 4 || f.height < 4)
      return;
    const auto fine_grey = [this] (const cv::Rect &rect) {
      cv::Mat g;
      if (fine.channels () == 3)
        cv::cvtColor (fine (rect), g, cv::COLOR_RGB2GRAY);
      else
        g = fine (rect);
      return g;
    };
    const cv::Mat g = fine_grey (f);
    double across = 0;
    if (!looks_printed (g, corners (cv::Rect (0, 0, g.cols, g.rows)), 1.0)
        || edge_coherence (g, &across) < kMinBarCoherence)
      return;
    if (stats_out)
      stats_out->barcode_runs++;
    if (!many_bars (g, across))
      return;
    // The candidate grew from the marks next to paper, which the blur left
    // at the symbol's ends only: its extent is taken in the fine pixels, as
    // codes () groups marks, around the candidate.
    double lo, hi;
    cv::minMaxLoc (g, &lo, &hi);
    const int reach = (int)std::ceil (std::max (f.width, f.height) + kCodeGap * k);
    const cv::Rect w = cv::Rect (f.x - reach, f.y - reach, f.width + 2 * reach, f.height + 2 * reach)
                       & cv::Rect (0, 0, fine.cols, fine.rows);
    const cv::Mat wg = fine_grey (w);
    cv::Mat marks;
    const int gap = (int)std::ceil (kCodeGap * k);
    cv::dilate (wg < (lo + hi) / 2, marks,
                cv::getStructuringElement (cv::MORPH_RECT, cv::Size (gap + 1, gap + 1)));
    // (Own label and statistics: codes () is iterating over its members'.)
    cv::Mat mark_labels, mark_stats, mark_centroids;
    const int n = cv::connectedComponentsWithStats (marks, mark_labels, mark_stats, mark_centroids, 8, CV_32S,
                                                    cv::CCL_GRANA);
    cv::Rect extent = f;
    for (int i = 1; i < n; i++) {
      const cv::Rect c = component_rect (mark_stats, i, w.tl ());
      if (!(c & f).empty ())
        extent |= c;
    }
    const std::vector<cv::Point2f> quad
        = corners (cv::Rect2d (extent.x / k, extent.y / k, extent.width / k, extent.height / k));
    out.push_back ({RegionClass::kBarcode, to_frame_quad (quad, s, 0.1, 2, origin)});
  }

  // screen (): the code detectors on print-like candidates only.  Each
  // OpenCV QR search costs ~5 ms whatever the size of what it is given (it
  // scales its input to 512 px), so it runs only where finder patterns are.
  // `frame_edge`: which edges of the copy are the frame's (left, top,
  // right, bottom).
  void codes (double s, bool colour, const cv::Rect &core, bool want_qr, bool want_barcode,
              std::vector<Detection> &out, const bool *frame_edge, std::vector<CutCandidate> *cut)
  {
    const cv::Rect frame (0, 0, grey.cols, grey.rows);
    if (!find_code_seeds (colour))
      return;
    // Modules and bars of one code are less than a quiet zone apart (gaps
    // of up to kCodeGap working pixels are bridged: 4-module gaps between
    // bars of 4-pixel modules).
    const cv::Rect b = cv::boundingRect (seeds);
    const cv::Rect box
        = cv::Rect (b.x - kCodeGap, b.y - kCodeGap, b.width + 2 * kCodeGap, b.height + 2 * kCodeGap) & frame;
    cv::dilate (seeds (box), grouped,
                cv::getStructuringElement (cv::MORPH_RECT, cv::Size (kCodeGap + 1, kCodeGap + 1)));
    int n = cv::connectedComponentsWithStats (grouped, labels, stats, centroids, 8, CV_32S, cv::CCL_GRANA);
    for (int i = 1; i < n; i++) {
      // Undo the dilation, except where it met the edge of the copy (then
      // the marks reach within kCodeGap / 2 of it, and may go on beyond).
      const int half = kCodeGap / 2;
      const cv::Rect grown = component_rect (stats, i, box.tl ());
      const bool at_left = grown.x <= 0, at_top = grown.y <= 0;
      const bool at_right = grown.br ().x >= frame.width, at_bottom = grown.br ().y >= frame.height;
      cv::Rect r (cv::Point (at_left ? 0 : grown.x + half, at_top ? 0 : grown.y + half),
                  cv::Point (at_right ? frame.width : grown.br ().x - half,
                             at_bottom ? frame.height : grown.br ().y - half));
      r &= frame;
      if (r.width < kMinCodeSide || r.height < kMinCodeSide || (r & core).empty ())
        continue;
      const bool two_toned = looks_printed (grey, corners (r), 1.0);
      if (!two_toned && (fine.empty () || !want_barcode))
        continue;
      // Cut by the copy's edge inside the frame: looked at again whole.
      const bool inner_cut[4] = {at_left && !frame_edge[0], at_top && !frame_edge[1],
                                 at_right && !frame_edge[2], at_bottom && !frame_edge[3]};
      if (cut && (inner_cut[0] || inner_cut[1] || inner_cut[2] || inner_cut[3])) {
        CutCandidate cc;
        cc.rect = cv::Rect (
            cv::Point ((int)std::floor (origin.x + r.x / s), (int)std::floor (origin.y + r.y / s)),
            cv::Point ((int)std::ceil (origin.x + r.br ().x / s), (int)std::ceil (origin.y + r.br ().y / s)));
        cc.left = inner_cut[0];
        cc.top = inner_cut[1];
        cc.right = inner_cut[2];
        cc.bottom = inner_cut[3];
        cut->push_back (cc);
        if (stats_out)
          stats_out->cut++;
        continue;
      }
      // Cut by the frame's edge: the marks themselves (not their grouping)
      // reach it.
      bool frame_cut = false;
      if ((at_left && frame_edge[0]) || (at_top && frame_edge[1]) || (at_right && frame_edge[2])
          || (at_bottom && frame_edge[3])) {
        const cv::Rect m = cv::boundingRect (seeds (r)) + r.tl ();
        frame_cut = (frame_edge[0] && m.x <= 1) || (frame_edge[1] && m.y <= 1)
                    || (frame_edge[2] && m.br ().x >= frame.width - 1)
                    || (frame_edge[3] && m.br ().y >= frame.height - 1);
      }
      if (stats_out)
        stats_out->candidates++;
      if (!two_toned) {
        fine_barcode (s, r, out);
        continue;
      }
      // With its quiet zone.
      int pad = std::max (6, (int)(0.15 * std::max (r.width, r.height)));
      cv::Rect c = cv::Rect (r.x - pad, r.y - pad, r.width + 2 * pad, r.height + 2 * pad) & frame;
      const double aspect = (double)std::max (r.width, r.height) / std::min (r.width, r.height);
      if (want_qr && !frame_cut && aspect <= kMaxQrAspect)
        qr_in_candidate (s, r, c, out);
      double across = 0;
      if (want_barcode && edge_coherence (grey (r), &across) >= kMinBarCoherence)
        barcode_in_candidate (s, r, across, out);
    }
  }

  void barcodes (double s, std::vector<Detection> &out)
  {
    std::vector<cv::Point2f> pts;
    if (barcode.detect (grey, pts))
      for (size_t i = 0; i + 4 <= pts.size (); i += 4) {
        std::vector<cv::Point2f> quad (pts.begin () + (long)i, pts.begin () + (long)i + 4);
        if (looks_printed (grey, quad, 1.0))
          out.push_back ({RegionClass::kBarcode, to_frame_quad (quad, s, 0.3, 2)});
      }
  }
};

double
Detector::work_scale (cv::Size size)
{
  return std::min (1.0, (double)kWorkMaxSide / std::max ({size.width, size.height, 1}));
}

void
Detector::shrink (const cv::Mat &pixels, cv::Mat &out, double scale)
{
  CV_Assert (scale > 0 && scale < 1 && !pixels.empty ());
  const cv::Size size (std::max (1, (int)std::lround (pixels.cols * scale)),
                       std::max (1, (int)std::lround (pixels.rows * scale)));
  const bool whole_factor = pixels.cols % size.width == 0 && pixels.rows % size.height == 0;
  const bool fine = 3 * size.width >= 2 * pixels.cols && 3 * size.height >= 2 * pixels.rows;
  cv::resize (pixels, out, size, 0, 0, !whole_factor && fine ? cv::INTER_LINEAR : cv::INTER_AREA);
}

Detector::Detector () : impl_ (std::make_unique<Impl> ()) {}
Detector::~Detector () = default;

std::vector<Detection>
Detector::detect (const cv::Mat &frame, const std::vector<RegionClass> &classes, bool colour,
                  double frame_scale)
{
  if (inject_fault_)
    throw cv::Exception (cv::Error::StsError, "injected detector fault (test hook)", "Detector::detect",
                         __FILE__, __LINE__);
  std::vector<Detection> out;
  if (classes.empty () || frame.empty ())
    return out;
  CV_Assert (frame.depth () == CV_8U && (frame.channels () == 3 || frame.channels () == 1));
  Impl &d = *impl_;
  d.origin = {0, 0};
  d.stats_out = nullptr;
  CV_Assert (frame_scale > 0 && frame_scale <= 1);
  const double own = work_scale (frame.size ());
  if (own < 1.0)
    shrink (frame, d.work, own);
  else
    d.work = frame;
  const double s = own * frame_scale;
  colour = colour && d.work.channels () == 3;
  if (d.work.channels () == 3)
    cv::cvtColor (d.work, d.grey, cv::COLOR_RGB2GRAY);
  else
    d.grey = d.work;

  bool want_text = wants (classes, RegionClass::kText);
  bool want_label = wants (classes, RegionClass::kLabel);
  if (want_text || want_label)
    d.text (s, colour, want_text, want_label, out);
  if (wants (classes, RegionClass::kQr))
    d.qr_codes (s, out);
  if (wants (classes, RegionClass::kBarcode))
    d.barcodes (s, out);
  return out;
}

std::vector<Detection>
Detector::screen (const cv::Mat &pixels, const std::vector<RegionClass> &classes, bool colour,
                  double pixels_scale, double work_scale, cv::Point origin, const cv::Rect &core,
                  ScreenStats *stats, cv::Size frame, std::vector<CutCandidate> *cut)
{
  if (inject_fault_)
    throw cv::Exception (cv::Error::StsError, "injected detector fault (test hook)", "Detector::screen",
                         __FILE__, __LINE__);
  std::vector<Detection> out;
  if (classes.empty () || pixels.empty ())
    return out;
  CV_Assert (pixels.depth () == CV_8U && (pixels.channels () == 3 || pixels.channels () == 1));
  CV_Assert (pixels_scale > 0 && pixels_scale <= 1 && work_scale > 0);
  Impl &d = *impl_;
  const double q = std::min (1.0, work_scale / pixels_scale);
  if (q < 1.0) {
    shrink (pixels, d.work, q);
    d.fine = pixels;
    d.fine_per_work = 1.0 / q;
  } else {
    d.work = pixels;
    d.fine.release ();
  }
  const double s = pixels_scale * q;
  colour = colour && d.work.channels () == 3;
  if (d.work.channels () == 3)
    cv::cvtColor (d.work, d.grey, cv::COLOR_RGB2GRAY);
  else
    d.grey = d.work;
  d.chroma.release ();
  d.origin = cv::Point2d (origin);
  d.stats_out = stats;
  // The core in working pixels.
  const cv::Rect core_w = cv::Rect (cv::Point ((int)std::floor ((core.x - origin.x) * s),
                                               (int)std::floor ((core.y - origin.y) * s)),
                                    cv::Point ((int)std::ceil ((core.br ().x - origin.x) * s),
                                               (int)std::ceil ((core.br ().y - origin.y) * s)))
                          & cv::Rect (0, 0, d.grey.cols, d.grey.rows);

  bool want_text = wants (classes, RegionClass::kText);
  bool want_label = wants (classes, RegionClass::kLabel);
  if (want_text || want_label)
    d.text (s, colour, want_text, want_label, out, true);
  bool want_qr = wants (classes, RegionClass::kQr), want_barcode = wants (classes, RegionClass::kBarcode);
  if (want_qr || want_barcode) {
    // Which edges of the copy are the frame's.
    const double right = origin.x + pixels.cols / pixels_scale,
                 bottom = origin.y + pixels.rows / pixels_scale;
    const bool whole = frame.empty ();
    const bool frame_edge[4] = {whole || origin.x <= 0, whole || origin.y <= 0,
                                whole || right >= frame.width - 0.5, whole || bottom >= frame.height - 0.5};
    d.codes (s, colour, core_w, want_qr, want_barcode, out, frame_edge, cut);
  }
  d.origin = {0, 0};
  d.stats_out = nullptr;
  d.fine.release (); // the caller's pixels: not held beyond the call
  return out;
}

} // namespace livemicro::privacy
