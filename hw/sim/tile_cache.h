// A least-recently-used cache of rendered slide tiles, per sampling scale.
// The virtual camera composes every frame from it, so a frame costs a few
// copies instead of a render of the slide.  An optional worker thread renders
// the tiles around the view ahead of time (prefetch), so that panning does not
// stall a frame on the tiles that come into view.
#pragma once

#include "slide.h"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace livemicro::hw::sim {

class TileCache {
public:
  struct Stats {
    uint64_t hits = 0, misses = 0, prefetched = 0;
    size_t tiles = 0, bytes = 0;
  };

  TileCache (const Slide &slide, int tile_px = 256, size_t capacity_bytes = size_t (384) << 20);
  ~TileCache ();

  // Copies region_px of the slide at um_per_px into out (CV_8UC3 of
  // region_px.size(); may be a view into a larger image).  Renders missing
  // tiles on the calling thread (or waits for the prefetcher's).
  void read (double um_per_px, const cv::Rect &region_px, cv::Mat &out);
  // Asks the prefetch worker for the missing tiles of region_px, nearest to
  // `focus_px` first; replaces any earlier request not started yet.
  void prefetch (double um_per_px, const cv::Rect &region_px, cv::Point focus_px);
  void set_prefetch (bool enabled);
  Stats stats () const;
  void clear ();
  int tile_px () const { return tile_px_; }

private:
  struct Key {
    uint64_t scale_bits;
    int64_t tx, ty;
    bool operator== (const Key &o) const { return scale_bits == o.scale_bits && tx == o.tx && ty == o.ty; }
  };
  struct KeyHash {
    size_t operator() (const Key &k) const;
  };
  struct Entry {
    cv::Mat rgb;
    std::list<Key>::iterator lru;
  };
  static Key key_for (double um_per_px, int64_t tx, int64_t ty);
  cv::Mat render_tile (const Key &key) const;
  // With mutex_ held: the cached tile, rendering (lock released meanwhile)
  // or waiting for it as needed.
  const cv::Mat &tile_locked (std::unique_lock<std::mutex> &lock, const Key &key);
  void insert_locked (const Key &key, cv::Mat rgb);
  void worker ();

  const Slide &slide_;
  const int tile_px_;
  const size_t capacity_bytes_;
  mutable std::mutex mutex_;
  std::condition_variable rendered_; // a tile in flight got inserted
  std::condition_variable work_;     // the prefetch queue got work
  std::unordered_map<Key, Entry, KeyHash> tiles_;
  std::list<Key> lru_; // front: most recently used
  std::unordered_set<Key, KeyHash> in_flight_;
  std::deque<Key> queue_;
  bool prefetch_enabled_ = false, stopping_ = false;
  std::thread thread_;
  Stats stats_;
};

} // namespace livemicro::hw::sim
