#include "tile_cache.h"

#include "noise.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace livemicro::hw::sim {

size_t
TileCache::KeyHash::operator() (const Key &k) const
{
  return static_cast<size_t> (hash3 (k.scale_bits, k.tx, k.ty));
}

TileCache::TileCache (const Slide &slide, int tile_px, size_t capacity_bytes)
    : slide_ (slide), tile_px_ (tile_px), capacity_bytes_ (capacity_bytes)
{}

TileCache::~TileCache ()
{
  {
    std::lock_guard<std::mutex> lock (mutex_);
    stopping_ = true;
  }
  work_.notify_all ();
  if (thread_.joinable ())
    thread_.join ();
}

TileCache::Key
TileCache::key_for (double um_per_px, int64_t tx, int64_t ty)
{
  uint64_t bits;
  std::memcpy (&bits, &um_per_px, sizeof bits);
  return {bits, tx, ty};
}

cv::Mat
TileCache::render_tile (const Key &key) const
{
  double um_per_px;
  std::memcpy (&um_per_px, &key.scale_bits, sizeof um_per_px);
  cv::Mat rgb;
  slide_.render (um_per_px,
                 cv::Rect (static_cast<int> (key.tx * tile_px_), static_cast<int> (key.ty * tile_px_),
                           tile_px_, tile_px_),
                 rgb);
  return rgb;
}

void
TileCache::insert_locked (const Key &key, cv::Mat rgb)
{
  const size_t tile_bytes = rgb.total () * rgb.elemSize ();
  while (!lru_.empty () && stats_.bytes + tile_bytes > capacity_bytes_) {
    tiles_.erase (lru_.back ());
    lru_.pop_back ();
    stats_.bytes -= tile_bytes;
  }
  lru_.push_front (key);
  Entry &entry = tiles_[key];
  entry.rgb = std::move (rgb);
  entry.lru = lru_.begin ();
  stats_.bytes += tile_bytes;
  stats_.tiles = tiles_.size ();
}

const cv::Mat &
TileCache::tile_locked (std::unique_lock<std::mutex> &lock, const Key &key)
{
  for (;;) {
    auto it = tiles_.find (key);
    if (it != tiles_.end ()) {
      stats_.hits++;
      lru_.splice (lru_.begin (), lru_, it->second.lru);
      return it->second.rgb;
    }
    if (!in_flight_.count (key))
      break;
    rendered_.wait (lock); // the prefetcher is on it
  }
  stats_.misses++;
  in_flight_.insert (key);
  lock.unlock ();
  cv::Mat rgb = render_tile (key);
  lock.lock ();
  in_flight_.erase (key);
  insert_locked (key, std::move (rgb));
  rendered_.notify_all ();
  return tiles_[key].rgb;
}

void
TileCache::read (double um_per_px, const cv::Rect &r, cv::Mat &out)
{
  std::unique_lock<std::mutex> lock (mutex_);
  const int64_t t = tile_px_;
  auto floor_div = [t] (int64_t v) { return v >= 0 ? v / t : -((-v + t - 1) / t); };
  int64_t tx0 = floor_div (r.x), tx1 = floor_div (int64_t (r.x) + r.width - 1);
  int64_t ty0 = floor_div (r.y), ty1 = floor_div (int64_t (r.y) + r.height - 1);
  for (int64_t ty = ty0; ty <= ty1; ty++)
    for (int64_t tx = tx0; tx <= tx1; tx++) {
      // Hold a reference: a concurrent insert may evict the entry.
      cv::Mat src = tile_locked (lock, key_for (um_per_px, tx, ty));
      cv::Rect tile_rect (int (tx * t), int (ty * t), int (t), int (t));
      cv::Rect part = tile_rect & r;
      src (part - tile_rect.tl ()).copyTo (out (part - r.tl ()));
    }
}

void
TileCache::prefetch (double um_per_px, const cv::Rect &r, cv::Point focus)
{
  std::lock_guard<std::mutex> lock (mutex_);
  if (!prefetch_enabled_)
    return;
  const int64_t t = tile_px_;
  auto floor_div = [t] (int64_t v) { return v >= 0 ? v / t : -((-v + t - 1) / t); };
  std::vector<std::pair<int64_t, Key>> wanted;
  for (int64_t ty = floor_div (r.y); ty <= floor_div (int64_t (r.y) + r.height - 1); ty++)
    for (int64_t tx = floor_div (r.x); tx <= floor_div (int64_t (r.x) + r.width - 1); tx++) {
      Key k = key_for (um_per_px, tx, ty);
      if (tiles_.count (k) || in_flight_.count (k))
        continue;
      int64_t dx = tx * t + t / 2 - focus.x, dy = ty * t + t / 2 - focus.y;
      wanted.emplace_back (dx * dx + dy * dy, k);
    }
  std::sort (wanted.begin (), wanted.end (), [] (const auto &a, const auto &b) { return a.first < b.first; });
  queue_.clear ();
  for (const auto &w : wanted)
    queue_.push_back (w.second);
  if (!queue_.empty ())
    work_.notify_one ();
}

void
TileCache::set_prefetch (bool enabled)
{
  std::lock_guard<std::mutex> lock (mutex_);
  prefetch_enabled_ = enabled;
  if (!enabled)
    queue_.clear ();
  if (enabled && !thread_.joinable ())
    thread_ = std::thread ([this] { worker (); });
}

void
TileCache::worker ()
{
  std::unique_lock<std::mutex> lock (mutex_);
  for (;;) {
    work_.wait (lock, [this] { return stopping_ || !queue_.empty (); });
    if (stopping_)
      return;
    Key key = queue_.front ();
    queue_.pop_front ();
    if (tiles_.count (key) || in_flight_.count (key))
      continue;
    in_flight_.insert (key);
    lock.unlock ();
    cv::Mat rgb = render_tile (key);
    lock.lock ();
    in_flight_.erase (key);
    insert_locked (key, std::move (rgb));
    stats_.prefetched++;
    rendered_.notify_all ();
  }
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
  std::unique_lock<std::mutex> lock (mutex_);
  queue_.clear ();
  rendered_.wait (lock, [this] { return in_flight_.empty (); });
  tiles_.clear ();
  lru_.clear ();
  stats_ = Stats ();
}

} // namespace livemicro::hw::sim
