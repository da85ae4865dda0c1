// JSON of an analysis result (one JSON Lines record), shared by the
// tumorfeatures element and `livemicroctl analyze`.  The format is in
// docs/analysis.md ("JSON Lines") and docs/tumorfeatures.schema.json.
#pragma once

#include "nuclei.h"

#include <livemicro/hw/frame_record.h>

#include <optional>
#include <string>

namespace livemicro::analysis {

struct ReportContext {
  bool analysed = true;
  std::optional<uint64_t> pts_ns, stream_time_ns, running_time_ns;
  std::optional<std::string> image; // still image path (livemicroctl)
  // Where the frame was taken (its StageMeta); the report shows its stage
  // position and objective.
  std::optional<hw::FrameRecord> stage;
  uint64_t frames_analysed = 0, frames_skipped = 0;
  bool nuclei = false; // add the per-nucleus array
};

// Slide µm of a frame point (continuous pixel coordinates) of the analysed
// frame `s` taken at `stage` (its size and µm per pixel are the analysed
// frame's, which may be a scaled copy of the one the record describes).
inline cv::Point2d
frame_to_slide_um (const hw::FrameRecord &stage, const Summary &s, double x_px, double y_px)
{
  return {stage.stage_x_um + (x_px - s.frame_width / 2.0) * s.um_per_px,
          stage.stage_y_um + (y_px - s.frame_height / 2.0) * s.um_per_px};
}

// One compact JSON object (no newline).
std::string report_json (const Result &r, const ReportContext &ctx);

// The note that always accompanies grade_cue.
extern const char *const kGradeCueNote;

} // namespace livemicro::analysis
