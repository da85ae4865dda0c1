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
constexpr double kSolidInkMaxChroma = (double) 12;

std::vector<cv::Point2d>
rect_quad (const cv::Rect2d &r)
{
  return {r.tl (), {r.x + r.width, r.y}, r.br (), {r.x, r.y + r.height}};
}

// Scales corners found on a copy downscaled by `s` back to frame pixels and
// grows the quad by `pad_frac` of its size plus `pad_px` frame pixels.
std::vector<cv::Point2d>
to_frame_quad (const std::vector<cv::Point2f> &pts, double s, double pad_frac, double pad_px)
{
  double x0 = 1e300, y0 = 1e300, x1 = -1e300, y1 = -1e300;
  for (const auto &p : pts) {
    double fx = (p.x + 0.5) / s - 0.5, fy = (p.y + 0.5) / s - 0.5;
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
    pts.emplace_back ((int) std::lround (p.x / scale), (int) std::lround (p.y / scale));
  cv::Rect r = cv::boundingRect (pts) & cv::Rect (0, 0, grey.cols, grey.rows);
  if (r.width < 4 || r.height < 4)
    return false;
  double lo, hi;
  cv::minMaxLoc (grey (r), &lo, &hi);
  if (hi - lo < 80)
    return false;
  double dark = (double) cv::countNonZero (grey (r) < (lo + hi) / 2) / r.area ();
  // Print is two-tone; tissue is continuous-tone.
  const double q = (hi - lo) / 4;
  double mid = (double) cv::countNonZero ((grey (r) > lo + q) & (grey (r) < hi - q)) / r.area ();
  return dark > 0.15 && dark < 0.85 && mid < 0.35;
}

bool
wants (const std::vector<RegionClass> &classes, RegionClass c)
{
  return std::find (classes.begin (), classes.end (), c) != classes.end ();
}

}  // namespace

cv::Rect2d
Detection::bounds_px () const
{
  return bounding_box (quad_px);
}

struct Detector::Impl {
  cv::QRCodeDetector qr;
  cv::barcode::BarcodeDetector barcode;
  cv::Mat work, grey, chroma, ink, grouped, labels, stats, centroids, coarse, dist, blobs,
      blob_stats;

  // Print is made of strokes much thinner than the glyph is tall; a
  // nucleus is a filled blob (its widest inscribed disc is about as wide as
  // the blob).  Keeps the ink components whose stroke width (twice the
  // largest distance to the background) is at most 40 % of their larger
  // side, those too small to judge (≤ 3 px strokes), and solid ones that are
  // as black and neutral as printer's ink (QR modules, bold glyphs seen up
  // close), which stained tissue never is.
  void keep_print ()
  {
    cv::distanceTransform (ink, dist, cv::DIST_L2, 3);
    int n = cv::connectedComponentsWithStats (ink, blobs, blob_stats, centroids, 8, CV_32S);
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
      int side = std::max (blob_stats.at<int> (k, cv::CC_STAT_WIDTH),
          blob_stats.at<int> (k, cv::CC_STAT_HEIGHT));
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
  // paper is a label as well.
  void text (double s, bool colour, bool want_text, bool want_label, std::vector<Detection> &out)
  {
    if (colour) {
      cv::Mat ch[3], mx, mn;
      cv::split (work, ch);
      cv::max (ch[0], ch[1], mx);
      cv::max (mx, ch[2], mx);
      cv::min (ch[0], ch[1], mn);
      cv::min (mn, ch[2], mn);
      cv::subtract (mx, mn, chroma);
      cv::Mat dark = grey < kInkMaxGrey, neutral = chroma < kInkMaxChroma;
      cv::bitwise_and (dark, neutral, ink);
    } else {
      ink = grey < kInkMaxGreyLumaOnly;
      chroma = cv::Mat::zeros (grey.size (), CV_8U);
    }
    keep_print ();
    // Characters of a word are less than about half a glyph apart.
    cv::dilate (ink, grouped, cv::getStructuringElement (cv::MORPH_RECT, cv::Size (9, 5)));
    int n = cv::connectedComponentsWithStats (grouped, labels, stats, centroids, 8, CV_32S);
    const cv::Rect frame (0, 0, grey.cols, grey.rows);
    for (int i = 1; i < n; i++) {
      cv::Rect r (stats.at<int> (i, cv::CC_STAT_LEFT), stats.at<int> (i, cv::CC_STAT_TOP),
          stats.at<int> (i, cv::CC_STAT_WIDTH), stats.at<int> (i, cv::CC_STAT_HEIGHT));
      // Undo the dilation.
      r = cv::Rect (r.x + 4, r.y + 2, std::max (1, r.width - 8), std::max (1, r.height - 4)) & frame;
      if (r.empty ())
        continue;
      int ink_px = cv::countNonZero (ink (r));
      double density = (double) ink_px / r.area ();
      // Specks and solid dark areas (a black border, a mask drawn upstream)
      // are not print.
      if (ink_px < 10 || std::max (r.width, r.height) < 4 || density > 0.85)
        continue;
      cv::Rect2d fr ((r.x) / s - 0.5, (r.y) / s - 0.5, r.width / s, r.height / s);
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
        std::vector<cv::Point2f> quad (pts.begin () + (long) i, pts.begin () + (long) i + 4);
        if (looks_printed (grey, quad, scale / s))
          out.push_back ({RegionClass::kQr, to_frame_quad (quad, scale, 0.1, 2)});
      }
    };
    auto scaled = [&] (int max_side) {
      double q = std::min (1.0, (double) max_side / side);
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

  void barcodes (double s, std::vector<Detection> &out)
  {
    std::vector<cv::Point2f> pts;
    if (barcode.detect (grey, pts))
      for (size_t i = 0; i + 4 <= pts.size (); i += 4) {
        std::vector<cv::Point2f> quad (pts.begin () + (long) i, pts.begin () + (long) i + 4);
        if (looks_printed (grey, quad, 1.0))
          out.push_back ({RegionClass::kBarcode, to_frame_quad (quad, s, 0.3, 2)});
      }
  }
};

double
Detector::work_scale (cv::Size size)
{
  return std::min (1.0, (double) kWorkMaxSide / std::max ({size.width, size.height, 1}));
}

Detector::Detector () : impl_ (std::make_unique<Impl> ()) {}
Detector::~Detector () = default;

std::vector<Detection>
Detector::detect (const cv::Mat &frame, const std::vector<RegionClass> &classes, bool colour,
    double frame_scale)
{
  if (inject_fault_)
    throw cv::Exception (cv::Error::StsError, "injected detector fault (test hook)",
        "Detector::detect", __FILE__, __LINE__);
  std::vector<Detection> out;
  if (classes.empty () || frame.empty ())
    return out;
  CV_Assert (frame.depth () == CV_8U && (frame.channels () == 3 || frame.channels () == 1));
  Impl &d = *impl_;
  CV_Assert (frame_scale > 0 && frame_scale <= 1);
  const double own = work_scale (frame.size ());
  if (own < 1.0)
    cv::resize (frame, d.work, cv::Size (), own, own, cv::INTER_AREA);
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

}  // namespace livemicro::privacy
