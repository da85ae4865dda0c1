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

// The cells of the record a frame touches: cell i0 + i spans frame edge
// coordinates [xs[i], xs[i + 1]) (0 … width across the frame), rows alike.
struct CellGrid {
  int64_t i0 = 0, i1 = 0, j0 = 0, j1 = 0;
  int ni = 0, nj = 0;
  std::vector<double> xs, ys;
};

// Cells to analyse, row by row (need[j * ni + i]), and their extent.
struct Need {
  std::vector<uint8_t> cells;
  int si0 = 0, si1 = -1, sj0 = 0, sj1 = -1;
};

// A rectangle of cells [i0, i1) × [j0, j1).
struct Run {
  int i0, i1, j0, j1;
};

CellGrid
cell_grid (const hw::FrameRecord &g, cv::Size size, double cell_um)
{
  const double upp = g.um_per_px;
  // Slide µm at the frame's left/top edge.
  const double x_edge_um = g.stage_x_um - size.width / 2.0 * upp;
  const double y_edge_um = g.stage_y_um - size.height / 2.0 * upp;
  // Cell indices must fit (a slide is ~10^5 cells across): a position
  // beyond that is a broken StageMeta, and the frame is blanked.
  if (!(std::abs (x_edge_um / cell_um) < kMaxCellIndex && std::abs (y_edge_um / cell_um) < kMaxCellIndex))
    throw std::range_error ("stage position out of range (" + std::to_string (g.stage_x_um) + ", "
                            + std::to_string (g.stage_y_um) + " µm)");
  CellGrid c;
  c.i0 = (int64_t)std::floor (x_edge_um / cell_um);
  c.i1 = (int64_t)std::ceil ((x_edge_um + size.width * upp) / cell_um);
  c.j0 = (int64_t)std::floor (y_edge_um / cell_um);
  c.j1 = (int64_t)std::ceil ((y_edge_um + size.height * upp) / cell_um);
  c.ni = (int)(c.i1 - c.i0);
  c.nj = (int)(c.j1 - c.j0);
  c.xs.resize (c.ni + 1);
  c.ys.resize (c.nj + 1);
  for (int i = 0; i <= c.ni; i++)
    c.xs[i] = ((double)(c.i0 + i) * cell_um - x_edge_um) / upp;
  for (int j = 0; j <= c.nj; j++)
    c.ys[j] = ((double)(c.j0 + j) * cell_um - y_edge_um) / upp;
  return c;
}

// Cells not checked within recheck_frames (stale): by the layer's stamps,
// and for cells the previous still frame showed in part, by `partial` (the
// frame's border: looked up per entry, not per cell).
Need
stale_cells (Layer &layer, const std::unordered_map<uint64_t, uint32_t> &partial, const CellGrid &c,
             uint32_t now, unsigned recheck_frames, uint64_t frame, IncrementalStats &st)
{
  Need n;
  n.cells.assign ((size_t)c.ni * c.nj, 0);
  auto fresh = [&] (uint32_t stamp) { return stamp != 0 && now - stamp < recheck_frames; };
  for (int64_t tj = floor_div (c.j0, kTileCells); tj <= floor_div (c.j1 - 1, kTileCells); tj++)
    for (int64_t ti = floor_div (c.i0, kTileCells); ti <= floor_div (c.i1 - 1, kTileCells); ti++) {
      auto it = layer.tiles.find (tile_key (ti, tj));
      const Tile *tile = it == layer.tiles.end () ? nullptr : &it->second;
      if (tile)
        it->second.used = frame;
      int64_t ja = std::max (c.j0, tj * kTileCells), jb = std::min (c.j1, (tj + 1) * kTileCells);
      int64_t ia = std::max (c.i0, ti * kTileCells), ib = std::min (c.i1, (ti + 1) * kTileCells);
      for (int64_t j = ja; j < jb; j++) {
        const uint32_t *row = tile ? &tile->stamp[(j - tj * kTileCells) * kTileCells] : nullptr;
        uint8_t *out = &n.cells[(size_t)(j - c.j0) * c.ni];
        for (int64_t i = ia; i < ib; i++)
          out[i - c.i0] = !fresh (row ? row[i - ti * kTileCells] : 0);
      }
    }
  for (const auto &[key, stamp] : partial) {
    const int64_t i = (int32_t)(uint32_t)(key >> 32), j = (int32_t)(uint32_t)key;
    if (i >= c.i0 && i < c.i1 && j >= c.j0 && j < c.j1 && fresh (stamp))
      n.cells[(size_t)(j - c.j0) * c.ni + (i - c.i0)] = 0;
  }
  n.si0 = c.ni;
  n.sj0 = c.nj;
  for (int cj = 0; cj < c.nj; cj++)
    for (int ci = 0; ci < c.ni; ci++) {
      if (!n.cells[(size_t)cj * c.ni + ci]) {
        st.cells_fresh++;
        continue;
      }
      n.si0 = std::min (n.si0, ci);
      n.si1 = std::max (n.si1, ci);
      n.sj0 = std::min (n.sj0, cj);
      n.sj1 = std::max (n.sj1, cj);
    }
  return n;
}

