// Detection only where it can matter: a record of checked slide cells.
#include "livemicro/privacy/incremental.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <unordered_map>

namespace livemicro::privacy {

namespace {

// A cell of the record is this many detection pixels square.
constexpr int kCellWorkPx = 4;
// Context analysed around each rectangle, detection pixels: a word, a
// barcode or a QR symbol up to this size straddling the rectangle's edge is
// seen whole (a QR code's ink is masked as text whatever its size).
constexpr int kContextWorkPx = 48;
constexpr int kTileCells = 64;
constexpr size_t kMaxTiles = 512;
constexpr size_t kMaxLayers = 4;
// A code candidate cut by the edge of an analysed rectangle is looked at
// again with at least this much around it (detection pixels), or twice its
// size: a code larger than the context is then seen whole by the code
// detectors in the frame that shows it whole.
constexpr int kCutGrowWorkPx = 256;
// When the rectangles (with context) would cover more than this share of
// the frame, the whole frame is analysed at once.
constexpr double kWholeFrameShare = 0.7;
// Cell boundaries are compared with this slack, frame pixels.
constexpr double kEps = 1e-6;
constexpr double kMaxCellIndex = 1e9;

int64_t
floor_div (int64_t a, int64_t b)
{
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

uint64_t
tile_key (int64_t ti, int64_t tj)
{
  return ((uint64_t)(uint32_t)ti << 32) | (uint32_t)tj;
}

struct Tile {
  std::vector<uint32_t> stamp = std::vector<uint32_t> (kTileCells * kTileCells, 0);
  uint64_t used = 0;
};

struct Layer {
  double um_per_px = 0, z_um = 0, work_scale = 0;
  std::vector<RegionClass> classes;
  std::unordered_map<uint64_t, Tile> tiles;
  uint64_t used = 0;
  uint64_t id = 0; // unique for the detector's lifetime

  bool is (double upp, double z, double s, const std::vector<RegionClass> &c) const
  {
    return um_per_px == upp && z_um == z && work_scale == s && classes == c;
  }
};

struct Plan {
  cv::Rect core, crop; // frame pixels
};

} // namespace

struct IncrementalDetector::Impl {
  Detector detector;
  std::vector<Layer> layers;
  // Stamps are frame_number − epoch + 1 (0: never checked).
  uint64_t epoch = 0;
  // Cells the previous frame showed only in part, and when their visible
  // part was checked: valid while the frame shows exactly the same part of
  // the slide (a still view), so that they are not analysed in every frame.
  std::unordered_map<uint64_t, uint32_t> partial;
  uint64_t partial_layer = 0;
  FrameGeometry partial_view;
  uint64_t next_layer_id = 1;

  Layer &layer (double upp, double z, double s, const std::vector<RegionClass> &classes, uint64_t frame)
  {
    for (auto &l : layers)
      if (l.is (upp, z, s, classes)) {
        l.used = frame;
        return l;
      }
    if (layers.size () >= kMaxLayers) {
      auto oldest = std::min_element (layers.begin (), layers.end (),
                                      [] (const Layer &a, const Layer &b) { return a.used < b.used; });
      layers.erase (oldest);
    }
    Layer l;
    l.um_per_px = upp;
    l.z_um = z;
    l.work_scale = s;
    l.classes = classes;
    l.used = frame;
    l.id = next_layer_id++;
    layers.push_back (std::move (l));
    return layers.back ();
  }

  size_t tile_count () const
  {
    size_t n = 0;
    for (const auto &l : layers)
      n += l.tiles.size ();
    return n;
  }

