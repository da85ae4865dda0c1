#include "capture_ledger.h"

#include <glib.h>

namespace livemicro::orchestrator {

void
CaptureLedger::captured (uint64_t pts, const hw::FrameRecord &record)
{
  std::lock_guard<std::mutex> lock (mutex_);
  captures_[pts] = record;
  while (captures_.size () > kCapturesKept)
    captures_.erase (captures_.begin ());
}

void
CaptureLedger::entering_encoder (ViewTimeline &view, uint64_t pts, std::optional<hw::FrameRecord> view_record)
{
  hw::FrameRecord r = view_record.value_or (hw::FrameRecord{});
  if (r.capture_unix_us == 0) {
    std::lock_guard<std::mutex> lock (mutex_);
    auto it = captures_.find (pts);
    r.capture_unix_us = it != captures_.end () && it->second.capture_unix_us ? it->second.capture_unix_us
                                                                             : g_get_real_time ();
  }
  view.record (pts, r);
}

hw::FrameRecord
CaptureLedger::encoded (ViewTimeline &view, uint64_t out_pts)
{
  if (auto r = view.take (out_pts))
    return *r;
  hw::FrameRecord r;
  r.capture_unix_us = g_get_real_time ();
  return r;
}

} // namespace livemicro::orchestrator
