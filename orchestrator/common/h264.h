// Small H.264 Annex-B helpers: NAL unit scanning and the LiveMicro capture
// time carried in an SEI "user data unregistered" message, so that any
// client (rtspsrc, a browser, ffprobe) can measure glass-to-glass latency.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace livemicro::orchestrator::h264 {

enum NalType : uint8_t {
  kSlice = 1,
  kIdr = 5,
  kSei = 6,
  kSps = 7,
  kPps = 8,
  kAud = 9,
};

struct Nal {
  size_t start = 0;   // offset of the start code
  size_t payload = 0; // offset of the NAL header byte
  size_t end = 0;     // one past the last byte
  uint8_t type = 0;
};

// NAL units of an Annex-B access unit, in order.
std::vector<Nal> nal_units (const uint8_t *au, size_t len);
bool has_nal (const uint8_t *au, size_t len, uint8_t type);

// What LiveMicro puts into each access unit (SEI user data unregistered):
// when the frame was captured and where the stage was.
struct FrameInfo {
  int64_t capture_unix_us = 0;
  double stage_x_um = 0, stage_y_um = 0, stage_z_um = 0, um_per_px = 0;
  uint32_t objective = 0;
  bool moving = false;
};

// Returns `au` with an SEI NAL carrying `info` inserted before the first
// slice: message 1 (UUID "livemicro-capt.1") the capture time as a
// big-endian int64 of µs since the epoch; message 2 (UUID
// "livemicro-stag.1") x, y, z, µm/px as big-endian IEEE doubles, the
// objective as uint32 and a flags uint32 (bit 0: moving).
std::vector<uint8_t> with_frame_info (const uint8_t *au, size_t len, const FrameInfo &info);
std::vector<uint8_t> with_capture_time (const uint8_t *au, size_t len, int64_t capture_unix_us);
// The capture time / frame info of an access unit that carries the SEI.
std::optional<int64_t> capture_time (const uint8_t *au, size_t len);
std::optional<FrameInfo> frame_info (const uint8_t *au, size_t len);

// The SPS and PPS NAL units (with start codes) found in `au`, if any.
std::vector<uint8_t> parameter_sets (const uint8_t *au, size_t len);
// `au` with `parameter_sets` (Annex-B SPS/PPS) in front of its NAL units,
// after its access unit delimiter if it starts with one (an AUD must come
// first: a parser such as ffmpeg's starts a new access unit at a
// delimiter or parameter set found later, and the frame loses its time).
std::vector<uint8_t> with_parameter_sets (const uint8_t *au, size_t len,
                                          const std::vector<uint8_t> &parameter_sets);

} // namespace livemicro::orchestrator::h264