  // Drops the least recently used tiles beyond the cap.
  void trim ()
  {
    while (tile_count () > kMaxTiles) {
      Layer *ol = nullptr;
      std::unordered_map<uint64_t, Tile>::iterator ot;
      for (auto &l : layers)
        for (auto it = l.tiles.begin (); it != l.tiles.end (); ++it)
          if (!ol || it->second.used < ot->second.used) {
            ol = &l;
            ot = it;
          }
      ol->tiles.erase (ot);
    }
  }
};

IncrementalDetector::IncrementalDetector () : impl_ (std::make_unique<Impl> ()) {}
IncrementalDetector::~IncrementalDetector () = default;

void
IncrementalDetector::clear ()
{
  impl_->layers.clear ();
  impl_->partial.clear ();
  impl_->partial_layer = 0;
}

size_t
IncrementalDetector::tiles () const
{
  return impl_->tile_count ();
}

void
IncrementalDetector::set_inject_fault (bool on)
{
  impl_->detector.set_inject_fault (on);
}

std::vector<Detection>
IncrementalDetector::detect (FrameSource &source, const FrameGeometry &g, double z_um,
                             const std::vector<RegionClass> &classes, const cv::Mat &hidden,
                             const cv::Rect &hidden_roi, uint64_t frame, unsigned recheck_frames,
                             IncrementalStats *stats)
{
  Impl &d = *impl_;
  IncrementalStats local;
  IncrementalStats &st = stats ? *stats : local;
  st = IncrementalStats ();
  std::vector<Detection> out;
  const cv::Size size = source.size ();
  CV_Assert (g.valid () && g.width == size.width && g.height == size.height);
  if (classes.empty ())
    return out;
  recheck_frames = std::max (1u, recheck_frames);
  if (frame < d.epoch || frame - d.epoch + 1 >= std::numeric_limits<uint32_t>::max ()) {
    clear ();
    d.epoch = frame;
  }
  const uint32_t now = (uint32_t)(frame - d.epoch + 1);

  // Detection scale (detection pixels per frame pixel) and the cell size.
  const double s = std::min (Detector::work_scale (size), source.scale ());
  const double cell_px = kCellWorkPx / s;
  const double upp = g.um_per_px;
  const double cell_um = cell_px * upp;
  std::vector<RegionClass> key_classes = classes;
  std::sort (key_classes.begin (), key_classes.end ());
  key_classes.erase (std::unique (key_classes.begin (), key_classes.end ()), key_classes.end ());
  Layer &layer = d.layer (upp, z_um, s, key_classes, frame);
  const bool same_view = d.partial_layer == layer.id && d.partial_view.stage_x_um == g.stage_x_um
                         && d.partial_view.stage_y_um == g.stage_y_um && d.partial_view.width == g.width
                         && d.partial_view.height == g.height;
  if (!same_view) {
    d.partial.clear ();
    d.partial_layer = layer.id;
    d.partial_view = g;
  }

  // Slide µm at the frame's left/top edge; cell i spans frame edge
  // coordinates [X (i), X (i + 1)) (0 … width across the frame).
  const double x_edge_um = g.stage_x_um - size.width / 2.0 * upp;
  const double y_edge_um = g.stage_y_um - size.height / 2.0 * upp;
  // Cell indices must fit (a slide is ~10^5 cells across): a position
  // beyond that is a broken StageMeta, and the frame is blanked.
  if (!(std::abs (x_edge_um / cell_um) < kMaxCellIndex && std::abs (y_edge_um / cell_um) < kMaxCellIndex))
    throw std::range_error ("stage position out of range (" + std::to_string (g.stage_x_um) + ", "
                            + std::to_string (g.stage_y_um) + " µm)");
  const int64_t i0 = (int64_t)std::floor (x_edge_um / cell_um);
  const int64_t i1 = (int64_t)std::ceil ((x_edge_um + size.width * upp) / cell_um);
  const int64_t j0 = (int64_t)std::floor (y_edge_um / cell_um);
  const int64_t j1 = (int64_t)std::ceil ((y_edge_um + size.height * upp) / cell_um);
  const int ni = (int)(i1 - i0), nj = (int)(j1 - j0);
  std::vector<double> xs (ni + 1), ys (nj + 1);
  for (int i = 0; i <= ni; i++)
    xs[i] = ((double)(i0 + i) * cell_um - x_edge_um) / upp;
  for (int j = 0; j <= nj; j++)
    ys[j] = ((double)(j0 + j) * cell_um - y_edge_um) / upp;
  st.cells_visible = ni * nj;

  // Cells not checked within recheck_frames (stale), and their extent.
  std::vector<uint8_t> need ((size_t)ni * nj, 0);
  int si0 = ni, si1 = -1, sj0 = nj, sj1 = -1;
  for (int64_t tj = floor_div (j0, kTileCells); tj <= floor_div (j1 - 1, kTileCells); tj++)
    for (int64_t ti = floor_div (i0, kTileCells); ti <= floor_div (i1 - 1, kTileCells); ti++) {
      auto it = layer.tiles.find (tile_key (ti, tj));
      const Tile *tile = it == layer.tiles.end () ? nullptr : &it->second;
      if (tile)
        it->second.used = frame;
      int64_t ja = std::max (j0, tj * kTileCells), jb = std::min (j1, (tj + 1) * kTileCells);
      int64_t ia = std::max (i0, ti * kTileCells), ib = std::min (i1, (ti + 1) * kTileCells);
      for (int64_t j = ja; j < jb; j++)
        for (int64_t i = ia; i < ib; i++) {
          uint32_t stamp = tile ? tile->stamp[(j - tj * kTileCells) * kTileCells + (i - ti * kTileCells)] : 0;
          if (!d.partial.empty ()) {
            auto p = d.partial.find (tile_key (i, j));
            if (p != d.partial.end ())
              stamp = std::max (stamp, p->second);
          }
          if (stamp != 0 && now - stamp < recheck_frames) {
            st.cells_fresh++;
            continue;
          }
          const int ci = (int)(i - i0), cj = (int)(j - j0);
          need[(size_t)cj * ni + ci] = 1;
          si0 = std::min (si0, ci);
          si1 = std::max (si1, ci);
          sj0 = std::min (sj0, cj);
          sj1 = std::max (sj1, cj);
        }
    }

  // Of those, the cells masked anyway: the hidden mask reduced 4:1 over the
  // stale cells (255 only where a whole 4 × 4 block is hidden; blocks
  // aligned to 4 inside the frame, OpenCV's fast path; a partial block is
  // not hidden).
  cv::Mat small;
  cv::Rect small_at;
  if (si1 >= 0 && !hidden.empty () && !hidden_roi.empty ()) {
    CV_Assert (hidden.size () == size && hidden.type () == CV_8U);
    const cv::Rect stale_px
        = cv::Rect (cv::Point ((int)std::floor (xs[si0]), (int)std::floor (ys[sj0])),
                    cv::Point ((int)std::ceil (xs[si1 + 1]), (int)std::ceil (ys[sj1 + 1])))
          & hidden_roi;
    cv::Point a ((std::max (0, stale_px.x) / 4) * 4, (std::max (0, stale_px.y) / 4) * 4);
    cv::Point b (std::min ((stale_px.br ().x + 3) / 4 * 4, size.width / 4 * 4),
                 std::min ((stale_px.br ().y + 3) / 4 * 4, size.height / 4 * 4));
    if (!stale_px.empty () && b.x > a.x && b.y > a.y) {
      small_at = cv::Rect (a, b);
      cv::resize (hidden (small_at), small, cv::Size (small_at.width / 4, small_at.height / 4), 0, 0,
                  cv::INTER_AREA);
    }
  }
  auto is_hidden = [&] (int i, int j) {
    double x0 = std::max (0.0, xs[i]), x1 = std::min ((double)size.width, xs[i + 1]);
    double y0 = std::max (0.0, ys[j]), y1 = std::min ((double)size.height, ys[j + 1]);
    int a = (int)std::floor ((x0 - small_at.x) / 4), b = (int)std::ceil ((x1 - small_at.x) / 4);
    int c = (int)std::floor ((y0 - small_at.y) / 4), e = (int)std::ceil ((y1 - small_at.y) / 4);
    if (a < 0 || c < 0 || b > small.cols || e > small.rows || a >= b || c >= e)
      return false;
    for (int y = c; y < e; y++) {
      const uchar *row = small.ptr<uchar> (y);
      for (int x = a; x < b; x++)
        if (row[x] != 255)
          return false;
    }
    return true;
  };
  for (int j = std::max (0, sj0); j <= sj1; j++)
    for (int i = std::max (0, si0); i <= si1; i++) {
      uint8_t &n = need[(size_t)j * ni + i];
      if (!n)
        continue;
      if (!small.empty () && is_hidden (i, j)) {
        n = 0;
        st.cells_hidden++;
      } else {
        st.cells_to_check++;
      }
    }
  if (st.cells_to_check == 0)
    return out;

  // Rectangles of cells: runs along each row, stacked while they match.
  struct Run {
    int i0, i1, j0, j1;
  };
  std::vector<Run> open, done;
  for (int j = 0; j < nj; j++) {
    std::vector<Run> next;
    for (int i = 0; i < ni;) {
      if (!need[(size_t)j * ni + i]) {
        i++;
        continue;
      }
      int a = i;
      while (i < ni && need[(size_t)j * ni + i])
        i++;
      auto same
          = std::find_if (open.begin (), open.end (), [&] (const Run &r) { return r.i0 == a && r.i1 == i; });
      if (same != open.end ()) {
        Run r = *same;
        r.j1 = j + 1;
        open.erase (same);
        next.push_back (r);
      } else {
        next.push_back ({a, i, j, j + 1});
      }
    }
    done.insert (done.end (), open.begin (), open.end ());
    open.swap (next);
  }
  done.insert (done.end (), open.begin (), open.end ());

  // Frame rectangles, aligned outwards, with context.
  const cv::Rect whole (cv::Point (0, 0), size);
  int align = std::max (1, source.alignment ());
  const double inv = 1.0 / s;
  if (std::abs (inv - std::round (inv)) < 1e-9)
    align = std::max (align, (int)std::round (inv));
  auto down = [&] (double v) { return (int)(std::floor (v / align) * align); };
  auto up = [&] (double v) { return (int)(std::ceil (v / align) * align); };
  const int context = (int)std::ceil (kContextWorkPx * inv);
  std::vector<Plan> plans;
  for (const Run &r : done) {
    cv::Rect core (cv::Point (down (std::max (0.0, xs[r.i0])), down (std::max (0.0, ys[r.j0]))),
                   cv::Point (std::min (size.width, up (std::min ((double)size.width, xs[r.i1]))),
                              std::min (size.height, up (std::min ((double)size.height, ys[r.j1])))));
    core &= whole;
    if (core.empty ())
      continue;
    cv::Rect crop (cv::Point (down (core.x - context), down (core.y - context)),
                   cv::Point (up (core.br ().x + context), up (core.br ().y + context)));
    plans.push_back ({core, crop & whole});
  }
  // Merge rectangles whose union costs no more than both.
  for (bool merged = true; merged;) {
    merged = false;
    for (size_t a = 0; a < plans.size () && !merged; a++)
      for (size_t b = a + 1; b < plans.size () && !merged; b++) {
        cv::Rect u = plans[a].crop | plans[b].crop;
        if (u.area () <= plans[a].crop.area () + plans[b].crop.area ()) {
          plans[a] = {plans[a].core | plans[b].core, u};
          plans.erase (plans.begin () + (long)b);
          merged = true;
        }
      }
  }
  double total = 0;
  for (const Plan &p : plans)
    total += p.crop.area ();
  if (total > kWholeFrameShare * whole.area ())
    plans = {{whole, whole}};

  std::vector<CutCandidate> cut;
  for (const Plan &p : plans) {
    cv::Mat px = source.pixels (p.crop);
    std::vector<Detection> found = d.detector.screen (px, classes, source.colour (), source.scale (), s,
                                                      p.crop.tl (), p.core, &st.screen, size, &cut);
    out.insert (out.end (), found.begin (), found.end ());
    st.rects++;
    st.analysed_px += p.crop.area ();
  }
  // Code candidates cut by a rectangle's edge: the code detectors alone,
  // with room on the sides where they were cut (overlapping ones once).
  std::vector<RegionClass> codes;
  for (RegionClass c : classes)
    if (c == RegionClass::kQr || c == RegionClass::kBarcode)
      codes.push_back (c);
  for (bool merged = true; merged;) {
    merged = false;
    for (size_t a = 0; a < cut.size () && !merged; a++)
      for (size_t b = a + 1; b < cut.size () && !merged; b++)
        if (!(cut[a].rect & cut[b].rect).empty ()) {
          cut[a].rect |= cut[b].rect;
          cut[a].left |= cut[b].left;
          cut[a].top |= cut[b].top;
          cut[a].right |= cut[b].right;
          cut[a].bottom |= cut[b].bottom;
          cut.erase (cut.begin () + (long)b);
          merged = true;
        }
  }
  const int quiet = (int)std::ceil (kContextWorkPx * inv);
  for (const CutCandidate &c : cut) {
    const int grow
        = std::max ((int)std::ceil (kCutGrowWorkPx * inv), 2 * std::max (c.rect.width, c.rect.height));
    cv::Rect crop (
        cv::Point (down (c.rect.x - (c.left ? grow : quiet)), down (c.rect.y - (c.top ? grow : quiet))),
        cv::Point (up (c.rect.br ().x + (c.right ? grow : quiet)),
                   up (c.rect.br ().y + (c.bottom ? grow : quiet))));
    crop &= whole;
    cv::Mat px = source.pixels (crop);
    std::vector<Detection> found = d.detector.screen (px, codes, source.colour (), source.scale (), s,
                                                      crop.tl (), c.rect & whole, &st.screen, size);
    out.insert (out.end (), found.begin (), found.end ());
    st.analysed_px += crop.area ();
  }

  // Mark the cells that lay whole inside the frame and an analysed core;
  // those the frame shows only in part, for as long as it stays still.
  for (const Plan &p : plans) {
    const cv::Rect c = p.core & whole;
    auto inside = [] (double a, double b, int lo, int hi) { return a >= lo - kEps && b <= hi + kEps; };
    for (int j = 0; j < nj; j++) {
      const double ya = std::max (0.0, ys[j]), yb = std::min ((double)size.height, ys[j + 1]);
      if (!inside (ya, yb, c.y, c.br ().y))
        continue;
      const bool part_y = ys[j] < -kEps || ys[j + 1] > size.height + kEps;
      int64_t sj = j0 + j, tj = floor_div (sj, kTileCells);
      Tile *tile = nullptr;
      int64_t tile_i = std::numeric_limits<int64_t>::min ();
      for (int i = 0; i < ni; i++) {
        const double xa = std::max (0.0, xs[i]), xb = std::min ((double)size.width, xs[i + 1]);
        if (!inside (xa, xb, c.x, c.br ().x))
          continue;
        int64_t si = i0 + i, ti = floor_div (si, kTileCells);
        if (part_y || xs[i] < -kEps || xs[i + 1] > size.width + kEps) {
          d.partial[tile_key (si, sj)] = now;
          continue;
        }
        if (ti != tile_i) {
          tile = &layer.tiles[tile_key (ti, tj)];
          tile->used = frame;
          tile_i = ti;
        }
        tile->stamp[(sj - tj * kTileCells) * kTileCells + (si - ti * kTileCells)] = now;
      }
    }
  }
  d.trim ();
  return out;
}

} // namespace livemicro::privacy