// Of the stale cells, drops those masked anyway: the hidden mask reduced
// 4:1 over the stale cells (255 only where a whole 4 × 4 block is hidden;
// blocks aligned to 4 inside the frame, OpenCV's fast path; a partial block
// is not hidden).  Counts the rest as cells to check.
void
drop_hidden_cells (Need &n, const CellGrid &c, cv::Size size, const cv::Mat &hidden,
                   const cv::Rect &hidden_roi, IncrementalStats &st)
{
  cv::Mat small;
  cv::Rect small_at;
  if (n.si1 >= 0 && !hidden.empty () && !hidden_roi.empty ()) {
    CV_Assert (hidden.size () == size && hidden.type () == CV_8U);
    const cv::Rect stale_px
        = cv::Rect (cv::Point ((int)std::floor (c.xs[n.si0]), (int)std::floor (c.ys[n.sj0])),
                    cv::Point ((int)std::ceil (c.xs[n.si1 + 1]), (int)std::ceil (c.ys[n.sj1 + 1])))
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
    double x0 = std::max (0.0, c.xs[i]), x1 = std::min ((double)size.width, c.xs[i + 1]);
    double y0 = std::max (0.0, c.ys[j]), y1 = std::min ((double)size.height, c.ys[j + 1]);
    int a = (int)std::floor ((x0 - small_at.x) / 4), b = (int)std::ceil ((x1 - small_at.x) / 4);
    int cc = (int)std::floor ((y0 - small_at.y) / 4), e = (int)std::ceil ((y1 - small_at.y) / 4);
    if (a < 0 || cc < 0 || b > small.cols || e > small.rows || a >= b || cc >= e)
      return false;
    for (int y = cc; y < e; y++) {
      const uchar *row = small.ptr<uchar> (y);
      for (int x = a; x < b; x++)
        if (row[x] != 255)
          return false;
    }
    return true;
  };
  for (int j = std::max (0, n.sj0); j <= n.sj1; j++)
    for (int i = std::max (0, n.si0); i <= n.si1; i++) {
      uint8_t &cell = n.cells[(size_t)j * c.ni + i];
      if (!cell)
        continue;
      if (!small.empty () && is_hidden (i, j)) {
        cell = 0;
        st.cells_hidden++;
      } else {
        st.cells_to_check++;
      }
    }
}

