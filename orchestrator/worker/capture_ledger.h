// The one place in the worker that maps encoded access units back to the
// capture they came from.
//
// Every frame entering the capture tee is noted with its record (the
// StageMeta microscopesrc attached), by PTS.  A view notes each frame
// entering its encoder with the view's own record: its StageMeta as the
// branch left it (rescaled; a privacy profile may strip the capture time
// and frame number or remove the meta), completed from the capture by PTS.
// An encoded access unit then finds its record through the view's
// EncoderTimeline (an encoder shifts PTS by a constant).
#pragma once

#include "common/encoder_timeline.h"

#include <livemicro/hw/frame_record.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>

namespace livemicro::orchestrator {

class CaptureLedger {
public:
  // Frames entering one view's encoder, until they come out encoded.
  using ViewTimeline = EncoderTimeline<hw::FrameRecord>;
  static constexpr size_t kCapturesKept = 120;

  // Capture tee (streaming thread): a frame and its record.
  void captured (uint64_t pts, const hw::FrameRecord &record);
  // A view's encoder input: `view_record` is the view's StageMeta (nullopt
  // when the profile removed it); a capture time the view does not carry
  // comes from the capture of the same PTS, else the wall clock now.
  void entering_encoder (ViewTimeline &view, uint64_t pts, std::optional<hw::FrameRecord> view_record);
  // The record of an access unit the view's encoder put out; a frame the
  // ledger lost (more than 64 frames inside the encoder) gets the wall clock.
  static hw::FrameRecord encoded (ViewTimeline &view, uint64_t out_pts);

private:
  std::mutex mutex_;
  std::map<uint64_t, hw::FrameRecord> captures_; // by PTS, the last kCapturesKept
};

} // namespace livemicro::orchestrator
