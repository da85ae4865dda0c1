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
  size_t start = 0;        // offset of the start code
  size_t payload = 0;      // offset of the NAL header byte
  size_t end = 0;          // one past the last byte
  uint8_t type = 0;
};

// NAL units of an Annex-B access unit, in order.
std::vector<Nal> nal_units (const uint8_t *au, size_t len);
bool has_nal (const uint8_t *au, size_t len, uint8_t type);

// Returns `au` with an SEI NAL carrying capture_unix_us inserted before the
// first slice.
std::vector<uint8_t> with_capture_time (const uint8_t *au, size_t len,
    int64_t capture_unix_us);
// The capture time of an access unit that carries the LiveMicro SEI.
std::optional<int64_t> capture_time (const uint8_t *au, size_t len);

// The SPS and PPS NAL units (with start codes) found in `au`, if any.
std::vector<uint8_t> parameter_sets (const uint8_t *au, size_t len);

}  // namespace livemicro::orchestrator::h264
