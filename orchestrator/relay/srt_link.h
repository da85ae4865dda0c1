// What both ends of a view relay between two nodes agree on: SRT with AES
// encryption (libsrt derives the key from the passphrase with PBKDF2) and
// the receiver's latency budget for retransmissions.
#pragma once

#include <gst/gst.h>

#include <cstdint>
#include <optional>
#include <string>

namespace livemicro::orchestrator::relay {

struct SrtLinkSettings {
  // 10 to 79 characters (libsrt's limits); the same on both nodes.
  std::string passphrase;
  // AES key size in bytes: 16 (AES-128), 24 or 32 (AES-256).
  int key_bytes = 32;
  // How long the receiver holds each packet for retransmissions before it
  // plays it out: the delay the hop adds on top of the network's.  SRT's
  // rule of thumb is 3 to 4 round-trip times (120 ms covers a 30 ms RTT).
  int latency_ms = 120;
};

constexpr size_t kMinPassphraseChars = 10, kMaxPassphraseChars = 79;
constexpr int kMaxLatencyMs = 10000;

// Why `s` cannot be used, or nothing when it can.
std::optional<std::string> invalid_reason (const SrtLinkSettings &s);

// Sets uri (first: setting it resets the other SRT parameters), mode,
// passphrase, key length and latency on an srtsrc or srtsink.  `host` is a
// numeric address or a host name, never parsed from user text into the URI
// without this function's check.
std::optional<std::string> configure_srt_element (GstElement *srt, const std::string &host, uint16_t port,
                                                  bool listener, const SrtLinkSettings &s);

} // namespace livemicro::orchestrator::relay
