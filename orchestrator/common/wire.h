// The link between livemicrod and a media worker process: length-prefixed
// messages over a Unix stream socket.  JSON for commands and events, a small
// binary header plus the H.264 access unit for frames.  Both ends run on the
// same host, so the header is in native byte order.
#pragma once

#include <livemicro/hw/frame_record.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace livemicro::orchestrator::wire {

enum class Type : uint32_t {
  kCommand = 1, // daemon → worker, JSON object with "cmd"
  kEvent = 2,   // worker → daemon, JSON object with "event"
  kFrame = 3,   // worker → daemon, FrameHeader + H.264 access unit
  kNuclei = 4,  // worker → daemon, a field of nuclei (pack_field, worker_protocol.h)
};

constexpr uint32_t kFlagKeyframe = 1u << 0;
constexpr uint32_t kMaxMessageBytes = 32u << 20;

// What goes before an access unit: which view it belongs to, its timing,
// and the record of the frame it was encoded from (copied as it is: both
// ends are this build on this host).
struct FrameHeader {
  uint32_t view_id = 0;
  uint32_t flags = 0; // kFlagKeyframe
  uint64_t pts_ns = 0;
  uint64_t duration_ns = 0;
  hw::FrameRecord record;
  // When the view's encoder handed this access unit to the worker (µs since
  // the epoch, the host's clock): the daemon measures the hop from here.
  int64_t encoded_unix_us = 0;
};

// Writes one message; safe from several threads.  Returns false when the
// peer is gone.
class Writer {
public:
  explicit Writer (int fd) : fd_ (fd) {}
  bool send (Type type, const void *head, size_t head_len, const void *body, size_t body_len);
  bool send_json (Type type, const std::string &json)
  {
    return send (type, json.data (), json.size (), nullptr, 0);
  }
  bool send_frame (const FrameHeader &h, const uint8_t *au, size_t len)
  {
    return send (Type::kFrame, &h, sizeof h, au, len);
  }

private:
  int fd_;
  std::mutex mutex_;
};

// Reads one message (blocking).  False on EOF, error or a malformed frame.
bool read_message (int fd, Type &type, std::vector<uint8_t> &body);

} // namespace livemicro::orchestrator::wire