// Rectangles of cells: runs along each row, stacked while they match.
std::vector<Run>
cell_runs (const Need &n, int ni, int nj)
{
  std::vector<Run> open, done;
  for (int j = 0; j < nj; j++) {
    std::vector<Run> next;
    for (int i = 0; i < ni;) {
      if (!n.cells[(size_t)j * ni + i]) {
        i++;
        continue;
      }
      int a = i;
      while (i < ni && n.cells[(size_t)j * ni + i])
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
  return done;
}

// Frame coordinates rounded outwards to the source's alignment.
struct Aligner {
  int align = 1;
  int down (double v) const { return (int)(std::floor (v / align) * align); }
  int up (double v) const { return (int)(std::ceil (v / align) * align); }
};

// Frame rectangles of the runs, aligned outwards, with `context` around;
// merged where their union costs no more than both; the whole frame when
// they would cover most of it.
std::vector<Plan>
plan_rects (const std::vector<Run> &runs, const CellGrid &c, cv::Size size, const Aligner &al, int context)
{
  const cv::Rect whole (cv::Point (0, 0), size);
  std::vector<Plan> plans;
  for (const Run &r : runs) {
    cv::Rect core (cv::Point (al.down (std::max (0.0, c.xs[r.i0])), al.down (std::max (0.0, c.ys[r.j0]))),
                   cv::Point (std::min (size.width, al.up (std::min ((double)size.width, c.xs[r.i1]))),
                              std::min (size.height, al.up (std::min ((double)size.height, c.ys[r.j1])))));
    core &= whole;
    if (core.empty ())
      continue;
    cv::Rect crop (cv::Point (al.down (core.x - context), al.down (core.y - context)),
                   cv::Point (al.up (core.br ().x + context), al.up (core.br ().y + context)));
    plans.push_back ({core, crop & whole});
  }
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
  return plans;
}

// Code candidates that overlap, as one (their cut sides together).
void
merge_cut_candidates (std::vector<CutCandidate> &cut)
{
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
}

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
  hw::FrameRecord partial_view;
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

  // The partial-cell record holds only while the frame shows exactly the
  // part of the slide the previous one showed (a still view).
  void keep_partial_if_still (const Layer &layer, const hw::FrameRecord &g)
  {
    const bool same_view = partial_layer == layer.id && partial_view.stage_x_um == g.stage_x_um
                           && partial_view.stage_y_um == g.stage_y_um
                           && partial_view.frame_width == g.frame_width
                           && partial_view.frame_height == g.frame_height;
    if (same_view)
      return;
    partial.clear ();
    partial_layer = layer.id;
    partial_view = g;
  }

  std::vector<Detection> screen (FrameSource &source, const std::vector<RegionClass> &classes, double s,
                                 const std::vector<Plan> &plans, const Aligner &al, IncrementalStats &st);
  void mark_checked (Layer &layer, const std::vector<Plan> &plans, const CellGrid &c, cv::Size size,
                     uint32_t now, uint64_t frame);

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

// The detectors on each planned rectangle; then code candidates cut by a
// rectangle's edge: the code detectors alone, with room on the sides where
// they were cut (overlapping ones once).
std::vector<Detection>
IncrementalDetector::Impl::screen (FrameSource &source, const std::vector<RegionClass> &classes, double s,
                                   const std::vector<Plan> &plans, const Aligner &al, IncrementalStats &st)
{
  const cv::Size size = source.size ();
  const cv::Rect whole (cv::Point (0, 0), size);
  std::vector<Detection> out;
  std::vector<CutCandidate> cut;
  for (const Plan &p : plans) {
    cv::Mat px = source.pixels (p.crop);
    std::vector<Detection> found = detector.screen (px, classes, source.colour (), source.scale (), s,
                                                    p.crop.tl (), p.core, &st.screen, size, &cut);
    out.insert (out.end (), found.begin (), found.end ());
    st.rects++;
    st.analysed_px += p.crop.area ();
  }
  std::vector<RegionClass> codes;
  for (RegionClass c : classes)
    if (c == RegionClass::kQr || c == RegionClass::kBarcode)
      codes.push_back (c);
  merge_cut_candidates (cut);
  const double inv = 1.0 / s;
  const int quiet = (int)std::ceil (kContextWorkPx * inv);
  for (const CutCandidate &c : cut) {
    const int grow
        = std::max ((int)std::ceil (kCutGrowWorkPx * inv), 2 * std::max (c.rect.width, c.rect.height));
    cv::Rect crop (
        cv::Point (al.down (c.rect.x - (c.left ? grow : quiet)), al.down (c.rect.y - (c.top ? grow : quiet))),
        cv::Point (al.up (c.rect.br ().x + (c.right ? grow : quiet)),
                   al.up (c.rect.br ().y + (c.bottom ? grow : quiet))));
    crop &= whole;
    cv::Mat px = source.pixels (crop);
    std::vector<Detection> found = detector.screen (px, codes, source.colour (), source.scale (), s,
                                                    crop.tl (), c.rect & whole, &st.screen, size);
    out.insert (out.end (), found.begin (), found.end ());
    st.analysed_px += crop.area ();
  }
  return out;
}

// Marks the cells that lay whole inside the frame and an analysed core;
// those the frame shows only in part, for as long as it stays still.
void
IncrementalDetector::Impl::mark_checked (Layer &layer, const std::vector<Plan> &plans, const CellGrid &c,
                                         cv::Size size, uint32_t now, uint64_t frame)
{
  const cv::Rect whole (cv::Point (0, 0), size);
  auto inside = [] (double a, double b, int lo, int hi) { return a >= lo - kEps && b <= hi + kEps; };
  for (const Plan &p : plans) {
    const cv::Rect core = p.core & whole;
    for (int j = 0; j < c.nj; j++) {
      const double ya = std::max (0.0, c.ys[j]), yb = std::min ((double)size.height, c.ys[j + 1]);
      if (!inside (ya, yb, core.y, core.br ().y))
        continue;
      const bool part_y = c.ys[j] < -kEps || c.ys[j + 1] > size.height + kEps;
      int64_t sj = c.j0 + j, tj = floor_div (sj, kTileCells);
      Tile *tile = nullptr;
      int64_t tile_i = std::numeric_limits<int64_t>::min ();
      for (int i = 0; i < c.ni; i++) {
        const double xa = std::max (0.0, c.xs[i]), xb = std::min ((double)size.width, c.xs[i + 1]);
        if (!inside (xa, xb, core.x, core.br ().x))
          continue;
        int64_t si = c.i0 + i, ti = floor_div (si, kTileCells);
        if (part_y || c.xs[i] < -kEps || c.xs[i + 1] > size.width + kEps) {
          partial[tile_key (si, sj)] = now;
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
}

// The stages: the cells the frame touches (cell_grid), the stale ones
// (stale_cells) less those masked anyway (drop_hidden_cells), rectangles of
// them (cell_runs, plan_rects), the detectors on those (screen) and the
// cells marked checked (mark_checked).
std::vector<Detection>
IncrementalDetector::detect (FrameSource &source, const hw::FrameRecord &g,
                             const std::vector<RegionClass> &classes, const cv::Mat &hidden,
                             const cv::Rect &hidden_roi, uint64_t frame, unsigned recheck_frames,
                             IncrementalStats *stats)
{
  Impl &d = *impl_;
  IncrementalStats local;
  IncrementalStats &st = stats ? *stats : local;
  st = IncrementalStats ();
  const cv::Size size = source.size ();
  CV_Assert (places_frame (g) && g.frame_width == size.width && g.frame_height == size.height);
  if (classes.empty ())
    return {};
  recheck_frames = std::max (1u, recheck_frames);
  if (frame < d.epoch || frame - d.epoch + 1 >= std::numeric_limits<uint32_t>::max ()) {
    clear ();
    d.epoch = frame;
  }
  const uint32_t now = (uint32_t)(frame - d.epoch + 1);

  // Detection scale (detection pixels per frame pixel) and the cell size.
  const double s = std::min (Detector::work_scale (size), source.scale ());
  const double cell_um = kCellWorkPx / s * g.um_per_px;
  std::vector<RegionClass> key_classes = classes;
  std::sort (key_classes.begin (), key_classes.end ());
  key_classes.erase (std::unique (key_classes.begin (), key_classes.end ()), key_classes.end ());
  Layer &layer = d.layer (g.um_per_px, g.stage_z_um, s, key_classes, frame);
  d.keep_partial_if_still (layer, g);

  const CellGrid grid = cell_grid (g, size, cell_um);
  st.cells_visible = grid.ni * grid.nj;
  Need need = stale_cells (layer, d.partial, grid, now, recheck_frames, frame, st);
  drop_hidden_cells (need, grid, size, hidden, hidden_roi, st);
  if (st.cells_to_check == 0)
    return {};

  Aligner al;
  al.align = std::max (1, source.alignment ());
  const double inv = 1.0 / s;
  if (std::abs (inv - std::round (inv)) < 1e-9)
    al.align = std::max (al.align, (int)std::round (inv));
  const int context = (int)std::ceil (kContextWorkPx * inv);
  const std::vector<Plan> plans = plan_rects (cell_runs (need, grid.ni, grid.nj), grid, size, al, context);
  std::vector<Detection> out = d.screen (source, classes, s, plans, al, st);
  d.mark_checked (layer, plans, grid, size, now, frame);
  d.trim ();
  return out;
}

} // namespace livemicro::privacy
