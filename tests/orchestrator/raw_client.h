// A deliberately low-level client for hostile-input tests: a plain TCP socket
// that can send what a well-behaved library never would (a WebSocket message
// in many fragments, a chunked body without end, a connection dropped right
// after a response).  Test code only: the daemon itself uses libsoup.
#pragma once

#include <glib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace livemicro::test {

class RawClient {
public:
  explicit RawClient (int port)
  {
    fd_ = ::socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons ((uint16_t)port);
    a.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    if (::connect (fd_, reinterpret_cast<sockaddr *> (&a), sizeof a) != 0) {
      ::close (fd_);
      fd_ = -1;
    }
  }
  ~RawClient () { close (); }
  RawClient (const RawClient &) = delete;
  RawClient &operator= (const RawClient &) = delete;

  bool connected () const { return fd_ >= 0; }
  void close ()
  {
    if (fd_ >= 0)
      ::close (fd_);
    fd_ = -1;
  }

  // False when the peer closed or reset the connection.
  bool send (const std::string &bytes) { return send (bytes.data (), bytes.size ()); }
  bool send (const void *data, size_t len)
  {
    const char *p = static_cast<const char *> (data);
    while (len > 0) {
      ssize_t w = ::send (fd_, p, len, MSG_NOSIGNAL);
      if (w <= 0)
        return false;
      p += w;
      len -= (size_t)w;
    }
    return true;
  }

  // Reads what arrives within `timeout_ms` (until `until` is seen, if given).
  // `closed` tells whether the peer closed its side.
  std::string receive (int timeout_ms, const std::string &until = "", bool *closed = nullptr)
  {
    std::string out;
    gint64 deadline = g_get_monotonic_time () + (gint64)timeout_ms * 1000;
    if (closed)
      *closed = false;
    while (true) {
      gint64 left_ms = (deadline - g_get_monotonic_time ()) / 1000;
      if (left_ms <= 0)
        break;
      pollfd p{fd_, POLLIN, 0};
      if (::poll (&p, 1, (int)left_ms) <= 0)
        break;
      char buf[65536];
      ssize_t r = ::recv (fd_, buf, sizeof buf, 0);
      if (r <= 0) {
        if (closed)
          *closed = true;
        break;
      }
      out.append (buf, (size_t)r);
      if (!until.empty () && out.find (until) != std::string::npos)
        break;
    }
    return out;
  }

  // Opens a WebSocket on `path`; true on "101 Switching Protocols".
  bool websocket_handshake (const std::string &path, const std::string &extra_headers = "")
  {
    std::string req = "GET " + path
                      + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n"
                      + extra_headers + "\r\n";
    if (!send (req))
      return false;
    std::string reply = receive (5000, "\r\n\r\n");
    pending_ = reply.substr (std::min (reply.size (), reply.find ("\r\n\r\n") + 4));
    return reply.rfind ("HTTP/1.1 101", 0) == 0;
  }

  // One client frame (masked, as RFC 6455 requires of clients).
  bool websocket_frame (uint8_t opcode, const std::string &payload, bool fin = true)
  {
    std::string f;
    f += (char)((fin ? 0x80 : 0) | (opcode & 0x0f));
    const uint8_t mask_bit = 0x80;
    if (payload.size () < 126) {
      f += (char)(mask_bit | payload.size ());
    } else if (payload.size () < 65536) {
      f += (char)(mask_bit | 126);
      f += (char)(payload.size () >> 8);
      f += (char)(payload.size () & 0xff);
    } else {
      f += (char)(mask_bit | 127);
      for (int i = 7; i >= 0; i--)
        f += (char)((uint64_t)payload.size () >> (8 * i));
    }
    const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
    f.append (reinterpret_cast<const char *> (mask), 4);
    size_t at = f.size ();
    f += payload;
    for (size_t i = 0; i < payload.size (); i++)
      f[at + i] = (char)(f[at + i] ^ mask[i % 4]);
    return send (f);
  }
  bool websocket_text (const std::string &text) { return websocket_frame (0x1, text); }

  struct Frame {
    uint8_t opcode = 0;
    std::string payload;
  };
  // Server frames received within `timeout_ms` (stops at a close frame).
  std::vector<Frame> websocket_read (int timeout_ms, bool *closed = nullptr)
  {
    std::string data = pending_;
    pending_.clear ();
    bool peer_closed = false;
    // Until the timeout, the connection's end, or what looks like a close
    // frame (0x88: FIN + opcode 8).
    data += receive (timeout_ms, "\x88", &peer_closed);
    std::vector<Frame> frames;
    size_t i = 0;
    while (i + 2 <= data.size ()) {
      uint8_t op = (uint8_t)data[i] & 0x0f;
      uint64_t len = (uint8_t)data[i + 1] & 0x7f;
      size_t head = 2;
      if (len == 126) {
        if (i + 4 > data.size ())
          break;
        len = ((uint8_t)data[i + 2] << 8) | (uint8_t)data[i + 3];
        head = 4;
      } else if (len == 127) {
        if (i + 10 > data.size ())
          break;
        len = 0;
        for (int k = 0; k < 8; k++)
          len = (len << 8) | (uint8_t)data[i + 2 + k];
        head = 10;
      }
      if (i + head + len > data.size ())
        break;
      frames.push_back ({op, data.substr (i + head, len)});
      i += head + len;
      if (op == 0x8)
        peer_closed = true;
    }
    if (closed)
      *closed = peer_closed;
    return frames;
  }
  // The close code of a close frame (0 when there is none).
  static int close_code (const std::vector<Frame> &frames)
  {
    for (const Frame &f : frames)
      if (f.opcode == 0x8 && f.payload.size () >= 2)
        return ((uint8_t)f.payload[0] << 8) | (uint8_t)f.payload[1];
    return 0;
  }

private:
  int fd_ = -1;
  std::string pending_;
};

} // namespace livemicro::test
