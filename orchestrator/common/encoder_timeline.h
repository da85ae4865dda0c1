// Matches an encoder's output access units to the raw frames that went in.
// GstVideoEncoder subclasses (x264enc among them) shift PTS by a constant
// "min-pts" offset (1000 h for x264enc), so an output PTS is not the input
// PTS: the offset is learned from the first frame out (the oldest frame in)
// and kept, and learned again if a lookup ever misses (a dropped frame).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>

namespace livemicro::orchestrator {

template <typename T> class EncoderTimeline {
public:
  void record (uint64_t in_pts, const T &value)
  {
    std::lock_guard<std::mutex> lock (mutex_);
    pending_[in_pts] = value;
    while (pending_.size () > 64)
      pending_.erase (pending_.begin ());
  }
  std::optional<T> take (uint64_t out_pts)
  {
    std::lock_guard<std::mutex> lock (mutex_);
    if (pending_.empty ())
      return std::nullopt;
    auto it = have_offset_ ? pending_.find (out_pts - offset_) : pending_.end ();
    if (it == pending_.end ()) {
      it = pending_.begin ();
      offset_ = out_pts - it->first;
      have_offset_ = true;
    }
    T v = it->second;
    pending_.erase (pending_.begin (), std::next (it));
    return v;
  }

private:
  std::mutex mutex_;
  std::map<uint64_t, T> pending_;
  uint64_t offset_ = 0;
  bool have_offset_ = false;
};

} // namespace livemicro::orchestrator
