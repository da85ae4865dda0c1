// A least-recently-used cache of rendered slide tiles, per sampling scale.
// The virtual camera composes every frame from it, so a frame costs a few
// copies instead of a render of the slide.
#pragma once

#include "slide.h"

#include <cstdint>
#include <list>
#include <mutex>
#include <unordered_map>

namespace livemicro::hw::sim {

class TileCache {
public:
  struct Stats {
    uint64_t hits = 0, misses = 0;
    size_t tiles = 0, bytes = 0;
  };

  TileCache (const Slide &slide, int tile_px = 256,
      size_t capacity_bytes = size_t (384) << 20);

  // Copies region_px of the slide at um_per_px into out (CV_8UC3 of
  // region_px.size(); may be a view into a larger image).
  void read (double um_per_px, const cv::Rect &region_px, cv::Mat &out);
  Stats stats () const;
  void clear ();
  int tile_px () const { return tile_px_; }

private:
  struct Key {
    uint64_t scale_bits;
    int64_t tx, ty;
    bool operator== (const Key &o) const
    {
      return scale_bits == o.scale_bits && tx == o.tx && ty == o.ty;
    }
  };
  struct KeyHash {
    size_t operator() (const Key &k) const;
  };
  struct Entry {
    cv::Mat rgb;
    std::list<Key>::iterator lru;
  };
  const cv::Mat &tile (double um_per_px, int64_t tx, int64_t ty);

  const Slide &slide_;
  const int tile_px_;
  const size_t capacity_bytes_;
  mutable std::mutex mutex_;
  std::unordered_map<Key, Entry, KeyHash> tiles_;
  std::list<Key> lru_;  // front: most recently used
  Stats stats_;
};

}  // namespace livemicro::hw::sim
