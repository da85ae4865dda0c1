#include "tile_cache.h"

#include "noise.h"

#include <cmath>
#include <cstring>

namespace livemicro::hw::sim {

size_t
TileCache::KeyHash::operator() (const Key &k) const
{
  return static_cast<size_t> (hash3 (k.scale_bits, k.tx, k.ty));
}

TileCache::TileCache (const Slide &slide, int tile_px, size_t capacity_bytes)
    : slide_ (slide), tile_px_ (tile_px), capacity_bytes_ (capacity_bytes)
{
}

const cv::Mat &
TileCache::tile (double um_per_px, int64_t tx, int64_t ty)
{
  uint64_t bits;
  std::memcpy (&bits, &um_per_px, sizeof bits);
  Key key {bits, tx, ty};
  auto it = tiles_.find (key);
  if (it != tiles_.end ()) {
    stats_.hits++;
    lru_.splice (lru_.begin (), lru_, it->second.lru);
    return it->second.rgb;
  }
  stats_.misses++;
  cv::Mat rgb;
  slide_.render (um_per_px,
      cv::Rect (static_cast<int> (tx * tile_px_), static_cast<int> (ty * tile_px_),
          tile_px_, tile_px_),
      rgb);
  const size_t tile_bytes = rgb.total () * rgb.elemSize ();
  while (!lru_.empty () && stats_.bytes + tile_bytes > capacity_bytes_) {
    tiles_.erase (lru_.back ());
    lru_.pop_back ();
    stats_.bytes -= tile_bytes;
  }
  lru_.push_front (key);
  auto &entry = tiles_[key];
  entry.rgb = std::move (rgb);
  entry.lru = lru_.begin ();
  stats_.bytes += tile_bytes;
  stats_.tiles = tiles_.size ();
  return entry.rgb;
}

void
TileCache::read (double um_per_px, const cv::Rect &r, cv::Mat &out)
{
  std::lock_guard<std::mutex> lock (mutex_);
  const int64_t t = tile_px_;
  auto floor_div = [t] (int64_t v) { return v >= 0 ? v / t : -((-v + t - 1) / t); };
  int64_t tx0 = floor_div (r.x), tx1 = floor_div (int64_t (r.x) + r.width - 1);
  int64_t ty0 = floor_div (r.y), ty1 = floor_div (int64_t (r.y) + r.height - 1);
  for (int64_t ty = ty0; ty <= ty1; ty++)
    for (int64_t tx = tx0; tx <= tx1; tx++) {
      const cv::Mat &src = tile (um_per_px, tx, ty);
      cv::Rect tile_rect (int (tx * t), int (ty * t), int (t), int (t));
      cv::Rect part = tile_rect & r;
      src (part - tile_rect.tl ()).copyTo (out (part - r.tl ()));
    }
  stats_.tiles = tiles_.size ();
}

TileCache::Stats
TileCache::stats () const
{
  std::lock_guard<std::mutex> lock (mutex_);
  return stats_;
}

void
TileCache::clear ()
{
  std::lock_guard<std::mutex> lock (mutex_);
  tiles_.clear ();
  lru_.clear ();
  stats_ = Stats ();
}

}  // namespace livemicro::hw::sim
